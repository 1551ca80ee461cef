"""Immutable segments: the tables built over a block of codes, and the calls into the kernels."""

from __future__ import annotations

import numpy as np

from . import kernelcache, simd
from .kernels import (
    _build_inline,
    _build_packed,
    _fragment_query,
    _inline_query,
    _linear_query,
    _packed_query,
)
from .plan import _DIR_BLOCK, MAX_SUBSTRING_RADIUS, Layout, _fits_words, split


class Hits:
    """Raw results of a kernel call: row, distance and query index arrays."""

    __slots__ = ("rows", "distances", "queries")

    def __init__(self, rows: np.ndarray, distances: np.ndarray, queries: np.ndarray) -> None:
        self.rows, self.distances, self.queries = rows, distances, queries


#: Survivors a fragment query has room for at first (~2,400 for 8 pHash variants at
#: 10M); more make it call again with room for all.
_SURVIVOR_ROOM = 8192


def _run(kernel, args, cap: int = 256) -> Hits | int:  # type: ignore[no-untyped-def]
    """Call ``kernel`` until its output fits; an int is the room a kernel asked for
    (a negative return: see _fragment_query)."""
    while True:
        rows = np.empty(cap, dtype=np.uint32)
        dist = np.empty(cap, dtype=np.uint64)
        qs = np.empty(cap, dtype=np.int64)
        count = kernel(*args, rows, dist, qs)
        if count < 0:
            return -int(count)
        if count <= cap:
            return Hits(rows[:count], dist[:count].astype(np.int64), qs[:count])
        cap = int(count)


