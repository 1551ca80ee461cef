"""Uploads in object storage, end to end against a real S3-compatible server.

The server is moto in server mode, a subprocess on a free port (tests/s3_server.py),
reached over HTTP by the same boto3 client the workers build: nothing is patched. A
worker (ScanService in this process, as in test_worker.py, on the tests' redis-server)
reads uploads from one bucket and keeps its stores in another; the CLI enqueues and
decides; the photos are the corpus's real JPEGs, the model is the real one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError, EndpointConnectionError
from click.testing import CliRunner
from PIL import Image
from rq.job import Job
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.cli import cli
from photosentry.decode import decode
from photosentry.errors import SourceRefused, StorageUnavailable, UnreadableImage
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.media import scrub
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.s3 import client as s3client
from photosentry.s3 import objects
from photosentry.s3.location import S3Location, S3Prefix, split_roots
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.review_queue import ReviewQueue
from photosentry.worker.service import ScanService, ServiceSettings
from photosentry.worker.sources import S3Source, SourceRoots
from photosentry.worker.stores import open_stores

from . import media_files
from .callback_receiver import KEY
from .corpus import Corpus
from .s3_server import S3Buckets
from .test_quarantine import bank_photo
from .test_worker import run_burst

MINOR = {"recipient_is_minor": True}


def s3_settings(redis_url: str, s3: S3Buckets, tmp_path: Path) -> ServiceSettings:
    """A worker reading s3://<uploads>/incoming/ (and a folder), with its stores in the private bucket."""
    folder = tmp_path / "uploads"
    folder.mkdir(exist_ok=True)
    return ServiceSettings(redis_url=redis_url, source_roots=(f"s3://{s3.uploads}/incoming/", str(folder)),
                           data_dir=str(tmp_path / "home"), store=f"s3://{s3.private}/photosentry/",
                           callback_key=KEY.decode(), refresh_interval_s=0.0, callback_networks=("127.0.0.0/8",))


@pytest.fixture
def s3_service(redis_client: redis.Redis, s3: S3Buckets, tmp_path: Path, policy: Policy,
               classifier: OpenNsfwClassifier, redis_server: str) -> ScanService:
    scanner = Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)), classifier=classifier)
    return ScanService(s3_settings(redis_server, s3, tmp_path), client=redis_client, scanner=scanner)


def verdict_of(client: redis.Redis, job_id: str) -> dict[str, Any]:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer).return_value()


