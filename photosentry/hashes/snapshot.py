"""Columnar snapshots of a bank store, so a worker loads 10 million entries in seconds.

Reading every entry as a Python object (from SQLite rows or Redis hashes) takes
minutes at industry scale. A snapshot is, per algorithm, three numpy arrays (entry
ids, hash codes as uint64 words, bank numbers) written with ``np.save`` (never
pickle) next to the bank, under a folder named by the bank version it was read at.
A matcher loads the newest snapshot not newer than the store, builds its indexes
from the arrays, then replays the change log from the snapshot's version, so a stale
snapshot is only slower, never wrong.

Layout::

    <dir>/v000000001234/meta.json      {"format": 2, "store_id": "9f0c...", "version": 1234, "banks": [...], "counts": {...}}
    <dir>/v000000001234/pdq.ids.npy    int64 entry ids, ascending
    <dir>/v000000001234/pdq.codes.npy  uint64, N x words (big-endian bit order)
    <dir>/v000000001234/pdq.banks.npy  uint16 index into meta["banks"]

``<dir>`` is per store (:func:`snapshot_dir`), and meta.json names the store too: a
version only orders changes within one store, so a snapshot of another store (another
Redis, another prefix, a recreated SQLite file) is never loaded, whatever its version.

Written to a temporary folder and renamed, so a reader never sees half a snapshot;
only the newest ``keep`` snapshots are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .banks import BankStore
from .algorithms import HASHES
from .codecs import Algorithm
from .index import hex_to_codes

#: 2: meta.json names the store (``store_id``); format-1 snapshots (no store id) are ignored.
FORMAT = 2

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Snapshot:
    """One snapshot on disk."""

    path: Path
    version: int
    banks: tuple[str, ...]
    counts: dict[str, int]
    #: The :meth:`BankStore.store_id` of the store it was read from.
    store_id: str

    def columns(self, algorithm: Algorithm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int64, codes uint64 N x words, bank numbers uint16) of one algorithm."""
        words = algorithm.bits // 64
        name = algorithm.value
        if not (self.path / f"{name}.ids.npy").exists():
            return np.empty(0, np.int64), np.empty((0, words), np.uint64), np.empty(0, np.uint16)
        ids = np.load(self.path / f"{name}.ids.npy", allow_pickle=False)
        codes = np.load(self.path / f"{name}.codes.npy", allow_pickle=False)
        banks = np.load(self.path / f"{name}.banks.npy", allow_pickle=False)
        if codes.shape != (len(ids), words) or banks.shape != ids.shape:
            raise ValueError(f"snapshot {self.path} is inconsistent for {name}")
        return ids, codes, banks


def snapshot_dir(data_dir: str | Path, store: BankStore) -> Path:
    """Where ``store``'s snapshots live on this host: ``<data dir>/bank-snapshots/<store id>``.

    One folder per store, so every process on the host that opens the same store
    (scan, ban, workers, rescan) shares its snapshots, and no store ever sees another's.
    """
    store_id = store.store_id()
    if not _SAFE_ID.fullmatch(store_id):  # it names a folder: never a path
        raise ValueError(f"{store_id!r} is not a store id")
    return Path(data_dir) / "bank-snapshots" / store_id


