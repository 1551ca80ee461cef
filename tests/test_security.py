"""Security review, as tests: no pickle from Redis, hostile job hashes, path confinement,
callback URL policy, secrets kept out of logs and reprs, private store permissions."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from photosentry import enqueue_scan
from photosentry.config import redact_url
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.actions import ActionApplier, ContentStore
from photosentry.worker.delivery import CallbackPolicy, CallbackRefused, CallbackSigner, post_callback
from photosentry.worker.jobs import SCAN_FUNCTION
from photosentry.worker.jobdata import MAX_JOB_DATA_BYTES
from photosentry.worker.scan_worker import ScanWorker
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService, ServiceSettings, install
from photosentry.worker.verdict import Action, ReasonCode

from .callback_receiver import KEY, Receiver
from .corpus import Corpus

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "photosentry"
PHOTOSENTRY = str(Path(sys.executable).with_name("photosentry"))
PUBLIC = "93.184.216.34"  # a documentation-style public address; nothing connects to it here


def fake_resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    """getaddrinfo for made-up names (no DNS needed); numeric hosts resolve as themselves."""

    def resolve(host: str, port: int, **_: Any) -> list[tuple]:
        if host not in table:  # numeric forms only (e.g. 2852039166): never a DNS query
            return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        addresses = table[host]
        out = []
        for a in addresses:
            family = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((family, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    return resolve


# -- no pickle anywhere a worker reads from Redis ------------------------------------------------


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_a_pickle_library() -> None:
    for path in _python_files():
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & {"pickle", "cPickle", "dill", "cloudpickle", "shelve"}, \
                f"{path.relative_to(REPO)} imports {names}"


RQ_READERS = {"Queue", "ReliableQueue", "fetch", "fetch_many", "find_by_key", "all", "ScanWorker"}


def test_every_rq_object_a_worker_builds_is_told_to_use_json() -> None:
    """RQ's default serializer is pickle: every Queue/Job/Worker built on a connection
    must name the JSON serializer explicitly (ScanWorker forces it itself)."""
    missing = []
    for path in _python_files():
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if name not in RQ_READERS or (name in {"fetch", "fetch_many", "find_by_key", "all"}
                                           and owner not in {"Job", "ScanWorker", "Worker", "Queue"}):
                continue
            if name == "ScanWorker":
                continue  # refuses any serializer but JSON (tested in test_worker.py)
            if not any(k.arg == "serializer" for k in node.keywords):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)[:80]}")
    assert missing == []


@pytest.fixture
def settings(redis_server: str, tmp_path: Path) -> ServiceSettings:
    root = tmp_path / "uploads"
    root.mkdir()
    return ServiceSettings(redis_url=redis_server, source_roots=(str(root),), data_dir=str(tmp_path / "home"),
                           callback_key=KEY.decode(), refresh_interval_s=0.0)


@pytest.fixture
def service(redis_client: redis.Redis, settings: ServiceSettings, classifier: OpenNsfwClassifier) -> ScanService:
    return ScanService(settings, client=redis_client,
                       scanner=Scanner(policy=Policy.default(), matcher=None, classifier=classifier))


def run_burst(client: redis.Redis, service: ScanService) -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    install(service)
    try:
        ScanWorker(connection=client).work(burst=True)
    finally:
        install(None)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def stream(client: redis.Redis) -> dict[str, dict[str, Any]]:
    return {f[b"upload_id"].decode(): json.loads(f[b"verdict"]) for _, f in client.xrange("photosentry:verdicts")}


NOW = "2026-11-22T10:00:00.000000Z"


def plant_job(client: redis.Redis, job_id: str, upload_id: str, *, source: dict[str, str] | None = None,
              **fields: Any) -> None:
    """Write a job hash as a foreign producer would (docs/queue.md), bypassing enqueue_scan's checks."""
    payload = {"version": 1, "upload_id": upload_id, "source": source or {"bytes_b64": "aGVsbG8="}}
    client.hset(f"rq:job:{job_id}", mapping={"data": json.dumps([SCAN_FUNCTION, None, [payload], {}]),
                                            "status": "queued", "origin": "uploads", "created_at": NOW,
                                            "enqueued_at": NOW, **fields})
    client.rpush("rq:queue:uploads", job_id)


