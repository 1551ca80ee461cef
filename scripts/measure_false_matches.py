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
   QUERY_DECODE_SIDE, then hash_image). The distance is the one the matcher sees: the
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

from measure_distances import print_table as _plain_table  # noqa: E402

PERCEPTUAL = (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH)
#: The largest side a photo is reduced to before a framing is drawn around it (a
#: re-upload is rarely bigger; it keeps 8 framings of a 4K wallpaper cheap).
FRAMING_BASE_SIDE = 1280
#: JPEG quality of the framed copies (what a phone or an app writes).
FRAMING_JPEG_QUALITY = 90
#: The side the scan decodes an upload to when there are banks to match (the larger
#: decode that copy detection asks for, where the product has one).
QUERY_DECODE_SIDE = max(defaults.DECODE_MIN_SIDE, getattr(defaults, "COPY_DECODE_MIN_SIDE", 0))
#: PDQ's quality threshold (ThreatExchange's PdqSignal.QUALITY_THRESHOLD).
PDQ_QUALITY_MIN = Algorithm.PDQ.spec.quality_threshold or 50
#: PDQ-quality buckets for the per-bucket counts: [low, high).
QUALITY_BUCKETS = ((0, 20), (20, 50), (50, 80), (80, 101))
#: Bank sizes and daily uploads the extrapolation is for.
BANK_SIZES = (1_000_000, 10_000_000)
UPLOADS_PER_DAY = 1_000_000


# -- the corpus and its framings ----------------------------------------------------------


#: Photos of one scene in scikit-image's data (a stereo pair): not unrelated.
SKIMAGE_RELATED = (frozenset({"motorcycle_left", "motorcycle_right"}),)


