"""The classifier interface: frames in, labelled scores out. Policy decides what they mean."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelScore:
    """A model's opinion of one photo: its most unsafe frame."""

    model_id: str
    model_version: str
    #: Probability that the photo is unsafe, 0..1 (max over the frames looked at).
    score: float
    #: Every label's probability for that frame.
    labels: dict[str, float] = field(default_factory=dict)
    #: Position, among the frames given, of the frame that scored highest.
    frame: int = 0
    provider: str = ""
    #: Which build of the model scored: ``fp32`` (the published file), ``int8`` or ``fp16``
    #: (an optimised artifact verified against it).
    variant: str = "fp32"
    #: A detector's findings on that frame (label, confidence, box), strongest first.
    detections: tuple["Detection", ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model_id,
            "version": self.model_version,
            "score": round(self.score, 6),
            "labels": {k: round(v, 6) for k, v in self.labels.items()},
            "frame": self.frame,
            "provider": self.provider,
            "variant": self.variant,
            **({"detections": [d.to_dict() for d in self.detections]} if self.detections else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModelScore":
        """The inverse of :meth:`to_dict` (a recorded verdict's score)."""
        return cls(
            model_id=str(raw["model"]),
            model_version=str(raw.get("version", "")),
            score=float(raw["score"]),
            labels={str(k): float(v) for k, v in dict(raw.get("labels") or {}).items()},
            frame=int(raw.get("frame", 0)),
            provider=str(raw.get("provider", "")),
            variant=str(raw.get("variant", "fp32")),
            detections=tuple(Detection.from_dict(d) for d in raw.get("detections") or ()),
        )


@dataclass(frozen=True)
class Detection:
    """One labelled box a detector found, in the frame's pixel coordinates."""

    label: str
    confidence: float
    #: (x, y, width, height) of the box.
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "confidence": round(self.confidence, 4), "box": list(self.box)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Detection":
        x, y, w, h = (int(v) for v in raw["box"])
        return cls(str(raw["label"]), float(raw["confidence"]), (x, y, w, h))


class NudityClassifier(ABC):
    """A model that scores photos for nudity."""

    model_id: str
    model_version: str

    @abstractmethod
    def classify(self, frames: Sequence[np.ndarray]) -> ModelScore:
        """Score RGB uint8 frames of one photo; the highest-scoring frame wins."""

    def classify_many(self, photos: Sequence[Sequence[np.ndarray]], *, batch_size: int) -> list[ModelScore]:
        """Score several photos (each its frames): one :class:`ModelScore` per photo, in order,
        each equal to what :meth:`classify` gives that photo alone.

        This default scores them one by one; a model that can run frames of different
        photos in one call overrides it. ``batch_size`` is the most frames per model call.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return [self.classify(frames) for frames in photos]