@pytest.mark.parametrize("field,value", [("created_at", "yesterday"), ("status", "bogus"), ("timeout", "soon"),
                                         ("retry_intervals", "not json"), ("dependency_ids", "\x80\x81")])
def test_a_job_hash_rq_cannot_read_is_refused_and_its_upload_still_gets_a_verdict(
    redis_client: redis.Redis, service: ScanService, field: str, value: str
) -> None:
    """Regression: such a job ended the worker, and recovery handed it to the next one."""
    plant_job(redis_client, "bad-job", "bad-1", **{field: value})
    plant_job(redis_client, "good-job", "good-1")
    run_burst(redis_client, service)  # returns: the worker went on past the bad job
    assert redis_client.hget("rq:job:bad-job", "status") == b"failed"
    assert b"refused" in redis_client.hget("rq:job:bad-job", "exc_info")
    assert redis_client.zscore("rq:failed:uploads", "bad-job") is not None
    assert not redis_client.exists("rq:queue:uploads", "rq:queue:uploads:intermediate")
    verdicts = stream(redis_client)
    assert verdicts["bad-1"]["action"] == "quarantine" and verdicts["bad-1"]["reasons"][0]["code"] == "scan_failed"
    assert verdicts["good-1"]["action"] == "quarantine"  # 'hello' is not an image, but it was scanned
    assert verdicts["good-1"]["reasons"][0]["code"] == "not_an_image"


def test_a_zlib_bomb_in_job_data_is_refused_without_inflating_it(
    redis_client: redis.Redis, service: ScanService
) -> None:
    deflate = zlib.compressobj(9)
    head = json.dumps([SCAN_FUNCTION, None, [{"version": 1, "upload_id": "bomb-1", "source": {"bytes_b64": ""},
                                              "context": {"x": ""}}], {}])
    chunks = [deflate.compress(head[:-7].encode())]
    block = b"A" * (1 << 20)
    chunks += [deflate.compress(block) for _ in range(3 * MAX_JOB_DATA_BYTES >> 20)]
    chunks.append(deflate.compress(head[-7:].encode()) + deflate.flush())
    bomb = b"".join(chunks)
    assert len(bomb) < MAX_JOB_DATA_BYTES // 50
    plant_job(redis_client, "bomb-job", "bomb-1", data=bomb)
    run_burst(redis_client, service)
    assert redis_client.hget("rq:job:bomb-job", "status") == b"failed"
    assert b"inflates to over" in redis_client.hget("rq:job:bomb-job", "exc_info")


def test_a_pickled_payload_is_refused_and_recorded_as_failed(
    redis_client: redis.Redis, service: ScanService, tmp_path: Path
) -> None:
    import pickle  # the attacker's side only

    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    data = pickle.dumps((SCAN_FUNCTION, None, (Evil(),), {}))
    plant_job(redis_client, "pickled", "pickled-1", data=zlib.compress(data))
    run_burst(redis_client, service)
    assert not marker.exists()
    assert redis_client.hget("rq:job:pickled", "status") == b"failed"
    assert redis_client.zscore("rq:failed:uploads", "pickled") is not None
    assert stream(redis_client) == {}  # no upload id can be read without unpickling


# -- paths from job payloads stay inside their roots --------------------------------------------


