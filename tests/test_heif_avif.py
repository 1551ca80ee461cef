"""HEIC/HEIF and AVIF, as phones write them: read under the same limits as every other
format, oriented, and hashed close enough to the JPEG of the same picture that a HEIC or
AVIF copy of a banned JPEG is blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosentry.decode import (
    DECOMPRESSION_BOMB,
    UNREADABLE,
    Limits,
    decode,
    sniff_format,
)
from photosentry.errors import UnreadableImage
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.codecs import Algorithm, hamming
from photosentry.hashes.matcher import BankMatcher
from photosentry.media import containers
from photosentry.hashes.signals import hash_image
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action, ReasonCode

from . import corpus as corpus_mod
from . import media_files
from .test_fast_decode import MAX_DRIFT
from .test_pipeline import ban

ENCODERS = {"heif": media_files.heic, "avif": media_files.avif}


def reason(data: bytes, limits: Limits = Limits()) -> UnreadableImage:
    with pytest.raises(UnreadableImage) as info:
        decode(data, limits)
    return info.value


@pytest.fixture(scope="module")
def banned_image(corpus: corpus_mod.Corpus) -> Image.Image:
    with Image.open(corpus.banned) as img:
        return img.convert("RGB")


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_real_files_decode_to_their_picture(fmt: str, banned_image: Image.Image) -> None:
    data = ENCODERS[fmt](banned_image)
    assert sniff_format(data[:64]) == fmt
    image = decode(data)
    assert (image.format, image.width, image.height, image.frame_count) == (fmt, *banned_image.size, 1)
    diff = np.abs(image.frames[0].astype(int) - np.asarray(banned_image, dtype=int)).mean()
    assert diff < 6, diff  # lossy, but the same picture


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_orientation_is_applied_like_a_jpeg(fmt: str) -> None:
    """The encoders turn EXIF orientation 6 into HEIF's irot (pillow-heif) or keep it as EXIF
    (libavif); either way the frame comes out as a viewer shows it, as for a JPEG."""
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 16, 16))  # blue square, top left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    data = media_files.heic(img, quality=90, exif=exif.tobytes()) if fmt == "heif" else \
        media_files.avif(img, quality=90, exif=exif.tobytes())
    reference = decode(media_files.encode(img, "JPEG", quality=95, exif=exif.tobytes())).frames[0]
    image = decode(data)
    assert (image.width, image.height) == (32, 64)
    frame = image.frames[0]
    assert frame[4, -6, 2] > 200 and frame[4, -6, 0] < 60  # blue now top right
    assert np.abs(frame.astype(int) - reference.astype(int)).mean() < 8


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_truncated_files_are_unreadable(fmt: str, banned_image: Image.Image) -> None:
    data = ENCODERS[fmt](banned_image)
    for cut in (20, 100, len(data) // 2, len(data) - 10):
        refused = reason(data[:cut])
        assert refused.code == UNREADABLE, (cut, refused.message)
        assert fmt in refused.message


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_huge_declared_size_is_a_bomb(fmt: str, banned_image: Image.Image) -> None:
    # Sides a multiple of 16, so the encoders write no clean-aperture (clap) box, whose
    # crop would decide the reported size instead of the ispe box rewritten here.
    data = ENCODERS[fmt](banned_image.crop((0, 0, 640, 416)))
    # 81 MP declared in a 20-90 KB file: refused from the header, never decoded.
    refused = reason(media_files.rewrite_ispe(data, 9000, 9000))
    assert refused.code == DECOMPRESSION_BOMB, refused.message
    # 10 gigapixels: libavif refuses to parse it at all; libheif reports the size, which we refuse.
    assert reason(media_files.rewrite_ispe(data, 100_000, 100_000)).code in (DECOMPRESSION_BOMB, UNREADABLE)


def test_avif_whose_ispe_understates_its_av1_frame_is_budgeted_by_the_coded_size() -> None:
    """F7: the AV1 decoder allocates what the sequence header says, whatever ``ispe`` claims;
    a 16.7 MP frame behind a 64x64 ispe is refused from its headers like any bomb."""
    data = media_files.avif(Image.new("RGB", (4096, 4096), (120, 130, 140)), quality=50, speed=10)
    small = media_files.rewrite_ispe(data, 64, 64)
    assert containers.coded_frame_sizes(small, "avif") == [(4096, 4096)]
    limits = Limits(max_pixels=4_000_000)
    refused = reason(small, limits)
    assert refused.code == DECOMPRESSION_BOMB, refused.message
    assert "4096x4096" in refused.message and "ispe declares 64x64" in refused.message
    # Honest files are planned on their one size as before; an alpha plane's own
    # sequence header (the same size) changes nothing.
    assert decode(media_files.avif(Image.new("RGBA", (333, 201), (1, 2, 3, 100)))).width == 333
    assert reason(data, limits).code == DECOMPRESSION_BOMB


def test_heic_whose_ispe_understates_its_hevc_frame_is_budgeted_by_the_coded_size() -> None:
    """F7 for HEIC: libde265 decodes what the SPS says before libheif checks ``ispe``."""
    data = media_files.heic(Image.new("RGB", (2048, 2048), (120, 130, 140)), quality=30)
    small = media_files.rewrite_ispe(data, 64, 64)
    assert containers.coded_frame_sizes(small, "heif") == [(2048, 2048)]
    refused = reason(small, Limits(max_pixels=1_000_000))
    assert refused.code == DECOMPRESSION_BOMB, refused.message
    assert "2048x2048" in refused.message and "ispe declares 64x64" in refused.message
    # Real files: an iPhone-style grid's tiles code less than the grid declares, and an
    # image with alpha codes its alpha plane at the same size.
    assert decode(data).width == 2048
    assert decode(media_files.heic(Image.new("RGBA", (333, 201), (1, 2, 3, 100)))).width == 333


def test_heif_with_more_images_than_libheif_allows_is_refused_with_its_reason() -> None:
    tiles = [Image.new("RGB", (16, 16), (i % 256, 0, 0)) for i in range(1100)]
    refused = reason(media_files.heic_sequence(tiles))
    assert refused.code == UNREADABLE
    assert "security limit" in refused.message.lower(), refused.message


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_many_images_are_sampled_within_the_frame_budget(fmt: str) -> None:
    tiles = [Image.new("RGB", (16, 16), (i * 2 % 256, 80, 0)) for i in range(120)]
    data = media_files.heic_sequence(tiles) if fmt == "heif" else \
        media_files.encode(tiles[0], "AVIF", save_all=True, append_images=tiles[1:], quality=60)
    image = decode(data, Limits(max_frames=50, scan_frames=4))
    assert image.frame_count == 120 and image.frames_truncated
    assert len(image.frames) == 4 and max(image.frame_indices) < 50


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_hashes_stay_within_the_fast_decode_drift_of_the_jpeg(fmt: str, corpus: corpus_mod.Corpus,
                                                               banned_image: Image.Image) -> None:
    jpeg = corpus.banned.read_bytes()
    full = decode(jpeg)
    reference = hash_image(jpeg, full.frames, full.frame_indices).frames[0]
    for quality in (60, 85):
        data = ENCODERS[fmt](banned_image, quality=quality)
        image = decode(data)
        copy = hash_image(data, image.frames, image.frame_indices).frames[0]
        for algorithm, limit in MAX_DRIFT.items():
            distance = hamming(reference.get(algorithm).value, copy.get(algorithm).value)  # type: ignore[union-attr]
            assert distance <= limit, (fmt, quality, algorithm, distance)


@pytest.fixture
def banned_scanner(policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier,
                   corpus: corpus_mod.Corpus) -> Scanner:
    ban(store, corpus.banned)
    return Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_a_copy_of_a_banned_jpeg_is_blocked(fmt: str, banned_scanner: Scanner, banned_image: Image.Image,
                                            corpus: corpus_mod.Corpus) -> None:
    w, h = banned_image.size
    copies = {
        "same size": ENCODERS[fmt](banned_image),
        "upscaled 2x": ENCODERS[fmt](banned_image.resize((2 * w, 2 * h), Image.Resampling.LANCZOS), quality=70),
        "mirrored": ENCODERS[fmt](banned_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    }
    for name, data in copies.items():
        verdict = banned_scanner.scan_bytes(data, subject=f"{name}.{fmt}")
        assert verdict.action is Action.BLOCK, (name, verdict.reason_codes)
        assert verdict.reason_codes == [ReasonCode.BANK_MATCH.value], name
        assert verdict.media is not None and verdict.media.format == fmt
        assert {m.algorithm for m in verdict.matches} >= {Algorithm.PDQ}, name
    # An unrelated photo in the same format is allowed and classified.
    with Image.open(corpus.clean["coffee"]) as other:
        verdict = banned_scanner.scan_bytes(ENCODERS[fmt](other.convert("RGB")), subject=f"coffee.{fmt}")
    assert verdict.action is Action.ALLOW, verdict.reason_codes
    assert verdict.scores


CRASHER = Path(__file__).parent / "data" / "heic-crashes-libheif-1.23.0.heic"
OPEN_IN_A_CHILD = """
import sys
from photosentry.decode import decode
from photosentry.errors import UnreadableImage
try:
    decode(open(sys.argv[1], "rb").read())
    print("decoded")
except UnreadableImage as exc:
    print(exc.code)
"""


def test_a_heic_that_crashed_an_older_libheif_is_refused_without_a_crash() -> None:
    """Found by fuzzing: libheif 1.23.0 (pi-heif 1.4.0) segfaults reading this file's metadata.
    Opened in a child process, so a regression fails this test instead of killing the run."""
    done = subprocess.run([sys.executable, "-c", OPEN_IN_A_CHILD, str(CRASHER)], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split()[-1] in ("unreadable", "decoded")
