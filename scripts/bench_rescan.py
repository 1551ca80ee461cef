#!/usr/bin/env python
"""Benchmark `photosentry rescan`: photos per second, --local with 1 and 2 processes and
--queue with 2 worker processes, against the scan pipeline in-process on one core.

On the same photos (the test corpus copied ``--rounds`` times into a fresh tree per
mode, so every mode moves its own blocked and quarantined copies), it measures:

1. the scan pipeline in-process, one core, a one-thread model (the baseline, as in
   scripts/bench_worker.py);
2. `photosentry rescan TREE --local -n 1` and `-n 2` (one model thread per process,
   the default batch, ``defaults.SCAN_BATCH_CPU`` frames per model call on CPU), and
   `-n 1 --batch B` for each B of ``--batches`` (default 1: one photo per model call,
   as before batching; repeat a size to see the run-to-run noise);
3. `photosentry rescan TREE --queue` with `photosentry worker -n 2 --threads 1` already
   running on a private redis-server: chunked enqueue on the bulk queue, scan, record,
   move, and the rescan following the verdict stream.

Every rescan runs with ``--force`` so no verdict comes from the cache (the corpus
repeats the same bytes every round). The bank holds the banned photo's hashes, so its
copies are blocked and skip the classifier, as in production. "photos/s" is the
rescan's own count over its own clock (after its processes loaded the model; the
queue workers were warm); "wall s" is the whole command, start-up included.

Needs the test extra (scikit-image for the corpus) and `redis-server` on PATH. From
the repository root:

    python scripts/bench_rescan.py
    python scripts/bench_rescan.py --rounds 8
    python scripts/bench_rescan.py --batches 1,8,16,32

Nothing here asserts a time: the numbers are for reading and vary by machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import redis  # noqa: E402

from bench_worker import ban_photo, copy_rounds, corpus_and_baseline, print_table  # noqa: E402
from photosentry.hashes.banks import open_store  # noqa: E402
from tests.redis_server import running_redis_server  # noqa: E402
from tests.workers import PHOTOSENTRY, log_tail, pool_started, start_pool, stop_pool  # noqa: E402

_SUMMARY = re.compile(r"(\d+) photos? reported in ([\d.]+) s")


def run_rescan(env: dict[str, str], tree: Path, report: Path, *extra: str) -> tuple[int, float, float]:
    """(photos, seconds on the rescan's clock, wall seconds)."""
    cmd = [PHOTOSENTRY, "rescan", str(tree), "--report", str(report), "--force", "--no-progress", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"rescan failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    match = _SUMMARY.search(done.stdout)
    if match is None:
        raise SystemExit(f"no summary in the rescan's output:\n{done.stdout}")
    return int(match.group(1)), float(match.group(2)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Copies of every corpus file (default 5).")
    parser.add_argument("--batches", default="1", metavar="B,B,...",
                        help="Also run --local -n 1 --batch B for each (default 1: one photo per model call).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-rescan-") as tmp_name:
        tmp = Path(tmp_name)
        corpus, photos, rows = corpus_and_baseline(tmp, args.rounds)

        with running_redis_server(tmp / "redis") as url:
            client = redis.Redis.from_url(url)
            ban_photo(open_store(redis=client), corpus.banned)
            root = tmp / "uploads"
            root.mkdir()
            env = {**os.environ, "PHOTOSENTRY_REDIS_URL": url, "PHOTOSENTRY_HOME": str(tmp / "home"),
                   "PHOTOSENTRY_SOURCE_ROOTS": str(root)}
            for processes in (1, 2):
                tree = root / f"local-{processes}"
                copy_rounds(photos, tree, args.rounds)
                n, secs, wall = run_rescan(env, tree, tmp / f"local-{processes}.jsonl", "--local",
                                           "-n", str(processes))
                rows.append((f"rescan --local -n {processes}", n, secs, wall))
            for i, batch in enumerate(int(b) for b in args.batches.split(",") if b):
                tree = root / f"local-batch-{i}-{batch}"  # a size may be repeated, to see the noise
                copy_rounds(photos, tree, args.rounds)
                n, secs, wall = run_rescan(env, tree, tmp / f"local-batch-{i}-{batch}.jsonl", "--local", "-n", "1",
                                           "--batch", str(batch))
                rows.append((f"rescan --local -n 1 --batch {batch}", n, secs, wall))

            tree = root / "queue"
            copy_rounds(photos, tree, args.rounds)
            log = tmp / "worker.log"
            workers = start_pool(env, log, "-n", "2", "--threads", "1", "--log-format", "text")
            try:
                if not pool_started(workers, client, 2, timeout=120):
                    raise SystemExit(f"workers did not start:\n{log_tail(log)}")
                n, secs, wall = run_rescan(env, tree, tmp / "queue.jsonl", "--queue")
                rows.append(("rescan --queue, 2 worker processes", n, secs, wall))
            finally:
                stop_pool(workers, timeout=60)
                client.close()

    print_table(rows, len(photos), args.rounds, unit="photos", mode_width=46,
                note="busy s: the rescan's own clock (after model loading; queue workers were already warm) or"
                     " the timed loop (in-process); wall s is the whole command.")


if __name__ == "__main__":
    main()