def test_hostile_job_paths_are_refused_and_quarantined_without_reading(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus, tmp_path: Path
) -> None:
    root = Path(settings.source_roots[0])
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(corpus.clean["coffee"].read_bytes())
    (root / "dir").mkdir()
    (root / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    hostile = {
        "dotdot": "../secret.jpg",
        "dotdot-deep": "dir/../../secret.jpg",
        "absolute": str(secret),
        "proc": "/proc/self/environ",
        "symlinked-dir": "dir-link/secret.jpg",
        "nul": "dir/x.jpg\x00.png",
        "directory": "dir",
        "symlink-loop": "loop",
        "too-long": "a/" * 3000 + "x.jpg",
        "device": "/dev/zero",
    }
    for uid, path in hostile.items():
        plant_job(redis_client, f"job-{uid}", uid, source={"path": path})
    run_burst(redis_client, service)
    verdicts = stream(redis_client)
    assert set(verdicts) == set(hostile)
    for uid, verdict in verdicts.items():
        assert verdict["action"] == "quarantine", uid
        assert verdict["reasons"][0]["code"] == "source_refused", (uid, verdict["reasons"])
        assert verdict["hashes"] is None, uid  # nothing was read
    assert secret.exists()
    assert not list((Path(settings.data_dir) / "quarantine").rglob("content"))


# -- callback URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize("url,why", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://2852039166/", "metadata"),  # 169.254.169.254 as one decimal number
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://127.0.0.1:6379/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://0.0.0.0:8080/", "loopback"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    # A platform's own services: private, shared and benchmarking ranges (red team).
    ("http://10.20.0.5:2375/containers/db/kill", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "private"),
    ("http://198.18.0.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme"),
    ("ftp://files.example/", "scheme"),
    ("http://user:pw@app.example/", "credentials"),
    ("http:///nohost", "no host"),
    ("http://app.example:99999/", "malformed"),
])
def test_internal_and_odd_callback_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why):
        CallbackPolicy().check(url, resolve=fake_resolver({"app.example": [PUBLIC]}))


def test_a_name_resolving_to_loopback_is_refused_unless_its_network_is_allowed() -> None:
    resolve = fake_resolver({"hooks.example": ["127.0.0.1"], "mixed.example": [PUBLIC, "127.0.0.1"],
                             "public.example": [PUBLIC]})
    with pytest.raises(CallbackRefused, match="loopback"):
        CallbackPolicy().check("https://hooks.example/v", resolve=resolve)
    with pytest.raises(CallbackRefused, match="loopback"):  # any internal answer refuses the name
        CallbackPolicy().check("https://mixed.example/v", resolve=resolve)
    target = CallbackPolicy(allow_networks=("127.0.0.0/8",)).check("https://hooks.example/v?t=1", resolve=resolve)
    assert (target.host, target.port, target.path, target.addresses) == ("hooks.example", 443, "/v?t=1",
                                                                          ("127.0.0.1",))
    assert CallbackPolicy().check("http://public.example/v", resolve=resolve).addresses == (PUBLIC,)
    with pytest.raises(CallbackRefused, match="resolve"):
        CallbackPolicy().check("http://nowhere.invalid/", resolve=resolve)


def test_allowed_prefixes_compare_parts_not_strings() -> None:
    policy = CallbackPolicy(allow_prefixes=("https://app.example/hooks/",))
    resolve = fake_resolver({"app.example": [PUBLIC], "app.example.evil.example": [PUBLIC],
                             "evil.example": [PUBLIC]})
    assert policy.check("https://app.example/hooks/v1?id=3", resolve=resolve).path == "/hooks/v1?id=3"
    assert policy.check("https://APP.example/hooks/", resolve=resolve).host == "app.example"
    for url in ("https://app.example@evil.example/hooks/", "https://app.example.evil.example/hooks/",
                "https://app.example/hooksx", "https://app.example:8443/hooks/", "http://app.example/hooks/",
                "https://app.example/other", "https://evil.example/hooks/"):
        with pytest.raises(CallbackRefused):
            policy.check(url, resolve=resolve)
    with pytest.raises(ValueError):
        CallbackPolicy(allow_prefixes=("app.example/hooks",))
    with pytest.raises(ValueError):
        CallbackPolicy(allow_networks=("not-a-network",))


def test_the_request_goes_to_the_checked_address_with_the_callers_host_name(receiver: Receiver) -> None:
    """DNS is asked once; the connection goes to what was checked (no rebinding)."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    seen: list[str] = []
    original = receiver.server.RequestHandlerClass.do_POST

    def do_post(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers["Host"])
        original(handler)

    receiver.server.RequestHandlerClass.do_POST = do_post  # type: ignore[method-assign]
    calls = []

    def resolve(host: str, port: int, **kw: Any) -> list[tuple]:
        calls.append(host)
        return fake_resolver({"hooks.example": ["127.0.0.1"]})(host, port)

    result = post_callback(f"http://hooks.example:{port}/verdicts", b'{"a":1}', CallbackSigner(KEY),
                           policy=CallbackPolicy(allow_networks=("127.0.0.0/8",)), resolve=resolve,
                           sleep=lambda s: None)
    assert result.delivered and calls == ["hooks.example"]
    assert seen == [f"hooks.example:{port}"] and receiver.received == [{"a": 1}]


@pytest.fixture
def redirector() -> Iterator[tuple[str, list[str]]]:
    """A local server that answers every POST with a redirect to the metadata address."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam/")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", hits
    server.shutdown()
    server.server_close()