def corpus(cache_dir: Path | None, strict_only: bool = False) -> tuple[list[Path], str, tuple[frozenset[str], ...], dict[str, str]]:
    """The photos, where they come from, groups of photo names (file stems) that show
    one scene, and each photo's source package by file name (photos of one package may
    be variants of one picture: a crop, a blur, a tone-mapped copy, another shot of the
    same scene). scripts/photo_corpus.py when it is there, else scikit-image's."""
    try:
        import photo_corpus  # type: ignore[import-not-found]
    except ImportError:
        photo_corpus = None
    related = SKIMAGE_RELATED + tuple(frozenset(g) for g in getattr(photo_corpus, "RELATED", ()))
    if photo_corpus is not None:
        packages = {p.name: p.package for p in photo_corpus.manifest(cache_dir)}
        # Innocent uploads are not all strict photos: the looser photo-like pictures
        # (diagrams, screenshots, renders) are measured too unless --strict-only.
        try:
            paths = photo_corpus.photos(cache_dir, strict=strict_only)
        except TypeError:  # an older photo_corpus without the strict test
            paths = photo_corpus.photos(cache_dir)
        return list(paths), f"scripts/photo_corpus.py ({'strict photos' if strict_only else 'all pictures'})", related, packages
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    synthetic = {"chessboard_GRAY.png", "chessboard_RGB.png", "color.png", "horse.png", "logo.png", "phantom.png"}
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.name not in synthetic)
    return (paths, f"scikit-image data ({folder}); scripts/photo_corpus.py not found", related,
            {p.name: p.name for p in paths})


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

    ``as_query``: decode as the scan does (DCT-domain reduction to QUERY_DECODE_SIDE);
    otherwise as ``ban add`` does (full decode).
    """
    decoded = decode(data, min_side=QUERY_DECODE_SIDE) if as_query else decode(data)
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
               packages: dict[str, str], log: Callable[[str], None]) -> dict[str, object]:
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
              "nudity_block": 0, "nudity_quarantine": 0, "other_not_allowed": 0,
              "bank_match_same_package": 0, "bank_match_cross_package": 0}
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
            # ban add labels an entry with the banned file's name: its package tells a
            # variant of one picture (same package) from a different picture.
            mine = {packages.get(stored[x].path.name, "") for x in q.members}  # type: ignore[union-attr]
            same = any(packages.get(m.label, m.label) in mine for m in verdict.matches)
            counts["bank_match_same_package" if same else "bank_match_cross_package"] += 1
            false_blocks.append({"query": q.name, "framing": q.kind, "action": verdict.action.value,
                                 "same_package": same, "matches": [m.to_dict() for m in verdict.matches]})
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


# -- what the corpus's deduplication dropped ----------------------------------------------


def audit_corpus(out: Path, log: Callable[[str], None]) -> dict[str, object]:
    """Rebuild the corpus into ``out`` as photo_corpus.build does, recording every candidate
    its deduplication dropped (and which kept photo it was taken for a copy of) and every
    file its photo filter turned away for too little detail.

    The corpus keeps one photo per group within PDQ_DUPLICATE / PHASH_DUPLICATE bits, so
    pairs of *distinct* photos that close are never measured: this says how many there
    were. A contact sheet (out/dropped-pairs.jpg: kept left, dropped right) lets a person
    tell resolution or crop variants of one picture from distinct pictures.
    """
    import photo_corpus  # type: ignore[import-not-found]

    dropped: list[dict[str, object]] = []
    sheet_pairs: list[tuple[Image.Image, Image.Image]] = []
    low_detail = {"files": 0}
    original_dedup, original_filter = photo_corpus._deduplicate, photo_corpus.looks_like_photo

    def recording_dedup(candidates):  # type: ignore[no-untyped-def]
        kept = original_dedup(candidates)
        kept_ids = {id(k) for k in kept}
        for cand in candidates:
            if id(cand) in kept_ids:
                continue
            best = min(kept, key=lambda k: (int(np.count_nonzero(cand.pdq != k.pdq)),
                                            int(np.count_nonzero(cand.phash != k.phash))))
            pdq = int(np.count_nonzero(cand.pdq != best.pdq))
            phash = int(np.count_nonzero(cand.phash != best.phash))
            close = pdq <= getattr(photo_corpus, "PDQ_DUPLICATE", 31) or phash <= getattr(photo_corpus, "PHASH_DUPLICATE", 6)
            dropped.append({"dropped": f"{cand.package}:{cand.path.name}", "kept": f"{best.package}:{best.path.name}",
                            "pdq": pdq, "phash": phash, "why": "near-duplicate" if close else "series",
                            "same_package": cand.package == best.package,
                            "sizes": [list(best.image.size), list(cand.image.size)]})
            sheet_pairs.append((best.image.copy(), cand.image.copy()))
            sheet_pairs[-1][0].thumbnail((160, 160))
            sheet_pairs[-1][1].thumbnail((160, 160))
        return kept

    def recording_filter(img, **kwargs):  # type: ignore[no-untyped-def]
        ok = original_filter(img, **kwargs)
        if not ok and not kwargs.get("strict", False) and img.mode not in ("RGBA", "LA", "PA"):
            low_detail["files"] += 1
        return ok

    photo_corpus._deduplicate, photo_corpus.looks_like_photo = recording_dedup, recording_filter
    try:
        log(f"audit: rebuilding the corpus in {out}")
        kept = photo_corpus.build(out, verbose=False)
    finally:
        photo_corpus._deduplicate, photo_corpus.looks_like_photo = original_dedup, original_filter
    if sheet_pairs:
        cols = 4
        rows_n = -(-len(sheet_pairs) // cols)
        sheet = Image.new("RGB", (cols * 340, rows_n * 170), (255, 255, 255))
        for k, (a, b) in enumerate(sheet_pairs):
            x, y = (k % cols) * 340, (k // cols) * 170
            sheet.paste(a, (x, y))
            sheet.paste(b, (x + 165, y))
        sheet.save(out / "dropped-pairs.jpg", quality=85)
    cross = [d for d in dropped if not d["same_package"]]
    return {"kept": len(kept), "dropped": dropped, "dropped_count": len(dropped), "cross_package": len(cross),
            "filtered_out_files": low_detail["files"]}


# -- analysis -------------------------------------------------------------------------------

#: Pair categories: what the query is, what the bank entry was made from.
CATEGORIES = (
    "photo vs photo",
    "framed vs photo",
    "photo vs framed",
    "framed vs same framing",
    "framed vs other framing",
)


def categories(queries: list[Item], bank: list[Item]) -> np.ndarray:
    qk = np.array([q.kind for q in queries])
    sk = np.array([b.kind for b in bank])
    q_orig, s_orig = (qk == "original")[:, None], (sk == "original")[None, :]
    same = qk[:, None] == sk[None, :]
    out = np.full((len(queries), len(bank)), 4, dtype=np.int8)
    out[~q_orig & same] = 3
    out[q_orig & ~s_orig] = 2
    out[~q_orig & s_orig] = 1
    out[q_orig & s_orig] = 0
    return out


@dataclass
class Pairs:
    """Every (query item, stored item) pair and what the matcher would see."""

    queries: list[Item]
    bank: list[Item]
    dist: dict[Algorithm, np.ndarray]
    unrelated: np.ndarray
    #: Unrelated, and no photo of one comes from a package of the other's photos.
    cross: np.ndarray
    #: The query is a copy of the stored original (scan-decoded or framed): a true match.
    own: np.ndarray
    category: np.ndarray
    q_measure: dict[str, np.ndarray]
    s_measure: dict[str, np.ndarray]

    def pair_min(self, measure: str) -> np.ndarray:
        """The lower of the two sides' measure, per pair (float32: 20M pairs fit)."""
        return np.minimum(self.q_measure[measure][:, None], self.s_measure[measure][None, :]).astype(np.float32)

    def within(self, algorithm: Algorithm) -> np.ndarray:
        return self.dist[algorithm] <= algorithm.spec.default_distance


