"""The fail-open holes of the first hostile review, each written as the attack.

A producer writes the whole job hash, not only the payload; an upload id can come back
with other bytes; a callback receiver can hang; a context value can be unreadable; a
rescan can be SIGKILLed. Each test below failed on the code before its fix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from photosentry.worker.jobs import FAILURE_CALLBACK, SCAN_FUNCTION
from photosentry.worker.service import ScanService

from photosentry.worker.delivery import CallbackSigner

from .callback_receiver import KEY, Receiver
from .evil_callbacks import MARKS_ENV
from .test_security import plant_job, run_burst

EVIL = "tests.evil_callbacks.mark"


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "evil-marks"
    monkeypatch.setenv(MARKS_ENV, str(path))
    return path


def _verdict_of(client: redis.Redis, upload_id: str, stream_name: str = "photosentry:verdicts") -> dict[str, Any]:
    found = [json.loads(f[b"verdict"]) for _, f in client.xrange(stream_name) if f[b"upload_id"] == upload_id.encode()]
    assert len(found) == 1, f"{len(found)} verdicts for {upload_id} on {stream_name}"
    return found[0]


# -- 1. a job hash cannot switch fail-closed off -------------------------------------------------


def test_a_job_naming_its_own_failure_callback_still_ends_in_a_recorded_verdict(
    redis_client: redis.Redis, service: ScanService, marks: Path
) -> None:
    """The attack as reported: builtins.print as failure callback, no retries, a payload
    that fails for good. It ended `failed` with no verdict: the upload was lost."""
    payload = {"version": 99, "upload_id": "fc-1", "source": {"bytes_b64": "aGVsbG8="}}
    redis_client.hset("rq:job:fc-job", mapping={"data": json.dumps([SCAN_FUNCTION, None, [payload], {}]),
                                                "status": "queued", "origin": "uploads",
                                                "created_at": "2026-11-22T10:00:00.000000Z",
                                                "failure_callback_name": EVIL, "retries_left": "0"})
    redis_client.rpush("rq:queue:uploads", "fc-job")
    run_burst(redis_client, service)
    assert not marks.exists(), "the worker called a function the job hash chose"
    verdict = _verdict_of(redis_client, "fc-1")
    assert verdict["action"] == "quarantine" and verdict["reasons"][0]["code"] == "scan_failed"
    assert redis_client.hget("rq:job:fc-job", "status") == b"failed"
    assert redis_client.hget("rq:job:fc-job", "failure_callback_name") == FAILURE_CALLBACK.encode()


@pytest.mark.parametrize("fields", [
    {"success_callback_name": EVIL},
    {"failure_callback_name": EVIL},
    {"stopped_callback_name": EVIL},
    {"dependency_ids": json.dumps(["some-other-job"])},
    {"repeats_left": "3", "repeat_intervals": "[0]"},
    {"rate_limit_key": "x", "rate_limit_concurrency": "1"},
], ids=["success-callback", "failure-callback", "stopped-callback", "dependencies", "repeats", "rate-limit"])
def test_behaviour_fields_a_producer_sets_refuse_the_job_and_record_its_verdict(
    redis_client: redis.Redis, service: ScanService, marks: Path, fields: dict[str, str]
) -> None:
    plant_job(redis_client, "odd-job", "odd-1", **fields)
    plant_job(redis_client, "good-job", "good-1")
    run_burst(redis_client, service)
    assert not marks.exists()
    verdict = _verdict_of(redis_client, "odd-1")
    assert verdict["action"] == "quarantine" and verdict["reasons"][0]["code"] == "scan_failed"
    assert "refused" in verdict["reasons"][0]["text"]
    assert redis_client.hget("rq:job:odd-job", "status") == b"failed"
    stored = redis_client.hgetall("rq:job:odd-job")
    for name in (b"success_callback_name", b"stopped_callback_name", b"dependency_ids", b"repeats_left",
                 b"rate_limit_key", b"webhooks"):
        assert stored.get(name, b"") in (b"", b"[]"), f"{name!r} kept: {stored[name]!r}"
    assert stored[b"failure_callback_name"] == FAILURE_CALLBACK.encode()
    assert _verdict_of(redis_client, "good-1")["reasons"][0]["code"] == "not_an_image"  # scanned as usual


@pytest.mark.parametrize("status", ["finished", "failed"])
def test_webhooks_in_a_job_hash_are_never_sent(
    redis_client: redis.Redis, service: ScanService, receiver: Receiver, status: str
) -> None:
    """RQ 3 POSTs a job's webhooks to any URL it names: a way past the callback policy."""
    hooks = json.dumps([{"url": receiver.url, "job_status": status, "method": "POST"}])
    plant_job(redis_client, "hook-job", "hook-1", webhooks=hooks)
    run_burst(redis_client, service)
    assert receiver.received == [] and receiver.rejected == 0
    assert _verdict_of(redis_client, "hook-1")["action"] == "quarantine"


