"""In-memory indexes that answer "which entries are within distance d of this hash?".

One index per algorithm, behind one small interface. Entries carry only an integer
id; the matcher maps ids back to bank metadata.

- :class:`TieredIndex` (perceptual hashes, any bank size): an immutable
  multi-index-hashing segment (:mod:`photosentry.hashes.mih`) for the bulk, a delta
  segment, a small linear buffer for fresh adds, and tombstones for removals. Adds
  and removes never rebuild the bulk; the buffer folds into the delta segment every
  ``BUFFER_ROWS`` adds, and the delta into the bulk when it reaches a quarter of it
  (amortised O(1) per add). A bank small enough for a linear scan to win gets no
  segment at all (``mih.plan_layout``).
- :class:`SortedExactIndex` (SHA-256, MD5): sorted first words + binary search for the
  bulk, a dict for fresh adds.
- :class:`HammingIndex` and :class:`ExactIndex`: the simple versions, kept as the
  reference the fast ones are tested against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import mih
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

    def load(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add many entries at once: ``ids`` and their codes (N x words uint64).
        Indexes built for millions of entries override this with a bulk build."""
        for entry_id, value in zip(ids.tolist(), codes_to_hex(codes), strict=True):
            self.add(int(entry_id), value)


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


def hex_to_codes(values: Sequence[str], words: int) -> np.ndarray:
    """Hex hashes to an N x words uint64 array (big-endian words, the kernels' layout)."""
    raw = bytes.fromhex("".join(values))
    if len(raw) != len(values) * words * 8:
        raise ValueError(f"every hash must have {words * 64} bits")
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(values), words)


def codes_to_hex(codes: np.ndarray) -> list[str]:
    words = codes.shape[1]
    raw = codes.astype(">u8").tobytes().hex()
    step = words * 16
    return [raw[i : i + step] for i in range(0, len(raw), step)]


#: Fresh adds are scanned linearly until this many, then folded into the delta segment.
BUFFER_ROWS = 4096


