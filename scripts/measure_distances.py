#!/usr/bin/env python
"""Measure perceptual-hash distances between real photos and their transformed copies.

For every photo bundled in scikit-image's data folder (real photographs only; the
synthetic test patterns are skipped, see SYNTHETIC), this script makes transformed
copies (re-encoded, resized, mirrored, rotated, cropped, brightened, blurred, a white
bar drawn over it), decodes and hashes each copy exactly as the scan pipeline does
(photosentry.decode.decode, then PdqSignal / PHashSignal / DHashSignal.hash_frame), and
measures the distance the matcher would see: the minimum over the copy's query
variants against the original's canonical (stored) hash.

It also measures every ordered pair of *different* photos the same way, which is the
distance distribution a false match would come from.

The numbers back the defaults in photosentry/defaults.py; docs/matching.md quotes
this script's output.

    python scripts/measure_distances.py            # summary tables
    python scripts/measure_distances.py --detail   # plus every photo x transform
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from photosentry.decode import decode
from photosentry.hashes.algorithms import Algorithm
from photosentry.hashes.signals import FRAME_SIGNALS, FrameSignal, PdqSignal

try:
    import skimage.data
except ImportError:  # pragma: no cover - scikit-image is a test dependency
    sys.exit("scikit-image is needed for its bundled photos: pip install -e '.[test]'")

DATA_DIR = Path(skimage.data.__file__).parent

#: Files in skimage/data that are drawings or synthetic test patterns, not photos.
SYNTHETIC = {
    "chessboard_GRAY.png": "synthetic checkerboard",
    "chessboard_RGB.png": "synthetic checkerboard",
    "color.png": "synthetic colour wheel",
    "horse.png": "binary silhouette",
    "logo.png": "drawn logo",
    "phantom.png": "synthetic Shepp-Logan phantom",
}

#: Pairs of bundled photos that show the same scene, so a short distance between them
#: is a true near-duplicate, not a false match. Reported, but kept out of the
#: unrelated-pair statistics.
RELATED_PAIRS = {frozenset({"motorcycle_left", "motorcycle_right"})}

SIGNALS: tuple[type[FrameSignal], ...] = FRAME_SIGNALS


# -- transforms -----------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    name: str
    apply: Callable[[Image.Image], Image.Image]
    #: JPEG quality for the copy's file, or None to use --copy-format.
    jpeg_quality: int | None = None


def _resize(factor: float) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        w, h = img.size
        return img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.LANCZOS)

    return f


def _crop(fraction: float) -> Callable[[Image.Image], Image.Image]:
    # Same convention as tests/corpus.py: `fraction` of the width and of the height is
    # cut from *each* edge, so a 10% crop keeps the central 80% x 80%.
    def f(img: Image.Image) -> Image.Image:
        w, h = img.size
        dx, dy = int(w * fraction), int(h * fraction)
        return img.crop((dx, dy, w - dx, h - dy))

    return f


def _white_bar(img: Image.Image) -> Image.Image:
    out = img.copy()
    w, h = out.size
    ImageDraw.Draw(out).rectangle((0, h - max(1, round(h * 0.10)), w, h), fill=(255, 255, 255))
    return out


TRANSFORMS: tuple[Transform, ...] = (
    Transform("jpeg q90", lambda i: i, 90),
    Transform("jpeg q70", lambda i: i, 70),
    Transform("jpeg q50", lambda i: i, 50),
    Transform("jpeg q30", lambda i: i, 30),
    Transform("resize 50%", _resize(0.5)),
    Transform("resize 25%", _resize(0.25)),
    Transform("mirror", lambda i: i.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    Transform("rotate 90", lambda i: i.transpose(Image.Transpose.ROTATE_90)),
    Transform("crop 3%", _crop(0.03)),
    Transform("crop 5%", _crop(0.05)),
    Transform("crop 10%", _crop(0.10)),
    Transform("brightness +10%", lambda i: ImageEnhance.Brightness(i).enhance(1.10)),
    Transform("gaussian blur r=1", lambda i: i.filter(ImageFilter.GaussianBlur(radius=1))),
    Transform("white bar 10% h", _white_bar),
)


# -- hashing, exactly as the pipeline does ---------------------------------------------


@dataclass(frozen=True)
class Hashed:
    """One decoded photo's hashes: canonical value and query variants per signal."""

    value: dict[str, str]
    variants: dict[str, tuple[str, ...]]
    pdq_quality: int
    #: Algorithms whose hash is too weak to match on its own (the registry's rule: PDQ's quality).
    weak: frozenset[str]


