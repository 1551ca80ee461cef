"""The whole scan: real photos, a real bank, the real model, the default policy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from photosentry.decode import Limits, decode
from photosentry.hashes.banks import NewEntry, SqliteBankStore, entries_from_hashes
from photosentry.hashes.derived import derive
from photosentry.hashes.localfeatures import banned_features
from photosentry.hashes.codecs import Algorithm
from photosentry.hashes.matcher import BankMatcher
from photosentry.hashes.signals import hash_bytes, hash_image
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action, ReasonCode, Verdict

from . import corpus as corpus_mod

WHO = {"actor": "moderator@example.org", "reason": "test ban"}


def ban(store: SqliteBankStore, path: Path, bank: str = "banned") -> list[int]:
    """Ban a photo as `photosentry ban add --image` does: every hash of its decoded frames."""
    data = path.read_bytes()
    image = decode(data)
    hashes = hash_image(data, image.frames, image.frame_indices)
    # What `ban add IMAGE` stores: its hashes, its crops' and rotations' PDQ, its keypoints.
    entries, _ = entries_from_hashes(hashes, bank, label=path.name, derived=derive(image.frames[0]),
                                     features=banned_features(image.frames[0]))
    return [e.id for e in store.add(entries, **WHO)]


@pytest.fixture
def scanner(policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier) -> Scanner:
    return Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)


@pytest.fixture
def banned_scanner(scanner: Scanner, store: SqliteBankStore, corpus: corpus_mod.Corpus) -> Scanner:
    ids = ban(store, corpus.banned)
    assert scanner.matcher is not None and scanner.matcher.refresh() == len(ids)
    return scanner


def test_copies_blocked_clean_allowed(banned_scanner: Scanner, corpus: corpus_mod.Corpus) -> None:
    verdict = banned_scanner.scan_path(corpus.banned)
    assert verdict.action is Action.BLOCK
    # Its whole frame's hashes block it, so its regions and keypoints are never searched.
    assert {m.algorithm.value for m in verdict.matches} == {"sha256", "md5", "pdq", "phash", "dhash"}

    for name, path in corpus.copies.items():
        verdict = banned_scanner.scan_path(path)
        assert verdict.action is Action.BLOCK, (name, verdict.reason_codes)
        assert verdict.reason_codes == ["bank_match"], name
        assert verdict.reasons[0].detail["bank"] == "banned"
        # Blocked by a bank: the model never ran.
        assert verdict.scores == (), name
        assert "classify" not in verdict.timings_ms

    for name, path in corpus.clean.items():
        verdict = banned_scanner.scan_path(path)
        assert verdict.action is Action.ALLOW, (name, [r.text for r in verdict.reasons])
        assert verdict.reason_codes == ["clean"]
        assert verdict.matches == ()
        (score,) = verdict.scores
        assert score.model_id == "open_nsfw" and 0.0 <= score.score < 0.3
        assert "classify" in verdict.timings_ms


def test_unbanned_photo_is_allowed_and_classified(scanner: Scanner, corpus: corpus_mod.Corpus) -> None:
    verdict = scanner.scan_path(corpus.banned)
    assert verdict.action is Action.ALLOW
    assert len(verdict.scores) == 1
    assert verdict.media is not None and (verdict.media.format, verdict.media.width) == ("jpeg", 640)


def test_a_photo_its_whole_frame_only_holds_for_review_is_still_searched_for_copies(
    scanner: Scanner, store: SqliteBankStore, corpus: corpus_mod.Corpus
) -> None:
    # A bank that quarantines: a region or the keypoints could still find a ban that
    # blocks, so the copy search runs (the keypoints verify the photo itself).
    ban(store, corpus.banned, bank="moderation")
    scanner.matcher.refresh()
    verdict = scanner.scan_path(corpus.banned)
    assert verdict.action is Action.QUARANTINE
    assert {m.algorithm.value for m in verdict.matches} == {"sha256", "md5", "pdq", "phash", "dhash", "orb"}


def test_a_photo_one_bank_blocks_is_still_searched_for_the_other_banks(
    scanner: Scanner, store: SqliteBankStore, corpus: corpus_mod.Corpus, tmp_path: Path
) -> None:
    # A GIF: frame 0 is banned whole in `banned`; frame 1 shows another photo, banned in
    # `csam`, letterboxed, which only its regions meet. The verdict must name both banks,
    # so the copy search runs although `banned` blocks already.
    other = corpus.clean["coffee"]
    ban(store, corpus.banned)
    ban(store, other, bank="csam")
    scanner.matcher.refresh()
    first = Image.open(corpus.banned).convert("RGB")
    boxed = Image.new("RGB", first.size)
    inner = Image.open(other).convert("RGB")
    inner.thumbnail((first.width, first.height * 2 // 3))
    boxed.paste(inner, ((first.width - inner.width) // 2, (first.height - inner.height) // 2))
    path = tmp_path / "two.gif"
    first.save(path, save_all=True, append_images=[boxed], duration=500, loop=0)
    verdict = scanner.scan_path(path)
    assert verdict.action is Action.BLOCK
    assert {r.detail["bank"] for r in verdict.reasons if r.code is ReasonCode.BANK_MATCH} == {"banned", "csam"}


def test_moderation_bank_quarantines_unless_minors(
    scanner: Scanner, store: SqliteBankStore, corpus: corpus_mod.Corpus
) -> None:
    ban(store, corpus.banned, bank="moderation")
    scanner.matcher.refresh()
    copy = corpus.copies["resized_half"]
    verdict = scanner.scan_path(copy)
    assert verdict.action is Action.QUARANTINE and verdict.profile == "default"
    # Not blocked, so the model still ran.
    assert len(verdict.scores) == 1
    verdict = scanner.scan_path(copy, context={"recipient_is_minor": "true"})
    assert verdict.action is Action.BLOCK and verdict.profile == "minors"
    assert verdict.context == {"recipient_is_minor": "true"}


def test_removed_ban_stops_blocking(
    banned_scanner: Scanner, store: SqliteBankStore, corpus: corpus_mod.Corpus
) -> None:
    ids = [e.id for e in store.entries(bank="banned")]
    with SqliteBankStore(store.path) as other:
        other.remove(ids, actor="lead", reason="appeal")
    banned_scanner.matcher.refresh()
    assert banned_scanner.scan_path(corpus.copies["mirrored"]).action is Action.ALLOW


def test_hostile_files_quarantined(scanner: Scanner, corpus: corpus_mod.Corpus) -> None:
    for code, path in corpus.hostile.items():
        data = path.read_bytes()
        for verdict in (scanner.scan_path(path), scanner.scan_bytes(data, subject=path.name)):
            assert verdict.action is Action.QUARANTINE, code
            assert verdict.reason_codes == [code]
            assert verdict.reasons[0].action is Action.QUARANTINE
            assert verdict.hashes is not None and verdict.hashes.sha256
            assert verdict.hashes.to_dict()["sha256"] == verdict.hashes.sha256
            assert verdict.scores == () and verdict.media is None


def test_too_large_quarantined(
    policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier, corpus: corpus_mod.Corpus
) -> None:
    limits = Limits(max_bytes=corpus.banned.stat().st_size - 1)
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier, limits=limits)
    for verdict in (scanner.scan_path(corpus.banned), scanner.scan_bytes(corpus.banned.read_bytes())):
        assert verdict.action is Action.QUARANTINE
        assert verdict.reason_codes == ["too_large"]
        assert verdict.scores == ()


def test_hostile_file_with_banned_bytes_is_blocked(
    scanner: Scanner, store: SqliteBankStore, corpus: corpus_mod.Corpus
) -> None:
    """An unreadable file's sha256 still meets the bank; block beats quarantine."""
    path = corpus.hostile["unreadable"]
    data = path.read_bytes()
    store.add([NewEntry(Algorithm.SHA256, hash_bytes(data).sha256, "banned")], **WHO)
    scanner.matcher.refresh()
    verdict = scanner.scan_path(path)
    assert verdict.action is Action.BLOCK
    assert verdict.reason_codes == ["bank_match", "unreadable"]