def photosentry(*args: str, **env: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what a job may name ----------------------------------------------------------------------


def test_roots_are_folders_compared_segment_by_segment_never_as_string_prefixes() -> None:
    a = S3Prefix.parse("s3://uploads/a")
    assert a == S3Prefix.parse("s3://uploads/a/") and a.prefix == "a/"
    assert a.contains(S3Location.parse("s3://uploads/a/x.jpg"))
    assert a.contains(S3Location.parse("s3://uploads/a/b/c.jpg"))
    assert not a.contains(S3Location.parse("s3://uploads/ab/x.jpg"))
    assert not a.contains(S3Location.parse("s3://uploads/a"))  # the folder itself is no object in it
    assert not a.contains(S3Location.parse("s3://uploads2/a/x.jpg"))
    whole = S3Prefix.parse("s3://uploads/")
    assert whole.contains(S3Location.parse("s3://uploads/ab/x.jpg"))
    assert S3Prefix.parse("s3://uploads/a/b/").overlaps(a) and not S3Prefix.parse("s3://uploads/ab/").overlaps(a)
    # PHOTOSENTRY_SOURCE_ROOTS is split on ':' without cutting the URLs.
    assert split_roots("s3://uploads/a/:/srv/photos::s3://other/") == ["s3://uploads/a/", "/srv/photos",
                                                                      "s3://other/"]


def hostile_urls(up: str) -> list[object]:
    return [
        "s3://other-bucket/incoming/x.jpg",  # another bucket
        f"s3://{up}/incomingx/x.jpg",  # a sibling that a string-prefix check would admit
        f"s3://{up}/incoming",  # the root itself
        f"s3://{up}/elsewhere/x.jpg",
        f"s3://{up}/incoming/../elsewhere/x.jpg",
        f"s3://{up}/incoming/./x.jpg",
        f"s3://{up}/incoming//x.jpg",
        f"s3://{up}//incoming/x.jpg",
        f"s3://{up}/incoming/x.jpg/",
        f"s3://{up}/incoming/x\x00.jpg",
        f"s3://{up}/incoming/x\n.jpg",
        f"s3://{up}/incoming/x\u202egpj.exe",  # a right-to-left override: another name to a moderator
        f"s3://{up}/incoming/a\\..\\b.jpg",
        f"s3://{up}/incoming/\ud800.jpg",  # not UTF-8
        f"s3://{up}/incoming/" + "a" * 1100,
        "s3://arn:aws:s3:us-east-1:123456789012:accesspoint/ap/incoming/x.jpg",  # an access point elsewhere
        "s3://127.0.0.1/incoming/x.jpg",
        f"s3://{up.upper()}/incoming/x.jpg",
        f"S3://{up}/incoming/x.jpg",
        "s3://",
        f"https://{up}.s3.amazonaws.com/incoming/x.jpg",
        7,
    ]


def test_hostile_s3_sources_are_refused_before_any_request(s3: S3Buckets) -> None:
    # The client points at a closed port: a request would fail as StorageUnavailable, so
    # SourceRefused for every one shows that none was made.
    dead = s3client.connect(endpoint_url="http://127.0.0.1:1")
    roots = SourceRoots([f"s3://{s3.uploads}/incoming/"], s3_client=dead)
    for url in hostile_urls(s3.uploads):
        with pytest.raises(SourceRefused) as info:
            roots.fetch(S3Source(url), max_bytes=1000)  # type: ignore[arg-type]
        assert info.value.code == "source_refused", url
    with pytest.raises(SourceRefused, match="no s3:// source roots"):
        SourceRoots([], s3_client=dead).fetch(S3Source(f"s3://{s3.uploads}/incoming/x.jpg"), max_bytes=10)


def test_reads_are_bounded_pinned_and_missing_objects_are_refused(s3: S3Buckets) -> None:
    roots = SourceRoots([f"s3://{s3.uploads}/incoming/"])
    s3.put("incoming/big.jpg", b"x" * 5000)
    with pytest.raises(UnreadableImage) as info:
        roots.fetch(S3Source(f"s3://{s3.uploads}/incoming/big.jpg"), max_bytes=4999)
    assert info.value.code == "too_large"
    requests = s3.server.requests_naming(f"{s3.uploads}/incoming/big.jpg")
    # Refused from the HEAD's Content-Length: not one GET.
    assert [line.split('"')[1].split()[0] for line in requests] == ["PUT", "HEAD"], requests

    with pytest.raises(SourceRefused, match="does not exist") as missing:
        roots.fetch(S3Source(f"s3://{s3.uploads}/incoming/nope.jpg"), max_bytes=100)
    assert isinstance(missing.value.__cause__, FileNotFoundError)  # what `rescan` reports as missing

    url = s3.put("incoming/a.jpg", b"first")
    fetched = roots.fetch(S3Source(url), max_bytes=100)
    assert fetched.data == b"first" and fetched.origin is not None and fetched.origin.describe() == url
    assert SourceRoots.still_same(fetched)
    s3.put("incoming/a.jpg", b"second")  # another upload under the same key since
    assert not SourceRoots.still_same(fetched)
    assert not fetched.origin.remove() and not fetched.origin.replace(b"clean")
    assert s3.get("incoming/a.jpg") == b"second"  # neither deleted nor overwritten


def test_s3_errors_are_told_apart() -> None:
    def error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "GetObject")

    assert s3client.classify(error("NoSuchKey", 404)) == s3client.MISSING
    assert s3client.classify(error("404", 404)) == s3client.MISSING
    assert s3client.classify(error("AccessDenied", 403)) == s3client.DENIED
    assert s3client.classify(error("InvalidObjectState", 403)) == s3client.DENIED  # archived: cannot be read
    assert s3client.classify(error("PreconditionFailed", 412)) == s3client.CHANGED
    assert s3client.classify(error("SlowDown", 503)) == s3client.TRANSIENT
    assert s3client.classify(error("ConditionalRequestConflict", 409)) == s3client.TRANSIENT
    assert s3client.classify(EndpointConnectionError(endpoint_url="http://x")) == s3client.TRANSIENT
    location = S3Location("uploads", "incoming/x.jpg")
    with pytest.raises(SourceRefused, match="AccessDenied"):  # permanent: a fail-closed verdict, no retry
        objects._raise(error("AccessDenied", 403), "GET", location)
    with pytest.raises(StorageUnavailable, match="SlowDown"):  # the job is retried
        objects._raise(error("SlowDown", 503), "GET", location)


