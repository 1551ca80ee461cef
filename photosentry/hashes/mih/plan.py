"""Multi-index layouts and the cost model that picks one (``plan_layout``).

Plain Python over the layout's arithmetic: how a hash is cut into substrings, what a
layout costs in memory, and its modelled time per query variant for the kernels this
host runs (``simd.VECTOR_SCAN``). See the package docstring for the layouts.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from . import simd

#: Substring radius the probe enumerator supports (radius 4 of 22 bits is 35k probes:
#: beyond that a linear scan is cheaper, and plan_layout never asks for more).
MAX_SUBSTRING_RADIUS = 4
#: Directory slots per block of the compact directory (one 32-bit offset per block).
_DIR_BLOCK = 16


# -- layout -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How a segment cuts hashes into substrings, and how each table is stored."""

    bits: int
    #: (first bit, width) of each substring, widest first.
    substrings: tuple[tuple[int, int], ...]
    #: True: tables hold copies of the (64-bit) codes; False: packed 32-bit words.
    inline: bool
    #: Packed layout: directory bits per table (at most the substring width; 0 = the
    #: full width, i.e. direct addressing). The inline layout always uses the full width.
    dir_bits: int = 0
    #: Inline layout: tables hold 32 bits of each code from outside their substring
    #: (and the row) instead of the whole code; see kernels._fragment_query.
    fragments: bool = False

    @property
    def m(self) -> int:
        return len(self.substrings)

    @property
    def dir_widths(self) -> tuple[int, ...]:
        if self.inline or not self.dir_bits:
            return tuple(w for _, w in self.substrings)
        return tuple(min(w, self.dir_bits) for _, w in self.substrings)

    @property
    def low_bits(self) -> int:
        """Most substring bits a packed word carries beside the row number."""
        return max(w - d for (_, w), d in zip(self.substrings, self.dir_widths, strict=True))

    def to_dict(self) -> dict[str, object]:
        """Plain values (a shared index file's table of contents, a calibration record)."""
        return {"bits": self.bits, "widths": [w for _, w in self.substrings], "inline": self.inline,
                "dir_bits": self.dir_bits, "fragments": self.fragments}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> "Layout":
        """The inverse of :meth:`to_dict`; raises ValueError for a layout that cannot be."""
        try:
            widths = [int(w) for w in raw["widths"]]  # type: ignore[attr-defined]
            return from_widths(int(raw["bits"]), widths, bool(raw["inline"]), int(raw["dir_bits"]),  # type: ignore[call-overload]
                               fragments=bool(raw["fragments"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a layout: {raw!r}") from exc

    def describe(self) -> str:
        widths = sorted({w for _, w in self.substrings}, reverse=True)
        if self.inline:
            return f"{'fragment' if self.fragments else 'inline'} m={self.m} w={'/'.join(map(str, widths))}"
        return f"packed m={self.m} w={'/'.join(map(str, widths))} dir={max(self.dir_widths)}"

    def radii(self, radius: int) -> np.ndarray:
        """Per-substring search radius for a query radius (general pigeonhole); -1 = skip."""
        q, s = divmod(radius, self.m)
        out = np.full(self.m, q - 1, dtype=np.int64)
        out[: s + 1] = q
        return out

    def _terms(self, radius: int):  # type: ignore[no-untyped-def]
        return [
            (w, d, int(k))
            for (_, w), d, k in zip(self.substrings, self.dir_widths, self.radii(radius), strict=True)
            if k >= 0
        ]

    def probes(self, radius: int) -> int:
        """Directory slots (buckets) read per query."""
        return sum(_ball(d, k) for _, d, k in self._terms(radius))

    def expected_scanned(self, radius: int, n: int) -> float:
        """Table words read per query on uniform random data (bucket sizes)."""
        return sum(_ball(d, k) * n / 2.0**d for _, d, k in self._terms(radius))

    def expected_candidates(self, radius: int, n: int) -> float:
        """Rows verified against the full hash per query on uniform random data."""
        return sum(_ball(w, k) * n / 2.0**w for w, _, k in self._terms(radius))

    def expected_survivors(self, radius: int, n: int) -> float:
        """Fragment layout: rows whose 32-bit fragment passes, verified against the full
        hash, per query on uniform random data. A probe that flips f substring bits
        leaves ``radius - f`` to the fragment."""
        return sum(
            math.comb(w, f) * n / 2.0**w * _fragment_pass(radius - f)
            for w, _, k in self._terms(radius)
            for f in range(k + 1)
        )


@functools.lru_cache(maxsize=4096)
def _ball(width: int, k: int) -> int:
    return sum(math.comb(width, i) for i in range(k + 1))


#: Bits of a code a fragment table keeps beside each row.
FRAGMENT_BITS = 32


@functools.lru_cache(maxsize=256)
def _fragment_pass(distance: int) -> float:
    """Chance that two random fragments are within ``distance`` bits."""
    if distance < 0:
        return 0.0
    return _ball(FRAGMENT_BITS, min(distance, FRAGMENT_BITS)) / 2.0**FRAGMENT_BITS


def split(bits: int, m: int, inline: bool, dir_bits: int = 0, *, fragments: bool = False) -> Layout:
    """``m`` substrings of near-equal width covering all ``bits``, widest first."""
    base, extra = divmod(bits, m)
    return from_widths(bits, [base + 1] * extra + [base] * (m - extra), inline, dir_bits, fragments=fragments)


def from_widths(bits: int, widths, inline: bool, dir_bits: int = 0, *, fragments: bool = False) -> Layout:  # type: ignore[no-untyped-def]
    """Substrings of the given widths (sorted widest first) covering all ``bits``."""
    widths = sorted(map(int, widths), reverse=True)
    if sum(widths) != bits or min(widths) < 1:
        raise ValueError(f"substring widths {widths} do not cover {bits} bits")
    if fragments and (not inline or max(widths) + FRAGMENT_BITS > bits):
        raise ValueError("fragment tables are inline tables with room for a fragment beside the substring")
    subs = tuple(zip(itertools.accumulate([0, *widths[:-1]]), widths, strict=True))
    return Layout(bits, subs, inline, 0 if inline or dir_bits >= max(widths) else dir_bits, fragments)


@functools.lru_cache(maxsize=64)
def _inline_layouts(bits: int, m: int) -> tuple[Layout, ...]:
    return tuple(
        from_widths(bits, ws, True, fragments=fragments)
        for ws in _width_tuples(bits, m, 8, _MAX_DIR_BITS)
        for fragments in (False, True)
    )


def _width_tuples(bits: int, m: int, low: int, high: int):  # type: ignore[no-untyped-def]
    """Every non-increasing tuple of ``m`` widths in [low, high] summing to ``bits``."""
    if m == 1:
        if low <= bits <= high:
            yield (bits,)
        return
    for w in range(min(high, bits - low * (m - 1)), low - 1, -1):
        if w * m < bits:
            break
        for rest in _width_tuples(bits - w, m - 1, low, w):
            yield (w, *rest)


# Cost model for plan_layout, in nanoseconds per query variant, fitted to
# scripts/bench_match.py's layouts at 10M entries on the 2-core development host (one
# core, other work running beside it). Packed: a probe is two cache misses (directory
# slot, bucket) plus a mispredicted loop exit; a scanned word is a compare in a short,
# randomly placed run; a candidate is one more miss (its code). Inline: a scanned
# code is a compare in a run fetched ahead (so per word, not per line, and the same
# for short and long runs); a probe is a directory miss, or next to nothing when all
# the directories are small enough to stay in cache.
_INLINE_PROBE_NS = 30.0
_CACHED_PROBE_NS = 10.0
#: A packed probe was fitted at 21 ns with 92 MB of directories: 10.5 ns its bucket,
#: the rest its directory read, which _directory_read_ns models from their size.
_PACKED_BUCKET_NS = 10.5
_SCAN_NS = {False: 3.9, True: 1.35}
_VERIFY_NS = 18.0
# The vector scans (simd.VECTOR_SCAN), fitted the same way on session 5's host (Intel Xeon
# with AVX-512, ~200 ns DRAM latency). A packed bucket costs its first line plus a
# compare per word (a bucket step has no loop exit to mispredict, so longer buckets
# cost only their extra lines); what a directory read costs now shows, and it depends on
# how much of the directories the caches hold: ~4 ns per read at 12 MB, ~11 at 92 MB.
_VECTOR_BUCKET_NS = 20.0
_VECTOR_SCAN_NS = {False: 1.2, True: 1.15}
# Fragment tables (session 5's host, 10M, four layouts): a fragment costs about half a
# code with the vector scans (half the lines to stream) and a little less than one
# with the scalar ones (compute-bound); a survivor two more random reads (its row,
# then its code), batched.
_FRAGMENT_SCAN_NS = {False: 1.25, True: 0.6}
_SURVIVOR_NS = 25.0
_LINEAR_NS_PER_WORD = 0.7
#: Directories (all tables of a segment) this small stay in the core's caches.
_CACHED_DIRECTORY_BYTES = 4 * 1024 * 1024
#: Widest directory: it has 2**width entries (4 bytes each).
_MAX_DIR_BITS = 24
#: Widest substring of the packed layout (its low bits share a word with the row).
_MAX_PACKED_WIDTH = 32
#: Memory budget of a segment beyond its one copy of the codes, in bytes per entry
#: (the index keeps 4 more for the entry id: 64 in all) ...
MAX_EXTRA_BYTES_PER_ENTRY = 60
#: ... except that the directories, whose size does not depend on the bank's, may
#: always use this much: a small bank is better served by a fast layout (16 MB keeps
#: 1M-entry banks within the budget too).
OFFSETS_ALLOWANCE = 16 * 1024 * 1024


def extra_bytes(layout: Layout, n: int) -> float:
    """Bytes per entry a segment of ``n`` rows needs beyond the codes (tables and directories)."""
    return _per_row(layout) + _offsets_bytes(layout) / max(n, 1)


def _per_row(layout: Layout) -> int:
    """Table bytes per row: a packed word; a code copy and its row; a fragment and its row."""
    return layout.m * ((8 if layout.fragments else 12) if layout.inline else 4)


def _offsets_bytes(layout: Layout) -> int:
    if not layout.inline and min(layout.dir_widths) >= 4:  # compact (segment.MihSegment, segment._compact_directories)
        return sum((1 << d) + 4 * (1 << d) // _DIR_BLOCK for d in layout.dir_widths)
    return sum(4 * ((1 << d) + 1) for d in layout.dir_widths)


def fits_budget(layout: Layout, n: int) -> bool:
    per_row = _per_row(layout)
    return per_row <= MAX_EXTRA_BYTES_PER_ENTRY and _offsets_bytes(layout) <= max(
        OFFSETS_ALLOWANCE, (MAX_EXTRA_BYTES_PER_ENTRY - per_row) * n
    )


def _fits_words(layout: Layout, n: int) -> bool:
    """A packed word holds the row number and the low bits: n * 2**L <= 2**32."""
    return layout.inline or (max(n, 1) - 1) < (1 << (32 - layout.low_bits))


def _directory_read_ns(directory_bytes: int) -> float:
    """A packed table's directory read: cheap while the directories fit the caches,
    then ~1.9 ns more for each doubling (measured from 12 MB to 92 MB)."""
    return 2.0 + 1.9 * max(0.0, math.log2(directory_bytes / _CACHED_DIRECTORY_BYTES))


def cost_ns(layout: Layout, radius: int, n: int, *, vector: bool | None = None) -> float:
    """Modelled time of one query variant (see the constants above) with the vector or
    the scalar scans (default: the ones this host runs)."""
    vector = simd.VECTOR_SCAN if vector is None else vector
    probes = layout.probes(radius)
    scanned = layout.expected_scanned(radius, n)
    if layout.inline:
        probe_ns = _CACHED_PROBE_NS if _offsets_bytes(layout) <= _CACHED_DIRECTORY_BYTES else _INLINE_PROBE_NS
    else:
        probe_ns = _directory_read_ns(_offsets_bytes(layout)) + (_VECTOR_BUCKET_NS if vector else _PACKED_BUCKET_NS)
    if layout.fragments:
        return probes * probe_ns + scanned * _FRAGMENT_SCAN_NS[vector] + layout.expected_survivors(radius, n) * _SURVIVOR_NS
    cost = probes * probe_ns + scanned * (_VECTOR_SCAN_NS if vector else _SCAN_NS)[layout.inline]
    if not layout.inline:
        cost += layout.expected_candidates(radius, n) * _VERIFY_NS
    return cost


def candidate_layouts(bits: int, radius: int, n: int, *, inline: bool | None = None) -> list[Layout]:
    """Every layout plan_layout considers for these parameters (valid, within budget)."""
    words = bits // 64
    kinds = [inline] if inline is not None else ([True, False] if words == 1 else [False])
    out = []
    for m in range(1, bits + 1):
        for kind in kinds:
            if kind:
                # Inline tables are directly addressed, so widths need not be equal: a
                # narrow last substring with a smaller radius can save the most probes.
                options = [o for o in _inline_layouts(bits, m) if int(o.radii(radius).max()) <= MAX_SUBSTRING_RADIUS]
            else:
                layout = split(bits, m, kind)
                widths = [w for _, w in layout.substrings]
                if min(widths) < 8 or max(widths) > _MAX_PACKED_WIDTH:
                    continue
                if int(layout.radii(radius).max()) > MAX_SUBSTRING_RADIUS:
                    continue
                options = [
                    from_widths(bits, ws, False, d)
                    for ws in _packed_widths(bits, m, radius)
                    for d in range(8, min(max(ws), _MAX_DIR_BITS) + 1)
                ]
            out += [o for o in options if fits_budget(o, n) and _fits_words(o, n)]
    return out


def _packed_widths(bits: int, m: int, radius: int) -> list[tuple[int, ...]]:
    """Substring widths worth trying for a packed layout: near-equal, and, where the
    pigeonhole leaves the last substrings a smaller radius, those narrower (fewer bits
    cost them few candidates, and the others widen: at 10M PDQ 24x6/23x4/20 verifies
    10% fewer rows than 24x3/23x8)."""
    base = [w for _, w in split(bits, m, False).substrings]
    q, s = divmod(radius, m)
    narrow = m - s - 1  # substrings searched at radius q - 1
    options = [tuple(base)]
    if 0 < narrow < m and q >= 1:
        for cut in range(1, 7):
            last = base[-1] - cut
            wide = bits - last * narrow
            if last < 8:
                break
            per, extra = divmod(wide, m - narrow)
            options.append(tuple([per + 1] * extra + [per] * (m - narrow - extra) + [last] * narrow))
    return [ws for ws in options if max(ws) <= _MAX_PACKED_WIDTH]


def ranked_layouts(
    bits: int, radius: int, n: int, *, inline: bool | None = None, vector: bool | None = None
) -> list[tuple[float, Layout]]:
    """Every layout cheaper than a linear scan, cheapest first by the cost model, with its
    modelled ns per query variant: what a calibration (``calibrate.py``) times on the host."""
    linear = n * (bits // 64) * _LINEAR_NS_PER_WORD
    costed = [(cost_ns(layout, radius, n, vector=vector), layout)
              for layout in candidate_layouts(bits, radius, n, inline=inline)]
    # Ties keep candidate order (sorted() is stable), so the pick is what plan_layout always gave.
    return sorted(((c, lay) for c, lay in costed if c < linear), key=lambda item: item[0])


def plan_layout(
    bits: int, radius: int, n: int, *, inline: bool | None = None, vector: bool | None = None
) -> Layout | None:
    """The cheapest layout for ``n`` hashes searched within ``radius`` that fits the memory
    budget, by the cost model; None if a linear scan is cheaper (small banks). ``vector``:
    plan for the vector or the scalar scans (default: the ones this host runs). A host
    with a calibration (``calibrate.py``) may measure another layout faster."""
    ranked = ranked_layouts(bits, radius, n, inline=inline, vector=vector)
    return ranked[0][1] if ranked else None
