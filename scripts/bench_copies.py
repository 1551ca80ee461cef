#!/usr/bin/env python
"""Benchmark copy detection (issue #17): how many re-uploaded copies of banned photos
are caught, how many innocent photos are falsely matched, and what it costs per scan.

What it does, in one run:

1. takes the photo corpus (scripts/photo_corpus.py: distinct real photos from Debian
   packages and scikit-image, cached) and splits its strict photos with a seed:
   ``--banned`` photos are banned, the rest are innocent, with the corpus's looser
   photo-like pictures (screenshots, diagrams, textures) as more innocent uploads;
2. makes the copies a re-uploader makes of every banned photo (scripts/copy_kinds.py):
   the kinds caught before #17 (reencode, resize, mirror, rotate90, grayscale, tone,
   blur, stretch, watermark) and the new ones (crop_centre, crop_edge, border,
   letterbox_9x16, letterbox_1x1, caption_above, caption_below, screenshot,
   collage2/3/4 with innocent photos in the other cells, cropped to fill, collage_fitted
   with each photo whole on padding, rotate_small, overlay), and
   two edits at once, counted apart from the overall figures (mirror_framed: mirrored,
   then bordered, letterboxed, captioned or screenshotted; mirror_cropped: mirrored,
   then cropped; two_edits: one edit of the photo drawn at random, then one framing or
   cover), ``--copies`` of each kind per banned photo, each with its own random parameters,
   saved as JPEG at quality 70-95 and sometimes downsized; plus the banned file itself
   ("exact") as a sanity check;
3. makes the negatives: every innocent photo as it is, plus ``--negative-framings``
   framings of each (letterbox, caption, screenshot, collages of innocent photos only,
   crops, borders, stickers); none of them may be blocked;
4. bans the banned photos through the product's own commands in two fresh data
   directories: (A) ``photosentry ban add IMAGE... --bank banned``: image bans, every
   hash the product stores for an image; (B) ``photosentry ban import LIST --format
   te-pdq --bank banned``: a ThreatExchange-style PDQ list (``PDQHEX,QUALITY``) of the
   same photos, hashed as ``ban add`` hashes them (photosentry.hashes.signals.hash_image
   on a full decode), as a partner's hash-only list would arrive;
5. scans every copy and negative with ``photosentry.new_scanner(data_dir=...,
   threads=1)`` and ``photosentry.scan(path, scanner=...)``, A and B in two worker
   processes side by side, and prints per kind: blocked/total (a copy is *caught* when
   the verdict is BLOCK) and quarantined, for A and B; then the false blocks and false
   quarantines on the negatives *caused by bank matches* (reason codes that name a
   match or a bank; quarantines by the nudity model are counted apart, they are not
   false matches), with the worst offenders: which negative matched which banned
   photo, by which hash, at what distance;
6. times the per-photo scan before and after in the same run: "before" is
   ``--baseline-rev`` (a ``git archive`` of it in a temporary folder, run with
   PYTHONPATH pointing at it, same virtual environment), "after" the working tree.
   Both get a warm scanner (threads=1, OMP/ONNX Runtime at one thread) with the same
   image bans and model build, and scan the same sample (``--timing-sample`` files,
   half negatives, half copies) in alternating rounds (before, after, after, before,
   ...); each file's time is its median over the rounds; the table gives median and
   mean ms per photo and the ratio after/before. ``--baseline-recall`` also runs the
   whole recall table on the baseline, printed beside the working tree's.

The model: every worker runs the published fp32 model with the automatic build off
(``PHOTOSENTRY_AUTO_BUILD=0``), so no background build competes with the scans or
the timings and both revisions run the same model. ``--optimised`` instead makes the
default optimised build once (``photosentry models build`` in ``--models-cache``; it
needs several GB of memory and minutes) and copies it into every data directory, as
a worker runs after its first start. Each worker says which build it runs, and the
timing also gives the scan's own stage split (``verdict.timings_ms``), so the cost
of hashing and matching shows apart from the model's.

This is a benchmark: it prints tables and never asserts anything about the numbers.

    python scripts/bench_copies.py --quick                  # a few minutes
    python scripts/bench_copies.py                          # the full table (~15 min on 2 cores)
    python scripts/bench_copies.py --baseline-recall --json results.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import photo_corpus  # noqa: E402

BANK = "banned"
DEFAULT_BASELINE = "ec34243"
#: Reason codes that are about the model or a failure, never a bank match.
NOT_MATCH_CODES = frozenset({"clean", "nudity", "allow_listed"})
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "ORT_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}


def is_match_code(code: str) -> bool:
    """A reason code that comes from a bank match (``bank_match`` and whatever later
    match codes are called: anything naming a match, a bank, a copy or a region)."""
    if code in NOT_MATCH_CODES:
        return False
    return any(word in code for word in ("match", "bank", "copy", "region", "crop", "partial"))


@dataclass(frozen=True)
class Item:
    """One file to scan."""

    file: str
    #: ``copy`` (of a banned photo) or ``negative`` (innocent).
    group: str
    kind: str
    #: The corpus photo it was made from.
    photo: str


# -- making the files ---------------------------------------------------------------

_POOL: Any = None


def _init_maker(negatives: list[str]) -> None:
    global _POOL
    import copy_kinds

    _POOL = copy_kinds.Pool([Path(p) for p in negatives])


def _make_one(task: tuple[str, str, str, str, int, str]) -> str:
    """Make one copy or framing; the seed string makes it the same on every run."""
    import copy_kinds
    from PIL import Image

    table, kind, source, out, n, seed = task
    makers = copy_kinds.KINDS if table == "copy" else copy_kinds.NEGATIVE_FRAMINGS
    rng = random.Random(f"{seed}:{table}:{kind}:{Path(source).name}:{n}")
    with Image.open(source) as img:
        photo = img.convert("RGB")
    made = makers[kind](photo, rng, _POOL)
    resize_p = 0.0 if kind in copy_kinds.NO_EXTRA_RESIZE else 0.3
    Path(out).write_bytes(copy_kinds.finish(made, rng, resize_p=resize_p))
    return out


def make_files(banned: list[Path], negatives: list[Path], work: Path, *, copies: int, framings: int,
               seed: int, jobs: int) -> list[Item]:
    import copy_kinds

    items: list[Item] = []
    tasks = []
    for photo in banned:
        items.append(Item(str(photo), "copy", "exact", photo.name))
    for kind in copy_kinds.KINDS:
        folder = work / "copies" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for photo in banned:
            for n in range(copies):
                out = folder / f"{photo.stem}-{n}.jpg"
                tasks.append(("copy", kind, str(photo), str(out), n, str(seed)))
                items.append(Item(str(out), "copy", kind, photo.name))
    for photo in negatives:
        items.append(Item(str(photo), "negative", "photo", photo.name))
    framing_kinds = list(copy_kinds.NEGATIVE_FRAMINGS)
    for i, photo in enumerate(negatives):
        for j in range(framings):
            kind = framing_kinds[(i * framings + j) % len(framing_kinds)]
            folder = work / "negatives" / kind
            folder.mkdir(parents=True, exist_ok=True)
            out = folder / f"{photo.stem}-{j}.jpg"
            tasks.append(("negative", kind, str(photo), str(out), j, str(seed)))
            items.append(Item(str(out), "negative", kind, photo.name))
    # Copies' collages take innocent photos into their other cells; negatives' framings
    # only ever see innocent photos, so one pool of negatives serves both.
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, initializer=_init_maker,
                                                initargs=([str(p) for p in negatives],)) as ex:
        for done, _ in enumerate(ex.map(_make_one, tasks, chunksize=8), 1):
            if done % 250 == 0:
                print(f"  made {done}/{len(tasks)} files", file=sys.stderr)
    print(f"made {len(tasks)} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return items


# -- the product, through its public commands ------------------------------------------

def product_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    env["PHOTOSENTRY_AUTO_BUILD"] = "0"
    env.update(ONE_THREAD)
    env.pop("PHOTOSENTRY_HOME", None)
    return env


def cli(root: Path, data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "import sys; from photosentry.cli import main; sys.exit(main())",
           "--data-dir", str(data_dir), *args]
    # cwd=root: `python -c` puts the working directory first on sys.path, ahead of
    # PYTHONPATH, so run from elsewhere it would ban with that directory's photosentry.
    proc = subprocess.run(cmd, env=product_env(root), capture_output=True, text=True, cwd=root)
    if check and proc.returncode != 0:
        raise SystemExit(f"photosentry {' '.join(args[:2])} failed ({proc.returncode}) with {root}:\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def te_pdq_list(banned: list[Path], out: Path) -> dict[str, str]:
    """A ThreatExchange-style PDQ list of ``banned`` (``PDQHEX,QUALITY`` lines), hashed
    as ``ban add`` hashes an image; returns pdq hex -> photo name."""
    sys.path.insert(0, str(REPO))
    from photosentry.decode import Limits, decode, read_limited
    from photosentry.hashes.codecs import Algorithm
    from photosentry.hashes.signals import hash_image

    lines, names = [], {}
    for path in banned:
        data = read_limited(path, Limits().max_bytes)
        decoded = decode(data, Limits())
        pdq = hash_image(data, decoded.frames, decoded.frame_indices).frames[0].get(Algorithm.PDQ)
        assert pdq is not None
        lines.append(f"{pdq.value},{pdq.quality}")
        names[pdq.value] = path.name
    out.write_text("\n".join(lines) + "\n")
    return names


@dataclass
class BanSetup:
    """One data directory with the banned photos banned one way."""

    mode: str
    data_dir: Path
    #: entry id -> (banned photo's name, algorithm, value)
    entries: dict[int, tuple[str, str, str]] = field(default_factory=dict)


def set_up_bans(root: Path, data_dir: Path, mode: str, banned: list[Path], te_list: Path,
                te_names: dict[str, str], models_from: Path | None) -> BanSetup:
    data_dir.mkdir(parents=True)
    if models_from is not None:
        shutil.copytree(models_from / "models", data_dir / "models",
                        ignore=shutil.ignore_patterns(".build-*", "*.lock", "*.log"))
    if mode == "image":
        cli(root, data_dir, "ban", "add", *map(str, banned), "--bank", BANK, "--by", "bench",
            "--reason", "bench_copies: image bans")
    else:
        cli(root, data_dir, "ban", "import", str(te_list), "--format", "te-pdq", "--bank", BANK,
            "--by", "bench", "--reason", "bench_copies: hash-only list")
    setup = BanSetup(mode, data_dir)
    exported = cli(root, data_dir, "ban", "export", "--format", "jsonl").stdout
    by_label = {p.name: p.name for p in banned}
    for line in exported.splitlines():
        if not line.strip().startswith("{"):
            continue
        row = json.loads(line)
        if "id" not in row:
            continue
        value = str(row.get("value", row.get("hash", "")))
        algorithm = str(row.get("algorithm", ""))
        if ":" in value and not algorithm:
            algorithm, value = value.split(":", 1)
        name = te_names.get(value) or by_label.get(str(row.get("label", ""))) or str(row.get("label", "?"))
        setup.entries[int(row["id"])] = (name, algorithm, value)
    return setup


def ensure_models(cache: Path) -> Path:
    """A data directory holding the default optimised build, made once and reused."""
    if not (cache / "models" / "artifacts.json").is_file():
        print(f"making the default model build once in {cache} (photosentry models build)...", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        proc = cli(REPO, cache, "models", "build", check=False)
        print(f"  {time.perf_counter() - started:.0f} s: {proc.stdout.strip().splitlines()[-1:]}", file=sys.stderr)
    return cache


# -- scanning in a worker process -------------------------------------------------------

def worker_main(data_dir: str) -> int:
    """``--worker``: a warm scanner answering JSON-lines requests on stdin."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the product prints must not mix with the answers
    sys.stdout = sys.stderr
    import photosentry

    scanner = photosentry.new_scanner(data_dir=data_dir, threads=1)
    classifier = getattr(scanner, "classifier", None)
    out.write(json.dumps({"ready": True, "photosentry": photosentry.__file__,
                          "model": f"{getattr(classifier, 'model_id', '?')} {getattr(classifier, 'variant', '?')}"})
              + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        answers = []
        for path in request["files"]:
            started = time.perf_counter()
            verdict = photosentry.scan(path, scanner=scanner)
            ms = (time.perf_counter() - started) * 1000
            if request.get("timing"):
                answers.append({"ms": ms, "stages": dict(verdict.timings_ms)})
                continue
            answers.append({
                "ms": ms,
                "action": verdict.action.value,
                "reasons": [{"code": r.code.value, "action": r.action.value} for r in verdict.reasons],
                "matches": [{"entry_id": m.entry_id, "bank": m.bank, "algorithm": m.algorithm.value,
                             "distance": m.distance, "weak": m.weak, "variant": m.variant}
                            for m in verdict.matches],
            })
        out.write(json.dumps(answers) + "\n")
    return 0


class Worker:
    """A scanner in its own process, on one revision's code and one data directory."""

    def __init__(self, root: Path, data_dir: Path, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(data_dir)],
                                     env=product_env(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL if os.environ.get("BENCH_QUIET_WORKERS") else None,
                                     text=True, bufsize=1)
        hello = json.loads(self._line())
        self.model = hello["model"]
        where = Path(hello["photosentry"]).resolve()
        if not where.is_relative_to(root.resolve()):
            raise SystemExit(f"worker {name} imported photosentry from {where}, not from {root}")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} died (exit {self.proc.wait()})")
        return line

    def scan(self, files: list[str], *, timing: bool = False) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"files": files, "timing": timing}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def scan_all(workers: dict[str, Worker], files: list[str], chunk: int = 100) -> dict[str, list[dict[str, Any]]]:
    """Every file through every worker, the workers side by side (one thread each)."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in workers}
    started = time.perf_counter()

    def run(name: str) -> None:
        for i in range(0, len(files), chunk):
            results[name].extend(workers[name].scan(files[i:i + chunk]))
            if name == next(iter(workers)) and (i // chunk) % 5 == 4:
                print(f"  scanned {min(i + chunk, len(files))}/{len(files)} ({time.perf_counter() - started:.0f} s)",
                      file=sys.stderr)

    threads = [threading.Thread(target=run, args=(name,)) for name in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, got in results.items():
        if len(got) != len(files):
            raise SystemExit(f"worker {name} answered {len(got)} of {len(files)} files")
    return results


# -- tables -------------------------------------------------------------------------------

def _match_action(result: dict[str, Any]) -> str | None:
    """The most severe action any bank-match reason calls for (None: no match reason)."""
    actions = [r["action"] for r in result["reasons"] if is_match_code(r["code"])]
    for action in ("block", "quarantine", "allow"):
        if action in actions:
            return action
    return None


def recall_rows(items: list[Item], results: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, Any] = defaultdict(lambda: {"total": 0, "blocked": 0, "quarantined": 0})
    for item, res in zip(items, results):
        if item.group != "copy":
            continue
        if item.kind == "exact" and res["action"] != "block":
            # The banned file itself not blocked: say why (e.g. a PDQ too weak to count alone).
            rows["_exact_missed"].setdefault("photos", []).append(
                f"{item.photo} ({res['action']}: {', '.join(r['code'] for r in res['reasons'])})")
        keys = (item.kind, "_combined") if item.kind in _combined_kinds() else \
            (item.kind, "_overall", "_new" if item.kind in _new_kinds() else "_before")
        for key in keys:
            if key == "_before" and item.kind == "exact":
                continue
            row = rows[key]
            row["total"] += 1
            row["blocked"] += res["action"] == "block"
            row["quarantined"] += res["action"] == "quarantine"
    return dict(rows)


def _new_kinds() -> frozenset[str]:
    import copy_kinds

    return frozenset(copy_kinds.KINDS_NEW)


def _combined_kinds() -> frozenset[str]:
    import copy_kinds

    return frozenset(copy_kinds.KINDS_COMBINED)


def negative_rows(items: list[Item], results: list[dict[str, Any]], setup: BanSetup) -> dict[str, Any]:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"total": 0, "false_block": 0, "false_quarantine": 0,
                                                           "model_quarantine": 0, "model_block": 0, "other": 0})
    offenders = []
    for item, res in zip(items, results):
        if item.group != "negative":
            continue
        for key in (item.kind, "_overall"):
            row = rows[key]
            row["total"] += 1
            matched = _match_action(res)
            if matched == "block":
                row["false_block"] += 1
            elif matched == "quarantine":
                row["false_quarantine"] += 1
            elif res["action"] != "allow":
                codes = {r["code"] for r in res["reasons"]}
                if "nudity" in codes:
                    row["model_quarantine" if res["action"] == "quarantine" else "model_block"] += 1
                else:
                    row["other"] += 1
        if _match_action(res) in ("block", "quarantine"):
            for m in res["matches"]:
                name, algorithm, value = setup.entries.get(m["entry_id"], ("?", m["algorithm"], "?"))
                offenders.append({"file": item.file, "kind": item.kind, "photo": item.photo,
                                  "action": res["action"], "matched_ban": name, "algorithm": m["algorithm"],
                                  "distance": m["distance"], "weak": m["weak"], "variant": m["variant"],
                                  "entry_id": m["entry_id"], "value": value})
    offenders.sort(key=lambda o: (o["action"] != "block", o["distance"]))
    return {"rows": dict(rows), "offenders": offenders}


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}%" if b else "    -"


def print_recall(tables: dict[str, dict[str, dict[str, int]]], kinds: list[str]) -> None:
    """One line per kind; a column group per (revision, ban mode)."""
    names = list(tables)
    head = f"{'kind':<16}" + "".join(f" | {n:^28}" for n in names)
    print(head)
    print(f"{'':<16}" + "".join(f" | {'blocked':>16} {'quar.':>11}" for _ in names))
    print("-" * len(head))
    plain = [k for k in kinds if k not in _combined_kinds()]
    for kind in [*plain, "_before", "_new", "_overall", *(k for k in kinds if k in _combined_kinds())]:
        label = {"_before": "ALL caught-today", "_new": "ALL new kinds", "_overall": "OVERALL"}.get(kind, kind)
        if kind == "_before":
            print("-" * len(head))
        cells = []
        for n in names:
            row = tables[n].get(kind)
            if row is None:
                cells.append(f" | {'-':>28}")
                continue
            cells.append(f" | {row['blocked']:>4}/{row['total']:<4}{_pct(row['blocked'], row['total']):>7}"
                         f" {row['quarantined']:>4}{_pct(row['quarantined'], row['total']):>7}")
        print(f"{label:<16}" + "".join(cells))
    for n in names:
        for photo in tables[n].get("_exact_missed", {}).get("photos", []):
            print(f"  {n}: the banned file itself was not blocked: {photo}")


def print_negatives(tables: dict[str, dict[str, Any]], worst: int) -> None:
    names = list(tables)
    kinds = sorted({k for t in tables.values() for k in t["rows"]} - {"_overall"})
    head = f"{'negative kind':<16}" + "".join(f" | {n:^36}" for n in names)
    print(head)
    print(f"{'':<16}" + "".join(f" | {'total':>6} {'FALSE blk':>9} {'FALSE q.':>8} {'nudity q/b':>10}" for _ in names))
    print("-" * len(head))
    for kind in [*kinds, "_overall"]:
        cells = []
        for n in names:
            row = tables[n]["rows"].get(kind)
            if row is None:
                cells.append(f" | {'-':>36}")
                continue
            cells.append(f" | {row['total']:>6} {row['false_block']:>9} {row['false_quarantine']:>8}"
                         f" {row['model_quarantine']:>5}/{row['model_block']:<4}")
        print(f"{'OVERALL' if kind == '_overall' else kind:<16}" + "".join(cells))
    for n in names:
        offenders = tables[n]["offenders"]
        if not offenders:
            continue
        print(f"\nworst false matches, {n} ({len(offenders)} match(es) behind false blocks/quarantines):")
        for o in offenders[:worst]:
            print(f"  {o['action']:<10} {o['kind']:<14} {Path(o['file']).name[:44]:<44} matched {o['matched_ban'][:40]:<40}"
                  f" {o['algorithm']} d={o['distance']}{' weak' if o['weak'] else ''} variant={o['variant']}")


# -- timing -------------------------------------------------------------------------------

def time_revisions(workers: dict[str, Worker], files: list[str], rounds: int,
                   parts: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Alternating rounds over the same files (before, after, after, before, ...);
    ``parts``: a name for some of the files (their indexes), timed apart too."""
    order = list(workers)
    for name in order:  # warm-up pass: caches, page faults, lazy imports
        workers[name].scan(files[: min(10, len(files))], timing=True)
    per_file: dict[str, list[list[float]]] = {name: [[] for _ in files] for name in order}
    stages: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in order}
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            for i, answer in enumerate(workers[name].scan(files, timing=True)):
                per_file[name][i].append(answer["ms"])
                for stage, ms in answer["stages"].items():
                    stages[name][stage].append(ms)
        print(f"  timing round {r + 1}/{rounds} done", file=sys.stderr)
    out: dict[str, Any] = {}
    for name in order:
        medians = [statistics.median(times) for times in per_file[name]]
        fastest = [min(times) for times in per_file[name]]
        out[name] = {"median_ms": statistics.median(medians), "mean_ms": statistics.fmean(medians),
                     # each file's fastest round: less of the machine's other load in it
                     "best_median_ms": statistics.median(fastest), "best_mean_ms": statistics.fmean(fastest),
                     "model": workers[name].model,
                     "stages_mean_ms": {k: statistics.fmean(v) for k, v in stages[name].items()},
                     "parts": {part: {"n": len(idx), "median_ms": statistics.median([medians[i] for i in idx]),
                                      "mean_ms": statistics.fmean([medians[i] for i in idx])}
                               for part, idx in (parts or {}).items() if idx}}
    return out


