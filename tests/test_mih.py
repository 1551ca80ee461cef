"""The multi-index hashing kernels and the tiered index, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from photosentry.hashes import index as index_mod
from photosentry.hashes import mih
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.index import HammingIndex, SortedExactIndex, TieredIndex, codes_to_hex, hex_to_codes
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


@pytest.mark.parametrize(("bits", "m", "radius"), [(256, 12, 31), (256, 16, 31), (64, 4, 10), (64, 3, 8), (256, 11, 20)])
def test_segment_finds_exactly_what_brute_force_finds(bits: int, m: int, radius: int) -> None:
    rng = np.random.default_rng(bits + m)
    words = bits // 64
    codes = random_codes(rng, 3000, words)
    # Plant near-duplicates at every distance up to the radius, and one just outside.
    planted = [near(rng, codes[i], d) for i, d in enumerate(list(range(radius + 1)) + [radius + 1])]
    queries = np.vstack(planted + [random_codes(rng, 3, words)])
    layout = mih.split(bits, m, inline=words == 1)
    seg = mih.MihSegment(codes, layout)
    for r in (radius, radius // 2, 0):
        hits = seg.query(queries, r)
        got = set(zip(hits.rows.tolist(), hits.distances.tolist(), hits.queries.tolist(), strict=True))
        assert got == brute(codes, queries, r)
    assert (radius + 1, radius + 1, radius + 1) not in got


def test_layout_pigeonhole_radii_cover_the_radius() -> None:
    for bits in (64, 256):
        for m in range(1, 17):
            layout = mih.split(bits, m, inline=False)
            for r in range(0, 40):
                radii = layout.radii(r)
                # sum of (k + 1) over substrings must exceed r (general pigeonhole)
                assert int((radii + 1).sum()) >= r + 1


def test_plan_layout_picks_linear_for_small_banks_and_fits_the_memory_budget() -> None:
    assert mih.plan_layout(256, 31, 500) is None
    for n in (10**6, 10**7):
        for bits, r in ((256, 31), (64, 10), (64, 8)):
            layout = mih.plan_layout(bits, r, n)
            assert layout is not None and mih.fits_budget(layout, n)
            if n == 10**7:  # at industry scale the offsets tables are amortised too
                assert mih.extra_bytes(layout, n) <= mih.MAX_EXTRA_BYTES_PER_ENTRY


def test_tiered_index_matches_the_linear_index_through_adds_removes_and_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "BUFFER_ROWS", 64)
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
    ids, codes, banks = latest_snapshot(tmp_path / "snaps", max_version=store.version()).columns(Algorithm.PDQ)
    assert codes_to_hex(codes) == ["ab" * 32] and snap.banks[int(banks[0])] == "csam"
    assert latest_snapshot(tmp_path / "snaps", max_version=snap.version - 1) is None


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
