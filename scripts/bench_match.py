#!/usr/bin/env python
"""Matching benchmark: per-photo query time at industry scale, next to the alternatives.

    python scripts/bench_match.py --entries 10000000     # the report's run (~6 GB peak)
    python scripts/bench_match.py                         # 1 million per algorithm, quicker

Builds, per perceptual algorithm, a synthetic bank of N uniformly random hashes (the
hard case: nothing is near anything, so every probe and candidate is wasted work) and
plants near-duplicates: each benchmark photo has the query variants a real photo has
(PDQ 8, pHash 8, dHash 2), and for planted photos one random variant is a copy of a
bank entry with d random bits flipped, d uniform in 0..radius. It then measures:

- ``photosentry``: the TieredIndex the matcher uses (multi-index hashing, numba),
  per algorithm and for the whole photo (all algorithms and variants), median and p99,
  recall on the planted items (must be 100%), memory per entry beyond the raw hash,
  and the load time of a bank of N from a columnar snapshot (np.load + build); first
  on the cost model's layout (``model``), then on the layout a calibration on this
  host picks (``calibrated``: what the shared index file is laid out with once the
  host has timed its candidates; its load column is the calibration's time, builds
  and queries of every candidate included);
- every calibration candidate as a bare segment, and at the end, per algorithm, the
  planner's choice against the fastest layout measured in this run (issue #19: the
  model chose dir=21 at 1.65 ms where dir=20 measured 1.29 ms);
- where this host runs the vector scans, our layout as a bare segment with them, and the
  scalar scans on the layout they would plan (what a host without AVX-512 VPOPCNTDQ runs);
- alternative MIH layouts (substring counts, directory widths; packed, inline or
  fragment tables) in the same run;
- ``numpy linear``: XOR + popcount over every row (the previous HammingIndex);
- ``faiss IndexBinaryFlat``: FAISS's exhaustive binary range search;
- ``faiss IndexBinaryMultiHash``: FAISS's multi-index hashing (at most 1M entries:
  its hash maps take hundreds of bytes per entry);
- ``threatexchange PDQIndex2``: the reference PDQ matcher (FAISS IndexFlatL2 over
  float32 vectors, 1 KB per hash: measured at most at 1M entries, it would need 10 GB
  at 10M).

Single-threaded (FAISS and numba are pinned to one thread): the target is "one core".
Timings are medians over ``--photos`` photos; slow baselines use fewer photos.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from photosentry.hashes import mih  # noqa: E402
from photosentry.hashes.algorithms import Algorithm  # noqa: E402
from photosentry.hashes.mih import calibrate, simd  # noqa: E402
from photosentry.hashes.index import TieredIndex, codes_to_hex  # noqa: E402

#: (name, bits, radius, query variants) per perceptual algorithm: PDQ at its default
#: distance (64-bit ones at --radius-64), and the variants each signal gives a photo.
ALGOS = tuple((a.value, a.bits, a.spec.default_distance, variants)
              for a, variants in ((Algorithm.PDQ, 8), (Algorithm.PHASH, 8), (Algorithm.DHASH, 2)))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def flip(rng: np.random.Generator, code: np.ndarray, d: int) -> np.ndarray:
    out = code.copy()
    for bit in rng.choice(code.size * 64, d, replace=False):
        out[bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
    return out


def make_photos(rng, codes, radius, variants, photos, planted):  # type: ignore[no-untyped-def]
    """Per photo: (queries N_variants x words, planted row or -1, planted distance)."""
    words = codes.shape[1]
    out = []
    for p in range(photos):
        q = rng.integers(0, 2**64 - 1, size=(variants, words), dtype=np.uint64, endpoint=True)
        row, d = -1, -1
        if p < planted:
            row = int(rng.integers(0, len(codes)))
            d = int(rng.integers(0, radius + 1))
            q[int(rng.integers(0, variants))] = flip(rng, codes[row], d)
        out.append((q, row, d))
    return out


def stats(times_s: list[float]) -> tuple[float, float]:
    a = np.array(times_s) * 1e6
    return float(np.median(a)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000, help="hashes per algorithm (default 1,000,000)")
    ap.add_argument("--photos", type=int, default=300, help="benchmark photos (default 300)")
    ap.add_argument("--planted", type=int, default=100, help="photos with a planted near-duplicate (default 100)")
    ap.add_argument("--baseline-photos", type=int, default=5, help="photos for the slow baselines (default 5)")
    ap.add_argument("--layouts", default="pdq:11d21,11d20,12d21;phash:i17-17-17-13,f4,i3,3d21;dhash:i17-17-17-13,f4",
                    help="other MIH layouts to measure per algorithm: M (packed, direct directories), MdD (packed,"
                         " M substrings, D directory bits), iM (inline, M equal substrings), iA-B-C (inline,"
                         " substrings of A, B and C bits), fM and fA-B-C (the same with 32-bit fragment tables);"
                         " default %(default)s")
    ap.add_argument("--radius-64", type=int, default=10, metavar="R",
                    help="pHash/dHash search radius (default 10, the issue's maximum; the shipped bank distance is 8)")
    ap.add_argument("--regions", type=int, default=16, metavar="R",
                    help="PDQ queries a photo's regions add (default 16: the scan's 12 regions at most, and a"
                         " second hash of those whose corners look rounded; a plain photo has 3 or 4), each"
                         " one variant; timed apart and added to the photo's total")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-baselines", action="store_true")
    args = ap.parse_args()
    n = args.entries
    rng = np.random.default_rng(args.seed)

    print(f"# bench_match: {n:,} entries per algorithm, {args.photos} photos ({args.planted} planted), one thread")
    t = time.perf_counter()
    mih.warm_up()
    print(f"numba first-call compile: {time.perf_counter() - t:.2f} s (once per process, at index load)")
    print("bucket scans: " + ("vector (AVX-512 VPOPCNTDQ); the scalar scans are measured beside them, on the layout"
                              " a host without it would plan" if simd.VECTOR_SCAN else "scalar (this CPU has no AVX-512"
                              " VPOPCNTDQ)"))

    rows_out: list[tuple] = []
    #: Per algorithm: the cost model's layout and the calibration; bare segment medians by layout.
    picks: dict[str, tuple[mih.Layout, calibrate.Calibration]] = {}
    bare: dict[str, dict[mih.Layout, float]] = {name: {} for name, *_ in ALGOS}
    per_photo = np.zeros(args.photos)
    with_regions = np.zeros(args.photos)
    recall_all = True
    alt_layouts = {k: v.split(",") for k, v in (p.split(":") for p in args.layouts.split(";"))}
    tmp = Path(tempfile.mkdtemp(prefix="bench_match-"))
    data = {}
    for name, bits, radius, variants in ALGOS:
        radius = args.radius_64 if bits == 64 else radius
        words = bits // 64
        codes = rng.integers(0, 2**64 - 1, size=(n, words), dtype=np.uint64, endpoint=True)
        ids = np.arange(1, n + 1, dtype=np.int64)
        np.save(tmp / f"{name}.codes.npy", codes)
        np.save(tmp / f"{name}.ids.npy", ids)
        photos = make_photos(rng, codes, radius, variants, args.photos, args.planted)
        del codes, ids
        gc.collect()

        # -- ours: load from a columnar snapshot, build, query -------------------------
        t = time.perf_counter()
        codes = np.load(tmp / f"{name}.codes.npy")
        ids = np.load(tmp / f"{name}.ids.npy")
        index = TieredIndex(bits, radius)
        index.load(ids, codes)
        load_s = time.perf_counter() - t
        layout = index._base.mih.layout if index._base is not None and index._base.mih is not None else None

        def measure_index(index: TieredIndex, label: str, load_s: float, total: np.ndarray | None) -> None:
            nonlocal recall_all
            times, found = [], 0
            for i, (q, row, d) in enumerate(photos):
                values = codes_to_hex(q)
                t = time.perf_counter()
                hits = index.query(values, radius)
                dt = time.perf_counter() - t
                times.append(dt)
                if total is not None:
                    total[i] += dt
                if row >= 0:
                    found += any(h.entry_id == row + 1 and h.distance == d for h in hits)
            med, p99 = stats(times)
            mem = index.nbytes / n
            recall = found / max(1, min(args.planted, args.photos))
            recall_all &= recall == 1.0
            rows_out.append((name, f"photosentry {label}", variants, radius, med, p99, mem, load_s, recall))
            print(f"  {name}: ours {label}: median {med:.0f} us, p99 {p99:.0f} us, recall {recall:.0%},"
                  f" {mem:.1f} B/entry, load {load_s:.2f} s, peak RSS {rss_gb():.1f} GB", flush=True)

        desc = layout.describe() if layout else "linear"
        measure_index(index, f"model ({desc})", load_s, None)
        del index
        gc.collect()
        # What the shared index is laid out with once the host has calibrated.
        calibrated = None
        if layout is not None:
            cal, segment = calibrate.calibrate(codes, radius)
            calibrated = cal
            picks[name] = (layout, cal)
            shared = TieredIndex.shared(bits, radius, ids.astype(np.uint32), segment.codes, segment)
            measure_index(shared, f"calibrated ({cal.layout.describe()})", cal.seconds, per_photo)
            if name == Algorithm.PDQ.value and args.regions:
                # A region is queried as it is (one variant): R more queries a photo.
                region_queries = make_photos(rng, codes, radius, args.regions, args.photos, 0)
                times = []
                for i, (q, _, _) in enumerate(region_queries):
                    values = codes_to_hex(q)
                    t = time.perf_counter()
                    shared.query(values, radius)
                    times.append(time.perf_counter() - t)
                    with_regions[i] += times[-1]
                med, p99 = stats(times)
                rows_out.append((name, f"photosentry calibrated, {args.regions} regions", args.regions, radius,
                                 med, p99, float("nan"), float("nan"), float("nan")))
                print(f"  {name}: {args.regions} region queries: median {med:.0f} us, p99 {p99:.0f} us", flush=True)
            del shared, segment
            gc.collect()
        else:
            measure_index(index_linear(bits, radius, ids, codes), "(linear)", load_s, per_photo)
        data[name] = photos

        # -- alternative layouts, same data ---------------------------------------------
        # Where this host runs the vector scans, our own layout comes first as a bare
        # segment (the photosentry row adds hex parsing and the tiered index's merge),
        # then what a host without them would run: the scalar scans on their own plan.
        # Same run, same data.
        alternatives = []
        if simd.VECTOR_SCAN and layout is not None:
            alternatives = [(layout, True, ", vector scan"),
                            (mih.plan_layout(bits, radius, n, vector=False), False, ", scalar scan")]
        elif layout is not None:
            alternatives = [(layout, False, "")]
        if calibrated is not None:  # every candidate the calibration timed, the same way as the rest
            alternatives += [(lay, simd.VECTOR_SCAN, "") for lay in calibrate.candidates(bits, radius, n)
                             if lay not in (a for a, _, _ in alternatives)]
        for spec in alt_layouts.get(name, []):
            lay = parse_layout(spec, bits)
            if lay in (layout, *(a for a, _, _ in alternatives)) or max(lay.dir_widths) > 24 or (lay.inline and bits != 64):
                continue
            alternatives.append((lay, simd.VECTOR_SCAN, ""))
        for lay, vector, suffix in alternatives:
            t = time.perf_counter()
            seg = mih.MihSegment(codes, lay)
            build_s = time.perf_counter() - t
            desc = lay.describe() + suffix
            times, found = [], 0
            vector_scan, simd.VECTOR_SCAN = simd.VECTOR_SCAN, vector
            try:
                for q, row, d in photos[: max(args.planted, 50)]:
                    t = time.perf_counter()
                    h = seg.query(q, radius)
                    times.append(time.perf_counter() - t)
                    if row >= 0:
                        found += any(int(r) == row and int(dd) == d for r, dd in zip(h.rows, h.distances, strict=True))
            finally:
                simd.VECTOR_SCAN = vector_scan
            med, p99 = stats(times)
            rows_out.append((name, desc, variants, radius, med, p99,
                             seg.nbytes / n + 4, build_s + 0.0, found / max(1, args.planted)))
            if vector == simd.VECTOR_SCAN:
                bare[name][lay] = med
            print(f"  {name}: {desc}: median {med:.0f} us", flush=True)
            del seg
            gc.collect()

        if not args.skip_baselines:
            baselines(name, bits, radius, variants, codes, photos[: args.baseline_photos], rows_out, n)
        del codes, ids
        gc.collect()

    totals = stats(list(per_photo))
    print()
    width = max(42, *(len(r[1]) for r in rows_out))
    print(f"{'algorithm':<9} {'method':<{width}} {'var':>3} {'r':>3} {'median us':>10} {'p99 us':>10}"
          f" {'B/entry':>8} {'load s':>7} {'recall':>7}")
    print("-" * (width + 67))
    for name, method, var, r, med, p99, mem, load, recall in rows_out:
        mem_s = f"{mem:8.1f}" if mem == mem else f"{'-':>8}"
        load_s = f"{load:7.2f}" if load == load else f"{'-':>7}"
        rec = f"{recall:7.0%}" if recall == recall else f"{'-':>7}"
        print(f"{name:<9} {method:<{width}} {var:>3} {r:>3} {med:10.0f} {p99:10.0f} {mem_s} {load_s} {rec}")
    print("-" * (width + 67))
    print(f"{'photo':<9} {'photosentry calibrated, all algorithms':<{width}} {18:>3} {'':>3} {totals[0]:10.0f}"
          f" {totals[1]:10.0f}")
    if args.regions:
        both = stats(list(per_photo + with_regions))
        print(f"{'photo':<9} {'... and ' + str(args.regions) + ' PDQ region queries':<{width}}"
              f" {18 + args.regions:>3} {'':>3} {both[0]:10.0f} {both[1]:10.0f}")
    print(f"recall on planted items: {'100% for every algorithm' if recall_all else 'BELOW 100%'};"
          f" peak RSS {rss_gb():.1f} GB")
    print_planner(picks, bare)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    if not recall_all:
        sys.exit(1)


def index_linear(bits: int, radius: int, ids: np.ndarray, codes: np.ndarray) -> TieredIndex:
    index = TieredIndex(bits, radius)
    index.load(ids, codes)
    return index


def print_planner(picks: dict[str, tuple[mih.Layout, calibrate.Calibration]],
                  bare: dict[str, dict[mih.Layout, float]]) -> None:
    """The planner's choice against the fastest layout measured in this run (bare segments,
    the same photos, this host's scans)."""
    if not picks:
        return
    print("\nplanner vs the fastest layout measured in this run (bare segments, median us per photo's variants):")
    header = f"{'algorithm':<9} {'chose':<8} {'layout':<36} {'us':>6}   {'fastest measured':<36} {'us':>6} {'chose/fastest':>14}"
    print(header)
    print("-" * len(header))
    for name, (model, cal) in picks.items():
        measured = bare.get(name, {})
        if not measured:
            continue
        fastest = min(measured, key=measured.__getitem__)
        for how, layout in (("model", model), ("planner", cal.layout)):
            us = measured.get(layout, float("nan"))
            print(f"{name:<9} {how:<8} {layout.describe():<36} {us:6.0f}   {fastest.describe():<36}"
                  f" {measured[fastest]:6.0f} {us / measured[fastest]:13.2f}x")
    print("planner: the layout the calibration picked (what the shared index file uses once the host has calibrated);"
          " model: the cost model's pick alone. The calibration's own timings:")
    for name, (_, cal) in picks.items():
        print(f"  {name}: " + "; ".join(f"{k} {v:.0f} us" for k, v in cal.measured_us.items())
              + f" ({cal.seconds:.1f} s)")


