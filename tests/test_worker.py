"""The scan worker in-process on a real redis-server: timeouts, refusals, recovery, cache.

These run :class:`ScanWorker` in the test process (so SIGALRM, RQ's death penalty,
is exercised in the main thread as in production); tests/test_queue_e2e.py runs
real `photosentry worker` processes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.hashes.banks import EntrySource, NewEntry
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.codecs import Algorithm
from photosentry.hashes.matcher import BankMatcher
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.jobs import SCAN_FUNCTION
from photosentry.worker.recovery import alive_key, give_up_with_verdict, recover_abandoned, recover_intermediate
from photosentry.worker.scan_worker import ScanWorker
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService, ServiceSettings, install

from .corpus import Corpus
from .callback_receiver import Receiver
from .workers import wait_until


@pytest.fixture
def scanner(redis_client: redis.Redis, policy: Policy, classifier: OpenNsfwClassifier) -> Scanner:
    return Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)), classifier=classifier)


class SlowScanner:
    """A real scanner that first sleeps: a scan stuck long enough to hit the job timeout."""

    def __init__(self, inner: Scanner, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def scan_bytes(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.seconds)
        return self.inner.scan_bytes(*args, **kwargs)


def run_burst(client: redis.Redis, service: ScanService | None, **kwargs: Any) -> ScanWorker:
    """Drain the queues with a ScanWorker in this process, restoring signal handlers after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    install(service)
    try:
        worker = ScanWorker(connection=client, metrics=service.metrics if service else None, **kwargs)
        worker.work(burst=True)
        return worker
    finally:
        install(None)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


UPLOADS_STREAM, BULK_STREAM = "photosentry:verdicts", "photosentry:verdicts:bulk"


def stream_entries(client: redis.Redis, stream: str = UPLOADS_STREAM) -> list[dict[str, Any]]:
    return [
        {"upload_id": f[b"upload_id"].decode(), "job_id": f[b"job_id"].decode(), "verdict": json.loads(f[b"verdict"])}
        for _, f in client.xrange(stream)
    ]


def test_job_timeout_fires_in_process_and_ends_in_a_recorded_scan_failed_verdict(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus, receiver: Receiver
) -> None:
    service = ScanService(settings, client=redis_client, scanner=SlowScanner(scanner, 5.0))
    photo = corpus.clean["coffee"].read_bytes()
    job_id = enqueue_scan(redis_client, source=photo, upload_id="slow-1", job_timeout=1, retries=1,
                          callback_url=receiver.url)
    started = time.monotonic()
    run_burst(redis_client, service)
    assert time.monotonic() - started < 5.0  # both attempts were cut at 1 s, not left to sleep 5 s

    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in (job.latest_result().exc_string or "")
    [entry] = stream_entries(redis_client)
    assert entry["upload_id"] == "slow-1"
    verdict = entry["verdict"]
    assert verdict["action"] == "quarantine"
    assert verdict["reasons"][0]["code"] == "scan_failed"
    assert "2 attempts" in verdict["reasons"][0]["text"] and "JobTimeoutException" in verdict["reasons"][0]["text"]
    assert [r["upload_id"] for r in receiver.received] == ["slow-1"]
    assert receiver.received[0]["verdict"]["reasons"][0]["code"] == "scan_failed"
    sha = verdict["hashes"]["sha256"]
    assert (Path(settings.data_dir) / "quarantine" / sha[:2] / sha / "content").read_bytes() == photo


