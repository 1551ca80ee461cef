"""In-memory indexes that answer "which entries are within distance d of this hash?".

One index per algorithm, behind one small interface so the linear scan here can be
replaced by a faster structure (multi-index hashing, FAISS) without touching callers.
Entries carry only an integer id; the matcher maps ids back to bank metadata.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .codecs import hex_to_words


@dataclass(frozen=True)
class IndexHit:
    """An entry within range of a query: which query value (variant) hit, how far."""

    entry_id: int
    distance: int
    query: int


class HashIndex(ABC):
    """Range search over hashes of one algorithm."""

    @abstractmethod
    def add(self, entry_id: int, value: str) -> None:
        """Add an entry; adding an id that is already present replaces its value."""

    @abstractmethod
    def remove(self, entry_id: int) -> None:
        """Remove an entry; removing an absent id does nothing."""

    @abstractmethod
    def query(self, values: Sequence[str], max_distance: int) -> list[IndexHit]:
        """Every (entry, query value) pair within ``max_distance``."""

    @abstractmethod
    def __len__(self) -> int: ...


class ExactIndex(HashIndex):
    """Exact lookup, for cryptographic hashes."""

    def __init__(self) -> None:
        self._by_value: dict[str, set[int]] = {}
        self._by_id: dict[int, str] = {}

    def add(self, entry_id: int, value: str) -> None:
        self.remove(entry_id)
        self._by_value.setdefault(value, set()).add(entry_id)
        self._by_id[entry_id] = value

    def remove(self, entry_id: int) -> None:
        value = self._by_id.pop(entry_id, None)
        if value is not None:
            ids = self._by_value[value]
            ids.discard(entry_id)
            if not ids:
                del self._by_value[value]

    def query(self, values: Sequence[str], max_distance: int = 0) -> list[IndexHit]:
        return [
            IndexHit(entry_id, 0, q) for q, v in enumerate(values) for entry_id in sorted(self._by_value.get(v, ()))
        ]

    def __len__(self) -> int:
        return len(self._by_id)


class HammingIndex(HashIndex):
    """Vectorised linear scan: XOR against every row, popcount, threshold.

    Rows are kept dense (removal moves the last row into the hole), so adds and
    removes are O(1) and a scan touches only live entries.
    """

    def __init__(self, bits: int) -> None:
        if bits % 64:
            raise ValueError(f"bits must be a multiple of 64, got {bits}")
        self._words = bits // 64
        self._codes = np.zeros((16, self._words), dtype=np.uint64)
        self._ids = np.zeros(16, dtype=np.int64)
        self._row: dict[int, int] = {}

    def add(self, entry_id: int, value: str) -> None:
        code = hex_to_words(value)
        if code.shape != (self._words,):
            raise ValueError(f"hash {value!r} has {code.size * 64} bits, index holds {self._words * 64}")
        row = self._row.get(entry_id)
        if row is None:
            row = len(self._row)
            if row == len(self._ids):
                self._codes = np.resize(self._codes, (row * 2, self._words))
                self._ids = np.resize(self._ids, row * 2)
            self._row[entry_id] = row
            self._ids[row] = entry_id
        self._codes[row] = code

    def remove(self, entry_id: int) -> None:
        row = self._row.pop(entry_id, None)
        if row is None:
            return
        last = len(self._row)
        if row != last:
            moved = int(self._ids[last])
            self._codes[row] = self._codes[last]
            self._ids[row] = moved
            self._row[moved] = row

    def query(self, values: Sequence[str], max_distance: int) -> list[IndexHit]:
        size = len(self._row)
        if not size or not values:
            return []
        codes = self._codes[:size]
        hits: list[IndexHit] = []
        for q, value in enumerate(values):
            distances = np.bitwise_count(codes ^ hex_to_words(value)).sum(axis=1, dtype=np.int64)
            for row in np.flatnonzero(distances <= max_distance):
                hits.append(IndexHit(int(self._ids[row]), int(distances[row]), q))
        return hits

    def __len__(self) -> int:
        return len(self._row)
