"""How much of a picture is flat colour (hashes/flatness.py): photos under the line,
an app's screen over it, and any box's share read from one map."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photosentry import defaults
from photosentry.decode import decode
from photosentry.hashes.flatness import FlatMap, is_flat

from . import corpus as corpus_mod
from .test_open_false_matches import chat


def decoded(img: Image.Image, quality: int = 85) -> np.ndarray:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return decode(out.getvalue()).frames[0]


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"])
def test_photos_are_not_flat(name: str) -> None:
    assert not is_flat(FlatMap(decoded(corpus_mod.load(name))).share())


@pytest.mark.parametrize("keyboard, quality, scale", [(True, 92, 1.0), (False, 50, 0.5), (True, 70, 0.33), (False, 85, 0.25)])
def test_a_chat_screen_is_flat_however_it_was_saved(keyboard: bool, quality: int, scale: float) -> None:
    img = chat(3, keyboard=keyboard)
    img = img.resize((round(img.width * scale), round(img.height * scale)))
    assert is_flat(FlatMap(decoded(img, quality)).share())


def test_a_box_reads_its_own_share() -> None:
    photo = np.asarray(corpus_mod.load("astronaut.png").convert("RGB").resize((400, 400)))
    canvas = np.full((1200, 600, 3), 255, np.uint8)
    canvas[400:800, 100:500] = photo
    flat = FlatMap(canvas)
    assert flat.share() > defaults.FLAT_PICTURE_SHARE  # mostly the white canvas
    assert flat.share((110, 410, 490, 790)) < 0.2  # the photo in it
    assert flat.share((0, 0, 600, 300)) == 1.0  # the canvas above it
    assert 0.0 <= flat.share((590, 1190, 600, 1200)) <= 1.0 and flat.share((5000, 5000, 6000, 6000)) >= 0.0


def test_tiny_and_grey_frames() -> None:
    assert FlatMap(np.zeros((1, 1, 3), np.uint8)).share() == 1.0
    assert FlatMap(np.zeros((3, 5000, 3), np.uint8)).share((0, 0, 5000, 3)) == 1.0


def test_dots_on_the_sampled_pixels_do_not_make_a_photo_flat() -> None:
    # The red team set every 5th pixel of every 5th row to one grey: a strided thumbnail
    # of that photo was all flat. An area average is not.
    photo = np.asarray(corpus_mod.load("astronaut.png").convert("RGB").resize((1200, 1200))).copy()
    photo[::5, ::5] = 128
    assert not is_flat(FlatMap(photo).share())


def test_a_ban_keeps_its_pictures_flat_share_with_its_keypoints() -> None:
    from photosentry.hashes.localfeatures import LocalFeatures, banned_features

    chat_features = banned_features(decoded(chat(2, keyboard=True)))
    photo_features = banned_features(decoded(corpus_mod.load("coffee.png")))
    assert chat_features is not None and photo_features is not None
    again = LocalFeatures.decode(chat_features.encode())
    assert again.flat is not None and is_flat(again.flat) and abs(again.flat - chat_features.flat) < 0.01  # type: ignore[operator]
    assert again.size == chat_features.size and len(again) == len(chat_features)
    assert not is_flat(LocalFeatures.decode(photo_features.encode()).flat)  # type: ignore[arg-type]
    # An entry from before the share was kept reads as not known.
    old = LocalFeatures(photo_features.points, photo_features.descriptors, size=photo_features.size).encode()
    assert LocalFeatures.decode(old).flat is None and LocalFeatures.decode(old).size == photo_features.size
