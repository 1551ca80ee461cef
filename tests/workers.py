"""Real `photosentry worker` pools for the end-to-end tests, the benchmarks and the fault drill.

One way to start a pool (its output in a log file), to wait until its worker processes
have registered with RQ, and to stop it the way an operator does (SIGTERM, so the
supervisor stops its workers cleanly; SIGKILL only if it has not exited in time).
Scripts import it as ``tests.workers``, as they import ``tests.redis_server``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from rq import Worker

PHOTOSENTRY = str(Path(sys.executable).with_name("photosentry"))

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, every: float = 0.05,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """``predicate()``'s first truthy value; an error in ``retry_on`` counts as not yet.

    Raises AssertionError when ``timeout`` seconds pass without one.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except retry_on:
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def start_pool(env: dict[str, str], log: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `photosentry worker ARGS` with stdout and stderr going to ``log``."""
    with log.open("wb") as fh:  # the child keeps its own descriptor
        return subprocess.Popen([PHOTOSENTRY, "worker", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=cwd)


def pool_started(pool: subprocess.Popen[bytes], client: redis.Redis, processes: int, timeout: float) -> bool:
    """True once ``processes`` workers are registered; False if the pool exited or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pool.poll() is not None:
            return False
        if len(Worker.all(connection=client)) == processes:
            return True
        time.sleep(0.05)
    return False


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def stop_pool(pool: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM, as an operator stops it; SIGKILL if it has not exited within ``timeout`` s."""
    if pool.poll() is None:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(timeout)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()
