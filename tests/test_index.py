"""The in-memory hash indexes, checked against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from photosentry.hashes.codecs import hamming
from photosentry.hashes.index import ExactIndex, HammingIndex, IndexHit


def random_hashes(rng: np.random.Generator, n: int, bits: int) -> list[str]:
    return [rng.integers(0, 256, bits // 8, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def flip_bits(rng: np.random.Generator, value: str, count: int) -> str:
    number = int(value, 16)
    bits = len(value) * 4
    for position in rng.choice(bits, size=count, replace=False):
        number ^= 1 << int(position)
    return f"{number:0{len(value)}x}"


def brute_force(entries: dict[int, str], queries: list[str], max_distance: int) -> set[tuple[int, int, int]]:
    return {
        (entry_id, hamming(value, q), qi)
        for qi, q in enumerate(queries)
        for entry_id, value in entries.items()
        if hamming(value, q) <= max_distance
    }


def as_set(hits: list[IndexHit]) -> set[tuple[int, int, int]]:
    as_tuples = [(h.entry_id, h.distance, h.query) for h in hits]
    assert len(as_tuples) == len(set(as_tuples)), "duplicate hits"
    return set(as_tuples)


@pytest.mark.parametrize("bits", [64, 256])
def test_hamming_index_matches_brute_force(bits: int) -> None:
    rng = np.random.default_rng(bits)
    index = HammingIndex(bits)
    entries: dict[int, str] = {}
    # Enough entries to make the row arrays grow several times; ids are sparse.
    for entry_id, value in zip(range(5, 5 + 3 * 300, 3), random_hashes(rng, 300, bits), strict=True):
        index.add(entry_id, value)
        entries[entry_id] = value
    assert len(index) == len(entries)

    def queries() -> list[str]:
        # Near copies of live entries at several distances, plus unrelated hashes.
        picked = rng.choice(sorted(entries), size=12, replace=False)
        near = [flip_bits(rng, entries[int(i)], int(d)) for i, d in zip(picked, rng.integers(0, bits // 4, 12))]
        return near + random_hashes(rng, 4, bits)

    def check() -> None:
        qs = queries()
        for max_distance in (0, 3, bits // 8, bits // 4, bits // 2 - 8):
            expected = brute_force(entries, qs, max_distance)
            assert as_set(index.query(qs, max_distance)) == expected, max_distance
        assert len(index) == len(entries)

    check()
    # Remove a third (including the first and last rows), then check again.
    ids = sorted(entries)
    for entry_id in [ids[0], ids[-1], *ids[1:-1:3]]:
        index.remove(entry_id)
        del entries[entry_id]
    check()
    # Replace some values in place and add new ids after the removals.
    for entry_id in sorted(entries)[::7]:
        entries[entry_id] = random_hashes(rng, 1, bits)[0]
        index.add(entry_id, entries[entry_id])
    for entry_id, value in zip(range(10_000, 10_050), random_hashes(rng, 50, bits), strict=True):
        index.add(entry_id, value)
        entries[entry_id] = value
    check()
    # Removing what is absent is a no-op.
    index.remove(123_456)
    check()
    # Empty it completely.
    for entry_id in list(entries):
        index.remove(entry_id)
        del entries[entry_id]
    assert len(index) == 0
    assert index.query(random_hashes(rng, 3, bits), bits) == []


def test_hamming_index_reports_the_query_variant() -> None:
    rng = np.random.default_rng(7)
    target, other = random_hashes(rng, 2, 256)
    index = HammingIndex(256)
    index.add(42, target)
    near = flip_bits(rng, target, 5)
    hits = index.query([other, near], 31)
    assert hits == [IndexHit(42, 5, 1)]
    assert index.query([], 31) == []


def test_hamming_index_rejects_wrong_width() -> None:
    with pytest.raises(ValueError):
        HammingIndex(100)
    index = HammingIndex(64)
    with pytest.raises(ValueError):
        index.add(1, "ab" * 32)  # 256 bits into a 64-bit index
    assert len(index) == 0


def test_exact_index() -> None:
    index = ExactIndex()
    index.add(1, "aa")
    index.add(3, "aa")
    index.add(2, "bb")
    assert len(index) == 3
    assert index.query(["aa"]) == [IndexHit(1, 0, 0), IndexHit(3, 0, 0)]
    assert index.query(["cc", "bb"]) == [IndexHit(2, 0, 1)]
    # Re-adding an id replaces its value.
    index.add(1, "bb")
    assert len(index) == 3
    assert index.query(["aa"]) == [IndexHit(3, 0, 0)]
    assert index.query(["bb"]) == [IndexHit(1, 0, 0), IndexHit(2, 0, 0)]
    index.remove(3)
    index.remove(3)
    assert index.query(["aa"]) == []
    assert len(index) == 2
