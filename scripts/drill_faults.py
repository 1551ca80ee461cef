#!/usr/bin/env python
"""Fault drill: uploads under SIGKILLed workers and a Redis restart; nothing may be lost.

What it does, on this machine, with nothing shared:

1. starts its own redis-server on a free port, persistence on (``appendonly yes``,
   ``appendfsync always``: every acknowledged write survives a crash);
2. writes N uploads into a private source root: clean photos (some byte-identical
   duplicates), copies of a photo it bans first (re-encoded, resized, mirrored),
   hostile files from scripts/make_hostile.py that must be refused, and jobs naming
   paths outside the root; a few go inline (bytes in the job) instead of by path;
3. runs ``photosentry worker --processes P`` (the supervisor), enqueues every
   upload, and while they are scanned SIGKILLs worker processes at random moments
   (a busy one when there is one) and SIGKILLs redis-server once, restarting it on
   the same port and files a moment later;
4. when every upload has a verdict (or the deadline passes), checks:

   - every upload has exactly one verdict on the stream (``lost``, ``duplicated``);
   - no upload that must be refused was allowed (``wrongly allowed``); an upload
     expected to be allowed may end quarantined ``scan_failed`` if its job was
     killed on every attempt (fail-closed), never blocked;
   - every quarantined or blocked upload is in its store exactly once: its bytes
     under their SHA-256, one sidecar for the upload in that store and none in the
     other, and its source file gone from the root; allowed and refused uploads left
     nothing in the stores and their files in place (``store errors``);
   - no job is left queued, started or in an intermediate list.

It prints a table and exits 1 if anything above is not 0 (or the kills/restarts did
not happen). Run from the repository root (needs redis-server on PATH):

    python scripts/drill_faults.py                       # 1000 uploads, 10 kills, 1 Redis restart
    python scripts/drill_faults.py --uploads 200 --kills 4 --processes 2 --seed 3

tests/test_drill.py runs a small version (60 uploads, 2 kills, 1 restart).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from PIL import Image  # noqa: E402
from rq import Worker  # noqa: E402

from photosentry import enqueue_scan  # noqa: E402
from photosentry.decode import decode  # noqa: E402
from photosentry.hashes.banks import EntrySource, NewEntry, open_store  # noqa: E402
from photosentry.hashes.signals import hash_image  # noqa: E402
from scripts import make_hostile  # noqa: E402
from tests.workers import start_pool, stop_pool  # noqa: E402

PHOTOS = REPO / "examples" / "photos"
CLEAN = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")
BANNED = "rocket.jpg"
ALIVE_PREFIX = "photosentry:worker:alive:"
STREAM = "photosentry:verdicts"
SETTLE_MAX_S = 30.0
"""Longest wait, once every upload has a verdict, for a killed worker's job to be recovered."""
STORES = {"quarantine": "quarantine", "block": "blocked"}


# -- a private, persistent redis-server ---------------------------------------------------


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379:  # never a developer's own Redis
            return port