def test_a_store_may_not_overlap_a_source_root(s3: S3Buckets, tmp_path: Path) -> None:
    root = S3Prefix.parse(f"s3://{s3.uploads}/incoming/")
    for store in (f"s3://{s3.uploads}/incoming/quarantine/", f"s3://{s3.uploads}/", f"s3://{s3.uploads}/incoming"):
        with pytest.raises(ValueError, match="overlaps"):
            open_stores(store, tmp_path, source_roots=[root], s3_client=s3.client)
    open_stores(f"s3://{s3.uploads}/incoming-private/", tmp_path, source_roots=[root], s3_client=s3.client)
    refused = photosentry("worker", "--redis-url", "redis://127.0.0.1:1/0", "--source-root",
                          f"s3://{s3.uploads}/incoming/", "--store", f"s3://{s3.uploads}/incoming/q/")
    assert refused.exit_code == 3 and "overlaps" in refused.output  # a set-up error, like a folder store's


# -- a worker reading from a bucket -----------------------------------------------------------


def test_round_trip_upload_enqueue_verdict_move_review_release(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus, redis_server: str
) -> None:
    bank_photo(redis_client, corpus.clean["chelsea"], "moderation")  # quarantined
    bank_photo(redis_client, corpus.banned, "banned")  # blocked
    held, banned, clean = (corpus.clean["chelsea"].read_bytes(), corpus.banned.read_bytes(),
                           corpus.clean["coffee"].read_bytes())
    held_url = s3.put("incoming/2026/u-1.jpg", held, ContentType="image/jpeg")
    banned_url = s3.put("incoming/2026/u-2.jpg", banned)
    clean_url = s3.put("incoming/2026/u-3.jpg", clean)

    env = {"PHOTOSENTRY_REDIS_URL": redis_server}
    sent = photosentry("enqueue", held_url, "--upload-id", "u-1", "--context", "uploader_id=up-7", **env)
    assert sent.exit_code == 0 and sent.output.split()[1:] == ["u-1", held_url], sent.output
    jobs = {"u-2": enqueue_scan(redis_client, source=banned_url, upload_id="u-2"),
            "u-3": enqueue_scan(redis_client, source=clean_url, upload_id="u-3")}
    run_burst(redis_client, s3_service)
    verdicts = {"u-1": verdict_of(redis_client, sent.output.split()[0]),
                **{uid: verdict_of(redis_client, job) for uid, job in jobs.items()}}
    assert {uid: (v["action"], v["reasons"][0]["code"]) for uid, v in verdicts.items()} == {
        "u-1": ("quarantine", "bank_match"), "u-2": ("block", "bank_match"), "u-3": ("allow", "clean")}

    # Moved: copied into the private bucket, verified, then the upload deleted; the clean one stays.
    assert s3.keys(prefix="incoming/") == ["incoming/2026/u-3.jpg"]
    for store, data, uid in (("quarantine", held, "u-1"), ("blocked", banned, "u-2")):
        item = f"photosentry/{store}/{sha(data)[:2]}/{sha(data)}/"
        keys = s3.keys(s3.private, item)
        assert len(keys) == 2 and s3.get(f"{item}content", bucket=s3.private) == data, keys
        [sidecar] = [k for k in keys if k.startswith(f"{item}verdicts/")]
        assert json.loads(s3.get(sidecar, bucket=s3.private))["upload_id"] == uid
        grants = s3.client.get_object_acl(Bucket=s3.private, Key=f"{item}content")["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]  # the owner's alone: private

    # The moderators' queue knows where it came from; the same job again changes nothing.
    queue = ReviewQueue(redis_client)
    [item] = queue.pending(limit=10)
    assert item.record.upload_id == "u-1" and item.record.source_path == held_url and item.record.stored
    again = enqueue_scan(redis_client, source=held_url, upload_id="u-1")
    run_burst(redis_client, s3_service)
    assert verdict_of(redis_client, again) == verdicts["u-1"]
    assert len(s3.keys(s3.private, "photosentry/quarantine/")) == 2 and queue.pending_count() == 1

    review = {**env, "PHOTOSENTRY_SOURCE_ROOTS": f"s3://{s3.uploads}/incoming/",
              "PHOTOSENTRY_STORE": f"s3://{s3.private}/photosentry/", "PHOTOSENTRY_HOME": s3_service.settings.data_dir}
    shown = photosentry("quarantine", "show", item.item_id, **review)
    assert f"s3://{s3.private}/photosentry/quarantine/" in shown.output and held_url in shown.output
    done = photosentry("quarantine", "release", item.item_id, "--by", "alice", "--reason", "a cat", **review)
    assert done.exit_code == 0 and f"restored to {held_url}" in done.output, done.output
    assert s3.get("incoming/2026/u-1.jpg") == held  # back where it was uploaded
    restored = s3.client.head_object(Bucket=s3.uploads, Key="incoming/2026/u-1.jpg")
    assert restored["ContentType"] == "image/jpeg"
    assert s3.keys(s3.private, "photosentry/quarantine/") == []  # its only upload was decided
    assert queue.get(item.item_id).state == "released"
    twice = photosentry("quarantine", "release", item.item_id, "--by", "alice", "--reason", "a cat", **review)
    assert twice.exit_code == 0 and "already released" in twice.output


def test_hostile_jobs_end_source_refused_and_touch_nothing(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus
) -> None:
    photo = corpus.clean["coffee"].read_bytes()
    s3.put("elsewhere/x.jpg", photo)
    s3.put("incomingx/x.jpg", photo)
    jobs = [_enqueue_raw(redis_client, {"upload_id": f"h-{n}", "source": {"s3": url}})
            for n, url in enumerate(hostile_urls(s3.uploads))]
    jobs.append(_enqueue_raw(redis_client, {"upload_id": "h-path", "source": {"path": f"s3://{s3.uploads}/x"}}))
    jobs.append(_enqueue_raw(redis_client, {"upload_id": "h-both", "source": {
        "s3": f"s3://{s3.uploads}/incoming/x.jpg", "path": "x.jpg"}}))
    run_burst(redis_client, s3_service)
    for job in jobs:
        verdict = verdict_of(redis_client, job)
        assert verdict["action"] == "quarantine" and verdict["reasons"][0]["code"] == "source_refused", verdict
    assert sorted(s3.keys()) == ["elsewhere/x.jpg", "incomingx/x.jpg"]  # nothing outside the roots was touched
    for outside in ("elsewhere", "incomingx"):  # ... nor even read: only the test's own upload names them
        requests = s3.server.requests_naming(f"{s3.uploads}/{outside}")
        assert len(requests) == 1 and '"PUT ' in requests[0], requests
    assert s3.keys(s3.private) == []  # nothing refused is ever stored


def _enqueue_raw(client: redis.Redis, payload: dict[str, Any]) -> str:
    """A job as any producer could write it (the worker, not the enqueuer, must refuse it)."""
    from rq import Queue

    from photosentry.enqueue import _job_options
    from photosentry.worker.jobs import SCAN_FUNCTION

    queue = Queue("uploads", connection=client, serializer=JSONSerializer)
    return queue.enqueue(SCAN_FUNCTION, args=(payload,), **_job_options(0)).id


def test_an_s3_outage_is_retried_and_ends_fail_closed(
    redis_client: redis.Redis, s3: S3Buckets, tmp_path: Path, policy: Policy, classifier: OpenNsfwClassifier,
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens: every request fails
    scanner = Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)), classifier=classifier)
    service = ScanService(s3_settings(redis_server, s3, tmp_path), client=redis_client, scanner=scanner)
    job = enqueue_scan(redis_client, source=f"s3://{s3.uploads}/incoming/x.jpg", upload_id="down-1", retries=1)
    run_burst(redis_client, service)
    recorded = [json.loads(f[b"verdict"]) for _, f in redis_client.xrange("photosentry:verdicts")]
    [verdict] = [v for v in recorded if v["upload_id"] == "down-1"]
    assert verdict["action"] == "quarantine" and verdict["reasons"][0]["code"] == "scan_failed"
    assert "2 attempts" in verdict["reasons"][0]["text"] and "StorageUnavailable" in verdict["reasons"][0]["text"]
    assert Job.fetch(job, connection=redis_client, serializer=JSONSerializer).get_status() == "failed"


