"""Data after the image's end: found, named, reported, scanned where it can be, and
decided by the policy's ``[trailing]`` table. Real files: motion photos whose MP4 was
written by OpenCV, Pillow's multi-picture JPEGs, ZIPs from zipfile, HEIC from libheif."""

from __future__ import annotations

import importlib.resources
import re

import pytest
from PIL import Image

from photosentry.decode import decode
from photosentry.errors import PolicyError
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.media import trailing
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action, ReasonCode

from . import corpus as corpus_mod
from . import media_files
from .test_pipeline import ban

SCAN = {"mp4", "jpeg"}


@pytest.fixture(scope="module")
def photos(corpus: corpus_mod.Corpus) -> dict[str, Image.Image]:
    out = {}
    for name, path in {"banned": corpus.banned, "coffee": corpus.clean["coffee"],
                       "astronaut": corpus.clean["astronaut"]}.items():
        with Image.open(path) as img:
            out[name] = img.convert("RGB")
    return out


@pytest.fixture(scope="module")
def clips(photos: dict[str, Image.Image]) -> dict[str, bytes]:
    return {name: media_files.clip_of(img) for name, img in photos.items() if name != "astronaut"}


def _appended(photos: dict[str, Image.Image]) -> dict[str, tuple[bytes, bytes, str]]:
    """name -> (image bytes, what is appended, expected kind)."""
    coffee = photos["coffee"]
    zip_ = media_files.zip_bytes({"readme.txt": b"not a photo", "run.sh": b"#!/bin/sh\n"})
    return {
        "jpeg+zip": (media_files.encode(coffee, "JPEG", quality=90), zip_, trailing.ZIP),
        "jpeg+html": (media_files.encode(coffee, "JPEG"), b"<html><body><script>fetch('/x')</script>", trailing.SCRIPT),
        "jpeg+zeros": (media_files.encode(coffee, "JPEG"), bytes(4096), trailing.PADDING),
        "jpeg+noise": (media_files.encode(coffee, "JPEG"), bytes(range(1, 256)) * 8, trailing.UNKNOWN),
        "png+php": (media_files.encode(coffee, "PNG"), b"<?php system($_GET['c']); ?>", trailing.SCRIPT),
        "gif+js": (media_files.encode(coffee.convert("P"), "GIF"), b"*/=1;alert(document.domain);//", trailing.SCRIPT),
        "webp+zip": (media_files.encode(coffee, "WEBP", quality=80), zip_, trailing.ZIP),
        "heic+zip": (media_files.heic(coffee), zip_, trailing.ZIP),
        "avif+zip": (media_files.avif(coffee), zip_, trailing.ZIP),
    }


def test_each_kind_of_appended_data_is_found_where_the_image_ends(photos: dict[str, Image.Image]) -> None:
    for name, (image, extra, kind) in _appended(photos).items():
        decoded = decode(image + extra, scan_trailing=SCAN)
        assert [(t.kind, t.offset, t.size) for t in decoded.trailers] == [(kind, len(image), len(extra))], name
        assert decode(image).trailers == (), name  # the image alone has none


@pytest.mark.parametrize("style", ["google-container", "google-microvideo", "samsung"])
def test_motion_photo_video_is_named_and_its_frames_sampled(style: str, photos: dict[str, Image.Image],
                                                            clips: dict[str, bytes]) -> None:
    still, video = photos["coffee"], clips["coffee"]
    if style == "samsung":
        data = media_files.samsung_motion_photo(still, video)
        source = "samsung:MotionPhoto_Data"
    else:
        data = media_files.google_motion_photo(still, video, style="container" if "container" in style else "micro")
        source = "xmp:MotionPhoto" if "container" in style else "xmp:MicroVideo"
    decoded = decode(data, min_side=512, scan_trailing=SCAN)
    mp4 = [t for t in decoded.trailers if t.kind == trailing.MP4]
    assert len(mp4) == 1 and mp4[0].source == source and mp4[0].error is None
    start, stop = mp4[0].span()
    assert data[start:stop] == video
    assert mp4[0].frames_scanned == 8 and len(decoded.frames) == 9 and decoded.image_frames == 1
    assert decoded.frame_indices == tuple(range(9))
    assert len({f.tobytes() for f in decoded.frames[1:]}) > 1  # real, moving video frames
    if style == "samsung":
        assert [t.kind for t in decoded.trailers] == [trailing.MP4, trailing.METADATA]
    # Not asked to scan: listed all the same, no frame decoded.
    listed = decode(data)
    assert [t.kind for t in listed.trailers][:1] == [trailing.MP4] and len(listed.frames) == 1
    assert listed.trailers[0].frames_scanned == 0