class RedisProcess:
    """redis-server with AOF on (fsync always), restartable on the same port and files."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH; install Redis to run the drill")
        self.binary, self.directory = binary, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        with redis.Redis.from_url(self.url, socket_timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                time.sleep(0.05)
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    def crash(self) -> None:
        """SIGKILL: no shutdown save; only what the AOF already holds survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the uploads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    upload_id: str
    kind: str  # clean, duplicate, banned, hostile, refused
    data: bytes
    #: The job's source: a path (relative to the root, or hostile) or None for inline bytes.
    path: str | None
    #: Allowed actions; the first is the expected one, quarantine (scan_failed) is the
    #: fail-closed outcome any job killed on every attempt may end in.
    expected: tuple[str, ...]
    codes: tuple[str, ...] = ()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_uploads(n: int, rng: random.Random, root: Path, outside: Path) -> list[Upload]:
    """``n`` uploads in a fixed mix; files are written under ``root``."""
    clean_imgs = [Image.open(PHOTOS / name).convert("RGB") for name in CLEAN]
    banned_img = Image.open(PHOTOS / BANNED).convert("RGB")
    hostile = [f for f in make_hostile.build(rng.randrange(1 << 30), fuzz=0, include_large=False)
               if not f.may_allow]
    secret = outside / "secret.jpg"
    secret.write_bytes((PHOTOS / CLEAN[0]).read_bytes())
    (root / "escape.jpg").symlink_to(secret)
    uploads: list[Upload] = []
    for i in range(n):
        uid = f"drill-{i:05d}"
        roll = rng.random()
        if roll < 0.55:
            img = clean_imgs[i % len(clean_imgs)]
            w, h = img.size
            scale = rng.uniform(0.6, 1.0)
            data = _jpeg(img.resize((max(32, int(w * scale)), max(32, int(h * scale)))), rng.randint(70, 95))
            up = Upload(uid, "clean", data, f"{uid}.jpg", ("allow", "quarantine"))
        elif roll < 0.65:
            data = (PHOTOS / CLEAN[i % len(CLEAN)]).read_bytes()  # byte-identical: the verdict cache
            up = Upload(uid, "duplicate", data, f"{uid}.jpg", ("allow", "quarantine"))
        elif roll < 0.77:
            variant = rng.choice(["reencode", "resize", "mirror"])
            img = banned_img
            if variant == "resize":
                img = img.resize((img.width // 2, img.height // 2))
            elif variant == "mirror":
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            data = _jpeg(img, rng.randint(60, 95))
            up = Upload(uid, "banned", data, f"{uid}.jpg", ("block", "quarantine"))
        elif roll < 0.95:
            f = rng.choice(hostile)
            up = Upload(uid, "hostile", f.data, f"{uid}-{f.name}", ("quarantine", "block"), tuple(f.codes))
        else:
            path = rng.choice(["../outside/secret.jpg", str(secret), "escape.jpg", "missing.jpg"])
            up = Upload(uid, "refused", b"", path, ("quarantine",), ("source_refused",))
        if up.kind != "refused" and rng.random() < 0.15:
            up = Upload(up.upload_id, up.kind, up.data, None, up.expected, up.codes)  # inline bytes
        if up.path is not None and up.kind != "refused":
            (root / up.path).write_bytes(up.data)
        uploads.append(up)
    return uploads


def ban(client: redis.Redis, photo: Path) -> None:
    data = photo.read_bytes()
    image = decode(data)
    hashes = hash_image(data, image.frames, image.frame_indices)
    values = {**hashes.exact(), **{h.algorithm: h.value for f in hashes.frames for h in f.hashes}}
    open_store(redis=client).add([NewEntry(a, v, "banned", label=photo.name, source=EntrySource.IMAGE)
                                  for a, v in values.items()], actor="drill", reason="fault drill")


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Report:
    uploads: int = 0
    kills: int = 0
    restarts: int = 0
    verdicts: int = 0
    lost: int = 0
    duplicated: int = 0
    wrongly_allowed: int = 0
    store_errors: int = 0
    leftover_jobs: int = 0
    failed_closed: int = 0
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.wrongly_allowed or self.store_errors or self.leftover_jobs)

    def table(self) -> str:
        rows = [("uploads", self.uploads), ("kills", self.kills), ("restarts", self.restarts),
                ("verdicts", self.verdicts), ("lost", self.lost), ("duplicated", self.duplicated),
                ("wrongly allowed", self.wrongly_allowed), ("store errors", self.store_errors),
                ("jobs left over", self.leftover_jobs),
                ("quarantined scan_failed (fail-closed)", self.failed_closed),
                ("seconds", f"{self.elapsed_s:.1f}")]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'':<{width}}  value", f"{'-' * width}  -----"]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _progress(client: redis.Redis) -> int | None:
    try:
        return int(client.xlen(STREAM))
    except redis.RedisError:
        return None  # Redis is down (being restarted)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a killed worker stays a zombie until the supervisor reaps it


def _kill_a_worker(client: redis.Redis, rng: random.Random, killed: set[int]) -> str | None:
    """SIGKILL one live worker process, a busy one when there is one; returns what was killed."""
    try:
        workers = Worker.all(connection=client)
        busy = [w for w in workers if w.get_current_job_id()]
        pids = {}
        for key in client.scan_iter(match=ALIVE_PREFIX + "*"):
            pid = client.get(key)
            if pid is not None:
                pids[key.decode()[len(ALIVE_PREFIX):]] = int(pid)
    except redis.RedisError:
        return None
    pids = {name: pid for name, pid in pids.items() if pid not in killed and _alive(pid)}
    candidates = [w.name for w in busy if w.name in pids] or sorted(pids)
    if not candidates:
        return None
    name = rng.choice(candidates)
    try:
        os.kill(pids[name], signal.SIGKILL)
    except ProcessLookupError:
        return None
    killed.add(pids[name])
    return f"{name} (pid {pids[name]}{', busy' if any(w.name == name for w in busy) else ''})"


