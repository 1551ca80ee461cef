"""One bank index per host: built once, written to a file, mapped by every process.

Every process that matches photos (each worker process, ``photosentry scan``,
``rescan --local``, the in-process ``photosentry.scan``) used to build its own copy of
the index: 4 workers held 4 copies (about 2.5 GB each at 10M entries per algorithm) and
each spent seconds building it. Here the index of a bank store at a bank version is a
file (:mod:`~photosentry.hashes.indexfile`) in ``<data dir>/bank-index/<store id>/``,
named ``v<version>-<build time ns>.idx``; a process maps the newest one no newer than
the store and applies the change log since its version on top, as a small delta of its
own (:class:`~photosentry.hashes.index.TieredIndex` adds and tombstones).

- **Built once.** A process that finds no usable file takes ``build.lock`` (an
  ``flock``, released by the kernel if the builder dies) and builds it from the store's
  snapshot (or the store); others wait on the lock, then map what it wrote. A builder
  re-checks for a file after taking the lock, so concurrent starters build once.
- **Never torn.** Files are written to a temporary name, fsynced and renamed; a reader
  checks header, length and checksums first. A file that fails is skipped, and the
  next builder (holding the lock, so no reader can be racing it) deletes it.
- **Compacted in the background.** When a process's delta grows past a threshold, it
  builds a newer file from its own view (the mapped bulk minus tombstones plus the
  delta: no store read) in a thread, under the lock without waiting (if someone else
  holds it, they are already doing it). Processes look for a newer file every second or
  so and swap it in without a restart; the old mapping stays valid until the last
  array using it is released, even after the builder deletes the old file (only the
  newest ``KEEP_FILES`` stay on disk).
- **Laid out for this host.** The first build uses the planner's cost model, then a
  background rebuild times the best candidates on the host (mih/calibrate.py) and
  writes the winner; the decision is cached per host, so later builds skip the timing.
- **Shared, not copied.** The kernels run on the mapped arrays in place.

The kernels' compiled code is cached next to it too (``bank-index/kernels``, see
mih/kernelcache.py), so a new process neither builds nor compiles.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IndexFileError
from . import mih
from .algorithms import HASHES, Algorithm
from .index import HashIndex, SortedExactIndex, TieredIndex, _id_dtype
from .indexfile import MappedIndexFile, open_index_file, write_index_file
from .mih import calibrate

log = logging.getLogger(__name__)

#: Newest index files kept on disk per store (processes may still map older, deleted ones).
KEEP_FILES = 2
_FILE = re.compile(r"v(\d{12})-(\d{20})\.idx")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ALGORITHMS = HASHES  # local features stay in each matcher (they are few: one per image ban)


@dataclass(frozen=True)
class IndexColumns:
    """What an index file is built from: every active entry by algorithm, at a version."""

    version: int
    #: Bank names; the bank numbers in ``columns`` index this.
    banks: tuple[str, ...]
    #: Per algorithm: (entry ids int64, codes uint64 N x words, bank numbers uint16).
    columns: Mapping[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]]
    #: Per perceptual algorithm, the distance its index is laid out for.
    radii: Mapping[Algorithm, int]


@dataclass
class SharedIndex:
    """An index file, opened as the parts a matcher is made of (all on the mapping)."""

    file: MappedIndexFile
    version: int
    banks: tuple[str, ...]
    indexes: dict[Algorithm, HashIndex]
    #: Bank number and algorithm (1 + position in Algorithm; 0: none) by entry id.
    bank_of: np.ndarray
    algo_of: np.ndarray
    #: How each perceptual algorithm's layout was chosen ("model", "calibrated", ...).
    planned: dict[Algorithm, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.file.path.name

    def needs_calibration(self) -> bool:
        """The planner's cost model chose some layout that this host should time."""
        return any(how == calibrate.AWAITING for how in self.planned.values())


