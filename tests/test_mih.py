"""The multi-index hashing kernels and the tiered index, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from photosentry.hashes import index as index_mod
from photosentry.hashes import mih
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.index import HammingIndex, SortedExactIndex, TieredIndex, codes_to_hex, hex_to_codes
from photosentry.hashes.mih import plan, segment, simd
from photosentry.hashes.snapshot import latest_snapshot, write_snapshot


def random_codes(rng: np.random.Generator, n: int, words: int) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, size=(n, words), dtype=np.uint64, endpoint=True)


def near(rng: np.random.Generator, code: np.ndarray, distance: int) -> np.ndarray:
    out = code.copy()
    for bit in rng.choice(code.size * 64, distance, replace=False):
        out[bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
    return out


def brute(codes: np.ndarray, queries: np.ndarray, r: int) -> set[tuple[int, int, int]]:
    out = set()
    for qi, q in enumerate(queries):
        d = np.bitwise_count(codes ^ q).sum(axis=1)
        out |= {(int(row), int(d[row]), qi) for row in np.flatnonzero(d <= r)}
    return out


def check_exact(seg: mih.MihSegment, codes: np.ndarray, queries: np.ndarray, radii: tuple[int, ...]) -> None:
    for r in radii:
        hits = seg.query(queries, r)
        got = set(zip(hits.rows.tolist(), hits.distances.tolist(), hits.queries.tolist(), strict=True))
        assert got == brute(codes, queries, r), (seg.layout.describe(), r)


def planted(rng: np.random.Generator, codes: np.ndarray, radius: int) -> np.ndarray:
    """Near-duplicates of rows 0.. at every distance 0..radius+1, then unrelated hashes."""
    words = codes.shape[1]
    out = [near(rng, codes[i], d) for i, d in enumerate(list(range(radius + 1)) + [radius + 1])]
    return np.vstack(out + [random_codes(rng, 3, words)])


@pytest.mark.parametrize(
    ("bits", "m", "dir_bits", "inline", "radius"),
    [
        (256, 11, 13, False, 31),  # the 10M PDQ shape: 24/23-bit substrings, 10-11 low bits packed
        (256, (24,) * 6 + (23,) * 4 + (20,), 13, False, 31),  # the 10M PDQ plan: a narrow last one at radius 1
        (256, 12, 0, False, 31),  # direct directories (row numbers only)
        (256, 16, 12, False, 31),
        (256, 11, 14, False, 20),
        (64, 3, 0, True, 10),  # the 10M pHash/dHash shape
        (64, 4, 0, True, 10),
        (64, (17, 17, 17, 13), 0, True, 10),  # the 10M pHash/dHash plan: uneven widths
        (64, (15, 13, 12, 12, 12), 0, True, 10),
        (64, 3, 15, False, 8),  # packed 64-bit
        # Long buckets (47 words, 12 codes): the vector scans take several 16-word and
        # 8-code steps per bucket, the last one partial.
        (256, 11, 6, False, 31),
        (64, 8, 0, True, 10),
        # Fragment tables: the 10M plan's shape, a long-bucket one, and equal widths.
        (64, (17, 17, 16, 14), 0, "fragments", 10),
        (64, 8, 0, "fragments", 10),
        (64, 4, 0, "fragments", 8),
    ],
)
@pytest.mark.parametrize("vector", [False, True], ids=["scalar-scan", "vector-scan"])
def test_segment_finds_exactly_what_brute_force_finds(
    bits: int, m: int | tuple[int, ...], dir_bits: int, inline: bool | str, radius: int, vector: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both scans run on any host: where the CPU lacks AVX-512, LLVM emulates the vector
    # intrinsics lane by lane (slow, still exact), so the vector path is checked in CI too.
    monkeypatch.setattr(simd, "VECTOR_SCAN", vector)
    rng = np.random.default_rng(bits + (m if isinstance(m, int) else sum(m) * len(m)) + dir_bits)
    words = bits // 64
    codes = random_codes(rng, 3000, words)
    queries = planted(rng, codes, radius)
    fragments = inline == "fragments"
    if isinstance(m, int):
        layout = mih.split(bits, m, inline=bool(inline), dir_bits=dir_bits, fragments=fragments)
    else:
        layout = mih.from_widths(bits, m, inline=bool(inline), dir_bits=dir_bits, fragments=fragments)
    assert layout.dir_widths == tuple(min(w, dir_bits or w) for _, w in layout.substrings)
    seg = mih.MihSegment(codes, layout)
    check_exact(seg, codes, queries, (radius, radius // 2, 0, radius + 8))
    hits = seg.query(queries, radius)
    assert (radius + 1, radius + 1, radius + 1) not in set(
        zip(hits.rows.tolist(), hits.distances.tolist(), hits.queries.tolist(), strict=True)
    )


def test_packed_layout_is_exact_for_flips_on_both_sides_of_every_substring_boundary() -> None:
    # A probe flips directory bits and leaves the rest of the radius to the packed low
    # bits: plant differences right at each substring's directory/low-bit cut and at
    # the edges between substrings, including substrings that straddle a 64-bit word.
    rng = np.random.default_rng(17)
    layout = mih.split(256, 11, inline=False, dir_bits=20)
    codes = random_codes(rng, 2000, 4)
    edges = sorted({s for s, _ in layout.substrings} | {s + w - 1 for s, w in layout.substrings}
                   | {s + d for (s, _), d in zip(layout.substrings, layout.dir_widths, strict=True)}
                   | {s + d - 1 for (s, _), d in zip(layout.substrings, layout.dir_widths, strict=True)})
    queries = []
    for i, edge in enumerate(edges):
        code = codes[i].copy()
        # the bits of one substring around the edge, then random bits elsewhere up to 31
        flips = {b for b in (edge - 1, edge, edge + 1) if 0 <= b < 256}
        while len(flips) < 31:
            flips.add(int(rng.integers(0, 256)))
        for bit in flips:
            code[bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
        queries.append(code)
    seg = mih.MihSegment(codes, layout)
    check_exact(seg, codes, np.vstack(queries), (31, 30))


def test_all_variants_of_a_photo_in_one_call_report_which_variant_hit() -> None:
    rng = np.random.default_rng(23)
    codes = random_codes(rng, 4000, 4)
    seg = mih.MihSegment(codes, mih.split(256, 11, inline=False, dir_bits=14))
    variants = random_codes(rng, 8, 4)
    variants[5] = near(rng, codes[1234], 31)
    variants[2] = near(rng, codes[77], 0)
    hits = seg.query(variants, 31)
    got = set(zip(hits.rows.tolist(), hits.distances.tolist(), hits.queries.tolist(), strict=True))
    assert got == {(1234, 31, 5), (77, 0, 2)}


def test_many_hits_grow_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # More hits than the first output buffer (256), and more fragment survivors than
    # the first survivor buffer: every one is still returned.
    monkeypatch.setattr(segment, "_SURVIVOR_ROOM", 8)
    rng = np.random.default_rng(29)
    base = random_codes(rng, 1, 1)[0]
    codes = np.vstack([near(rng, base, int(d)) for d in rng.integers(0, 5, 1500)] + [random_codes(rng, 500, 1)])
    for layout in (mih.split(64, 3, inline=True), mih.split(64, 3, inline=False, dir_bits=12),
                   mih.split(64, 3, inline=True, fragments=True)):
        seg = mih.MihSegment(codes, layout)
        check_exact(seg, codes, base[None, :], (6,))


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 33])
def test_vector_scans_take_exactly_the_lanes_of_a_bucket(size: int) -> None:
    # Words and codes right after the bucket would pass the filter: a lane past its end
    # must be neither counted nor kept, and the kept rows must land packed at the offset.
    # Each step writes 16 slots whole (junk past its kept rows), never more, never before.
    rng = np.random.default_rng(size)
    words = rng.integers(0, 2**32, size + 40, dtype=np.uint32)
    words[size + 3 :] = np.uint32(5 << 3 | 5)  # row 5, low bits equal to the query's
    out = np.full(size + 40, 7, dtype=np.uint32)
    queries = np.full(size + 40, 9, dtype=np.int32)
    got = _vector_scan(words, 3, size, 5, 7, 1, 3, out, queries, 2)
    want = [int(w) >> 3 for w in words[3 : 3 + size] if bin((int(w) ^ 5) & 7).count("1") <= 1]
    assert got == len(want)
    assert out[2 : 2 + got].tolist() == want
    assert (out[2 + got + 16 :] == 7).all() and (out[:2] == 7).all()
    assert (queries[2 : 2 + got] == 4).all()
    codes = rng.integers(0, 2**64 - 1, size + 20, dtype=np.uint64, endpoint=True)
    q = np.uint64(0x0123456789ABCDEF)
    codes[size + 3 :] = q
    codes[3 : 3 + size : 5] = q ^ np.uint64(0b101)  # within 2 bits, every fifth lane
    want_mask = sum(1 << i for i in range(size) if bin(int(codes[3 + i]) ^ int(q)).count("1") <= 2)
    assert _vector_near(codes, 3, size, q, 2) == want_mask


@njit
def _vector_scan(words, lo, n, ql, mask, rem, low, out, queries, at):  # type: ignore[no-untyped-def]
    # The packed kernel's loop: 16-word steps from the line before the bucket, queries
    # filled ahead of the rows.
    p, end, count = lo - lo % 16, lo + n, 0
    while p < end:
        simd._fill16(queries, at + count, 4)
        count += simd._scan_words16(words, p, lo - p, end - p, np.uint64(ql), np.uint64(mask), np.uint64(rem),
                                   np.uint64(low), out, at + count)
        p += 16
    return count


@njit
def _vector_near(codes, lo, n, q, max_dist):  # type: ignore[no-untyped-def]
    # The inline kernel's loop: a mask of the bucket's codes within max_dist, lane 0 = lo.
    p, end, mask = lo - lo % 8, lo + n, 0
    while p < end:
        step = simd._near8(codes, p, lo - p, end - p, q, np.uint64(max_dist))
        mask |= step << (p - lo) if p >= lo else step >> (lo - p)
        p += 8
    return mask


@pytest.mark.parametrize("vector", [False, True], ids=["scalar-scan", "vector-scan"])
def test_packed_directories_are_compact_unless_a_block_holds_256_rows(vector: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(simd, "VECTOR_SCAN", vector)
    rng = np.random.default_rng(31)
    layout = mih.split(256, 11, inline=False, dir_bits=12)
    codes = random_codes(rng, 3000, 4)
    seg = mih.MihSegment(codes, layout)
    slots = sum(1 << d for d in layout.dir_widths)
    assert seg._compact and seg._offsets.size == 0
    assert seg._words.ctypes.data % 64 == 0  # the vector scans step line by line
    assert seg._dir_ends.nbytes + seg._dir_base.nbytes == slots + 4 * slots // 16  # 1.25 bytes a slot
    assert seg.nbytes == seg._dir_ends.nbytes + seg._dir_base.nbytes + seg._words.nbytes
    check_exact(seg, codes, planted(rng, codes, 31), (31, 12))
    # 400 near-duplicates share the first substring: one block of table 0 overflows a
    # byte, so the segment keeps the plain 32-bit offsets, and finds the same rows.
    crowd = np.vstack([near(rng, codes[0], int(d)) for d in rng.integers(0, 12, 400)] + [codes])
    crowd[:400, 0] = (crowd[:400, 0] & np.uint64(0x000000FFFFFFFFFF)) | (codes[0, 0] & np.uint64(0xFFFFFF0000000000))
    seg = mih.MihSegment(crowd, layout)
    assert not seg._compact and seg._offsets.size == slots + layout.m
    check_exact(seg, crowd, np.vstack([codes[0], planted(rng, crowd[400:], 31)]), (31, 12))


def test_segment_refuses_rows_that_do_not_fit_a_packed_word() -> None:
    layout = mih.split(256, 8, inline=False, dir_bits=8)  # 32-bit substrings: 24 low bits
    assert not plan._fits_words(layout, 1 << 9)
    with pytest.raises(ValueError):
        mih.MihSegment(np.zeros((1 << 9, 4), dtype=np.uint64), layout)
    with pytest.raises(ValueError):
        mih.MihSegment(np.zeros((10, 4), dtype=np.uint64), mih.split(256, 11, inline=True))
    with pytest.raises(ValueError):  # fragments are 32 bits beside an inline table's substring
        mih.split(64, 4, inline=False, dir_bits=12, fragments=True)
    with pytest.raises(ValueError):
        mih.from_widths(64, (40, 24), inline=True, fragments=True)


def test_layout_pigeonhole_radii_cover_the_radius() -> None:
    for bits in (64, 256):
        for m in range(1, 17):
            layout = mih.split(bits, m, inline=False)
            for r in range(0, 40):
                radii = layout.radii(r)
                # sum of (k + 1) over substrings must exceed r (general pigeonhole)
                assert int((radii + 1).sum()) >= r + 1


@pytest.mark.parametrize("vector", [False, True], ids=["scalar-scan", "vector-scan"])
def test_plan_layout_picks_linear_for_small_banks_and_fits_the_memory_budget(
    vector: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simd, "VECTOR_SCAN", vector)  # each kernel family has its own cost model
    assert mih.plan_layout(256, 31, 500) is None
    for n in (10**6, 10**7):
        for bits, r in ((256, 31), (64, 10), (64, 8)):
            layout = mih.plan_layout(bits, r, n)
            assert layout is not None and mih.fits_budget(layout, n) and plan._fits_words(layout, n)
            if n == 10**7:  # at industry scale the directories are amortised too
                assert mih.extra_bytes(layout, n) <= mih.MAX_EXTRA_BYTES_PER_ENTRY
    # The shapes at 10M: 11 wide packed substrings for PDQ, the last one (radius
    # 1) narrower, with directories of 21 bits for the vector scans (23 for the scalar
    # ones, whose buckets cost more per word); for 64-bit, four tables at radii 2/2/2/1
    # with small directories that stay in cache: 32-bit fragments of 17/17/16/14 bits
    # for the vector scans (half the lines to stream), code copies of 17/17/17/13 for
    # the scalar ones (compute-bound, so fragments and their survivors gain nothing).
    pdq = mih.plan_layout(256, 31, 10**7)
    assert pdq is not None and not pdq.inline and pdq.m == 11
    assert [w for _, w in pdq.substrings] == [24] * 6 + [23] * 4 + [20]
    assert pdq.radii(31).tolist() == [2] * 10 + [1]
    assert max(pdq.dir_widths) == (21 if vector else 23)
    ph = mih.plan_layout(64, 10, 10**7)
    if vector:
        assert ph == mih.from_widths(64, (17, 17, 16, 14), inline=True, fragments=True)
    else:
        assert ph == mih.from_widths(64, (17, 17, 17, 13), inline=True)
    assert ph.radii(10).tolist() == [2, 2, 2, 1]


def test_uneven_widths_and_their_pigeonhole_radii() -> None:
    layout = mih.from_widths(64, (13, 17, 17, 17), inline=True)  # sorted widest first
    assert layout.substrings == ((0, 17), (17, 17), (34, 17), (51, 13))
    with pytest.raises(ValueError):
        mih.from_widths(64, (17, 17, 17), inline=True)
    # every width tuple the planner enumerates covers the bits, widest first, in range
    assert not list(plan._width_tuples(64, 2, 8, 24))  # two tables would need 32-bit directories
    for m in (3, 4, 5):
        tuples = list(plan._width_tuples(64, m, 8, 24))
        assert tuples and len(set(tuples)) == len(tuples)
        for ws in tuples:
            assert sum(ws) == 64 and list(ws) == sorted(ws, reverse=True) and 8 <= min(ws) and max(ws) <= 24


@pytest.mark.parametrize("force_mih", [False, True])
def test_tiered_index_matches_the_linear_index_through_adds_removes_and_folds(
    monkeypatch: pytest.MonkeyPatch, force_mih: bool
) -> None:
    monkeypatch.setattr(index_mod, "BUFFER_ROWS", 64)
    if force_mih:  # every segment, delta included, gets a packed multi-index
        monkeypatch.setattr(plan, "_LINEAR_NS_PER_WORD", 1e9)
    rng = np.random.default_rng(7)
    tiered, linear = TieredIndex(256, 31), HammingIndex(256)
    base = random_codes(rng, 2000, 4)
    values = codes_to_hex(base)
    tiered.load(np.arange(1, 2001), base)
    for i, v in enumerate(values, start=1):
        linear.add(i, v)
    next_id = 2001
    for step in range(400):
        if step % 3 == 0:
            victim = int(rng.integers(1, next_id))
            tiered.remove(victim)
            linear.remove(victim)
        else:
            v = codes_to_hex(near(rng, base[int(rng.integers(0, 2000))], int(rng.integers(0, 40)))[None, :])[0]
            tiered.add(next_id, v)
            linear.add(next_id, v)
            next_id += 1
    assert len(tiered) == len(linear)
    if force_mih:
        assert tiered._base is not None and tiered._base.mih is not None and not tiered._base.mih.layout.inline
        assert tiered._delta is None or tiered._delta.mih is not None
    queries = [codes_to_hex(near(rng, base[i], 10)[None, :])[0] for i in range(0, 2000, 50)]
    want = {(h.entry_id, h.distance, h.query) for h in linear.query(queries, 31)}
    got = {(h.entry_id, h.distance, h.query) for h in tiered.query(queries, 31)}
    assert got == want and want


def test_tiered_index_replayed_add_is_idempotent() -> None:
    rng = np.random.default_rng(3)
    codes = random_codes(rng, 10, 1)
    index = TieredIndex(64, 8)
    index.load(np.arange(10), codes)
    index.add(3, codes_to_hex(codes[3:4])[0])
    assert len(index) == 10
    assert [h.entry_id for h in index.query(codes_to_hex(codes[3:4]), 0)] == [3]
    index.remove(3)
    index.remove(3)
    assert len(index) == 9 and index.query(codes_to_hex(codes[3:4]), 0) == []


def test_sorted_exact_index() -> None:
    rng = np.random.default_rng(5)
    codes = random_codes(rng, 100, 2)
    index = SortedExactIndex(128)
    index.load(np.arange(100, 200), codes)
    values = codes_to_hex(codes)
    assert [h.entry_id for h in index.query([values[7]])] == [107]
    index.remove(107)
    index.add(500, values[7])
    assert [h.entry_id for h in index.query([values[7], "00" * 16])] == [500]
    assert len(index) == 100


def test_hex_codes_round_trip() -> None:
    values = ["0123456789abcdef" * 4, "fedcba9876543210" * 4]
    assert codes_to_hex(hex_to_codes(values, 4)) == values


def test_snapshot_round_trips_and_ignores_newer_ones(tmp_path, store: SqliteBankStore) -> None:  # type: ignore[no-untyped-def]
    from photosentry.hashes.banks import NewEntry
    from photosentry.hashes.codecs import Algorithm

    store.add([NewEntry(Algorithm.PDQ, "ab" * 32, "csam"), NewEntry(Algorithm.MD5, "cd" * 16, "banned")],
              actor="a", reason="r")
    snap = write_snapshot(store, tmp_path / "snaps")
    assert snap.version == store.version() and snap.counts["pdq"] == 1
    ids, codes, banks = latest_snapshot(tmp_path / "snaps", max_version=store.version(), store_id=store.store_id()).columns(Algorithm.PDQ)
    assert codes_to_hex(codes) == ["ab" * 32] and snap.banks[int(banks[0])] == "csam"
    assert latest_snapshot(tmp_path / "snaps", max_version=snap.version - 1, store_id=store.store_id()) is None


def test_matcher_from_snapshot_replays_later_changes(tmp_path, store: SqliteBankStore) -> None:  # type: ignore[no-untyped-def]
    from photosentry.hashes.banks import NewEntry
    from photosentry.hashes.codecs import Algorithm
    from photosentry.hashes.matcher import BankMatcher
    from photosentry.hashes.signals import FrameHashes, ImageHashes, PerceptualHash

    rng = np.random.default_rng(11)
    values = codes_to_hex(random_codes(rng, 50, 4))
    added = store.add([NewEntry(Algorithm.PDQ, v, "csam", label=f"l{i}") for i, v in enumerate(values)],
                      actor="a", reason="r")
    write_snapshot(store, tmp_path / "snaps")
    store.remove([added[0].id], actor="a", reason="wrong")
    late = store.add([NewEntry(Algorithm.PDQ, codes_to_hex(random_codes(rng, 1, 4))[0], "moderation")],
                     actor="a", reason="r")[0]
    matcher = BankMatcher(store, snapshot_dir=tmp_path / "snaps")
    assert matcher.loaded_from.startswith("snapshot") and matcher.version == store.version()
    assert matcher.size == 50

    def photo(value: str) -> ImageHashes:
        return ImageHashes("0" * 64, "0" * 32, (FrameHashes(0, (PerceptualHash(Algorithm.PDQ, value, (value,), 100),)),))

    assert matcher.match(photo(values[0])) == []
    hit = matcher.match(photo(values[1]))
    assert [(m.entry_id, m.bank, m.label) for m in hit] == [(added[1].id, "csam", "l1")]
    assert [m.bank for m in matcher.match(photo(late.value))] == ["moderation"]