def write_snapshot(
    store: BankStore, directory: str | Path, *, keep: int = 2, progress: Callable[[int], None] | None = None
) -> Snapshot:
    """Read every active entry column by column and save it as the snapshot of the current version."""
    store_id = store.store_id()
    # Version first: entries added while we read are in the snapshot *and* replayed
    # (adds are idempotent by id), so nothing is missed.
    version = store.version()
    bank_numbers: dict[str, int] = {}
    columns: dict[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for algorithm in HASHES:  # local features are read from the store (matcher.py)
        words = algorithm.bits // 64
        id_parts, code_parts, bank_parts = [], [], []
        for ids, values, banks in store.active_columns(algorithm):
            id_parts.append(np.asarray(ids, dtype=np.int64))
            code_parts.append(hex_to_codes(values, words))
            bank_parts.append(
                np.fromiter((bank_numbers.setdefault(b, len(bank_numbers)) for b in banks), np.uint16, len(banks))
            )
            if progress is not None:
                progress(len(ids))
        if len(bank_numbers) > 65535:
            raise ValueError("a snapshot holds at most 65535 banks")
        columns[algorithm] = (
            np.concatenate(id_parts) if id_parts else np.empty(0, np.int64),
            np.concatenate(code_parts) if code_parts else np.empty((0, words), np.uint64),
            np.concatenate(bank_parts) if bank_parts else np.empty(0, np.uint16),
        )
    banks_list = sorted(bank_numbers, key=bank_numbers.__getitem__)
    return save_snapshot(directory, store_id=store_id, version=version, banks=banks_list, columns=columns, keep=keep)


def save_snapshot(
    directory: str | Path,
    *,
    store_id: str,
    version: int,
    banks: list[str],
    columns: Mapping[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]],
    keep: int = 2,
) -> Snapshot:
    """Save columns already in memory (a matcher's, after it read the store) as the
    snapshot of ``version``: (ids int64, codes uint64 N x words, indexes into ``banks``).

    Safe for several processes at once: each writes its own temporary folder and
    renames it into place; a complete snapshot of the same version already there is
    kept (readers may be loading it) and the newcomer discarded.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # bank-snapshots/: owner-only too
    directory.mkdir(exist_ok=True, mode=0o700)
    _sweep_abandoned(directory)
    final = directory / f"v{version:012d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        counts: dict[str, int] = {}
        for algorithm in HASHES:
            ids, codes, bank_numbers = columns.get(algorithm) or (
                np.empty(0, np.int64), np.empty((0, algorithm.bits // 64), np.uint64), np.empty(0, np.uint16))
            counts[algorithm.value] = int(len(ids))
            np.save(tmp / f"{algorithm.value}.ids.npy", np.asarray(ids, np.int64), allow_pickle=False)
            np.save(tmp / f"{algorithm.value}.codes.npy", np.asarray(codes, np.uint64), allow_pickle=False)
            np.save(tmp / f"{algorithm.value}.banks.npy", np.asarray(bank_numbers, np.uint16), allow_pickle=False)
        meta = {"format": FORMAT, "store_id": store_id, "version": version, "banks": list(banks), "counts": counts}
        # meta.json last: a folder without it is never read as a snapshot.
        (tmp / "meta.json").write_text(json.dumps(meta), "utf-8")
        existing = _read(final)
        if existing is not None and existing.store_id == store_id:
            # Another process got there first with the same version: keep its copy
            # rather than pull it from under a reader.
            shutil.rmtree(tmp, ignore_errors=True)
            return existing
        if final.exists():
            # Unreadable leftovers (or, impossibly, another store's): move aside atomically, then delete.
            aside = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
            try:
                os.replace(final, aside / "old")
            except OSError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Renaming onto a non-empty folder fails: a concurrent writer just put
            # its copy there. Use it if it is good, else give up on ours.
            shutil.rmtree(tmp, ignore_errors=True)
            existing = _read(final)
            if existing is None or existing.store_id != store_id:
                raise
            return existing
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in directory.glob("v*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return Snapshot(final, version, tuple(banks), counts, store_id)


def latest_snapshot(directory: str | Path, *, max_version: int, store_id: str) -> Snapshot | None:
    """The newest readable snapshot of store ``store_id`` at or below ``max_version``.

    A snapshot of another store is never returned, whatever its version (its version
    numbers say nothing about this store's entries); nor is a newer one (a restored
    backup of this store, which is behind its snapshots).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for path in sorted((p for p in directory.glob("v*") if p.is_dir()), reverse=True):
        snap = _read(path)
        if snap is not None and snap.store_id == store_id and snap.version <= max_version:
            return snap
    return None


def _read(path: Path) -> Snapshot | None:
    try:
        meta = json.loads((path / "meta.json").read_text("utf-8"))
        if meta.get("format") != FORMAT:
            return None
        return Snapshot(path, int(meta["version"]), tuple(meta["banks"]), dict(meta["counts"]), str(meta["store_id"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _sweep_abandoned(directory: Path) -> None:
    # A writer killed mid-way leaves a temporary folder (hundreds of MB at scale);
    # one untouched for an hour is not being written any more.
    cutoff = time.time() - 3600
    for tmp in directory.glob(".tmp-*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass
