"""A private redis-server for the tests: real Redis, never a mock, never anyone else's.

It listens on 127.0.0.1 on a port the OS reports free (never 6379, so a developer's
own Redis and its data are out of reach), keeps nothing on disk (``--save ""``,
``--appendonly no``) and works in its own temporary directory, so the tests may flush
it freely.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

#: The port a developer's own Redis listens on; the tests never use it.
SHARED_REDIS_PORT = 6379
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
#: Tries with a fresh port: another process may take the free port before redis binds it.
START_ATTEMPTS = 3


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != SHARED_REDIS_PORT:
            return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _wait_for_ping(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
    return False


@contextmanager
def running_redis_server(directory: Path) -> Iterator[str]:
    """Start a private redis-server with its files in ``directory``; yield its URL.

    Skips the calling test (or fixture) when ``redis-server`` is not installed.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH; install Redis to run the Redis bank tests")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "redis.log"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(directory), "--logfile", str(log_path)]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            if _wait_for_ping(proc, port):
                yield f"redis://127.0.0.1:{port}/0"
                return
        finally:
            _stop(proc)
    log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"
    raise RuntimeError(f"redis-server did not start after {START_ATTEMPTS} attempts; its log ends:\n{log}")
