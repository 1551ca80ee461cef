"""NudeNet 320n as a second opinion: our RGB letterbox preprocessing, our YOLOv8
post-processing, and its labels in the verdict. Runs the real model from the
installed `nudenet` package (AGPL-3.0; a test dependency only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photosentry.decode import decode
from photosentry.models.classifier import Detection, ModelScore
from photosentry.models.manifest import NUDENET_320N, file_sha256, resolve_model_file
from photosentry.models.nudenet import NudeNetDetector, letterbox, nms
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action, ReasonCode

from . import corpus as corpus_mod

nudenet_pkg = pytest.importorskip("nudenet.nudenet", reason="the nudenet extra is part of the test extra")


@pytest.fixture(scope="module")
def detector() -> NudeNetDetector:
    return NudeNetDetector(threads=1)


def astronaut() -> np.ndarray:
    # Eileen Collins' NASA portrait: a real photo with one woman's face.
    data = corpus_mod.jpeg_bytes(corpus_mod.load("astronaut.png").convert("RGB"))
    return decode(data).frames[0]


def test_model_file_is_the_pinned_one(detector: NudeNetDetector) -> None:
    assert file_sha256(resolve_model_file(NUDENET_320N)) == NUDENET_320N.sha256
    assert "AGPL-3.0" in NUDENET_320N.license
    assert detector.labels[3] == "FEMALE_BREAST_EXPOSED" and len(detector.labels) == 18


def test_letterbox_keeps_aspect_and_centres() -> None:
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    padded, box = letterbox(frame, 320)
    assert padded.shape == (320, 320, 3)
    assert box.ratio == pytest.approx(1.6) and (box.pad_x, box.pad_y) == (0, 80)
    assert (padded[:80] == 114).all() and (padded[240:] == 114).all() and (padded[80:240] == 0).all()


def test_nms_merges_overlaps_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45) == [0, 2]


def test_the_package_feeds_bgr_and_we_feed_rgb(detector: NudeNetDetector) -> None:
    # A pure red photo, handed to the package as OpenCV hands it (BGR), as cv2.imread would.
    red_rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    red_rgb[..., 0] = 255
    blob = nudenet_pkg._read_image(np.ascontiguousarray(red_rgb[..., ::-1]), 320)[0]
    ours, _ = detector.preprocess(red_rgb)
    # The package's network input has red in channel 2 (BGR); ultralytics trains on RGB.
    assert blob[0, 2, 10, 10] == pytest.approx(1.0) and blob[0, 0, 10, 10] == 0.0
    assert ours[0, 10, 10] == pytest.approx(1.0) and ours[2, 10, 10] == 0.0


def test_channel_order_matters_on_a_real_photo(detector: NudeNetDetector) -> None:
    frame = astronaut()
    ours = detector.detect([frame])[0]
    tensor, box = detector.preprocess(frame)
    swapped = detector.postprocess(detector.run(np.ascontiguousarray(tensor[::-1])[None])[0], box, frame.shape[:2])
    package = nudenet_pkg.NudeDetector().detect(np.ascontiguousarray(frame[..., ::-1]))

    def face_female(ds: list[Detection]) -> float:
        return max((d.confidence for d in ds if d.label == "FACE_FEMALE"), default=0.0)

    # RGB (the training convention) finds her face more surely, and nothing else;
    # fed BGR (what the package does) the model is less sure and also sees a man's face.
    assert [d.label for d in ours] == ["FACE_FEMALE"]
    assert face_female(ours) > face_female(swapped) + 0.05
    assert "FACE_MALE" in [d.label for d in swapped]
    assert face_female([Detection(d["class"], d["score"], tuple(d["box"])) for d in package]) < face_female(ours)
    x, y, w, h = ours[0].box
    assert 120 < x + w / 2 < 300 and 40 < y + h / 2 < 220  # her face, upper middle of the 512x512 photo


def test_score_is_the_strongest_unsafe_box(detector: NudeNetDetector, corpus: corpus_mod.Corpus) -> None:
    result = detector.classify([astronaut()])
    assert isinstance(result, ModelScore)
    assert result.score == 0.0  # a face is not an unsafe label
    assert set(result.labels) == {"FACE_FEMALE"} and result.detections[0].label == "FACE_FEMALE"
    assert result.to_dict()["detections"][0]["label"] == "FACE_FEMALE"
    assert detector.score_of([Detection("FEMALE_BREAST_EXPOSED", 0.7, (0, 0, 1, 1)),
                              Detection("FACE_FEMALE", 0.9, (0, 0, 1, 1))]) == pytest.approx(0.7)


def test_second_opinion_labels_reach_the_verdict(detector: NudeNetDetector, classifier: OpenNsfwClassifier,
                                                 tmp_path: Path) -> None:
    # A policy that quarantines on any face, so the detector's reason is visible end to end.
    policy = Policy.from_dict({
        "version": "test-1",
        "models": {"open_nsfw": {"quarantine": 0.7, "block": 0.97}, "nudenet_320n": {"quarantine": 0.5}},
    })
    scanner = Scanner(policy=policy, matcher=None, classifier=classifier, second_opinions=[detector])
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(corpus_mod.jpeg_bytes(corpus_mod.load("astronaut.png").convert("RGB")))
    verdict = scanner.scan_path(path)
    assert [s.model_id for s in verdict.scores] == ["open_nsfw", "nudenet_320n"]
    assert verdict.action is Action.ALLOW  # a face is no unsafe label: score 0
    assert "second_opinion" in verdict.timings_ms
    detail = verdict.to_dict()["scores"][1]
    assert detail["detections"][0]["label"] == "FACE_FEMALE"

    # Counting faces as unsafe (an operator's choice) shows the label in the reason.
    faces = NudeNetDetector(threads=1, unsafe=["FACE_FEMALE"])
    flagged = Scanner(policy=policy, matcher=None, classifier=classifier, second_opinions=[faces]).scan_path(path)
    assert flagged.action is Action.QUARANTINE
    nudity = [r for r in flagged.reasons if r.code is ReasonCode.NUDITY]
    assert nudity and "FACE_FEMALE" in nudity[0].text and nudity[0].detail["labels"][0].startswith("FACE_FEMALE")
