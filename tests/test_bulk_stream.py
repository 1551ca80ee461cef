"""Bulk jobs record on their own verdict stream, so a rescan can never trim an upload verdict.

A real in-process ScanWorker (as in tests/test_worker.py) takes jobs off a real
redis-server: the queue a job was taken from (RQ's ``job.origin``) decides the stream,
on the first record, on a replay after a retry or recovery, and on every fail-closed
give-up. Moderator decisions and uploader flags stay on the uploads stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.enqueue import build_payload
from photosentry.worker.review_queue import ReviewQueue
from photosentry.worker.recovery import give_up_with_verdict, recover_abandoned
from photosentry.worker.service import ScanService, ServiceSettings

from .callback_receiver import Receiver
from .corpus import Corpus
from .test_quarantine import bank_photo, photosentry, quarantined
from .test_security import plant_job
from .test_worker import _take_job_as_dead_worker, run_burst

UPLOADS, BULK = "photosentry:verdicts", "photosentry:verdicts:bulk"
QUEUES = ["uploads", "bulk"]


def entries(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    out = []
    for entry_id, fields in client.xrange(stream):
        row = {k.decode(): v.decode() for k, v in fields.items()}
        row["id"] = entry_id.decode()
        if "verdict" in row:
            row["verdict"] = json.loads(row["verdict"])
        out.append(row)
    return out


def scans(svc: ScanService, stream: str) -> float:
    """Verdicts the service counted for ``stream`` (photosentry_scans_total, every action)."""
    return sum(s.value for m in svc.metrics.registry.collect() if m.name == "photosentry_scans"
               for s in m.samples if s.name.endswith("_total") and s.labels.get("stream") == stream)


class BrokenScanner:
    """A real scanner whose scan raises: every attempt of a job fails, as a crashing decoder would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def scan_bytes(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("decoder crashed")


def test_each_queue_records_on_its_own_stream(
    redis_client: redis.Redis, service: ScanService, corpus: Corpus, receiver: Receiver
) -> None:
    photo = corpus.clean["coffee"].read_bytes()
    up = enqueue_scan(redis_client, source=photo, upload_id="up-1")
    bulk = enqueue_scan(redis_client, source=photo, upload_id="rescan:r1:up-1", queue="bulk",
                        callback_url=receiver.url)
    run_burst(redis_client, service)

    [up_entry] = entries(redis_client, UPLOADS)
    [bulk_entry] = entries(redis_client, BULK)
    assert up_entry["upload_id"] == "up-1" and bulk_entry["upload_id"] == "rescan:r1:up-1"
    for job_id, entry in ((up, up_entry), (bulk, bulk_entry)):
        assert Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).return_value() == entry["verdict"]
    # Each recorded marker lives under its own stream, and only there.
    assert redis_client.get(f"{UPLOADS}:recorded:up-1").decode() == up_entry["id"]
    assert redis_client.get(f"{BULK}:recorded:rescan:r1:up-1").decode() == bulk_entry["id"]
    assert not redis_client.exists(f"{BULK}:recorded:up-1", f"{UPLOADS}:recorded:rescan:r1:up-1")
    # The callback names the stream its stream_id belongs to; the metrics count per stream.
    [callback] = receiver.received
    assert (callback["stream"], callback["stream_id"]) == (BULK, bulk_entry["id"])
    assert scans(service, UPLOADS) == scans(service, BULK) == 1


def test_a_retried_bulk_job_replays_its_verdict_from_the_bulk_stream(
    redis_client: redis.Redis, service: ScanService, corpus: Corpus
) -> None:
    job_id = enqueue_scan(redis_client, source=corpus.clean["astronaut"].read_bytes(), upload_id="rescan:r1:u-2",
                          queue="bulk", retries=1)
    # A worker takes the job, records its verdict (what scan_upload does), then dies.
    job = _take_job_as_dead_worker(redis_client, "photosentry.test.dead-bulk")
    first = service.scan(job.args[0], job_id=job.id, queue=job.origin).to_dict()
    assert recover_abandoned(redis_client, QUEUES) == [(job_id, "requeued")]
    assert redis_client.lrange("rq:queue:bulk", 0, -1) == [job_id.encode()]  # back on its own queue

    run_burst(redis_client, service)
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == first
    [entry] = entries(redis_client, BULK)
    assert entry["verdict"] == first
    assert not redis_client.exists(UPLOADS)
    assert scans(service, BULK) == 1  # replayed, not decided again