class _Segment:
    """Codes + entry ids, searched by MIH when big enough, else linearly."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, bits: int, radius: int) -> None:
        order = np.argsort(ids, kind="stable")
        self.ids = np.ascontiguousarray(ids[order]).astype(_id_dtype(ids))
        self.codes = np.ascontiguousarray(codes[order])
        layout = mih.plan_layout(bits, radius, len(self.ids))
        self.mih = mih.MihSegment(self.codes, layout) if layout is not None else None

    @classmethod
    def prebuilt(cls, ids: np.ndarray, codes: np.ndarray, segment: mih.MihSegment | None) -> "_Segment":
        """A segment over arrays built elsewhere (a shared index file): ``ids`` ascending,
        ``codes`` in the same order, ``segment`` built over ``codes`` (None: linear)."""
        if ids.ndim != 1 or codes.ndim != 2 or len(ids) != len(codes):
            raise ValueError(f"{ids.shape} ids do not fit {codes.shape} codes")
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            raise ValueError("segment ids must be unique and ascending")
        if segment is not None and segment.codes.shape != codes.shape:
            raise ValueError("the multi-index segment is over other codes")
        self = cls.__new__(cls)
        self.ids, self.codes, self.mih = ids, codes, segment
        return self

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + (self.mih.nbytes if self.mih is not None else 0))

    def contains(self, entry_id: int) -> int:
        """Row of ``entry_id``, or -1."""
        i = int(np.searchsorted(self.ids, entry_id))
        return i if i < len(self.ids) and int(self.ids[i]) == entry_id else -1

    def query(self, queries: np.ndarray, max_distance: int) -> mih.Hits:
        if self.mih is not None:
            return self.mih.query(queries, max_distance)
        return mih.linear_query(self.codes, len(self.ids), queries, max_distance)


def _id_dtype(ids: np.ndarray) -> type:
    return np.uint32 if (len(ids) == 0 or (int(ids.min()) >= 0 and int(ids.max()) < 2**32)) else np.int64


class TieredIndex(HashIndex):
    """Hamming range search that stays fast from 1 to tens of millions of entries.

    Args:
        bits: hash width (a multiple of 64).
        radius: the largest distance queries will use; segments are laid out for it
            (a larger query distance still works, with more probes).
    """

    def __init__(self, bits: int, radius: int) -> None:
        if bits % 64:
            raise ValueError(f"bits must be a multiple of 64, got {bits}")
        self.bits, self.radius, self._words = bits, radius, bits // 64
        self._base: _Segment | None = None
        self._delta: _Segment | None = None
        self._dead: set[int] = set()  # removed ids still present in a segment
        self._buf_codes = np.zeros((BUFFER_ROWS, self._words), dtype=np.uint64)
        self._buf_ids: list[int] = []
        self._buf_row: dict[int, int] = {}
        self._size = 0

    # -- bulk ---------------------------------------------------------------------

    @classmethod
    def shared(cls, bits: int, radius: int, ids: np.ndarray, codes: np.ndarray,
               segment: mih.MihSegment | None) -> "TieredIndex":
        """An index whose bulk is arrays built elsewhere and shared (mapped from a shared
        index file): never written to. Adds and removes go to this process's delta and
        tombstones as usual, until a newer file replaces the whole index."""
        index = cls(bits, radius)
        if len(ids):
            index._base = _Segment.prebuilt(ids, codes, segment)
        index._size = len(ids)
        return index

    def frozen_columns(self):  # type: ignore[no-untyped-def]
        """A function giving the live (ids, codes) of the index as it is now, even when
        called later from another thread while this index goes on changing: segments
        are immutable and replaced, not changed, so only the tombstones and the buffer
        are copied here (small). For building a newer shared index file in the background."""
        base, delta, dead = self._base, self._delta, frozenset(self._dead)
        buf_ids = np.asarray(self._buf_ids, dtype=np.int64)
        buf_codes = self._buf_codes[: len(buf_ids)].copy()

        def columns() -> tuple[np.ndarray, np.ndarray]:
            ids, codes = [buf_ids], [buf_codes]
            for segment in (base, delta):
                if segment is not None:
                    seg_ids = segment.ids.astype(np.int64)
                    keep = ~np.isin(seg_ids, np.fromiter(dead, dtype=np.int64, count=len(dead))) if dead else None
                    ids.append(seg_ids if keep is None else seg_ids[keep])
                    codes.append(segment.codes if keep is None else segment.codes[keep])
            return np.concatenate(ids), np.concatenate(codes)

        return columns

    def load(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Replace everything with ``ids`` / ``codes`` (N x words uint64): the fast path
        from a snapshot. Ids must be unique."""
        ids = np.asarray(ids, dtype=np.int64)
        if codes.shape != (len(ids), self._words):
            raise ValueError(f"codes must be {len(ids)} x {self._words}, got {codes.shape}")
        self._base = _Segment(ids, codes.astype(np.uint64, copy=False), self.bits, self.radius) if len(ids) else None
        self._delta = None
        self._dead.clear()
        self._buf_ids, self._buf_row = [], {}
        self._size = len(ids)

    # -- HashIndex ------------------------------------------------------------------

    def add(self, entry_id: int, value: str) -> None:
        code = hex_to_words(value)
        if code.shape != (self._words,):
            raise ValueError(f"hash {value!r} has {code.size * 64} bits, index holds {self.bits}")
        where = self._find(entry_id)
        if where is not None:
            segment, row = where
            if np.array_equal(segment.codes[row], code):
                return  # a replayed add: already here
            self.remove(entry_id)
        row = self._buf_row.get(entry_id)
        if row is not None:
            self._buf_codes[row] = code
            return
        self._buf_row[entry_id] = len(self._buf_ids)
        self._buf_codes[len(self._buf_ids)] = code
        self._buf_ids.append(entry_id)
        self._size += 1
        if len(self._buf_ids) == BUFFER_ROWS:
            self._fold()

    def remove(self, entry_id: int) -> None:
        row = self._buf_row.pop(entry_id, None)
        if row is not None:
            last = len(self._buf_ids) - 1
            moved = self._buf_ids[last]
            if row != last:
                self._buf_codes[row] = self._buf_codes[last]
                self._buf_ids[row] = moved
                self._buf_row[moved] = row
            self._buf_ids.pop()
            self._size -= 1
            return
        if self._find(entry_id) is not None:
            self._dead.add(entry_id)
            self._size -= 1

    def query(self, values: Sequence[str], max_distance: int) -> list[IndexHit]:
        if not values or not self._size:
            return []
        queries = hex_to_codes(values, self._words)
        hits: list[IndexHit] = []
        for segment in (self._base, self._delta):
            if segment is None:
                continue
            found = segment.query(queries, max_distance)
            for row, dist, q in zip(found.rows.tolist(), found.distances.tolist(), found.queries.tolist(), strict=True):
                entry_id = int(segment.ids[row])
                if entry_id not in self._dead:
                    hits.append(IndexHit(entry_id, dist, q))
        n = len(self._buf_ids)
        if n:
            found = mih.linear_query(self._buf_codes, n, queries, max_distance)
            for row, dist, q in zip(found.rows.tolist(), found.distances.tolist(), found.queries.tolist(), strict=True):
                hits.append(IndexHit(self._buf_ids[row], dist, q))
        # A near-duplicate reached through several substrings is reported once.
        return sorted(set(hits), key=lambda h: (h.query, h.distance, h.entry_id))

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Memory beyond one copy of the codes (ids, tables, offsets, buffer)."""
        total = self._buf_codes.nbytes
        for segment in (self._base, self._delta):
            if segment is not None:
                total += segment.nbytes
        return total

    # -- internals ------------------------------------------------------------------

    def _find(self, entry_id: int) -> tuple[_Segment, int] | None:
        if entry_id in self._dead:
            return None
        for segment in (self._delta, self._base):
            if segment is not None:
                row = segment.contains(entry_id)
                if row >= 0:
                    return segment, row
        return None

    def _live(self, segment: _Segment | None) -> tuple[np.ndarray, np.ndarray]:
        if segment is None:
            return np.empty(0, dtype=np.int64), np.empty((0, self._words), dtype=np.uint64)
        ids = segment.ids.astype(np.int64)
        if not self._dead:
            return ids, segment.codes
        keep = ~np.isin(ids, np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))
        return ids[keep], segment.codes[keep]

    def _fold(self) -> None:
        """Fold the buffer into the delta segment, and the delta into the base when it has
        grown. A shared base is folded into too, as the last resort that keeps adds cheap
        (a private copy: this process stops sharing); a newer shared file normally
        replaces the index long before (hostindex: compaction)."""
        ids, codes = self._live(self._delta)
        ids = np.concatenate([ids, np.asarray(self._buf_ids, dtype=np.int64)])
        codes = np.concatenate([codes, self._buf_codes[: len(self._buf_ids)]])
        base_n = len(self._base) if self._base is not None else 0
        if len(ids) * 4 >= base_n:
            base_ids, base_codes = self._live(self._base)
            ids, codes = np.concatenate([base_ids, ids]), np.concatenate([base_codes, codes])
            self._base, self._delta = _Segment(ids, codes, self.bits, self.radius), None
            self._dead.clear()
        else:
            self._dead -= set(self._delta.ids.tolist()) if self._delta is not None else set()
            self._delta = _Segment(ids, codes, self.bits, self.radius)
        self._buf_ids, self._buf_row = [], {}


class SortedExactIndex(HashIndex):
    """Exact lookup that holds millions of hashes in flat arrays (no Python object each)."""

    def __init__(self, bits: int) -> None:
        self._words = bits // 64
        self._keys = np.empty(0, dtype=np.uint64)
        self._codes = np.empty((0, self._words), dtype=np.uint64)
        self._ids = np.empty(0, dtype=np.int64)
        self._sorted_ids = np.empty(0, dtype=np.int64)
        self._dead: set[int] = set()
        self._fresh = ExactIndex()

    def load(self, ids: np.ndarray, codes: np.ndarray) -> None:
        order = np.lexsort(codes.T[::-1]) if len(ids) else np.empty(0, dtype=np.int64)
        self._codes = np.ascontiguousarray(codes[order])
        self._keys = np.ascontiguousarray(self._codes[:, 0]) if len(ids) else np.empty(0, dtype=np.uint64)
        self._ids = np.asarray(ids, dtype=np.int64)[order]
        self._sorted_ids = np.sort(self._ids)
        self._dead.clear()
        self._fresh = ExactIndex()

    def arrays(self) -> dict[str, np.ndarray]:
        """The bulk as arrays (after :meth:`load`), for :meth:`shared`."""
        return {"codes": self._codes, "keys": self._keys, "ids": self._ids, "sorted_ids": self._sorted_ids}

    @classmethod
    def shared(cls, bits: int, arrays: dict[str, np.ndarray]) -> "SortedExactIndex":
        """An index whose bulk is :meth:`arrays` built elsewhere (a shared index file)."""
        index = cls(bits)
        codes, keys, ids, sorted_ids = arrays["codes"], arrays["keys"], arrays["ids"], arrays["sorted_ids"]
        if (codes.ndim != 2 or codes.shape != (len(ids), index._words) or sorted_ids.shape != ids.shape
                or keys.shape != ids.shape):
            raise ValueError(f"exact index arrays do not fit: {codes.shape}, {keys.shape}, {ids.shape}, {sorted_ids.shape}")
        # keys apart from codes: searchsorted copies a strided column on every call.
        index._codes, index._keys, index._ids, index._sorted_ids = codes, keys, ids, sorted_ids
        return index

    def frozen_columns(self):  # type: ignore[no-untyped-def]
        """As :meth:`TieredIndex.frozen_columns`: the live (ids, codes) as they are now."""
        ids, codes, dead = self._ids, self._codes, frozenset(self._dead)
        fresh = dict(self._fresh._by_id)

        def columns() -> tuple[np.ndarray, np.ndarray]:
            keep = ~np.isin(ids, np.fromiter(dead, dtype=np.int64, count=len(dead))) if dead else slice(None)
            fresh_ids = np.fromiter(fresh, dtype=np.int64, count=len(fresh))
            fresh_codes = (hex_to_codes(list(fresh.values()), self._words) if fresh
                           else np.empty((0, self._words), dtype=np.uint64))
            return np.concatenate([ids[keep], fresh_ids]), np.concatenate([codes[keep], fresh_codes])

        return columns

    def _in_bulk(self, entry_id: int) -> bool:
        # Sorted ids kept apart: indexing ids by an order array copied all of them per call.
        i = int(np.searchsorted(self._sorted_ids, entry_id)) if len(self._ids) else 0
        return i < len(self._ids) and int(self._sorted_ids[i]) == entry_id and entry_id not in self._dead

    def add(self, entry_id: int, value: str) -> None:
        if self._in_bulk(entry_id):
            return  # entries never change value: a replayed add
        self._fresh.add(entry_id, value)

    def remove(self, entry_id: int) -> None:
        if self._in_bulk(entry_id):
            self._dead.add(entry_id)
        else:
            self._fresh.remove(entry_id)

    def query(self, values: Sequence[str], max_distance: int = 0) -> list[IndexHit]:
        hits = self._fresh.query(values, 0)
        if len(self._ids):
            for q, value in enumerate(values):
                code = hex_to_words(value)
                if code.shape != (self._words,):
                    continue
                lo, hi = np.searchsorted(self._keys, code[0], "left"), np.searchsorted(self._keys, code[0], "right")
                for row in range(int(lo), int(hi)):
                    entry_id = int(self._ids[row])
                    if np.array_equal(self._codes[row], code) and entry_id not in self._dead:
                        hits.append(IndexHit(entry_id, 0, q))
        return hits

    def __len__(self) -> int:
        return len(self._ids) - len(self._dead) + len(self._fresh)
