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
  segment._compact_directories): 29 MB instead of 92 at 10M, which the caches keep more of.
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
load, vector popcount, compress; see simd.VECTOR_SCAN), elsewhere scalar loops; each
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

The parts: ``plan`` (layouts, their cost model, plan_layout), ``simd`` (the host's
vector features and the LLVM intrinsics the scans use), ``kernels`` (the numba
build and query kernels) and ``segment`` (MihSegment, linear_query, warm_up).
"""

from __future__ import annotations

# plan first: it imports simd, whose guard explains a broken numba before kernels needs it.
from .plan import (
    FRAGMENT_BITS,
    MAX_EXTRA_BYTES_PER_ENTRY,
    MAX_SUBSTRING_RADIUS,
    OFFSETS_ALLOWANCE,
    Layout,
    candidate_layouts,
    cost_ns,
    extra_bytes,
    fits_budget,
    from_widths,
    plan_layout,
    split,
)
from .segment import Hits, MihSegment, linear_query, warm_up

__all__ = [
    "FRAGMENT_BITS", "MAX_EXTRA_BYTES_PER_ENTRY", "MAX_SUBSTRING_RADIUS", "OFFSETS_ALLOWANCE", "Hits", "Layout",
    "MihSegment", "candidate_layouts", "cost_ns", "extra_bytes", "fits_budget", "from_widths", "linear_query",
    "plan_layout", "split", "warm_up",
]
