"""Real `photosentry worker` processes on a real redis-server, end to end.

Uploads go in with enqueue_scan; verdicts come out as job results, stream entries
and signed callbacks to a local receiver. Also: a ban takes effect in running
workers within a second, a worker SIGKILLed mid-job loses nothing, SIGTERM stops
the pool cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.request
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image
from rq import Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan

from .corpus import Corpus
from .callback_receiver import KEY, Receiver
from . import workers
from .workers import PHOTOSENTRY, log_tail, pool_started, start_pool, stop_pool

DEADLINE_S = 60.0


@pytest.fixture
def env(redis_server: str, tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "uploads"
    root.mkdir()
    return {
        **os.environ,
        "PHOTOSENTRY_REDIS_URL": redis_server,
        "PHOTOSENTRY_HOME": str(tmp_path / "home"),
        "PHOTOSENTRY_SOURCE_ROOTS": str(root),
        "PHOTOSENTRY_CALLBACK_KEY": KEY.decode(),
        "PHOTOSENTRY_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",  # the test receiver is on loopback
    }


WORKER_ARGS = ("--processes", "2", "--threads", "1")


def worker_cmd(*extra: str) -> list[str]:
    return [PHOTOSENTRY, "worker", *WORKER_ARGS, *extra]


#: Every wait here gives up after DEADLINE_S unless it says otherwise.
wait_until = partial(workers.wait_until, timeout=DEADLINE_S)


def results(client: redis.Redis, jobs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """upload id -> finished job's return value, once every job finished."""
    out = {}
    for upload_id, job_id in jobs.items():
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        if job.get_status() != JobStatus.FINISHED:
            return {}
        out[upload_id] = job.return_value()
    return out


def stream(client: redis.Redis) -> list[dict[str, Any]]:
    return [{"upload_id": f[b"upload_id"].decode(), "action": f[b"action"].decode(),
             "verdict": json.loads(f[b"verdict"])} for _, f in client.xrange("photosentry:verdicts")]


def ban(env: dict[str, str], photo: Path) -> None:
    """A moderator bans a photo in the shared Redis bank, with the CLI."""
    subprocess.run([PHOTOSENTRY, "ban", "add", str(photo), "--by", "mod", "--reason", "e2e"], env=env, check=True,
                   capture_output=True)