def test_long_animation_quarantined(scanner: Scanner) -> None:
    frames = [Image.new("L", (16, 16), 3 * i) for i in range(40)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    scanner.limits = Limits(max_frames=10)
    verdict = scanner.scan_bytes(buf.getvalue(), subject="long.gif")
    assert verdict.action is Action.QUARANTINE
    assert ReasonCode.TOO_MANY_FRAMES.value in verdict.reason_codes
    # It was still hashed and classified as far as the budget went.
    assert len(verdict.scores) == 1
    assert verdict.media is not None and verdict.media.frame_count == 40


def test_verdict_json(banned_scanner: Scanner, corpus: corpus_mod.Corpus) -> None:
    for path in (corpus.copies["mirrored"], corpus.clean["coffee"], corpus.hostile["empty_file"]):
        verdict = banned_scanner.scan_path(path)
        out = json.loads(verdict.to_json())
        assert {"action", "reasons", "matches", "scores", "hashes", "timings_ms", "policy_version"} <= set(out)
        assert out["action"] == verdict.action.value
        assert out["policy_version"] == banned_scanner.policy.version
        assert out["subject"] == str(path)
        assert out["hashes"]["sha256"] == verdict.hashes.sha256
        assert [r["code"] for r in out["reasons"]] == verdict.reason_codes
        assert len(out["matches"]) == len(verdict.matches)
        assert all(isinstance(v, float) for v in out["timings_ms"].values())
        assert out["bank_version"] == banned_scanner.matcher.version

    blocked = json.loads(banned_scanner.scan_path(corpus.copies["mirrored"]).to_json())
    assert blocked["scores"] == []
    assert {m["bank"] for m in blocked["matches"]} == {"banned"}
    allowed = json.loads(banned_scanner.scan_path(corpus.clean["coffee"]).to_json())
    assert allowed["scores"][0]["model"] == "open_nsfw"
    assert allowed["hashes"]["pdq_quality"] >= 50
    assert allowed["media"]["format"] == "jpeg"


def test_no_classifier_fails_closed(policy: Policy, store: SqliteBankStore, corpus: corpus_mod.Corpus) -> None:
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=None, classifier_error="model file missing")
    verdict = scanner.scan_path(corpus.clean["chelsea"])
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason_codes == ["model_unavailable"]
    assert verdict.reasons[0].text == "model file missing"
    assert verdict.scores == ()
    # A bank block does not need the model.
    ban(store, corpus.banned)
    scanner.matcher.refresh()
    assert scanner.scan_path(corpus.copies["as_png"]).action is Action.BLOCK