def parse_layout(spec: str, bits: int) -> mih.Layout:
    fragments = spec.startswith("f")  # fragment tables: the inline specs with f for i
    if spec[:1] in "if" and "-" in spec:
        return mih.from_widths(bits, [int(w) for w in spec[1:].split("-")], inline=True, fragments=fragments)
    if spec[:1] in "if":
        return mih.split(bits, int(spec[1:]), inline=True, fragments=fragments)
    m, _, d = spec.partition("d")
    return mih.split(bits, int(m), inline=False, dir_bits=int(d or 0))


def baselines(name, bits, radius, variants, codes, photos, rows_out, n):  # type: ignore[no-untyped-def]
    nan = float("nan")
    words = bits // 64
    # numpy linear (the previous HammingIndex)
    times = []
    for q, _, _ in photos:
        t = time.perf_counter()
        for v in q:
            np.flatnonzero(np.bitwise_count(codes ^ v).sum(axis=1) <= radius)
        times.append(time.perf_counter() - t)
    med, p99 = stats(times)
    rows_out.append((name, "numpy linear (old HammingIndex)", variants, radius, med, p99, 0.0, nan, nan))
    print(f"  {name}: numpy linear: median {med:.0f} us", flush=True)

    import faiss

    faiss.omp_set_num_threads(1)
    as_bytes = codes.astype(">u8").view(np.uint8).reshape(n, bits // 8)
    t = time.perf_counter()
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(as_bytes)
    build = time.perf_counter() - t
    times, found, planted = [], 0, 0
    for q, row, _ in photos:
        qb = q.astype(">u8").view(np.uint8).reshape(len(q), bits // 8)
        t = time.perf_counter()
        lims, dist, labels = flat.range_search(qb, radius + 1)  # FAISS: strictly below the radius
        times.append(time.perf_counter() - t)
        if row >= 0:
            planted += 1
            found += int(row in set(labels.tolist()))
    med, p99 = stats(times)
    rows_out.append((name, "faiss IndexBinaryFlat", variants, radius, med, p99, 0.0, build,
                     found / planted if planted else nan))
    print(f"  {name}: faiss flat: median {med:.0f} us", flush=True)
    del flat, as_bytes
    gc.collect()

    m = min(n, 1_000_000)
    sub = codes[:m]
    sub_bytes = sub.astype(">u8").view(np.uint8).reshape(m, bits // 8)
    nhash, hbits, nflip = (8, 32, 3) if bits == 256 else (4, 16, 2)
    try:
        t = time.perf_counter()
        multi = faiss.IndexBinaryMultiHash(bits, nhash, hbits)
        multi.nflip = nflip
        multi.add(sub_bytes)
        build = time.perf_counter() - t
        times = []
        for q, _, _ in photos:
            qb = q.astype(">u8").view(np.uint8).reshape(len(q), bits // 8)
            t = time.perf_counter()
            multi.range_search(qb, radius + 1)
            times.append(time.perf_counter() - t)
        med, p99 = stats(times)
        rows_out.append((name, f"faiss MultiHash {nhash}x{hbits} @{m // 1000}k", variants, radius, med, p99, nan,
                         build, nan))
        print(f"  {name}: faiss multihash at {m:,}: median {med:.0f} us", flush=True)
        del multi
    except Exception as exc:  # noqa: BLE001 - report, do not abort the run
        print(f"  {name}: faiss multihash failed: {exc}")
    gc.collect()

    if name == "pdq":
        from threatexchange.signal_type.pdq.pdq_index2 import PDQIndex2

        hexes = codes_to_hex(sub)
        t = time.perf_counter()
        tx = PDQIndex2(entries=((h, i) for i, h in enumerate(hexes)))
        build = time.perf_counter() - t
        del hexes
        times = []
        for q, _, _ in photos:
            values = codes_to_hex(q)
            t = time.perf_counter()
            for v in values:
                tx.query(v)
            times.append(time.perf_counter() - t)
        med, p99 = stats(times)
        rows_out.append((name, f"threatexchange PDQIndex2 @{m // 1000}k", variants, radius, med, p99, nan, build, nan))
        print(f"  {name}: threatexchange PDQIndex2 at {m:,}: median {med:.0f} us", flush=True)
        del tx
        gc.collect()
    del words


if __name__ == "__main__":
    main()
