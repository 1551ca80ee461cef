"""NudeNet 320n as a second opinion: a YOLOv8n detector whose labelled boxes say *why*.

Licence: NudeNet's weights and code are AGPL-3.0 (see manifests/nudenet_320n.toml).
It is opt-in: ``pip install 'photosentry[nudenet]'`` and ``--second-model nudenet``.

We feed the model the way it was trained, not the way the ``nudenet`` package does.
The package reads BGR with OpenCV, converts RGBA->BGR (on a 3-channel BGR image that
swaps R and B, giving RGB) and then asks ``blobFromImage(swapRB=True)`` to swap again:
the network receives BGR, and an image padded black at the bottom-right and then
stretched to 320x320. The weights were trained with ultralytics, whose predictor
letterboxes (aspect kept, grey 114 padding, centred) and converts BGR to RGB before
the network (``im[..., ::-1]`` in ``BasePredictor.preprocess``): the model expects
RGB. tests/test_nudenet.py shows the two inputs differ and that ours gives the
stronger detections on a real photo.

Post-processing is ours too: the YOLOv8 head gives, per anchor, a box (cx, cy, w, h)
and one score per label; we keep anchors over the confidence threshold, run
per-label non-maximum suppression, and map boxes back through the letterbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .classifier import Detection, ModelScore, NudityClassifier
from .manifest import NUDENET_320N, ModelManifest, read_manifest, resolve_model_file
from .session import open_session

MAX_DETECTIONS = 50
"""Most boxes kept per frame after NMS (strongest first): a photo never needs more to
explain a verdict, and the verdict stays small."""


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model's square input."""

    ratio: float
    pad_x: float
    pad_y: float


