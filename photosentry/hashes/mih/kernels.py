"""The compiled kernels: building a segment's tables (counting sorts) and querying them.

Each query kernel runs in phases (enumerate every probe, read every bucket's bounds,
scan every bucket, verify every candidate) so the random reads of a phase overlap.
``cache=False`` everywhere: nothing is written into site-packages, so read-only
installs work (``segment.warm_up`` compiles them up front).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .plan import _DIR_BLOCK, FRAGMENT_BITS
from .simd import _fill16, _near8, _near16, _prefetch, _scan_words16


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
    ``compact``: the directories are ``dir_base``/``dir_ends`` (see segment._compact_directories),
    else ``offsets``; ``bases``: where each table's slots start in them. ``vector``: scan
    buckets 16 words at a time (see simd.VECTOR_SCAN)."""
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
    the first pass takes 8 codes at a time (see simd.VECTOR_SCAN)."""
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