def test_a_motion_video_behind_other_bytes_is_still_found(photos: dict[str, Image.Image],
                                                         clips: dict[str, bytes]) -> None:
    """Samsung's block name with no SEF directory (older phones), and junk before a video."""
    jpeg, video = media_files.encode(photos["coffee"], "JPEG"), clips["coffee"]
    marker = decode(jpeg + b"MotionPhoto_Data" + video, scan_trailing=SCAN).trailers
    assert [(t.kind, t.source) for t in marker] == [(trailing.METADATA, "samsung:marker"),
                                                     (trailing.MP4, "samsung:MotionPhoto_Data")]
    assert marker[1].frames_scanned == 8
    junk = decode(jpeg + b"\x13\x37" * 50 + video, scan_trailing=SCAN).trailers
    assert [t.kind for t in junk] == [trailing.UNKNOWN, trailing.MP4] and junk[0].size == 100


def test_a_samsung_heic_keeps_its_video_in_a_box_that_is_found_and_scanned(photos: dict[str, Image.Image],
                                                                           clips: dict[str, bytes]) -> None:
    data = media_files.samsung_heic_motion_photo(photos["coffee"], clips["coffee"])
    decoded = decode(data, scan_trailing=SCAN)
    [part] = decoded.trailers
    assert (part.kind, part.source, part.frames_scanned, part.error) == (trailing.MP4, "heif:mpvd", 8, None)
    start, stop = part.span()
    assert data[start:stop] == clips["coffee"] and stop == len(data)


def test_multi_picture_images_are_scanned_as_jpegs(photos: dict[str, Image.Image]) -> None:
    data = media_files.multi_picture(photos["coffee"], photos["banned"])
    decoded = decode(data, scan_trailing=SCAN)
    [part] = decoded.trailers
    assert (part.kind, part.source, part.frames_scanned) == (trailing.JPEG, "mpf", 1)
    assert decoded.frames[1].shape[:2] == photos["banned"].size[::-1]


def test_a_video_that_cannot_be_read_keeps_its_reason(photos: dict[str, Image.Image]) -> None:
    fake = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x10\x08mdat" + bytes(range(256)) * 16
    decoded = decode(media_files.encode(photos["coffee"], "JPEG") + fake, scan_trailing=SCAN)
    [part] = decoded.trailers
    assert part.kind == trailing.MP4 and part.frames_scanned == 0 and part.error


def test_only_so_many_parts_are_scanned(photos: dict[str, Image.Image]) -> None:
    tiny = media_files.encode(photos["coffee"].resize((64, 48)), "JPEG")
    decoded = decode(tiny * 12, scan_trailing=SCAN)
    assert len(decoded.trailers) == 11
    assert sum(t.frames_scanned for t in decoded.trailers) == 8
    assert all(t.error for t in decoded.trailers[8:])


def test_a_png_whose_iend_was_replaced_still_has_its_zip_found(photos: dict[str, Image.Image]) -> None:
    png = media_files.encode(photos["coffee"], "PNG")
    assert png.endswith(b"IEND\xaeB`\x82")
    data = png[:-12] + media_files.zip_bytes({"a": b"b"})
    kinds = [t.kind for t in decode(data).trailers]
    assert kinds == [trailing.ZIP]


def test_what_follows_an_image_is_split_by_its_own_framing(photos: dict[str, Image.Image],
                                                           clips: dict[str, bytes]) -> None:
    """F6: Samsung SEF blocks are looked into, an appended image or ZIP ends where its own
    structure says (what follows is a part of its own), PNG chunks after IEND are measured,
    and TIFF and BMP photos have their end found like every other format."""
    small = photos["coffee"].resize((96, 64))
    jpg = media_files.encode(small, "JPEG")
    zip_ = media_files.zip_bytes({"a.txt": b"not a photo"})
    script = b"<script>alert(document.cookie)</script>"
    tiff, bmp, png = (media_files.encode(small, fmt) for fmt in ("TIFF", "BMP", "PNG"))
    chunk = media_files.png_chunk(b"tEXt", b"Comment\x00after the end")
    utc, video = b"1765000000000", clips["coffee"]
    cases = {
        "sef": (media_files.samsung_sef(jpg, [(b"Image_UTC_Data", 0x0A01, utc), (b"MotionPhoto_Data", 0x0A30, video)]),
                [("metadata", "samsung:Image_UTC_Data"), ("mp4", "samsung:MotionPhoto_Data"),
                 ("metadata", "samsung:SEF directory")]),
        "sef+script": (media_files.samsung_sef(jpg, [(b"Image_UTC_Data", 0x0A01, script)]),
                       [("script", "samsung:Image_UTC_Data"), ("metadata", "samsung:SEF directory")]),
        "zip then script": (jpg + zip_ + script, [("zip", ""), ("script", "")]),
        "png chunks then zip": (png + chunk + zip_, [("unknown", "png:chunks"), ("zip", "")]),
        "jpeg+tiff+script": (jpg + tiff + script, [("image", "tiff"), ("script", "")]),
        "jpeg+bmp": (jpg + bmp, [("image", "bmp")]),
        "jpeg+png": (jpg + png, [("image", "png")]),
        "tiff+zip": (tiff + zip_, [("zip", "")]),
        "bmp+zip": (bmp + zip_, [("zip", "")]),
    }
    for name, (data, expected) in cases.items():
        found = decode(data, scan_trailing=SCAN | {"image"}).trailers
        assert [(t.kind, t.source) for t in found] == expected, (name, found)
        assert sum(t.size for t in found) == len(data) - found[0].offset, name  # every byte is in a part
        assert all(t.frames_scanned == 1 and t.error is None for t in found if t.kind == "image"), name
    sizes = {t.kind: t.size for t in decode(jpg + zip_ + script).trailers}
    assert sizes == {"zip": len(zip_), "script": len(script)}
    # The photos alone have nothing after them.
    for alone in (tiff, bmp, media_files.encode(small, "TIFF", compression="tiff_lzw"),
                  media_files.encode(small.convert("P"), "BMP"),
                  media_files.encode(small, "TIFF", save_all=True, append_images=[small.rotate(90, expand=True)])):
        assert [t.kind for t in decode(alone).trailers] in ([], ["padding"])


