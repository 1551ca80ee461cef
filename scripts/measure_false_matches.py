#!/usr/bin/env python
"""Measure false matches between distinct real photos, and what they mean at 1M and 10M entries.

Issue #17: a lone 64-bit match (pHash or dHash within 8) blocked a photo of dune grass as
a copy of a dark lake photo. This script measures how often the hashes of *different*
photos come within the match distance, on several hundred distinct real photos
(scripts/photo_corpus.py) and on framings of them (letterbox onto 9:16 and 1:1, a
border, a caption bar, a phone screenshot, a 2x2 collage, two crops), and extrapolates
to banks of 1M and 10M entries.

1. Hashes: every photo is hashed as ``photosentry ban add`` hashes a banned image (full
   decode) and, with each framing, as the scan hashes an upload (decode at
   DECODE_MIN_SIDE, then hash_image). The distance is the one the matcher sees: the
   minimum over the query's variants (PDQ 8, pHash 8, dHash 2) against the stored
   canonical hash.
2. Pairs: every ordered pair (query, stored) of items that show no photo in common:
   original vs original, framing vs other originals, framing vs framing. Distance
   histograms, pairs within the match distance per algorithm, per PDQ-quality bucket,
   and per combination rule (pHash AND dHash, PDQ with quality >= 50 on both sides, ...).
3. Information measures for a 64-bit quality gate (PDQ quality of the frame, the mean
   gradient, the dHash thumbnail's margin, the pHash coefficients' margin): the
   smallest gate that removes every false 64-bit match, and what it costs in photos
   gated and in true matches (a photo against its own framings) lost.
4. Extrapolation: per-pair false-match probability (empirical; rule of three when none
   was seen; a probit fit of each algorithm's lower tail), times the bank size.
5. End to end: ban --e2e-ban photos with ``photosentry ban add`` in a fresh data
   directory, scan every other photo and framing with photosentry.scan, and count
   verdicts blocked or quarantined for a ``bank_match`` reason (the public API and
   reason codes only, so it measures whatever rule the product has now).

    python scripts/measure_false_matches.py                 # tables
    python scripts/measure_false_matches.py --json out.json # and the numbers as JSON
    python scripts/measure_false_matches.py --limit 60 --e2e-ban 10   # a quick run
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from photosentry import defaults  # noqa: E402
from photosentry.decode import decode  # noqa: E402
from photosentry.hashes.algorithms import Algorithm  # noqa: E402
from photosentry.hashes.perceptual import DHASH_SIZE, PHASH_SIDE  # noqa: E402
from photosentry.hashes.signals import ImageHashes, hash_image  # noqa: E402

PERCEPTUAL = (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH)
#: The largest side a photo is reduced to before a framing is drawn around it (a
#: re-upload is rarely bigger; it keeps 8 framings of a 4K wallpaper cheap).
FRAMING_BASE_SIDE = 1280
#: JPEG quality of the framed copies (what a phone or an app writes).
FRAMING_JPEG_QUALITY = 90
#: PDQ's quality threshold (ThreatExchange's PdqSignal.QUALITY_THRESHOLD).
PDQ_QUALITY_MIN = Algorithm.PDQ.spec.quality_threshold or 50
#: PDQ-quality buckets for the per-bucket counts: [low, high).
QUALITY_BUCKETS = ((0, 20), (20, 50), (50, 80), (80, 101))
#: Bank sizes and daily uploads the extrapolation is for.
BANK_SIZES = (1_000_000, 10_000_000)
UPLOADS_PER_DAY = 1_000_000


# -- the corpus and its framings ----------------------------------------------------------


def corpus(cache_dir: Path | None) -> tuple[list[Path], str]:
    """The photos: scripts/photo_corpus.py when it is there, else scikit-image's."""
    try:
        import photo_corpus  # type: ignore[import-not-found]
    except ImportError:
        photo_corpus = None
    if photo_corpus is not None:
        return list(photo_corpus.photos(cache_dir)), "scripts/photo_corpus.py"
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    synthetic = {"chessboard_GRAY.png", "chessboard_RGB.png", "color.png", "horse.png", "logo.png", "phantom.png"}
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.name not in synthetic)
    return paths, f"scikit-image data ({folder}); scripts/photo_corpus.py not found"


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """``img`` scaled to fit inside ``box``, aspect kept."""
    scale = min(box[0] / img.width, box[1] / img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)


