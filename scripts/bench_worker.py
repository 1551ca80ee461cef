#!/usr/bin/env python
"""Benchmark the queue workers: uploads per second through 1 and 2 worker processes.

On the same photos, it measures:

1. the scan pipeline in-process, pinned to one core with a one-thread model - what
   `photosentry scan --threads 1` does once it has started (the baseline);
2. `photosentry worker --burst --threads 1 --no-cache` with 1 and with 2 processes,
   through a private redis-server: enqueue, dequeue, fetch from a source root, scan,
   record on the stream, act (blocked and quarantined photos are moved);
3. the same with the verdict cache on and every photo uploaded again (duplicates).

Worker throughput is counted from the first job's start to the last job's end (RQ's
own timestamps), so model loading at start-up is left out, as it is for the
baseline; the wall time including start-up is printed too. The bank holds the
hashes of the corpus's banned photo in every mode, so its copies are blocked and
skip the classifier, as in production.

With ``--index-entries N`` (repeatable) it measures what a bank of N PDQ entries costs
a host, the shared index file (``bank-index/``) against today's private index per
process (``PHOTOSENTRY_SHARED_INDEX=0``, the baseline) in the same run:

4. `photosentry worker --processes P` (P = 1 and 4, not burst) on a shared Redis bank of
   N entries (with its snapshot on the host, as after `ban snapshot` or any earlier
   start): the time from starting the pool to the first verdict, until every process
   has given one, and the PSS of the whole pool (supervisor and workers, from
   /proc/<pid>/smaps_rollup) once every process is warm. Three host states: the
   baseline; the shared index on a host that has only the snapshot (the first start:
   one process builds the file and compiles the kernels, the others wait and map it);
   the shared index on a host that has them (every later start);
5. a cold `photosentry scan one.jpg` (a new process) with an N-entry SQLite bank in its
   data directory (imported and snapshotted as `ban import` does), for the same states.

``--synthetic`` puts the N entries only in the snapshots (random codes, ids after the
banks' own), not in Redis and SQLite: for sizes whose Redis bank would not fit the
host (10M PDQ entries take about 8 GB of Redis). Once a snapshot or index file exists,
the workers never read the entries from the store, so memory and start-up are the same.

Needs the test extra (scikit-image for the corpus) and `redis-server` on PATH.
Run it from the repository root:

    python scripts/bench_worker.py
    python scripts/bench_worker.py --rounds 8
    python scripts/bench_worker.py --skip-throughput --index-entries 1000000
    python scripts/bench_worker.py --skip-throughput --index-entries 10000000 --synthetic

Nothing here asserts a time: the numbers are for reading and vary by machine.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from rq.job import Job, JobStatus  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from photosentry import enqueue_scan  # noqa: E402
from photosentry.decode import decode  # noqa: E402
from photosentry.hashes.banks import BankStore, EntrySource, NewEntry, open_store  # noqa: E402
from photosentry.hashes.signals import hash_image  # noqa: E402
from tests import corpus as corpus_mod  # noqa: E402
from tests.redis_server import running_redis_server  # noqa: E402

PHOTOSENTRY = str(Path(sys.executable).with_name("photosentry"))
#: A table row: mode, photos or uploads, busy seconds, wall seconds (None for the in-process baseline).
Row = tuple[str, int, float, float | None]


def ban_photo(store: BankStore, path: Path) -> None:
    data = path.read_bytes()
    image = decode(data)
    hashes = hash_image(data, image.frames, image.frame_indices)
    values = {**hashes.exact(), **{h.algorithm: h.value for f in hashes.frames for h in f.hashes}}
    entries = [NewEntry(a, v, "banned", label=path.name, source=EntrySource.IMAGE) for a, v in values.items()]
    store.add(entries, actor="bench", reason="benchmark")


def photos_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def copy_rounds(photos: list[Path], dest: Path, rounds: int) -> list[Path]:
    """One copy of every photo per round, so moved (blocked/quarantined) files never run out."""
    out = []
    for r in range(rounds):
        folder = dest / f"round-{r}"
        folder.mkdir(parents=True)
        for i, photo in enumerate(photos):
            target = folder / f"{i:03d}-{photo.name}"
            shutil.copyfile(photo, target)
            out.append(target)
    return out


def bench_in_process(photos: list[Path], rounds: int, home: Path, banned: Path) -> tuple[int, float]:
    """The scan pipeline on one core: Scanner.scan_path over every photo, ``rounds`` times,
    with the scanner a worker builds (the same assembly, one model thread)."""
    from photosentry.worker.assembly import ScannerSpec, build_scanner

    home.mkdir(parents=True)
    store = open_store(sqlite=home / "banks.sqlite3")
    ban_photo(store, banned)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        scanner = build_scanner(ScannerSpec(data_dir=str(home), threads=1), store)
        for photo in photos:  # one warm round, as a long-running process would be
            scanner.scan_path(photo)
        start = time.perf_counter()
        for _ in range(rounds):
            for photo in photos:
                scanner.scan_path(photo)
        elapsed = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, affinity)
        store.close()
    return rounds * len(photos), elapsed


def bench_workers(url: str, files: list[Path], root: Path, home: Path, processes: int, *,
                  cache: bool, banned: Path) -> tuple[int, float, float]:
    """Enqueue every file, then drain with `photosentry worker --burst`; (jobs, busy s, wall s)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    ban_photo(open_store(redis=client), banned)
    jobs = [enqueue_scan(client, source=str(f), upload_id=f"bench-{i}") for i, f in enumerate(files)]
    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": url, "PHOTOSENTRY_HOME": str(home),
           "PHOTOSENTRY_SOURCE_ROOTS": str(root)}
    cmd = [PHOTOSENTRY, "worker", "--burst", "--processes", str(processes), "--threads", "1", "--log-format", "text"]
    if not cache:
        cmd.append("--no-cache")
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}):\n{done.stderr.decode()[-3000:]}")
    first: datetime | None = None
    last: datetime | None = None
    for job_id in jobs:
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        if job.get_status() != JobStatus.FINISHED:
            raise SystemExit(f"job {job_id} ended {job.get_status()}")
        result = job.latest_result()
        first = min(first, job.started_at) if first else job.started_at
        end = result.created_at if result is not None else job.ended_at
        last = max(last, end) if last else end
    assert first is not None and last is not None
    client.close()
    return len(jobs), (last - first).total_seconds(), wall