def test_a_job_is_recorded_on_the_stream_of_the_queue_it_came_from_not_the_one_it_claims(
    redis_client: redis.Redis, service: ScanService
) -> None:
    """`origin` picks the verdict stream; a hash claiming `bulk` on the uploads queue hid
    its verdict from the pipeline reading photosentry:verdicts."""
    plant_job(redis_client, "origin-job", "origin-1", origin="bulk")
    run_burst(redis_client, service)
    assert _verdict_of(redis_client, "origin-1")["reasons"][0]["code"] == "not_an_image"
    assert redis_client.xlen("photosentry:verdicts:bulk") == 0


def test_retries_and_timeouts_a_producer_writes_are_bounded(
    redis_client: redis.Redis, service: ScanService
) -> None:
    payload = {"version": 99, "upload_id": "loop-1", "source": {"bytes_b64": "aGVsbG8="}}
    plant_job(redis_client, "loop-job", "loop-1", retries_left="100000", retry_intervals="[0]", timeout="999999",
              data=json.dumps([SCAN_FUNCTION, None, [payload], {}]))
    run_burst(redis_client, service)
    stored = redis_client.hgetall("rq:job:loop-job")
    assert int(stored[b"timeout"]) <= 60
    assert stored[b"status"] == b"failed"  # PayloadError is permanent whatever retries_left said
    assert _verdict_of(redis_client, "loop-1")["reasons"][0]["code"] == "scan_failed"


@pytest.mark.parametrize("data", [
    [SCAN_FUNCTION, None, [{"version": 1, "upload_id": "kw-1", "source": {"bytes_b64": "aGVsbG8="}}], {"x": 1}],
    [SCAN_FUNCTION, "os", [{"version": 1, "upload_id": "kw-1", "source": {"bytes_b64": "aGVsbG8="}}], {}],
    [SCAN_FUNCTION, None, [{"version": 1, "upload_id": "kw-1", "source": {"bytes_b64": "aGVsbG8="}}, 2], {}],
], ids=["kwargs", "instance", "two-args"])
def test_a_scan_job_of_another_shape_is_refused_with_a_verdict(
    redis_client: redis.Redis, service: ScanService, data: list[Any]
) -> None:
    plant_job(redis_client, "shape-job", "kw-1", data=json.dumps(data))
    run_burst(redis_client, service)
    verdict = _verdict_of(redis_client, "kw-1")
    assert verdict["reasons"][0]["code"] == "scan_failed" and "refused" in verdict["reasons"][0]["text"]


# -- 5. pool processes end with their parent, however it dies -------------------------------------


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_sigkilled_local_rescan_leaves_no_pool_process_behind(
    redis_server: str, corpus: Any, tmp_path: Path
) -> None:
    import os
    import shutil
    import signal
    import subprocess

    from .workers import PHOTOSENTRY, wait_until

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        shutil.copyfile(corpus.clean["coffee"], root / f"{i:02d}.jpg")
    env = {**os.environ, "PHOTOSENTRY_HOME": str(tmp_path / "home")}
    env.pop("PHOTOSENTRY_POLICY", None)
    log = (tmp_path / "rescan.log").open("wb")
    proc = subprocess.Popen([PHOTOSENTRY, "rescan", str(root), "--report", str(tmp_path / "r.jsonl"), "-n", "2",
                             "--rate", "1", "--dry-run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        # Both pool processes are up (spawned children, besides multiprocessing's resource tracker).
        pool = wait_until(lambda: (lambda c: c if len(c) >= 2 else None)(_children(proc.pid)), timeout=90)
        wait_until(lambda: (tmp_path / "r.jsonl").exists() and (tmp_path / "r.jsonl").stat().st_size > 0,
                   timeout=90)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in pool), timeout=15)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_sigkilled_worker_supervisor_leaves_no_worker_behind(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    import os
    import signal

    from .workers import log_tail, pool_started, start_pool, wait_until

    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": redis_server, "PHOTOSENTRY_HOME": str(tmp_path / "home")}
    log = tmp_path / "worker.log"
    proc = start_pool(env, log, "--processes", "2", "--threads", "1", "--log-format", "text")
    try:
        assert pool_started(proc, redis_client, 2, 90), log_tail(log)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in workers), timeout=40)
    finally:
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)


# -- 4. context values nobody can read ------------------------------------------------------------


@pytest.mark.parametrize("value", ["recipient_age=abc", "recipient_is_minor=maybe", "uploader_age=fifteen"])
def test_scan_refuses_an_unreadable_context_with_exit_2(data_dir: Path, corpus: Any, value: str) -> None:
    from click.testing import CliRunner

    from photosentry.cli import cli

    result = CliRunner().invoke(cli, ["scan", "--context", value, str(corpus.clean["coffee"])])
    assert result.exit_code == 2, result.output
    key = value.split("=")[0]
    assert key in result.output and "--context" in result.output


