"""Versioned upload buckets: a move or a rewrite never leaves an unscanned or GPS-bearing
version where the key serves it, and a job may name the version it means.

S3 serves the newest remaining version at a key. Deleting the version a job read used
to make the version before it current again: two uploads under one key a moment apart
(v1 a banned photo, v2 junk) whose jobs both read v2 left v1 live at the key with no
verdict for its bytes. Against moto in server mode, like tests/test_s3.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner
from PIL import Image

from photosentry import enqueue_scan
from photosentry.cli import cli
from photosentry.decode import decode
from photosentry.worker.service import ScanService

from . import media_files
from .corpus import Corpus
from .s3_server import S3Buckets
from .test_quarantine import bank_photo
from .test_s3 import MINOR, _enqueue_raw, sha, verdict_of
from .test_s3 import s3_service  # noqa: F401 - a fixture
from .test_worker import run_burst

KEY = "incoming/avatars/user-42.jpg"
JUNK = b"not a photo " * 50


def versioned(s3: S3Buckets) -> None:
    s3.client.put_bucket_versioning(Bucket=s3.uploads, VersioningConfiguration={"Status": "Enabled"})


def put_version(s3: S3Buckets, data: bytes, key: str = KEY) -> str:
    return s3.client.put_object(Bucket=s3.uploads, Key=key, Body=data)["VersionId"]


def versions(s3: S3Buckets, key: str = KEY) -> list[tuple[str, bool]]:
    """(version id, is latest) of each version of ``key``, newest first; delete markers apart."""
    listed = s3.client.list_object_versions(Bucket=s3.uploads, Prefix=key)
    return [(v["VersionId"], v["IsLatest"]) for v in listed.get("Versions", []) if v["Key"] == key]


def served(s3: S3Buckets, key: str = KEY) -> bytes | None:
    """What a plain GET of the key returns (None: nothing, a delete marker is current)."""
    return s3.get(key)


def recorded_shas(client: redis.Redis) -> set[str]:
    return {json.loads(f[b"verdict"])["hashes"]["sha256"] for _, f in client.xrange("photosentry:verdicts")
            if (json.loads(f[b"verdict"]).get("hashes") or {}).get("sha256")}


def test_a_move_never_makes_an_older_unscanned_version_current(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus  # noqa: F811
) -> None:
    versioned(s3)
    bank_photo(redis_client, corpus.banned, "banned")
    banned = corpus.banned.read_bytes()
    v1 = put_version(s3, banned)  # upload 1: what the uploader wants shown
    put_version(s3, JUNK)  # upload 2, a moment later: sure to be quarantined
    url = f"s3://{s3.uploads}/{KEY}"
    # Upload 1's job runs after upload 2 landed: without a version it reads v2, the junk.
    first = enqueue_scan(redis_client, source=url, upload_id="upload-v1")
    run_burst(redis_client, s3_service)
    assert verdict_of(redis_client, first)["action"] == "quarantine"
    assert sha(JUNK) in recorded_shas(redis_client) and sha(banned) not in recorded_shas(redis_client)
    # The junk is gone, and the banned photo, never scanned, is not served in its place.
    assert served(s3) is None
    assert versions(s3) == [(v1, False)]  # still there, noncurrent: no GET of the key returns it

    # Upload 2's job (it read v2 too in the race; here it comes later and finds no object).
    second = enqueue_scan(redis_client, source=url, upload_id="upload-v2")
    run_burst(redis_client, s3_service)
    assert verdict_of(redis_client, second)["action"] == "quarantine"
    assert served(s3) is None and versions(s3) == [(v1, False)]


def test_a_job_naming_its_version_reads_and_acts_on_that_version_only(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus  # noqa: F811
) -> None:
    versioned(s3)
    bank_photo(redis_client, corpus.banned, "banned")
    banned, clean = corpus.banned.read_bytes(), corpus.clean["coffee"].read_bytes()
    url = f"s3://{s3.uploads}/{KEY}"
    v1 = put_version(s3, banned)
    jobs = {"upload-v1": enqueue_scan(redis_client, source=url, upload_id="upload-v1", version_id=v1)}
    v2 = put_version(s3, clean)  # replaced before the first job ran
    sent = CliRunner().invoke(cli, ["enqueue", url, "--upload-id", "upload-v2", "--version-id", v2],
                              env={"PHOTOSENTRY_REDIS_URL": s3_service.settings.redis_url}, catch_exceptions=False)
    assert sent.exit_code == 0, sent.output
    jobs["upload-v2"] = sent.output.split()[0]
    run_burst(redis_client, s3_service)
    got = {uid: verdict_of(redis_client, job) for uid, job in jobs.items()}
    assert got["upload-v1"]["action"] == "block" and got["upload-v1"]["hashes"]["sha256"] == sha(banned)
    assert got["upload-v2"]["action"] == "allow" and got["upload-v2"]["hashes"]["sha256"] == sha(clean)
    # The banned version is gone; the clean one, current all along, stays.
    assert versions(s3) == [(v2, True)] and served(s3) == clean


def test_a_version_the_bucket_does_not_have_or_that_is_no_version_id_is_refused(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus, tmp_path: Path  # noqa: F811
) -> None:
    versioned(s3)
    put_version(s3, corpus.clean["coffee"].read_bytes())
    url = f"s3://{s3.uploads}/{KEY}"
    bad: list[Any] = ["no-such-version-3HL4kqtJlcpXroDTDmJ", "a b", "x" * 2000, 7, "", "\u202eversion"]
    jobs = [_enqueue_raw(redis_client, {"upload_id": f"v-{n}", "source": {"s3": url, "version_id": value}})
            for n, value in enumerate(bad)]
    jobs.append(_enqueue_raw(redis_client, {"upload_id": "v-extra", "source": {"s3": url, "version": "1"}}))
    run_burst(redis_client, s3_service)
    for job in jobs:
        verdict = verdict_of(redis_client, job)
        assert verdict["action"] == "quarantine" and verdict["reasons"][0]["code"] == "source_refused", verdict
    assert served(s3) == corpus.clean["coffee"].read_bytes()  # nothing was moved
    photo = tmp_path / "x.jpg"
    photo.write_bytes(b"x")
    refused = CliRunner().invoke(cli, ["enqueue", str(photo), "--version-id", "v"],
                                 env={"PHOTOSENTRY_REDIS_URL": s3_service.settings.redis_url})
    assert refused.exit_code == 2 and "--version-id needs exactly one s3:// PATH" in refused.output


def test_a_minors_rewrite_leaves_no_older_version_with_its_coordinates(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus  # noqa: F811
) -> None:
    versioned(s3)
    key = "incoming/child/profile.jpg"
    photos = []
    for name in ("coffee", "chelsea"):
        with Image.open(corpus.clean[name]) as img:
            photos.append(media_files.encode(img.convert("RGB"), "JPEG", quality=90, exif=media_files.gps_exif()))
    assert all(decode(p).gps for p in photos)
    put_version(s3, photos[0], key)  # an earlier upload under the key, with GPS
    put_version(s3, photos[1], key)
    job = enqueue_scan(redis_client, source=f"s3://{s3.uploads}/{key}", upload_id="child-1", context=MINOR)
    run_burst(redis_client, s3_service)
    verdict = verdict_of(redis_client, job)
    assert verdict["action"] == "allow" and verdict["rewrite"] == ["strip_metadata"]
    [(_, latest)] = versions(s3, key)  # only the clean one is left
    assert latest and not decode(served(s3, key)).gps


def test_a_move_leaves_a_newer_upload_under_the_key_current(s3: S3Buckets, corpus: Corpus) -> None:
    from photosentry.worker.sources import S3Source, SourceRoots

    versioned(s3)
    roots = SourceRoots([f"s3://{s3.uploads}/incoming/"])
    old = put_version(s3, JUNK)
    fetched = roots.fetch(S3Source(f"s3://{s3.uploads}/{KEY}"), max_bytes=10_000)
    assert fetched.data == JUNK and fetched.origin is not None
    newer = put_version(s3, corpus.clean["coffee"].read_bytes())  # uploaded while the job scanned
    assert SourceRoots.still_same(fetched)  # the version read is still there (noncurrent) ...
    assert fetched.origin.remove()  # ... and only it is deleted: no delete marker over the newer one
    assert versions(s3) == [(newer, True)] and served(s3) == corpus.clean["coffee"].read_bytes()
    assert old not in {v for v, _ in versions(s3)}
    assert not SourceRoots.still_same(fetched)  # applied again, it would not be touched: gone already