def corpus_and_baseline(tmp: Path, rounds: int) -> tuple[corpus_mod.Corpus, list[Path], list[Row]]:
    """The test corpus built under ``tmp``, its files, and the table's first row: the baseline."""
    corpus = corpus_mod.build(tmp / "corpus")
    photos = photos_of(corpus.root)
    n, secs = bench_in_process(photos, rounds, tmp / "scan-home", corpus.banned)
    return corpus, photos, [("scan pipeline in-process, 1 core, 1 thread", n, secs, None)]


def print_table(rows: list[Row], files: int, rounds: int, *, unit: str,
                mode_width: int, note: str) -> None:
    """Each mode's count, busy seconds, rate, rate over the first row's (the baseline) and wall seconds."""
    rate_width = len(unit) + 4  # "uploads/s" and two spaces
    base = rows[0][1] / rows[0][2]
    print(f"\n{files} corpus files x {rounds} rounds; {os.cpu_count()} CPUs"
          f" ({platform.processor() or platform.machine()}), Python {platform.python_version()}\n")
    header = (f"{'mode':<{mode_width}}{unit:>8}{'busy s':>9}{unit + '/s':>{rate_width}}{'vs scan':>9}"
              f"{'wall s':>9}")
    print(header)
    print("-" * len(header))
    for name, n, secs, wall in rows:
        rate = n / secs
        wall_text = f"{wall:9.2f}" if wall is not None else f"{'-':>9}"
        print(f"{name:<{mode_width}}{n:>8}{secs:>9.2f}{rate:>{rate_width}.1f}{rate / base:>8.2f}x{wall_text}")
    print(f"\n{note}")


# -- the index a host holds (issue #19) ---------------------------------------------------

#: (label, environment, whether the host keeps what the previous run of the state built).
STATES = (
    ("private index (baseline)", {"PHOTOSENTRY_SHARED_INDEX": "0"}),
    ("shared index, first start", {}),
    ("shared index, later start", {}),
)


