"""Safe decoding: every hostile input gets its reason code, every real photo its pixels."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from photosentry import defaults
from photosentry.decode import (
    DECOMPRESSION_BOMB,
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TOO_MANY_PIXELS,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    DecodedImage,
    Limits,
    decode,
    read_limited,
    sniff_format,
    to_rgb_array,
)
from photosentry.errors import UnreadableImage
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action

from . import corpus as corpus_mod
from .test_pipeline import ban

SKIMAGE_DATA = Path(skimage.data.__file__).parent


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def reason(data: bytes, limits: Limits = Limits()) -> str:
    with pytest.raises(UnreadableImage) as info:
        decode(data, limits)
    return info.value.code


def small_photo() -> Image.Image:
    return corpus_mod.load("chelsea.png").resize((96, 64), Image.Resampling.LANCZOS)


def animated_gif(n_frames: int, size: tuple[int, int] = (16, 16)) -> bytes:
    """A GIF whose frame i is flat grey 5*i (distinct, so Pillow keeps every frame)."""
    frames = [Image.new("L", size, 5 * i) for i in range(n_frames)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


# -- reason codes ---------------------------------------------------------------------


def test_zero_bytes_is_empty_file() -> None:
    assert reason(b"") == EMPTY_FILE


def test_corpus_hostile_files_get_their_codes(corpus: corpus_mod.Corpus) -> None:
    for code, path in corpus.hostile.items():
        assert reason(path.read_bytes()) == code, path.name


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_text("GIF? no. JPEG? no. Just words.\n")
    assert reason(read_limited(path, Limits().max_bytes)) == NOT_AN_IMAGE


def test_truncated_jpeg_is_unreadable(corpus: corpus_mod.Corpus) -> None:
    data = corpus.banned.read_bytes()
    for keep in (len(data) // 3, len(data) // 2, len(data) - 200):
        assert reason(data[:keep]) == UNREADABLE


def test_truncated_png_is_unreadable() -> None:
    data = encode(small_photo(), "PNG")
    assert reason(data[: len(data) // 2]) == UNREADABLE


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_bit_flips_never_crash(fmt: str) -> None:
    """Random bit flips past the magic bytes: either unreadable or real pixels, nothing else."""
    data = encode(small_photo(), fmt)
    rng = np.random.default_rng(20261101)
    outcomes = {"decoded": 0, UNREADABLE: 0}
    for _ in range(150):
        corrupt = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(8, len(corrupt)))
            corrupt[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            image = decode(bytes(corrupt))
        except UnreadableImage as exc:
            assert exc.code == UNREADABLE, exc.message
            outcomes[UNREADABLE] += 1
            continue
        outcomes["decoded"] += 1
        frame = image.frames[0]
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert frame.shape[:2] == (image.height, image.width)
    # The sample must exercise both outcomes, or the test proves little.
    assert outcomes["decoded"] and outcomes[UNREADABLE], outcomes


def test_png_bomb_rejected_by_pillow_limit() -> None:
    # 10^10 pixels: past Pillow's own DecompressionBombError.
    assert reason(corpus_mod.png_with_declared_size(100_000, 100_000)) == DECOMPRESSION_BOMB


def test_png_bomb_rejected_by_our_limit_before_decoding() -> None:
    # 10^8 pixels: under Pillow's error level (only its warning, which must not leak:
    # filterwarnings=error would fail the test) but over our 50 MP limit.
    assert reason(corpus_mod.png_with_declared_size(10_000, 10_000)) == DECOMPRESSION_BOMB


def test_gif_bombs_rejected() -> None:
    assert reason(corpus_mod.gif_with_declared_size(60_000, 60_000)) == DECOMPRESSION_BOMB
    assert reason(corpus_mod.gif_with_declared_size(10_000, 10_000)) == DECOMPRESSION_BOMB


def test_gif_bomb_hidden_behind_a_small_screen() -> None:
    # A 10x10 logical screen whose one frame declares 9000x9000.
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 9000, 9000, 0) + b"\x02\x02\x44\x01\x00"
    assert reason(screen + frame + b";") == DECOMPRESSION_BOMB


def test_small_pixel_limit_applies_to_ordinary_photos() -> None:
    # An ordinary PNG over the limit is too big to decode, not an attack: PNG cannot be reduced.
    data = encode(small_photo(), "PNG")
    assert reason(data, Limits(max_pixels=96 * 64 - 1)) == TOO_MANY_PIXELS
    assert decode(data, Limits(max_pixels=96 * 64)).width == 96


def test_over_max_bytes_is_too_large(tmp_path: Path, corpus: corpus_mod.Corpus) -> None:
    data = corpus.banned.read_bytes()
    limits = Limits(max_bytes=len(data) - 1)
    assert reason(data, limits) == TOO_LARGE
    # read_limited refuses it too, from a path (by size) and from a stream (by reading).
    with pytest.raises(UnreadableImage) as info:
        read_limited(corpus.banned, limits.max_bytes)
    assert info.value.code == TOO_LARGE
    with pytest.raises(UnreadableImage) as info:
        read_limited(io.BytesIO(data), limits.max_bytes)
    assert info.value.code == TOO_LARGE
    assert read_limited(corpus.banned, len(data)) == data


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage) as info:
        read_limited(tmp_path / "gone.jpg", 1000)
    assert info.value.code == UNREADABLE


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Limits(max_frames=0)


def _iso_bmff(brand: bytes) -> bytes:
    ftyp = b"ftyp" + brand + b"\x00\x00\x00\x00" + b"mif1" + brand
    return struct.pack(">I", len(ftyp) + 4) + ftyp + b"\x00" * 64


@pytest.mark.parametrize(
    "data, name",
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "svg"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "svg"),
        (b"8BPS\x00\x01" + b"\x00" * 40, "psd"),
        (b"%PDF-1.7\n" + b"\x00" * 40, "pdf"),
    ],
)
def test_known_but_unsupported_formats(data: bytes, name: str) -> None:
    assert sniff_format(data[:64]) == name
    assert reason(data) == UNSUPPORTED_FORMAT


@pytest.mark.parametrize("brand, name", [(b"heic", "heif"), (b"avif", "avif"), (b"mp42", "isobmff")])
def test_iso_bmff_brands(brand: bytes, name: str) -> None:
    """HEIF and AVIF are read now; a header with no image behind it is unreadable, a video unsupported."""
    data = _iso_bmff(brand)
    assert sniff_format(data[:64]) == name
    assert reason(data) == (UNSUPPORTED_FORMAT if name == "isobmff" else UNREADABLE)


def test_wrong_extension_does_not_matter(tmp_path: Path) -> None:
    photo = small_photo()
    cases = {"really_png.jpg": ("PNG", "png"), "really_jpeg.gif": ("JPEG", "jpeg"), "no_extension": ("GIF", "gif")}
    for filename, (fmt, expected) in cases.items():
        path = tmp_path / filename
        path.write_bytes(encode(photo, fmt))
        image = decode(read_limited(path, Limits().max_bytes))
        assert image.format == expected
        assert (image.width, image.height) == (96, 64)


# -- orientation and modes --------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 10))  # blue square, top left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = encode(img, "JPEG", exif=exif, quality=95)

    image = decode(data)
    assert (image.width, image.height) == (20, 40)
    frame = image.frames[0]
    assert frame.shape == (40, 20, 3)
    # Clockwise rotation takes the top-left corner to the top right.
    assert frame[3, -4, 2] > 200 and frame[3, -4, 0] < 50
    assert frame[3, 3, 0] > 200 and frame[3, 3, 2] < 50
    with Image.open(io.BytesIO(data)) as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
    np.testing.assert_array_equal(frame, expected)


def test_absurd_exif_orientation_is_ignored_with_a_note() -> None:
    exif = Image.Exif()
    exif[0x0112] = 99
    image = decode(encode(Image.new("RGB", (40, 20), (0, 128, 0)), "JPEG", exif=exif))
    assert (image.width, image.height) == (40, 20)
    assert "exif_orientation_invalid" in image.notes


def only_pixel(data: bytes) -> np.ndarray:
    frame = decode(data).frames[0]
    assert frame.dtype == np.uint8 and frame.shape[2] == 3
    return frame


def test_mode_l() -> None:
    frame = only_pixel(encode(Image.new("L", (8, 8), 77), "PNG"))
    assert (frame == 77).all()


def test_mode_la_transparent_becomes_white() -> None:
    img = Image.new("LA", (8, 8), (77, 255))
    img.putpixel((0, 0), (77, 0))
    frame = only_pixel(encode(img, "PNG"))
    assert frame[0, 0].tolist() == [255, 255, 255]
    assert frame[4, 4].tolist() == [77, 77, 77]


def test_mode_rgba_composited_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    img.putpixel((0, 0), (10, 20, 30, 0))
    img.putpixel((1, 0), (0, 0, 0, 128))
    frame = only_pixel(encode(img, "PNG"))
    assert frame[0, 0].tolist() == [255, 255, 255]
    assert frame[0, 1].tolist() == [127, 127, 127]  # half-transparent black over white
    assert frame[4, 4].tolist() == [10, 20, 30]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_mode_p_with_transparency(fmt: str) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    frame = only_pixel(encode(img, fmt, transparency=1))
    assert frame[0, 0].tolist() == [255, 0, 0]
    assert frame[4, 4].tolist() == [255, 255, 255]  # palette entry 1 is transparent


def test_mode_cmyk_jpeg() -> None:
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    with Image.open(io.BytesIO(encode(img, "JPEG", quality=95))) as reread:
        assert reread.mode == "CMYK"
    frame = only_pixel(encode(img, "JPEG", quality=95))
    r, g, b = frame[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_mode_i16_is_scaled_not_clipped() -> None:
    values = np.full((20, 30), 40000, dtype=np.uint16)
    values[0, 0] = 1000
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    data = encode(img, "PNG")
    with Image.open(io.BytesIO(data)) as reread:
        assert reread.mode.startswith("I")
    frame = only_pixel(data)
    assert frame[5, 5].tolist() == [156, 156, 156]  # 40000 / 257
    assert frame[0, 0].tolist() == [3, 3, 3]
    assert not (frame == 255).all()


def test_mode_i16_brightness_does_not_depend_on_content() -> None:
    # A dark 16-bit photo (every value <= 255) must stay dark, not be read as 8-bit.
    for top, expected in ((255, 0), (256, 1), (65535, 255)):
        img = Image.fromarray(np.full((8, 8), top, dtype=np.uint16))
        assert img.mode == "I;16"
        assert only_pixel(encode(img, "PNG"))[0, 0].tolist() == [expected] * 3, top


def test_to_rgb_array_float_mode() -> None:
    img = Image.fromarray(np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32))
    assert img.mode == "F"
    assert to_rgb_array(img)[:, :, 0].tolist() == [[0, 127], [255, 0]]


def test_real_photo_decodes_to_its_pixels(corpus: corpus_mod.Corpus) -> None:
    path = corpus.copies["as_png"]
    image = decode(path.read_bytes())
    assert isinstance(image, DecodedImage)
    assert (image.format, image.frame_count, image.frame_indices) == ("png", 1, (0,))
    with Image.open(path) as reference:
        np.testing.assert_array_equal(image.frames[0], np.asarray(reference.convert("RGB")))


# -- animations -----------------------------------------------------------------------


def test_bundled_animated_gif() -> None:
    data = (SKIMAGE_DATA / "no_time_for_that_tiny.gif").read_bytes()
    image = decode(data)
    assert image.format == "gif"
    assert image.frame_count > Limits().scan_frames
    assert len(image.frames) == Limits().scan_frames
    assert image.frame_indices[0] == 0 and image.frame_indices[-1] == image.frame_count - 1
    assert not image.frames_truncated
    for frame in image.frames:
        assert frame.shape == (image.height, image.width, 3)
    # The sampled frames differ (it is an animation, not one frame repeated).
    assert len({f.tobytes() for f in image.frames}) > 1


def test_sampled_frames_spread_over_the_animation() -> None:
    image = decode(animated_gif(50), Limits(scan_frames=4))
    assert image.frame_count == 50
    assert len(image.frames) == 4
    assert image.frame_indices[0] == 0 and image.frame_indices[-1] == 49
    assert list(image.frame_indices) == sorted(set(image.frame_indices))
    # Each kept frame really is the frame its index says (frame i is grey 5*i).
    for index, frame in zip(image.frame_indices, image.frames, strict=True):
        assert (frame == 5 * index).all(), index
    assert not image.frames_truncated


def test_too_many_frames_is_truncated() -> None:
    image = decode(animated_gif(30), Limits(max_frames=10))
    assert image.frame_count == 30
    assert image.frames_truncated
    assert max(image.frame_indices) <= 9


def test_total_pixel_budget_truncates() -> None:
    image = decode(animated_gif(30, size=(10, 10)), Limits(max_total_pixels=10 * 10 * 5))
    assert image.frames_truncated
    assert max(image.frame_indices) <= 4


def test_multipage_tiff() -> None:
    image = decode((SKIMAGE_DATA / "multipage.tif").read_bytes())
    assert image.format == "tiff"
    assert image.frame_count == len(image.frames) == 2
    assert image.frame_indices == (0, 1)


def test_every_tiff_page_is_checked_against_the_pixel_limit() -> None:
    small, large = Image.new("RGB", (10, 10), (0, 0, 0)), Image.new("RGB", (100, 100), (0, 0, 0))
    data = encode(small, "TIFF", save_all=True, append_images=[large])
    assert decode(data).frame_count == 2
    assert reason(data, Limits(max_pixels=1000)) == TOO_MANY_PIXELS


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_a_frame_shown_for_seconds_among_many_brief_ones_is_kept(fmt: str) -> None:
    """F10: frames are chosen by display time, not by index alone: the one frame a viewer
    really sees (10 s among 120 frames of 10 ms) is kept wherever it sits."""
    count, shown_long = 120, 60  # linspace(0, 119, 8) would keep 51 and 68, never 60
    frames = [Image.new("RGB", (32, 32), (2 * i, 100, 50)) for i in range(count)]
    frames[shown_long] = Image.new("RGB", (32, 32), (250, 0, 250))
    durations = [10] * count
    durations[shown_long] = 10_000
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=durations, loop=0,
                  **({"lossless": True} if fmt == "WEBP" else {}))
    image = decode(data)
    assert image.frame_count == count and len(image.frames) == Limits().scan_frames
    assert shown_long in image.frame_indices and image.frame_indices[0] == 0 and image.frame_indices[-1] == count - 1
    kept = image.frames[image.frame_indices.index(shown_long)]
    assert abs(kept.astype(int) - (250, 0, 250)).max() < 8  # really that frame
    # Frames all shown as long are still spread evenly over the animation.
    assert decode(animated_gif(50), Limits(scan_frames=4)).frame_indices == (0, 16, 33, 49)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_every_frame_walked_is_hashed_and_a_banned_one_is_matched(
    fmt: str, corpus: corpus_mod.Corpus, store: SqliteBankStore, classifier: OpenNsfwClassifier
) -> None:
    """F10: the models see 8 frames, but every frame walked (within ``HASH_FRAMES``) is
    hashed, so a banned picture in one frame the sampling skips is still matched."""
    ban(store, corpus.banned)
    count, hidden = 61, 30  # linspace(0, 60, 8) keeps 26 and 34, never 30
    clean = corpus_mod.load("coffee.png").convert("RGB").resize((320, 213))
    frames = [clean.rotate(i, fillcolor=(i, 0, 0)) for i in range(count)]
    with Image.open(corpus.banned) as banned:
        frames[hidden] = banned.convert("RGB").resize((320, 213))
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                  **({"lossless": True} if fmt == "WEBP" else {}))
    image = decode(data)
    assert hidden not in image.frame_indices and hidden in image.hash_frame_indices
    assert sorted(image.frame_indices + image.hash_frame_indices) == list(range(count))
    assert all(max(f.shape[:2]) <= defaults.HASH_FRAME_SIDE for f in image.hash_frames)
    # A budget smaller than the animation spreads the hashed frames over it.
    assert len(decode(data, Limits(hash_frames=20)).hash_frame_indices) == 20 - Limits().scan_frames

    verdict = Scanner(policy=Policy.default(), matcher=BankMatcher(store), classifier=classifier).scan_bytes(data)
    assert verdict.action is Action.BLOCK, verdict.reason_codes
    assert {m.frame for m in verdict.matches if m.algorithm.is_perceptual} == {hidden}