class Evil:
    """Unpickling this creates a directory: proof that a pickle payload was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_pickled_job_is_refused_without_being_loaded(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    pickled = Queue("uploads", connection=redis_client)  # RQ's default serializer is pickle
    job = pickled.enqueue(SCAN_FUNCTION, Evil(marker))
    run_burst(redis_client, ScanService(settings, client=redis_client, scanner=scanner))
    assert not marker.exists()
    assert redis_client.hget(f"rq:job:{job.id}", "status") == b"failed"
    assert job.id.encode() in redis_client.zrange("rq:wip:uploads", 0, -1) + redis_client.zrange(
        "rq:failed:uploads", 0, -1)
    assert stream_entries(redis_client) == []


def test_only_the_scan_function_runs(redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner,
                                     tmp_path: Path) -> None:
    marker = tmp_path / "called"
    json_queue = Queue("uploads", connection=redis_client, serializer=JSONSerializer)
    job = json_queue.enqueue("os.mkdir", str(marker))
    run_burst(redis_client, ScanService(settings, client=redis_client, scanner=scanner))
    assert not marker.exists()
    assert redis_client.hget(f"rq:job:{job.id}", "status") == b"failed"


def test_cache_hits_on_duplicates_and_a_ban_invalidates_it(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus
) -> None:
    service = ScanService(settings, client=redis_client, scanner=scanner)
    photo = corpus.clean["chelsea"].read_bytes()
    first = enqueue_scan(redis_client, source=photo, upload_id="dup-1")
    second = enqueue_scan(redis_client, source=photo, upload_id="dup-2")
    run_burst(redis_client, service)
    r1 = Job.fetch(first, connection=redis_client, serializer=JSONSerializer).return_value()
    r2 = Job.fetch(second, connection=redis_client, serializer=JSONSerializer).return_value()
    assert r1["action"] == r2["action"] == "allow"
    assert "cache" not in r1 and r2["cache"] == "hit"
    assert r2["upload_id"] == "dup-2" and r2["scores"] == r1["scores"]

    RedisBankStore(redis_client).add([NewEntry(Algorithm.SHA256, r1["hashes"]["sha256"], "banned",
                                               source=EntrySource.MODERATOR)], actor="mod", reason="test")
    third = enqueue_scan(redis_client, source=photo, upload_id="dup-3")
    run_burst(redis_client, service)
    r3 = Job.fetch(third, connection=redis_client, serializer=JSONSerializer).return_value()
    assert r3["action"] == "block" and "cache" not in r3
    assert r3["bank_version"] > r1["bank_version"]


def test_same_upload_twice_records_one_verdict_and_acts_once(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus
) -> None:
    root = Path(settings.source_roots[0])
    (root / "bad.jpg").write_bytes(corpus.hostile["unreadable"].read_bytes())
    jobs = [enqueue_scan(redis_client, source="bad.jpg", upload_id="same") for _ in range(2)]
    run_burst(redis_client, ScanService(settings, client=redis_client, scanner=scanner))
    results = [Job.fetch(j, connection=redis_client, serializer=JSONSerializer).return_value() for j in jobs]
    assert results[0] == results[1] and results[0]["action"] == "quarantine"
    assert len(stream_entries(redis_client)) == 1
    assert not (root / "bad.jpg").exists()  # moved into the quarantine store by the first job
    sha = results[0]["hashes"]["sha256"]
    sidecars = list((Path(settings.data_dir) / "quarantine" / sha[:2] / sha / "verdicts").iterdir())
    assert len(sidecars) == 1


def _take_job_as_dead_worker(client: redis.Redis, name: str) -> Job:
    """Dequeue a job and mark it started by ``name`` as a worker does, then 'die'."""
    worker = ScanWorker(connection=client, name=name)
    job, queue = worker.dequeue_job_and_maintain_ttl(timeout=None)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert not client.exists(alive_key(name))
    return job


def test_job_of_a_dead_worker_is_requeued_then_given_up_fail_closed(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus
) -> None:
    photo = corpus.clean["astronaut"].read_bytes()
    job_id = enqueue_scan(redis_client, source=photo, upload_id="lost-1", retries=1)
    _take_job_as_dead_worker(redis_client, "photosentry.test.dead-1")
    assert recover_abandoned(redis_client, ["uploads", "bulk"]) == [(job_id, "requeued")]
    assert recover_abandoned(redis_client, ["uploads", "bulk"]) == []  # claimed once only
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.QUEUED and job.retries_left == 0

    _take_job_as_dead_worker(redis_client, "photosentry.test.dead-2")
    give_up = lambda job, why: give_up_with_verdict(job, why, settings=settings)  # noqa: E731
    assert recover_abandoned(redis_client, ["uploads", "bulk"], give_up=give_up) == [(job_id, "failed")]
    assert Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).get_status() == JobStatus.FAILED
    [entry] = stream_entries(redis_client)
    assert entry["upload_id"] == "lost-1"
    assert entry["verdict"]["action"] == "quarantine"
    assert entry["verdict"]["reasons"][0]["code"] == "scan_failed"
    assert "died" in entry["verdict"]["reasons"][0]["text"]


def test_live_workers_jobs_are_left_alone(redis_client: redis.Redis, corpus: Corpus) -> None:
    enqueue_scan(redis_client, source=b"x", upload_id="busy-1")
    _take_job_as_dead_worker(redis_client, "photosentry.test.alive")
    redis_client.set(alive_key("photosentry.test.alive"), 1, px=5000)
    assert recover_abandoned(redis_client, ["uploads", "bulk"]) == []


def test_a_foreign_producer_can_enqueue_with_plain_redis_commands(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus
) -> None:
    """The layout docs/queue.md gives to pipelines in other languages: no rq, no zlib."""
    payload = {"version": 1, "upload_id": "go-1", "source": {"bytes_b64": base64.b64encode(
        corpus.clean["coffee"].read_bytes()).decode()}, "context": {}}
    now = "2026-11-22T10:00:00.000000Z"
    pipe = redis_client.pipeline(transaction=True)
    pipe.hset("rq:job:go-job-1", mapping={
        "data": json.dumps([SCAN_FUNCTION, None, [payload], {}]), "status": "queued", "origin": "uploads",
        "created_at": now, "enqueued_at": now, "description": "scan upload go-1", "retries_left": 2,
    })
    pipe.rpush("rq:queue:uploads", "go-job-1")
    pipe.sadd("rq:queues", "rq:queue:uploads")
    pipe.execute()
    run_burst(redis_client, ScanService(settings, client=redis_client, scanner=scanner))
    job = Job.fetch("go-job-1", connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value()["action"] == "allow" and job.return_value()["upload_id"] == "go-1"
    assert [e["upload_id"] for e in stream_entries(redis_client)] == ["go-1"]


def test_uploads_queue_is_drained_before_bulk(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus
) -> None:
    photo = corpus.clean["coffee"].read_bytes()
    bulk = [enqueue_scan(redis_client, source=photo, upload_id=f"bulk-{i}", queue="bulk") for i in range(2)]
    uploads = [enqueue_scan(redis_client, source=photo, upload_id=f"up-{i}") for i in range(2)]
    run_burst(redis_client, ScanService(settings, client=redis_client, scanner=scanner))
    # Each queue's verdicts on its own stream; every upload was done before any bulk job began.
    assert [e["upload_id"] for e in stream_entries(redis_client)] == ["up-0", "up-1"]
    assert [e["upload_id"] for e in stream_entries(redis_client, BULK_STREAM)] == ["bulk-0", "bulk-1"]
    jobs = {j: Job.fetch(j, connection=redis_client, serializer=JSONSerializer) for j in bulk + uploads}
    assert max(jobs[j].ended_at for j in uploads) <= min(jobs[j].started_at for j in bulk)
    # Every job went through its intermediate list (LMOVE) and was taken off it once started.
    assert not redis_client.exists("rq:queue:uploads:intermediate", "rq:queue:bulk:intermediate")


def test_a_job_moved_by_a_worker_killed_before_registering_it_is_recovered_once(
    redis_client: redis.Redis, settings: ServiceSettings, scanner: Scanner, corpus: Corpus
) -> None:
    """The dequeue window: LMOVE done, not yet in the StartedJobRegistry, then SIGKILL."""
    service = ScanService(settings, client=redis_client, scanner=scanner)
    job_id = enqueue_scan(redis_client, source=corpus.clean["coffee"].read_bytes(), upload_id="window-1",
                          queue="bulk")
    # What a dying worker's ReliableQueue.dequeue_any did before the kill, by hand.
    assert redis_client.lmove("rq:queue:bulk", "rq:queue:bulk:intermediate") == job_id.encode()
    run_burst(redis_client, service)  # a live worker: the job is in no queue, so it is not run
    assert stream_entries(redis_client, BULK_STREAM) == []

    queues = ["uploads", "bulk"]
    assert recover_intermediate(redis_client, queues) == []  # first sighting: maybe a live worker's window
    assert recover_intermediate(redis_client, queues, clock=lambda: time.time() + 5) == []  # still in grace
    later = lambda: time.time() + 11  # noqa: E731 - past INTERMEDIATE_GRACE_S
    assert recover_intermediate(redis_client, queues, clock=later) == [(job_id, "requeued")]
    assert recover_intermediate(redis_client, queues, clock=later) == []  # claimed once only
    assert redis_client.lrange("rq:queue:bulk", 0, -1) == [job_id.encode()]
    assert not redis_client.exists("rq:queue:bulk:intermediate", "photosentry:worker:intermediate-seen")

    run_burst(redis_client, service)
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED and job.retries_left == 2  # no retry used: nothing ran
    [entry] = stream_entries(redis_client, BULK_STREAM)
    assert entry["upload_id"] == "window-1" and entry["verdict"]["action"] == "allow"
    assert not redis_client.exists("rq:queue:bulk:intermediate")
    assert recover_intermediate(redis_client, queues, clock=later) == []


def test_a_running_jobs_intermediate_entry_is_not_requeued(redis_client: redis.Redis) -> None:
    """Registered (even by a dead worker, whose job recover_abandoned owns): never recovered from the list."""
    job_id = enqueue_scan(redis_client, source=b"x", upload_id="reg-1")
    worker = ScanWorker(connection=redis_client, name="photosentry.test.window")
    job, _ = worker.dequeue_job_and_maintain_ttl(timeout=None)
    assert redis_client.lrange("rq:queue:uploads:intermediate", 0, -1) == [job_id.encode()]
    worker.prepare_execution(job)  # in the StartedJobRegistry, not yet off the list
    later = lambda: time.time() + 60  # noqa: E731
    for _ in range(2):
        assert recover_intermediate(redis_client, ["uploads", "bulk"], clock=later, grace_s=0) == []
    # Its worker is dead: recover_abandoned claims it but, never started, leaves it to the
    # intermediate scan, which now finds it unregistered and puts it back once.
    assert recover_abandoned(redis_client, ["uploads", "bulk"]) == [(job_id, "not_started")]
    assert recover_intermediate(redis_client, ["uploads", "bulk"], clock=later, grace_s=0) == [(job_id, "requeued")]
    assert not redis_client.exists("rq:queue:uploads:intermediate")
    assert redis_client.lrange("rq:queue:uploads", 0, -1) == [job_id.encode()]
    assert recover_abandoned(redis_client, ["uploads", "bulk"]) == []


def test_a_stopping_worker_does_not_wait_on_its_command_listener(redis_client: redis.Redis) -> None:
    """The race behind a SIGTERMed pool that hung: the listener has read the UNSUBSCRIBE reply first.

    redis-py >= 8.2 joins the listener without a bound and RQ's own listener then waits
    60 s to be subscribed again; the bound here is far below that, not a speed target.
    """
    import threading

    worker = ScanWorker(connection=redis_client, name="photosentry.test.listener")
    worker.subscribe()
    wait_until(lambda: worker.pubsub.subscribed, timeout=10)
    worker.pubsub.unsubscribe()
    wait_until(lambda: not worker.pubsub.subscribed, timeout=10)  # the listener took the reply
    stopper = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopper.start()
    stopper.join(20)
    assert not stopper.is_alive(), "the worker is stuck stopping its pubsub listener"
    assert not worker.pubsub_thread.is_alive()


CHILD_WORKER = """
import sys, redis
from photosentry.worker.scan_worker import ScanWorker
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService, ServiceSettings, install
from tests.test_worker import SlowScanner
url, home, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = redis.Redis.from_url(url)
slow = SlowScanner(Scanner(policy=Policy.default(), matcher=None, classifier=None), seconds)
install(ScanService(ServiceSettings(redis_url=url, data_dir=home), client=client, scanner=slow))
ScanWorker(connection=client).work(burst=True)
"""


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_finishes_the_job_and_a_second_one_puts_it_back(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path, signals: int
) -> None:
    import subprocess
    import sys

    job_id = enqueue_scan(redis_client, source=b"not a photo", upload_id="term-1")
    repo = Path(__file__).resolve().parents[1]
    with (tmp_path / "child.log").open("wb") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD_WORKER, redis_server, str(tmp_path / "home"),
                                  "2" if signals == 1 else "30"], cwd=repo, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while redis_client.hget(f"rq:job:{job_id}", "status") != b"started":
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        if signals == 2:
            time.sleep(1.2)  # RQ ignores a second signal within 1 s (one Ctrl+C seen twice)
            child.send_signal(signal.SIGTERM)
        code = child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    if signals == 1:  # warm: the current job is finished first
        assert code == 0 and job.get_status() == JobStatus.FINISHED
        assert [e["upload_id"] for e in stream_entries(redis_client)] == ["term-1"]
    else:  # cold: the job goes back to the front of its queue, no retry used, nothing recorded
        assert code == 1 and job.get_status() == JobStatus.QUEUED
        assert job.retries_left == 2
        assert redis_client.lrange("rq:queue:uploads", 0, 0) == [job_id.encode()]
        assert redis_client.zcard("rq:wip:uploads") == 0
        assert stream_entries(redis_client) == []
    assert not redis_client.keys("photosentry:worker:alive:*")


def test_json_logs_carry_job_and_upload_ids() -> None:
    import logging

    from photosentry.worker.logs import JsonFormatter, job_context

    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": "verdict %s", "args": ("x",),
                                    "action": "block"})
    with job_context(job_id="j-1", upload_id="u-1"):
        line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "verdict x" and line["job_id"] == "j-1" and line["upload_id"] == "u-1"
    assert line["action"] == "block" and line["level"] == "info"
    assert "upload_id" not in json.loads(JsonFormatter().format(record))