def build_pairs(queries: list[Item], stored: list[Item], related_names: Sequence[frozenset[str]],
                packages: dict[str, str]) -> Pairs:
    n = len(stored)
    # The bank may hold originals and framed copies alike: every item is stored and queried.
    bank = stored + queries[n:]
    unrelated = unrelated_mask(queries, bank)
    if related_names:  # photos of one scene that the corpus names: not unrelated either
        index = {it.name: i for i, it in enumerate(stored)}
        for names in related_names:
            group = {index[x] for x in names if x in index}
            if len(group) > 1:
                q_in = np.array([bool(q.members & group) for q in queries])
                s_in = np.array([bool(b.members & group) for b in bank])
                unrelated[np.ix_(q_in, s_in)] = False
    own = np.zeros_like(unrelated)
    for qi, q in enumerate(queries):
        if len(q.members) == 1:
            own[qi, next(iter(q.members))] = True
    dist = {a: distance_matrix(queries, bank, a) for a in PERCEPTUAL}
    # Photos as packages: a pair is cross-package when the two sides share no package.
    names = sorted({packages.get(it.path.name, it.path.name) for it in stored if it.path is not None})
    number = {name: k for k, name in enumerate(names)}
    of_photo = [number[packages.get(it.path.name, it.path.name)] for it in stored]  # type: ignore[union-attr]

    def by_package(items: list[Item]) -> np.ndarray:
        m = np.zeros((len(items), len(names)), dtype=np.float32)
        for i, it in enumerate(items):
            m[i, [of_photo[x] for x in it.members]] = 1
        return m

    cross = unrelated & ((by_package(queries) @ by_package(bank).T) == 0)
    return Pairs(queries, bank, dist, unrelated, cross, own, categories(queries, bank),
                 {m: np.array([q.measures[m] for q in queries]) for m in MEASURES},
                 {m: np.array([b.measures[m] for b in bank]) for m in MEASURES})


def rules(pairs: Pairs, gate_measure: str, gates: Sequence[float]) -> dict[str, np.ndarray]:
    """Each candidate rule: where it would call a pair a match."""
    pdq, ph, dh = (pairs.within(a) for a in PERCEPTUAL)
    q_pdq = pairs.pair_min("pdq_quality")
    pdq_strong = pdq & (q_pdq >= PDQ_QUALITY_MIN)
    both = ph & dh
    gm_both = pairs.pair_min(gate_measure)
    gm_query = pairs.q_measure[gate_measure][:, None]
    out: dict[str, np.ndarray] = {
        "PDQ <= 31 (any quality)": pdq,
        "PDQ <= 31, PDQ quality >= 50 both sides": pdq_strong,
        "pHash <= 8 alone": ph,
        "dHash <= 8 alone": dh,
        "pHash or dHash <= 8 (a lone 64-bit match)": ph | dh,
        "pHash AND dHash <= 8 (same entry)": both,
    }
    for g in gates:
        out[f"pHash AND dHash, {gate_measure} >= {g:g} both sides"] = both & (gm_both >= g)
        out[f"pHash AND dHash, {gate_measure} >= {g:g} query side"] = both & (gm_query >= g)
    out["old rule: PDQ(q>=50) or pHash or dHash"] = pdq_strong | ph | dh
    top = gates[-1] if gates else 0
    out[f"PDQ(q>=50) or (pHash AND dHash, {gate_measure} >= {top:g} both)"] = pdq_strong | (both & (gm_both >= top))
    return out


def rule_table(pairs: Pairs, candidate: dict[str, np.ndarray]) -> dict[str, dict[str, object]]:
    n_pairs = int(pairs.unrelated.sum())
    cat_pairs = [int((pairs.unrelated & (pairs.category == c)).sum()) for c in range(len(CATEGORIES))]
    own_pairs = int(pairs.own.sum())
    out = {}
    for name, hit in candidate.items():
        false = hit & pairs.unrelated
        k = int(false.sum())
        p = k / n_pairs if k else 3 / n_pairs
        out[name] = {
            "pairs": k,
            "by_category": {CATEGORIES[c]: int((false & (pairs.category == c)).sum()) for c in range(len(CATEGORIES))},
            "query_photos": len({pairs.queries[i].name for i in np.flatnonzero(false.any(axis=1))}),
            "p": p,
            "upper_bound": not k,
            "true_matches_caught": int((hit & pairs.own).sum()),
            "true_pairs": own_pairs,
            **{f"per_upload_{s}": p * s for s in BANK_SIZES},
            **{f"per_day_{s}": p * s * UPLOADS_PER_DAY for s in BANK_SIZES},
        }
    out["_pairs"] = {"unrelated": n_pairs, "by_category": dict(zip(CATEGORIES, cat_pairs))}  # type: ignore[assignment]
    return out


