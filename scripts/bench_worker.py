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

Needs the test extra (scikit-image for the corpus) and `redis-server` on PATH.
Run it from the repository root:

    python scripts/bench_worker.py
    python scripts/bench_worker.py --rounds 8

Nothing here asserts a time: the numbers are for reading and vary by machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Times every photo is uploaded (default 5).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp_name:
        tmp = Path(tmp_name)
        corpus, photos, rows = corpus_and_baseline(tmp, args.rounds)
        with running_redis_server(tmp / "redis") as url:
            for processes in (1, 2):
                root = tmp / f"uploads-{processes}"
                files = copy_rounds(photos, root, args.rounds)
                n, busy, wall = bench_workers(url, files, root, tmp / f"home-{processes}", processes,
                                              cache=False, banned=corpus.banned)
                rows.append((f"worker, {processes} process{'es' if processes > 1 else ''}, --threads 1, no cache",
                             n, busy, wall))
            root = tmp / "uploads-dup"
            files = copy_rounds(photos, root, args.rounds)
            n, busy, wall = bench_workers(url, files, root, tmp / "home-dup", 2, cache=True, banned=corpus.banned)
            rows.append(("worker, 2 processes, duplicates (cache on)", n, busy, wall))

    print_table(rows, len(photos), args.rounds, unit="uploads", mode_width=52,
                note="busy s: first job start to last job end (workers) or the timed loop (in-process);"
                     " wall s adds process start-up and model loading.")


if __name__ == "__main__":
    main()