def hash_file_bytes(data: bytes) -> Hashed:
    decoded = decode(data)
    rgb = decoded.frames[0]
    image = Image.fromarray(rgb)
    value, variants, quality, weak = {}, {}, 0, set()
    for signal in SIGNALS:
        ph = signal.hash_frame(rgb, image)
        value[signal.algorithm.value] = ph.value
        variants[signal.algorithm.value] = ph.variants
        if ph.quality is not None:
            quality = ph.quality
        if ph.weak:
            weak.add(signal.algorithm.value)
    return Hashed(value, variants, quality, frozenset(weak))


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def match_distance(stored: Hashed, query: Hashed, algorithm: str) -> int:
    """What BankMatcher sees: min over the query's variants vs the stored canonical hash."""
    target = stored.value[algorithm]
    return min(hamming(v, target) for v in query.variants[algorithm])


# -- reporting ------------------------------------------------------------------------


def percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


def print_table(headers: list[str], rows: list[list[object]], left: tuple[int, ...] = (0,)) -> None:
    """A plain-text table; columns in ``left`` are left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def fmt(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(fmt(r))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Distances are Hamming distances of 256 bits (PDQ) or 64 bits (pHash, dHash). "
        "Thresholds shown are photosentry.defaults.",
    )
    parser.add_argument(
        "--copy-format",
        choices=("png", "jpeg"),
        default="png",
        help="file format of the non-JPEG copies (default png: lossless, so only the transform itself is "
        "measured; jpeg stores them as JPEG q90, like a re-upload would)",
    )
    parser.add_argument("--detail", action="store_true", help="also print every photo x transform distance")
    parser.add_argument(
        "--include-synthetic", action="store_true", help="also use the synthetic images listed in SYNTHETIC"
    )
    parser.add_argument("--closest", type=int, default=5, help="list this many closest unrelated pairs (default 5)")
    args = parser.parse_args(argv)

    thresholds = {s.algorithm.value: s.algorithm.spec.default_distance for s in SIGNALS}
    algorithms = [s.algorithm.value for s in SIGNALS]

    files = sorted(p for p in DATA_DIR.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    originals: dict[str, Hashed] = {}
    images: dict[str, Image.Image] = {}
    skipped: list[str] = []
    for path in files:
        if path.name in SYNTHETIC and not args.include_synthetic:
            skipped.append(f"{path.name} ({SYNTHETIC[path.name]})")
            continue
        data = path.read_bytes()
        try:
            hashed = hash_file_bytes(data)
            rgb = decode(data).frames[0]
        except Exception as exc:  # noqa: BLE001 - report and go on
            skipped.append(f"{path.name} ({type(exc).__name__}: {exc})")
            continue
        originals[path.stem] = hashed
        images[path.stem] = Image.fromarray(rgb)

    names = list(originals)
    print(f"photos: {len(names)} from {DATA_DIR}")
    print("  " + ", ".join(f"{n} ({images[n].width}x{images[n].height}, pdq quality {originals[n].pdq_quality})" for n in names))
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    print(f"non-JPEG copies stored as: {args.copy_format}; crop N% cuts N% from each edge (centred)")
    print()

    # distances[algorithm][transform] = [distance per photo]
    distances: dict[str, dict[str, list[int]]] = {a: {t.name: [] for t in TRANSFORMS} for a in algorithms}
    weak: dict[str, int] = {t.name: 0 for t in TRANSFORMS}
    # per transform: photos caught by each algorithm alone and by any (as the policy sees it)
    caught_any: dict[str, list[str]] = {t.name: [] for t in TRANSFORMS}
    detail_rows: list[list[object]] = []
    for name in names:
        for t in TRANSFORMS:
            copy = t.apply(images[name])
            if t.jpeg_quality is not None:
                data = encode(copy, "jpeg", t.jpeg_quality)
            else:
                data = encode(copy, args.copy_format)
            q = hash_file_bytes(data)
            if q.weak:
                weak[t.name] += 1
            row: list[object] = [name, t.name]
            hit = []
            for a in algorithms:
                d = match_distance(originals[name], q, a)
                distances[a][t.name].append(d)
                row.append(d)
                # A match from a weak (low-quality PDQ) query hash never counts alone.
                if d <= thresholds[a] and a not in q.weak:
                    hit.append(a)
            caught_any[t.name].append(name if hit else "")
            row.append(q.pdq_quality)
            detail_rows.append(row)

    if args.detail:
        print("== every photo x transform (distance the matcher sees) ==")
        print_table(["photo", "transform", *algorithms, "pdq quality"], detail_rows, left=(0, 1))
        print()

    # Unrelated photos: every ordered pair (query photo j against stored photo i).
    pair_distances: dict[str, list[tuple[int, str, str]]] = {a: [] for a in algorithms}
    related: dict[str, list[tuple[int, str, str]]] = {a: [] for a in algorithms}
    for i in names:
        for j in names:
            if i == j:
                continue
            for a in algorithms:
                d = match_distance(originals[i], originals[j], a)
                bucket = related if frozenset({i, j}) in RELATED_PAIRS else pair_distances
                bucket[a].append((d, j, i))

    for a in algorithms:
        limit = thresholds[a]
        bits = Algorithm(a).bits
        unrelated = sorted(d for d, _, _ in pair_distances[a])
        print(f"== {a} ({bits} bits, default match distance {limit}) ==")
        rows = []
        for t in TRANSFORMS:
            ds = distances[a][t.name]
            caught = sum(d <= limit for d in ds)
            rows.append(
                [
                    t.name,
                    f"{statistics.median(ds):g}",
                    max(ds),
                    f"{caught}/{len(ds)}",
                    "yes" if max(ds) <= limit else "NO",
                ]
            )
        print_table(["transform", "median", "max", "caught", f"max<={limit}"], rows)
        print(
            f"unrelated photos ({len(unrelated)} ordered pairs, min over query variants): "
            f"min {unrelated[0]}, 1st pct {percentile(unrelated, 1):.1f}, median {statistics.median(unrelated):g}"
        )
        closest = sorted(pair_distances[a])[: args.closest]
        print("  closest: " + "; ".join(f"{q} vs {s} {d}" for d, q, s in closest))
        if related[a]:
            print("  same-scene pairs (excluded above): " + "; ".join(f"{q} vs {s} {d}" for d, q, s in sorted(related[a])))
        print()

    print("== what another distance would do (64-bit hashes) ==")
    sweep = (4, 6, 8, 10, 12, 14, 16, 18)
    rows = []
    for a in (a for a in algorithms if Algorithm(a).bits == 64):
        copies = [d for ds in distances[a].values() for d in ds]
        crops = [d for t in ("crop 3%", "crop 5%") for d in distances[a][t]]
        unrelated = [d for d, _, _ in pair_distances[a]]
        rows.append([f"{a} copies caught (of {len(copies)})", *(sum(d <= t for d in copies) for t in sweep)])
        rows.append([f"{a} crop 3-5% caught (of {len(crops)})", *(sum(d <= t for d in crops) for t in sweep)])
        rows.append([f"{a} unrelated pairs within (of {len(unrelated)})", *(sum(d <= t for d in unrelated) for t in sweep)])
    print_table(["distance <=", *map(str, sweep)], rows)
    print()

    print("== caught by the product (any algorithm within its default; weak PDQ does not count) ==")
    rows = []
    for t in TRANSFORMS:
        names_caught = caught_any[t.name]
        missed = [n for n, c in zip(names, names_caught) if not c]
        rows.append([t.name, f"{len(names) - len(missed)}/{len(names)}", ", ".join(missed) or "-"])
    print_table(["transform", "caught", "missed"], rows, left=(0, 2))
    print()

    print("== false-match arithmetic for uniformly random hashes ==")
    for bits, ks, variants in ((64, (4, 6, 8, 10, 18), (8, 2)), (256, (31,), (8,))):
        total = 2**bits
        for k in ks:
            p = sum(math.comb(bits, i) for i in range(k + 1)) / total
            per_variant = ", ".join(f"x{v} variants {p * v:.2e} (x 1e6 entries: {p * v * 1e6:.2e})" for v in variants)
            print(f"  {bits} bits, P(d <= {k}) = {p:.2e}; {per_variant}")
    print()

    print("== PDQ quality of the copies ==")
    print(
        f"copies with PDQ quality < {PdqSignal.QUALITY_THRESHOLD} (their PDQ matches are weak and do not count alone): "
        + ", ".join(f"{t} {n}" for t, n in weak.items() if n)
        if any(weak.values())
        else f"every copy has PDQ quality >= {PdqSignal.QUALITY_THRESHOLD}"
    )
    low = [n for n in names if originals[n].weak]
    if low:
        print(f"originals with PDQ quality < {PdqSignal.QUALITY_THRESHOLD}: {', '.join(low)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
