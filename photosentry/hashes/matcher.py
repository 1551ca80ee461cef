"""Match a photo's hashes against the active banks, kept in memory and refreshed.

The matcher loads every active entry once (from a snapshot when there is one), then follows the bank's change log
(``refresh``) so a moderator's ban reaches a running process without a rebuild.
It returns facts (which entry, which bank, how far); deciding what a match means is
the policy's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..errors import BankNotFound
from .banks import BankConfig, BankEntry, BankStore, ChangeOp
from .codecs import Algorithm
from .index import HashIndex, SortedExactIndex, TieredIndex, hex_to_codes
from .signals import ImageHashes
from .snapshot import Snapshot, latest_snapshot, save_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    """One bank entry that a photo matched (the closest variant and frame)."""

    entry_id: int
    bank: str
    algorithm: Algorithm
    distance: int
    label: str = ""
    #: Frame of the photo that matched (0 for still images and exact hashes).
    frame: int = 0
    #: Which query variant matched: 0 is the photo as is, others are flips/rotations.
    variant: int = 0
    #: A PDQ match from a low-quality hash: it does not count on its own.
    weak: bool = False
    #: The entry is in an allow bank (a known false positive): the policy may let
    #: it suppress ban matches for this photo instead of counting it against it.
    allow: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "entry_id": self.entry_id,
            "bank": self.bank,
            "algorithm": self.algorithm.value,
            "distance": self.distance,
            "label": self.label,
            "frame": self.frame,
            "variant": self.variant,
            "weak": self.weak,
            "allow": self.allow,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Match":
        """The inverse of :meth:`to_dict` (a recorded verdict's match)."""
        return cls(
            entry_id=int(raw["entry_id"]),
            bank=str(raw["bank"]),
            algorithm=Algorithm(raw["algorithm"]),
            distance=int(raw["distance"]),
            label=str(raw.get("label", "")),
            frame=int(raw.get("frame", 0)),
            variant=int(raw.get("variant", 0)),
            weak=bool(raw.get("weak", False)),
            allow=bool(raw.get("allow", False)),
        )


def _new_index(algorithm: Algorithm, radius: int) -> HashIndex:
    if algorithm.is_perceptual:
        return TieredIndex(algorithm.bits, radius)
    return SortedExactIndex(algorithm.bits)


_ALGORITHMS = tuple(Algorithm)


class BankMatcher:
    """An in-memory view of a :class:`BankStore`, at a known bank version.

    Per entry it keeps only the hash (in the index) and two small numbers (its bank
    and algorithm, in arrays indexed by entry id): labels are read from the store
    for the few entries that match.

    Args:
        store: the bank store to follow.
        snapshot_dir: where columnar snapshots of this store live
            (:mod:`photosentry.hashes.snapshot`); the newest one not newer than the
            store is loaded and the change log replayed from it. Without one, every
            active entry is read from the store, and when that was at least
            ``auto_snapshot_min`` entries, saved as a snapshot there (best effort) so
            the next process on this host loads fast.
        auto_snapshot_min: see ``snapshot_dir``.
    """

    def __init__(
        self,
        store: BankStore,
        *,
        snapshot_dir: str | Path | None = None,
        auto_snapshot_min: int = defaults.AUTO_SNAPSHOT_MIN_ENTRIES,
    ) -> None:
        self._store = store
        self._refreshed_at = time.monotonic()
        self._banks: dict[str, BankConfig] = {}
        self._load_banks()
        # Each index is laid out for the widest distance a bank asks for, and never less
        # than the algorithm's default (_max_distance counts it); wider ones still work, more slowly.
        self._indexes: dict[Algorithm, HashIndex] = {a: _new_index(a, self._max_distance(a)) for a in Algorithm}
        self._bank_names: list[str] = []
        self._bank_numbers: dict[str, int] = {}
        self._bank_of = np.zeros(1024, dtype=np.uint16)
        self._algo_of = np.zeros(1024, dtype=np.uint8)  # 0: not indexed; else 1 + position in Algorithm
        self._labels: dict[int, str] = {}
        #: Where the in-memory view came from ("snapshot v<N>" or "store").
        self.loaded_from = "store"
        #: The snapshot this matcher wrote after reading a large bank from the store, if any.
        self.wrote_snapshot: Snapshot | None = None
        snap = None
        if snapshot_dir is not None:
            store_id = store.store_id()
            snap = latest_snapshot(snapshot_dir, max_version=store.version(), store_id=store_id)
        if snap is not None:
            try:
                columns = {a: snap.columns(a) for a in Algorithm}
            except (OSError, ValueError) as exc:
                # Pruned by a concurrent writer or damaged: the store is the truth.
                log.warning("bank snapshot %s unreadable (%s); reading the store", snap.path, exc)
                snap = None
        if snap is not None:
            self.loaded_from = f"snapshot v{snap.version}"
            self.version = snap.version
            numbers = np.array([self._bank_number(b) for b in snap.banks], dtype=np.uint16)
            for algorithm, (ids, codes, banks) in columns.items():
                self._bulk(algorithm, ids, codes, numbers[banks] if len(banks) else banks)
            del columns
        else:
            # Version first: anything added while we read is replayed by refresh()
            # (adds are idempotent by id), so nothing is missed.
            self.version = store.version()
            read: dict[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            for algorithm in Algorithm:
                id_parts, code_parts, bank_parts = [], [], []
                for ids, values, banks in store.active_columns(algorithm):
                    id_parts.append(np.asarray(ids, dtype=np.int64))
                    code_parts.append(hex_to_codes(values, algorithm.bits // 64))
                    bank_parts.append(np.array([self._bank_number(b) for b in banks], dtype=np.uint16))
                if id_parts:
                    read[algorithm] = (np.concatenate(id_parts), np.concatenate(code_parts), np.concatenate(bank_parts))
                    self._bulk(algorithm, *read[algorithm])
            if snapshot_dir is not None and sum(len(c[0]) for c in read.values()) >= auto_snapshot_min:
                self._save_snapshot(Path(snapshot_dir), store_id, read)
            del read
        self.refresh()

    @property
    def size(self) -> int:
        return sum(len(index) for index in self._indexes.values())

    def counts(self) -> dict[Algorithm, int]:
        return {a: len(index) for a, index in self._indexes.items()}

    def refresh(self, *, every_s: float = 0.0) -> int:
        """Apply changes made since our version; returns how many were applied.

        Args:
            every_s: do nothing if the last refresh was less than this long ago (a
                worker refreshes before every job; one small read per interval bounds
                how stale a ban can be).
        """
        now = time.monotonic()
        if every_s > 0 and now - self._refreshed_at < every_s:
            return 0
        self._refreshed_at = now
        changes = self._store.changes_since(self.version)
        if not changes:
            return 0
        added_ids = [c.entry_id for c in changes if c.op is ChangeOp.ADD and c.entry_id is not None]
        added = {e.id: e for e in self._store.get_many(added_ids)} if added_ids else {}
        banks_changed = False
        for change in changes:
            if change.op is ChangeOp.ADD and change.entry_id is not None:
                entry = added[change.entry_id]
                if entry.active:
                    self._add(entry)
            elif change.op is ChangeOp.REMOVE and change.entry_id is not None:
                self._remove(change.entry_id)
            else:
                banks_changed = True
            self.version = change.version
        if banks_changed:
            self._load_banks()
        return len(changes)

    def bank(self, name: str) -> BankConfig:
        return self._banks.get(name) or BankConfig(name)

    def match(self, hashes: ImageHashes) -> list[Match]:
        """Every active entry the photo matches, closest variant and frame per entry."""
        best: dict[int, tuple[bool, int, int, int, Algorithm]] = {}  # id -> (weak, distance, frame, variant, algo)

        def keep(entry_id: int, algorithm: Algorithm, distance: int, frame: int, variant: int, weak: bool) -> None:
            current = best.get(entry_id)
            if current is None or (weak, distance) < (current[0], current[1]):
                best[entry_id] = (weak, distance, frame, variant, algorithm)

        for algorithm, value in hashes.exact().items():
            for hit in self._indexes[algorithm].query([value], 0):
                keep(hit.entry_id, algorithm, 0, 0, 0, False)
        for frame in hashes.frames:
            for ph in frame.hashes:
                index = self._indexes[ph.algorithm]
                if not len(index):
                    continue
                weak = ph.weak
                for hit in index.query(ph.variants, self._max_distance(ph.algorithm)):
                    bank = self._bank_names[int(self._bank_of[hit.entry_id])]
                    if hit.distance <= self.bank(bank).distance(ph.algorithm):
                        keep(hit.entry_id, ph.algorithm, hit.distance, frame.frame, hit.query, weak)
        labels = self._labels_of(list(best))
        matches = []
        for entry_id, (weak, distance, frame, variant, algorithm) in best.items():
            bank = self._bank_names[int(self._bank_of[entry_id])]
            matches.append(Match(entry_id, bank, algorithm, distance, labels.get(entry_id, ""), frame, variant, weak,
                                 self.bank(bank).is_allow))
        return sorted(matches, key=lambda m: (m.weak, m.distance / m.algorithm.bits, m.entry_id))

    def index(self, algorithm: Algorithm) -> HashIndex:
        return self._indexes[algorithm]

    # -- internals ----------------------------------------------------------------

    def _save_snapshot(
        self, directory: Path, store_id: str, read: dict[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> None:
        # What we just read, at the version read before it: no second pass over the
        # store. Best effort: a full disk or a read-only data dir must not stop a scan.
        try:
            self.wrote_snapshot = save_snapshot(
                directory, store_id=store_id, version=self.version, banks=list(self._bank_names), columns=read
            )
            log.info("bank snapshot v%d written to %s", self.version, self.wrote_snapshot.path)
        except Exception as exc:  # logged, never raised
            log.warning("could not write a bank snapshot to %s: %s", directory, exc)

    def _labels_of(self, entry_ids: list[int]) -> dict[int, str]:
        # Labels are read only for matched entries (few), and cached: keeping 10
        # million of them in memory would cost more than the whole index.
        missing = [i for i in entry_ids if i not in self._labels]
        if missing:
            try:
                for entry in self._store.get_many(missing):
                    if len(self._labels) > 10_000:
                        self._labels.clear()
                    self._labels[entry.id] = entry.label
            except BankNotFound:
                pass
        return {i: self._labels.get(i, "") for i in entry_ids}

    def _max_distance(self, algorithm: Algorithm) -> int:
        return max([self.bank(b).distance(algorithm) for b in self._banks] + [BankConfig("").distance(algorithm)])

    def _bank_number(self, name: str) -> int:
        number = self._bank_numbers.get(name)
        if number is None:
            number = self._bank_numbers[name] = len(self._bank_names)
            self._bank_names.append(name)
            self._banks.setdefault(name, BankConfig(name))
        return number

    def _bulk(self, algorithm: Algorithm, ids: np.ndarray, codes: np.ndarray, banks: np.ndarray) -> None:
        if not len(ids):
            return
        self._grow_exact(int(ids.max()))
        self._bank_of[ids] = banks
        self._algo_of[ids] = _ALGORITHMS.index(algorithm) + 1
        index = self._indexes[algorithm]
        index.load(ids, codes)  # type: ignore[attr-defined]

    def _grow_exact(self, max_id: int) -> None:
        if max_id >= len(self._bank_of):
            size = max(max_id + 1, 2 * len(self._bank_of))
            bank_of = np.zeros(size, dtype=np.uint16)
            algo_of = np.zeros(size, dtype=np.uint8)
            bank_of[: len(self._bank_of)] = self._bank_of
            algo_of[: len(self._algo_of)] = self._algo_of
            self._bank_of, self._algo_of = bank_of, algo_of

    def _add(self, entry: BankEntry) -> None:
        self._grow_exact(entry.id)
        self._indexes[entry.algorithm].add(entry.id, entry.value)
        self._bank_of[entry.id] = self._bank_number(entry.bank)
        self._algo_of[entry.id] = _ALGORITHMS.index(entry.algorithm) + 1
        self._labels[entry.id] = entry.label

    def _remove(self, entry_id: int) -> None:
        if entry_id < len(self._algo_of) and self._algo_of[entry_id]:
            self._indexes[_ALGORITHMS[int(self._algo_of[entry_id]) - 1]].remove(entry_id)
            self._algo_of[entry_id] = 0

    def _load_banks(self) -> None:
        self._banks.update({b.name: b for b in self._store.banks()})