@pytest.mark.parametrize("how", ["every_attempt_raises", "worker_died", "job_unreadable"])
def test_a_bulk_job_that_fails_for_good_gets_its_fail_closed_verdict_on_the_bulk_stream(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus, how: str
) -> None:
    photo = corpus.clean["coffee"].read_bytes()
    if how == "every_attempt_raises":  # three attempts, then RQ's failure callback
        job_id = enqueue_scan(redis_client, source=photo, upload_id="bulk-fail", queue="bulk")
        run_burst(redis_client, ScanService(settings, client=redis_client, scanner=BrokenScanner(service.scanner)))
        assert Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).get_status() == JobStatus.FAILED
    elif how == "worker_died":  # no retries left: the recoverer gives up (outside any worker process)
        job_id = enqueue_scan(redis_client, source=photo, upload_id="bulk-fail", queue="bulk", retries=0)
        _take_job_as_dead_worker(redis_client, "photosentry.test.dead-bulk")
        give_up = lambda job, why: give_up_with_verdict(job, why, settings=settings)  # noqa: E731
        assert recover_abandoned(redis_client, QUEUES, give_up=give_up) == [(job_id, "failed")]
    else:  # a job hash RQ cannot read, refused at dequeue
        plant_job(redis_client, "bad-job", "bulk-fail", created_at="yesterday", origin="bulk")
        redis_client.lmove("rq:queue:uploads", "rq:queue:bulk")
        run_burst(redis_client, service)
        assert redis_client.zscore("rq:failed:bulk", "bad-job") is not None
    [entry] = entries(redis_client, BULK)
    assert entry["upload_id"] == "bulk-fail"
    assert entry["verdict"]["action"] == "quarantine" and entry["verdict"]["reasons"][0]["code"] == "scan_failed"
    assert not redis_client.exists(UPLOADS)


def test_a_bulk_quarantine_is_reviewed_and_its_decision_goes_on_the_uploads_stream(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus
) -> None:
    root = Path(settings.source_roots[0])
    quarantined(redis_client, service, corpus, "coffee", "rescan:r1:up-3", root, queue="bulk")
    [verdict_entry] = entries(redis_client, BULK)
    [item] = ReviewQueue(redis_client).pending()
    assert (item.record.stream, item.record.stream_id) == (BULK, verdict_entry["id"])
    shown = photosentry(settings, "quarantine", "show", item.item_id)
    assert f"verdict   {BULK} entry {verdict_entry['id']}" in shown.output, shown.output

    done = photosentry(settings, "quarantine", "confirm", item.item_id, "--by", "alice", "--reason", "confirmed")
    assert done.exit_code == 0, done.output
    [decision] = entries(redis_client, UPLOADS)
    assert (decision["event"], decision["upload_id"], decision["action"]) == ("decision", "rescan:r1:up-3", "block")
    assert decision["verdict_stream"] == BULK
    assert decision["verdict"]["quarantine_reasons"] == verdict_entry["verdict"]["reasons"]
    assert [e["event"] for e in entries(redis_client, BULK)] == ["verdict"]
    assert ReviewQueue(redis_client).get(item.item_id).effects["stream_id"] == decision["id"]


def test_an_uploader_flagged_by_bulk_verdicts_is_announced_on_the_uploads_stream(
    redis_client: redis.Redis, service: ScanService, corpus: Corpus
) -> None:
    bank_photo(redis_client, corpus.banned, "banned")
    photo = corpus.banned.read_bytes()
    for i in range(3):  # three content blocks cross the default threshold of 2.5
        enqueue_scan(redis_client, source=photo, upload_id=f"rescan:r1:b-{i}", queue="bulk",
                     context={"uploader_id": "u-bad"})
    run_burst(redis_client, service)
    assert [(e["event"], e["action"]) for e in entries(redis_client, BULK)] == [("verdict", "block")] * 3
    [flag] = entries(redis_client, UPLOADS)
    assert (flag["event"], flag["uploader_id"], flag["upload_id"]) == ("uploader_flagged", "u-bad", "rescan:r1:b-2")


def test_a_bulk_flood_trims_only_the_bulk_stream(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus
) -> None:
    """The guarantee: however many bulk verdicts, an unread upload verdict stays on its stream."""
    small = ScanService(replace(settings, bulk_stream_maxlen=100), client=redis_client, scanner=service.scanner)
    photo = corpus.clean["coffee"].read_bytes()
    small.scan(build_payload(source=photo, upload_id="up-unread"), job_id="j-up", queue="uploads")
    for i in range(400):  # cache hits after the first: each one a bulk verdict recorded
        small.scan(build_payload(source=photo, upload_id=f"rescan:r1:{i}"), job_id=f"j-{i}", queue="bulk")
    assert redis_client.xlen(BULK) < 400  # trimmed to about its cap (MAXLEN ~ trims whole nodes)
    assert entries(redis_client, BULK)[-1]["upload_id"] == "rescan:r1:399"
    [kept] = entries(redis_client, UPLOADS)
    assert kept["upload_id"] == "up-unread"


def test_enqueue_wait_on_the_bulk_queue_reads_a_failed_jobs_verdict_from_the_bulk_stream(
    redis_server: str, redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus
) -> None:
    exe = str(Path(sys.executable).with_name("photosentry"))
    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": redis_server}
    proc = subprocess.Popen([exe, "enqueue", "--queue", "bulk", "--inline", "--upload-id", "cli-bulk", "--wait", "60",
                             str(corpus.clean["coffee"])], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while not redis_client.llen("rq:queue:bulk"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        run_burst(redis_client, ScanService(settings, client=redis_client, scanner=BrokenScanner(service.scanner)))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    last = out.splitlines()[-1].split()
    assert last[:2] == ["quarantine", "scan_failed"], out
    assert [e["upload_id"] for e in entries(redis_client, BULK)] == ["cli-bulk"]