def print_timing(timing: dict[str, Any], n_files: int, rounds: int) -> None:
    print(f"per-photo scan time, one thread, warm scanner, {n_files} files x {rounds} alternating rounds"
          " (each file's median over the rounds):")
    for name, t in timing.items():
        print(f"  {name:<24} median {t['median_ms']:7.1f} ms   mean {t['mean_ms']:7.1f} ms   model {t['model']}")
        print(f"  {'':<24} fastest round per file: median {t['best_median_ms']:.1f} ms, mean {t['best_mean_ms']:.1f} ms")
        print(f"  {'':<24} stages (mean ms): "
              + ", ".join(f"{k} {v:.1f}" for k, v in t["stages_mean_ms"].items()))
    if "before" in timing and "after" in timing:
        b, a = timing["before"], timing["after"]
        print(f"  ratio after/before:      median {a['median_ms'] / b['median_ms']:.2f}x"
              f"        mean {a['mean_ms'] / b['mean_ms']:.2f}x"
              f"   (fastest rounds: median {a['best_median_ms'] / b['best_median_ms']:.2f}x,"
              f" mean {a['best_mean_ms'] / b['best_mean_ms']:.2f}x)")
        for part, pa in a.get("parts", {}).items():
            pb = b["parts"][part]
            print(f"  {part + ' (' + str(pa['n']) + ')':<24} median {pb['median_ms']:.1f} -> {pa['median_ms']:.1f} ms"
                  f" ({pa['median_ms'] / pb['median_ms']:.2f}x), mean {pb['mean_ms']:.1f} -> {pa['mean_ms']:.1f} ms"
                  f" ({pa['mean_ms'] / pb['mean_ms']:.2f}x)")
        if b["model"] != a["model"]:
            print(f"  WARNING: the two revisions ran different model builds ({b['model']} vs {a['model']})")