def test_an_allowed_minors_upload_in_a_bucket_is_rewritten_in_place(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus
) -> None:
    # Versioned, as many upload buckets are: the version with the coordinates must not stay behind.
    s3.client.put_bucket_versioning(Bucket=s3.uploads, VersioningConfiguration={"Status": "Enabled"})
    with Image.open(corpus.clean["coffee"]) as img:
        original = media_files.encode(img.convert("RGB"), "JPEG", quality=90, exif=media_files.gps_exif())
    assert decode(original).gps
    headers = {"ContentType": "image/jpeg", "CacheControl": "max-age=60", "Metadata": {"uploader": "up-9"}}
    child = s3.put("incoming/child.jpg", original, **headers)
    adult = s3.put("incoming/adult.jpg", original, **headers)
    jobs = {"child": enqueue_scan(redis_client, source=child, upload_id="child", context=MINOR),
            "adult": enqueue_scan(redis_client, source=adult, upload_id="adult")}
    run_burst(redis_client, s3_service)
    verdicts = {k: verdict_of(redis_client, j) for k, j in jobs.items()}
    assert verdicts["child"]["action"] == "allow" and verdicts["child"]["rewrite"] == ["strip_metadata"]
    assert verdicts["adult"]["action"] == "allow" and "rewrite" not in verdicts["adult"]

    clean = s3.get("incoming/child.jpg")
    assert clean == scrub.strip_metadata(original, "jpeg") and not decode(clean).gps
    head = s3.client.head_object(Bucket=s3.uploads, Key="incoming/child.jpg")
    assert (head["ContentType"], head["CacheControl"], head["Metadata"]) == ("image/jpeg", "max-age=60",
                                                                           {"uploader": "up-9"})
    versions = s3.client.list_object_versions(Bucket=s3.uploads, Prefix="incoming/child.jpg")["Versions"]
    assert len(versions) == 1  # the version read, with its GPS coordinates, is gone
    assert s3.get("incoming/adult.jpg") == original

    # The same upload again (a retried job): its verdict is replayed, the object left as it is.
    again = enqueue_scan(redis_client, source=child, upload_id="child", context=MINOR)
    run_burst(redis_client, s3_service)
    assert verdict_of(redis_client, again) == verdicts["child"]
    assert s3.get("incoming/child.jpg") == clean
    assert len(s3.client.list_object_versions(Bucket=s3.uploads, Prefix="incoming/child.jpg")["Versions"]) == 1


