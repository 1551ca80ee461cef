"""The fast decode path: JPEG DCT-domain downscaling for the scan, measured against a
full decode on real photos.

The golden tests (tests/test_hashes.py) hold full-resolution hashes to the reference
libraries; these tests hold the reduced path to a few bits of those, and check that a
photo banned from its full decode still matches its own entry when scanned fast.
The corpus photos are at most 2 MP, so the tests ask for a smaller ``min_side`` (128,
and 64 for the drift bound) to reach the 1/2 to 1/8 scales a 12 MP upload reaches at
the scan's 256. That is harsher than production: frames of 64-256 px here. PDQ is
computed with the full-resolution photo's own filter on the block means
(hashes/perceptual.py), which keeps it within a few bits of the full decode even so;
the same frames hashed as if they were the photo move up to 42 bits here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosentry.decode import DECOMPRESSION_BOMB, TOO_MANY_PIXELS, Limits, decode
from photosentry.errors import UnreadableImage
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.codecs import Algorithm, hamming
from photosentry.hashes.matcher import BankMatcher
from photosentry.hashes.signals import hash_image
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action, ReasonCode
from scripts.make_hostile import jpeg_with_size

from . import corpus as corpus_mod

MIN_SIDE = 256
#: Small enough that the 640x427 banned photo itself is decoded at 1/2 scale.
BANNED_MIN_SIDE = 128
#: Down to frames of 64 px: every corpus JPEG at 1/2 to 1/8 scale.
DRIFT_MIN_SIDES = (128, 64)
#: Bits a reduced decode may move, against a full decode (match distances: PDQ 31, pHash 8,
#: dHash 8). Measured: PDQ at most 10 (a 1411 px photo as a 176 px frame), pHash 2, dHash 2.
MAX_DRIFT = {Algorithm.PDQ: 12, Algorithm.PHASH: 4, Algorithm.DHASH: 4}


def jpeg_photos(corpus: corpus_mod.Corpus) -> dict[str, Path]:
    every = {"banned": corpus.banned, **corpus.clean, **corpus.copies}
    return {name: p for name, p in every.items() if p.suffix == ".jpg"}


def test_reduced_decode_reports_full_size_and_scale(corpus: corpus_mod.Corpus) -> None:
    for name, path in jpeg_photos(corpus).items():
        data = path.read_bytes()
        full, fast = decode(data), decode(data, min_side=MIN_SIDE)
        assert (fast.width, fast.height) == (full.width, full.height), name
        h, w = fast.frames[0].shape[:2]
        assert min(h, w) >= min(MIN_SIDE, full.width, full.height), name
        assert fast.reduction in (1, 2, 4, 8), name
        if min(full.width, full.height) >= 2 * MIN_SIDE:
            assert fast.reduction >= 2, name
            assert abs(w * fast.reduction - full.width) < fast.reduction, name


def test_non_jpeg_and_small_photos_are_decoded_whole(corpus: corpus_mod.Corpus) -> None:
    png = corpus.copies["as_png"].read_bytes()
    assert decode(png, min_side=MIN_SIDE).reduction == 1
    small = decode(corpus.banned.read_bytes(), min_side=4096)
    assert small.reduction == 1 and small.frames[0].shape[:2] == (small.height, small.width)


def test_reduced_hashes_stay_close_to_full_decode(corpus: corpus_mod.Corpus) -> None:
    worst = {a: 0 for a in MAX_DRIFT}
    block_matched = as_if_whole = 0
    for min_side in DRIFT_MIN_SIDES:
        for name, path in jpeg_photos(corpus).items():
            data = path.read_bytes()
            full, fast = decode(data), decode(data, min_side=min_side)
            if fast.reduction == 1:
                continue
            a = hash_image(data, full.frames, full.frame_indices).frames[0]
            b = hash_image(data, fast.frames, fast.frame_indices, source_size=(fast.width, fast.height),
                           reduction=fast.reduction).frames[0]
            for algorithm, limit in MAX_DRIFT.items():
                distance = hamming(a.get(algorithm).value, b.get(algorithm).value)  # type: ignore[union-attr]
                worst[algorithm] = max(worst[algorithm], distance)
                assert distance <= limit, (name, min_side, algorithm, distance)
            naive = hash_image(data, fast.frames, fast.frame_indices).frames[0].get(Algorithm.PDQ)
            block_matched += hamming(a.get(Algorithm.PDQ).value, b.get(Algorithm.PDQ).value)  # type: ignore[union-attr]
            as_if_whole += hamming(a.get(Algorithm.PDQ).value, naive.value)  # type: ignore[union-attr]
    assert worst[Algorithm.PDQ] > 0, "no photo was reduced: the test would prove nothing"
    # The photo's own filter on the block means, not a filter sized for the small frame.
    assert block_matched * 2 < as_if_whole, (block_matched, as_if_whole)


def test_exif_orientation_is_applied_to_reduced_frames(corpus: corpus_mod.Corpus) -> None:
    img = corpus_mod.load("astronaut.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    data = buf.getvalue()
    full, fast = decode(data), decode(data, min_side=MIN_SIDE)
    assert fast.reduction == 2
    assert (fast.width, fast.height) == (full.width, full.height)
    shrunk = np.asarray(Image.fromarray(full.frames[0]).resize(fast.frames[0].shape[1::-1], Image.Resampling.BOX))
    assert np.abs(shrunk.astype(int) - fast.frames[0].astype(int)).mean() < 6


def test_decode_limits_stay_in_force_on_the_fast_path(corpus: corpus_mod.Corpus) -> None:
    bomb = jpeg_with_size(corpus.banned.read_bytes(), 60_000, 60_000)
    with pytest.raises(UnreadableImage) as info:
        decode(bomb, min_side=512)
    assert info.value.code == DECOMPRESSION_BOMB
    with pytest.raises(UnreadableImage) as info:
        # 640x427 is 4,320 pixels even at 1/8: too many for this limit, but not an attack.
        decode(corpus.banned.read_bytes(), Limits(max_pixels=1000), min_side=8)
    assert info.value.code == TOO_MANY_PIXELS


def test_photo_banned_from_full_decode_matches_itself_on_the_fast_path(
    corpus: corpus_mod.Corpus, store: SqliteBankStore, policy: Policy
) -> None:
    from photosentry.cli.ban import _entries_from_image

    store.add(_entries_from_image(corpus.banned, "banned", "test"), actor="test", reason="fast path")
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=None, decode_min_side=BANNED_MIN_SIDE)
    for name, path in {"banned": corpus.banned, **corpus.copies}.items():
        verdict = scanner.scan_path(path)
        assert verdict.action is Action.BLOCK, name
        assert ReasonCode.BANK_MATCH in [r.code for r in verdict.reasons], name
        perceptual = [m for m in verdict.matches if m.algorithm in MAX_DRIFT]
        assert perceptual, name
    fast = decode(corpus.banned.read_bytes(), min_side=BANNED_MIN_SIDE)
    assert fast.reduction >= 2  # the banned photo itself really took the reduced path


def test_model_scores_on_the_scans_frames_keep_their_decisions(corpus: corpus_mod.Corpus, classifier) -> None:  # type: ignore[no-untyped-def]
    """The scan decodes to a 256 px short side (the model's input); its scores stay those
    of a full decode, decisions included, under both profiles of the shipped policy."""
    from photosentry import defaults
    from photosentry.models.optimize import band

    thresholds = Policy.default().decision_thresholds("open_nsfw")
    reduced = 0
    for name, path in {"banned": corpus.banned, **corpus.clean, **corpus.copies}.items():
        data = path.read_bytes()
        full, fast = decode(data), decode(data, min_side=defaults.DECODE_MIN_SIDE)
        reduced += fast.reduction > 1
        a, b = classifier.classify(full.frames).score, classifier.classify(fast.frames).score
        assert abs(a - b) <= 0.05, (name, a, b)
        assert all(band(a, t) == band(b, t) for t in thresholds), (name, a, b)
    assert reduced, "no photo was reduced: the test would prove nothing"
