"""Multi-index hashing: Hamming range search over millions of hashes in microseconds.

Why: a linear scan touches every hash (10 million PDQ hashes are 320 MB per query
variant); a photo needs 18 queries (8 PDQ, 8 pHash, 2 dHash variants).

How (Norouzi et al., "Fast search in Hamming space with multi-index hashing", with
the general pigeonhole principle of Qin et al.): cut the ``bits``-bit hash into ``m``
substrings. If two hashes are within ``r`` bits, write ``r = m*q + s`` (0 <= s < m);
then one of the first ``s + 1`` substrings is within ``q`` bits, or one of the others
within ``q - 1`` (otherwise the distance would be at least ``(s+1)(q+1) + (m-s-1)q >
r``). Each substring has a table from its value to the rows holding it (counting sort:
one offsets array and one row array per table). A query enumerates the values within
each substring's radius, looks them up, and verifies every candidate row against the
full hash. With the substring width near log2(N) a bucket holds about one row, so a
query costs a few thousand probes, whatever N is.

Two layouts, picked per algorithm (``plan_layout``):

- ``rows``: each table holds 32-bit row numbers; candidates are verified against the
  one copy of the codes. Used for 256-bit PDQ, where copying the codes per table
  would cost 32 bytes x m per entry.
- ``inline``: each table holds its own copy of the 64-bit codes in bucket order, so a
  bucket is verified with a sequential scan (no random access per candidate). Used for
  64-bit pHash/dHash, whose best layout has large buckets (4 x 16-bit substrings).

A segment is immutable once built (building is a counting sort, O(N) per table, in
numba). :class:`~photosentry.hashes.index.TieredIndex` layers a small linear buffer
and a tombstone set over segments so adds and removes never rebuild the big one.

The kernels are compiled by numba on first use (``cache=False``: nothing is written
into site-packages, so read-only installs work; ``warm_up`` compiles them up front,
about 2-4 s, measured by ``scripts/bench_match.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

try:  # numba is a core dependency; the guard only gives a clear message if it is broken
    import numba
    from numba import njit
except ImportError as exc:  # pragma: no cover
    raise ImportError("photosentry needs numba for its hash index: pip install 'numba>=0.60'") from exc

#: Substring radius the probe enumerator supports (radius 4 of 22 bits is 35k probes:
#: beyond that a linear scan is cheaper, and plan_layout never asks for more).
MAX_SUBSTRING_RADIUS = 4


# -- layout -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How a segment cuts hashes into substrings."""

    bits: int
    #: (first bit, width) of each substring, widest first.
    substrings: tuple[tuple[int, int], ...]
    inline: bool

    @property
    def m(self) -> int:
        return len(self.substrings)

    def radii(self, radius: int) -> np.ndarray:
        """Per-substring search radius for a query radius (general pigeonhole); -1 = skip."""
        q, s = divmod(radius, self.m)
        out = np.full(self.m, q - 1, dtype=np.int64)
        out[: s + 1] = q
        return out

    def probes(self, radius: int) -> int:
        return sum(_ball(w, int(k)) for (_, w), k in zip(self.substrings, self.radii(radius), strict=True) if k >= 0)

    def expected_candidates(self, radius: int, n: int) -> float:
        return sum(
            _ball(w, int(k)) * n / 2.0**w
            for (_, w), k in zip(self.substrings, self.radii(radius), strict=True)
            if k >= 0
        )


def _ball(width: int, k: int) -> int:
    return sum(math.comb(width, i) for i in range(k + 1))


def split(bits: int, m: int, inline: bool) -> Layout:
    """``m`` substrings of near-equal width covering all ``bits``, widest first."""
    base, extra = divmod(bits, m)
    widths = [base + 1] * extra + [base] * (m - extra)
    starts = np.cumsum([0] + widths[:-1])
    return Layout(bits, tuple((int(s), int(w)) for s, w in zip(starts, widths, strict=True)), inline)


# Cost model for plan_layout, in nanoseconds, measured on one core of the bench host
# (scripts/bench_match.py prints the real numbers): a probe is one or two cache
# misses; a candidate is a cache miss (rows layout) or a sequential compare (inline).
_PROBE_NS = 15.0
_CANDIDATE_NS = {False: 12.0, True: 0.8}
_LINEAR_NS_PER_WORD = 0.7
#: Widest substring: its offsets table has 2**width entries (4 bytes each).
_MAX_WIDTH = 24
#: Memory budget of a segment beyond its one copy of the codes, in bytes per entry
#: (the index keeps 4 more for the entry id: 64 in all) ...
MAX_EXTRA_BYTES_PER_ENTRY = 60
#: ... except that the offsets tables, whose size does not depend on the bank's, may
#: always use this much: a small bank is better served by a fast layout.
OFFSETS_ALLOWANCE = 128 * 1024 * 1024