# -- through the Scanner and the policy ------------------------------------------------------------


@pytest.fixture
def scanner(policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier,
            corpus: corpus_mod.Corpus) -> Scanner:
    ban(store, corpus.banned)
    return Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)


def test_a_clean_motion_photo_is_allowed_and_its_video_reported(scanner: Scanner, photos: dict[str, Image.Image],
                                                               clips: dict[str, bytes]) -> None:
    data = media_files.google_motion_photo(photos["coffee"], clips["coffee"])
    verdict = scanner.scan_bytes(data, subject="motion.jpg")
    assert verdict.action is Action.ALLOW, [r.text for r in verdict.reasons]
    assert verdict.media is not None
    assert f"trailing_mp4:{len(clips['coffee'])}" in verdict.media.notes
    assert verdict.media.frames_scanned == 9 and verdict.scores
    assert verdict.to_dict()["media"]["trailing"][0]["frames_scanned"] == 8


def test_a_banned_photo_in_a_motion_photos_video_is_blocked(scanner: Scanner, photos: dict[str, Image.Image],
                                                          clips: dict[str, bytes]) -> None:
    """The still is clean; only the video no viewer of the still sees shows the banned photo."""
    for data in (media_files.google_motion_photo(photos["coffee"], clips["banned"]),
                 media_files.samsung_motion_photo(photos["coffee"], clips["banned"])):
        verdict = scanner.scan_bytes(data, subject="motion.jpg")
        assert verdict.action is Action.BLOCK, verdict.reason_codes
        assert ReasonCode.BANK_MATCH.value in verdict.reason_codes
        assert {m.frame for m in verdict.matches if m.algorithm.is_perceptual} - {0}, "matched on a video frame"


def test_a_jpeg_zip_polyglot_is_quarantined_with_what_was_found(scanner: Scanner,
                                                                photos: dict[str, Image.Image]) -> None:
    image, zip_, _ = _appended(photos)["jpeg+zip"]
    verdict = scanner.scan_bytes(image + zip_, subject="holiday.jpg")
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason_codes == [ReasonCode.TRAILING_DATA.value]
    detail = verdict.reasons[0].detail
    assert (detail["kind"], detail["size"], detail["offset"]) == ("zip", len(zip_), len(image))
    assert f"trailing_zip:{len(zip_)}" in verdict.media.notes  # type: ignore[union-attr]


def test_a_banned_photo_appended_as_a_tiff_is_blocked(scanner: Scanner, photos: dict[str, Image.Image]) -> None:
    data = media_files.encode(photos["coffee"], "JPEG") + media_files.encode(photos["banned"], "TIFF")
    verdict = scanner.scan_bytes(data, subject="holiday.jpg")
    assert verdict.action is Action.BLOCK, verdict.reason_codes
    assert verdict.to_dict()["media"]["trailing"][0]["kind"] == "image"


def test_a_bmp_with_a_zip_after_it_is_quarantined(scanner: Scanner, photos: dict[str, Image.Image]) -> None:
    zip_ = media_files.zip_bytes({"a.txt": b"not a photo"})
    verdict = scanner.scan_bytes(media_files.encode(photos["coffee"], "BMP") + zip_)
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason_codes == [ReasonCode.TRAILING_DATA.value]


def test_a_banned_photo_hidden_as_the_exif_thumbnail_is_blocked(scanner: Scanner,
                                                                photos: dict[str, Image.Image]) -> None:
    """F11: galleries and file browsers show the EXIF thumbnail instead of the photo, so
    it is decoded, hashed and classified like another frame."""
    def with_thumbnail(photo: Image.Image, thumbnail: Image.Image) -> bytes:
        small = media_files.encode(thumbnail.resize((160, 160 * thumbnail.height // thumbnail.width)), "JPEG")
        return media_files.encode(photo, "JPEG", exif=media_files.exif_with_thumbnail(small))

    verdict = scanner.scan_bytes(with_thumbnail(photos["coffee"], photos["banned"]), subject="holiday.jpg")
    assert verdict.action is Action.BLOCK, verdict.reason_codes
    assert {m.frame for m in verdict.matches if m.algorithm.is_perceptual} == {1}, "matched on the thumbnail only"
    part = verdict.to_dict()["media"]["trailing"][0]
    assert (part["kind"], part["source"], part["frames_scanned"]) == ("jpeg", "exif:thumbnail", 1)

    clean = scanner.scan_bytes(with_thumbnail(photos["coffee"], photos["coffee"]))
    assert clean.action is Action.ALLOW, [r.text for r in clean.reasons]
    assert clean.media is not None and clean.media.frames_scanned == 2


def test_padding_is_allowed_and_reported(scanner: Scanner, photos: dict[str, Image.Image]) -> None:
    image, zeros, _ = _appended(photos)["jpeg+zeros"]
    verdict = scanner.scan_bytes(image + zeros)
    assert verdict.action is Action.ALLOW and verdict.media is not None
    assert "trailing_padding:4096" in verdict.media.notes


def test_an_unreadable_motion_video_fails_closed(scanner: Scanner, photos: dict[str, Image.Image]) -> None:
    fake = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x10\x08mdat" + bytes(range(256)) * 16
    verdict = scanner.scan_bytes(media_files.encode(photos["coffee"], "JPEG") + fake)
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason_codes == [ReasonCode.TRAILING_UNSCANNED.value]


def _policy_with_mp4(action: str) -> Policy:
    """The shipped policy with ``[trailing] mp4`` changed."""
    text = importlib.resources.files("photosentry.worker").joinpath("default_policy.toml").read_text("utf-8")
    changed = re.sub(r'^mp4 = "scan".*$', f'mp4 = "{action}"', text, count=1, flags=re.MULTILINE)
    assert changed != text
    return Policy.from_toml(changed)


@pytest.mark.parametrize("action, expected", [("quarantine", Action.QUARANTINE), ("block", Action.BLOCK),
                                              ("allow", Action.ALLOW)])
def test_the_policy_decides_what_a_motion_photo_gets(action: str, expected: Action, photos: dict[str, Image.Image],
                                                     clips: dict[str, bytes], classifier: OpenNsfwClassifier) -> None:
    policy = _policy_with_mp4(action)
    assert policy.base.trailing.action("mp4") == action
    scanner = Scanner(policy=policy, matcher=None, classifier=classifier)
    verdict = scanner.scan_bytes(media_files.google_motion_photo(photos["coffee"], clips["coffee"]))
    assert verdict.action is expected, verdict.reason_codes
    assert verdict.media is not None and verdict.media.frames_scanned == 1  # not asked to scan it
    assert verdict.media.trailers[0].kind == "mp4"  # reported whatever the policy does with it
    if expected is not Action.ALLOW:
        assert verdict.reason_codes == [ReasonCode.TRAILING_DATA.value]


def test_the_trailing_table_is_validated() -> None:
    minimal = 'version = "t"\n'
    with pytest.raises(PolicyError, match="unknown = 'allow'"):
        Policy.from_toml(minimal + '[trailing]\nunknown = "allow"\n')
    with pytest.raises(PolicyError, match="can be scanned"):
        Policy.from_toml(minimal + '[trailing]\nzip = "scan"\n')
    with pytest.raises(PolicyError, match="unknown keys"):
        Policy.from_toml(minimal + '[trailing]\nrar = "block"\n')
    with pytest.raises(PolicyError, match="is not one of"):
        Policy.from_toml(minimal + '[trailing]\nzip = "strip"\n')
    # Omitted kinds get the shipped answers; a profile can only make them stricter.
    loaded = Policy.from_toml(minimal + '[trailing]\nzip = "block"\n[profiles.kids]\nwhen_true = ["kid"]\n'
                              '[profiles.kids.trailing]\nmp4 = "quarantine"\nzip = "allow"\n')
    assert loaded.base.trailing.action("zip") == "block" and loaded.base.trailing.action("unknown") == "quarantine"
    kids = loaded.profile_for({"kid": True}).trailing
    assert kids.action("mp4") == "quarantine" and kids.action("zip") == "block"
    assert "mp4" not in kids.scan_kinds
