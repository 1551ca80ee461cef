"""The fault drill (scripts/drill_faults.py), small: SIGKILLed workers and a Redis crash lose nothing."""

from __future__ import annotations

import os
import shutil
import signal
import time
from functools import partial
from pathlib import Path

import pytest
import redis

from photosentry import enqueue_scan
from scripts.drill_faults import ALIVE_PREFIX, PHOTOS, STREAM, RedisProcess, run_drill

from .workers import start_pool, stop_pool, wait_until

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not on PATH")


def test_small_drill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    report = run_drill(uploads=60, kills=2, redis_restarts=1, processes=2, seed=5, deadline_s=150,
                       workdir=tmp_path / "drill")
    assert (report.kills, report.restarts) == (2, 1), report.problems
    assert report.verdicts == 60, report.problems
    assert report.lost == report.duplicated == 0, report.problems
    assert report.wrongly_allowed == report.store_errors == report.leftover_jobs == 0, report.problems
    assert report.problems == []


#: Redis is crashed and restarted here: a wait sees an error as "not yet".
_wait = partial(wait_until, timeout=60.0, every=0.1, retry_on=(redis.RedisError,))


def test_the_pool_outlives_a_worker_restarting_while_redis_is_down(tmp_path: Path) -> None:
    """Regression: a worker restarted while Redis was down exited with the set-up status,
    and the supervisor then stopped the whole pool (found by the drill)."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    root = tmp_path / "uploads"
    root.mkdir()
    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": server.url, "PHOTOSENTRY_HOME": str(tmp_path / "home"),
           "PHOTOSENTRY_SOURCE_ROOTS": str(root), "PYTHONWARNINGS": "ignore"}
    pool = start_pool(env, tmp_path / "worker.log", "--processes", "1", "--threads", "1", "--log-format", "text")
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        key = _wait(lambda: next(iter(client.scan_iter(match=ALIVE_PREFIX + "*")), None))
        pid = int(client.get(key))
        server.crash()
        os.kill(pid, signal.SIGKILL)  # the supervisor restarts it; Redis is down while it starts
        # Until the new worker has met the dead Redis (its imports take seconds on a busy host).
        log = tmp_path / "worker.log"
        _wait(lambda: "Redis is unreachable while starting" in log.read_text())
        time.sleep(1.0)
        assert pool.poll() is None, log.read_text()[-3000:]
        server.start()
        enqueue_scan(client, source=(PHOTOS / "coffee.jpg").read_bytes(), upload_id="after-restart")
        entry = _wait(lambda: client.xrange(STREAM))
        assert [f[b"upload_id"] for _, f in entry] == [b"after-restart"]
    finally:
        stop_pool(pool)
        client.close()
        server.stop()