def _line_aligned(n: int, dtype) -> np.ndarray:  # type: ignore[no-untyped-def]
    """An empty array of ``n`` items starting on a 64-byte cache line (numpy's allocator
    gives 16 bytes), so the vector scans' line-sized steps never straddle two lines."""
    size = n * np.dtype(dtype).itemsize
    raw = np.empty(size + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype)


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view (the caller's array keeps its own flags)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def _compact_directories(offsets: np.ndarray, dwidths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The packed tables' directories in 1.25 bytes a slot instead of 4: a 32-bit offset
    per block of 16 slots, and each slot's end as one byte counted from its block's
    offset (a slot starts where the previous one in its block ends, or at the block's
    offset). 92 MB of PDQ directories at 10M become 29 MB, which the caches keep far
    more of. Empty arrays where some block holds 256 rows or more (a bank with many
    hashes sharing a substring): those tables keep the plain 32-bit offsets."""
    empty = (np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.uint8))
    if int(dwidths.min()) < 4:  # a table smaller than a block
        return empty
    bases, ends, at = [], [], 0
    for d in dwidths.tolist():
        table = offsets[at : at + (1 << d) + 1].astype(np.int64)
        at += (1 << d) + 1
        block = table[:-1 : _DIR_BLOCK]
        rel = table[1:] - np.repeat(block, _DIR_BLOCK)
        if int(rel.max()) > 255:
            return empty
        bases.append(block.astype(np.uint32))
        ends.append(rel.astype(np.uint8))
    return np.concatenate(bases), np.concatenate(ends)


class MihSegment:
    """An immutable multi-index over ``codes`` (N x words, uint64, big-endian bit order).

    Rows are positions in ``codes``; the caller maps them to entry ids.
    """

    def __init__(self, codes: np.ndarray, layout: Layout) -> None:
        if codes.ndim != 2 or codes.dtype != np.uint64 or codes.shape[1] * 64 != layout.bits:
            raise ValueError(f"codes must be N x {layout.bits // 64} uint64, got {codes.shape} {codes.dtype}")
        if codes.shape[0] >= 2**32:
            raise ValueError("a segment holds fewer than 2**32 rows")
        if layout.inline and layout.bits != 64:
            raise ValueError("the inline layout is for 64-bit hashes")
        if not _fits_words(layout, codes.shape[0]):
            raise ValueError(f"{codes.shape[0]} rows and {layout.low_bits} low bits do not fit a 32-bit word")
        _ensure_compiled()  # at load time, so no scan waits for the compiler
        self.codes = _readonly(np.ascontiguousarray(codes))  # one compiled type: see _finish
        self.layout = layout
        n = codes.shape[0]
        m = layout.m
        self._starts = np.array([s for s, _ in layout.substrings], dtype=np.int64)
        self._widths = np.array([w for _, w in layout.substrings], dtype=np.int64)
        self._dwidths = np.array(layout.dir_widths, dtype=np.int64)
        sizes = [(1 << int(d)) + 1 for d in self._dwidths]
        self._off_bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._offsets = np.empty(int(sum(sizes)), dtype=np.uint32)
        self._words = _line_aligned(0 if layout.inline else m * n, np.uint32)
        self._tcodes = _line_aligned(m * n if layout.inline and not layout.fragments else 0, np.uint64)
        self._frags = _line_aligned(m * n if layout.fragments else 0, np.uint32)
        self._trows = np.empty(m * n if layout.inline else 0, dtype=np.uint32)
        for t, (start, width) in enumerate(layout.substrings):
            base, size = int(self._off_bases[t]), sizes[t]
            offsets = self._offsets[base : base + size]
            rows = slice(t * n, (t + 1) * n)
            if layout.inline:
                _build_inline(self.codes, start, width, offsets, self._tcodes[rows], self._frags[rows], self._trows[rows])
            else:
                low = width - int(self._dwidths[t])
                _build_packed(self.codes, start, width, low, offsets, self._words[rows])
        # Inline and fragment directories are small and stay plain (the kernels index them
        # directly); only packed tables get the compact form.
        empty = np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.uint8)
        self._dir_base, self._dir_ends = empty if layout.inline else _compact_directories(self._offsets, self._dwidths)
        if self._dir_ends.size > 0:
            self._offsets = np.empty(0, dtype=np.uint32)  # the compact form replaces it
        self._finish()

    def _finish(self) -> None:
        """What follows from the tables; and every array read-only, so the kernels see one
        array type whether the tables were built here or mapped from a shared index file
        (numba compiles once per argument type: a writable and a read-only array would
        cost a second compile)."""
        for name in self._TABLES:
            setattr(self, name, _readonly(getattr(self, name)))
        self.codes = _readonly(self.codes)
        self._slot_bases = np.concatenate([[0], np.cumsum(1 << self._dwidths)[:-1]]).astype(np.int64)
        self._compact = self._dir_ends.size > 0

    #: The arrays a segment is made of beside its codes: what a shared index file stores.
    _TABLES = ("_offsets", "_dir_base", "_dir_ends", "_words", "_tcodes", "_frags", "_trows")

    def tables(self) -> dict[str, np.ndarray]:
        """The built tables by name (without the codes), for :meth:`from_tables`."""
        return {name.lstrip("_"): getattr(self, name) for name in self._TABLES}

    @classmethod
    def from_tables(cls, codes: np.ndarray, layout: Layout, tables: dict[str, np.ndarray]) -> "MihSegment":
        """A segment over tables :meth:`tables` gave (e.g. mapped from a shared index file),
        without building anything. Checks every table's type and size against the layout
        and the codes, since the kernels index them unchecked.

        Raises:
            ValueError: a table is missing, or of the wrong type or size.
        """
        n = codes.shape[0] if codes.ndim == 2 else -1
        if codes.ndim != 2 or codes.dtype != np.uint64 or codes.shape[1] * 64 != layout.bits or n >= 2**32:
            raise ValueError(f"codes must be N x {layout.bits // 64} uint64, got {codes.shape} {codes.dtype}")
        if layout.inline and layout.bits != 64:
            raise ValueError("the inline layout is for 64-bit hashes")
        if not _fits_words(layout, n):
            raise ValueError(f"{n} rows and {layout.low_bits} low bits do not fit a 32-bit word")
        self = cls.__new__(cls)
        self.codes, self.layout = codes, layout
        self._starts = np.array([s for s, _ in layout.substrings], dtype=np.int64)
        self._widths = np.array([w for _, w in layout.substrings], dtype=np.int64)
        self._dwidths = np.array(layout.dir_widths, dtype=np.int64)
        sizes = [(1 << int(d)) + 1 for d in self._dwidths]
        self._off_bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        m, slots = layout.m, int(sum(1 << int(d) for d in self._dwidths))
        compact = not layout.inline and tables.get("dir_ends", np.empty(0)).size > 0
        expected = {
            "offsets": (np.uint32, 0 if compact else int(sum(sizes))),
            "dir_base": (np.uint32, slots // _DIR_BLOCK if compact else 0),
            "dir_ends": (np.uint8, slots if compact else 0),
            "words": (np.uint32, 0 if layout.inline else m * n),
            "tcodes": (np.uint64, m * n if layout.inline and not layout.fragments else 0),
            "frags": (np.uint32, m * n if layout.fragments else 0),
            "trows": (np.uint32, m * n if layout.inline else 0),
        }
        for name, (dtype, size) in expected.items():
            table = tables.get(name)
            if table is None or table.dtype != dtype or table.ndim != 1 or table.size != size:
                got = "missing" if table is None else f"{table.dtype} x {table.size}"
                raise ValueError(f"table {name} of {layout.describe()} over {n} rows must be {np.dtype(dtype)} x {size},"
                                 f" got {got}")
            setattr(self, "_" + name, table)
        _ensure_compiled()
        self._finish()
        return self

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory beyond the one copy of the codes."""
        return int(self._offsets.nbytes + self._dir_base.nbytes + self._dir_ends.nbytes + self._words.nbytes
                   + self._tcodes.nbytes + self._frags.nbytes + self._trows.nbytes)

    def query(self, queries: np.ndarray, max_distance: int) -> Hits:
        """Every (row, query) pair within ``max_distance``; ``queries`` is Q x words
        (all variants of a photo in one call). A row reached through several tables
        may be reported more than once."""
        radii = self.layout.radii(max_distance)
        if int(radii.max()) > MAX_SUBSTRING_RADIUS:
            return linear_query(self.codes, len(self), queries, max_distance)
        if self.layout.fragments:
            room = _SURVIVOR_ROOM
            while True:
                hits = _run(
                    _fragment_query,
                    (self.codes, self._frags, self._trows, self._offsets, self._off_bases, self._starts, self._widths,
                     radii, queries, int(max_distance), simd.VECTOR_SCAN, np.empty(room, dtype=np.int64),
                     np.empty(room, dtype=np.int64)),
                )
                if isinstance(hits, Hits):
                    return hits
                room = hits
        if self.layout.inline:
            return _run(
                _inline_query,
                (self._tcodes, self._trows, self._offsets, self._off_bases, self._starts, self._widths, radii,
                 queries, int(max_distance), simd.VECTOR_SCAN),
            )
        return _run(
            _packed_query,
            (self.codes, self.codes.reshape(-1), self._words, self._offsets, self._dir_base, self._dir_ends,
             self._slot_bases if self._compact else self._off_bases, self._compact, self._starts, self._widths,
             self._dwidths, radii, queries, int(max_distance), simd.VECTOR_SCAN),
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
        return _run(_linear_query, (_readonly(codes), n, queries, int(max_distance)))
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
        # From the host's kernel cache where the caller set one up (kernelcache.use_kernel_cache).
        compile_seconds = kernelcache.compile_once(warm_up)


def warm_up() -> float:
    """Compile the kernels now (seconds taken), so the first scan is not the slow one."""
    import time

    global _compiled
    _compiled = True
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for words in (1, 4):
        codes = rng.integers(0, 2**63, size=(64, words), dtype=np.uint64)
        kinds = [(True, False), (True, True), (False, False)] if words == 1 else [(False, False)]
        for inline, fragments in kinds:
            seg = MihSegment(codes, split(64 * words, 4 * words, inline=inline, dir_bits=10, fragments=fragments))
            seg.query(codes[:2], 8)
        linear_query(codes, 64, codes[:2], 8)
    return time.perf_counter() - start