def test_no_matcher_still_scans(policy: Policy, classifier: OpenNsfwClassifier, corpus: corpus_mod.Corpus) -> None:
    verdict = Scanner(policy=policy, matcher=None, classifier=classifier).scan_path(corpus.banned)
    assert verdict.action is Action.ALLOW and verdict.bank_version == 0


def test_scanner_never_raises(scanner: Scanner) -> None:
    """Whatever the bytes, a verdict comes back, and never an allow for garbage."""
    for data in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM" + b"\x00" * 30, b"II*\x00" + b"\xff" * 20):
        verdict = scanner.scan_bytes(data)
        assert isinstance(verdict, Verdict)
        assert verdict.action is not Action.ALLOW, data


def test_the_model_scores_a_large_jpeg_as_it_would_without_banks(policy: Policy, store: SqliteBankStore,
                                                                 classifier: OpenNsfwClassifier,
                                                                 corpus: corpus_mod.Corpus) -> None:
    # Banks make the scan decode a JPEG to at least 512 pixels (copy detection needs
    # them); the model's frame is box-shrunk back to the size a scan without banks
    # decodes, so it costs the model no more and its score barely moves.
    with Image.open(corpus.clean["coffee"]) as img:
        big = img.convert("RGB").resize((2400, 1600), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    data = out.getvalue()
    ban(store, corpus.banned)
    with_banks = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)
    without = Scanner(policy=policy, matcher=None, classifier=classifier)
    assert with_banks._decode_side(with_banks._copy_search()) > without._decode_side(without._copy_search())  # type: ignore[operator]
    seen: list[tuple[int, ...]] = []
    original = classifier.classify

    def spy(frames):  # type: ignore[no-untyped-def]
        seen.append(tuple(f.shape for f in frames))
        return original(frames)

    classifier.classify = spy  # type: ignore[method-assign]
    try:
        a, b = with_banks.scan_bytes(data), without.scan_bytes(data)
    finally:
        del classifier.classify
    assert seen[0] == seen[1] == ((400, 600, 3),), seen  # 1/4 scale, as decoded for the model alone
    assert abs(a.scores[0].score - b.scores[0].score) < 0.01, (a.scores, b.scores)


def test_regions_and_keypoints_are_looked_for_only_where_a_bank_can_match_them(policy: Policy,
                                                                             store: SqliteBankStore,
                                                                             corpus: corpus_mod.Corpus) -> None:
    # Region hashes are PDQ and keypoints meet image bans' keypoints: a host whose banks
    # hold only exact hashes (or nothing) pays for neither, nor for the larger decode.
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=None)
    data = corpus.clean["coffee"].read_bytes()
    assert scanner._copy_search() == (False, False)
    assert scanner._decode_side((False, False)) == scanner.decode_min_side
    store.add([NewEntry(Algorithm.SHA256, "ab" * 32, "banned")], **WHO)
    scanner.matcher.refresh()  # type: ignore[union-attr]
    assert scanner._copy_search() == (False, False)
    verdict = scanner.scan_bytes(data)
    assert verdict.action is not Action.BLOCK
    ban(store, corpus.banned)
    scanner.matcher.refresh()  # type: ignore[union-attr]
    assert scanner._copy_search() == (True, True)
