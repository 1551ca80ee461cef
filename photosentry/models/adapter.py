"""A classifier described by its manifest, so another ONNX nudity model needs no code.

The manifest's ``[input]`` says how a photo becomes the model's tensor and
``[output]`` how its numbers become labels:

``[input]``
    ``resize`` [w, h] and ``resize_mode``: ``stretch`` (to exactly w x h, ignoring
    the aspect ratio) or ``shorter_side`` (shorter side to w, aspect kept);
    ``resample``: ``bilinear``, ``bicubic``, ``lanczos`` or ``nearest``; ``crop``
    [w, h]: a centre crop (optional); ``jpeg_quality``: round-trip the crop through
    JPEG at this quality (optional; models trained on JPEGs want it);
    ``channel_order``: ``RGB`` or ``BGR``; ``layout``: ``NHWC`` or ``NCHW``;
    ``scale``: pixel values (0..255) are multiplied by it; then ``mean`` is subtracted
    and the result divided by ``std`` (both per channel, in ``channel_order``).
``[output]``
    ``labels``: one per output column; ``unsafe``: the labels whose probabilities
    add up to the unsafe score; ``activation``: ``none`` (the graph ends in a
    softmax), ``softmax`` or ``sigmoid``.

open_nsfw is one such manifest (``manifests/open_nsfw.toml``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .classifier import ModelScore, NudityClassifier
from .manifest import ModelManifest, read_manifest, resolve_model_file
from .session import ONNXRUNTIME, open_session

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
DEFAULT_BATCH = 16
"""Photos per ONNX Runtime call in bulk work: big enough to amortise the call, small
enough that a batch of 224x224 inputs stays around 10 MB."""


@dataclass(frozen=True)
class InputSpec:
    """How one RGB photo becomes one model input (see the module docstring)."""

    resize: tuple[int, int]
    resize_mode: str = "stretch"
    resample: str = "bilinear"
    crop: tuple[int, int] | None = None
    jpeg_quality: int | None = None
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> "InputSpec":
        allowed = {"resize", "resize_mode", "resample", "crop", "jpeg_quality", "channel_order", "layout",
                   "scale", "mean", "std"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"{where}: unknown [input] keys {sorted(unknown)} (allowed: {sorted(allowed)})")
        spec = cls(
            resize=_pair(raw.get("resize"), f"{where}: input.resize"),
            resize_mode=str(raw.get("resize_mode", "stretch")),
            resample=str(raw.get("resample", "bilinear")),
            crop=None if raw.get("crop") is None else _pair(raw["crop"], f"{where}: input.crop"),
            jpeg_quality=None if raw.get("jpeg_quality") is None else int(raw["jpeg_quality"]),
            channel_order=str(raw.get("channel_order", "RGB")).upper(),
            layout=str(raw.get("layout", "NCHW")).upper(),
            scale=float(raw.get("scale", 1.0)),
            mean=_triple(raw.get("mean", (0.0, 0.0, 0.0)), f"{where}: input.mean"),
            std=_triple(raw.get("std", (1.0, 1.0, 1.0)), f"{where}: input.std"),
        )
        checks = (
            (spec.resize_mode in ("stretch", "shorter_side"), "resize_mode must be 'stretch' or 'shorter_side'"),
            (spec.resample in _RESAMPLE, f"resample must be one of {sorted(_RESAMPLE)}"),
            (spec.channel_order in ("RGB", "BGR"), "channel_order must be 'RGB' or 'BGR'"),
            (spec.layout in ("NHWC", "NCHW"), "layout must be 'NHWC' or 'NCHW'"),
            (spec.jpeg_quality is None or 1 <= spec.jpeg_quality <= 95, "jpeg_quality must be 1..95"),
            (all(s != 0 for s in spec.std), "std must not contain 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{where}: input.{message}")
        if spec.crop is not None and spec.resize_mode == "stretch" and (
            spec.crop[0] > spec.resize[0] or spec.crop[1] > spec.resize[1]
        ):
            raise ValueError(f"{where}: input.crop {spec.crop} is larger than resize {spec.resize}")
        return spec

    @property
    def model_size(self) -> tuple[int, int]:
        """(width, height) of the tensor the model sees."""
        return self.crop or self.resize


@dataclass(frozen=True)
class OutputSpec:
    labels: tuple[str, ...]
    unsafe: tuple[str, ...]
    activation: str = "none"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> "OutputSpec":
        labels = tuple(str(x) for x in raw.get("labels", ()))
        unsafe = tuple(str(x) for x in raw.get("unsafe", ()))
        activation = str(raw.get("activation", "none"))
        if len(labels) < 1 or len(set(labels)) != len(labels):
            raise ValueError(f"{where}: output.labels must be a list of distinct names")
        if not unsafe or not set(unsafe) <= set(labels):
            raise ValueError(f"{where}: output.unsafe must name one or more of output.labels")
        if activation not in ("none", "softmax", "sigmoid"):
            raise ValueError(f"{where}: output.activation must be 'none', 'softmax' or 'sigmoid'")
        return cls(labels, unsafe, activation)


@dataclass(frozen=True)
class ClassifierManifest:
    """A classifier's whole manifest: the file, its input and its output."""

    model: ModelManifest
    input: InputSpec
    output: OutputSpec
    source: str = "<manifest>"

    @classmethod
    def load(cls, name_or_path: str | Path) -> "ClassifierManifest":
        """A shipped manifest by id (``open_nsfw``) or an operator's TOML file."""
        raw, source = read_manifest(name_or_path)
        return cls.from_dict(raw, source=source)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<manifest>") -> "ClassifierManifest":
        model = ModelManifest.from_dict(raw, source=source)
        if model.kind != "classifier":
            raise ValueError(f"{source}: kind is {model.kind!r}; this adapter runs classifiers")
        return cls(
            model,
            InputSpec.from_dict(raw.get("input", {}), source),
            OutputSpec.from_dict(raw.get("output", {}), source),
            source,
        )


