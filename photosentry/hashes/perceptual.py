"""The perceptual hash algorithms as array maths on one frame, with every variant from one transform.

Why not call ``pdqhash`` and ``imagehash`` directly: the answers are the same, but the
scan pays for work it does not need. ``pdqhash.compute_dihedral`` converts the frame to
luminance in float64, box-filters every pixel four times, then builds its eight
variants bit by bit in Python; ``imagehash.phash`` runs once per transposed thumbnail.
Here each algorithm does its linear work once, as small matrix products, and derives
the dihedral variants from one DCT by sign flips and transposes (a mirrored image's DCT
is the original's with every odd frequency negated; a transposed image's is the
transpose).

- **PDQ** (ThreatExchange ``pdqhashing.cpp``): luminance 0.299 R + 0.587 G + 0.114 B;
  two passes of a box filter along each axis (window ``ceil(n / 128)``, shortened at
  the edges); the 64x64 samples at the centres; the 16x16 DCT of those; a bit per
  coefficient above the median (Torben's, i.e. the lower middle value); quality from
  the 64x64 samples' gradients. The filter-and-decimate along an axis is linear, so it
  is a 64 x n matrix, a band a few windows wide: 64 x 64 samples cost two banded sums
  instead of four passes over the frame.
- **Frames reduced from a larger photo** (the scan decodes JPEGs at 1/2 to 1/8 scale,
  each pixel the mean of an r x r block): the matrix is built for the photo's *own*
  size and each row summed over the blocks, which is exactly PDQ's filter applied to
  the block means. Running PDQ on the small frame as if it were the photo would use
  a window rounded to the small size and move 6-24 bits on real photos at 1/8 scale;
  the block-matched filter stays within 2 of the full-resolution hash
  (docs/models.md, ``scripts/bench_scan.py --hash-drift``).
- **pHash** (imagehash): greyscale, Lanczos to 32x32, DCT, the 8x8 lowest frequencies
  against their median. One DCT gives all eight dihedral variants.
- **dHash** (imagehash): greyscale, Lanczos to 9x8, each pixel against its right-hand
  neighbour; the mirror is the mirrored thumbnail.

On frames not reduced from a larger photo, every value equals the reference
libraries' (tests/test_hashes.py pins PDQ against ThreatExchange's hasher and pHash and
dHash against imagehash).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
from PIL import Image

PDQ_SIDE = 64
"""PDQ's decimated image is 64x64."""
PDQ_DCT_SIDE = 16
PDQ_MIN_SIDE = 5
"""PDQ's ``MIN_HASHABLE_DIM``: a smaller photo gets the all-zero hash and quality 0."""
PHASH_SIDE = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4
PHASH_BITS_SIDE = 8
DHASH_SIZE = (9, 8)  # imagehash.dhash: hash_size + 1 columns, hash_size rows
#: A scan's pHash and dHash thumbnails: Lanczos as imagehash, after a box reduction to
#: about three times their size (Pillow's ``reducing_gap``). A full Lanczos from a
#: 512-pixel frame costs 1 ms each, this 0.15 ms. On 150 corpus photos the bits moved
#: by 0.7 (pHash) and 1.6 (dHash) on average, more only on flat pictures (dHash margin
#: under 6), whose 64-bit hashes count as weak anyway. What a ban stores is imagehash's
#: exact value (no reduction), so imported imagehash lists and our own bans agree.
QUICK_REDUCING_GAP = 3.0

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _dct_rows(n_out: int, n_in: int, *, first: int, scale: float) -> np.ndarray:
    k = np.arange(first, first + n_out, dtype=np.float64)[:, None]
    x = np.arange(n_in, dtype=np.float64)[None, :]
    return scale * np.cos(math.pi * k * (2 * x + 1) / (2 * n_in))


# PDQ's DCT keeps frequencies 1..16 (not 0), scaled by sqrt(2/64).
_PDQ_DCT = _dct_rows(PDQ_DCT_SIDE, PDQ_SIDE, first=1, scale=math.sqrt(2.0 / PDQ_SIDE))
# scipy.fftpack.dct (type II, unnormalised), as imagehash calls it: frequencies 0..7.
_PHASH_DCT = _dct_rows(PHASH_BITS_SIDE, PHASH_SIDE, first=0, scale=2.0)

# -- the dihedral group on DCT coefficients ---------------------------------------------
#
# Order: identity, rotate 90 (counter-clockwise, Pillow's ROTATE_90), 180, 270,
# mirror left-right, mirror top-bottom, transpose, transverse: Pillow's transposes in
# signals._DIHEDRAL order. tests/test_hashes.py checks both orders against the
# references (imagehash on each transposed thumbnail, pdqhash.compute_dihedral).


def _parity_signs(n: int, *, first: int) -> np.ndarray:
    """-1 where the frequency (index + first) is odd: the sign a mirror gives it."""
    freq = np.arange(first, first + n)
    return np.where(freq % 2 == 1, -1.0, 1.0)