def test_redirects_are_never_followed(redirector: tuple[str, list[str]]) -> None:
    url, hits = redirector
    result = post_callback(url, b"{}", CallbackSigner(KEY), policy=CallbackPolicy(allow_networks=("127.0.0.0/8",)),
                           sleep=lambda s: None)
    assert not result.delivered and result.status == 307 and "not followed" in result.error
    assert hits == ["/hook"]  # asked once, not retried, never sent on


def test_refused_callback_is_never_sent_and_the_verdict_still_recorded(
    redis_client: redis.Redis, service: ScanService, receiver: Receiver, corpus: Corpus
) -> None:
    """The service's own policy has no allowed networks: the loopback receiver is refused."""
    enqueue_scan(redis_client, source=corpus.clean["coffee"].read_bytes(), upload_id="cb-1",
                 callback_url=receiver.url)
    enqueue_scan(redis_client, source=corpus.clean["coffee"].read_bytes(), upload_id="cb-2",
                 callback_url="http://169.254.169.254/latest/meta-data/")
    run_burst(redis_client, service)
    assert set(stream(redis_client)) == {"cb-1", "cb-2"}
    assert receiver.received == [] and receiver.rejected == 0


# -- secrets never in logs or reprs -------------------------------------------------------------

REDIS_PASSWORD = "s3cret-redis-Pa55"
CALLBACK_KEY = "callback-key-Xq7-very-secret"


def test_reprs_and_redaction_hide_secrets() -> None:
    for url in (f"redis://:{REDIS_PASSWORD}@cache:6379/0", f"rediss://user:{REDIS_PASSWORD}@cache/1",
                f"redis://cache:6379/0?password={REDIS_PASSWORD}&db=1",
                f"unix:///run/redis.sock?db=0&password={REDIS_PASSWORD}"):
        assert REDIS_PASSWORD not in redact_url(url), url
        settings = ServiceSettings(redis_url=url, callback_key=CALLBACK_KEY)
        for text in (repr(settings), str(settings)):
            assert REDIS_PASSWORD not in text and CALLBACK_KEY not in text
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert CALLBACK_KEY not in repr(CallbackSigner(CALLBACK_KEY))


