"""A stalled S3 server costs a job its attempt, never a worker, the supervisor or a verdict.

The red team's case: a server that answers a HEAD at once and then drips the body of a
GET a byte every few seconds (each inside botocore's read timeout). The job's own read
was cut by its timeout, but giving the job up read the photo again with no bound: the
failure callback until the watchdog ended the process, then the supervisor, recovering
that process's job on its own loop, for good. The pool stopped restarting workers and
neither the stalled uploads nor the honest ones queued behind them got a verdict.

The server is tests/drip_s3.py (moto answers at once, so it cannot stall); the workers
are the real ones, in this process and as a `photosentry worker` pool.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from photosentry import defaults, enqueue_scan
from photosentry.errors import StorageUnavailable
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.s3 import objects
from photosentry.s3.client import connect
from photosentry.s3.location import S3Location
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService, ServiceSettings

from .corpus import Corpus
from .drip_s3 import DripServer, running_drip_server
from .s3_server import FOREIGN_ENV, TEST_ENV
from .test_worker import run_burst
from .workers import log_tail, pool_started, start_pool, stop_pool, wait_until

ROOT = "s3://uploads/incoming/"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)


def finished_in(target: Any, timeout: float) -> list[Any]:
    """Run ``target`` on a thread; its outcome, or [] if it still runs after ``timeout``
    seconds (a hang: the test fails instead of waiting hours for it)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome


def test_a_body_that_drips_is_cut_off_by_its_deadline(
    aws_env: None, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = corpus.clean["coffee"].read_bytes()
    monkeypatch.setattr(defaults, "S3_BODY_GRACE_S", 1.0, raising=False)
    with running_drip_server(photo, drip_s=0.2, drip_for_s=20.0) as server:
        client = connect(endpoint_url=server.url)
        fast, _ = objects.read(client, S3Location("uploads", "incoming/fast.jpg"), max_bytes=defaults.MAX_BYTES)
        assert fast == photo
        # 5,000 bytes at 5 a second would take 17 minutes; the server gives up after 20 s.
        [outcome] = finished_in(lambda: objects.read(client, S3Location("uploads", "incoming/slow.jpg"),
                                                     max_bytes=defaults.MAX_BYTES), timeout=60) or ["still reading"]
        assert isinstance(outcome, StorageUnavailable) and "too slow" in str(outcome), outcome


def stalled_service(redis_client: redis.Redis, server: DripServer, tmp_path: Path, policy: Policy,
                    classifier: OpenNsfwClassifier, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> ScanService:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    scanner = Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)), classifier=classifier)
    return ScanService(ServiceSettings(redis_url=redis_server, source_roots=(ROOT,), data_dir=str(tmp_path / "home"),
                                       refresh_interval_s=0.0), client=redis_client, scanner=scanner)


def stream_verdicts(client: redis.Redis) -> dict[str, dict[str, Any]]:
    return {f[b"upload_id"].decode(): json.loads(f[b"verdict"]) for _, f in client.xrange("photosentry:verdicts")}


def test_giving_up_on_a_stalled_read_records_the_verdict_without_waiting_for_the_photo(
    aws_env: None, redis_client: redis.Redis, corpus: Corpus, tmp_path: Path, policy: Policy,
    classifier: OpenNsfwClassifier, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server ends each drip after 20 s: without a bound, the failure callback's read
    # waits for that (before the watchdog's 2 + 30 s would end this test process); with
    # it, giving up stops waiting after GIVE_UP_READ_S (10 s).
    with running_drip_server(corpus.clean["coffee"].read_bytes(), drip_s=0.5, drip_for_s=20.0) as server:
        service = stalled_service(redis_client, server, tmp_path, policy, classifier, redis_server, monkeypatch)
        stalled = enqueue_scan(redis_client, source=f"{ROOT}stall.jpg", upload_id="stall", retries=0, job_timeout=2)
        honest = enqueue_scan(redis_client, source=f"{ROOT}fast.jpg", upload_id="honest")
        run_burst(redis_client, service)
        assert server.gets("stall.jpg") == 2  # the attempt's read, and giving up's
    verdicts = stream_verdicts(redis_client)
    [reason] = verdicts["stall"]["reasons"]
    assert verdicts["stall"]["action"] == "quarantine" and reason["code"] == "scan_failed"
    assert "could not be read again within" in reason["text"], reason
    assert verdicts["honest"]["action"] == "allow"
    assert Job.fetch(stalled, connection=redis_client, serializer=JSONSerializer).get_status() == JobStatus.FAILED
    assert Job.fetch(honest, connection=redis_client, serializer=JSONSerializer).get_status() == JobStatus.FINISHED


@pytest.fixture
def drip(corpus: Corpus) -> Iterator[DripServer]:
    # Drips for 5 minutes: longer than anything here waits, so a read without a bound hangs.
    with running_drip_server(corpus.clean["coffee"].read_bytes(), drip_s=0.5, drip_for_s=300.0) as server:
        yield server


def test_a_pool_keeps_restarting_and_deciding_while_a_store_stalls(
    drip: DripServer, redis_client: redis.Redis, redis_server: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update({**TEST_ENV, "AWS_ENDPOINT_URL": drip.url, "PHOTOSENTRY_REDIS_URL": redis_server,
                "PHOTOSENTRY_HOME": str(tmp_path / "home"), "PHOTOSENTRY_SOURCE_ROOTS": ROOT})
    log = tmp_path / "worker.log"
    pool = start_pool(env, log, "-n", "1", "--threads", "1", "--job-timeout", "30")
    try:
        assert pool_started(pool, redis_client, 1, 90), log_tail(log)

        def verdict(upload_id: str) -> dict[str, Any] | None:
            return stream_verdicts(redis_client).get(upload_id)

        # 1. A job whose read stalls times out; giving it up must end, and the one worker
        #    must go on to the honest upload queued behind it.
        enqueue_scan(redis_client, source=f"{ROOT}stall-1.jpg", upload_id="stall-1", retries=0, job_timeout=2)
        enqueue_scan(redis_client, source=f"{ROOT}fast-1.jpg", upload_id="fast-1")
        assert wait_until(lambda: verdict("fast-1"), timeout=60)["action"] == "allow", log_tail(log)
        assert verdict("stall-1")["reasons"][0]["code"] == "scan_failed"

        # 2. A worker dies in the middle of a stalled read: the supervisor gives its job up
        #    off its own loop, so it restarts the worker at once and the pool goes on.
        stalled = enqueue_scan(redis_client, source=f"{ROOT}stall-2.jpg", upload_id="stall-2", retries=0,
                               job_timeout=30)
        [busy] = wait_until(lambda: [w for w in Worker.all(connection=redis_client)
                                     if w.get_current_job_id() == stalled], timeout=30, every=0.01)
        os.kill(busy.pid, signal.SIGKILL)
        enqueue_scan(redis_client, source=f"{ROOT}fast-2.jpg", upload_id="fast-2")
        assert wait_until(lambda: verdict("fast-2"), timeout=90)["action"] == "allow", log_tail(log)
        given_up = wait_until(lambda: verdict("stall-2"), timeout=60)
        assert given_up["action"] == "quarantine" and given_up["reasons"][0]["code"] == "scan_failed"
        assert "died" in given_up["reasons"][0]["text"]
        # The dead worker is not listed as a ghost: only its replacement is registered.
        assert [w.name for w in Worker.all(connection=redis_client)] != [busy.name]
        wait_until(lambda: len(Worker.all(connection=redis_client)) == 1, timeout=10)
        assert "restarting worker" in log.read_text(errors="replace")
    finally:
        stop_pool(pool)
