"""Match a photo's hashes against the active banks, kept in memory and refreshed.

The matcher loads every active entry once (from a snapshot when there is one), then follows the bank's change log
(``refresh``) so a moderator's ban reaches a running process without a rebuild.
It returns facts (which entry, which bank, how far); deciding what a match means is
the policy's job.

Given an ``index_dir``, the index is the host's shared one (:mod:`.hostindex`): mapped
from a file every process on the host shares, built by the first process that needs
it, with this process's changes since the file as a small delta on top, and swapped
for a newer file (compacted in the background) without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..errors import BankNotFound, IndexFileError
from .banks import BankConfig, BankEntry, BankStore, ChangeOp
from .codecs import Algorithm
from .algorithms import HASHES
from .evidence import FLAT_PICTURE, LOW_QUALITY, flat_pair, grade
from .flatness import is_flat
from .localfeatures import FeatureHit, FeatureIndex
from .hostindex import HostIndex, IndexColumns, SharedIndex
from .index import HashIndex, SortedExactIndex, TieredIndex, hex_to_codes
from .signals import FrameHashes, ImageHashes
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
    #: Not evidence enough to act on (a low-detail picture's hash, a lone 64-bit
    #: hash): reported, never decisive. :func:`.evidence.grade` sets it.
    weak: bool = False
    #: The entry is in an allow bank (a known false positive): the policy may let
    #: it suppress ban matches for this photo instead of counting it against it.
    allow: bool = False
    #: The banned image the entry was hashed from (its SHA-256; empty for imported hashes).
    group: str = ""
    #: Where the entry came from (``EntrySource``: image, derived, import, moderator).
    source: str = ""
    #: The region of the photo that matched (hashes/regions.py), empty for the whole photo.
    region: str = ""
    #: Why the match is strong or weak (hashes/evidence.py), e.g. ``pdq``, ``lone_64bit``.
    basis: str = ""
    #: ORB matches: keypoints of the banned image that one transform maps onto the photo
    #: (``distance`` is then how many of its stored keypoints did not).
    inliers: int = 0

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
            **{k: v for k, v in (("group", self.group), ("source", self.source), ("region", self.region),
                                 ("basis", self.basis), ("inliers", self.inliers)) if v},
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
            group=str(raw.get("group", "")),
            source=str(raw.get("source", "")),
            region=str(raw.get("region", "")),
            basis=str(raw.get("basis", "")),
            inliers=int(raw.get("inliers", 0)),
        )


class Found:
    """What a photo's hashes and keypoints met in the banks so far, before grading: per
    (entry, from a flat picture) the best hash match, and per entry the keypoint
    verification with the most inliers, with where in the photo it was."""

    def __init__(self) -> None:
        # (id, from a flat picture) -> (weak, distance, frame, variant, algo, region). A
        # flat picture's match is review-only against an image ban whose picture was
        # flat too (evidence.flat_pair), which is known once the entry is read, so the
        # best of each kind is kept.
        self.best: dict[tuple[int, bool], tuple[bool, int, int, int, Algorithm, str]] = {}
        #: entry -> (its most inliers, the region they lie in, the frame).
        self.verified: dict[int, tuple[FeatureHit, str, int]] = {}

    def keep(self, entry_id: int, algorithm: Algorithm, distance: int, frame: int, variant: int, weak: bool,
             region: str = "", flat: bool = False) -> None:
        current = self.best.get((entry_id, flat))
        # The whole photo's match wins a tie: it is the plainer evidence.
        if current is None or (weak, distance, bool(region)) < (current[0], current[1], bool(current[5])):
            self.best[(entry_id, flat)] = (weak, distance, frame, variant, algorithm, region)


def _info(entry: BankEntry) -> tuple[str, str, str]:
    return entry.label, entry.group, entry.source.value


def _new_index(algorithm: Algorithm, radius: int) -> HashIndex:
    if algorithm.is_perceptual:
        return TieredIndex(algorithm.bits, radius)
    return SortedExactIndex(algorithm.bits)


_ALGORITHMS = tuple(Algorithm)


class _ByEntry:
    """A small number per entry id (its bank or its algorithm), for millions of ids.

    A base array indexed by id: this process's own (grown as ids come), or the shared
    index file's (read-only, mapped), with the values of entries changed since the file
    in a dict beside it (the delta: small, until the next file replaces both).
    """

    def __init__(self, dtype: type, base: np.ndarray | None = None) -> None:
        self._dtype = dtype
        self._base = base if base is not None else np.zeros(1024, dtype=dtype)
        self._own: dict[int, int] = {}

    def __getitem__(self, entry_id: int) -> int:
        value = self._own.get(entry_id)
        if value is not None:
            return value
        return int(self._base[entry_id]) if 0 <= entry_id < len(self._base) else 0

    def __setitem__(self, entry_id: int, value: int) -> None:
        if not self._base.flags.writeable:
            self._own[entry_id] = int(value)
            return
        self._grow(entry_id)
        self._base[entry_id] = value

    def assign(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Set many at once (a private base only: the bulk of a private index)."""
        self._grow(int(ids.max()))
        self._base[ids] = values

    def _grow(self, max_id: int) -> None:
        if max_id >= len(self._base):
            grown = np.zeros(max(max_id + 1, 2 * len(self._base)), dtype=self._dtype)
            grown[: len(self._base)] = self._base
            self._base = grown

    def frozen(self):  # type: ignore[no-untyped-def]
        """A function of an id array giving the values as they are now (for a background
        build): the base is not written to while shared, and the delta is copied."""
        base, own = self._base if not self._base.flags.writeable else self._base.copy(), dict(self._own)

        def lookup(ids: np.ndarray) -> np.ndarray:
            out = np.zeros(len(ids), dtype=self._dtype)
            inside = ids < len(base)
            out[inside] = base[ids[inside]]
            if own:
                for i in np.flatnonzero(np.isin(ids, np.fromiter(own, dtype=np.int64, count=len(own)))).tolist():
                    out[i] = own[int(ids[i])]
            return out

        return lookup


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
        index_dir: ``<data dir>/bank-index``: share the host's index file of this store
            (:mod:`.hostindex`) instead of building a private index; None: private, as
            before (``PHOTOSENTRY_SHARED_INDEX=0`` makes the assembly pass None).
        compact_after: changes since the shared file after which this process builds a
            newer one in the background (default: ``INDEX_COMPACT_MIN_CHANGES`` or
            ``INDEX_COMPACT_FRACTION`` of the entries, whichever is more).
        build_wait_s: how long to wait for another process building the host's first file
            before building a private index instead.
    """

    def __init__(
        self,
        store: BankStore,
        *,
        snapshot_dir: str | Path | None = None,
        auto_snapshot_min: int = defaults.AUTO_SNAPSHOT_MIN_ENTRIES,
        index_dir: str | Path | None = None,
        compact_after: int | None = None,
        build_wait_s: float = defaults.INDEX_BUILD_WAIT_S,
    ) -> None:
        self._store = store
        self._refreshed_at = time.monotonic()
        self._banks: dict[str, BankConfig] = {}
        self._load_banks()
        # Each index is laid out for the widest distance a bank asks for, and never less
        # than the algorithm's default (_max_distance counts it); wider ones still work, more slowly.
        self._indexes: dict[Algorithm, HashIndex] = {a: _new_index(a, self._max_distance(a)) for a in HASHES}
        # Image bans' keypoints: one entry per banned image, kept by each matcher (not in
        # snapshots or the host file), and told apart by bank themselves: they outlive
        # swaps of the shared index.
        self._features = FeatureIndex()
        self._bank_names: list[str] = []
        self._bank_numbers: dict[str, int] = {}
        self._bank_of = _ByEntry(np.uint16)
        self._algo_of = _ByEntry(np.uint8)  # 0: not indexed; else 1 + position in Algorithm
        self._info: dict[int, tuple[str, str, str]] = {}
        #: Where the view came from: "snapshot v<N>", "store", or "shared index v<N>" (with
        #: ", built from ..." when this process built the file).
        self.loaded_from = "store"
        #: The snapshot this matcher wrote after reading a large bank from the store, if any.
        self.wrote_snapshot: Snapshot | None = None
        self._snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self._auto_snapshot_min = auto_snapshot_min
        # The host's shared index (None: a private one).
        self._host: HostIndex | None = None
        self._shared: SharedIndex | None = None
        self._compact_after = compact_after
        self._host_checked_at = time.monotonic()
        self._compaction: threading.Thread | None = None
        self._compact_tried_at = -float("inf")
        #: True when this process built the file it maps (rather than mapping another's).
        self.built_shared_index = False
        read = self._open_shared(Path(index_dir), build_wait_s) if index_dir is not None else None
        if self._shared is None:
            source = read or self._read_columns()  # what a failed build read is not read again
            for algorithm, (ids, codes, banks) in source.columns.items():
                self._bulk(algorithm, ids, codes, banks)
            self.version = source.version
        self._load_features()
        self.refresh()

    # -- loading ------------------------------------------------------------------------

    def _read_columns(self) -> IndexColumns:
        """Every active entry, from the newest usable snapshot or else the store (saving
        what it read as a snapshot when it was many), numbered by this matcher's banks."""
        store, snapshot_dir = self._store, self._snapshot_dir
        radii = self._radii()
        snap = None
        if snapshot_dir is not None:
            store_id = store.store_id()
            snap = latest_snapshot(snapshot_dir, max_version=store.version(), store_id=store_id)
        if snap is not None:
            try:
                columns = {a: snap.columns(a) for a in HASHES}
            except (OSError, ValueError) as exc:
                # Pruned by a concurrent writer or damaged: the store is the truth.
                log.warning("bank snapshot %s unreadable (%s); reading the store", snap.path, exc)
                snap = None
        if snap is not None:
            self.loaded_from = f"snapshot v{snap.version}"
            numbers = np.array([self._bank_number(b) for b in snap.banks], dtype=np.uint16)
            numbered = {a: (ids, codes, numbers[banks] if len(banks) else banks)
                        for a, (ids, codes, banks) in columns.items()}
            return IndexColumns(snap.version, tuple(self._bank_names), numbered, radii)
        # Version first: anything added while we read is replayed by refresh()
        # (adds are idempotent by id), so nothing is missed.
        version = store.version()
        read: dict[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for algorithm in HASHES:
            id_parts, code_parts, bank_parts = [], [], []
            for ids, values, banks in store.active_columns(algorithm):
                id_parts.append(np.asarray(ids, dtype=np.int64))
                code_parts.append(hex_to_codes(values, algorithm.bits // 64))
                bank_parts.append(np.array([self._bank_number(b) for b in banks], dtype=np.uint16))
            if id_parts:
                read[algorithm] = (np.concatenate(id_parts), np.concatenate(code_parts), np.concatenate(bank_parts))
        self.loaded_from = "store"
        if snapshot_dir is not None and sum(len(c[0]) for c in read.values()) >= self._auto_snapshot_min:
            self._save_snapshot(snapshot_dir, store.store_id(), version, read)
        return IndexColumns(version, tuple(self._bank_names), read, radii)

    def _radii(self) -> dict[Algorithm, int]:
        return {a: self._max_distance(a) for a in Algorithm if a.is_perceptual}

    def _open_shared(self, index_dir: Path, build_wait_s: float) -> IndexColumns | None:
        """Map the host's newest index file of this store, building it first (once per host,
        under its lock) when there is none. Leaves ``_shared`` None if neither works: the
        caller then builds a private index, as without an ``index_dir``, from the columns
        returned when a failed build had read them."""
        from .mih import kernelcache

        kernelcache.use_kernel_cache(index_dir / "kernels")
        try:
            host = HostIndex(index_dir, self._store.store_id())
        except ValueError as exc:
            log.warning("no shared index: %s", exc)
            return None
        self._host = host
        radii = self._radii()
        shared = host.latest(max_version=self._store.version(), radii=radii)
        source = None
        if shared is None:
            try:
                with host.build_lock(wait_s=build_wait_s) as held:
                    if not held:
                        log.warning("another process has been building the shared index of %s for %.0f s;"
                                    " building a private one", host.dir, build_wait_s)
                        return None
                    # Someone may have built it while we waited for the lock.
                    shared = host.latest(max_version=self._store.version(), radii=radii)
                    if shared is None:
                        source = self._read_columns()
                        path = host.build(source, measure=False)
                        shared = host.open(path, radii=radii)
                        self.built_shared_index = True
            except (OSError, IndexFileError) as exc:
                log.warning("could not build the shared index in %s (%s); building a private one", host.dir, exc)
                return source
        read_from = self.loaded_from
        self._install(shared)
        if self.built_shared_index:
            self.loaded_from += f", built from {read_from}"
        return None

    def _install(self, shared: SharedIndex) -> None:
        """Make ``shared`` the view (at its version; the caller replays the change log)."""
        self._indexes = dict(shared.indexes)
        self._bank_names = list(shared.banks)
        self._bank_numbers = {name: i for i, name in enumerate(self._bank_names)}
        for name in self._bank_names:
            self._banks.setdefault(name, BankConfig(name))
        self._bank_of = _ByEntry(np.uint16, shared.bank_of)
        self._algo_of = _ByEntry(np.uint8, shared.algo_of)
        self._shared = shared
        self.version = shared.version
        self.loaded_from = f"shared index v{shared.version}"

    def _follow_host_index(self) -> None:
        """Swap in a newer host file if one appeared; start a background compaction when
        this process's delta has grown, or a calibration when the file's layouts are the
        cost model's guess. At most every INDEX_CHECK_INTERVAL_S."""
        host, shared = self._host, self._shared
        now = time.monotonic()
        if host is None or now - self._host_checked_at < defaults.INDEX_CHECK_INTERVAL_S:
            return
        self._host_checked_at = now
        newest = host.newest_name(max_version=2**62)
        if newest is not None and (shared is None or newest != shared.name):
            newer = host.latest(max_version=self._store.version(), radii=self._radii())
            if newer is not None and (shared is None or newer.name != shared.name):
                self._install(newer)
                self.refresh()  # the change log since the new file's version
                log.info("bank index now %s", self.loaded_from)
                return
        if shared is None or (self._compaction is not None and self._compaction.is_alive()):
            return
        threshold = self._compact_after
        if threshold is None:
            threshold = max(defaults.INDEX_COMPACT_MIN_CHANGES, int(defaults.INDEX_COMPACT_FRACTION * self.size))
        lag = self.version - shared.version
        measure = host.calibration is not None and shared.needs_calibration()
        if (lag < threshold and not measure) or now - self._compact_tried_at < defaults.INDEX_COMPACT_RETRY_S:
            return
        self._compact_tried_at = now
        source = self._frozen_columns()
        name = shared.name

        def compact() -> None:
            try:
                path = host.compact(source, measure=measure, current=name)
                if path is not None:
                    log.info("bank index compacted into %s (%d changes since %s)", path.name, lag, name)
            except Exception as exc:  # noqa: BLE001 - logged; the delta keeps serving
                log.warning("bank index compaction failed: %s", exc, exc_info=True)

        self._compaction = threading.Thread(target=compact, name="photosentry-index-compaction", daemon=True)
        self._compaction.start()

    def _frozen_columns(self):  # type: ignore[no-untyped-def]
        """A function giving this view's columns (for a background build): captured now,
        computed later, while the view goes on changing."""
        frozen = {a: index.frozen_columns() for a, index in self._indexes.items()}  # type: ignore[attr-defined]
        bank_of = self._bank_of.frozen()
        version, banks, radii = self.version, tuple(self._bank_names), self._radii()

        def columns() -> IndexColumns:
            out = {}
            for algorithm, live in frozen.items():
                ids, codes = live()
                out[algorithm] = (ids, codes, bank_of(ids))
            return IndexColumns(version, banks, out, radii)

        return columns

    def wait_for_compaction(self, timeout: float | None = None) -> None:
        """Wait for a background compaction this process started (tests, shutdown)."""
        if self._compaction is not None:
            self._compaction.join(timeout)

    @property
    def size(self) -> int:
        return sum(len(index) for index in self._indexes.values()) + len(self._features)

    def counts(self) -> dict[Algorithm, int]:
        return {**{a: len(index) for a, index in self._indexes.items()}, Algorithm.ORB: len(self._features)}

    @property
    def wants_regions(self) -> bool:
        """Whether any bank holds PDQ hashes: regions are hashed with PDQ only, so
        without them proposing regions would be work for nothing."""
        return len(self._indexes[Algorithm.PDQ]) > 0

    @property
    def ban_banks(self) -> frozenset[str]:
        """Every bank that may hold banned photos (all but allow banks)."""
        return frozenset(name for name, config in self._banks.items() if not config.is_allow)

    @property
    def wants_features(self) -> bool:
        """Whether any image ban has keypoints: only then is an upload's worth finding."""
        return len(self._features) > 0

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
            self._follow_host_index()
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
        self._follow_host_index()
        return len(changes)

    def bank(self, name: str) -> BankConfig:
        return self._banks.get(name) or BankConfig(name)

    def match(self, hashes: ImageHashes) -> list[Match]:
        """Every active entry the photo matches (closest variant, frame and region per
        entry), graded strong or weak by :func:`.evidence.grade`."""
        found = self.find(hashes)
        self.find_copies(hashes, found)
        return self.graded(found)

    def find(self, hashes: ImageHashes) -> Found:
        """What the photo's exact hashes and whole frames meet (:meth:`match`'s first half)."""
        found = Found()
        for algorithm, value in hashes.exact().items():
            for hit in self._indexes[algorithm].query([value], 0):
                found.keep(hit.entry_id, algorithm, 0, 0, 0, False)
        for frame in hashes.frames:
            self._find_hashes(frame, found)
        return found

    def find_copies(self, hashes: ImageHashes, found: Found) -> None:
        """Add what the photo's regions and keypoints meet to ``found`` (:meth:`match`'s
        second half: a scan whose whole photo is blocked already skips it)."""
        for frame in hashes.regions:
            self._find_hashes(frame, found)
        if not len(self._features):
            return
        verified = found.verified
        for frame in hashes.keypoint_frames:
            # The whole frame's keypoints (verified region by region too), then each
            # region's own, by the region's name.
            searches = [(frame.keypoints, frame.regions, ""), *((keypoints, (), name) for name, keypoints in frame.cells)]
            for keypoints, boxes, name in searches:
                for hit, region in self._features.search(keypoints, boxes):
                    if hit.entry_id not in verified or hit.inliers > verified[hit.entry_id][0].inliers:
                        verified[hit.entry_id] = (hit, region or name, frame.frame)

    def _find_hashes(self, frame: FrameHashes, found: Found) -> None:
        flat = is_flat(frame.flat)
        for ph in frame.hashes:
            index = self._indexes[ph.algorithm]
            if not len(index):
                continue
            for hit in index.query(ph.variants, self._max_distance(ph.algorithm)):
                bank = self._bank_names[int(self._bank_of[hit.entry_id])]
                if hit.distance <= self.bank(bank).distance(ph.algorithm):
                    found.keep(hit.entry_id, ph.algorithm, hit.distance, frame.frame, hit.query, ph.weak, frame.region,
                               flat)

    def graded(self, found: Found) -> list[Match]:
        """The matches of what was found, graded strong or weak by :func:`.evidence.grade`."""
        best, verified = found.best, found.verified
        info = self._info_of([*dict.fromkeys(e for e, _ in best), *verified])
        # id -> (rank: 0 plain, 1 between two flat pictures, 2 weak; its basis, distance, ...)
        chosen: dict[int, tuple[int, str, int, int, int, Algorithm, str]] = {}
        for (entry_id, flat), (weak, distance, frame, variant, algorithm, region) in best.items():
            _, group, source = info.get(entry_id, ("", "", ""))
            if weak:
                rank, why = 2, LOW_QUALITY
            elif flat and flat_pair(source, self._features.flat_of(group)):
                rank, why = 1, FLAT_PICTURE
            else:
                rank, why = 0, ""
            current = chosen.get(entry_id)
            if current is None or (rank, distance, bool(region)) < (current[0], current[2], bool(current[6])):
                chosen[entry_id] = (rank, why, distance, frame, variant, algorithm, region)
        matches = []
        for entry_id, (rank, why, distance, frame, variant, algorithm, region) in chosen.items():
            bank = self._bank_names[int(self._bank_of[entry_id])]
            label, group, source = info.get(entry_id, ("", "", ""))
            matches.append(Match(entry_id, bank, algorithm, distance, label, frame, variant, rank == 2,
                                 self.bank(bank).is_allow, group, source, region, basis=why))
        for hit, region, frame in verified.values():
            label, group, source = info.get(hit.entry_id, ("", "", ""))
            matches.append(Match(hit.entry_id, hit.bank, Algorithm.ORB, defaults.FEATURE_COUNT - hit.inliers, label,
                                 frame, 0, False,
                                 self.bank(hit.bank).is_allow, group, source, region, inliers=hit.inliers))
        return sorted(grade(matches), key=lambda m: (m.weak, m.distance / m.algorithm.bits, m.entry_id))

    def index(self, algorithm: Algorithm) -> HashIndex:
        return self._indexes[algorithm]

    # -- internals ----------------------------------------------------------------

    def _save_snapshot(
        self, directory: Path, store_id: str, version: int,
        read: dict[Algorithm, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        # What we just read, at the version read before it: no second pass over the
        # store. Best effort: a full disk or a read-only data dir must not stop a scan.
        try:
            self.wrote_snapshot = save_snapshot(
                directory, store_id=store_id, version=version, banks=list(self._bank_names), columns=read
            )
            log.info("bank snapshot v%d written to %s", version, self.wrote_snapshot.path)
        except Exception as exc:  # logged, never raised
            log.warning("could not write a bank snapshot to %s: %s", directory, exc)

    def _info_of(self, entry_ids: list[int]) -> dict[int, tuple[str, str, str]]:
        """(label, group, source) of matched entries. Read only for matched entries (few),
        and cached: keeping them for 10 million entries would cost more than the index."""
        missing = [i for i in entry_ids if i not in self._info]
        if missing:
            try:
                for entry in self._store.get_many(missing):
                    if len(self._info) > 10_000:
                        self._info.clear()
                    self._info[entry.id] = _info(entry)
            except BankNotFound:
                pass
        return {i: self._info[i] for i in entry_ids if i in self._info}

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
        self._bank_of.assign(ids, banks)
        self._algo_of.assign(ids, np.full(len(ids), _ALGORITHMS.index(algorithm) + 1, dtype=np.uint8))
        index = self._indexes[algorithm]
        index.load(ids, codes)  # type: ignore[attr-defined]

    def _load_features(self) -> None:
        for ids, values, banks, groups in self._store.active_features():
            for entry_id, value, bank, group in zip(ids, values, banks, groups, strict=True):
                self._features.add(int(entry_id), value, bank, group)

    def _add(self, entry: BankEntry) -> None:
        self._info[entry.id] = _info(entry)
        if entry.algorithm.is_features:
            self._features.add(entry.id, entry.value, entry.bank, entry.group)
            return
        self._indexes[entry.algorithm].add(entry.id, entry.value)
        self._bank_of[entry.id] = self._bank_number(entry.bank)
        self._algo_of[entry.id] = _ALGORITHMS.index(entry.algorithm) + 1

    def _remove(self, entry_id: int) -> None:
        self._features.remove(entry_id)
        if self._algo_of[entry_id]:
            self._indexes[_ALGORITHMS[int(self._algo_of[entry_id]) - 1]].remove(entry_id)
            self._algo_of[entry_id] = 0

    def _load_banks(self) -> None:
        self._banks.update({b.name: b for b in self._store.banks()})
