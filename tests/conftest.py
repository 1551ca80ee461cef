"""Shared fixtures: the photo corpus, an isolated data directory, the loaded model, a private Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.delivery import CallbackSigner
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService, ServiceSettings

from . import corpus as corpus_mod
from .callback_receiver import KEY, Receiver
from .redis_server import running_redis_server
from .s3_server import S3Buckets, S3Server, running_s3_server

# Every test gets a fresh data directory, where a worker or `scan` would start the
# default model build in the background (a minute of CPU each): off unless a test
# turns it on (tests/test_autobuild.py). Subprocesses inherit it.
os.environ.setdefault("PHOTOSENTRY_AUTO_BUILD", "0")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> corpus_mod.Corpus:
    return corpus_mod.build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def classifier() -> OpenNsfwClassifier:
    # Loaded once: a ResNet-50 session takes a second to build.
    return OpenNsfwClassifier(threads=1)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PhotoSentry home; the environment points every command at it."""
    home = tmp_path / "home"
    monkeypatch.setenv("PHOTOSENTRY_HOME", str(home))
    monkeypatch.delenv("PHOTOSENTRY_POLICY", raising=False)
    monkeypatch.delenv("PHOTOSENTRY_REDIS_URL", raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path) -> SqliteBankStore:
    s = SqliteBankStore(tmp_path / "banks.sqlite3")
    yield s
    s.close()


@pytest.fixture
def policy() -> Policy:
    return Policy.default()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server started for this test session (skips if not installed)."""
    with running_redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A fresh client on an empty database (flushing is safe: the tests own this server)."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A local HTTP callback receiver that checks signatures with the test KEY."""
    # It listens on loopback, which callbacks reach only when allowed (commands read this).
    monkeypatch.setenv("PHOTOSENTRY_CALLBACK_ALLOW_NETWORKS", "127.0.0.0/8")
    r = Receiver(CallbackSigner(KEY))
    yield r
    r.close()


@pytest.fixture
def settings(redis_server: str, tmp_path: Path) -> ServiceSettings:
    """An in-process worker's settings: the private Redis, an empty source root, a fresh home,
    the test KEY with callbacks to the loopback receiver allowed, banks re-read on every job."""
    root = tmp_path / "uploads"
    root.mkdir()
    return ServiceSettings(redis_url=redis_server, source_roots=(str(root),), data_dir=str(tmp_path / "home"),
                           callback_key=KEY.decode(), refresh_interval_s=0.0, callback_networks=("127.0.0.0/8",))


@pytest.fixture
def service(redis_client: redis.Redis, settings: ServiceSettings, policy: Policy,
            classifier: OpenNsfwClassifier) -> ScanService:
    """An in-process worker's service: the real scanner on the shared Redis bank."""
    scanner = Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)), classifier=classifier)
    return ScanService(settings, client=redis_client, scanner=scanner)


# -- S3: a private S3-compatible server (moto in server mode, over HTTP) -----------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A private moto server started for this test session (skips if moto is not installed)."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Buckets:
    """This process's AWS environment pointed at the private server (test credentials,
    ``AWS_ENDPOINT_URL``; the developer's own AWS settings removed), and two fresh
    buckets: one for uploads, one private for the stores."""
    return S3Buckets.create(s3_server, monkeypatch)