def _dihedral(coeffs: np.ndarray, first: int) -> list[np.ndarray]:
    """The 8 dihedral variants of a square block of 2D DCT coefficients [row freq, col freq]."""
    s = _parity_signs(coeffs.shape[0], first=first)
    rows, cols = s[:, None], s[None, :]
    return [
        coeffs,
        (coeffs * cols).T,  # rotate 90 CCW: transpose, then mirror top-bottom
        coeffs * rows * cols,  # rotate 180
        (coeffs * rows).T,  # rotate 270: transpose, then mirror left-right
        coeffs * cols,  # mirror left-right
        coeffs * rows,  # mirror top-bottom
        coeffs.T,  # transpose
        (coeffs * rows * cols).T,  # transverse
    ]


# PDQ's own variant order (pdqDihedralHash256esFromFloatLuma): original, rotate 90,
# 180, 270, flip X, flip Y, flip +1, flip -1, as indices into _dihedral's list. PDQ's
# "flip X" mirrors top-bottom (about the X axis) and "flip Y" left-right.
_PDQ_ORDER = (0, 1, 2, 3, 5, 4, 6, 7)


def _hex(bits: np.ndarray) -> str:
    return np.packbits(bits.ravel()).tobytes().hex()


# -- PDQ ------------------------------------------------------------------------------------


def _jarosz_window(old: int, new: int = PDQ_SIDE) -> int:
    # computeJaroszFilterWindowSize: half a 64th of the side per pass, rounded up.
    return (old + 2 * new - 1) // (2 * new)


