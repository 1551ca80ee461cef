"""The bank store interface every backend implements, and operations written over it.

Validation that must hold for every backend sits in ``@t.final`` methods in front of
the abstract ones they call, so a backend cannot skip it.
"""

from __future__ import annotations

import typing as t
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence

from ..codecs import Algorithm
from ..signals import ImageHashes
from .model import (
    BankConfig,
    BankEntry,
    BankKind,
    Change,
    EntrySource,
    NewEntry,
    _check_actor,
    check_bank_name,
    _check_distances,
    entries_from_hashes,
)


class BankStore(ABC):
    """Where bank entries live. Backends: SQLite (embedded, ``sqlite.py``) and Redis
    (shared, ``redis.py``); :func:`~photosentry.hashes.banks.open_store` picks one."""

    @abstractmethod
    def add(self, entries: Sequence[NewEntry], *, actor: str, reason: str) -> list[BankEntry]:
        """Add entries; an active duplicate (same bank, algorithm, value) is returned, not re-added."""

    @abstractmethod
    def remove(self, entry_ids: Sequence[int], *, actor: str, reason: str) -> list[BankEntry]:
        """Soft-delete entries; removing an already removed entry changes nothing."""

    @abstractmethod
    def get(self, entry_id: int) -> BankEntry:
        """One entry, active or removed. Raises BankNotFound."""

    @abstractmethod
    def entries(
        self, *, bank: str | None = None, include_removed: bool = False, group: str | None = None
    ) -> Iterator[BankEntry]:
        """Entries in id order, optionally of one bank or one group."""

    @abstractmethod
    def version(self) -> int:
        """The current bank version (0 for an empty store)."""

    @abstractmethod
    def changes_since(self, version: int) -> list[Change]:
        """Changes with a version above ``version``, oldest first."""

    @abstractmethod
    def banks(self) -> list[BankConfig]:
        """Every bank that has been configured or written to."""

    @abstractmethod
    def store_id(self) -> str:
        """A random id given to this store when it was created, the same for every process
        that opens it (32 hex digits). Versions only order changes *within* one store: a
        snapshot of another store (another Redis, another prefix, a recreated file) must
        never be taken for this one's, and the id is what tells them apart."""

    @t.final
    def configure_bank(
        self,
        name: str,
        *,
        distances: dict[Algorithm, int],
        description: str,
        actor: str,
        reason: str,
        kind: BankKind | None = None,
    ) -> BankConfig:
        """Create or update a bank's match distances and kind (validated here for every backend).

        ``kind=None`` keeps the bank's current kind (``ban`` for a new bank), so a caller
        that only tunes distances can never turn an allow bank into a ban bank.
        """
        check_bank_name(name)
        _check_actor(actor, reason)
        _check_distances(distances)
        if kind is None:
            kind = self.bank(name).kind
        self._configure_bank(
            name, distances=distances, description=description, actor=actor, reason=reason, kind=BankKind(kind)
        )
        return self.bank(name)

    @abstractmethod
    def _configure_bank(
        self,
        name: str,
        *,
        distances: dict[Algorithm, int],
        description: str,
        actor: str,
        reason: str,
        kind: BankKind,
    ) -> None:
        """Store an already validated bank configuration and log the change."""

    def close(self) -> None:
        """Release what the store holds open (the SQLite backend's connection). A Redis
        store's client belongs to whoever made it, who closes it."""

    def __enter__(self) -> t.Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bank(self, name: str) -> BankConfig:
        for cfg in self.banks():
            if cfg.name == name:
                return cfg
        return BankConfig(name)

    def get_many(self, entry_ids: Sequence[int]) -> list[BankEntry]:
        """Several entries at once (backends override this with one round trip)."""
        return [self.get(i) for i in entry_ids]

    def import_entries(
        self, entries: Iterable[NewEntry], *, actor: str, reason: str, progress: t.Callable[[int], None] | None = None
    ) -> int:
        """Add a stream of entries in bulk; returns how many were new (the rest merged
        into active duplicates). Backends without transactions write chunk by chunk."""
        _check_actor(actor, reason)
        added = 0
        chunk: list[NewEntry] = []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) == 5000:
                added += self._import_chunk(chunk, actor, reason)
                if progress is not None:
                    progress(len(chunk))
                chunk = []
        if chunk:
            added += self._import_chunk(chunk, actor, reason)
            if progress is not None:
                progress(len(chunk))
        return added

    def _import_chunk(self, chunk: list[NewEntry], actor: str, reason: str) -> int:
        before = self.version()
        self.add(chunk, actor=actor, reason=reason)
        return self.version() - before

    def history(self, *, bank: str | None = None, entry_id: int | None = None, limit: int = 100) -> list[Change]:
        """The newest ``limit`` changes (optionally of one bank or entry), newest first."""
        out = [
            c for c in self.changes_since(0)
            if (bank is None or c.bank == bank) and (entry_id is None or c.entry_id == entry_id)
        ]
        return out[::-1][:limit]

    def active_features(self, *, chunk: int = 1_000) -> Iterator[tuple[list[int], list[str], list[str], list[str]]]:
        """Active keypoint (``orb``) entries as (ids, values, banks, groups) chunks in id
        order: what a matcher's keypoint index loads (an image ban's entries are told
        apart from another image's by their group). Backends may override it."""
        for ids, values, banks in self.active_columns(Algorithm.ORB, chunk=chunk):
            group_of = {e.id: e.group for e in self.get_many(ids)}
            yield ids, values, banks, [group_of.get(i, "") for i in ids]

    def active_columns(self, algorithm: Algorithm, *, chunk: int = 100_000) -> Iterator[tuple[list[int], list[str], list[str]]]:
        """Active entries of one algorithm as (ids, values, banks) chunks in id order: the
        columnar read that snapshots and index builds use (backends override it)."""
        ids: list[int] = []
        values: list[str] = []
        banks: list[str] = []
        for e in self.entries():
            if e.algorithm is algorithm:
                ids.append(e.id)
                values.append(e.value)
                banks.append(e.bank)
                if len(ids) == chunk:
                    yield ids, values, banks
                    ids, values, banks = [], [], []
        if ids:
            yield ids, values, banks



def allow_photo(
    store: "BankStore", hashes: ImageHashes, *, bank: str, actor: str, reason: str, label: str = ""
) -> list["BankEntry"]:
    """Put a photo's hashes in an allow bank (a moderator released it as a false positive).

    Makes ``bank`` an allow bank first if it is new. Refuses a bank that already holds
    ban entries or was configured as a ban bank: adding a released photo there would
    block it instead. Returns the entries (existing ones for hashes already there).

    Raises:
        ValueError: ``bank`` is a ban bank; or no actor/reason.
    """
    _check_actor(actor, reason)
    current = store.bank(bank)
    if not current.is_allow:
        known = any(b.name == bank for b in store.banks())
        if known:
            raise ValueError(f"bank {bank!r} is a ban bank; configure an allow bank (--kind allow) for released photos")
        store.configure_bank(
            bank, distances={}, description="released false positives", actor=actor, reason=reason, kind=BankKind.ALLOW
        )
    entries, _ = entries_from_hashes(hashes, bank, label=label, source=EntrySource.IMAGE)
    return store.add(entries, actor=actor, reason=reason)
