"""Match a photo's hashes against the active banks, kept in memory and refreshed.

The matcher loads every active entry once, then follows the bank's change log
(``refresh``) so a moderator's ban reaches a running process without a rebuild.
It returns facts (which entry, which bank, how far); deciding what a match means is
the policy's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from .banks import BankConfig, BankEntry, BankStore, ChangeOp
from .codecs import Algorithm
from .index import ExactIndex, HammingIndex, HashIndex
from .signals import ImageHashes, PdqSignal


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


@dataclass(frozen=True)
class _Meta:
    bank: str
    algorithm: Algorithm
    label: str


def _new_index(algorithm: Algorithm) -> HashIndex:
    return HammingIndex(algorithm.bits) if algorithm.is_perceptual else ExactIndex()


class BankMatcher:
    """An in-memory view of a :class:`BankStore`, at a known bank version."""

    def __init__(self, store: BankStore) -> None:
        self._store = store
        self._indexes: dict[Algorithm, HashIndex] = {a: _new_index(a) for a in Algorithm}
        self._meta: dict[int, _Meta] = {}
        self._banks: dict[str, BankConfig] = {}
        # Version first: anything added while we read is replayed by refresh() (adds
        # are idempotent by id), so nothing is missed.
        self.version = store.version()
        for entry in store.entries():
            self._add(entry)
        self._load_banks()

    @property
    def size(self) -> int:
        return len(self._meta)

    def refresh(self) -> int:
        """Apply changes made since our version; returns how many were applied."""
        changes = self._store.changes_since(self.version)
        banks_changed = False
        for change in changes:
            if change.op is ChangeOp.ADD and change.entry_id is not None:
                entry = self._store.get(change.entry_id)
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
        best: dict[int, Match] = {}
        for algorithm, value in hashes.exact().items():
            for hit in self._indexes[algorithm].query([value], 0):
                self._keep(best, hit.entry_id, 0, frame=0, variant=0, weak=False)
        for frame in hashes.frames:
            for ph in frame.hashes:
                index = self._indexes[ph.algorithm]
                if not len(index):
                    continue
                weak = ph.algorithm is Algorithm.PDQ and (ph.quality or 0) < PdqSignal.QUALITY_THRESHOLD
                for hit in index.query(ph.variants, self._max_distance(ph.algorithm)):
                    meta = self._meta[hit.entry_id]
                    if hit.distance <= self.bank(meta.bank).distance(ph.algorithm):
                        self._keep(best, hit.entry_id, hit.distance, frame=frame.frame, variant=hit.query, weak=weak)
        return sorted(best.values(), key=lambda m: (m.weak, m.distance / m.algorithm.bits, m.entry_id))

    # -- internals ----------------------------------------------------------------

    def _keep(self, best: dict[int, Match], entry_id: int, distance: int, *, frame: int, variant: int, weak: bool) -> None:
        current = best.get(entry_id)
        if current is not None and (current.weak, current.distance) <= (weak, distance):
            return
        meta = self._meta[entry_id]
        best[entry_id] = Match(entry_id, meta.bank, meta.algorithm, distance, meta.label, frame, variant, weak,
                               self.bank(meta.bank).is_allow)

    def _max_distance(self, algorithm: Algorithm) -> int:
        return max([self.bank(b).distance(algorithm) for b in self._banks] + [BankConfig("").distance(algorithm)])

    def _add(self, entry: BankEntry) -> None:
        self._indexes[entry.algorithm].add(entry.id, entry.value)
        self._meta[entry.id] = _Meta(entry.bank, entry.algorithm, entry.label)
        self._banks.setdefault(entry.bank, BankConfig(entry.bank))

    def _remove(self, entry_id: int) -> None:
        meta = self._meta.pop(entry_id, None)
        if meta is not None:
            self._indexes[meta.algorithm].remove(entry_id)

    def _load_banks(self) -> None:
        self._banks.update({b.name: b for b in self._store.banks()})