@pytest.mark.parametrize("value", ["recipient_age=15", "recipient_is_minor=true", "recipient_age=40"])
def test_scan_reads_context_strings_as_numbers_and_flags(data_dir: Path, corpus: Any, value: str) -> None:
    from click.testing import CliRunner

    from photosentry.cli import cli

    result = CliRunner().invoke(cli, ["scan", "--json", "--threads", "1", "--context", value,
                                      str(corpus.clean["coffee"])])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output.splitlines()[0])
    assert verdict["profile"] == ("default" if value.endswith("40") else "minors")


@pytest.mark.parametrize("context,profile,note", [
    ({"recipient_age": "fifteen"}, "minors", True),
    ({"recipient_is_minor": "maybe"}, "minors", True),
    ({"recipient_age": "15"}, "minors", False),
    ({"recipient_is_minor": "true"}, "minors", False),
    ({"recipient_age": "40"}, "default", False),
])
def test_a_queued_job_with_an_unreadable_context_gets_the_strictest_profile_and_a_reason(
    redis_client: redis.Redis, service: ScanService, corpus: Any, context: dict[str, str], profile: str, note: bool
) -> None:
    import base64

    from photosentry import enqueue_scan

    data = corpus.clean["coffee"].read_bytes()
    enqueue_scan(redis_client, source=data, upload_id="ctx-1", context=context)
    run_burst(redis_client, service)
    verdict = _verdict_of(redis_client, "ctx-1")
    assert verdict["profile"] == profile
    codes = [r["code"] for r in verdict["reasons"]]
    assert ("context_unreadable" in codes) is note
    assert codes[0] == "clean"  # still decided on the photo itself
    # A second upload of the same bytes with a readable context is not served that reason from the cache.
    enqueue_scan(redis_client, source=base64.b64decode(base64.b64encode(data)), upload_id="ctx-2",
                 context={"recipient_age": "15"})
    run_burst(redis_client, service)
    assert "context_unreadable" not in [r["code"] for r in _verdict_of(redis_client, "ctx-2")["reasons"]]


# -- 2. a reused upload id never replays another file's verdict -----------------------------------


def _all_verdicts(client: redis.Redis, upload_id: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"verdict"]) for _, f in client.xrange("photosentry:verdicts")
            if f[b"upload_id"] == upload_id.encode()]


