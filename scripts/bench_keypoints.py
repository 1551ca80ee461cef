#!/usr/bin/env python
"""Benchmark the keypoint index (hashes/localfeatures.py ``FeatureIndex``): memory per
image ban, search time per upload, and the cost of a ban joining and leaving it, at
several bank sizes, for the working tree and a baseline revision in the same run.

Each (revision, bank size) runs in a fresh process (``git archive`` of the baseline in a
temporary folder on ``PYTHONPATH``), on one thread. An image ban is two keypoint sets
(its picture's and its mirror image's), 255 keypoints each, with random descriptors and
positions: search times and memory depend on how many descriptors there are, not on
what they show (recall is bench_copies.py's business). Per run:

- memory: the process's resident memory before and after the bans are added and the
  index is made (clusters included, waited for), per image ban; "live" after glibc has
  been asked to return freed memory (``malloc_trim``), "resident" without;
- search: the median time of 21 searches of 500 random upload keypoints;
- add / remove: one more image ban's two sets joining the index, then leaving it.

    python scripts/bench_keypoints.py                          # 40, 400 and 2,000 image bans
    python scripts/bench_keypoints.py --bans 4000 --baseline-rev 5b80fd2
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from bench_copies import ONE_THREAD, REPO, extract_revision  # noqa: E402

DEFAULT_BASELINE = "5b80fd2"


def _resident() -> tuple[int, int]:
    """(resident bytes, resident bytes after glibc returned what it could)."""
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: no trim, the two figures agree
        pass
    with open("/proc/self/statm") as f:
        return before, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(bans: int) -> dict[str, float]:
    """One measurement in this process (``--worker``), on whatever photosentry is importable."""
    import numpy as np

    from photosentry import defaults
    from photosentry.hashes.localfeatures import FeatureIndex, LocalFeatures

    rng = np.random.default_rng(0)
    n = defaults.FEATURE_COUNT - 1

    def ban_sets(i: int) -> list[tuple[str, str]]:
        return [(LocalFeatures(rng.uniform(0, 500, (n, 2)).astype(np.float32),
                               rng.integers(0, 256, (n, 32), dtype=np.uint8), size=(512, 384), flat=0.1,
                               mirrored=mirrored).encode(), f"photo{i}") for mirrored in (False, True)]

    values = [v for i in range(bans) for v in ban_sets(i)]
    extra = ban_sets(bans)
    queries = [LocalFeatures(rng.uniform(0, 384, (500, 2)).astype(np.float32),
                             rng.integers(0, 256, (500, 32), dtype=np.uint8), size=(384, 288)) for _ in range(22)]
    gc.collect()
    before = _resident()
    index = FeatureIndex()
    started = time.perf_counter()
    for entry, (value, group) in enumerate(values, start=1):
        index.add(entry, value, "banned", group)
    index.search(queries[0])
    index.wait()
    index.search(queries[0])
    build = time.perf_counter() - started
    gc.collect()
    after = _resident()
    times = []
    for q in queries[1:]:
        t = time.perf_counter()
        index.search(q)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for k, (value, group) in enumerate(extra):
        index.add(len(values) + 1 + k, value, "banned", group)
    added = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(len(extra)):
        index.remove(len(values) + 1 + k)
    removed = time.perf_counter() - t
    return {"bans": bans, "resident_kb": (after[0] - before[0]) / bans / 1024,
            "live_kb": (after[1] - before[1]) / bans / 1024, "build_s": build,
            "search_ms": statistics.median(times) * 1000, "add_ms": added * 1000, "remove_ms": removed * 1000}


def measure(root: Path, bans: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(root), **ONE_THREAD)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(bans)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"measuring {bans} image bans with {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bans", default="40,400,2000", help="image bans, comma-separated (default 40,400,2000)")
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE,
                        help=f"revision measured beside the working tree (default {DEFAULT_BASELINE}; '' for none)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker)))
        return 0
    sizes = [int(b) for b in args.bans.split(",") if b.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"this tree": REPO}
        if args.baseline_rev:
            roots = {args.baseline_rev: extract_revision(args.baseline_rev, Path(tmp) / "baseline"), **roots}
        print(f"{'revision':<12} {'image bans':>10} {'KB/ban live':>12} {'KB/ban resident':>16} {'build s':>8}"
              f" {'search ms':>10} {'add ms':>7} {'remove ms':>10}")
        for bans in sizes:
            for name, root in roots.items():
                r = measure(root, bans)
                print(f"{name:<12} {bans:>10} {r['live_kb']:>12.1f} {r['resident_kb']:>16.1f} {r['build_s']:>8.1f}"
                      f" {r['search_ms']:>10.2f} {r['add_ms']:>7.2f} {r['remove_ms']:>10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
