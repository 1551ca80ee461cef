"""A private S3-compatible server for the tests: moto in server mode, over real HTTP.

It runs as a subprocess (``python -m moto.server``) on 127.0.0.1 on a port the OS
reports free, like the tests' redis-server, and the code under test reaches it with a
real boto3 client through ``AWS_ENDPOINT_URL``: boto3 is never patched in process. It
keeps everything in memory and is gone when the session ends.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS = 3

#: Credentials moto accepts (it checks none); real ones are never in the tests' environment.
TEST_ENV = {"AWS_ACCESS_KEY_ID": "photosentry-test", "AWS_SECRET_ACCESS_KEY": "photosentry-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
#: AWS settings of the developer's own that must not reach the tests (profiles, tokens, files).
FOREIGN_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


@dataclass(frozen=True)
class S3Server:
    """A running server: its endpoint, and its request log (one line per request)."""

    url: str
    log: Path

    def requests_naming(self, bucket: str) -> list[str]:
        """The logged requests (``"GET /bucket/key HTTP/1.1"``) that name ``bucket``."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if f" /{bucket}" in line and '"' in line]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(proc: subprocess.Popen[bytes], url: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.1)
    return False


@contextmanager
def running_s3_server(directory: Path) -> Iterator[S3Server]:
    """Start moto's S3-compatible server; yield its endpoint and request log.

    Skips the calling test (or fixture) when moto is not installed.
    """
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        pytest.skip("moto[server] and boto3 are not installed: pip install -e '.[test]' to run the S3 tests")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "moto.log"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            if _ready(proc, url):
                yield S3Server(url, log_path)
                return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
    log_text = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"
    raise RuntimeError(f"moto server did not start after {START_ATTEMPTS} attempts; its log ends:\n{log_text}")


@dataclass(frozen=True)
class S3Buckets:
    """Two fresh buckets on the private server, and a client for the test's own reads and writes."""

    server: S3Server
    client: Any
    #: Where uploads arrive (the workers' s3:// source roots lie in it).
    uploads: str
    #: Private: the quarantine and blocked stores.
    private: str

    @classmethod
    def create(cls, server: S3Server, monkeypatch: pytest.MonkeyPatch) -> "S3Buckets":
        for name in FOREIGN_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in TEST_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        from photosentry.s3.client import connect

        client = connect()
        tag = uuid.uuid4().hex[:12]
        buckets = cls(server, client, f"ps-{tag}-uploads", f"ps-{tag}-private")
        for bucket in (buckets.uploads, buckets.private):
            client.create_bucket(Bucket=bucket)
        return buckets

    def put(self, key: str, data: bytes, *, bucket: str | None = None, **extra: Any) -> str:
        """Upload ``data``; returns its s3:// URL."""
        bucket = bucket or self.uploads
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return f"s3://{bucket}/{key}"

    def get(self, key: str, *, bucket: str | None = None) -> bytes | None:
        """The object's bytes, or None if there is none."""
        try:
            return self.client.get_object(Bucket=bucket or self.uploads, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def keys(self, bucket: str | None = None, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket or self.uploads, Prefix=prefix)
        return [entry["Key"] for page in pages for entry in page.get("Contents") or ()]