def fill_pdq(store: BankStore, n: int, seed: int) -> None:
    """``n`` random PDQ entries through the store's own import (what `ban import` does)."""
    import numpy as np

    from photosentry.hashes.algorithms import Algorithm
    from photosentry.hashes.index import codes_to_hex

    rng = np.random.default_rng(seed)
    chunk = 100_000
    for start in range(0, n, chunk):
        codes = rng.integers(0, 2**64 - 1, size=(min(chunk, n - start), 4), dtype=np.uint64, endpoint=True)
        store.import_entries((NewEntry(Algorithm.PDQ, v, "imported") for v in codes_to_hex(codes)),
                             actor="bench", reason="benchmark")


def write_bank_snapshot(store: BankStore, home: Path, synthetic: int, seed: int) -> None:
    """The store's snapshot in ``home`` (as `ban snapshot` writes it), with ``synthetic``
    random PDQ entries added to it alone (ids after the store's own)."""
    import numpy as np

    from photosentry.hashes.algorithms import Algorithm
    from photosentry.hashes.snapshot import latest_snapshot, save_snapshot, snapshot_dir, write_snapshot

    folder = snapshot_dir(home, store)
    if not synthetic:
        write_snapshot(store, folder)
        return
    # The store's own entries read into a scratch folder first: a second snapshot of the
    # same version in the real folder would be discarded in favour of the first.
    snap = write_snapshot(store, home / "scratch-snapshot")
    columns = {a: snap.columns(a) for a in Algorithm}
    ids, codes, banks = columns[Algorithm.PDQ]
    first = 1 + max((int(c[0].max()) for c in columns.values() if len(c[0])), default=0)
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, 2**64 - 1, size=(synthetic, 4), dtype=np.uint64, endpoint=True)
    names = list(snap.banks) + (["imported"] if "imported" not in snap.banks else [])
    columns[Algorithm.PDQ] = (np.concatenate([ids, np.arange(first, first + synthetic, dtype=np.int64)]),
                              np.concatenate([codes, extra]),
                              np.concatenate([banks, np.full(synthetic, names.index("imported"), np.uint16)]))
    save_snapshot(folder, store_id=store.store_id(), version=snap.version, banks=names, columns=columns, keep=1)
    shutil.rmtree(home / "scratch-snapshot")
    written = latest_snapshot(folder, max_version=store.version(), store_id=store.store_id())
    assert written is not None and written.counts["pdq"] == len(columns[Algorithm.PDQ][0])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pss_mb(pids: list[int], *, suffix: str | None = None) -> float:
    """PSS of ``pids`` in MB; with ``suffix``, only of the mapped files whose name ends so."""
    total = 0
    for pid in pids:
        try:
            if suffix is None:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                continue
            counting = False
            for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                    counting = len(head) >= 6 and head[-1].endswith(suffix)
                elif counting and line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run_pool(url: str, home: Path, root: Path, original: Path, processes: int, env_extra: dict[str, str],
             settle_s: float) -> tuple[float, float, float, float]:
    """Start `photosentry worker --processes N` with jobs waiting (uploads of a copy of
    ``original`` in ``root``); returns (seconds to the first verdict, seconds until every
    process gave one, PSS of the pool in MB once warm, of which the shared index file)."""
    from rq import Queue, Worker

    root.mkdir(parents=True, exist_ok=True)
    photo = root / original.name
    shutil.copyfile(original, photo)

    client = redis.Redis.from_url(url)
    queue = Queue("uploads", connection=client, serializer=JSONSerializer)
    queue.empty()
    client.delete("photosentry:verdicts")
    sent = 0

    def feed() -> None:  # keep a short queue, so a process that starts late still gets jobs
        nonlocal sent
        if not photo.exists():  # a job the pool's shutdown cut off is quarantined, its file moved
            shutil.copyfile(original, photo)
        while queue.count < 4 * processes:
            enqueue_scan(client, source=str(photo), upload_id=f"idx-{time.time_ns()}-{sent}")
            sent += 1

    feed()
    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": url, "PHOTOSENTRY_HOME": str(home),
           "PHOTOSENTRY_SOURCE_ROOTS": str(root), **env_extra}
    cmd = [PHOTOSENTRY, "worker", "--processes", str(processes), "--threads", "1", "--no-cache",
           "--log-format", "text"]
    log = home / "worker.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        pool = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    first = warm = None
    try:
        while warm is None:
            if pool.poll() is not None:
                raise SystemExit(f"worker pool exited {pool.returncode}:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - started > 900:
                raise SystemExit("worker pool not warm after 900 s")
            feed()
            now = time.perf_counter() - started
            if first is None and client.xlen("photosentry:verdicts"):
                first = now
            workers = Worker.all(connection=client)
            if len(workers) == processes and all(w.successful_job_count for w in workers):
                warm = now
            time.sleep(0.02)
        # Settled: what a warm pool holds once a first start's background calibration
        # (a rebuild of the file on the timed layouts) is done and swapped in.
        while not index_settled(home):
            if time.perf_counter() - started > 1800:
                raise SystemExit("the shared index did not settle in 1800 s")
            feed()
            time.sleep(0.2)
        deadline = time.perf_counter() + settle_s
        while time.perf_counter() < deadline:
            feed()
            time.sleep(0.1)
        pids = descendants(pool.pid)
        memory, index_file = pss_mb(pids), pss_mb(pids, suffix=".idx")
        actions = Counter(f[b"action"].decode() for _, f in client.xrange("photosentry:verdicts"))
        print(f"    verdicts: {dict(actions)}; per process PSS MB: "
              + ", ".join(f"{pss_mb([p]):.0f}" for p in pids), flush=True)
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(120)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()
        queue.empty()
        client.close()
    assert first is not None
    return first, warm, memory, index_file


def index_settled(home: Path) -> bool:
    """No shared index file of ``home`` waits for a calibration, and nobody is building one."""
    import fcntl

    from photosentry.hashes.hostindex import HostIndex
    from photosentry.hashes.indexfile import read_meta
    from photosentry.hashes.mih.calibrate import AWAITING

    root = home / "bank-index"
    for folder in root.glob("*/build.lock"):
        fd = os.open(folder, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        files = HostIndex(root, folder.parent.name).files()
        if files and any(info.get("planned") == AWAITING for info in read_meta(files[0])[1]["indexes"].values()):
            return False
    return True


def cold_scan_s(home: Path, photo: Path, env_extra: dict[str, str]) -> float:
    """Wall seconds of `photosentry scan PHOTO` in a new process."""
    env = {**os.environ, "PHOTOSENTRY_HOME": str(home), **env_extra}
    started = time.perf_counter()
    done = subprocess.run([PHOTOSENTRY, "scan", str(photo)], env=env, capture_output=True, timeout=900)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"scan failed ({done.returncode}):\n{done.stderr.decode()[-3000:]}")
    return elapsed


def fresh_home(master: Path, home: Path) -> Path:
    """A data directory with the master's bank and snapshots, and no shared index."""
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(master, home, ignore=shutil.ignore_patterns("bank-index", "worker.log"))
    return home


def bench_index(tmp: Path, entries: int, *, synthetic: bool, scans: int, settle_s: float,
                process_counts: tuple[int, ...]) -> None:
    corpus = corpus_mod.build(tmp / "corpus")
    photo = corpus.clean["coffee"]
    root = tmp / "uploads"
    size = f"{entries:,} PDQ entries" + (" (synthetic: in the snapshots only)" if synthetic else "")
    print(f"\n# {size}", flush=True)

    # The worker pool: a shared Redis bank.
    pool_rows = []
    with running_redis_server(tmp / f"redis-{entries}") as url:
        client = redis.Redis.from_url(url)
        client.flushdb()
        store = open_store(redis=client)
        t = time.perf_counter()
        ban_photo(store, corpus.banned)
        if not synthetic:
            fill_pdq(store, entries, seed=1)
        master = tmp / f"pool-master-{entries}"
        master.mkdir()
        write_bank_snapshot(store, master, entries if synthetic else 0, seed=1)
        print(f"bank filled and snapshotted in {time.perf_counter() - t:.0f} s"
              f" (Redis {client.info('memory')['used_memory_human']})", flush=True)
        client.close()
        for processes in process_counts:
            home = None
            for label, env in STATES:
                if label != "shared index, later start":
                    home = fresh_home(master, tmp / f"pool-{entries}-{processes}")
                assert home is not None
                first, warm, memory, index_file = run_pool(url, home, root, photo, processes, env, settle_s)
                pool_rows.append((processes, label, first, warm, memory, index_file))
                print(f"  {processes} process(es), {label}: first verdict {first:.1f} s, all warm {warm:.1f} s,"
                      f" PSS {memory:.0f} MB (index file {index_file:.0f})", flush=True)

    # A cold `photosentry scan`: the data directory's SQLite bank.
    scan_rows = []
    master = tmp / f"scan-master-{entries}"
    with open_store(sqlite=master / "banks.sqlite3") as sqlite_store:
        ban_photo(sqlite_store, corpus.banned)
        if not synthetic:
            fill_pdq(sqlite_store, entries, seed=2)
        write_bank_snapshot(sqlite_store, master, entries if synthetic else 0, seed=2)
    home = tmp / f"scan-{entries}"
    for label, env in STATES:
        times = []
        for _ in range(scans):
            if label == "shared index, first start" or not home.exists():
                fresh_home(master, home)
            times.append(cold_scan_s(home, photo, env))
        scan_rows.append((label, times))
        print(f"  scan, {label}: " + ", ".join(f"{s:.2f}" for s in times) + " s", flush=True)

    print(f"\n{size}: worker pools (PSS summed over the supervisor and its workers, once every process"
          " has given a verdict)\n")
    header = (f"{'processes':>9}  {'index':<28}{'first verdict s':>16}{'all warm s':>12}{'PSS MB':>9}"
              f"{'vs 1 process':>14}{'index file MB':>15}")
    print(header)
    print("-" * len(header))
    one = {label: memory for processes, label, _, _, memory, _ in pool_rows if processes == 1}
    for processes, label, first, warm, memory, index_file in pool_rows:
        ratio = f"{memory / one[label]:.2f}x" if label in one else "-"
        print(f"{processes:>9}  {label:<28}{first:>16.1f}{warm:>12.1f}{memory:>9.0f}{ratio:>14}{index_file:>15.0f}")
    print("index file MB: the PSS of the mapped shared index file, summed over the pool (its pages, counted once);"
          " the rest of the PSS is each process's own: interpreter, model, kernels, delta.")
    print(f"\n{size}: cold `photosentry scan one.jpg` (a new process; median of {scans})\n")
    header = f"{'index':<28}{'median s':>10}{'runs s':>24}"
    print(header)
    print("-" * len(header))
    for label, times in scan_rows:
        print(f"{label:<28}{sorted(times)[len(times) // 2]:>10.2f}{', '.join(f'{t:.2f}' for t in times):>24}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Times every photo is uploaded (default 5).")
    parser.add_argument("--skip-throughput", action="store_true", help="Only the --index-entries part.")
    parser.add_argument("--index-entries", type=int, action="append", default=[], metavar="N",
                        help="Measure the index a host holds with an N-entry PDQ bank (repeatable).")
    parser.add_argument("--synthetic", action="store_true",
                        help="Put the --index-entries entries in the snapshots only (see above).")
    parser.add_argument("--processes", default="1,4", help="Worker pool sizes for --index-entries (default 1,4).")
    parser.add_argument("--scans", type=int, default=3, help="Cold scans per host state (default 3).")
    parser.add_argument("--settle", type=float, default=8.0,
                        help="Seconds a warm pool keeps working before its PSS is read (default 8).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_throughput:
            throughput(tmp, args.rounds)
        for n in args.index_entries:
            bench_index(tmp / f"index-{n}", n, synthetic=args.synthetic, scans=args.scans, settle_s=args.settle,
                        process_counts=tuple(int(p) for p in args.processes.split(",")))


def throughput(tmp: Path, rounds: int) -> None:
    corpus, photos, rows = corpus_and_baseline(tmp, rounds)
    with running_redis_server(tmp / "redis") as url:
        for processes in (1, 2):
            root = tmp / f"uploads-{processes}"
            files = copy_rounds(photos, root, rounds)
            n, busy, wall = bench_workers(url, files, root, tmp / f"home-{processes}", processes,
                                          cache=False, banned=corpus.banned)
            rows.append((f"worker, {processes} process{'es' if processes > 1 else ''}, --threads 1, no cache",
                         n, busy, wall))
        root = tmp / "uploads-dup"
        files = copy_rounds(photos, root, rounds)
        n, busy, wall = bench_workers(url, files, root, tmp / "home-dup", 2, cache=True, banned=corpus.banned)
        rows.append(("worker, 2 processes, duplicates (cache on)", n, busy, wall))

    print_table(rows, len(photos), rounds, unit="uploads", mode_width=52,
                note="busy s: first job start to last job end (workers) or the timed loop (in-process);"
                     " wall s adds process start-up and model loading.")


if __name__ == "__main__":
    main()