def _pad_to(img: Image.Image, aspect_w: int, aspect_h: int, fill: tuple[int, int, int]) -> Image.Image:
    w, h = img.size
    if w * aspect_h > h * aspect_w:
        size = (w, round(w * aspect_h / aspect_w))
    else:
        size = (round(h * aspect_w / aspect_h), h)
    canvas = Image.new("RGB", size, fill)
    canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def letterbox_9_16(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    return _pad_to(img, 9, 16, (0, 0, 0))


def letterbox_1_1(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    return _pad_to(img, 1, 1, (0, 0, 0))


def border(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    pad = max(1, round(0.08 * max(img.size)))
    canvas = Image.new("RGB", (img.width + 2 * pad, img.height + 2 * pad), (255, 255, 255))
    canvas.paste(img, (pad, pad))
    return canvas


def caption(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    bar = max(12, round(0.18 * img.height))
    canvas = Image.new("RGB", (img.width, img.height + bar), (255, 255, 255))
    canvas.paste(img, (0, bar))
    draw = ImageDraw.Draw(canvas)
    # Text as a meme caption has it: dark strokes across the bar.
    size = max(10, bar // 3)
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):
        font = None
    draw.text((bar // 4, bar // 3), "when the weekend finally arrives", fill=(20, 20, 20), font=font)
    return canvas


def screenshot(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    """A phone screenshot of a photo in a chat app: 9:16, bars and UI around it."""
    width, height = 720, 1280
    canvas = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, 48), fill=(30, 30, 30))
    draw.text((20, 14), "09:41", fill=(255, 255, 255))
    draw.rectangle((0, 48, width, 140), fill=(0, 110, 200))
    draw.ellipse((20, 64, 80, 124), fill=(220, 220, 220))
    draw.text((100, 84), "Alex", fill=(255, 255, 255))
    shown = _fit(img, (width - 80, 800))
    canvas.paste(shown, ((width - shown.width) // 2, 180))
    draw.rounded_rectangle((20, height - 110, width - 20, height - 40), radius=30, fill=(255, 255, 255),
                           outline=(200, 200, 200))
    draw.text((50, height - 82), "Message", fill=(150, 150, 150))
    return canvas


def collage(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    """A 2x2 grid: this photo top left, the next three photos of the corpus beside it."""
    cell = (512, 512)
    canvas = Image.new("RGB", (2 * cell[0] + 12, 2 * cell[1] + 12), (255, 255, 255))
    for k, part in enumerate((img, *others[:3])):
        shown = _fit(part, cell)
        x, y = (k % 2) * (cell[0] + 12), (k // 2) * (cell[1] + 12)
        canvas.paste(shown, (x + (cell[0] - shown.width) // 2, y + (cell[1] - shown.height) // 2))
    return canvas


def crop_center(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    w, h = img.size
    return img.crop((w // 10, h // 10, w - w // 10, h - h // 10))


def crop_corner(img: Image.Image, others: Sequence[Image.Image]) -> Image.Image:
    w, h = img.size
    return img.crop((0, 0, round(0.6 * w), round(0.6 * h)))


@dataclass(frozen=True)
class Framing:
    name: str
    make: Callable[[Image.Image, Sequence[Image.Image]], Image.Image]
    #: How many other photos it shows (the collage's three).
    others: int = 0


FRAMINGS: tuple[Framing, ...] = (
    Framing("letterbox 9:16", letterbox_9_16),
    Framing("letterbox 1:1", letterbox_1_1),
    Framing("border 8%", border),
    Framing("caption bar", caption),
    Framing("screenshot", screenshot),
    Framing("collage 2x2", collage, others=3),
    Framing("crop centre 80%", crop_center),
    Framing("crop corner 60%", crop_corner),
)


# -- hashing, as the product does it ----------------------------------------------------


@dataclass
class Item:
    """One image: an original photo or a framing of one."""

    name: str
    kind: str  # "original" or a framing's name
    #: Indices of the corpus photos it shows (a collage shows four).
    members: frozenset[int]
    #: Canonical hashes, as a bank entry stores them (uint64 words).
    stored: dict[Algorithm, np.ndarray] = field(default_factory=dict)
    #: Query variants, as the scan tries them (variants x words).
    variants: dict[Algorithm, np.ndarray] = field(default_factory=dict)
    #: Information measures of the frame (see MEASURES).
    measures: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


def _words(hex_value: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_value), dtype=">u8").astype(np.uint64)


def _frame_measures(rgb: np.ndarray, pdq_quality: int, dhash_hex: str) -> dict[str, float]:
    """Candidate information measures of one frame, each on the thumbnail its hash sees."""
    grey = Image.fromarray(rgb).convert("L")
    d = np.asarray(grey.resize(DHASH_SIZE, Image.Resampling.LANCZOS), dtype=np.float64)
    diffs = np.abs(d[:, 1:] - d[:, :-1])
    p = np.asarray(grey.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    k = np.arange(8, dtype=np.float64)[:, None]
    x = np.arange(PHASH_SIDE, dtype=np.float64)[None, :]
    dct = 2.0 * np.cos(math.pi * k * (2 * x + 1) / (2 * PHASH_SIDE))
    low = dct @ p @ dct.T
    # Unit: grey levels of the thumbnail (the DCT rows sum 2 x 32 samples per axis).
    margin = np.abs(low - np.median(low)).ravel()
    g = np.asarray(grey.resize((64, 64), Image.Resampling.BOX), dtype=np.float64)
    gradient = (np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()) / 2
    ones = bin(int(dhash_hex, 16)).count("1")
    return {
        "pdq_quality": float(pdq_quality),
        "gradient": float(gradient),
        "dhash_margin": float(np.median(diffs)),
        "phash_margin": float(np.median(margin) / PHASH_SIDE**2),
        "dhash_balance": float(min(ones, 64 - ones)),
    }


#: name -> what it is, for the tables.
MEASURES = {
    "pdq_quality": "PDQ's own quality (0-100) of the same frame",
    "gradient": "mean |neighbour difference| of the 64x64 grey thumbnail (grey levels)",
    "dhash_margin": "median |column difference| in dHash's 9x8 thumbnail (grey levels)",
    "phash_margin": "median |coefficient - median| of pHash's 8x8 DCT block (grey levels)",
    "dhash_balance": "min(ones, zeros) of the dHash (from the hash alone)",
}


def hash_item(data: bytes, *, as_query: bool) -> tuple[dict[Algorithm, np.ndarray], dict[Algorithm, np.ndarray], dict[str, float]]:
    """Stored values, query variants and measures of one file.

    ``as_query``: decode as the scan does (DCT-domain reduction to DECODE_MIN_SIDE);
    otherwise as ``ban add`` does (full decode).
    """
    decoded = decode(data, min_side=defaults.DECODE_MIN_SIDE) if as_query else decode(data)
    hashes: ImageHashes = hash_image(data, decoded.frames[:1], decoded.frame_indices[:1],
                                     source_size=(decoded.width, decoded.height), reduction=decoded.reduction)
    frame = hashes.frames[0]
    stored, variants = {}, {}
    quality = 0
    for algorithm in PERCEPTUAL:
        ph = frame.get(algorithm)
        assert ph is not None
        stored[algorithm] = _words(ph.value)
        variants[algorithm] = np.stack([_words(v) for v in ph.variants])
        if algorithm is Algorithm.PDQ:
            quality = ph.quality or 0
    measures = _frame_measures(decoded.frames[0], quality, frame.get(Algorithm.DHASH).value)  # type: ignore[union-attr]
    return stored, variants, measures


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=FRAMING_JPEG_QUALITY)
    return buf.getvalue()


def build_items(paths: list[Path], framings: Sequence[Framing], work: Path, log: Callable[[str], None]) -> tuple[list[Item], list[Item], list[str]]:
    """Originals as stored (ban add) and as queried (scan), and every framing as queried.

    Returns (stored originals, query items: originals first then framings, skipped)."""
    bases: list[Image.Image] = []
    stored_items: list[Item] = []
    kept: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        data = path.read_bytes()
        try:
            stored, variants, measures = hash_item(data, as_query=False)
            rgb = decode(data, min_side=FRAMING_BASE_SIDE).frames[0]
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            skipped.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        index = len(kept)
        kept.append(path)
        img = Image.fromarray(rgb)
        if max(img.size) > FRAMING_BASE_SIDE:
            img = _fit(img, (FRAMING_BASE_SIDE, FRAMING_BASE_SIDE))
        bases.append(img)
        stored_items.append(Item(path.stem, "original", frozenset({index}), stored, variants, measures, path))
        if len(kept) % 50 == 0:
            log(f"  hashed {len(kept)} originals")
    n = len(kept)
    queries: list[Item] = []
    for index, path in enumerate(kept):
        stored, variants, measures = hash_item(path.read_bytes(), as_query=True)
        queries.append(Item(path.stem, "original", frozenset({index}), stored, variants, measures, path))
    for f_no, framing in enumerate(framings):
        for index in range(n):
            others = [(index + k) % n for k in range(1, framing.others + 1)]
            img = framing.make(bases[index], [bases[o] for o in others])
            data = _jpeg(img)
            out = work / f"{index:04d}-{f_no}.jpg"
            out.write_bytes(data)
            stored, variants, measures = hash_item(data, as_query=True)
            queries.append(Item(kept[index].stem, framing.name, frozenset({index, *others}), stored, variants,
                                measures, out))
        log(f"  framed and hashed: {framing.name}")
    return stored_items, queries, skipped


# -- distances ----------------------------------------------------------------------------


def distance_matrix(queries: list[Item], stored: list[Item], algorithm: Algorithm, chunk: int = 32) -> np.ndarray:
    """d[q, s] = min over q's variants of popcount(variant XOR s's canonical hash)."""
    s = np.stack([it.stored[algorithm] for it in stored])  # (S, W)
    n_var = max(len(it.variants[algorithm]) for it in queries)
    # Pad variant lists to one length by repeating the first (the minimum is unchanged).
    v = np.stack([np.concatenate([it.variants[algorithm],
                                  np.repeat(it.variants[algorithm][:1], n_var - len(it.variants[algorithm]), axis=0)])
                  for it in queries])  # (Q, V, W)
    out = np.empty((len(queries), len(stored)), dtype=np.uint16)
    for start in range(0, len(queries), chunk):
        x = v[start:start + chunk, :, None, :] ^ s[None, None, :, :]  # (c, V, S, W)
        d = np.bitwise_count(x).sum(axis=-1, dtype=np.uint16)
        out[start:start + chunk] = d.min(axis=1)
    return out


def unrelated_mask(queries: list[Item], stored: list[Item]) -> np.ndarray:
    """True where the query and the stored item show no photo in common."""
    n = 1 + max(max(it.members) for it in (*queries, *stored))

    def onehot(items: list[Item]) -> np.ndarray:
        m = np.zeros((len(items), n), dtype=np.float32)
        for i, it in enumerate(items):
            m[i, list(it.members)] = 1
        return m

    return (onehot(queries) @ onehot(stored).T) == 0


# -- extrapolation --------------------------------------------------------------------------


def _norm_ppf(p: float) -> float:
    # Acklam's rational approximation (|error| < 1.2e-9): no scipy needed.
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549671492935371e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_norm_ppf(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def probit_tail_fit(hist: np.ndarray, total: int, *, max_cdf: float = 0.05, min_count: int = 10) -> tuple[float, float] | None:
    """Fit Phi^-1(F(d)) = a + b*d on the lower tail of a distance histogram.

    Uses every distance whose cumulative count is at least ``min_count`` pairs and whose
    cumulative share is at most ``max_cdf`` (the lower 5%): the part of the
    distribution a false match comes from, not the bulk around the median. Weighted
    by the cumulative count (a point from more pairs is surer). None: fewer than 3 points.
    """
    cum = np.cumsum(hist)
    xs, ys, ws = [], [], []
    for dist, count in enumerate(cum):
        if count >= min_count and count / total <= max_cdf:
            xs.append(dist + 0.5)  # F(d) is P(D <= d); the continuity correction
            ys.append(_norm_ppf(count / total))
            ws.append(math.sqrt(count))
    if len(xs) < 3:
        return None
    b, a = np.polyfit(np.array(xs), np.array(ys), 1, w=np.array(ws))
    return float(a), float(b)


def tail_probability(fit: tuple[float, float] | None, threshold: int) -> float | None:
    if fit is None:
        return None
    a, b = fit
    return _norm_cdf(a + b * (threshold + 0.5))


# -- end to end ----------------------------------------------------------------------------


def end_to_end(stored: list[Item], queries: list[Item], n_ban: int, seed: int, work: Path,
               log: Callable[[str], None]) -> dict[str, object]:
    """Ban ``n_ban`` photos with the CLI in a fresh data dir; scan every query item that shows
    none of them with the public API; count bank_match blocks and quarantines."""
    import photosentry

    rng = random.Random(seed)
    banned = sorted(rng.sample(range(len(stored)), min(n_ban, len(stored))))
    banned_set = set(banned)
    data_dir = work / "data"
    data_dir.mkdir()
    env = {**os.environ, "PHOTOSENTRY_HOME": str(data_dir)}
    cmd = [sys.executable, "-c", "from photosentry.cli import cli; cli()", "--data-dir", str(data_dir), "ban", "add",
           *(str(stored[i].path) for i in banned), "--by", "measure_false_matches", "--reason", "issue 17 measurement"]
    added = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if added.returncode != 0:
        raise RuntimeError(f"ban add failed ({added.returncode}): {added.stderr.strip()}")
    scanner = photosentry.new_scanner(data_dir=data_dir, threads=1)
    t0 = time.monotonic()
    counts = {"scanned": 0, "bank_match_block": 0, "bank_match_quarantine": 0, "bank_match_weak_only": 0,
              "nudity_block": 0, "nudity_quarantine": 0, "other_not_allowed": 0}
    false_blocks: list[dict[str, object]] = []
    # The banned photos' own framings: true matches, to show the setup catches copies.
    caught = {f: [0, 0] for f in ("original", *(q.kind for q in queries))}
    for q in queries:
        verdict = photosentry.scan(q.path.read_bytes(), scanner=scanner)  # type: ignore[union-attr]
        codes = {r.code.value: r.action.value for r in verdict.reasons}
        bank_action = codes.get("bank_match")
        if q.members & banned_set:  # shows a banned photo: a true match
            caught[q.kind][1] += 1
            caught[q.kind][0] += int(bank_action in ("block", "quarantine"))
            continue
        counts["scanned"] += 1
        if bank_action in ("block", "quarantine"):
            counts[f"bank_match_{bank_action}"] += 1
            false_blocks.append({"query": q.name, "framing": q.kind, "action": verdict.action.value,
                                 "matches": [m.to_dict() for m in verdict.matches]})
        elif verdict.matches:
            counts["bank_match_weak_only"] += 1
        nudity = codes.get("nudity")
        if nudity in ("block", "quarantine"):
            counts[f"nudity_{nudity}"] += 1
        if verdict.action.value != "allow" and bank_action is None and nudity is None:
            counts["other_not_allowed"] += 1
        if counts["scanned"] % 250 == 0:
            log(f"  scanned {counts['scanned']} unrelated items")
    return {
        "banned": [stored[i].name for i in banned],
        "counts": counts,
        "false_blocks": false_blocks,
        "true_copies_caught": {k: {"caught": v[0], "of": v[1]} for k, v in caught.items() if v[1]},
        "scan_seconds": round(time.monotonic() - t0, 1),
    }


# -- reporting -----------------------------------------------------------------------------


def print_table(headers: list[str], rows: list[list[object]], left: tuple[int, ...] = (0,)) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def fmt(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(fmt(r))
    print()


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--cache-dir", type=Path, default=None, help="where photo_corpus.py keeps the photos")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos (a quick run)")
    parser.add_argument("--framings", default="all",
                        help="comma-separated framing names to apply, 'all' or 'none' (names: "
                        + ", ".join(f.name for f in FRAMINGS) + ")")
    parser.add_argument("--e2e-ban", type=int, default=50, metavar="N",
                        help="end to end: ban N photos and scan the rest (0 skips it; default 50)")
    parser.add_argument("--seed", type=int, default=17, help="which photos the end-to-end run bans")
    parser.add_argument("--closest", type=int, default=12, help="list this many closest unrelated 64-bit pairs")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every number as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    if args.framings == "all":
        framings = FRAMINGS
    elif args.framings == "none":
        framings = ()
    else:
        wanted = {w.strip() for w in args.framings.split(",")}
        framings = tuple(f for f in FRAMINGS if f.name in wanted)
        unknown = wanted - {f.name for f in framings}
        if unknown:
            parser.error(f"unknown framings: {', '.join(sorted(unknown))}")

    paths, source = corpus(args.cache_dir)
    if args.limit:
        paths = paths[: args.limit]
    report: dict[str, object] = {"source": source}
    with tempfile.TemporaryDirectory(prefix="photosentry-falsematch-") as tmp:
        work = Path(tmp)
        log(f"hashing {len(paths)} photos and {len(framings)} framings of each")
        stored, queries, skipped = build_items(paths, framings, work, log)
        n = len(stored)
        print(f"photos: {n} from {source}" + (f"; skipped {len(skipped)}: {'; '.join(skipped)}" if skipped else ""))
        print(f"query items: {len(queries)} ({n} originals + {len(queries) - n} framings: "
              f"{', '.join(f.name for f in framings) or 'none'})")
        # The bank may hold originals and framed copies alike: every item is stored and queried.
        bank = stored + queries[n:]
        related = ~unrelated_mask(queries, bank)
        kinds = np.array([q.kind for q in queries])
        log("distances")
        dist = {a: distance_matrix(queries, bank, a) for a in PERCEPTUAL}
        unrelated = ~related
        n_pairs = int(unrelated.sum())
        limits = {a: a.spec.default_distance for a in PERCEPTUAL}
        print(f"ordered unrelated pairs (query x stored, no photo in common): {n_pairs:,}")
        report.update(photos=n, query_items=len(queries), stored_items=len(bank), unrelated_pairs=n_pairs,
                      framings=[f.name for f in framings], skipped=skipped)

        # -- distance distribution per algorithm
        print("\n== distance the matcher sees between unrelated items (min over query variants) ==")
        rows, dist_report = [], {}
        hists = {}
        for a in PERCEPTUAL:
            d = dist[a][unrelated]
            hist = np.bincount(d, minlength=a.bits + 1)
            hists[a] = hist
            pct = np.percentile(d, [0.001, 0.01, 0.1, 1, 50]) if len(d) else [0] * 5
            within = int((d <= limits[a]).sum())
            rows.append([a.spec.label, a.bits, limits[a], int(d.min()), *(f"{p:g}" for p in pct), f"{d.mean():.1f}",
                         f"{d.std():.1f}", within])
            dist_report[a.value] = {"bits": a.bits, "match_distance": limits[a], "min": int(d.min()),
                                    "percentiles": dict(zip(["0.001", "0.01", "0.1", "1", "50"], map(float, pct))),
                                    "mean": float(d.mean()), "std": float(d.std()), "within_match_distance": within,
                                    "histogram": hist[: a.bits // 2 + 1].tolist()}
        print_table(["hash", "bits", "match <=", "min", "p0.001%", "p0.01%", "p0.1%", "p1%", "median", "mean",
                     "std", "pairs within"], rows)
        report["distances"] = dist_report
        print("lower tail, pairs at distance <= d (unrelated):")
        for a in PERCEPTUAL:
            cum = np.cumsum(hists[a])
            top = 48 if a is Algorithm.PDQ else 14
            step = 4 if a is Algorithm.PDQ else 1
            print(f"  {a.spec.label:6} " + "  ".join(f"<={t}:{int(cum[t])}" for t in range(0, top + 1, step)))
        print()

        # -- per framing kind (query side)
        print("== unrelated pairs within the match distance, by the query's framing (stored: any item) ==")
        rows, by_kind = [], {}
        for kind in ["original", *(f.name for f in framings)]:
            sel = (kinds == kind)[:, None] & unrelated
            counts = {a.value: int((dist[a][sel] <= limits[a]).sum()) for a in PERCEPTUAL}
            by_kind[kind] = {"pairs": int(sel.sum()), **counts}
            rows.append([kind, f"{int(sel.sum()):,}", *counts.values()])
        print_table(["query", "pairs", *(a.spec.label for a in PERCEPTUAL)], rows)
        report["by_query_framing"] = by_kind

        # -- quality per item
        mq = {m: np.array([q.measures[m] for q in queries]) for m in MEASURES}
        ms = {m: np.array([b.measures[m] for b in bank]) for m in MEASURES}
        pair_min = {m: np.minimum(mq[m][:, None], ms[m][None, :]) for m in MEASURES}

        print("== unrelated pairs within the match distance, by PDQ quality (the lower of the two sides) ==")
        rows, by_q = [], {}
        for lo, hi in QUALITY_BUCKETS:
            sel = unrelated & (pair_min["pdq_quality"] >= lo) & (pair_min["pdq_quality"] < hi)
            counts = {a.value: int((dist[a][sel] <= limits[a]).sum()) for a in PERCEPTUAL}
            label = f"{lo}-{min(hi, 100)}"
            by_q[label] = {"pairs": int(sel.sum()), **counts}
            rows.append([label, f"{int(sel.sum()):,}", *counts.values()])
        print_table(["PDQ quality", "pairs", *(a.spec.label for a in PERCEPTUAL)], rows)
        report["by_pdq_quality"] = by_q

        # -- information measures: which one separates the low-detail false matches
        pd, ph, dh = (dist[a] for a in PERCEPTUAL)
        lone64 = unrelated & ((ph <= limits[Algorithm.PHASH]) | (dh <= limits[Algorithm.DHASH]))
        both64 = unrelated & (ph <= limits[Algorithm.PHASH]) & (dh <= limits[Algorithm.DHASH])
        # True matches: a framing (or the scan-decoded original) against its own stored original.
        own = np.zeros_like(related)
        for qi, q in enumerate(queries):
            if len(q.members) == 1:
                own[qi, next(iter(q.members))] = True
        true64 = own & ((ph <= limits[Algorithm.PHASH]) | (dh <= limits[Algorithm.DHASH]))
        print("== information measures for a 64-bit quality gate ==")
        print(f"false 64-bit matches (unrelated, pHash or dHash within 8): {int(lone64.sum())}; "
              f"true 64-bit matches (an item vs its own original): {int(true64.sum())}")
        rows, gate_report = [], {}
        stored_vals = {m: ms[m][:n] for m in MEASURES}
        for m, what in MEASURES.items():
            false_vals = pair_min[m][lone64]
            true_vals = pair_min[m][true64]
            if len(false_vals):
                gate = float(false_vals.max())
                # The smallest gate above every false match: keep pairs with min(measure) > gate.
                kept_true = float((true_vals > gate).mean()) if len(true_vals) else float("nan")
                gated = float((stored_vals[m] <= gate).mean())
                # Rank separation: P(a random false match's measure < a random true match's).
                auc = float((false_vals[:, None] < true_vals[None, :]).mean()
                            + 0.5 * (false_vals[:, None] == true_vals[None, :]).mean()) if len(true_vals) else float("nan")
            else:
                gate, kept_true, gated, auc = float("nan"), 1.0, 0.0, float("nan")
            pct_false = np.percentile(false_vals, [50, 90]) if len(false_vals) else [float("nan")] * 2
            gate_report[m] = {"what": what, "false_match_max": gate, "photos_gated_at_that": gated,
                              "true_matches_kept": kept_true, "auc": auc,
                              "false_median": float(pct_false[0]), "all_photos_median": float(np.median(stored_vals[m])),
                              "photos_p10": float(np.percentile(stored_vals[m], 10))}
            rows.append([m, f"{np.median(stored_vals[m]):.1f}", f"{np.percentile(stored_vals[m], 10):.1f}",
                         f"{pct_false[0]:.1f}", f"{gate:.1f}", f"{gated:.1%}", f"{kept_true:.1%}", f"{auc:.3f}"])
        print_table(["measure", "photos median", "photos p10", "false-match median", "false-match max",
                     "photos <= max", "true matches kept", "AUC"], rows)
        for m, what in MEASURES.items():
            print(f"  {m}: {what}")
        print("  (a pair's measure is the lower of its two sides; 'photos <= max' is the share of originals a gate "
              "just above the worst false match would make weak; AUC: chance a false match scores lower than a "
              "true one)\n")
        report["measures"] = gate_report

        # -- rules
        q_ok = pair_min["pdq_quality"] >= PDQ_QUALITY_MIN
        pdq_hit = pd <= limits[Algorithm.PDQ]
        gate_measure = "pdq_quality"
        gate_sweep = (0, 20, 30, 40, 50)
        rules: dict[str, np.ndarray] = {
            "PDQ <= 31 (any quality)": pdq_hit,
            "PDQ <= 31, quality >= 50 both sides": pdq_hit & q_ok,
            "pHash <= 8 alone": ph <= limits[Algorithm.PHASH],
            "dHash <= 8 alone": dh <= limits[Algorithm.DHASH],
            "pHash or dHash <= 8 (lone 64-bit)": (ph <= limits[Algorithm.PHASH]) | (dh <= limits[Algorithm.DHASH]),
            "pHash AND dHash <= 8 (same photo)": (ph <= limits[Algorithm.PHASH]) & (dh <= limits[Algorithm.DHASH]),
        }
        for g in gate_sweep[1:]:
            rules[f"pHash AND dHash <= 8, PDQ quality >= {g} both"] = (
                rules["pHash AND dHash <= 8 (same photo)"] & (pair_min[gate_measure] >= g))
        rules["old rule: PDQ(q>=50) or pHash or dHash"] = (pdq_hit & q_ok) | rules["pHash or dHash <= 8 (lone 64-bit)"]
        rules["PDQ(q>=50) or (pHash AND dHash, q>=50)"] = (pdq_hit & q_ok) | rules[
            "pHash AND dHash <= 8, PDQ quality >= 50 both"]

        print("== unrelated pairs matched per rule, and extrapolated to large banks ==")
        print(f"p = matched pairs / {n_pairs:,} pairs (rule of three, 3/n, when none); expected false matches per "
              f"upload = p x bank entries; per day at {UPLOADS_PER_DAY:,} uploads")
        rows, rule_report = [], {}
        for name, hit in rules.items():
            k = int((hit & unrelated).sum())
            photos_involved = len({queries[i].name for i in np.flatnonzero((hit & unrelated).any(axis=1))})
            p = k / n_pairs if k else 3 / n_pairs
            bound = "" if k else "<"
            per = {size: p * size for size in BANK_SIZES}
            rule_report[name] = {"pairs": k, "query_photos": photos_involved, "p": p, "upper_bound": not k,
                                 **{f"per_upload_{size}": v for size, v in per.items()},
                                 **{f"per_day_{size}": v * UPLOADS_PER_DAY for size, v in per.items()}}
            rows.append([name, k, photos_involved, f"{bound}{p:.1e}", *(f"{bound}{per[s]:.2g}" for s in BANK_SIZES),
                         *(f"{bound}{per[s] * UPLOADS_PER_DAY:.2g}" for s in BANK_SIZES)])
        print_table(["rule", "pairs", "query photos", "p per pair", "per upload 1M", "per upload 10M", "per day 1M",
                     "per day 10M"], rows)
        report["rules"] = rule_report

        print("== fitted lower tail (probit: Phi^-1(F(d)) linear in d over the lowest 5% of pairs) ==")
        rows, fit_report = [], {}
        for a in PERCEPTUAL:
            fit = probit_tail_fit(hists[a], n_pairs)
            t = limits[a]
            p_fit = tail_probability(fit, t)
            emp = int(np.cumsum(hists[a])[t])
            fit_report[a.value] = {"fit": fit, "threshold": t, "p_fit": p_fit, "p_empirical": emp / n_pairs,
                                   **{f"per_upload_{s}": (p_fit or 0) * s for s in BANK_SIZES}}
            rows.append([a.spec.label, t, f"{emp / n_pairs:.1e}" if emp else f"<{3 / n_pairs:.1e}", _e(p_fit),
                         *(_e(None if p_fit is None else p_fit * s) for s in BANK_SIZES),
                         *(_e(None if p_fit is None else p_fit * s * UPLOADS_PER_DAY) for s in BANK_SIZES)])
        print_table(["hash", "d <=", "p empirical", "p fitted", "per upload 1M", "per upload 10M", "per day 1M",
                     "per day 10M"], rows)
        report["tail_fit"] = fit_report

        # -- closest unrelated pairs (64-bit), to see what the false matches are
        print(f"== the {args.closest} closest unrelated pairs by pHash + dHash ==")
        score = np.where(unrelated, ph.astype(np.int32) + dh, 10_000)
        flat = np.argsort(score, axis=None)[: args.closest]
        rows, closest = [], []
        for idx in flat:
            qi, si = np.unravel_index(idx, score.shape)
            q, s = queries[qi], bank[si]
            rows.append([f"{q.name} [{q.kind}]", f"{s.name} [{s.kind}]", int(pd[qi, si]), int(ph[qi, si]),
                         int(dh[qi, si]), int(q.measures["pdq_quality"]), int(s.measures["pdq_quality"]),
                         f"{q.measures['gradient']:.1f}/{s.measures['gradient']:.1f}"])
            closest.append({"query": q.name, "query_framing": q.kind, "stored": s.name, "stored_framing": s.kind,
                            "pdq": int(pd[qi, si]), "phash": int(ph[qi, si]), "dhash": int(dh[qi, si]),
                            "query_measures": q.measures, "stored_measures": s.measures})
        print_table(["query", "stored", "PDQ", "pHash", "dHash", "q PDQq", "s PDQq", "gradient q/s"], rows, left=(0, 1))
        report["closest"] = closest

        if args.e2e_ban > 0:
            log(f"end to end: ban {args.e2e_ban} photos, scan the rest and their framings")
            e2e = end_to_end(stored, queries, args.e2e_ban, args.seed, work, log)
            report["end_to_end"] = e2e
            c = e2e["counts"]
            print(f"== end to end: {len(e2e['banned'])} photos banned (photosentry ban add), "  # type: ignore[arg-type]
                  f"{c['scanned']} unrelated items scanned with photosentry.scan ==")  # type: ignore[index]
            print_table(["outcome", "items"], [[k, v] for k, v in c.items()])  # type: ignore[union-attr]
            for fb in e2e["false_blocks"]:  # type: ignore[union-attr]
                ms_ = "; ".join(f"{m['algorithm']} d={m['distance']} entry {m['entry_id']} ({m['label']})"
                                f"{' weak' if m['weak'] else ''}" for m in fb["matches"])
                print(f"  FALSE {fb['action']}: {fb['query']} [{fb['framing']}]: {ms_}")
            print("copies of the banned photos caught (bank_match block or quarantine), by framing: "
                  + ", ".join(f"{k} {v['caught']}/{v['of']}" for k, v in e2e["true_copies_caught"].items()))  # type: ignore[union-attr]
            print(f"(scanning took {e2e['scan_seconds']} s)\n")

    elapsed = time.monotonic() - started
    report["seconds"] = round(elapsed, 1)
    print(f"total time: {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