def run_drill(*, uploads: int = 1000, kills: int = 10, redis_restarts: int = 1, processes: int = 2,
              seed: int = 1, deadline_s: float = 1800.0, redis_down_s: float = 1.0, job_timeout: int = 30,
              workdir: Path | None = None, verbose: bool = False) -> Report:
    """Run the drill; returns the report (see the module docstring for every check)."""
    rng = random.Random(seed)
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="photosentry-drill-")
        workdir = Path(own_tmp.name)
    report = Report(uploads=uploads)
    root, outside, home = workdir / "uploads", workdir / "outside", workdir / "home"
    for d in (root, outside):
        d.mkdir(parents=True)
    server = RedisProcess(workdir / "redis")
    server.start()
    pool: subprocess.Popen[bytes] | None = None
    log_path = workdir / "worker.log"

    def say(msg: str) -> None:
        if verbose:
            print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)

    started = time.monotonic()
    try:
        client = _client(server.url)
        ban(client, PHOTOS / BANNED)
        plan = make_uploads(uploads, rng, root, outside)
        env = {**os.environ, "PHOTOSENTRY_REDIS_URL": server.url, "PHOTOSENTRY_HOME": str(home),
               "PHOTOSENTRY_SOURCE_ROOTS": str(root), "PYTHONWARNINGS": "ignore"}
        env.pop("PHOTOSENTRY_CALLBACK_KEY", None)
        pool = start_pool(env, log_path, "--processes", str(processes), "--threads", "1", "--log-format", "text",
                          "--job-timeout", str(job_timeout), cwd=workdir)
        for up in plan:
            source: str | bytes = up.data if up.path is None else up.path
            enqueue_scan(client, source=source, upload_id=up.upload_id)
        say(f"{uploads} uploads enqueued")

        # Fault schedule, by progress (verdicts recorded) so it scales with any machine's speed.
        events = [(rng.uniform(0.05, 0.9), "kill") for _ in range(kills)]
        events += [(rng.uniform(0.3, 0.6), "restart") for _ in range(redis_restarts)]
        events.sort()
        done_at = None
        killed_pids: set[int] = set()
        while time.monotonic() - started < deadline_s:
            progress = _progress(client)
            if progress is not None:
                while events and progress >= events[0][0] * uploads:
                    _, what = events.pop(0)
                    if what == "kill":
                        killed = None
                        for _ in range(100):  # wait for a registered worker (they may be restarting)
                            killed = _kill_a_worker(client, rng, killed_pids)
                            if killed:
                                break
                            time.sleep(0.1)
                        if killed:
                            report.kills += 1
                            say(f"SIGKILL worker {killed} at {progress} verdicts")
                    else:
                        say(f"SIGKILL redis-server at {progress} verdicts")
                        server.crash()
                        time.sleep(redis_down_s)
                        server.start()
                        report.restarts += 1
                        say("redis-server restarted")
                        break
                if progress >= uploads and not events:
                    done_at = done_at or time.monotonic()
                    # Settle: a late duplicate would show now, and a dead worker's job whose
                    # verdict is already recorded is only replayed once its liveness key
                    # expires, so wait for the queues to drain (bounded) before checking.
                    settled = time.monotonic() - done_at
                    if settled > 2.0 and (settled > SETTLE_MAX_S or _drained(client)):
                        break
            if pool.poll() is not None:
                report.problems.append(f"the worker pool exited with status {pool.returncode}")
                break
            time.sleep(0.05)
        report.elapsed_s = time.monotonic() - started
        check(client, plan, root, home, report)
    finally:
        if pool is not None:
            stop_pool(pool, timeout=60)
        server.stop()
        if not report.ok or report.problems:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            report.problems.append("worker log ends:\n" + tail)
        if own_tmp is not None:
            own_tmp.cleanup()
    return report


def _sidecar_name(upload_id: str) -> str:
    # ContentStore's sidecar key: a hash of the upload id, never the id itself.
    return hashlib.sha256(upload_id.encode()).hexdigest()[:32] + ".json"