@pytest.fixture
def pool(env: dict[str, str], tmp_path: Path, redis_client: redis.Redis) -> Iterator[subprocess.Popen[bytes]]:
    """Two long-running worker processes under their supervisor, stopped with SIGTERM after the test."""
    log = tmp_path / "worker.log"
    port = _free_port()
    proc = start_pool(env, log, *WORKER_ARGS, "--metrics-port", str(port))
    proc.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    try:
        assert pool_started(proc, redis_client, 2, DEADLINE_S), log_tail(log)
        yield proc
    finally:
        stop_pool(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mixed_uploads_get_the_right_verdicts_everywhere(
    env: dict[str, str], corpus: Corpus, redis_client: redis.Redis, receiver: Receiver, tmp_path: Path
) -> None:
    root = Path(env["PHOTOSENTRY_SOURCE_ROOTS"])
    secret = tmp_path / "outside-secret.jpg"
    secret.write_bytes(corpus.clean["camera"].read_bytes())
    (root / "escape.jpg").symlink_to(secret)
    for name, src in {"clean.jpg": corpus.clean["coffee"], "banned-copy.jpg": corpus.copies["resized_half"],
                      "truncated.jpg": corpus.hostile["unreadable"]}.items():
        (root / name).write_bytes(src.read_bytes())
    ban(env, corpus.banned)

    uploads = {
        "clean": ("clean.jpg", "allow", "clean"),
        "clean-inline": (corpus.clean["astronaut"].read_bytes(), "allow", "clean"),
        "banned": ("banned-copy.jpg", "block", "bank_match"),
        "banned-inline": (corpus.copies["mirrored"].read_bytes(), "block", "bank_match"),
        "unreadable": ("truncated.jpg", "quarantine", "unreadable"),
        "not-image-inline": (corpus.hostile["not_an_image"].read_bytes(), "quarantine", "not_an_image"),
        "dotdot": ("../outside-secret.jpg", "quarantine", "source_refused"),
        "symlink-out": ("escape.jpg", "quarantine", "source_refused"),
        "absolute-out": (str(secret), "quarantine", "source_refused"),
    }
    jobs = {uid: enqueue_scan(redis_client, source=src, upload_id=uid, callback_url=receiver.url,
                              context={"recipient_age": 30})
            for uid, (src, _, _) in uploads.items()}
    done = subprocess.run(worker_cmd("--burst"), env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    got = results(redis_client, jobs)
    assert {uid: (v["action"], v["reasons"][0]["code"]) for uid, v in got.items()} == {
        uid: (action, code) for uid, (_, action, code) in uploads.items()}
    entries = stream(redis_client)
    assert sorted(e["upload_id"] for e in entries) == sorted(uploads)  # exactly one each
    assert {e["upload_id"]: e["verdict"] for e in entries} == got
    assert receiver.rejected == 0
    assert {c["upload_id"]: c["verdict"] for c in receiver.received} == got
    assert {c["job_id"] for c in receiver.received} == set(jobs.values())

    # Actions: blocked and quarantined files left the upload folder; clean and refused stayed.
    assert not (root / "banned-copy.jpg").exists() and not (root / "truncated.jpg").exists()
    assert (root / "clean.jpg").exists() and (root / "escape.jpg").is_symlink()
    home = Path(env["PHOTOSENTRY_HOME"])
    sha = got["banned"]["hashes"]["sha256"]
    assert (home / "blocked" / sha[:2] / sha / "content").read_bytes() == corpus.copies["resized_half"].read_bytes()
    # The refused file was never read: no hashes, and nothing of it in any store.
    assert got["symlink-out"]["hashes"] is None and secret.exists()
    stored = {p.read_bytes() for p in home.rglob("content")}
    assert secret.read_bytes() not in stored


def test_ban_reaches_running_workers_within_a_second(
    pool: subprocess.Popen[bytes], env: dict[str, str], corpus: Corpus, redis_client: redis.Redis
) -> None:
    names_before = {w.name for w in Worker.all(connection=redis_client)}
    photo = corpus.copies["reencoded_q50"].read_bytes()
    before = {"pre": enqueue_scan(redis_client, source=photo, upload_id="pre")}
    assert wait_until(lambda: results(redis_client, before))["pre"]["action"] == "allow"

    ban(env, corpus.banned)
    banned_at = time.monotonic()
    version = int(redis_client.get("photosentry:bank:version"))
    time.sleep(max(0.0, banned_at + 1.0 - time.monotonic()))  # the bound: one second
    after = {f"post-{i}": enqueue_scan(redis_client, source=photo, upload_id=f"post-{i}") for i in range(4)}
    got = wait_until(lambda: results(redis_client, after))
    assert {v["action"] for v in got.values()} == {"block"}
    assert all(v["bank_version"] >= version for v in got.values())
    assert {w.name for w in Worker.all(connection=redis_client)} == names_before  # no restart


def big_photo(path: Path, seed: int) -> Path:
    """A distinct 6-megapixel photo: slow enough to kill a worker in the middle of it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:2000, 0:3000]
    base = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 9) % 256], axis=-1).astype(np.uint8)
    base[rng.integers(0, 1990):, :10] = rng.integers(0, 255, size=3, dtype=np.uint8)
    Image.fromarray(base).save(path, format="JPEG", quality=85)
    return path


def test_sigkill_mid_job_loses_nothing_and_records_one_verdict_each(
    pool: subprocess.Popen[bytes], env: dict[str, str], redis_client: redis.Redis
) -> None:
    root = Path(env["PHOTOSENTRY_SOURCE_ROOTS"])
    jobs = {f"big-{i}": enqueue_scan(redis_client, source=str(big_photo(root / f"big-{i}.jpg", i)),
                                     upload_id=f"big-{i}") for i in range(12)}
    killed: list[str] = []
    for _ in range(5):  # until one kill lands mid-job (proved by the job's used retry below)
        busy = wait_until(lambda: [(w, w.get_current_job_id()) for w in Worker.all(connection=redis_client)
                                   if w.get_current_job_id()], timeout=30, every=0.01)
        worker, job_id = busy[0]
        os.kill(worker.pid, signal.SIGKILL)
        killed.append(job_id)
        wait_until(lambda: results(redis_client, {"k": job_id}), timeout=30)
        if Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).retries_left == 1:
            break
    else:
        pytest.fail("no SIGKILL landed in the middle of a job")

    got = wait_until(lambda: results(redis_client, jobs))
    assert {v["action"] for v in got.values()} == {"allow"}  # recovered, scanned, not failed
    entries = stream(redis_client)
    assert sorted(e["upload_id"] for e in entries) == sorted(jobs)  # exactly one verdict per upload
    # The supervisor replaced the dead worker (once the new one has loaded its model).
    wait_until(lambda: len(Worker.all(connection=redis_client)) == 2, timeout=30)


def test_sigterm_stops_the_pool_cleanly(pool: subprocess.Popen[bytes], redis_client: redis.Redis) -> None:
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 0
    assert Worker.all(connection=redis_client) == []
    assert not redis_client.keys("photosentry:worker:alive:*")


def test_metrics_are_served_for_the_whole_pool(
    pool: subprocess.Popen[bytes], corpus: Corpus, redis_client: redis.Redis
) -> None:
    photo = corpus.clean["coffee"].read_bytes()
    jobs = {f"m-{i}": enqueue_scan(redis_client, source=photo, upload_id=f"m-{i}") for i in range(3)}
    jobs["b-0"] = enqueue_scan(redis_client, source=photo, upload_id="b-0", queue="bulk")
    wait_until(lambda: results(redis_client, jobs))

    def scrape() -> str:
        with urllib.request.urlopen(pool.metrics_url, timeout=5) as response:  # type: ignore[attr-defined]
            return response.read().decode()

    # Verdicts are counted per stream: uploads on photosentry:verdicts, bulk on its own.
    uploads = 'photosentry_scans_total{action="allow",reason="clean",stream="photosentry:verdicts"} 3.0'
    bulk = 'photosentry_scans_total{action="allow",reason="clean",stream="photosentry:verdicts:bulk"} 1.0'
    text = wait_until(lambda: (t := scrape()) and uploads in t and bulk in t and t)
    lookups = re.findall(r'^photosentry_cache_lookups_total\{result="(?:hit|miss)"\} ([0-9.]+)$', text, re.M)
    assert sum(float(n) for n in lookups) == 4.0  # two processes may both miss the same new photo
    assert 'photosentry_queue_depth{queue="uploads"} 0.0' in text
    assert 'photosentry_model_info{model="open_nsfw",provider="CPUExecutionProvider"' in text
    assert 'photosentry_stage_seconds_count{stage="classify"}' in text
    assert "photosentry_bank_version " in text and "photosentry_bank_index_entries " in text