def test_a_worker_never_logs_its_redis_password_or_callback_key(tmp_path: Path, corpus: Corpus) -> None:
    from scripts.drill_faults import RedisProcess

    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", REDIS_PASSWORD)
        url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(url)
        key_file = tmp_path / "callback.key"
        key_file.write_text(CALLBACK_KEY + "\n")
        root = tmp_path / "uploads"
        root.mkdir()
        env = {**os.environ, "PHOTOSENTRY_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "ignore"}
        enqueue_scan(client, source=corpus.clean["coffee"].read_bytes(), upload_id="s-1",
                     callback_url="http://127.0.0.1:9/hook")  # refused: logged
        enqueue_scan(client, source=corpus.hostile["unreadable"].read_bytes(), upload_id="s-2",
                     callback_url="http://localhost.invalid/hook")
        enqueue_scan(client, source="../escape.jpg", upload_id="s-3")
        outputs = []
        for fmt in ("json", "text"):
            done = subprocess.run([PHOTOSENTRY, "-v", "worker", "--burst", "--redis-url", url, "--source-root",
                                   str(root), "--callback-key-file", str(key_file), "--threads", "1",
                                   "--log-format", fmt], env=env, capture_output=True, timeout=120)
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, outputs[-1].decode()[-2000:]
        wrong = subprocess.run([PHOTOSENTRY, "worker", "--burst", "--redis-url",
                                f"redis://:{REDIS_PASSWORD}x@127.0.0.1:{server.port}/0"], env=env,
                               capture_output=True, timeout=60)
        assert wrong.returncode != 0
        outputs.append(wrong.stdout + wrong.stderr)
        log = b"\n".join(outputs)
        assert b"callback_url refused" in log and b"s-1" in log  # it did log, and in detail
        assert REDIS_PASSWORD.encode() not in log
        assert CALLBACK_KEY.encode() not in log
        assert set(stream(client)) == {"s-1", "s-2", "s-3"}
    finally:
        server.stop()


# -- private stores --------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_stores_are_owner_only_whatever_the_umask(tmp_path: Path, corpus: Corpus, policy: Policy,
                                                  umask: int) -> None:
    old = os.umask(umask)
    try:
        home = tmp_path / "home"
        (home / "quarantine").mkdir(parents=True, mode=0o755)  # pre-existing and too open
        os.chmod(home / "quarantine", 0o755)
        applier = ActionApplier(quarantine=ContentStore(home / "quarantine"), blocked=ContentStore(home / "blocked"))
        scanner = Scanner(policy=policy, matcher=None, classifier=None)
        for i, (action, photo) in enumerate([(Action.QUARANTINE, corpus.hostile["unreadable"]),
                                             (Action.BLOCK, corpus.clean["coffee"])]):
            data = photo.read_bytes()
            verdict = scanner.failed(ReasonCode.SCAN_FAILED, "test", data=data).to_dict()
            applier.apply_record(action, verdict, data=data, upload_id=f"u-{i}")
    finally:
        os.umask(old)
    for store in ("quarantine", "blocked"):
        paths = [home / store, *(home / store).rglob("*")]
        assert len(paths) > 4
        for p in paths:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o700 if p.is_dir() else 0o600), f"{p} is {oct(mode)} under umask {oct(umask)}"


# -- ban import with hostile input -------------------------------------------------------------

GOOD_MD5 = "md5:0123456789abcdef0123456789abcdef"
HOSTILE_LISTS = {
    "huge-line.txt": b"md5:" + b"a" * (20 * 1024 * 1024) + b"\n",
    "invalid-utf8.txt": b"md5:\xff\xfe\xfa" + b"0" * 29 + b"\n",
    "utf16.txt": (GOOD_MD5 + "\n").encode("utf-16"),
    "nul.txt": b"md5:0123456789abcdef\x000123456789abcdef\n",
    "binary.bin": bytes(range(256)) * 400,
    "photo.jpg": (Path(__file__).resolve().parents[1] / "examples" / "photos" / "coffee.jpg").read_bytes(),
}


@pytest.mark.parametrize("fmt", ["auto", "plain", "csv", "jsonl", "te-pdq"])
def test_ban_import_of_hostile_files_fails_cleanly_and_imports_nothing(
    data_dir: Path, tmp_path: Path, fmt: str
) -> None:
    from click.testing import CliRunner

    from photosentry.cli import cli

    runner = CliRunner()
    for name, content in HOSTILE_LISTS.items():
        path = tmp_path / name
        path.write_bytes(content)
        done = runner.invoke(cli, ["ban", "import", str(path), "--format", fmt, "--by", "t", "--reason", "t"])
        assert done.exit_code == 1, (name, done.output[-500:], done.exception)
        assert done.exception is None or isinstance(done.exception, SystemExit), (name, done.exception)
        assert "nothing imported" in done.output and len(done.output) < 20_000, name  # no 20 MB echo
    listed = runner.invoke(cli, ["ban", "list", "--json"])
    assert listed.exit_code == 0 and listed.output.strip() == ""


def test_ban_import_skip_invalid_keeps_only_the_good_line_of_a_hostile_file(data_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from photosentry.cli import cli

    path = tmp_path / "mixed.txt"
    path.write_bytes(HOSTILE_LISTS["huge-line.txt"] + b"\xff\xfe\x00garbage\n" + GOOD_MD5.encode() + b"\n")
    done = CliRunner().invoke(cli, ["ban", "import", str(path), "--skip-invalid", "--by", "t", "--reason", "t"])
    assert done.exit_code == 0, done.output[-500:]
    listed = CliRunner().invoke(cli, ["ban", "list", "--json"])
    assert [json.loads(line)["value"] for line in listed.output.splitlines()] == [GOOD_MD5.split(":")[1]]