def extra_bytes(layout: Layout, n: int) -> float:
    """Bytes per entry a segment of ``n`` rows needs beyond the codes (tables and offsets)."""
    return _per_row(layout) + _offsets_bytes(layout) / max(n, 1)


def _per_row(layout: Layout) -> int:
    return layout.m * (4 + (8 * layout.bits // 64 if layout.inline else 0))


def _offsets_bytes(layout: Layout) -> int:
    return sum(4 * ((1 << w) + 1) for _, w in layout.substrings)


def fits_budget(layout: Layout, n: int) -> bool:
    per_row = _per_row(layout)
    return per_row <= MAX_EXTRA_BYTES_PER_ENTRY and _offsets_bytes(layout) <= max(
        OFFSETS_ALLOWANCE, (MAX_EXTRA_BYTES_PER_ENTRY - per_row) * n
    )


def plan_layout(bits: int, radius: int, n: int, *, inline: bool | None = None) -> Layout | None:
    """The cheapest layout for ``n`` hashes searched within ``radius`` that fits the memory
    budget; None if a linear scan is cheaper (small banks)."""
    words = bits // 64
    if inline is None:
        inline = words == 1
    best, best_cost = None, n * words * _LINEAR_NS_PER_WORD
    for m in range(1, bits + 1):
        layout = split(bits, m, inline)
        widths = [w for _, w in layout.substrings]
        if max(widths) > _MAX_WIDTH:
            continue
        if min(widths) < 8:
            break
        if int(layout.radii(radius).max()) > MAX_SUBSTRING_RADIUS:
            continue
        if not fits_budget(layout, n):
            continue
        cost = layout.probes(radius) * _PROBE_NS + layout.expected_candidates(radius, n) * _CANDIDATE_NS[inline]
        if cost < best_cost:
            best, best_cost = layout, cost
    return best


# -- kernels ----------------------------------------------------------------------------


@njit(cache=False, nogil=True, inline="always")
def _popcount64(x: np.uint64) -> np.uint64:
    # The SWAR idiom: LLVM turns it into one POPCNT instruction on CPUs that have it.
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=False, nogil=True, inline="always")
def _substring(code: np.ndarray, start: int, width: int) -> np.uint64:
    # Bit 0 is the most significant bit of word 0 (the hex order of the hash).
    w = start >> 6
    off = start & 63
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    if off + width <= 64:
        return (code[w] >> np.uint64(64 - off - width)) & mask
    hi_n = 64 - off
    lo_n = width - hi_n
    hi = code[w] & ((np.uint64(1) << np.uint64(hi_n)) - np.uint64(1))
    lo = code[w + 1] >> np.uint64(64 - lo_n)
    return (hi << np.uint64(lo_n)) | lo


@njit(cache=False, nogil=True)
def _keys(codes: np.ndarray, start: int, width: int) -> np.ndarray:
    n = codes.shape[0]
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = _substring(codes[i], start, width)
    return out


@njit(cache=False, nogil=True)
def _counting_sort(keys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """offsets (2**width + 1) and the rows in bucket order (stable)."""
    size = 1 << width
    offsets = np.zeros(size + 1, dtype=np.uint32)
    for k in keys:
        offsets[k + 1] += 1
    for i in range(size):
        offsets[i + 1] += offsets[i]
    fill = offsets[:-1].copy()
    rows = np.empty(keys.shape[0], dtype=np.uint32)
    for i in range(keys.shape[0]):
        k = keys[i]
        rows[fill[k]] = i
        fill[k] += 1
    return offsets, rows


@njit(cache=False, nogil=True)
def _ball_size(width: int, k: int) -> int:
    total, term = 0, 1
    for i in range(k + 1):
        total += term
        term = term * (width - i) // (i + 1)
    return total


@njit(cache=False, nogil=True)
def _mih_query(
    codes, table_rows, table_codes, offsets, off_bases, starts, widths, inline, queries, radii, max_dist,
    out_rows, out_dist, out_query,
):
    """Every (row, query) within ``max_dist``; returns how many (may exceed the output size).

    Per query in phases, so the random memory reads of one phase do not wait on each
    other (no data-dependent branch between them): 1 enumerate the probe keys of every
    table, 2 read each probe's bucket bounds and first row, 3 gather candidate rows,
    4 verify candidates against the full hash.
    """
    n = codes.shape[0]
    words = queries.shape[1]
    m = starts.shape[0]
    total = 0
    for t in range(m):
        if radii[t] >= 0:
            total += _ball_size(widths[t], radii[t])
    probe_at = np.empty(total, dtype=np.int64)
    probe_t = np.empty(total, dtype=np.int64)
    lo = np.empty(total, dtype=np.int64)
    hi = np.empty(total, dtype=np.int64)
    first = np.empty(total, dtype=np.uint32)
    cand = np.empty(max(16, 2 * total), dtype=np.uint32)
    count = 0
    md = np.uint64(max_dist)
    one = np.uint64(1)
    for qi in range(queries.shape[0]):
        q = queries[qi]
        c = 0
        for t in range(m):
            k = radii[t]
            if k < 0:
                continue
            width = widths[t]
            base = off_bases[t]
            key = _substring(q, starts[t], width)
            probe_at[c] = base + np.int64(key)
            probe_t[c] = t
            c += 1
            if k >= 1:
                for i in range(width):
                    k1 = key ^ (one << np.uint64(i))
                    probe_at[c] = base + np.int64(k1)
                    probe_t[c] = t
                    c += 1
                    if k >= 2:
                        for j in range(i + 1, width):
                            k2 = k1 ^ (one << np.uint64(j))
                            probe_at[c] = base + np.int64(k2)
                            probe_t[c] = t
                            c += 1
                            if k >= 3:
                                for h in range(j + 1, width):
                                    k3 = k2 ^ (one << np.uint64(h))
                                    probe_at[c] = base + np.int64(k3)
                                    probe_t[c] = t
                                    c += 1
                                    if k >= 4:
                                        for g in range(h + 1, width):
                                            probe_at[c] = base + np.int64(k3 ^ (one << np.uint64(g)))
                                            probe_t[c] = t
                                            c += 1
        for i in range(c):
            a = probe_at[i]
            s = np.int64(offsets[a])
            lo[i] = s
            hi[i] = np.int64(offsets[a + 1])
            if not inline:
                first[i] = table_rows[probe_t[i] * n + min(s, n - 1)]
        if inline:
            for i in range(c):
                t_base = probe_t[i] * n
                for slot in range(t_base + lo[i], t_base + hi[i]):
                    d = np.uint64(0)
                    for w in range(words):
                        d += _popcount64(table_codes[slot, w] ^ q[w])
                    if d <= md:
                        if count < out_rows.shape[0]:
                            out_rows[count] = table_rows[slot]
                            out_dist[count] = d
                            out_query[count] = qi
                        count += 1
            continue
        # Buckets hold about one row: take each bucket's first row without a branch,
        # then the rare longer buckets.
        if cand.shape[0] < c + 16:
            cand = np.empty(2 * c + 16, dtype=np.uint32)
        nc = 0
        for i in range(c):
            cand[nc] = first[i]
            nc += hi[i] > lo[i]
        for i in range(c):
            if hi[i] - lo[i] > 1:
                t_base = probe_t[i] * n
                for p in range(lo[i] + 1, hi[i]):
                    if nc == cand.shape[0]:
                        grown = np.empty(2 * nc, dtype=np.uint32)
                        grown[:nc] = cand[:nc]
                        cand = grown
                    cand[nc] = table_rows[t_base + p]
                    nc += 1
        for i in range(nc):
            row = cand[i]
            d = np.uint64(0)
            for w in range(words):
                d += _popcount64(codes[row, w] ^ q[w])
            if d <= md:
                if count < out_rows.shape[0]:
                    out_rows[count] = row
                    out_dist[count] = d
                    out_query[count] = qi
                count += 1
    return count


@njit(cache=False, nogil=True)
def _linear_query(codes, n, queries, max_dist, out_rows, out_dist, out_query):
    """Every (row, query) within ``max_dist`` among the first ``n`` rows."""
    words = queries.shape[1]
    count = 0
    md = np.uint64(max_dist)
    for qi in range(queries.shape[0]):
        q = queries[qi]
        for row in range(n):
            d = np.uint64(0)
            for w in range(words):
                d += _popcount64(codes[row, w] ^ q[w])
            if d <= md:
                if count < out_rows.shape[0]:
                    out_rows[count] = row
                    out_dist[count] = d
                    out_query[count] = qi
                count += 1
    return count


# -- segments ---------------------------------------------------------------------------


class Hits:
    """Raw results of a kernel call: row, distance and query index arrays."""

    __slots__ = ("rows", "distances", "queries")

    def __init__(self, rows: np.ndarray, distances: np.ndarray, queries: np.ndarray) -> None:
        self.rows, self.distances, self.queries = rows, distances, queries


def _run(kernel, args, cap: int = 256) -> Hits:  # type: ignore[no-untyped-def]
    while True:
        rows = np.empty(cap, dtype=np.uint32)
        dist = np.empty(cap, dtype=np.uint64)
        qs = np.empty(cap, dtype=np.int64)
        count = kernel(*args, rows, dist, qs)
        if count <= cap:
            return Hits(rows[:count], dist[:count].astype(np.int64), qs[:count])
        cap = int(count)


class MihSegment:
    """An immutable multi-index over ``codes`` (N x words, uint64, big-endian bit order).

    Rows are positions in ``codes``; the caller maps them to entry ids.
    """

    def __init__(self, codes: np.ndarray, layout: Layout) -> None:
        if codes.ndim != 2 or codes.dtype != np.uint64 or codes.shape[1] * 64 != layout.bits:
            raise ValueError(f"codes must be N x {layout.bits // 64} uint64, got {codes.shape} {codes.dtype}")
        if codes.shape[0] >= 2**32:
            raise ValueError("a segment holds fewer than 2**32 rows")
        _ensure_compiled()  # at load time, so no scan waits for the compiler
        self.codes = np.ascontiguousarray(codes)
        self.layout = layout
        n = codes.shape[0]
        m = layout.m
        self._starts = np.array([s for s, _ in layout.substrings], dtype=np.int64)
        self._widths = np.array([w for _, w in layout.substrings], dtype=np.int64)
        sizes = [(1 << int(w)) + 1 for w in self._widths]
        self._off_bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._offsets = np.empty(int(sum(sizes)), dtype=np.uint32)
        self._rows = np.empty(m * n, dtype=np.uint32)
        words = codes.shape[1]
        self._tcodes = np.empty((m * n if layout.inline else 0, words), dtype=np.uint64)
        for t, (start, width) in enumerate(layout.substrings):
            keys = _keys(self.codes, start, width)
            offsets, rows = _counting_sort(keys, width)
            base = int(self._off_bases[t])
            self._offsets[base : base + len(offsets)] = offsets
            self._rows[t * n : (t + 1) * n] = rows
            if layout.inline:
                self._tcodes[t * n : (t + 1) * n] = self.codes[rows]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory beyond the one copy of the codes."""
        return int(self._offsets.nbytes + self._rows.nbytes + self._tcodes.nbytes)

    def query(self, queries: np.ndarray, max_distance: int) -> Hits:
        radii = self.layout.radii(max_distance)
        if int(radii.max()) > MAX_SUBSTRING_RADIUS:
            return linear_query(self.codes, len(self), queries, max_distance)
        return _run(
            _mih_query,
            (self.codes, self._rows, self._tcodes, self._offsets, self._off_bases, self._starts, self._widths,
             self.layout.inline, queries, radii, int(max_distance)),
        )


def linear_query(codes: np.ndarray, n: int, queries: np.ndarray, max_distance: int) -> Hits:
    """Exhaustive search of the first ``n`` rows (the small-bank and buffer path).

    Uses the compiled kernel once it is compiled (a process with a big bank), else
    numpy: a process with only small banks never pays numba's compile time.
    """
    if n == 0 or queries.shape[0] == 0:
        empty = np.empty(0, dtype=np.int64)
        return Hits(empty.astype(np.uint32), empty, empty)
    if _compiled:
        return _run(_linear_query, (codes, n, queries, int(max_distance)))
    rows_out, dist_out, q_out = [], [], []
    block = codes[:n]
    for qi in range(queries.shape[0]):
        distances = np.bitwise_count(block ^ queries[qi]).sum(axis=1, dtype=np.int64)
        rows = np.flatnonzero(distances <= max_distance)
        rows_out.append(rows.astype(np.uint32))
        dist_out.append(distances[rows])
        q_out.append(np.full(len(rows), qi, dtype=np.int64))
    return Hits(np.concatenate(rows_out), np.concatenate(dist_out), np.concatenate(q_out))


_compiled = False
#: Seconds the first compile of the kernels took in this process (None: not yet).
compile_seconds: float | None = None


def _ensure_compiled() -> None:
    global _compiled, compile_seconds
    if not _compiled:
        _compiled = True
        compile_seconds = warm_up()


def warm_up() -> float:
    """Compile the kernels now (seconds taken), so the first scan is not the slow one."""
    import time

    global _compiled
    _compiled = True
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for words in (1, 4):
        codes = rng.integers(0, 2**63, size=(64, words), dtype=np.uint64)
        seg = MihSegment(codes, split(64 * words, 4 * words, inline=words == 1))
        seg.query(codes[:2], 8)
        linear_query(codes, 64, codes[:2], 8)
    return time.perf_counter() - start


__all__ = ["Hits", "Layout", "MihSegment", "extra_bytes", "linear_query", "plan_layout", "split", "warm_up", "numba"]