def test_a_reused_upload_id_does_not_replay_allow_onto_another_file(
    redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    """The attack as reported: job 1 a clean photo is allowed; job 2, same upload id, a
    garbage file, got job 1's allow (and SHA-256) and the garbage stayed in the root."""
    import hashlib

    from photosentry import enqueue_scan

    root = Path(service.settings.source_roots[0])
    (root / "clean.jpg").write_bytes(corpus.clean["coffee"].read_bytes())
    garbage = b"\x00garbage that is no photo" * 100
    (root / "garbage.jpg").write_bytes(garbage)
    enqueue_scan(redis_client, source="clean.jpg", upload_id="X")
    run_burst(redis_client, service)
    enqueue_scan(redis_client, source="garbage.jpg", upload_id="X")
    run_burst(redis_client, service)

    first, second = _all_verdicts(redis_client, "X")
    assert first["action"] == "allow"
    assert second["action"] == "quarantine"
    assert second["hashes"]["sha256"] == hashlib.sha256(garbage).hexdigest()
    codes = [r["code"] for r in second["reasons"]]
    assert "upload_id_reused" in codes and "not_an_image" in codes  # scanned on its own, and held
    assert not (root / "garbage.jpg").exists()  # moved into the quarantine store
    assert (root / "clean.jpg").exists()
    # It is queued for review on its own, not folded into the first file's (allowed) upload.
    assert service.review.pending_count() == 1

    # The same bytes again (a retried job) replay their own verdict; nothing new is recorded.
    enqueue_scan(redis_client, source="clean.jpg", upload_id="X")
    enqueue_scan(redis_client, source=garbage, upload_id="X")
    run_burst(redis_client, service)
    assert len(_all_verdicts(redis_client, "X")) == 2


def test_a_reused_upload_id_with_a_banned_file_is_still_blocked(
    redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    import hashlib

    from photosentry import enqueue_scan
    from photosentry.hashes.banks import EntrySource, NewEntry
    from photosentry.hashes.codecs import Algorithm

    service.bank_store.add([NewEntry(Algorithm.SHA256, hashlib.sha256(corpus.banned.read_bytes()).hexdigest(),
                                     "banned", source=EntrySource.MODERATOR)], actor="mod", reason="test")
    enqueue_scan(redis_client, source=corpus.clean["coffee"].read_bytes(), upload_id="Y")
    run_burst(redis_client, service)
    enqueue_scan(redis_client, source=corpus.banned.read_bytes(), upload_id="Y")
    run_burst(redis_client, service)
    first, second = _all_verdicts(redis_client, "Y")
    assert first["action"] == "allow" and second["action"] == "block"
    assert {"bank_match", "upload_id_reused"} <= {r["code"] for r in second["reasons"]}


def test_a_job_given_up_under_a_reused_upload_id_is_not_handed_the_first_verdict(
    redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    """The give-up path (a payload that fails for good) had the same hole."""
    from photosentry import enqueue_scan

    root = Path(service.settings.source_roots[0])
    (root / "clean.jpg").write_bytes(corpus.clean["coffee"].read_bytes())
    (root / "other.jpg").write_bytes(corpus.clean["astronaut"].read_bytes())
    enqueue_scan(redis_client, source="clean.jpg", upload_id="Z")
    run_burst(redis_client, service)
    payload = {"version": 99, "upload_id": "Z", "source": {"path": "other.jpg"}}
    plant_job(redis_client, "z-job", "Z", data=json.dumps([SCAN_FUNCTION, None, [payload], {}]))
    run_burst(redis_client, service)
    first, second = _all_verdicts(redis_client, "Z")
    assert first["action"] == "allow" and second["action"] == "quarantine"
    assert {"scan_failed", "upload_id_reused"} <= {r["code"] for r in second["reasons"]}
    assert not (root / "other.jpg").exists()


# -- 3. a slow receiver never holds up scanning; no callback is lost ------------------------------


def test_a_hanging_receiver_does_not_hold_up_the_next_upload(
    redis_server: str, redis_client: redis.Redis, corpus: Any, tmp_path: Path
) -> None:
    """The attack as reported: one worker process, a receiver that holds the connection
    open, and the next queued upload waited 20 s. Now the next upload is decided while
    the receiver still holds the first callback's connection (inline delivery could only
    get to it after giving that connection up)."""
    import os

    from photosentry import enqueue_scan
    from photosentry.worker.delivery import CallbackSigner

    from .callback_receiver import KEY, HangingReceiver
    from .workers import log_tail, pool_started, start_pool, stop_pool, wait_until

    hanging = HangingReceiver(CallbackSigner(KEY))
    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": redis_server, "PHOTOSENTRY_HOME": str(tmp_path / "home"),
           "PHOTOSENTRY_CALLBACK_KEY": KEY.decode(), "PHOTOSENTRY_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8"}
    env.pop("PHOTOSENTRY_POLICY", None)
    log = tmp_path / "worker.log"
    pool = start_pool(env, log, "--processes", "1", "--threads", "1", "--log-format", "text")
    try:
        assert pool_started(pool, redis_client, 1, 90), log_tail(log)
        enqueue_scan(redis_client, source=corpus.clean["coffee"].read_bytes(), upload_id="first",
                     callback_url=hanging.url)
        wait_until(lambda: hanging.held >= 1, timeout=60)  # its callback's connection is open, and held
        enqueue_scan(redis_client, source=corpus.clean["astronaut"].read_bytes(), upload_id="next")
        wait_until(lambda: any(f[b"upload_id"] == b"next" for _, f in redis_client.xrange("photosentry:verdicts")),
                   timeout=60)
        assert hanging.held >= 1, "the next upload was decided only after the slow receiver let go"
        hanging.release.set()
        # The first callback still arrives, signed, once the receiver answers.
        wait_until(lambda: hanging.received, timeout=30)
        assert [c["upload_id"] for c in hanging.received] == ["first"]
    finally:
        hanging.close()
        stop_pool(pool)


def test_a_callback_recorded_by_a_process_that_then_died_is_still_delivered(
    redis_client: redis.Redis, service: ScanService, receiver: Receiver
) -> None:
    """The verdict and its callback are written in one step; a process that dies after it
    (before any attempt, or mid-attempt while holding its lease) loses nothing."""
    from photosentry.worker.outbox import CallbackOutbox, PendingCallback
    from photosentry.worker.stream import VerdictStream

    outbox = CallbackOutbox(redis_client, lease_s=0.3)
    verdicts = VerdictStream(redis_client)
    recorded = verdicts.record(upload_id="dies-1", job_id="j1", verdict={"action": "allow", "reasons": []},
                               callback=PendingCallback(outbox, receiver.url, CallbackSigner(KEY)))
    assert recorded.new and outbox.pending() == 1
    taken = outbox.take()  # a deliverer takes it ... and its process dies mid-attempt
    assert taken is not None and taken.attempt == 1 and outbox.take() is None  # leased to it
    deliverer = service.deliverer(threads=1)
    assert deliverer is not None
    deliverer.outbox = outbox
    time.sleep(0.4)  # the dead deliverer's lease runs out
    again = outbox.take()
    assert again is not None and again.attempt == 2
    deliverer.deliver(again)
    [body] = receiver.received
    assert body["upload_id"] == "dies-1" and body["stream_id"] == recorded.entry_id
    assert body["verdict"] == {"action": "allow", "reasons": []}
    assert outbox.pending() == 0


def test_a_callback_that_keeps_failing_is_recorded_as_given_up(
    redis_client: redis.Redis, service: ScanService, receiver: Receiver
) -> None:
    from photosentry.worker.outbox import CallbackOutbox, PendingCallback
    from photosentry.worker.stream import VerdictStream

    outbox = CallbackOutbox(redis_client, backoff_s=(0.0, 0.0))
    VerdictStream(redis_client).record(upload_id="down-1", job_id="j1", verdict={"action": "block"},
                                       callback=PendingCallback(outbox, receiver.url, CallbackSigner(KEY)))
    receiver.fail_next = [503, 503, 503]
    deliverer = service.deliverer(threads=1)
    assert deliverer is not None
    deliverer.outbox = outbox
    for _ in range(3):
        taken = outbox.take()
        assert taken is not None
        deliverer.deliver(taken)
    assert outbox.take() is None and outbox.pending() == 0
    [(_, entry)] = redis_client.xrange(outbox.given_up_key)
    assert entry[b"upload_id"] == b"down-1" and entry[b"attempts"] == b"3" and b"503" in entry[b"error"]
    assert receiver.received == []


# -- also: where the metrics listener binds, one log format for every service --------------------


def test_the_metrics_listener_binds_this_host_only_unless_told_otherwise(tmp_path: Path) -> None:
    import subprocess

    from prometheus_client import CollectorRegistry

    from photosentry.worker.metrics import serve

    from .workers import PHOTOSENTRY

    for given, bound in ((None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")):
        server, thread = serve(0, CollectorRegistry(), **({"addr": given} if given else {}))
        try:
            assert server.server_address[0] == bound
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
    help_text = subprocess.run([PHOTOSENTRY, "worker", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--metrics-host" in help_text and "PHOTOSENTRY_METRICS_HOST" in help_text


def test_the_review_page_logs_json_like_the_workers(tmp_path: Path, redis_server: str) -> None:
    """Its log lines (uvicorn's included) go through the workers' formatter."""
    import os
    import signal
    import socket
    import subprocess
    import urllib.request

    from .workers import PHOTOSENTRY, wait_until

    config = tmp_path / "review.toml"
    config.write_text(subprocess.run([PHOTOSENTRY, "review", "token", "alice"], capture_output=True, text=True,
                                     check=True).stdout)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PHOTOSENTRY_HOME": str(tmp_path / "home"), "PHOTOSENTRY_REDIS_URL": redis_server}
    log = tmp_path / "review.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([PHOTOSENTRY, "review", "--config", str(config), "--port", str(port)], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                return True
            except OSError:
                return False
        wait_until(up, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert any(r["logger"].startswith("uvicorn") for r in records), log.read_text()[-2000:]
    assert any("GET /" in r["msg"] for r in records)


# -- the red team's second round: reused ids raced, collided, trimmed ------------------------------


def _ban_exact(service: ScanService, data: bytes) -> None:
    import hashlib

    from photosentry.hashes.banks import EntrySource, NewEntry
    from photosentry.hashes.codecs import Algorithm

    service.bank_store.add([NewEntry(Algorithm.SHA256, hashlib.sha256(data).hexdigest(), "banned",
                                     source=EntrySource.MODERATOR)], actor="mod", reason="test")


def test_two_jobs_racing_under_one_upload_id_never_share_a_verdict(
    redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    """Both claim the id before either records; the clean one records allow first. The
    banned one used to take that allow (and its SHA-256) and leave its file in place."""
    import hashlib

    from photosentry.worker.payload import ScanPayload

    clean, banned = corpus.clean["coffee"].read_bytes(), corpus.banned.read_bytes()
    _ban_exact(service, banned)
    service.refresh_banks(force=True)
    stream = service.stream
    sha_clean, sha_banned = hashlib.sha256(clean).hexdigest(), hashlib.sha256(banned).hexdigest()
    claim_clean = service._claim("race", sha_clean, stream)
    claim_banned = service._claim("race", sha_banned, stream)
    assert claim_clean.key == claim_banned.key == "race"  # neither sees the other yet
    payload = ScanPayload("race", {"bytes_b64": ""})
    allowed = service.scanner.scan_bytes(clean)
    service._record(allowed, payload, "j1", stream, claim_clean, sha_clean)
    blocked = service.scanner.scan_bytes(banned)
    settled, claim = service._record(blocked, payload, "j2", stream, claim_banned, sha_banned)
    assert claim.key != "race" and settled.recorded.new
    assert settled.verdict.action.value == "block"
    assert {"bank_match", "upload_id_reused"} <= set(settled.verdict.reason_codes)
    entries = _all_verdicts(redis_client, "race")
    assert [e["action"] for e in entries] == ["allow", "block"]
    assert entries[1]["hashes"]["sha256"] == sha_banned


def test_an_upload_id_that_looks_like_a_reused_key_collides_with_nothing(
    redis_client: redis.Redis, service: ScanService, corpus: Any, tmp_path: Path
) -> None:
    import hashlib

    from photosentry import enqueue_scan

    clean, banned = corpus.clean["coffee"].read_bytes(), corpus.banned.read_bytes()
    _ban_exact(service, banned)
    prefix = hashlib.sha256(banned).hexdigest()
    for upload_id in ("X", f"X#{prefix[:16]}", f"X#{prefix}", "X#unread"):
        enqueue_scan(redis_client, source=clean, upload_id=upload_id)
    run_burst(redis_client, service)
    enqueue_scan(redis_client, source=banned, upload_id="X")
    root = Path(service.settings.source_roots[0])
    (root / "gone.jpg").write_bytes(clean)
    enqueue_scan(redis_client, source="gone.jpg", upload_id="Y")
    enqueue_scan(redis_client, source="Y#unread", upload_id="Y#unread")  # a path nobody can read
    run_burst(redis_client, service)
    (root / "gone.jpg").unlink()
    enqueue_scan(redis_client, source="gone.jpg", upload_id="Y")  # allowed before, unreadable now
    run_burst(redis_client, service)
    assert [e["action"] for e in _all_verdicts(redis_client, "X")] == ["allow", "block"]
    assert [e["action"] for e in _all_verdicts(redis_client, "Y")] == ["allow", "quarantine"]


def test_a_reused_upload_id_whose_first_entry_was_trimmed_still_records_its_own_verdict(
    redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    from photosentry import enqueue_scan

    clean, banned = corpus.clean["coffee"].read_bytes(), corpus.banned.read_bytes()
    _ban_exact(service, banned)
    enqueue_scan(redis_client, source=clean, upload_id="T")
    run_burst(redis_client, service)
    [(entry_id, _)] = redis_client.xrange("photosentry:verdicts")
    redis_client.xdel("photosentry:verdicts", entry_id)  # trimmed, its marker still there
    enqueue_scan(redis_client, source=banned, upload_id="T")
    run_burst(redis_client, service)
    [verdict] = _all_verdicts(redis_client, "T")
    assert verdict["action"] == "block" and "upload_id_reused" in [r["code"] for r in verdict["reasons"]]


def test_a_private_receiver_is_called_once_its_network_is_allowed() -> None:
    from photosentry.worker.delivery import CallbackPolicy

    resolve = lambda host, port, **_: [(2, 1, 6, "", ("10.20.0.5", port))]  # noqa: E731
    with pytest.raises(Exception, match="private"):
        CallbackPolicy().check("http://hooks.internal/v", resolve=resolve)
    target = CallbackPolicy(allow_networks=("10.20.0.0/16",)).check("http://hooks.internal/v", resolve=resolve)
    assert target.addresses == ("10.20.0.5",)


@pytest.mark.parametrize("meta", ['{"attempts":"x"}', "[]", '"x"', '{"attempts":1e999}', "\x80\x81"])
def test_a_meta_field_a_producer_writes_neither_stops_the_worker_nor_loses_the_upload(
    redis_client: redis.Redis, service: ScanService, meta: str
) -> None:
    plant_job(redis_client, "meta-job", "meta-1", meta=meta)
    plant_job(redis_client, "good-job", "good-1")
    run_burst(redis_client, service)
    assert _verdict_of(redis_client, "meta-1")["reasons"][0]["code"] == "not_an_image"  # scanned
    assert _verdict_of(redis_client, "good-1")["reasons"][0]["code"] == "not_an_image"
    assert json.loads(redis_client.hget("rq:job:meta-job", "meta")) == {"attempts": 1}


@pytest.mark.parametrize("intervals", [None, "[3]", "[]"])
def test_retries_are_immediate_whatever_retry_intervals_says(
    redis_client: redis.Redis, settings: Any, scanner_slow: Any, intervals: str | None
) -> None:
    """The hash docs/queue.md shows has no retry_intervals: the guard used to make it [],
    which made RQ's retry raise; [3] parked the retry in the ScheduledJobRegistry, which
    no worker serves. Either way the upload never got its verdict."""
    fields = {"retries_left": "1", "timeout": "1"}
    if intervals is not None:
        fields["retry_intervals"] = intervals
    plant_job(redis_client, "slow-job", "slow-1", **fields)
    service = ScanService(settings, client=redis_client, scanner=scanner_slow)
    run_burst(redis_client, service)
    verdict = _verdict_of(redis_client, "slow-1")
    assert verdict["reasons"][0]["code"] == "scan_failed" and "2 attempts" in verdict["reasons"][0]["text"]
    assert redis_client.hget("rq:job:slow-job", "status") == b"failed"
    assert not redis_client.zcard("rq:scheduled:uploads")


@pytest.fixture
def scanner_slow(policy: Any) -> Any:
    from photosentry.worker.pipeline import Scanner

    from .test_worker import SlowScanner

    return SlowScanner(Scanner(policy=policy, matcher=None, classifier=None), 3.0)


def test_a_job_planted_in_the_started_registry_runs_nothing_of_the_producers(
    redis_client: redis.Redis, service: ScanService, receiver: Receiver, marks: Path
) -> None:
    """RQ's own registry cleanup calls an expired entry's failure callback and sends its
    webhooks from the stored hash; a planted entry never passes the job guard."""
    hooks = json.dumps([{"url": receiver.url, "job_status": "failed", "method": "POST"}])
    plant_job(redis_client, "planted", "planted-1", status="started", worker_name="someone.else",
              failure_callback_name=EVIL, webhooks=hooks)
    redis_client.lrem("rq:queue:uploads", 1, "planted")  # never dequeued: only registered
    redis_client.zadd("rq:wip:uploads", {"planted:exec-1": 1})  # long expired
    plant_job(redis_client, "unreadable", "unreadable-1", status="started", created_at="yesterday")
    redis_client.lrem("rq:queue:uploads", 1, "unreadable")
    redis_client.zadd("rq:wip:uploads", {"unreadable:exec-2": 1})
    plant_job(redis_client, "good-job", "good-1")
    run_burst(redis_client, service)
    assert not marks.exists() and receiver.received == [] and receiver.rejected == 0
    assert _verdict_of(redis_client, "good-1")["reasons"][0]["code"] == "not_an_image"  # the worker went on
    assert _verdict_of(redis_client, "planted-1")["action"] == "quarantine"
    assert _verdict_of(redis_client, "unreadable-1")["action"] == "quarantine"


def test_a_callback_a_redis_writer_puts_in_the_outbox_is_never_signed_or_sent(
    redis_client: redis.Redis, service: ScanService, receiver: Receiver
) -> None:
    from photosentry.worker.outbox import CallbackOutbox

    outbox = CallbackOutbox(redis_client)
    forged = "photosentry:verdicts|1-0|x"
    redis_client.hset(outbox.item_prefix + forged, mapping={
        "url": receiver.url, "upload_id": "victim-42", "job_id": "j", "stream": "photosentry:verdicts",
        "stream_id": "1-0", "verdict": '{"action":"allow"}', "attempts": "-1000000", "mac": "0" * 64})
    redis_client.zadd(outbox.due_key, {forged: 0})
    deliverer = service.deliverer(threads=1)
    assert deliverer is not None
    taken = outbox.take()
    assert taken is not None
    deliverer.deliver(taken)
    assert receiver.received == [] and outbox.pending() == 0
    [(_, entry)] = redis_client.xrange(outbox.given_up_key)
    assert b"MAC" in entry[b"error"]


@pytest.mark.parametrize("context", [
    {"recipient_age": 10 ** 400}, {"recipient_age": -(10 ** 400)}, {"recipient_age": "1" * 5000},
    {"recipientAge": 15}, {"Recipient_Age": "30"}, {"recipient_age ": 30}, {"Recipient_Is_Minor": "false"},
])
def test_a_context_nobody_can_read_still_ends_in_a_verdict_under_the_strictest_profile(
    redis_client: redis.Redis, service: ScanService, corpus: Any, context: dict[str, Any]
) -> None:
    payload = {"version": 1, "upload_id": "ctx-x", "source": {"bytes_b64": "aGVsbG8="}, "context": context}
    redis_client.hset("rq:job:ctx-job", mapping={"data": json.dumps([SCAN_FUNCTION, None, [payload], {}]),
                                                 "status": "queued", "origin": "uploads",
                                                 "created_at": "2026-11-22T10:00:00.000000Z"})
    redis_client.rpush("rq:queue:uploads", "ctx-job")
    run_burst(redis_client, service)
    verdict = _verdict_of(redis_client, "ctx-x")
    assert verdict["profile"] == "minors"
    assert "context_unreadable" in [r["code"] for r in verdict["reasons"]]


def test_a_number_just_under_a_limit_is_under_it_as_written(policy: Any) -> None:
    assert policy.profile_for({"recipient_age": "17.99999999999999999"}).name == "minors"
    assert policy.profile_for({"recipient_age": "18"}).name == "default"


def test_a_payload_with_a_number_python_cannot_parse_still_ends_in_a_verdict(
    redis_client: redis.Redis, service: ScanService
) -> None:
    """Valid JSON, but an integer of 5,000 digits: RQ cannot read the job, so it is refused,
    and its upload used to get no verdict at all."""
    data = ('["%s", null, [{"version": 1, "upload_id": "digits-1", "source": {"bytes_b64": "aGVsbG8="},'
            ' "context": {"recipient_age": %s}}], {}]' % (SCAN_FUNCTION, "1" * 5000))
    plant_job(redis_client, "digits-job", "digits-1", data=data)
    run_burst(redis_client, service)
    verdict = _verdict_of(redis_client, "digits-1")
    assert verdict["action"] == "quarantine" and verdict["profile"] == "minors"


# -- who may write what: the producer ACL docs/operations.md recommends ---------------------------

PRODUCER_ACL = ("resetkeys ~rq:job:* ~rq:queue:uploads ~rq:queue:bulk ~rq:queues"
                " -@all +multi +exec +hset +rpush +sadd +ping")


def test_a_producer_under_the_documented_acl_can_enqueue_and_nothing_else(
    redis_server: str, redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    """The job guard holds against whatever a job hash says; what else lives in Redis
    (banks, the verdict cache, markers, the outbox, RQ's registries, pubsub commands) is
    kept from producers by a Redis ACL, which this pins."""
    from photosentry import enqueue_scan

    redis_client.execute_command("ACL", "SETUSER", "producer-test", "reset", "on", ">producer-test-pw",
                                 *PRODUCER_ACL.split())
    try:
        producer = redis.Redis.from_url(redis_server, username="producer-test", password="producer-test-pw")
        enqueue_scan(producer, source=corpus.clean["coffee"].read_bytes(), upload_id="acl-1")
        with producer.pipeline() as pipe:  # docs/queue.md's foreign producer
            pipe.hset("rq:job:acl-2", mapping={"data": json.dumps([SCAN_FUNCTION, None, [
                {"version": 1, "upload_id": "acl-2", "source": {"bytes_b64": "aGVsbG8="}}], {}]),
                "status": "queued", "origin": "uploads", "created_at": "2026-11-22T10:00:00.000000Z"})
            pipe.rpush("rq:queue:uploads", "acl-2")
            pipe.sadd("rq:queues", "rq:queue:uploads")
            pipe.execute()
        for forbidden in (
            lambda: producer.set("photosentry:vcache:x", "{}"),
            lambda: producer.hset("photosentry:callbacks:item:x", "url", "http://x/"),
            lambda: producer.zadd("rq:wip:uploads", {"x:y": 1}),
            lambda: producer.xadd("photosentry:verdicts", {"upload_id": "x"}),
            lambda: producer.set("photosentry:verdicts:recorded:acl-1", "1-0"),
            lambda: producer.publish("rq:pubsub:photosentry.any", '{"command": "shutdown"}'),
            lambda: producer.hset("photosentry:bank:entries", "1", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
        run_burst(redis_client, service)
        assert _verdict_of(redis_client, "acl-1")["action"] == "allow"
        assert _verdict_of(redis_client, "acl-2")["reasons"][0]["code"] == "not_an_image"
    finally:
        redis_client.execute_command("ACL", "DELUSER", "producer-test")


def test_a_cached_verdict_for_other_bytes_is_never_served(
    redis_client: redis.Redis, service: ScanService, corpus: Any
) -> None:
    """Red team, round 3: a cache entry written by hand under a photo's key (its verdict
    recording another file's hashes) made a banned photo come out allowed."""
    import hashlib

    from photosentry import enqueue_scan

    clean, banned = corpus.clean["coffee"].read_bytes(), corpus.banned.read_bytes()
    _ban_exact(service, banned)
    service.refresh_banks(force=True)
    clean_verdict = service.scanner.scan_bytes(clean)
    key = service.cache.key_for(banned, policy=service.policy, context={}, scanner=service.scanner)
    assert key.endswith(hashlib.sha256(banned).hexdigest())
    service.cache.put(key, clean_verdict)  # what a Redis writer could plant
    enqueue_scan(redis_client, source=banned, upload_id="poisoned")
    run_burst(redis_client, service)
    verdict = _verdict_of(redis_client, "poisoned")
    assert verdict["action"] == "block" and "cache" not in verdict


def test_a_6to4_address_wrapping_loopback_is_refused() -> None:
    from photosentry.worker.delivery import CallbackPolicy

    resolve = lambda host, port, **_: [(10, 1, 6, "", ("2002:7f00:1::", port, 0, 0))]  # noqa: E731
    with pytest.raises(Exception, match="loopback"):
        CallbackPolicy().check("http://sixtofour.example/v", resolve=resolve)
