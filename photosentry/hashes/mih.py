"""Multi-index hashing: Hamming range search over millions of hashes in microseconds.

Why: a linear scan touches every hash (10 million PDQ hashes are 320 MB per query
variant); a photo needs 18 queries (8 PDQ, 8 pHash, 2 dHash variants).

How (Norouzi et al., "Fast search in Hamming space with multi-index hashing", with
the general pigeonhole principle of Qin et al.): cut the ``bits``-bit hash into ``m``
substrings. If two hashes are within ``r`` bits, write ``r = m*q + s`` (0 <= s < m);
then one of the first ``s + 1`` substrings is within ``q`` bits, or one of the others
within ``q - 1`` (otherwise the distance would be at least ``(s+1)(q+1) + (m-s-1)q >
r``). Each substring has a table from its value to the rows holding it (counting sort).
A query enumerates the values within each substring's radius, looks them up, and
verifies every candidate against the full hash. What costs is random memory reads
(a probe, a candidate), so the layouts below are about reading fewer cache lines.

Three layouts, picked per algorithm, bank size and kernel family (``plan_layout``):

- ``packed`` (256-bit PDQ): a table is a directory indexed by the top ``D`` bits of
  its substring and one 32-bit word per row that packs the row number with the
  substring's remaining ``L = width - D`` low bits. A probe reads one directory slot
  and scans its short bucket, keeping the words whose low bits are within the radius
  left after the directory bits' flips; survivors are verified against the one copy
  of the codes. So substrings can be wider than the offsets memory would allow with
  direct addressing (``width`` 20-24 with ``D`` = 21 at 10M). The directories are
  compact (a 32-bit offset per 16 slots and a byte per slot, see
  _compact_directories): 29 MB instead of 92 at 10M, which the caches keep more of.
- ``fragment`` (64-bit pHash/dHash): each table holds, in bucket order, 32 bits of
  each code from outside its substring and the row. A bucket is filtered with a
  sequential scan of 4-byte fragments (a row can only match if its fragment is within
  the radius the probe's flips left), and the few that pass are verified against the
  full code: half the lines of ``inline`` to stream.
- ``inline`` (64-bit): each table holds its own copy of the 64-bit codes in bucket
  order, verified by a sequential scan with no random access per candidate; the
  scalar kernels' choice (their scan is bound by compares, not lines).

Inline and fragment tables are directly addressed, and their widths need not be
equal: at 10M, three 17-bit tables at radius 2 and one 13-bit at radius 1 (copies),
or 17/17/16/14 (fragments). Their directories (1.6 MB in all) stay in cache, so a
probe costs almost nothing, and the long buckets are fetched ahead whole.

On CPUs with AVX-512 VPOPCNTDQ the bucket scans take one cache line per step (masked
load, vector popcount, compress; see VECTOR_SCAN), elsewhere scalar loops; each
kernel family has its own cost model, so a host plans for the kernels it runs.

A query call takes every variant of a photo at once and runs in phases (enumerate
every probe, read every bucket's bounds, scan every bucket, verify every candidate),
so the random reads of a phase do not wait on each other: memory-level parallelism,
not instruction count, sets the speed.

A segment is immutable once built (building is a counting sort, O(N) per table, in
numba). :class:`~photosentry.hashes.index.TieredIndex` layers a small linear buffer
and a tombstone set over segments so adds and removes never rebuild the big one.

The kernels are compiled by numba on first use (``cache=False``: nothing is written
into site-packages, so read-only installs work; ``warm_up`` compiles them up front,
a few seconds, measured by ``scripts/bench_match.py``).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass

import numpy as np

try:  # numba is a core dependency; the guard only gives a clear message if it is broken
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError as exc:  # pragma: no cover
    raise ImportError("photosentry needs numba for its hash index: pip install 'numba>=0.60'") from exc

#: Substring radius the probe enumerator supports (radius 4 of 22 bits is 35k probes:
#: beyond that a linear scan is cheaper, and plan_layout never asks for more).
MAX_SUBSTRING_RADIUS = 4


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
    #: (and the row) instead of the whole code; see _fragment_query.
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
# The vector scans (VECTOR_SCAN), fitted the same way on session 5's host (Intel Xeon
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
    if not layout.inline and min(layout.dir_widths) >= 4:  # compact (MihSegment, _compact_directories)
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
    vector = VECTOR_SCAN if vector is None else vector
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


def plan_layout(
    bits: int, radius: int, n: int, *, inline: bool | None = None, vector: bool | None = None
) -> Layout | None:
    """The cheapest layout for ``n`` hashes searched within ``radius`` that fits the memory
    budget; None if a linear scan is cheaper (small banks). ``vector``: plan for the
    vector or the scalar scans (default: the ones this host runs)."""
    best, best_cost = None, n * (bits // 64) * _LINEAR_NS_PER_WORD
    for layout in candidate_layouts(bits, radius, n, inline=inline):
        cost = cost_ns(layout, radius, n, vector=vector)
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


#: Probes/candidates ahead of use that the kernels prefetch: a scan or verify step does
#: enough work that the out-of-order window alone keeps only a few misses in flight.
_AHEAD = 16
#: Directory slots per block of the compact directory (one 32-bit offset per block).
_DIR_BLOCK = 16


@intrinsic
def _prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Hint the CPU to fetch ``arr[idx]`` into cache (LLVM's prefetch; never faults)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        if getattr(ptr.type, "is_opaque", False):  # llvmlite >= 0.45 (opaque pointers)
            name = "llvm.prefetch.p0"
        else:
            name, ptr = "llvm.prefetch.p0i8", builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            name)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, high locality, data cache
        return context.get_dummy_value()

    return sig, codegen


def _host_has_vector_popcount() -> bool:
    """True where the compiled kernels can use 512-bit vector popcounts (AVX-512F and
    VPOPCNTDQ). numba compiles for this host's CPU, so the vector intrinsics below are
    correct everywhere; without these instructions LLVM would emulate them lane by lane,
    slower than the scalar loops, so the kernels take the scalar path there."""
    forced = os.environ.get("PHOTOSENTRY_MIH_VECTOR", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if numba.config.CPU_NAME not in (None, "host"):  # a portable build: no host features
        return False
    try:
        from llvmlite import binding

        features = set(binding.get_host_cpu_features().flatten().split(","))
    except Exception:  # pragma: no cover - an llvmlite that cannot tell: stay scalar
        return False
    return {"+avx512f", "+avx512vpopcntdq"} <= features


#: Whether the kernels scan buckets with vector instructions (16 packed words or 8 codes
#: at a time, no per-word branch). Decided once per process from the host's CPU;
#: ``PHOTOSENTRY_MIH_VECTOR=0`` or ``1`` overrides it (benchmarks, tests).
VECTOR_SCAN = _host_has_vector_popcount()


def _vector(builder, ty, value):  # type: ignore[no-untyped-def]
    """``value`` (an integer) in every lane of vector type ``ty``."""
    i32 = ir.IntType(32)
    lane = ty.element
    if value.type.width > lane.width:
        value = builder.trunc(value, lane)
    elif value.type.width < lane.width:
        value = builder.zext(value, lane)
    one = builder.insert_element(ir.Constant(ty, ir.Undefined), value, i32(0))
    return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(i32, ty.count), [0] * ty.count))


def _lanes_between(builder, ty, first, last):  # type: ignore[no-untyped-def]
    """A lane mask of vector type ``ty``'s width: lanes ``first .. last-1`` set. Either
    bound may lie outside the lanes (a step in the middle of a long bucket)."""
    def clamp(x):  # type: ignore[no-untyped-def]
        x = builder.select(builder.icmp_signed("<", x, x.type(0)), x.type(0), x)
        return builder.select(builder.icmp_signed(">", x, x.type(ty.count)), x.type(ty.count), x)

    lanes = ir.Constant(ty, list(range(ty.count)))
    return builder.and_(builder.icmp_unsigned(">=", lanes, _vector(builder, ty, clamp(first))),
                        builder.icmp_unsigned("<", lanes, _vector(builder, ty, clamp(last))))


def _element_pointer(context, builder, aryty, ary, idx):  # type: ignore[no-untyped-def]
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, array, [idx], wraparound=False)


def _declare(builder, name, ret, args):  # type: ignore[no-untyped-def]
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _masked_load(builder, vec, src, mask):  # type: ignore[no-untyped-def]
    """``llvm.masked.load`` of vector type ``vec`` from element pointer ``src``. LLVM 17
    and later have only opaque pointers (name suffix ``.p0``); before, the intrinsic
    takes a pointer to the vector type and says so in its name (numba 0.60: LLVM 14)."""
    i32 = ir.IntType(32)
    name = f"llvm.masked.load.v{vec.count}i{vec.element.width}"
    if _TYPED_POINTERS:
        src = builder.bitcast(src, vec.as_pointer())
        name += f".p0v{vec.count}i{vec.element.width}"
    else:
        name += ".p0"
    load = _declare(builder, name, vec, [src.type, i32, ir.VectorType(ir.IntType(1), vec.count), vec])
    return builder.call(load, [src, i32(vec.element.width // 8), mask, ir.Constant(vec, None)])


def _store(builder, value, dst):  # type: ignore[no-untyped-def]
    """A plain (unaligned) store of vector ``value`` at element pointer ``dst``."""
    store = builder.store(value, builder.bitcast(dst, value.type.as_pointer()))
    store.align = value.type.element.width // 8


def _llvm_major() -> int:
    from llvmlite import binding

    return int(binding.llvm_version_info[0])


_TYPED_POINTERS = _llvm_major() < 17
#: Whether _scan_words16 compresses in a register (``llvm.experimental.vector.compress``,
#: LLVM 19+) or, before, with LLVM's compress-store (which x86 lowers to the memory form).
_HAS_VECTOR_COMPRESS = _llvm_major() >= 19


@intrinsic
def _scan_words16(typingctx, words, p, first, last, ql, mask, rem, low, out, at):  # type: ignore[no-untyped-def]
    """Packed bucket scan, 16 words at once: of lanes ``first .. last-1`` of
    ``words[p : p + 16]``, store the row (``word >> low``) of each word whose low bits
    are within ``rem`` of ``ql`` at ``out[at:]``, packed together; return how many.
    Other lanes are not read (a masked load does not fault). Callers keep ``p`` at a
    multiple of 16 in a line-aligned table: a load that straddled two lines would
    fetch both, even for lanes it masks out. ``out[at : at + 16]`` is written whole
    (past the kept rows with junk the next step overwrites), so ``out`` keeps 16 spare
    slots: the rows are compressed in a register and stored with one plain store. A
    compress straight to memory (VPCOMPRESSD m512) is microcoded on AMD Zen 4 and made
    this kernel 1.4x slower there than the scalar loop; see docs/matching.md."""
    sig = types.int64(words, p, first, last, ql, mask, rem, low, out, at)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i1, i16, i32 = ir.IntType(1), ir.IntType(16), ir.IntType(32)
        vec, lanes = ir.VectorType(i32, 16), ir.VectorType(i1, 16)
        src = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        dst = _element_pointer(context, builder, signature.args[8], args[8], args[9])
        valid = _lanes_between(builder, vec, args[2], args[3])
        v = _masked_load(builder, vec, src, valid)
        diff = builder.and_(builder.xor(v, _vector(builder, vec, args[4])), _vector(builder, vec, args[5]))
        bits = builder.call(_declare(builder, "llvm.ctpop.v16i32", vec, [vec]), [diff])
        keep = builder.and_(builder.icmp_unsigned("<=", bits, _vector(builder, vec, args[6])), valid)
        rows = builder.lshr(v, _vector(builder, vec, args[7]))
        if _HAS_VECTOR_COMPRESS:
            compress = _declare(builder, "llvm.experimental.vector.compress.v16i32", vec, [vec, lanes, vec])
            _store(builder, builder.call(compress, [rows, keep, ir.Constant(vec, ir.Undefined)]), dst)
        else:
            store = _declare(builder, "llvm.masked.compressstore.v16i32", ir.VoidType(), [vec, dst.type, lanes])
            builder.call(store, [rows, dst, keep])
        kept = builder.call(_declare(builder, "llvm.ctpop.i16", i16, [i16]), [builder.bitcast(keep, i16)])
        return builder.zext(kept, ir.IntType(64))

    return sig, codegen


@intrinsic
def _fill16(typingctx, out, at, value):  # type: ignore[no-untyped-def]
    """``out[at : at + 16] = value`` in one store (``out`` keeps 16 spare slots at its end)."""
    sig = types.void(out, at, value)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        lane = context.get_value_type(signature.args[0].dtype)
        vec = ir.VectorType(lane, 16)
        dst = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        _store(builder, _vector(builder, vec, args[2]), dst)
        return context.get_dummy_value()

    return sig, codegen


def _near_lanes(lanes: int, bits: int):  # type: ignore[no-untyped-def]
    """An intrinsic ``near(arr, p, first, last, q, max_dist)``: a bit mask of lanes
    ``first .. last-1`` of ``arr[p : p + lanes]`` (``bits``-bit items) within
    ``max_dist`` bits of ``q`` (0: none). ``p`` a multiple of ``lanes`` in a line-aligned
    table, as for _scan_words16."""

    @intrinsic
    def near(typingctx, arr, p, first, last, q, max_dist):  # type: ignore[no-untyped-def]
        sig = types.int64(arr, p, first, last, q, max_dist)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            vec = ir.VectorType(ir.IntType(bits), lanes)
            src = _element_pointer(context, builder, signature.args[0], args[0], args[1])
            valid = _lanes_between(builder, vec, args[2], args[3])
            v = _masked_load(builder, vec, src, valid)
            ctpop = _declare(builder, f"llvm.ctpop.v{lanes}i{bits}", vec, [vec])
            diff = builder.call(ctpop, [builder.xor(v, _vector(builder, vec, args[4]))])
            near = builder.and_(builder.icmp_unsigned("<=", diff, _vector(builder, vec, args[5])), valid)
            return builder.zext(builder.bitcast(near, ir.IntType(lanes)), ir.IntType(64))

        return sig, codegen

    return near


#: 8 inline codes (64-bit) or 16 fragments (32-bit) at a time: one 64-byte line.
_near8 = _near_lanes(8, 64)
_near16 = _near_lanes(16, 32)


@njit(cache=False, nogil=True)
def _build_packed(codes, start, width, low_bits, offsets, words):  # type: ignore[no-untyped-def]
    """Counting sort on the top bits of one substring: directory + packed words."""
    n = codes.shape[0]
    offsets[:] = 0
    shift = np.uint64(low_bits)
    mask = (np.uint64(1) << shift) - np.uint64(1)
    for i in range(n):
        offsets[np.int64(_substring(codes[i], start, width) >> shift) + 1] += 1
    for i in range(offsets.shape[0] - 1):
        offsets[i + 1] += offsets[i]
    fill = offsets[:-1].copy()
    for i in range(n):
        key = _substring(codes[i], start, width)
        h = np.int64(key >> shift)
        p = fill[h]
        fill[h] = p + 1
        words[p] = np.uint32((np.uint64(i) << shift) | (key & mask))


@njit(cache=False, nogil=True)
def _build_inline(codes, start, width, offsets, tcodes, frags, trows):  # type: ignore[no-untyped-def]
    """Counting sort on one substring: offsets, and in bucket order the rows and either
    the codes (``tcodes``) or their fragments (``frags``); the other one is empty."""
    n = codes.shape[0]
    offsets[:] = 0
    for i in range(n):
        offsets[np.int64(_substring(codes[i], start, width)) + 1] += 1
    for i in range(offsets.shape[0] - 1):
        offsets[i + 1] += offsets[i]
    fill = offsets[:-1].copy()
    for i in range(n):
        h = np.int64(_substring(codes[i], start, width))
        p = fill[h]
        fill[h] = p + 1
        if tcodes.shape[0]:
            tcodes[p] = codes[i, 0]
        else:
            frags[p] = np.uint32(_fragment(codes[i, 0], start, width))
        trows[p] = i


@njit(cache=False, nogil=True, inline="always")
def _fragment(code: np.uint64, start: int, width: int) -> np.uint64:
    # The FRAGMENT_BITS bits that follow the substring (wrapping past the last bit):
    # none of them is a substring bit, so they add to what the probe already matched.
    turn = np.uint64((start + width) & 63)
    if turn:
        code = (code << turn) | (code >> (np.uint64(64) - turn))
    return code >> np.uint64(64 - FRAGMENT_BITS)


@njit(cache=False, nogil=True)
def _ball_size(width: int, k: int) -> int:
    total, term = 0, 1
    for i in range(k + 1):
        total += term
        term = term * (width - i) // (i + 1)
    return total


@njit(cache=False, nogil=True, inline="always")
def _enumerate(key, width, k, base, tag, probe_at, probe_tag, c):  # type: ignore[no-untyped-def]
    """Append every key within ``k`` bits of ``key`` (``width`` bits) as a probe; the tag
    carries the radius left for the bits beyond the directory (low 3 bits)."""
    one = np.uint64(1)
    probe_at[c] = base + np.int64(key)
    probe_tag[c] = tag | k
    c += 1
    if k >= 1:
        for i in range(width):
            k1 = key ^ (one << np.uint64(i))
            probe_at[c] = base + np.int64(k1)
            probe_tag[c] = tag | (k - 1)
            c += 1
            if k >= 2:
                for j in range(i + 1, width):
                    k2 = k1 ^ (one << np.uint64(j))
                    probe_at[c] = base + np.int64(k2)
                    probe_tag[c] = tag | (k - 2)
                    c += 1
                    if k >= 3:
                        for h in range(j + 1, width):
                            k3 = k2 ^ (one << np.uint64(h))
                            probe_at[c] = base + np.int64(k3)
                            probe_tag[c] = tag | (k - 3)
                            c += 1
                            if k >= 4:
                                for g in range(h + 1, width):
                                    probe_at[c] = base + np.int64(k3 ^ (one << np.uint64(g)))
                                    probe_tag[c] = tag
                                    c += 1
    return c


# A probe's tag: query number << 16 | table << 8 | radius left (no division in the scan).
_TAG_Q = 16
_TAG_T = 8


@njit(cache=False, nogil=True)
def _probes(queries, starts, widths, dwidths, radii, off_bases):  # type: ignore[no-untyped-def]
    """Phase 1, every variant at once: directory slots, tags, and each (query, table)'s
    low substring bits."""
    nq = queries.shape[0]
    m = starts.shape[0]
    per_q = 0
    for t in range(m):
        if radii[t] >= 0:
            per_q += _ball_size(dwidths[t], radii[t])
    probe_at = np.empty(per_q * nq, dtype=np.int64)
    probe_tag = np.empty(per_q * nq, dtype=np.int64)
    qlow = np.empty(nq * m, dtype=np.uint64)
    one = np.uint64(1)
    c = 0
    for qi in range(nq):
        for t in range(m):
            k = radii[t]
            if k < 0:
                continue
            low = np.uint64(widths[t] - dwidths[t])
            key = _substring(queries[qi], starts[t], widths[t])
            qlow[qi * m + t] = key & ((one << low) - one)
            tag = (qi << _TAG_Q) | (t << _TAG_T)
            c = _enumerate(key >> low, dwidths[t], k, off_bases[t], tag, probe_at, probe_tag, c)
    return probe_at, probe_tag, qlow


@njit(cache=False, nogil=True)
def _packed_query(
    codes, flat, words, offsets, dir_base, dir_ends, bases, compact, starts, widths, dwidths, radii, queries, max_dist,
    vector, out_rows, out_dist, out_query,
):
    """Every (row, query) within ``max_dist``; returns how many (may exceed the output size).
    ``compact``: the directories are ``dir_base``/``dir_ends`` (see _compact_directories),
    else ``offsets``; ``bases``: where each table's slots start in them. ``vector``: scan
    buckets 16 words at a time (see VECTOR_SCAN)."""
    n = codes.shape[0]
    nw = queries.shape[1]
    m = starts.shape[0]
    probe_at, probe_tag, qlow = _probes(queries, starts, widths, dwidths, radii, bases)
    c = probe_at.shape[0]
    # Phase 2: bucket bounds (independent reads), and a prefetch of each bucket.
    lo = np.empty(c, dtype=np.int64)
    size = np.empty(c, dtype=np.int64)
    scanned = 0
    for i in range(c):
        a = probe_at[i]
        if compact:
            if i + _AHEAD < c:
                _prefetch(dir_ends, probe_at[i + _AHEAD])
                _prefetch(dir_base, probe_at[i + _AHEAD] // _DIR_BLOCK)
            block = np.int64(dir_base[a // _DIR_BLOCK])
            start = block + np.int64(dir_ends[a - 1]) if a % _DIR_BLOCK else block
            end = block + np.int64(dir_ends[a])
        else:
            if i + _AHEAD < c:
                _prefetch(offsets, probe_at[i + _AHEAD])
            start = np.int64(offsets[a])
            end = np.int64(offsets[a + 1])
        lo[i] = ((probe_tag[i] >> _TAG_T) & 0xFF) * n + start
        size[i] = end - start
        scanned += size[i]
    # Phase 3: scan the buckets, keep words whose low bits are within the radius left
    # (branch-free: about a quarter pass, a branch would mispredict). The vector scan
    # takes a whole bucket (~5 words at 10M) in one step, so there is no loop exit to
    # mispredict either; the candidate arrays keep 16 spare slots for its stores.
    cand_row = np.empty(scanned + 16, dtype=np.uint32)
    cand_q = np.empty(scanned + 16, dtype=np.int32)
    nc = 0
    for i in range(c):
        if i + _AHEAD < c:
            _prefetch(words, lo[i + _AHEAD])
            if vector:  # the bucket's last line, when it straddles two
                _prefetch(words, lo[i + _AHEAD] + max(size[i + _AHEAD] - 1, 0))
        tag = probe_tag[i]
        t = (tag >> _TAG_T) & 0xFF
        qi = tag >> _TAG_Q
        rem = np.uint64(tag & 7)
        low = np.uint64(widths[t] - dwidths[t])
        mask = (np.uint64(1) << low) - np.uint64(1)
        ql = qlow[qi * m + t]
        if vector:  # 16-word steps on line boundaries: as many steps as lines
            p, end = lo[i] - lo[i] % 16, lo[i] + size[i]
            while p < end:
                _fill16(cand_q, nc, qi)
                nc += _scan_words16(words, p, lo[i] - p, end - p, ql, mask, rem, low, cand_row, nc)
                p += 16
            continue
        for p in range(lo[i], lo[i] + size[i]):
            w = np.uint64(words[p])
            cand_row[nc] = np.uint32(w >> low)
            cand_q[nc] = qi
            nc += _popcount64((w ^ ql) & mask) <= rem
    # Phase 4: verify against the full hash (independent reads; hits are rare).
    count = 0
    cap = out_rows.shape[0]
    md = np.uint64(max_dist)
    for j in range(nc):
        if j + _AHEAD < nc:
            _prefetch(flat, np.int64(cand_row[j + _AHEAD]) * nw)
        row = cand_row[j]
        qi = cand_q[j]
        d = np.uint64(0)
        for w in range(nw):
            d += _popcount64(codes[row, w] ^ queries[qi, w])
        if d <= md:
            if count < cap:
                out_rows[count] = row
                out_dist[count] = d
                out_query[count] = qi
            count += 1
    return count


@njit(cache=False, nogil=True)
def _direct_buckets(probe_at, probe_tag, offsets, n):  # type: ignore[no-untyped-def]
    """Where each probe's bucket lies in directly addressed tables of ``n`` rows each
    (inline, fragment): independent directory reads, fetched ahead."""
    c = probe_at.shape[0]
    lo = np.empty(c, dtype=np.int64)
    hi = np.empty(c, dtype=np.int64)
    for i in range(c):
        if i + _AHEAD < c:
            _prefetch(offsets, probe_at[i + _AHEAD])
        a = probe_at[i]
        base = np.int64((probe_tag[i] >> _TAG_T) & 0xFF) * n
        lo[i] = base + np.int64(offsets[a])
        hi[i] = base + np.int64(offsets[a + 1])
    return lo, hi


@njit(cache=False, nogil=True)
def _inline_query(
    tcodes, trows, offsets, off_bases, starts, widths, radii, queries, max_dist, vector, out_rows, out_dist, out_query,
):
    """Inline layout (64-bit codes): every (row, query) within ``max_dist``. ``vector``:
    the first pass takes 8 codes at a time (see VECTOR_SCAN)."""
    m = starts.shape[0]
    n = tcodes.shape[0] // m
    probe_at, probe_tag, _ = _probes(queries, starts, widths, widths, radii, off_bases)
    c = probe_at.shape[0]
    lo, hi = _direct_buckets(probe_at, probe_tag, offsets, n)
    scanned = np.int64((hi - lo).sum())
    # Buckets run from one line (wide substrings) to a hundred (narrow ones): fetch
    # every line of a bucket far enough ahead that about _LINES_AHEAD lines are in
    # flight, so a scan never starts on a miss, whatever the bucket sizes.
    lines = scanned // max(c, 1) // 8 + 1
    ahead = max(2, min(_AHEAD, _LINES_AHEAD // lines))
    for i in range(min(ahead, c)):
        _prefetch_run(tcodes, lo[i], hi[i])
    count = 0
    cap = out_rows.shape[0]
    md = np.uint64(max_dist)
    for i in range(c):
        if i + ahead < c:
            _prefetch_run(tcodes, lo[i + ahead], hi[i + ahead])
        qi = probe_tag[i] >> _TAG_Q
        q = queries[qi, 0]
        # A hit is rare: first a branch-free pass over the bucket, then the bucket
        # again, with the output, only when it holds one.
        near = 0
        if vector:  # 8-code steps on line boundaries
            p = lo[i] - lo[i] % 8
            while p < hi[i]:
                near |= _near8(tcodes, p, lo[i] - p, hi[i] - p, q, md)
                p += 8
        else:
            for p in range(lo[i], hi[i]):
                near += _popcount64(tcodes[p] ^ q) <= md
        if near == 0:
            continue
        for p in range(lo[i], hi[i]):
            d = _popcount64(tcodes[p] ^ q)
            if d <= md:
                if count < cap:
                    out_rows[count] = trows[p]
                    out_dist[count] = d
                    out_query[count] = qi
                count += 1
    return count


@njit(cache=False, nogil=True)
def _fragment_query(
    codes, frags, trows, offsets, off_bases, starts, widths, radii, queries, max_dist, vector, spos, sq, out_rows,
    out_dist, out_query,
):
    """Fragment layout (64-bit codes): every (row, query) within ``max_dist``.

    A table holds, in bucket order, 32 bits of each code from outside its substring:
    half the bytes of the inline layout's copies, so half the lines to stream. A row
    whose substring is f bits from the query's (the probe's flips) can only match if
    its fragment is within ``max_dist - f``; those survivors (~300 per 8-variant pHash
    query at 10M, radius 10) are then read back, row and code, and verified.
    ``spos``/``sq`` hold the survivors (position, query); if they are too small, returns
    minus how many there were, and the caller calls again with room for them (arrays
    grown inside the loop would cost reference counting on every bucket)."""
    m = starts.shape[0]
    n = frags.shape[0] // m
    nq = queries.shape[0]
    probe_at, probe_tag, _ = _probes(queries, starts, widths, widths, radii, off_bases)
    c = probe_at.shape[0]
    qfrag = np.empty(nq * m, dtype=np.uint64)
    for qi in range(nq):
        for t in range(m):
            qfrag[qi * m + t] = _fragment(queries[qi, 0], starts[t], widths[t])
    lo, hi = _direct_buckets(probe_at, probe_tag, offsets, n)
    lines = 0
    for i in range(c):
        lines += min((hi[i] - lo[i]) // 16 + 1, _FRAGMENT_BUCKET_LINES)
    # Short runs (5 lines for a 17-bit table at 10M): many buckets ahead, each fetched
    # up to _FRAGMENT_BUCKET_LINES (the hardware streamer takes the rest of long ones).
    ahead = max(2, min(_AHEAD, _FRAGMENT_LINES_AHEAD // (lines // max(c, 1) + 1)))
    for i in range(min(ahead, c)):
        _prefetch_run(frags, lo[i], hi[i], _FRAGMENT_BUCKET_LINES)
    room = spos.shape[0]
    ns = 0
    md = np.int64(max_dist)
    for i in range(c):
        if i + ahead < c:
            _prefetch_run(frags, lo[i + ahead], hi[i + ahead], _FRAGMENT_BUCKET_LINES)
        tag = probe_tag[i]
        qi = tag >> _TAG_Q
        t = (tag >> _TAG_T) & 0xFF
        bound = np.uint64(md - (radii[t] - (tag & 7)))  # the radius left after the probe's flips
        qf = qfrag[qi * m + t]
        if vector:  # 16-fragment steps on line boundaries; survivors are rare
            p = lo[i] - lo[i] % 16
            while p < hi[i]:
                near = _near16(frags, p, lo[i] - p, hi[i] - p, qf, bound)
                while near:
                    if ns < room:
                        spos[ns] = p + np.int64(_popcount64(np.uint64((near & -near) - 1)))
                        sq[ns] = qi
                    ns += 1
                    near &= near - 1
                p += 16
        else:  # as the inline scan: a branch-free pass, then the bucket again if needed
            near = 0
            for p in range(lo[i], hi[i]):
                near += _popcount64(np.uint64(frags[p]) ^ qf) <= bound
            if near == 0:
                continue
            for p in range(lo[i], hi[i]):
                if _popcount64(np.uint64(frags[p]) ^ qf) <= bound:
                    if ns < room:
                        spos[ns] = p
                        sq[ns] = qi
                    ns += 1
    if ns > room:
        return -ns
    # The survivors' rows, then their codes: independent reads, fetched ahead.
    rows = np.empty(ns, dtype=np.int64)
    for j in range(ns):
        if j + _AHEAD < ns:
            _prefetch(trows, spos[j + _AHEAD])
        rows[j] = trows[spos[j]]
    count = 0
    cap = out_rows.shape[0]
    for j in range(ns):
        if j + _AHEAD < ns:
            _prefetch(codes, rows[j + _AHEAD])
        d = _popcount64(codes[rows[j], 0] ^ queries[sq[j], 0])
        if d <= np.uint64(max_dist):
            if count < cap:
                out_rows[count] = rows[j]
                out_dist[count] = d
                out_query[count] = sq[j]
            count += 1
    return count


#: Inline scans: lines in flight ahead of the scan, and the most fetched per bucket
#: (the hardware streamer takes over longer runs).
_LINES_AHEAD = 24
_BUCKET_LINES = 24
#: The same for fragment scans (measured on session 5's host at 10M: 10 lines a
#: bucket, ~8 buckets ahead).
_FRAGMENT_LINES_AHEAD = 80
_FRAGMENT_BUCKET_LINES = 10


@njit(cache=False, nogil=True, inline="always")
def _prefetch_run(arr, lo, hi, max_lines=_BUCKET_LINES):  # type: ignore[no-untyped-def]
    step = 64 // arr.itemsize
    end = min(hi, lo + max_lines * step)
    for p in range(lo, end, step):
        _prefetch(arr, p)
    if end > lo:
        _prefetch(arr, end - 1)  # the last line when the run starts mid-line


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
        self.codes = np.ascontiguousarray(codes)
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
        self._slot_bases = np.concatenate([[0], np.cumsum(1 << self._dwidths)[:-1]]).astype(np.int64)
        self._compact = self._dir_ends.size > 0
        if self._compact:
            self._offsets = np.empty(0, dtype=np.uint32)  # the compact form replaces it

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
                     radii, queries, int(max_distance), VECTOR_SCAN, np.empty(room, dtype=np.int64),
                     np.empty(room, dtype=np.int64)),
                )
                if isinstance(hits, Hits):
                    return hits
                room = hits
        if self.layout.inline:
            return _run(
                _inline_query,
                (self._tcodes, self._trows, self._offsets, self._off_bases, self._starts, self._widths, radii,
                 queries, int(max_distance), VECTOR_SCAN),
            )
        return _run(
            _packed_query,
            (self.codes, self.codes.reshape(-1), self._words, self._offsets, self._dir_base, self._dir_ends,
             self._slot_bases if self._compact else self._off_bases, self._compact, self._starts, self._widths,
             self._dwidths, radii, queries, int(max_distance), VECTOR_SCAN),
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
        kinds = [(True, False), (True, True), (False, False)] if words == 1 else [(False, False)]
        for inline, fragments in kinds:
            seg = MihSegment(codes, split(64 * words, 4 * words, inline=inline, dir_bits=10, fragments=fragments))
            seg.query(codes[:2], 8)
        linear_query(codes, 64, codes[:2], 8)
    return time.perf_counter() - start


__all__ = [
    "Hits", "Layout", "MihSegment", "candidate_layouts", "cost_ns", "extra_bytes", "from_widths", "linear_query",
    "plan_layout", "split", "warm_up", "numba",
]