def measure_table(pairs: Pairs, n_originals: int, quantiles: Sequence[float],
                  within: np.ndarray | None = None) -> dict[str, object]:
    """How well each information measure separates the false 64-bit matches from true ones
    (only the pairs in ``within``, if given)."""
    ph, dh = pairs.within(Algorithm.PHASH), pairs.within(Algorithm.DHASH)
    scope = pairs.unrelated if within is None else pairs.unrelated & within
    lone = np.nonzero(scope & (ph | dh))
    both = np.nonzero(scope & ph & dh)
    true = np.nonzero(pairs.own & (ph | dh))
    out: dict[str, object] = {}
    for m in MEASURES:
        qm, sm = pairs.q_measure[m], pairs.s_measure[m]
        photos = sm[:n_originals]

        def at(idx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return np.minimum(qm[idx[0]], sm[idx[1]])

        f_lone, f_both, t = at(lone), at(both), at(true)
        auc = float("nan")
        if len(f_lone) and len(t):
            auc = float((f_lone[:, None] < t[None, :]).mean() + 0.5 * (f_lone[:, None] == t[None, :]).mean())
        worst = float(f_lone.max()) if len(f_lone) else float("nan")
        sweep = []
        for qt in quantiles:
            g = float(np.quantile(photos, qt))
            sweep.append({"gated_photos": qt, "gate": g,
                          "lone_false_left": int((f_lone > g).sum()), "both_false_left": int((f_both > g).sum()),
                          "true_kept": float((t > g).mean()) if len(t) else float("nan")})
        out[m] = {"what": MEASURES[m], "photos_median": float(np.median(photos)),
                  "false_lone_median": float(np.median(f_lone)) if len(f_lone) else float("nan"),
                  "true_median": float(np.median(t)) if len(t) else float("nan"),
                  "worst_false": worst, "photos_at_or_below_worst": float((photos <= worst).mean()),
                  "true_kept_above_worst": float((t > worst).mean()) if len(t) else float("nan"),
                  "auc": auc, "sweep": sweep,
                  "n_false_lone": len(f_lone), "n_false_both": len(f_both), "n_true": len(t)}
    return out


# -- reporting -----------------------------------------------------------------------------


def print_table(headers: list[str], rows: list[list[object]], left: tuple[int, ...] = (0,)) -> None:
    """measure_distances.py's plain-text table, then a blank line."""
    _plain_table(headers, rows, left)
    print()


def _e(x: float | None, bound: bool = False) -> str:
    return "-" if x is None else f"{'<' if bound else ''}{x:.1e}"


def report_distances(pairs: Pairs) -> dict[str, object]:
    print("== distance the matcher sees between unrelated items (min over the query's variants) ==")
    rows, out = [], {}
    for a in PERCEPTUAL:
        d = pairs.dist[a][pairs.unrelated]
        hist = np.bincount(d, minlength=a.bits + 1)
        pct = np.percentile(d, [0.001, 0.01, 0.1, 1, 50])
        within = int((d <= a.spec.default_distance).sum())
        rows.append([a.spec.label, a.bits, a.spec.default_distance, int(d.min()), *(f"{p:g}" for p in pct),
                     f"{d.mean():.1f}", f"{d.std():.1f}", within])
        out[a.value] = {"bits": a.bits, "match_distance": a.spec.default_distance, "min": int(d.min()),
                        "percentiles": dict(zip(["0.001", "0.01", "0.1", "1", "50"], map(float, pct))),
                        "mean": float(d.mean()), "std": float(d.std()), "within_match_distance": within,
                        "histogram": hist.tolist()}
    print_table(["hash", "bits", "match <=", "min", "p0.001%", "p0.01%", "p0.1%", "p1%", "median", "mean", "std",
                 "pairs within"], rows)
    print("lower tail: unrelated pairs at distance <= d")
    for a in PERCEPTUAL:
        cum = np.cumsum(out[a.value]["histogram"])  # type: ignore[index]
        top, step = (48, 4) if a is Algorithm.PDQ else (14, 1)
        print(f"  {a.spec.label:6} " + "  ".join(f"<={t}:{int(cum[t])}" for t in range(0, top + 1, step)))
    print()
    return out


def report_breakdowns(pairs: Pairs) -> dict[str, object]:
    out: dict[str, object] = {}
    print("== unrelated pairs within the match distance, by the query's framing (stored: any item) ==")
    kinds = np.array([q.kind for q in pairs.queries])
    rows, by_kind = [], {}
    for kind in dict.fromkeys(kinds.tolist()):
        sel = (kinds == kind)[:, None] & pairs.unrelated
        counts = {a.value: int((pairs.within(a) & sel).sum()) for a in PERCEPTUAL}
        by_kind[kind] = {"pairs": int(sel.sum()), **counts}
        rows.append([kind, f"{int(sel.sum()):,}", *counts.values()])
    print_table(["query", "pairs", *(a.spec.label for a in PERCEPTUAL)], rows)
    out["by_query_framing"] = by_kind

    print("== unrelated pairs within the match distance, by PDQ quality (the lower of the two sides) ==")
    q = pairs.pair_min("pdq_quality")
    rows, by_q = [], {}
    for lo, hi in QUALITY_BUCKETS:
        sel = pairs.unrelated & (q >= lo) & (q < hi)
        counts = {a.value: int((pairs.within(a) & sel).sum()) for a in PERCEPTUAL}
        label = f"{lo}-{min(hi, 100)}"
        by_q[label] = {"pairs": int(sel.sum()), **counts}
        rows.append([label, f"{int(sel.sum()):,}", *counts.values()])
    print_table(["PDQ quality", "pairs", *(a.spec.label for a in PERCEPTUAL)], rows)
    out["by_pdq_quality"] = by_q
    return out


def report_measures(table: dict[str, object], title: str = "") -> None:
    any_m = next(iter(table.values()))
    print(f"== information measures for the 64-bit hashes' quality gate{title} ==")
    print(f"false 64-bit matches (unrelated, pHash or dHash within 8): {any_m['n_false_lone']} pairs, "  # type: ignore[index]
          f"{any_m['n_false_both']} with both; true ones (a copy vs its own original): {any_m['n_true']}")  # type: ignore[index]
    rows = []
    for m, r in table.items():
        r = dict(r)  # type: ignore[arg-type]
        rows.append([m, f"{r['photos_median']:.1f}", f"{r['false_lone_median']:.1f}", f"{r['true_median']:.1f}",
                     f"{r['auc']:.3f}", f"{r['worst_false']:.1f}", f"{r['photos_at_or_below_worst']:.0%}",
                     f"{r['true_kept_above_worst']:.0%}"])
    print_table(["measure", "photos median", "false median", "true median", "AUC", "worst false",
                 "photos <= worst", "true kept > worst"], rows)
    print("gate at a quantile of the photos (a pair passes when both sides are above the gate):")
    rows = []
    for m, r in table.items():
        for s in r["sweep"]:  # type: ignore[index]
            rows.append([m, f"{s['gated_photos']:.0%}", f"{s['gate']:.1f}", s["lone_false_left"], s["both_false_left"],
                         f"{s['true_kept']:.0%}"])
    print_table(["measure", "photos gated", "gate", "lone false left", "both false left", "true kept"], rows)
    for m, what in MEASURES.items():
        print(f"  {m}: {what}")
    print("  AUC: the chance that a false match's measure is lower than a true match's (1 = perfect separation)\n")


def report_rules(table: dict[str, dict[str, object]]) -> None:
    meta = table["_pairs"]
    n_pairs = meta["unrelated"]
    print("== unrelated pairs each rule would match (false matches), and extrapolated to large banks ==")
    print("pairs by category: " + ", ".join(f"{k} {v:,}" for k, v in meta["by_category"].items()))  # type: ignore[union-attr]
    print(f"p = false pairs / {n_pairs:,} unrelated pairs (rule of three, p < 3/n, when none); expected false matches"
          f" per upload = p x entries; per day at {UPLOADS_PER_DAY:,} uploads")
    rows = []
    for name, r in table.items():
        if name.startswith("_"):
            continue
        cats = r["by_category"]
        b = bool(r["upper_bound"])
        rows.append([name, r["pairs"], *cats.values(), r["query_photos"],  # type: ignore[union-attr]
                     f"{r['true_matches_caught']}/{r['true_pairs']}", _e(r["p"], b),  # type: ignore[arg-type]
                     *(_e(r[f"per_upload_{s}"], b) for s in BANK_SIZES),  # type: ignore[arg-type]
                     *(_e(r[f"per_day_{s}"], b) for s in BANK_SIZES)])  # type: ignore[arg-type]
    print_table(["rule", "false", "p-p", "f-p", "p-f", "f-same", "f-other", "photos", "true caught", "p per pair",
                 "per upload 1M", "per upload 10M", "per day 1M", "per day 10M"], rows)
    print("  p-p: photo vs photo; f-p: framed upload vs banned photo; p-f: photo vs banned framed copy; f-same/f-other:"
          " framed vs a banned copy framed the same way / another way; photos: distinct query photos involved;"
          " true caught: copies matched to their own original\n")


def report_tail_fit(pairs: Pairs, distances: dict[str, object]) -> dict[str, object]:
    n_pairs = int(pairs.unrelated.sum())
    print("== fitted lower tail (probit: Phi^-1(F(d)) linear in d, fitted over the lowest 5% of unrelated pairs) ==")
    rows, out = [], {}
    for a in PERCEPTUAL:
        hist = np.array(distances[a.value]["histogram"])  # type: ignore[index]
        fit = probit_tail_fit(hist, n_pairs)
        rows_a = []
        for t in ((16, 24, 31) if a is Algorithm.PDQ else (4, 6, 8)):
            p_fit = tail_probability(fit, t)
            emp = int(np.cumsum(hist)[t])
            out[f"{a.value}<={t}"] = {"fit": fit, "p_fit": p_fit, "p_empirical": emp / n_pairs, "empirical_pairs": emp,
                                      **{f"per_upload_{s}": None if p_fit is None else p_fit * s for s in BANK_SIZES}}
            rows_a.append([f"{a.spec.label} <= {t}", emp, _e(emp / n_pairs if emp else 3 / n_pairs, not emp),
                           _e(p_fit), *(_e(None if p_fit is None else p_fit * s) for s in BANK_SIZES),
                           *(_e(None if p_fit is None else p_fit * s * UPLOADS_PER_DAY) for s in BANK_SIZES)])
        rows.extend(rows_a)
    print_table(["distance", "pairs", "p empirical", "p fitted", "per upload 1M", "per upload 10M", "per day 1M",
                 "per day 10M"], rows)
    return out


def report_closest(pairs: Pairs, how_many: int) -> list[dict[str, object]]:
    print(f"== the {how_many} closest unrelated pairs by pHash + dHash (and every pHash AND dHash match) ==")
    ph, dh, pd = pairs.dist[Algorithm.PHASH], pairs.dist[Algorithm.DHASH], pairs.dist[Algorithm.PDQ]
    score = np.where(pairs.unrelated, ph.astype(np.int32) + dh, 10_000)
    flat = list(np.argsort(score, axis=None)[:how_many])
    both = np.flatnonzero((pairs.unrelated & pairs.within(Algorithm.PHASH) & pairs.within(Algorithm.DHASH)).ravel())
    flat += [i for i in both if i not in set(flat)]
    rows, out = [], []
    for idx in flat:
        qi, si = np.unravel_index(idx, score.shape)
        q, s = pairs.queries[qi], pairs.bank[si]
        rows.append([f"{q.name} [{q.kind}]", f"{s.name} [{s.kind}]", int(pd[qi, si]), int(ph[qi, si]), int(dh[qi, si]),
                     *(f"{q.measures[m]:.0f}/{s.measures[m]:.0f}" if m == "pdq_quality" else
                       f"{q.measures[m]:.1f}/{s.measures[m]:.1f}" for m in MEASURES)])
        out.append({"query": q.name, "query_framing": q.kind, "stored": s.name, "stored_framing": s.kind,
                    "pdq": int(pd[qi, si]), "phash": int(ph[qi, si]), "dhash": int(dh[qi, si]),
                    "query_measures": q.measures, "stored_measures": s.measures})
    print_table(["query", "stored", "PDQ", "pHash", "dHash", *(f"{m} q/s" for m in MEASURES)], rows, left=(0, 1))
    return out


def contact_sheet(pairs: Pairs, out: Path, limit: int = 80) -> int:
    """Side-by-side thumbnails (query left, stored right) of the unrelated pairs that a lone
    PDQ, pHash or dHash match would join, closest first, so a person can check that each
    really shows two different pictures. Returns how many pairs it shows."""
    hit = pairs.unrelated & (pairs.within(Algorithm.PDQ) | pairs.within(Algorithm.PHASH)
                             | pairs.within(Algorithm.DHASH))
    qi, si = np.nonzero(hit)
    # One per unordered pair of items: (a, b) and (b, a) look the same on a sheet.
    seen, chosen = set(), []
    order = np.argsort(pairs.dist[Algorithm.PHASH][qi, si].astype(np.int32) + pairs.dist[Algorithm.DHASH][qi, si])
    for k in order:
        a, b = pairs.queries[qi[k]], pairs.bank[si[k]]
        key = frozenset({(a.name, a.kind), (b.name, b.kind)})
        if key not in seen:
            seen.add(key)
            chosen.append((qi[k], si[k]))
        if len(chosen) >= limit:
            break
    if not chosen:
        return 0
    cols, cell = 3, 150
    sheet = Image.new("RGB", (cols * (2 * cell + 30), -(-len(chosen) // cols) * (cell + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (q, s_) in enumerate(chosen):
        x, y = (k % cols) * (2 * cell + 30), (k // cols) * (cell + 16)
        for j, item in enumerate((pairs.queries[q], pairs.bank[s_])):
            if item.path is None:
                continue
            with Image.open(item.path) as img:
                thumb = img.convert("RGB")
                thumb.thumbnail((cell, cell))
            sheet.paste(thumb, (x + j * (cell + 4), y))
        d = [int(pairs.dist[a][q, s_]) for a in PERCEPTUAL]
        draw.text((x, y + cell + 2), f"#{k} pdq {d[0]} ph {d[1]} dh {d[2]}", fill=(0, 0, 0))
    sheet.save(out)
    return len(chosen)


def report_e2e(e2e: dict[str, object]) -> None:
    c = e2e["counts"]
    print(f"== end to end: {len(e2e['banned'])} photos banned with `photosentry ban add`, "  # type: ignore[arg-type]
          f"{c['scanned']} items showing none of them scanned with photosentry.scan ==")  # type: ignore[index]
    print_table(["outcome", "items"], [[k, v] for k, v in c.items()])  # type: ignore[union-attr]
    for fb in e2e["false_blocks"]:  # type: ignore[union-attr]
        found = "; ".join(f"{m['algorithm']} d={m['distance']} entry {m['entry_id']} ({m['label']})"
                          f"{' weak' if m['weak'] else ''}" for m in fb["matches"])
        where = "same package" if fb["same_package"] else "CROSS-PACKAGE"
        print(f"  {fb['action']} ({where}): {fb['query']} [{fb['framing']}]: {found}")
    print("copies of the banned photos caught (bank_match block or quarantine), by framing: "
          + ", ".join(f"{k} {v['caught']}/{v['of']}" for k, v in e2e["true_copies_caught"].items()))  # type: ignore[union-attr]
    print(f"(scanning took {e2e['scan_seconds']} s)\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--cache-dir", type=Path, default=None, help="where photo_corpus.py keeps the photos")
    parser.add_argument("--strict-only", action="store_true",
                        help="only the corpus's strict photos (default: every picture it keeps, as uploads are)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos (a quick run)")
    parser.add_argument("--framings", default="all",
                        help="comma-separated framing names to apply, 'all' or 'none' (names: "
                        + ", ".join(f.name for f in FRAMINGS).replace("%", "%%") + ")")
    parser.add_argument("--gate-measure", choices=sorted(MEASURES), default="pdq_quality",
                        help="the information measure the gated rules use (default pdq_quality)")
    parser.add_argument("--gates", default="20,30,40,50", help="gate values the rules table tries (default 20,30,40,50)")
    parser.add_argument("--e2e-ban", type=int, default=50, metavar="N",
                        help="end to end: ban N photos and scan the rest with their framings (0 skips it; default 50)")
    parser.add_argument("--seed", type=int, default=17, help="which photos the end-to-end run bans")
    parser.add_argument("--closest", type=int, default=12, help="list this many closest unrelated 64-bit pairs")
    parser.add_argument("--audit-corpus", type=Path, default=None, metavar="DIR",
                        help="only rebuild the corpus into DIR recording what its deduplication dropped (with a"
                             " contact sheet of the dropped pairs) and print that")
    parser.add_argument("--sheet", type=Path, default=None, metavar="FILE.png",
                        help="save a contact sheet of the unrelated pairs a lone hash would match, to check by eye")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every number as JSON")
    args = parser.parse_args(argv)
    try:
        gates = [float(g) for g in args.gates.split(",") if g.strip()]
    except ValueError:
        parser.error(f"--gates: {args.gates!r} is not a list of numbers")
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    if args.audit_corpus is not None:
        audit = audit_corpus(args.audit_corpus, log)
        print(f"corpus rebuilt in {args.audit_corpus}: {audit['kept']} photos kept, {audit['dropped_count']} candidates"
              f" dropped as near-duplicates or series members ({audit['cross_package']} of them nearest a photo"
              " from another package),"
              f" {audit['filtered_out_files']} opaque files turned away by the photo filter")
        print_table(["dropped", "nearest kept", "PDQ", "pHash", "why", "same package"],
                    [[d["dropped"], d["kept"], d["pdq"], d["phash"], d.get("why", ""), d["same_package"]]
                     for d in sorted(audit["dropped"], key=lambda d: (d["phash"], d["pdq"]))], left=(0, 1))  # type: ignore[union-attr]
        if args.json:
            args.json.write_text(json.dumps(audit, indent=1, default=str))
        return 0

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

    paths, source, related_names, packages = corpus(args.cache_dir, args.strict_only)
    if args.limit:
        paths = paths[: args.limit]
    report: dict[str, object] = {"source": source, "command": " ".join(["python", *sys.argv])}
    with tempfile.TemporaryDirectory(prefix="photosentry-falsematch-") as tmp:
        work = Path(tmp)
        log(f"hashing {len(paths)} photos and {len(framings)} framings of each")
        stored, queries, skipped = build_items(paths, framings, work, log)
        n = len(stored)
        hashed_at = time.monotonic()
        print(f"photos: {n} from {source}" + (f"; skipped {len(skipped)}: {'; '.join(skipped)}" if skipped else ""))
        print(f"items: {len(queries)} queries ({n} originals as the scan decodes them + {len(queries) - n} framings:"
              f" {', '.join(f.name for f in framings) or 'none'}); bank: {n} originals as `ban add` hashes them"
              f" + the {len(queries) - n} framings")
        if related_names:
            print("same-scene photos, kept out of the unrelated pairs: "
                  + "; ".join(" & ".join(sorted(g)) for g in related_names))
        log("distances")
        pairs = build_pairs(queries, stored, related_names, packages)
        every = pairs.unrelated
        n_pairs, n_cross = int(every.sum()), int(pairs.cross.sum())
        report.update(photos=n, query_items=len(queries), stored_items=len(pairs.bank), unrelated_pairs=n_pairs,
                      cross_package_pairs=n_cross, framings=[f.name for f in framings], skipped=skipped)
        print(f"ordered unrelated pairs (query x stored item, no photo in common): {n_pairs:,}; of which"
              f" cross-package (no source package in common): {n_cross:,}\n")
        print("######## A. cross-package pairs: two different pictures for certain ########\n")
        pairs.unrelated = pairs.cross
        cross: dict[str, object] = {"pairs": n_cross}
        cross["distances"] = report_distances(pairs)
        cross.update(report_breakdowns(pairs))
        measures = measure_table(pairs, n, (0.02, 0.05, 0.10, 0.20, 0.30))
        report_measures(measures)
        cross["measures"] = measures
        # The bank as moderators fill it: the banned photo itself, not a framed copy of it.
        originals_only = np.zeros(len(pairs.bank), dtype=bool)
        originals_only[:n] = True
        measures_o = measure_table(pairs, n, (0.02, 0.05, 0.10, 0.20, 0.30), originals_only[None, :])
        report_measures(measures_o, ", bank of originals only (the stored side is a photo, not a framed copy)")
        cross["measures_bank_of_originals"] = measures_o
        cross["rules"] = rule_table(pairs, rules(pairs, args.gate_measure, gates))
        report_rules(cross["rules"])  # type: ignore[arg-type]
        cross["tail_fit"] = report_tail_fit(pairs, cross["distances"])  # type: ignore[arg-type]
        cross["closest"] = report_closest(pairs, args.closest)
        if args.sheet is not None:
            shown = contact_sheet(pairs, args.sheet)
            print(f"contact sheet of {shown} matched cross-package pairs: {args.sheet}\n")
        report["cross_package"] = cross
        print("######## B. every unrelated pair, photos of one package included (which holds variants of one"
              " picture: blurs, warps, tone maps, crops, other shots of one scene) ########\n")
        pairs.unrelated = every
        every_r: dict[str, object] = {"pairs": n_pairs}
        every_r["distances"] = report_distances(pairs)
        every_r.update(report_breakdowns(pairs))
        every_r["rules"] = rule_table(pairs, rules(pairs, args.gate_measure, gates))
        report_rules(every_r["rules"])  # type: ignore[arg-type]
        report["all_pairs"] = every_r
        report["analysis_seconds"] = round(time.monotonic() - hashed_at, 1)
        report["hashing_seconds"] = round(hashed_at - started, 1)
        del pairs
        if args.e2e_ban > 0:
            log(f"end to end: ban {args.e2e_ban} photos, scan the rest and their framings")
            e2e = end_to_end(stored, queries, args.e2e_ban, args.seed, work, packages, log)
            report["end_to_end"] = e2e
            report_e2e(e2e)

    elapsed = time.monotonic() - started
    report["seconds"] = round(elapsed, 1)
    print(f"total time: {elapsed:.0f} s (hashing {report['hashing_seconds']} s, pairs {report['analysis_seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