@functools.lru_cache(maxsize=256)
def _pdq_axis(source: int, reduction: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """How one axis of a frame becomes PDQ's 64 samples: for sample i, the weights
    ``weights[i]`` of frame pixels ``starts[i]``, ``starts[i] + 1`` ... (a band: PDQ's
    filter is a few windows wide).

    Built for the photo's own length ``source``: two box passes (window shortened at the
    edges as box1DFloat does, each output the mean of the inputs it covers), sampled at
    ``int((i + 0.5) * source / 64)``, then each weight summed over the ``reduction``
    source pixels one frame pixel stands for.
    """
    w = _jarosz_window(source)
    half = (w + 2) // 2
    centres = ((np.arange(PDQ_SIDE) + 0.5) * source / PDQ_SIDE).astype(np.int64)
    # Sample i is the mean over k in window(centre_i) of the first pass at k, itself the
    # mean over window(k); window(x) is [x - (w - half), x + half - 1] cut at the edges.
    k = (centres - (w - half))[:, None] + np.arange(w)[None, :]  # (64, w) first-pass positions
    inside = (k >= 0) & (k <= np.minimum(centres + half - 1, source - 1)[:, None])
    k = np.clip(k, 0, source - 1)
    lo, hi = np.maximum(k - (w - half), 0), np.minimum(k + half - 1, source - 1)
    share = inside / ((hi - lo + 1) * inside.sum(axis=1, keepdims=True))  # each source pixel of window(k)
    # Sum the shares over each frame pixel's block of `reduction` source pixels: block j
    # gets share x (pixels of window(k) inside [j * r, (j + 1) * r)).
    r = reduction
    blocks = (hi // r - lo // r).max() + 1
    j = (lo // r)[:, :, None] + np.arange(blocks)[None, None, :]  # (64, w, blocks)
    overlap = np.minimum(hi[:, :, None], (j + 1) * r - 1) - np.maximum(lo[:, :, None], j * r) + 1
    value = share[:, :, None] * np.maximum(overlap, 0)
    j = np.minimum(j, frame - 1)
    if (source + r - 1) // r != frame:
        raise ValueError(f"a {source}-pixel side reduced by {reduction} is {(source + r - 1) // r} pixels, not {frame}")
    row = np.broadcast_to(np.arange(PDQ_SIDE)[:, None, None], j.shape)
    full = np.bincount((row * frame + j).ravel(), value.ravel(), PDQ_SIDE * frame).reshape(PDQ_SIDE, frame)
    nonzero = full != 0
    starts = nonzero.argmax(axis=1)
    ends = frame - nonzero[:, ::-1].argmax(axis=1)
    band = int((ends - starts).max())
    index = np.minimum(starts[:, None] + np.arange(band)[None, :], frame - 1)
    weights = np.where(np.arange(band)[None, :] < (ends - starts)[:, None], full[np.arange(PDQ_SIDE)[:, None], index], 0.0)
    return starts, np.ascontiguousarray(weights, dtype=np.float32)


def _sample(axis: tuple[np.ndarray, np.ndarray], values: np.ndarray) -> np.ndarray:
    """(64, m) samples of the (n, m) ``values`` along their first axis.

    A sum over the band, not a matrix product: numpy hands products to a BLAS that
    splits even these small ones across threads, and on a host whose other cores are
    busy (every worker process scanning) the split product waits for a thread that is
    not running: 0.1 ms idle, 30 ms loaded, measured. These sums stay on one core.
    """
    starts, weights = axis
    n = values.shape[0]
    out = np.zeros((PDQ_SIDE, values.shape[1]), dtype=np.float32)
    for k in range(weights.shape[1]):
        out += weights[:, k : k + 1] * values[np.minimum(starts + k, n - 1)]
    return out


def _pdq_quality(samples: np.ndarray) -> int:
    # pdqImageDomainQualityMetric, in float32 as the reference computes it: each
    # neighbour difference scaled to 0..100 and truncated toward zero.
    scale, denom = np.float32(100), np.float32(255)
    down = np.trunc((samples[:-1, :] - samples[1:, :]) * scale / denom)
    right = np.trunc((samples[:, :-1] - samples[:, 1:]) * scale / denom)
    total = int(np.abs(down).sum(dtype=np.float64) + np.abs(right).sum(dtype=np.float64))
    return min(total // 90, 100)


def _pdq_hex(coeffs: np.ndarray) -> str:
    flat = coeffs.ravel()
    median = np.partition(flat, (flat.size - 1) // 2)[(flat.size - 1) // 2]  # Torben: the lower middle
    # Bit i*16+j is coefficient (i, j); the text form prints bit 255 first.
    return _hex((flat > median)[::-1])


def pdq_luma(rgb: np.ndarray) -> np.ndarray:
    """PDQ's luminance of ``rgb`` ((H, W, 3) uint8) as float32: computed once per frame,
    a region's is a slice of it."""
    # Split into planes first (three times faster than reading every third byte), and
    # multiply each straight into float32 (np.multiply's dtype): the same float32
    # arithmetic, bit for bit, as letting numpy promote, in half the time (0.6 ms for
    # a 750 x 530 frame, not 1.1).
    planes = cv2.split(np.ascontiguousarray(rgb))
    luma = np.multiply(planes[0], _LUMA[0], dtype=np.float32)
    luma += np.multiply(planes[1], _LUMA[1], dtype=np.float32)
    luma += np.multiply(planes[2], _LUMA[2], dtype=np.float32)
    return luma


def pdq_dihedral(
    rgb: np.ndarray, *, source_size: tuple[int, int] | None = None, reduction: int = 1,
    luma: np.ndarray | None = None,
) -> tuple[tuple[str, ...], int]:
    """PDQ's 8 dihedral hashes (original first, pdqhash's order) and its quality.

    Args:
        rgb: (H, W, 3) uint8.
        source_size: (width, height) of the photo ``rgb`` was reduced from, each frame
            pixel the mean of a ``reduction`` x ``reduction`` block of it (the last
            block of a row or column may be partial); None: ``rgb`` is the photo.
        luma: ``pdq_luma(rgb)``, where the caller has it.
    """
    h, w = rgb.shape[:2]
    src_w, src_h = source_size if source_size is not None and reduction > 1 else (w, h)
    if src_h < PDQ_MIN_SIDE or src_w < PDQ_MIN_SIDE:
        zero = "0" * 64
        return (zero,) * 8, 0
    r = reduction if source_size is not None else 1
    if luma is None:
        luma = pdq_luma(rgb)
    samples = _sample(_pdq_axis(src_w, r, w), _sample(_pdq_axis(src_h, r, h), luma).T).T
    coeffs = _PDQ_DCT @ samples.astype(np.float64) @ _PDQ_DCT.T
    variants = _dihedral(coeffs, first=1)
    return tuple(_pdq_hex(variants[i]) for i in _PDQ_ORDER), _pdq_quality(samples)


# -- pHash and dHash -------------------------------------------------------------------------


def phash_dihedral(grey: Image.Image, *, quick: bool = False) -> tuple[str, ...]:
    """imagehash.phash of ``grey`` (mode L) and of its 7 other transposes (signals._DIHEDRAL order);
    ``quick``: a scan's, see :data:`QUICK_REDUCING_GAP`.

    The variants are the transposed *thumbnail*'s hashes, as before this module: the
    same as hashing each transposed photo up to a bit or two of resampling rounding.
    """
    thumb = np.asarray(grey.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS,
                                   reducing_gap=QUICK_REDUCING_GAP if quick else None), dtype=np.float64)
    low = _PHASH_DCT @ thumb @ _PHASH_DCT.T
    out = []
    for coeffs in _dihedral(low, first=0):
        out.append(_hex(coeffs > np.median(coeffs)))
    return tuple(out)


def dhash_mirrored(grey: Image.Image, *, quick: bool = False) -> tuple[str, str, float]:
    """imagehash.dhash of ``grey`` (mode L, ``quick`` as for pHash), of its mirror image, and its margin: the
    median |difference| between neighbouring columns of the 9x8 thumbnail. A bit is the
    sign of such a difference, so where the median is a few grey levels the bits are
    set by noise, gradients and frames, not by the picture (docs/matching.md)."""
    thumb = np.asarray(grey.resize(DHASH_SIZE, Image.Resampling.LANCZOS,
                                   reducing_gap=QUICK_REDUCING_GAP if quick else None), dtype=np.int16)
    mirror = thumb[:, ::-1]
    margin = float(np.median(np.abs(np.diff(thumb, axis=1))))
    return _hex(thumb[:, 1:] > thumb[:, :-1]), _hex(mirror[:, 1:] > mirror[:, :-1]), margin