class HostIndex:
    """The index files of one bank store on this host (see the module docstring).

    Args:
        root: ``<data dir>/bank-index``: one folder per store id beneath it, the
            calibration file and the kernel cache beside them.
        store_id: the store's :meth:`~photosentry.hashes.banks.BankStore.store_id`.
        calibrate: time layouts on this host (False: the cost model alone decides).
    """

    def __init__(self, root: str | Path, store_id: str, *, calibrate: bool = True) -> None:
        if not _SAFE_ID.fullmatch(store_id):  # it names a folder: never a path
            raise ValueError(f"{store_id!r} is not a store id")
        self.root = Path(root)
        self.store_id = store_id
        self.dir = self.root / store_id
        self.calibration = calibrate_cache(self.root) if calibrate else None
        self._bad: set[str] = set()

    # -- reading -------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Index files on disk, newest first (by version, then build time)."""
        try:
            names = [p.name for p in self.dir.iterdir() if _FILE.fullmatch(p.name)]
        except OSError:
            return []
        return [self.dir / n for n in sorted(names, reverse=True)]

    @staticmethod
    def version_of(path: Path) -> int:
        match = _FILE.fullmatch(path.name)
        return int(match.group(1)) if match else -1

    def newest_name(self, *, max_version: int) -> str | None:
        """Name of the newest file at or below ``max_version`` not known to be bad (cheap:
        a directory listing)."""
        for path in self.files():
            if self.version_of(path) <= max_version and path.name not in self._bad:
                return path.name
        return None

    def latest(self, *, max_version: int, radii: Mapping[Algorithm, int]) -> SharedIndex | None:
        """The newest good file at or below ``max_version`` (a newer one would be ahead of the
        store, e.g. a restored backup), opened; None if there is none. Bad files are skipped
        (and remembered, so they are not checked again)."""
        for path in self.files():
            if self.version_of(path) > max_version or path.name in self._bad:
                continue
            try:
                return self.open(path, radii=radii)
            except IndexFileError as exc:
                log.warning("shared index %s refused: %s", path, exc)
                self._bad.add(path.name)
            except OSError:
                continue  # deleted by a builder meanwhile: try the next
        return None

    def open(self, path: Path, *, radii: Mapping[Algorithm, int]) -> SharedIndex:
        """Map ``path`` and assemble a matcher's parts on it; ``radii``: the distance each
        perceptual index's delta is laid out for.

        Raises:
            IndexFileError: the file is torn, damaged, of another store or does not fit.
        """
        mapped = open_index_file(path)
        meta = mapped.meta
        if meta.get("store_id") != self.store_id:
            raise IndexFileError(f"{path} is the index of store {meta.get('store_id')!r}, not {self.store_id!r}")
        if meta.get("algorithms") != [a.value for a in _ALGORITHMS] or meta.get("version") != mapped.version:
            raise IndexFileError(f"{path} was written for other algorithms or disagrees with its header")
        try:
            banks = tuple(str(b) for b in meta["banks"])
            indexes: dict[Algorithm, HashIndex] = {}
            planned: dict[Algorithm, str] = {}
            for algorithm in _ALGORITHMS:
                info, name = meta["indexes"][algorithm.value], algorithm.value
                if algorithm.is_perceptual:
                    ids, codes = mapped.array(f"{name}.ids"), mapped.array(f"{name}.codes")
                    layout = mih.Layout.from_dict(info["layout"]) if info.get("layout") else None
                    segment = None
                    if layout is not None:
                        tables = {k.lstrip("_"): mapped.array(f"{name}.t.{k.lstrip('_')}")
                                  for k in mih.MihSegment._TABLES}
                        segment = mih.MihSegment.from_tables(codes, layout, tables)
                    radius = int(radii.get(algorithm, info["radius"]))
                    indexes[algorithm] = TieredIndex.shared(algorithm.bits, radius, ids, codes, segment)
                    planned[algorithm] = str(info.get("planned", "model"))
                else:
                    arrays = {k: mapped.array(f"{name}.{k}") for k in ("codes", "keys", "ids", "sorted_ids")}
                    indexes[algorithm] = SortedExactIndex.shared(algorithm.bits, arrays)
            bank_of, algo_of = mapped.array("bank_of"), mapped.array("algo_of")
            if bank_of.shape != algo_of.shape or bank_of.dtype != np.uint16 or algo_of.dtype != np.uint8:
                raise ValueError("entry tables do not fit")
            if len(bank_of) and int(bank_of.max()) >= max(len(banks), 1):
                raise ValueError("an entry names a bank the file does not list")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, IndexFileError):
                raise
            raise IndexFileError(f"{path} does not fit this version's index: {exc}") from exc
        return SharedIndex(mapped, mapped.version, banks, indexes, bank_of, algo_of, planned)

    # -- building ------------------------------------------------------------------

    @contextlib.contextmanager
    def build_lock(self, *, wait_s: float | None) -> Iterator[bool]:
        """Hold the store's build lock while inside; yields whether it is held. ``wait_s``:
        how long to wait for another builder (None: do not wait)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + (wait_s or 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if wait_s is None or time.monotonic() >= deadline:
                        held = False
                        break
                    time.sleep(0.05)
            yield held
        finally:
            os.close(fd)  # releases the lock

    def build(self, source: IndexColumns, *, measure: bool) -> Path:
        """Write the index file of ``source`` (the caller holds the build lock), delete bad,
        abandoned and old files, and return its path. ``measure``: calibrate layouts this
        host has no decision for (else the cost model decides them).

        Raises:
            OSError: it could not be written.
        """
        started = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        arrays: dict[str, np.ndarray] = {}
        indexes: dict[str, dict[str, object]] = {}
        max_id = max((int(c[0].max()) for c in source.columns.values() if len(c[0])), default=-1)
        bank_of = np.zeros(max_id + 1, dtype=np.uint16)
        algo_of = np.zeros(max_id + 1, dtype=np.uint8)
        for position, algorithm in enumerate(_ALGORITHMS, start=1):
            words, name = algorithm.bits // 64, algorithm.value
            ids, codes, banks = source.columns.get(algorithm) or (
                np.empty(0, np.int64), np.empty((0, words), np.uint64), np.empty(0, np.uint16))
            ids = np.asarray(ids, dtype=np.int64)
            bank_of[ids] = banks
            algo_of[ids] = position
            if algorithm.is_perceptual:
                order = np.argsort(ids, kind="stable")
                ids, codes = ids[order], np.ascontiguousarray(np.asarray(codes, dtype=np.uint64)[order])
                radius = int(source.radii[algorithm])
                segment, how = (None, "empty") if not len(ids) else calibrate.planned_segment(
                    codes, radius, cache=self.calibration, measure=measure)
                arrays[f"{name}.ids"] = ids.astype(_id_dtype(ids))
                arrays[f"{name}.codes"] = codes
                if segment is not None:
                    arrays.update({f"{name}.t.{k}": v for k, v in segment.tables().items()})
                indexes[name] = {"kind": "tiered", "radius": radius, "rows": len(ids), "planned": how,
                                 "layout": segment.layout.to_dict() if segment is not None else None}
            else:
                exact = SortedExactIndex(algorithm.bits)
                exact.load(ids, np.asarray(codes, dtype=np.uint64))
                arrays.update({f"{name}.{k}": v for k, v in exact.arrays().items()})
                indexes[name] = {"kind": "exact", "rows": len(ids)}
        arrays["bank_of"], arrays["algo_of"] = bank_of, algo_of
        built_ns = time.time_ns()
        meta = {"store_id": self.store_id, "version": source.version, "banks": list(source.banks),
                "algorithms": [a.value for a in _ALGORITHMS], "indexes": indexes, "built_ns": built_ns,
                "built_by_pid": os.getpid()}
        path = self.dir / f"v{source.version:012d}-{built_ns:020d}.idx"
        write_index_file(path, version=source.version, meta=meta, arrays=arrays)
        del arrays
        log.info("shared index %s written (%s) in %.1f s", path.name,
                 ", ".join(f"{k} {v['rows']}" for k, v in indexes.items() if v["rows"]), time.perf_counter() - started)
        self._sweep(keep=path.name, version=source.version)
        return path

    def _sweep(self, *, keep: str, version: int) -> None:
        """Under the lock, after writing ``keep`` at ``version``: delete files that failed a
        check, files ahead of that version (a builder only builds when no file at or below
        the store's version is usable, and compacts only when none is newer than its own,
        so these are ahead of the store: a restored backup), temporary files of killed
        writers, and all but the newest KEEP_FILES (mapped ones live on until released)."""
        good: list[Path] = []
        for path in self.files():
            if path.name != keep and (path.name in self._bad or self.version_of(path) > version):
                path.unlink(missing_ok=True)
            else:
                good.append(path)
        for path in good[KEEP_FILES:]:
            if path.name != keep:
                path.unlink(missing_ok=True)
        # Only a lock holder writes here, so any temporary file is a dead writer's (a
        # process killed mid-build: up to a whole index's size).
        for tmp in self.dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def compact(self, source: Callable[[], IndexColumns], *, measure: bool, current: str) -> Path | None:
        """For a background thread: build a newer file from ``source()``, unless someone
        else holds the lock (they are building one) or the newest file is no longer
        ``current`` (the caller's: someone built a newer one meanwhile, which the caller
        will map instead). Returns the path, or None when there was nothing to do."""
        with self.build_lock(wait_s=None) as held:
            if not held or self.newest_name(max_version=2**62) != current:
                return None
            return self.build(source(), measure=measure)


def calibrate_cache(root: str | Path) -> calibrate.CalibrationCache:
    """This host's calibration decisions, kept beside the stores' index folders."""
    return calibrate.CalibrationCache(root)