def check(client: redis.Redis, plan: list[Upload], root: Path, home: Path, report: Report) -> None:
    entries: dict[str, list[dict]] = {}
    for _, fields in client.xrange(STREAM):
        if fields.get(b"event", b"verdict") != b"verdict":
            continue
        entries.setdefault(fields[b"upload_id"].decode(), []).append(json.loads(fields[b"verdict"]))
    report.verdicts = sum(len(v) for v in entries.values())
    sidecars = Counter()
    for store in STORES.values():
        for p in (home / store).glob("*/*/verdicts/*.json"):
            sidecars[(store, p.name)] += 1
    for up in plan:
        got = entries.get(up.upload_id, [])
        if not got:
            report.lost += 1
            report.problems.append(f"{up.upload_id} ({up.kind}): no verdict")
            continue
        if len(got) > 1:
            report.duplicated += len(got) - 1
            report.problems.append(f"{up.upload_id} ({up.kind}): {len(got)} verdicts")
        verdict = got[0]
        action = verdict["action"]
        codes = [r["code"] for r in verdict["reasons"]]
        if "scan_failed" in codes:
            report.failed_closed += 1
        if action not in up.expected or (action == "quarantine" and up.expected[0] != "quarantine"
                                         and "scan_failed" not in codes):
            if action == "allow":
                report.wrongly_allowed += 1
            report.problems.append(f"{up.upload_id} ({up.kind}): {action} {codes}, expected {up.expected}")
        elif up.codes and action != "allow" and not set(codes) & set(up.codes) and "scan_failed" not in codes:
            report.problems.append(f"{up.upload_id} ({up.kind}): codes {codes}, expected one of {up.codes}")
        report.store_errors += _check_store(up, verdict, root, home, sidecars, report)
    try:
        left = _pending_jobs(client)
    except redis.RedisError as exc:
        left = -1
        report.problems.append(f"could not read the queues: {exc}")
    report.leftover_jobs = left


def _drained(client: redis.Redis) -> bool:
    try:
        return _pending_jobs(client) == 0
    except redis.RedisError:
        return False


def _pending_jobs(client: redis.Redis) -> int:
    """Jobs still queued, taken or running: 0 once every upload's job has ended."""
    left = sum(client.llen(k) for k in ("rq:queue:uploads", "rq:queue:bulk", "rq:queue:uploads:intermediate",
                                         "rq:queue:bulk:intermediate"))
    return left + sum(client.zcard(k) for k in ("rq:wip:uploads", "rq:wip:bulk"))


def _check_store(up: Upload, verdict: dict, root: Path, home: Path, sidecars: Counter, report: Report) -> int:
    action = verdict["action"]
    name = _sidecar_name(up.upload_id)
    in_stores = {store: sidecars[(store, name)] for store in STORES.values()}
    errors: list[str] = []
    source = root / up.path if up.path is not None and up.kind != "refused" else None
    if action == "allow" or verdict.get("hashes") is None:
        if any(in_stores.values()):
            errors.append(f"stored although {action} / not hashed: {in_stores}")
        if source is not None and not source.exists():
            errors.append("source file gone although nothing was stored")
    else:
        store = STORES[action]
        sha = verdict["hashes"]["sha256"]
        content = home / store / sha[:2] / sha / "content"
        if in_stores[store] != 1:
            errors.append(f"{in_stores[store]} sidecars in {store}/, expected 1")
        other = [s for s in STORES.values() if s != store and in_stores[s]]
        if other:
            errors.append(f"also in {other}")
        if not content.exists() or content.read_bytes() != up.data:
            errors.append(f"{store}/{sha[:12]}.../content missing or not the uploaded bytes")
        if source is not None and source.exists():
            errors.append("source file still in the upload root after it was stored")
    for e in errors:
        report.problems.append(f"{up.upload_id} ({up.kind}, {action}): {e}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python scripts/drill_faults.py --uploads 200 --kills 4 --seed 3",
    )
    parser.add_argument("--uploads", type=int, default=1000, help="Uploads to enqueue (default 1000).")
    parser.add_argument("--kills", type=int, default=10, help="Worker processes to SIGKILL (default 10).")
    parser.add_argument("--redis-restarts", type=int, default=1, help="Times to crash and restart Redis (default 1).")
    parser.add_argument("--processes", type=int, default=2, help="Worker processes (default 2).")
    parser.add_argument("--seed", type=int, default=1, help="Random seed for the uploads and the fault times.")
    parser.add_argument("--deadline", type=float, default=1800.0, help="Give up after this many seconds.")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="Work in DIR and keep it (Redis files, stores, worker.log) for inspection.")
    parser.add_argument("--quiet", action="store_true", help="Only print the table.")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
    report = run_drill(uploads=args.uploads, kills=args.kills, redis_restarts=args.redis_restarts,
                       processes=args.processes, seed=args.seed, deadline_s=args.deadline, workdir=args.keep,
                       verbose=not args.quiet)
    print()
    print(report.table())
    for problem in report.problems[:40]:
        print("  -", problem)
    fine = report.ok and not report.problems and report.kills == args.kills and report.restarts == args.redis_restarts
    print("\nOK: nothing lost, nothing duplicated, nothing wrongly allowed" if fine else "\nFAILED")
    return 0 if fine else 1


if __name__ == "__main__":
    sys.exit(main())
