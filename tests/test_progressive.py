"""Progressive JPEGs at 1/8 scale from their DC scans: the same pixels as the full file.

Real photos (scikit-image's bundled ones), enlarged so the scan's 1/8 scale applies,
saved progressive by Pillow's libjpeg in each subsampling, greyscale, with restart
markers and with an EXIF orientation: every frame must equal, pixel for pixel, the
frame decoded from the whole file. Files the rewrite does not understand must be
decoded as they are, and a truncated one must still fail.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photosentry import decode as decode_mod
from photosentry import progressive
from photosentry.decode import UNREADABLE, decode
from photosentry.errors import UnreadableImage

from . import corpus as corpus_mod

MIN_SIDE = 128


def _photo(name: str) -> Image.Image:
    """The photo enlarged to a 1024-pixel short side: decoded at 1/8 for MIN_SIDE."""
    img = corpus_mod.load(name).convert("RGB")
    factor = 1024 / min(img.size)
    return img.resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.LANCZOS)


def _jpeg(img: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **options)
    return buf.getvalue()


def _whole_file(data: bytes, min_side: int = MIN_SIDE) -> decode_mod.DecodedImage:
    """The frames decoded from the file as it is (the rewrite switched off)."""
    original = decode_mod._dc_scans_only
    decode_mod._dc_scans_only = lambda *args: None  # type: ignore[assignment]
    try:
        return decode(data, min_side=min_side)
    finally:
        decode_mod._dc_scans_only = original


CASES = {
    "4:4:4": dict(progressive=True, subsampling="4:4:4"),
    "4:2:2": dict(progressive=True, subsampling="4:2:2"),
    "4:2:0": dict(progressive=True, subsampling="4:2:0"),
    "restart markers": dict(progressive=True, subsampling="4:2:0", restart_marker_rows=1),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "chelsea.png"])
def test_dc_scans_decode_to_the_same_pixels(name: str, case: str) -> None:
    data = _jpeg(_photo(name), **CASES[case])
    lean = progressive.dc_only(data)
    assert lean is not None and len(lean) < len(data) / 2, "most of a progressive file is its AC scans"
    fast, whole = decode(data, min_side=MIN_SIDE), _whole_file(data)
    assert fast.reduction == whole.reduction == progressive.SCALE
    assert (fast.width, fast.height, fast.format) == (whole.width, whole.height, whole.format)
    assert fast.frames[0].shape == whole.frames[0].shape
    assert np.array_equal(fast.frames[0], whole.frames[0]), (name, case)


def test_greyscale_and_exif_orientation() -> None:
    grey = _jpeg(_photo("camera.png").convert("L"), progressive=True)
    assert np.array_equal(decode(grey, min_side=MIN_SIDE).frames[0], _whole_file(grey).frames[0])
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    rotated = _jpeg(_photo("coffee.png"), progressive=True, exif=exif.tobytes())
    fast, whole = decode(rotated, min_side=MIN_SIDE), _whole_file(rotated)
    assert fast.frames[0].shape[0] > fast.frames[0].shape[1]  # portrait once the EXIF turn is applied
    assert np.array_equal(fast.frames[0], whole.frames[0])


def test_without_libjpeg_turbo_chroma_keeps_its_scans() -> None:
    """Outside libjpeg-turbo the rule for scaling chroma up by the DCT is not known, so
    4:2:2 chroma keeps every scan (a bigger file, the same pixels)."""
    data = _jpeg(_photo("astronaut.png"), progressive=True, subsampling="4:2:2")
    turbo, other = progressive.dc_only(data, turbo=True), progressive.dc_only(data, turbo=False)
    assert turbo is not None and other is not None and len(other) > len(turbo)
    for rewritten in (turbo, other):
        with Image.open(io.BytesIO(rewritten)) as a, Image.open(io.BytesIO(data)) as b:
            for img in (a, b):
                img.draft("RGB", (img.width // 8, img.height // 8))
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_files_it_does_not_rewrite() -> None:
    photo = _photo("astronaut.png")
    assert progressive.dc_only(_jpeg(photo)) is None  # baseline: no AC scans of their own
    data = _jpeg(photo, progressive=True)
    assert progressive.dc_only(data[: len(data) // 2]) is None  # truncated: no end of image
    assert progressive.dc_only(data[:-2]) is None
    assert progressive.dc_only(b"\xff\xd8\xff\xe0\x00") is None  # a segment cut short
    assert progressive.dc_only(b"not a jpeg") is None
    cmyk = io.BytesIO()
    photo.convert("CMYK").save(cmyk, format="JPEG", progressive=True)
    assert progressive.dc_only(cmyk.getvalue()) is None


def test_truncated_progressive_upload_still_fails() -> None:
    data = _jpeg(_photo("astronaut.png"), progressive=True)
    with pytest.raises(UnreadableImage) as info:
        decode(data[: int(len(data) * 0.6)], min_side=MIN_SIDE)
    assert info.value.code == UNREADABLE


def test_small_or_larger_scale_decodes_the_whole_file() -> None:
    """Only at 1/8 scale do the DC coefficients make the picture: at 1/4 nothing is rewritten."""
    data = _jpeg(_photo("astronaut.png"), progressive=True)  # 1024x1024
    calls = []
    original = progressive.dc_only
    progressive.dc_only = lambda d, **kw: calls.append(1) or original(d, **kw)  # type: ignore[assignment]
    try:
        assert decode(data, min_side=256).reduction == 4
        assert decode(data, min_side=MIN_SIDE).reduction == 8
    finally:
        progressive.dc_only = original  # type: ignore[assignment]
    assert len(calls) == 1