def test_enqueue_refuses_what_workers_would_refuse(s3: S3Buckets, redis_server: str) -> None:
    env = {"PHOTOSENTRY_REDIS_URL": redis_server}
    for bad in (f"s3://{s3.uploads}/incoming/../x.jpg", "s3://Bad_Bucket/x.jpg", f"s3://{s3.uploads}/"):
        refused = photosentry("enqueue", bad, **env)
        assert refused.exit_code == 2 and "PATHS" in refused.output, (bad, refused.output)
    inline = photosentry("enqueue", "--inline", f"s3://{s3.uploads}/incoming/x.jpg", **env)
    assert inline.exit_code == 2 and "--inline" in inline.output
    with pytest.raises(ValueError, match="segment"):
        enqueue_scan(redis.Redis.from_url(redis_server), source=f"s3://{s3.uploads}/a//b.jpg", upload_id="x")


def test_the_review_page_shows_a_photo_from_the_bucket_store_and_its_release_restores_it(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus, tmp_path: Path
) -> None:
    import re
    import threading
    import time
    import urllib.parse
    import urllib.request
    from http.cookiejar import CookieJar

    import uvicorn

    from photosentry.review.decisions import Reviewer
    from photosentry.review.moderators import Moderators, new_token
    from photosentry.review.web import create_app

    from .test_review_web import free_port

    bank_photo(redis_client, corpus.clean["chelsea"], "moderation")
    held = corpus.clean["chelsea"].read_bytes()
    url = s3.put("incoming/web/u-9.jpg", held)
    job = enqueue_scan(redis_client, source=url, upload_id="u-9")
    run_burst(redis_client, s3_service)
    assert verdict_of(redis_client, job)["action"] == "quarantine" and s3.get("incoming/web/u-9.jpg") is None

    token, digest = new_token()
    config = tmp_path / "review.toml"
    config.write_text(f'[moderators.alice]\ntoken_sha256 = "{digest}"\n')
    reviewer = Reviewer(redis_client, home=Path(s3_service.settings.data_dir),
                        source_roots=(f"s3://{s3.uploads}/incoming/",), store=f"s3://{s3.private}/photosentry/")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(reviewer, Moderators.from_file(config)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the review server did not start"
            time.sleep(0.02)
        site = f"http://127.0.0.1:{port}"
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

        def csrf(html: str) -> str:
            found = re.search(r'name="csrf" value="([^"]+)"', html)
            assert found, html[:500]
            return found.group(1)

        def post(path: str, html: str, **form: str) -> str:
            body = urllib.parse.urlencode({"csrf": csrf(html), **form}).encode()
            return browser.open(site + path, data=body).read().decode()

        post("/login", browser.open(site + "/login").read().decode(), token=token)
        [item] = reviewer.queue.pending(limit=10)
        page = browser.open(f"{site}/item/{item.item_id}").read().decode()
        with browser.open(f"{site}/item/{item.item_id}/photo") as photo:
            assert photo.headers["Content-Type"] == "image/jpeg" and photo.read() == held  # read from the bucket
        post(f"/item/{item.item_id}/decide", page, decision="release", reason="a cat")
    finally:
        server.should_exit = True
        thread.join(10)
    assert reviewer.queue.get(item.item_id).state == "released"
    assert s3.get("incoming/web/u-9.jpg") == held  # restored to its bucket
    assert s3.keys(s3.private, "photosentry/quarantine/") == []


def test_credentials_never_reach_the_logs_even_at_debug(
    s3: S3Buckets, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from .s3_server import TEST_ENV

    caplog.set_level(logging.DEBUG)  # a worker started with -v
    roots = SourceRoots([f"s3://{s3.uploads}/incoming/"])
    url = s3.put("incoming/x.jpg", b"photo")
    assert roots.fetch(S3Source(url), max_bytes=100).data == b"photo"
    with pytest.raises(SourceRefused):
        roots.fetch(S3Source(f"s3://{s3.uploads}/incoming/missing.jpg"), max_bytes=100)
    text = caplog.text
    for secret in (TEST_ENV["AWS_SECRET_ACCESS_KEY"], TEST_ENV["AWS_ACCESS_KEY_ID"], "Authorization", "Signature="):
        assert secret not in text
    assert TEST_ENV["AWS_ACCESS_KEY_ID"] not in repr(roots)