# -- main ---------------------------------------------------------------------------------

def extract_revision(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, default=photo_corpus.DEFAULT_CACHE,
                        help="photo corpus cache (scripts/photo_corpus.py; built on first use)")
    parser.add_argument("--banned", type=int, default=40, help="photos to ban (default 40; --quick: 12)")
    parser.add_argument("--copies", type=int, default=2,
                        help="copies of each kind per banned photo (default 2: 80 per kind; --quick: 1)")
    parser.add_argument("--negative-framings", type=int, default=1,
                        help="framings made of each innocent photo (default 1)")
    parser.add_argument("--negatives", type=int, default=0,
                        help="use at most this many innocent photos (default all; --quick: 80)")
    parser.add_argument("--strict-negatives", action="store_true",
                        help="innocent photos from the strict photos only (default: also the corpus's looser"
                             " photo-like pictures: screenshots, diagrams, textures)")
    parser.add_argument("--seed", type=int, default=17, help="seed of the split and of every copy's parameters")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: 12 banned photos, 1 copy per kind, 80 negatives, a 30-file timing")
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE,
                        help=f"the 'before' revision, for the timing and --baseline-recall (default {DEFAULT_BASELINE})")
    parser.add_argument("--baseline-recall", action="store_true",
                        help="also run the whole recall table on --baseline-rev, beside the working tree's")
    parser.add_argument("--no-timing", action="store_true", help="skip the before/after timing")
    parser.add_argument("--timing-sample", type=int, default=60,
                        help="files timed (half negatives, half copies; default 60)")
    parser.add_argument("--timing-rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    parser.add_argument("--optimised", action="store_true",
                        help="run the default optimised build (made once in --models-cache: minutes, several GB"
                             " of memory) instead of the published fp32 model")
    parser.add_argument("--models-cache", type=Path, default=photo_corpus.DEFAULT_CACHE.parent / "bench-models",
                        help="data directory holding the model build copied into every data directory")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where copies and data directories go (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and say where")
    parser.add_argument("--jobs", type=int, default=2, help="processes making copies (default 2)")
    parser.add_argument("--worst", type=int, default=15, help="false matches listed per table (default 15)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.banned = min(args.banned, 12)
        args.copies = 1
        args.negatives = args.negatives or 80
        args.timing_sample = min(args.timing_sample, 30)
        args.timing_rounds = min(args.timing_rounds, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    import copy_kinds

    started = time.perf_counter()
    corpus = photo_corpus.photos(args.corpus_dir, strict=True)
    loose = [] if args.strict_negatives else sorted(set(photo_corpus.photos(args.corpus_dir, strict=False)) - set(corpus))
    rng = random.Random(args.seed)
    shuffled = corpus[:]
    rng.shuffle(shuffled)
    banned = sorted(shuffled[: args.banned])
    negatives = sorted(shuffled[args.banned:] + loose)
    if args.negatives:
        negatives = sorted(random.Random(args.seed + 1).sample(negatives, min(args.negatives, len(negatives))))
    print(f"corpus: {len(corpus)} photos and {len(loose)} photo-like pictures; {len(banned)} banned,"
          f" {len(negatives)} innocent", file=sys.stderr)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_copies_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        items = make_files(banned, negatives, work, copies=args.copies, framings=args.negative_framings,
                           seed=args.seed, jobs=args.jobs)
        te_list = work / "banned-pdq.te"
        te_names = te_pdq_list(banned, te_list)
        models_from = ensure_models(args.models_cache) if args.optimised else None

        revisions = {"after": REPO}
        if args.baseline_recall or not args.no_timing:
            revisions["before"] = extract_revision(args.baseline_rev, work / "baseline")
        setups: dict[str, BanSetup] = {}
        for rev, root in revisions.items():
            modes = ("image", "pdq") if rev == "after" or args.baseline_recall else ("image",)
            for mode in modes:
                setups[f"{rev}:{mode}"] = set_up_bans(root, work / f"data-{rev}-{mode}", mode, banned, te_list,
                                                      te_names, models_from)

        files = [i.file for i in items]
        per_file: dict[str, list[dict[str, Any]]] = {}
        recall: dict[str, Any] = {}
        negative: dict[str, Any] = {}
        models: dict[str, str] = {}
        for rev in (["before", "after"] if args.baseline_recall else ["after"]):
            workers = {f"{rev}:{m}": Worker(revisions[rev], setups[f"{rev}:{m}"].data_dir, f"{rev}:{m}")
                       for m in ("image", "pdq")}
            print(f"scanning {len(files)} files with {', '.join(workers)}...", file=sys.stderr)
            results = scan_all(workers, files)
            for name, w in workers.items():
                models[name] = w.model
                w.close()
                label = f"{rev} {'A image bans' if name.endswith('image') else 'B PDQ list'}"
                per_file[label] = results[name]
                recall[label] = recall_rows(items, results[name])
                negative[label] = negative_rows(items, results[name], setups[name])

        n_copies = sum(i.group == "copy" for i in items)
        n_neg = sum(i.group == "negative" for i in items)
        print(f"\n== copies caught (BLOCK) and quarantined, by kind: {len(banned)} banned photos, "
              f"{args.copies} copies per kind each, {n_copies} copies ==")
        print_recall(recall, ["exact", *copy_kinds.KINDS])
        print(f"\n== negatives: {len(negatives)} innocent photos and {n_neg - len(negatives)} framings of them ==")
        print("FALSE blk / FALSE q.: blocked / quarantined by a bank match (must be 0);"
              " nudity q/b: held by the model, not a false match")
        print_negatives(negative, args.worst)

        timing: dict[str, Any] = {}
        if not args.no_timing:
            sample_rng = random.Random(args.seed + 2)
            neg_files = [i.file for i in items if i.group == "negative"]
            copy_files = [i.file for i in items if i.group == "copy"]
            half = args.timing_sample // 2
            sample = sample_rng.sample(neg_files, min(half, len(neg_files))) + \
                sample_rng.sample(copy_files, min(args.timing_sample - half, len(copy_files)))
            sample_rng.shuffle(sample)
            workers = {rev: Worker(revisions[rev], setups[f"{rev}:image"].data_dir, rev) for rev in ("before", "after")}
            print(f"timing {len(sample)} files, before ({args.baseline_rev}) and after (working tree)...",
                  file=sys.stderr)
            # Apart: what a worker mostly sees (innocent photos as they are) and the rest.
            plain = {i.file for i in items if i.group == "negative" and i.kind == "photo"}
            copies = set(copy_files)
            parts = {"innocent photos": [k for k, f in enumerate(sample) if f in plain],
                     "framed innocents": [k for k, f in enumerate(sample) if f not in plain and f not in copies],
                     "copies": [k for k, f in enumerate(sample) if f in copies]}
            timing = time_revisions(workers, sample, args.timing_rounds, parts)
            for w in workers.values():
                w.close()
            print()
            print_timing(timing, len(sample), args.timing_rounds)

        print(f"\nmodels: {', '.join(f'{k} {v}' for k, v in models.items())}")
        print(f"total run time {time.perf_counter() - started:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "corpus": len(corpus), "loose": len(loose), "banned": [p.name for p in banned], "negatives": len(negatives),
                "recall": recall, "negatives_table": negative, "timing": timing, "models": models,
                "files": [asdict(i) for i in items],
                # per configuration, one verdict summary per file, in the order of "files"
                "results": per_file,
            }, indent=1))
    finally:
        if args.keep or args.work_dir:
            print(f"files kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
