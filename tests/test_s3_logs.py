"""AWS credentials never reach the logs, whichever command runs and however verbose.

botocore logs every request at DEBUG (``botocore.endpoint``, ``botocore.auth``): the
Authorization header with the access key id and, with temporary credentials, the
session token. ``photosentry -v review`` used to build its S3 client while logging was
at INFO and switch the root logger to DEBUG afterwards, so a moderator opening a photo
from a bucket store put the credentials in the review host's logs. Each command that
sets up logging runs here for real, with ``-v``, against the tests' moto server, with
credentials that stand out in its output.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
import redis

from photosentry import enqueue_scan
from photosentry.s3.client import connect
from photosentry.worker import logs
from photosentry.worker.service import ScanService

from .corpus import Corpus
from .s3_server import S3Buckets
from .test_quarantine import bank_photo
from .test_s3 import s3_service  # noqa: F401 - a fixture
from .test_s3 import verdict_of
from .test_worker import run_burst
from .workers import PHOTOSENTRY, wait_until

#: Credentials moto accepts (it checks none) and nothing else in a log could contain.
KEY_ID = "AKIAPHOTOSENTRYLOGS01"
SECRET = "logs-test-secret-key-value-0001"
TOKEN = "IQoJb3JpZ2luX2VjPHOTOSENTRYLOGSTESTSESSIONTOKEN"
SECRETS = (KEY_ID, SECRET, TOKEN, "Signature=", "X-Amz-Security-Token")
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger and the AWS loggers back as they were (configure replaces them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    wire = {name: logging.getLogger(name).level for name in WIRE_LOGGERS + ("botocore.auth", "botocore.endpoint")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in wire.items():
        logging.getLogger(name).setLevel(value)


def test_configure_after_the_client_is_built_still_keeps_the_request_dumps_out(
    s3: S3Buckets, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], root_logging: None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    for name in WIRE_LOGGERS:  # as a fresh process has them
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)
    client = connect()  # built at INFO, as `review` builds its reviewer ...
    logs.configure(logging.DEBUG, json_format=True)  # ... then -v turns on DEBUG
    client.put_object(Bucket=s3.uploads, Key="incoming/a.jpg", Body=b"photo")
    # Something lowers a wire logger again later: the handler still drops its dumps.
    logging.getLogger("botocore.endpoint").setLevel(logging.DEBUG)
    client.get_object(Bucket=s3.uploads, Key="incoming/a.jpg")["Body"].read()
    logging.getLogger("photosentry.test").debug("our own DEBUG lines still pass")
    err = capfd.readouterr().err
    assert "our own DEBUG lines still pass" in err
    assert leaked(err) == [], err[-2000:]


@pytest.fixture
def aws_env(s3: S3Buckets, tmp_path: Path) -> dict[str, str]:
    """A subprocess's environment: the moto endpoint and credentials that stand out."""
    env = {k: v for k, v in os.environ.items() if k not in ("PHOTOSENTRY_REDIS_URL", "PHOTOSENTRY_HOME")}
    env.update({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
                "AWS_ENDPOINT_URL": s3.server.url})
    return env


def quarantined_in_bucket(redis_client: redis.Redis, service: ScanService, s3: S3Buckets, corpus: Corpus) -> bytes:
    bank_photo(redis_client, corpus.clean["chelsea"], "moderation")
    held = corpus.clean["chelsea"].read_bytes()
    job = enqueue_scan(redis_client, source=s3.put("incoming/logs/u-1.jpg", held), upload_id="u-1")
    run_burst(redis_client, service)
    assert verdict_of(redis_client, job)["action"] == "quarantine"
    return held


def test_verbose_review_with_a_bucket_store_never_logs_credentials(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus, tmp_path: Path,  # noqa: F811
    aws_env: dict[str, str], redis_server: str
) -> None:
    from photosentry.review.moderators import new_token

    from .test_review_web import free_port

    held = quarantined_in_bucket(redis_client, s3_service, s3, corpus)
    token, digest = new_token()
    config = tmp_path / "review.toml"
    config.write_text(f'[moderators.alice]\ntoken_sha256 = "{digest}"\n')
    port = free_port()
    log = tmp_path / "review.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PHOTOSENTRY, "-v", "--data-dir", s3_service.settings.data_dir, "review", "--config", str(config),
             "--redis-url", redis_server, "--port", str(port), "--store", f"s3://{s3.private}/photosentry/",
             "--source-root", f"s3://{s3.uploads}/incoming/"],
            env=aws_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        site = f"http://127.0.0.1:{port}"
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

        def login_page() -> str:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            return browser.open(site + "/login").read().decode()

        html = wait_until(login_page, timeout=60, retry_on=(OSError,))
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        assert csrf, html[:500]
        browser.open(site + "/login", urllib.parse.urlencode({"csrf": csrf.group(1), "token": token}).encode())
        browser.open(f"{site}/item/1").read()
        with browser.open(f"{site}/item/1/photo") as photo:  # read from the bucket store, at DEBUG
            assert photo.read() == held
        time.sleep(0.2)  # let the log lines of that request be written
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text(errors="replace")
    assert '"level":"debug"' in text  # -v did turn on DEBUG ...
    assert leaked(text) == [], text[-3000:]  # ... and the request dumps stayed out


def test_verbose_worker_and_quarantine_commands_never_log_credentials(
    redis_client: redis.Redis, s3_service: ScanService, s3: S3Buckets, corpus: Corpus, tmp_path: Path,  # noqa: F811
    aws_env: dict[str, str], redis_server: str
) -> None:
    quarantined_in_bucket(redis_client, s3_service, s3, corpus)
    photo = corpus.clean["coffee"].read_bytes()
    job = enqueue_scan(redis_client, source=s3.put("incoming/logs/u-2.jpg", photo), upload_id="u-2")
    store = ("--store", f"s3://{s3.private}/photosentry/")
    home = ("--data-dir", s3_service.settings.data_dir)
    worker = subprocess.run(
        [PHOTOSENTRY, "-v", *home, "worker", "--burst", "--redis-url", redis_server, "-n", "1", "--threads", "1",
         "--source-root", f"s3://{s3.uploads}/incoming/", *store],
        env=aws_env, capture_output=True, text=True, timeout=180)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert verdict_of(redis_client, job)["action"] == "allow"  # it did read the bucket
    assert '"level":"debug"' in worker.stderr and leaked(worker.stderr) == [], worker.stderr[-3000:]

    # The root command's own set-up (every other subcommand): -v, then S3 requests.
    show = subprocess.run([PHOTOSENTRY, "-v", *home, "quarantine", "show", "1", "--redis-url", redis_server, *store,
                           "--source-root", f"s3://{s3.uploads}/incoming/"],
                          env=aws_env, capture_output=True, text=True, timeout=120)
    assert show.returncode == 0 and f"s3://{s3.private}/photosentry/quarantine/" in show.stdout, show.stderr
    assert leaked(show.stdout + show.stderr) == [], show.stderr[-3000:]