def letterbox(rgb: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to ``size`` x ``size``, centred (ultralytics' LetterBox)."""
    h, w = rgb.shape[:2]
    ratio = min(size / h, size / w)
    new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    resized = rgb if (new_w, new_h) == (w, h) else cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return padded, Letterbox(ratio, left, top)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression; ``boxes`` are (x1, y1, x2, y2)."""
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


class NudeNetDetector(NudityClassifier):
    """NudeNet 320n: detections labelled like ``FEMALE_BREAST_EXPOSED``; the score is the
    strongest detection of an unsafe label (0 when there is none)."""

    manifest: ModelManifest = NUDENET_320N

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        confidence: float | None = None,
        iou: float | None = None,
        unsafe: Sequence[str] | None = None,
    ) -> None:
        raw, _ = read_manifest("nudenet_320n")
        spec_in, spec_out = raw["input"], raw["output"]
        self.model_id = self.manifest.id
        self.model_version = self.manifest.version
        self.size = int(spec_in["size"][0])
        self.pad_value = int(spec_in.get("pad_value", 114))
        self.labels: tuple[str, ...] = tuple(spec_out["labels"])
        self.unsafe = frozenset(spec_out["unsafe"] if unsafe is None else unsafe)
        if not self.unsafe <= set(self.labels):
            raise ValueError(f"unknown NudeNet labels {sorted(self.unsafe - set(self.labels))}")
        self.confidence = float(spec_out["confidence"] if confidence is None else confidence)
        self.iou = float(spec_out["iou"] if iou is None else iou)
        self.variant = "fp32"
        self.path = resolve_model_file(self.manifest, model_path)
        self._session = open_session(self.path, providers=providers, threads=threads)
        self._input = self._session.get_inputs()[0].name
        self.provider = self._session.get_providers()[0]

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """One RGB uint8 frame to a (3, size, size) float32 RGB tensor in 0..1."""
        padded, box = letterbox(np.ascontiguousarray(rgb), self.size, self.pad_value)
        tensor = padded.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
        return np.ascontiguousarray(tensor), box

    def run(self, tensors: np.ndarray) -> np.ndarray:
        """(n, 3, size, size) inputs to the raw head, (n, 4 + labels, anchors)."""
        (out,) = self._session.run(None, {self._input: tensors})
        return np.asarray(out)

    def postprocess(self, head: np.ndarray, box: Letterbox, shape: tuple[int, int]) -> list[Detection]:
        """One frame's raw head output to detections in the frame's own pixels."""
        preds = head.T  # (anchors, 4 + labels)
        class_scores = preds[:, 4:]
        best = class_scores.argmax(axis=1)
        conf = class_scores[np.arange(len(preds)), best]
        mask = conf >= self.confidence
        if not mask.any():
            return []
        cx, cy, w, h = (preds[mask, i] for i in range(4))
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        conf, best = conf[mask], best[mask]
        kept: list[int] = []
        for label in np.unique(best):  # per-label NMS, as ultralytics (agnostic=False)
            idx = np.flatnonzero(best == label)
            kept.extend(int(idx[k]) for k in nms(xyxy[idx], conf[idx], self.iou))
        kept.sort(key=lambda i: -conf[i])
        height, width = shape
        out = []
        for i in kept[:MAX_DETECTIONS]:
            x1, y1, x2, y2 = xyxy[i]
            x1 = float(np.clip((x1 - box.pad_x) / box.ratio, 0, width))
            x2 = float(np.clip((x2 - box.pad_x) / box.ratio, 0, width))
            y1 = float(np.clip((y1 - box.pad_y) / box.ratio, 0, height))
            y2 = float(np.clip((y2 - box.pad_y) / box.ratio, 0, height))
            out.append(Detection(self.labels[int(best[i])], float(conf[i]),
                                 (int(round(x1)), int(round(y1)), int(round(x2 - x1)), int(round(y2 - y1)))))
        return out

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per frame, strongest first."""
        prepared = [self.preprocess(f) for f in frames]
        heads = self.run(np.stack([t for t, _ in prepared]))
        return [self.postprocess(heads[i], prepared[i][1], frames[i].shape[:2]) for i in range(len(frames))]

    def score_of(self, detections: Sequence[Detection]) -> float:
        return max((d.confidence for d in detections if d.label in self.unsafe), default=0.0)

    def classify(self, frames: Sequence[np.ndarray]) -> ModelScore:
        if not frames:
            raise ValueError("classify needs at least one frame")
        return self._score(self.detect(frames))

    def classify_many(self, photos: Sequence[Sequence[np.ndarray]], *, batch_size: int) -> list[ModelScore]:
        """One score per photo, the frames of all of them detected ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if any(not frames for frames in photos):
            raise ValueError("classify needs at least one frame")
        flat = [f for frames in photos for f in frames]
        per_frame: list[list[Detection]] = []
        for start in range(0, len(flat), batch_size):
            per_frame.extend(self.detect(flat[start : start + batch_size]))
        out, start = [], 0
        for frames in photos:
            out.append(self._score(per_frame[start : start + len(frames)]))
            start += len(frames)
        return out

    def _score(self, per_frame: Sequence[Sequence[Detection]]) -> ModelScore:
        """One photo's frames' detections to its score: the frame with the strongest unsafe one."""
        scores = [self.score_of(d) for d in per_frame]
        worst = int(np.argmax(scores))
        labels: dict[str, float] = {}
        for d in per_frame[worst]:
            labels[d.label] = max(labels.get(d.label, 0.0), d.confidence)
        return ModelScore(
            model_id=self.model_id,
            model_version=self.model_version,
            score=float(scores[worst]),
            labels=labels,
            frame=worst,
            provider=self.provider,
            variant=self.variant,
            detections=tuple(per_frame[worst]),
        )


def licence_notice() -> str:
    """What to print wherever NudeNet is enabled."""
    return f"NudeNet 320n is licensed {NUDENET_320N.license}: enabling it may oblige you to share your service's source."


__all__ = ["Letterbox", "NudeNetDetector", "letterbox", "licence_notice", "nms"]
