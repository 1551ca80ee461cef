"""Columnar snapshots of a bank store, so a worker loads 10 million entries in seconds.

Reading every entry as a Python object (from SQLite rows or Redis hashes) takes
minutes at industry scale. A snapshot is, per algorithm, three numpy arrays (entry
ids, hash codes as uint64 words, bank numbers) written with ``np.save`` (never
pickle) next to the bank, under a folder named by the bank version it was read at.
A matcher loads the newest snapshot not newer than the store, builds its indexes
from the arrays, then replays the change log from the snapshot's version, so a stale
snapshot is only slower, never wrong.

Layout::

    <dir>/v000000001234/meta.json      {"format": 1, "version": 1234, "banks": [...], "counts": {...}}
    <dir>/v000000001234/pdq.ids.npy    int64 entry ids, ascending
    <dir>/v000000001234/pdq.codes.npy  uint64, N x words (big-endian bit order)
    <dir>/v000000001234/pdq.banks.npy  uint16 index into meta["banks"]

Written to a temporary folder and renamed, so a reader never sees half a snapshot;
only the newest ``keep`` snapshots are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .banks import BankStore
from .codecs import Algorithm

FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    """One snapshot on disk."""

    path: Path
    version: int
    banks: tuple[str, ...]
    counts: dict[str, int]

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


def write_snapshot(
    store: BankStore, directory: str | Path, *, keep: int = 2, progress: Callable[[int], None] | None = None
) -> Snapshot:
    """Read every active entry column by column and save it as the snapshot of the current version."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Version first: entries added while we read are in the snapshot *and* replayed
    # (adds are idempotent by id), so nothing is missed.
    version = store.version()
    bank_numbers: dict[str, int] = {}
    counts: dict[str, int] = {}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        for algorithm in Algorithm:
            words = algorithm.bits // 64
            id_parts, code_parts, bank_parts = [], [], []
            for ids, values, banks in store.active_columns(algorithm):
                id_parts.append(np.asarray(ids, dtype=np.int64))
                raw = bytes.fromhex("".join(values))
                code_parts.append(np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(ids), words))
                bank_parts.append(
                    np.fromiter((bank_numbers.setdefault(b, len(bank_numbers)) for b in banks), np.uint16, len(banks))
                )
                if progress is not None:
                    progress(len(ids))
            if len(bank_numbers) > 65535:
                raise ValueError("a snapshot holds at most 65535 banks")
            ids = np.concatenate(id_parts) if id_parts else np.empty(0, np.int64)
            counts[algorithm.value] = int(len(ids))
            np.save(tmp / f"{algorithm.value}.ids.npy", ids, allow_pickle=False)
            np.save(
                tmp / f"{algorithm.value}.codes.npy",
                np.concatenate(code_parts) if code_parts else np.empty((0, words), np.uint64),
                allow_pickle=False,
            )
            np.save(
                tmp / f"{algorithm.value}.banks.npy",
                np.concatenate(bank_parts) if bank_parts else np.empty(0, np.uint16),
                allow_pickle=False,
            )
        banks_list = sorted(bank_numbers, key=bank_numbers.__getitem__)
        meta = {"format": FORMAT, "version": version, "banks": banks_list, "counts": counts}
        (tmp / "meta.json").write_text(json.dumps(meta), "utf-8")
        final = directory / f"v{version:012d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in directory.glob("v*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return Snapshot(final, version, tuple(banks_list), counts)


def latest_snapshot(directory: str | Path, *, max_version: int) -> Snapshot | None:
    """The newest readable snapshot at or below ``max_version`` (a newer one belongs to
    another store or a restored backup and is ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for path in sorted((p for p in directory.glob("v*") if p.is_dir()), reverse=True):
        try:
            meta = json.loads((path / "meta.json").read_text("utf-8"))
            if meta.get("format") != FORMAT:
                continue
            version = int(meta["version"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if version <= max_version:
            return Snapshot(path, version, tuple(meta["banks"]), dict(meta["counts"]))
    return None
