"""Location privacy: every verdict says whether the photo carries GPS coordinates, and the
minors profile has allowed uploads written back without them (and without other
identifying metadata), losslessly, by the worker's act stage."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image
from rq.job import Job
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.decode import decode, sniff_format
from photosentry.media import scrub
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService
from photosentry.worker.verdict import Action, ReasonCode

from . import corpus as corpus_mod
from . import media_files
from .test_worker import run_burst

MINOR = {"recipient_is_minor": True}
SERIAL = b"SN-0042-1337"
XMP_GPS = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.5N"'
           b' exif:GPSLongitude="2,17.7E"/></rdf:RDF></x:xmpmeta>')


@pytest.fixture(scope="module")
def coffee(corpus: corpus_mod.Corpus) -> Image.Image:
    with Image.open(corpus.clean["coffee"]) as img:
        return img.convert("RGB")


def located(coffee: Image.Image) -> dict[str, bytes]:
    """The same photo with GPS (and a camera serial number) in every format that can carry it."""
    exif = media_files.gps_exif(orientation=6)
    return {
        "jpeg": media_files.encode(coffee, "JPEG", quality=90, exif=exif, xmp=XMP_GPS, comment=b"at home",
                                   icc_profile=b"\x00" * 128),
        "png": media_files.encode(coffee, "PNG", exif=media_files.gps_exif(orientation=3)),
        "webp": media_files.encode(coffee, "WEBP", quality=85, exif=exif, xmp=XMP_GPS),
        "heif": media_files.heic(coffee, exif=media_files.gps_exif()),
        "avif": media_files.avif(coffee, exif=media_files.gps_exif(), xmp=XMP_GPS),
    }


def test_gps_coordinates_are_reported(coffee: Image.Image) -> None:
    for fmt, data in located(coffee).items():
        assert decode(data).gps, fmt
    assert decode(media_files.encode(coffee, "JPEG", xmp=XMP_GPS)).gps  # XMP alone
    assert not decode(media_files.encode(coffee, "JPEG")).gps
    camera_only = Image.Exif()
    camera_only[0x010F] = "PhoneMaker"
    assert not decode(media_files.encode(coffee, "JPEG", exif=camera_only.tobytes())).gps


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "heif", "avif"])
def test_strip_metadata_removes_location_and_keeps_every_pixel(fmt: str, coffee: Image.Image) -> None:
    data = located(coffee)[fmt]
    before = decode(data)
    clean = scrub.strip_metadata(data, fmt)
    after = decode(clean)
    assert sniff_format(clean[:64]) == fmt
    assert before.gps and not after.gps
    assert SERIAL in data and SERIAL not in clean
    assert b"GPSLatitude" not in clean
    assert (after.width, after.height) == (before.width, before.height)  # orientation kept
    assert np.array_equal(after.frames[0], before.frames[0])  # not re-encoded: the same pixels
    assert scrub.strip_metadata(clean, fmt) == clean  # a second pass changes nothing
    if fmt in ("heif", "avif"):
        assert len(clean) == len(data)  # items blanked in place: nothing moved


def test_jpeg_keeps_what_displays_the_picture_and_drops_the_rest(coffee: Image.Image) -> None:
    data = located(coffee)["jpeg"]
    clean = scrub.strip_metadata(data, "jpeg")
    with Image.open(io.BytesIO(clean)) as img:
        assert img.info.get("icc_profile") == b"\x00" * 128  # colour profile kept
        assert dict(img.getexif()) == {0x0112: 6}  # only the orientation is left
        assert "xmp" not in img.info and "comment" not in img.info


def test_trailing_data_is_dropped(coffee: Image.Image) -> None:
    clip = media_files.clip_of(coffee, seconds=0.5)
    for data in (media_files.google_motion_photo(coffee, clip, exif=media_files.gps_exif()),
                 media_files.samsung_motion_photo(coffee, clip, exif=media_files.gps_exif()),
                 media_files.multi_picture(coffee, coffee)):
        clean = scrub.strip_metadata(data, "jpeg")
        assert decode(data).trailers and decode(clean).trailers == ()
        assert b"MotionPhoto" not in clean and b"MPF\x00" not in clean


def test_a_samsung_heic_loses_its_video_box_and_exif_in_place(coffee: Image.Image) -> None:
    data = media_files.samsung_heic_motion_photo(coffee, media_files.clip_of(coffee, seconds=0.5))
    clean = scrub.strip_metadata(data, "heif")
    assert len(clean) == len(data) and b"mpvd" not in clean and SERIAL not in clean
    after = decode(clean, scan_trailing={"mp4"})
    assert after.trailers == () and not after.gps
    assert np.array_equal(after.frames[0], decode(data).frames[0])


def test_formats_that_cannot_be_rewritten_say_so(coffee: Image.Image, corpus: corpus_mod.Corpus) -> None:
    assert not scrub.can_strip("tiff") and not scrub.can_strip("gif")
    with pytest.raises(ValueError):
        scrub.strip_metadata(media_files.encode(coffee, "TIFF"), "tiff")
    truncated = corpus.banned.read_bytes()[:5000]
    with pytest.raises(ValueError):
        scrub.strip_metadata(truncated, "jpeg")


# -- the policy ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scanner(classifier: OpenNsfwClassifier) -> Scanner:
    return Scanner(policy=Policy.default(), matcher=None, classifier=classifier)


def test_the_minors_profile_asks_for_allowed_uploads_to_be_stripped(scanner: Scanner, coffee: Image.Image) -> None:
    data = located(coffee)["jpeg"]
    minor = scanner.scan_bytes(data, context=MINOR)
    assert minor.action is Action.ALLOW and minor.rewrite == (scrub.STRIP_METADATA,)
    assert minor.media is not None and minor.media.gps and "gps_coordinates" in minor.media.notes
    assert minor.to_dict()["rewrite"] == ["strip_metadata"] and minor.to_dict()["media"]["gps"] is True
    adult = scanner.scan_bytes(data)
    assert adult.action is Action.ALLOW and adult.rewrite == () and "rewrite" not in adult.to_dict()
    assert adult.media is not None and adult.media.gps  # reported whatever the profile


def test_a_photo_with_coordinates_that_cannot_be_stripped_is_held_for_minors(scanner: Scanner,
                                                                          coffee: Image.Image) -> None:
    tiff = media_files.encode(coffee, "TIFF", exif=media_files.gps_exif())
    minor = scanner.scan_bytes(tiff, context=MINOR)
    assert minor.action is Action.QUARANTINE
    assert minor.reason_codes == [ReasonCode.LOCATION_NOT_REMOVED.value]
    assert scanner.scan_bytes(tiff).action is Action.ALLOW  # adults: reported, not held
    plain = scanner.scan_bytes(media_files.encode(coffee, "TIFF"), context=MINOR)
    assert plain.action is Action.ALLOW and plain.rewrite == ()


# -- the worker's act stage ------------------------------------------------------------------------


def test_the_worker_rewrites_an_allowed_minors_upload_in_place(
    redis_client: redis.Redis, service: ScanService, coffee: Image.Image
) -> None:
    root = Path(service.settings.source_roots[0])
    clip = media_files.clip_of(coffee, seconds=0.5)
    original = media_files.google_motion_photo(coffee, clip, exif=media_files.gps_exif(orientation=6))
    for name in ("child.jpg", "adult.jpg"):
        (root / name).write_bytes(original)
        os.chmod(root / name, 0o640)
    inline = located(coffee)["webp"]
    jobs = {
        "child": enqueue_scan(redis_client, source="child.jpg", upload_id="child", context=MINOR),
        "adult": enqueue_scan(redis_client, source="adult.jpg", upload_id="adult"),
        "inline": enqueue_scan(redis_client, source=inline, upload_id="inline", context=MINOR),
    }
    run_burst(redis_client, service)
    verdicts = {k: Job.fetch(j, connection=redis_client, serializer=JSONSerializer).return_value()
                for k, j in jobs.items()}
    assert {k: v["action"] for k, v in verdicts.items()} == {"child": "allow", "adult": "allow", "inline": "allow"}
    assert verdicts["child"]["rewrite"] == ["strip_metadata"] and "rewrite" not in verdicts["adult"]
    assert verdicts["inline"]["rewrite"] == ["strip_metadata"]  # the producer holds the bytes: its job

    child = (root / "child.jpg").read_bytes()
    assert child == scrub.strip_metadata(original, "jpeg")
    assert not decode(child).gps and decode(child).trailers == ()
    assert np.array_equal(decode(child).frames[0], decode(original).frames[0])
    assert (root / "child.jpg").stat().st_mode & 0o777 == 0o640
    assert (root / "adult.jpg").read_bytes() == original

    # The same upload again (a retried job): its verdict is replayed, the file left as it is.
    again = enqueue_scan(redis_client, source="child.jpg", upload_id="child", context=MINOR)
    run_burst(redis_client, service)
    assert Job.fetch(again, connection=redis_client, serializer=JSONSerializer).return_value() == verdicts["child"]
    assert (root / "child.jpg").read_bytes() == child
