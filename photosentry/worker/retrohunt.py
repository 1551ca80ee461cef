"""Retro-hunt: which earlier scans match bank entries added since a bank version?

Reads the hash log (:mod:`photosentry.worker.hashlog`) in chunks and never decodes
an image. Each chunk's perceptual hashes (every query variant of every frame) become
a small index built in one pass (:class:`~photosentry.hashes.index.TieredIndex`:
multi-index hashing when the chunk is large), and the *new* entries are the queries:
Hamming distance is symmetric, so this finds exactly what matching each old photo
against the new entries would, at the cost of one index build per chunk. Exact
hashes are looked up in a set. Per-bank distances, allow banks (never hunted) and
the PDQ quality gate apply as in a scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..hashes.banks import BankConfig, BankEntry, BankStore, ChangeOp
from ..hashes.codecs import Algorithm
from ..hashes.index import TieredIndex, hex_to_codes
from .hashlog import HashLog, ScanRecord


@dataclass(frozen=True)
class RetroHit:
    """An earlier scan that matches a new bank entry."""

    record: ScanRecord
    entry: BankEntry
    distance: int
    frame: int
    variant: int

    def to_dict(self) -> dict[str, object]:
        r = self.record
        return {
            "upload_id": r.upload_id, "log_id": r.log_id, "scanned_at": r.at, "previous_action": r.action,
            "scanned_bank_version": r.bank_version, "source": dict(r.source), "context": dict(r.context),
            "entry_id": self.entry.id, "bank": self.entry.bank, "algorithm": self.entry.algorithm.value,
            "distance": self.distance, "frame": self.frame, "variant": self.variant, "label": self.entry.label,
        }


def new_entries(store: BankStore, since_version: int) -> tuple[list[BankEntry], int]:
    """Active entries of ban banks added after ``since_version``, and the version read up to."""
    changes = store.changes_since(since_version)
    ids = [c.entry_id for c in changes if c.op is ChangeOp.ADD and c.entry_id is not None]
    until = changes[-1].version if changes else since_version
    banks = {b.name: b for b in store.banks()}
    entries = [e for e in store.get_many(ids) if e.active and not banks.get(e.bank, BankConfig(e.bank)).is_allow]
    return entries, until


def hunt(log: HashLog, store: BankStore, entries: list[BankEntry], *, chunk: int = 20_000) -> Iterator[RetroHit]:
    """Every (earlier scan, new entry) pair within the entry's bank distance."""
    if not entries:
        return
    banks = {b.name: b for b in store.banks()}
    exact: dict[tuple[Algorithm, str], list[BankEntry]] = {}
    perceptual: dict[Algorithm, list[BankEntry]] = {}
    for e in entries:
        if e.algorithm.is_perceptual:
            perceptual.setdefault(e.algorithm, []).append(e)
        else:
            exact.setdefault((e.algorithm, e.value), []).append(e)
    radius = {
        a: max(banks.get(e.bank, BankConfig(e.bank)).distance(a) for e in group) for a, group in perceptual.items()
    }
    for records in log.read(chunk=chunk):
        best: dict[tuple[int, int], RetroHit] = {}

        def keep(
            i: int, entry: BankEntry, distance: int, frame: int, variant: int,
            best: dict[tuple[int, int], RetroHit] = best, records: list[ScanRecord] = records,
        ) -> None:
            key = (i, entry.id)
            if key not in best or distance < best[key].distance:
                best[key] = RetroHit(records[i], entry, distance, frame, variant)

        for i, record in enumerate(records):
            for algorithm, value in record.hashes.exact().items():
                for entry in exact.get((algorithm, value), ()):
                    keep(i, entry, 0, 0, 0)
        for algorithm, group in perceptual.items():
            rows: list[tuple[int, int, int]] = []  # (record, frame, variant) per code
            values: list[str] = []
            for i, record in enumerate(records):
                for frame in record.hashes.frames:
                    ph = frame.get(algorithm)
                    if ph is None:
                        continue
                    if ph.weak:
                        continue  # a weak hash (PDQ below its quality threshold) does not match on its own
                    for v, value in enumerate(ph.variants):
                        rows.append((i, frame.frame, v))
                        values.append(value)
            if not values:
                continue
            index = TieredIndex(algorithm.bits, radius[algorithm])
            index.load(np.arange(len(values), dtype=np.int64), hex_to_codes(values, algorithm.bits // 64))
            for hit in index.query([e.value for e in group], radius[algorithm]):
                entry = group[hit.query]
                if hit.distance <= banks.get(entry.bank, BankConfig(entry.bank)).distance(algorithm):
                    i, frame, variant = rows[hit.entry_id]
                    keep(i, entry, hit.distance, frame, variant)
        yield from sorted(best.values(), key=lambda h: (h.record.log_id, h.entry.id))