def preprocess(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One RGB uint8 frame to one model input (no batch axis), as the spec says."""
    image = Image.fromarray(rgb)
    resample = _RESAMPLE[spec.resample]
    if spec.resize_mode == "stretch":
        size = spec.resize
    else:
        short = spec.resize[0]
        w, h = image.size
        size = (max(1, round(w * short / min(w, h))), max(1, round(h * short / min(w, h))))
    image = image.resize(size, resample=resample)
    if spec.crop is not None:
        cw, ch = spec.crop
        left, top = (image.width - cw) // 2, (image.height - ch) // 2
        image = image.crop((left, top, left + cw, top + ch))
    if spec.jpeg_quality is not None:
        with io.BytesIO() as buf:
            image.save(buf, format="JPEG", quality=spec.jpeg_quality)
            buf.seek(0)
            with Image.open(buf) as reread:
                rgb8 = np.asarray(reread.convert("RGB"))
    else:
        rgb8 = np.asarray(image.convert("RGB"))
    if spec.channel_order == "BGR":
        rgb8 = rgb8[:, :, ::-1]
    if spec.layout == "NCHW":
        rgb8 = rgb8.transpose(2, 0, 1)
        mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (spec.mean, spec.std))
    else:
        mean, std = (np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std))
    # One pass from uint8 into a fresh contiguous float32 array (this runs once per frame
    # on the scan's critical path); the steps a manifest leaves at 1 are skipped.
    pixels = np.empty(rgb8.shape, dtype=np.float32)
    if spec.scale != 1.0:
        np.multiply(rgb8, np.float32(spec.scale), out=pixels, dtype=np.float32)
        pixels -= mean
    else:
        np.subtract(rgb8, mean, out=pixels, dtype=np.float32)
    if np.any(std != 1.0):
        pixels /= std
    return pixels


class ManifestClassifier(NudityClassifier):
    """Any ONNX classifier its manifest describes; the unsafe labels' sum is the score.

    Args:
        manifest: the manifest, or a shipped id / TOML path to load one from.
        model_path: a file to use instead of the manifest's (checked by its sha256).
        artifact: an optimised artifact of this model already verified by
            :mod:`photosentry.models.artifacts` (path, variant, sha256), used instead
            of the fp32 file; the verdict's score names it.
        providers: ONNX Runtime execution providers to prefer.
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
    """

    def __init__(
        self,
        manifest: ClassifierManifest | str | Path,
        *,
        model_path: str | Path | None = None,
        artifact: Any | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.spec = manifest if isinstance(manifest, ClassifierManifest) else ClassifierManifest.load(manifest)
        self.manifest = self.spec.model
        self.model_id = self.manifest.id
        self.model_version = self.manifest.version
        self.artifact = artifact
        if artifact is not None:
            self.path = Path(artifact.verified_path())
            self.variant = artifact.variant
        else:
            self.path = resolve_model_file(self.manifest, model_path)
            self.variant = "fp32"
        self._session = open_session(self.path, providers=providers, threads=threads,
                                     runtime=getattr(artifact, "runtime", ONNXRUNTIME))
        self._input = self._session.get_inputs()[0].name
        self.provider = self._session.get_providers()[0]
        self._unsafe = [self.spec.output.labels.index(label) for label in self.spec.output.unsafe]
        # A dynamically quantised build scales its activations by the range of the whole
        # call, so a photo's score would depend on the photos batched with it.
        self.batches_across_photos = not (artifact is not None
                                          and str(getattr(artifact, "method", "")).startswith("dynamic"))

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return preprocess(rgb, self.spec.input)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw model inputs (n, ...) to (n, labels) probabilities."""
        (out,) = self._session.run(None, {self._input: batch})
        out = np.asarray(out, dtype=np.float64).reshape(len(batch), -1)
        if out.shape[1] != len(self.spec.output.labels):
            raise ValueError(
                f"{self.model_id}: the model gives {out.shape[1]} outputs, the manifest names"
                f" {len(self.spec.output.labels)} labels"
            )
        if self.spec.output.activation == "softmax":
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        elif self.spec.output.activation == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-out))
        return out

    def probabilities(self, frames: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """(n, labels) probabilities, one row per frame, run ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rows = []
        for start in range(0, len(frames), batch_size):
            batch = np.stack([self.preprocess(f) for f in frames[start : start + batch_size]])
            rows.append(self.run(batch))
        return np.concatenate(rows) if rows else np.zeros((0, len(self.spec.output.labels)))

    def unsafe_scores(self, probs: np.ndarray) -> np.ndarray:
        return np.clip(probs[:, self._unsafe].sum(axis=1), 0.0, 1.0)

    def classify(self, frames: Sequence[np.ndarray]) -> ModelScore:
        if not frames:
            raise ValueError("classify needs at least one frame")
        return self._score(self.probabilities(frames))

    def classify_many(
        self, photos: Sequence[Sequence[np.ndarray]], *, batch_size: int = DEFAULT_BATCH
    ) -> list[ModelScore]:
        """One score per photo, the frames of all of them run ``batch_size`` at a time
        (frames of different photos share a call); each photo's score is the max over its
        own frames, as :meth:`classify` gives it."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if any(not frames for frames in photos):
            raise ValueError("classify needs at least one frame")
        if not self.batches_across_photos:
            return [self.classify(frames) for frames in photos]
        probs = self.probabilities([f for frames in photos for f in frames], batch_size=batch_size)
        out, start = [], 0
        for frames in photos:
            out.append(self._score(probs[start : start + len(frames)]))
            start += len(frames)
        return out

    def _score(self, probs: np.ndarray) -> ModelScore:
        """One photo's frames' probabilities to its score: the most unsafe frame's."""
        scores = self.unsafe_scores(probs)
        worst = int(np.argmax(scores))
        return ModelScore(
            model_id=self.model_id,
            model_version=self.model_version,
            score=float(scores[worst]),
            labels={label: float(p) for label, p in zip(self.spec.output.labels, probs[worst], strict=True)},
            frame=worst,
            provider=self.provider,
            variant=self.variant,
        )


def _pair(value: Any, where: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"{where} must be [width, height] of positive integers, got {value!r}")
    return int(value[0]), int(value[1])


def _triple(value: Any, where: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{where} must be 3 numbers, got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])
