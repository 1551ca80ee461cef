"""Local features with geometric verification: the copies no whole-image hash survives.

A crop of a fifth, a tilt of seven degrees, a sticker, the banned photo as one cell of
a collage or a small part of a screenshot: each moves PDQ far past its distance, but
most of the photo's corners are still there, in the same arrangement. So a ban by
image also stores the ORB keypoints of the banned photo (:func:`banned_features`: the
:data:`~photosentry.defaults.FEATURE_COUNT` strongest, each a 256-bit descriptor and a
position; a few kilobytes, never pixels), as an ``orb`` entry of its group, and its
mirror image's as another (ORB descriptors do not survive a mirror). A scan extracts
the upload's keypoints (:func:`query_features`), pairs each with its nearest
banned descriptors (Lowe's ratio test), and for the banned images with enough pairs
fits a similarity transform (rotation, scale, shift) with RANSAC: the number of pairs
that agree with it, the *inliers*, is the evidence (:class:`FeatureIndex`).

Unrelated photos share a handful of chance pairs that no single transform explains;
the thresholds in :mod:`.evidence` and their measurements are in docs/matching.md.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import dataclasses
import functools
from dataclasses import dataclass, field

import cv2
import faiss
import numpy as np

from .. import defaults
from .flatness import FlatMap
from .shrink import shrink

log = logging.getLogger(__name__)

#: Bytes per stored keypoint: a 32-byte ORB descriptor, then x and y (uint16, big-endian,
#: in pixels of the banned photo reduced to ``FEATURE_BAN_SIDE``).
_POINT_BYTES = 36
#: x and y of an unused slot (a photo with fewer keypoints than the fixed width).
_EMPTY = 0xFFFF
#: The descriptor of the slot that holds the picture's own (width, height) instead of a
#: keypoint (entries from before it have none; they skip the check that needs it). Its
#: second half is the marker again (entries from before the flat share was kept) or
#: ``_FLAT_TAG`` and the picture's flat share in 255ths (:mod:`.flatness`).
_SIZE_MARK = np.frombuffer(b"photosentry:size" * 2, dtype=np.uint8)
_FLAT_TAG = b"flat"
#: Hex digits of an encoded feature set: what the ``orb`` algorithm's registry entry says.
FEATURE_BITS = defaults.FEATURE_COUNT * _POINT_BYTES * 8


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one picture: positions (n, 2) float32 and ORB descriptors (n, 32) uint8."""

    points: np.ndarray
    descriptors: np.ndarray
    #: Pixels of the picture the keypoints were found on per pixel of the frame given
    #: (an upload's frame is reduced to ``FEATURE_QUERY_SIDE`` first).
    scale: float = 1.0
    #: (width, height) of the picture the keypoints were found on, in their pixels;
    #: (0, 0): not known (an entry stored before the size was).
    size: tuple[int, int] = (0, 0)
    #: The share of the banned picture that is flat colour (:mod:`.flatness`), kept with
    #: its size; None: not known (an entry stored before it was, or an upload's).
    flat: float | None = None
    #: Found on the banned picture's mirror image (kept with its size).
    mirrored: bool = False
    #: A banned picture's: the keypoints of its mirror image, stored as a second entry
    #: (ORB descriptors do not survive a mirror; an upload is not searched twice).
    mirror: "LocalFeatures | None" = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.points)

    @functools.cached_property
    def extent(self) -> np.ndarray:
        """Width and height (pixels, at least 1) of the box the keypoints lie in."""
        return np.ptp(self.points, axis=0) + 1 if len(self) else np.ones(2, np.float32)

    def encode(self) -> str:
        """The fixed-width hex form a bank entry stores (unused slots padded); the last
        slot holds the picture's size where it is known."""
        out = np.zeros((defaults.FEATURE_COUNT, _POINT_BYTES), dtype=np.uint8)
        out[:, 32:] = 0xFF
        room = defaults.FEATURE_COUNT - (1 if self.size[0] else 0)
        n = min(len(self), room)
        out[:n, :32] = self.descriptors[:n]
        xy = np.clip(np.rint(self.points[:n]), 0, _EMPTY - 1).astype(">u2")
        out[:n, 32:] = xy.view(np.uint8).reshape(n, 4)
        if self.size[0]:
            out[-1, :32] = _SIZE_MARK
            if self.flat is not None:
                out[-1, 16:32] = 0
                out[-1, 16:20] = np.frombuffer(_FLAT_TAG, dtype=np.uint8)
                out[-1, 20] = round(min(1.0, max(0.0, self.flat)) * 255)
                out[-1, 21] = int(self.mirrored)
            out[-1, 32:] = np.array(self.size, dtype=">u2").view(np.uint8)
        return out.tobytes().hex()

    @classmethod
    def decode(cls, value: str) -> "LocalFeatures":
        raw = np.frombuffer(bytes.fromhex(value), dtype=np.uint8).reshape(-1, _POINT_BYTES)
        xy = raw[:, 32:].copy().view(">u2").reshape(-1, 2)
        marked = (raw[:, :16] == _SIZE_MARK[:16]).all(axis=1)
        used = ~(xy == _EMPTY).all(axis=1) & ~marked
        size, flat, mirrored = (0, 0), None, False
        if marked.any():
            mark = raw[marked][0]
            size = (int(xy[marked][0, 0]), int(xy[marked][0, 1]))
            if bytes(mark[16:20]) == _FLAT_TAG:
                flat, mirrored = int(mark[20]) / 255, bool(mark[21])
        return cls(xy[used].astype(np.float32), np.ascontiguousarray(raw[used, :32]), size=size, flat=flat,
                   mirrored=mirrored)


#: ORB's descriptor patch (31 pixels) and its border: no keypoint fits in less.
_ORB_MIN_SIDE = 32


def _grey(rgb: np.ndarray, side: int, grey: np.ndarray | None = None, *, fast: bool = False,
          enlarge: bool = False) -> tuple[np.ndarray, float]:
    """Luminance at ``side`` pixels: exactly area-averaged for a ban (once per ban), by
    :func:`.shrink.shrink` for a scan (every scan, four times faster); with ``enlarge``,
    a smaller picture is brought up to ``side`` too."""
    h, w = rgb.shape[:2]
    if grey is None:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if enlarge and scale > 1 and min(h, w) >= _ORB_MIN_SIDE:
        return cv2.resize(np.ascontiguousarray(grey), size, interpolation=cv2.INTER_LINEAR), scale
    if fast:
        return shrink(grey, side)
    if scale < 1:
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA), scale
    return np.ascontiguousarray(grey), 1.0


def _orb(grey: np.ndarray, n: int, scale: float) -> LocalFeatures:
    size = (grey.shape[1], grey.shape[0])
    none = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), scale, size)
    if min(grey.shape[:2]) < _ORB_MIN_SIDE:
        # ORB's pyramid fails on a picture a few pixels across (a 7 x 3000 banner, a
        # 1-pixel GIF); it would find no keypoint there anyway.
        return none
    detector = cv2.ORB_create(nfeatures=n, fastThreshold=defaults.FEATURE_FAST_THRESHOLD)
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return none
    order = np.argsort([-k.response for k in keypoints], kind="stable")
    points = np.array([keypoints[i].pt for i in order], dtype=np.float32)
    return LocalFeatures(points, np.ascontiguousarray(descriptors[order]), scale, size)


def _keypoints(rgb: np.ndarray, side: int, n: int, grey: np.ndarray | None = None, *,
               fast: bool = False, enlarge: bool = False) -> LocalFeatures:
    small, scale = _grey(rgb, side, grey, fast=fast, enlarge=enlarge)
    return _orb(small, n, scale)


def banned_features(rgb: np.ndarray) -> LocalFeatures | None:
    """The strongest keypoints of a banned photo (None: too few to verify a copy by),
    with those of its mirror image (``mirror``): a copy mirrored and then cropped meets
    no other part of a ban (measured: 13 of 80 such copies blocked without them)."""
    flat = FlatMap(rgb).share()
    keep = defaults.FEATURE_COUNT - 1  # the last slot of the entry holds the size and flat share

    def strongest(picture: np.ndarray, mirrored: bool) -> LocalFeatures | None:
        found = _keypoints(picture, defaults.FEATURE_BAN_SIDE, 4 * defaults.FEATURE_COUNT)
        if len(found) < defaults.FEATURE_MIN_INLIERS:
            return None
        return LocalFeatures(found.points[:keep], found.descriptors[:keep], size=found.size, flat=flat,
                             mirrored=mirrored)

    own = strongest(rgb, False)
    if own is None:
        return None
    return dataclasses.replace(own, mirror=strongest(np.ascontiguousarray(rgb[:, ::-1]), True))


def query_features(rgb: np.ndarray, grey: np.ndarray | None = None, *, enlarge: bool = False) -> LocalFeatures:
    """The keypoints of an upload, to be paired with every banned photo's. ``grey``: its
    luminance (OpenCV's, uint8) where the caller has it already; ``enlarge``: bring a
    picture smaller than ``FEATURE_QUERY_SIDE`` up to it (a collage's cell)."""
    return _keypoints(rgb, defaults.FEATURE_QUERY_SIDE, defaults.FEATURE_QUERY_COUNT, grey, fast=True,
                      enlarge=enlarge)


@contextmanager
def _one_thread() -> Iterator[None]:
    """FAISS on one thread: a scan is one thread, its process's siblings have the other cores."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@dataclass(frozen=True)
class FeatureHit:
    """A banned photo whose keypoints a transform maps onto the upload's."""

    entry_id: int
    bank: str
    #: Pairs consistent with the fitted transform.
    inliers: int
    #: Pairs that passed the ratio test before the fit.
    pairs: int


class FeatureIndex:
    """Every active ``orb`` entry's keypoints, in one nearest-neighbour index.

    The search is FAISS's: brute force over every banned descriptor for a few image
    bans, then an inverted file (``FEATURE_IVF_*``: the descriptors clustered, and only
    the clusters nearest each query descriptor searched), whose cost grows with the
    square root of the bank instead of the bank (docs/matching.md measures both).

    Bans change at a moderator's pace, but each change must not cost a scan more than a
    millisecond: clustering 4,000 image bans' keypoints takes a minute. So a ban's
    keypoints are added to the index as it is (each to its nearest cluster) and a
    removed ban's are taken out of it; the clusters are made again only when the bank
    has grown ``FEATURE_IVF_REGROW`` times past what they were made for, in a thread of
    their own once that takes more than a moment (``FEATURE_IVF_SYNC_MAX``), while the
    old index serves and records the changes to replay on the new one; a large bank at a
    worker's start is searched by brute force (exact, slower) until its first clusters
    are made that way. Every keypoint has a row for life: its id in the index and where
    its position, owner and photo are kept.

    An image ban holds two sets, its picture's and its mirror image's, and a picture
    banned again (or in two banks) holds them twice. Keypoints of one photo must not
    outvote each other in the ratio test (a symmetric picture's mirror image is itself:
    every descriptor would have a twin and no pair would survive), so the second
    nearest descriptor that counts is another photo's or the same set's own; and the
    pairs of the same set of one photo (the picture's, or its mirror image's) are
    verified together, whichever entry holds them.
    """

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        # Descriptors live in the FAISS index only (they are read back out of it to make
        # new clusters), except those added before there is one: a third less memory.
        self._unindexed: dict[int, np.ndarray] = {}
        self._owner = np.zeros(0, dtype=np.int64)  # row -> entry id (-1: removed)
        self._photo = np.zeros(0, dtype=np.int64)  # row -> the banned photo (its group's number)
        self._points = np.zeros((0, 2), dtype=np.float32)  # row -> position
        self._photos: dict[str, int] = {}  # group -> its number
        self._members: dict[int, set[int]] = {}  # photo -> its active entries
        self._used = 0  # rows handed out
        self._active = 0  # rows of active entries
        self._index: faiss.IndexBinary | None = None
        self._clustered_for = 0  # keypoints the inverted file's clusters were made from (0: brute force)
        self._lock = threading.RLock()
        #: Changes made while new clusters are being made, to replay on them.
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._reclustering: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def keypoints(self) -> int:
        """Keypoints in the index now."""
        return 0 if self._index is None else int(self._index.ntotal)

    def add(self, entry_id: int, value: str, bank: str, group: str = "") -> None:
        """Index an ``orb`` entry; ``group``: the banned image it was found on (its
        SHA-256), so that entries of one image are known as one photo."""
        features = LocalFeatures.decode(value)
        if not len(features):
            return
        with self._lock:
            self.remove(entry_id)
            # An entry without a group is a photo of its own.
            photo = self._photos.setdefault(group, len(self._photos)) if group else -1 - entry_id
            rows = np.arange(self._used, self._used + len(features), dtype=np.int64)
            self._grow(self._used + len(features))
            self._owner[rows] = entry_id
            self._photo[rows] = photo
            self._members.setdefault(photo, set()).add(entry_id)
            self._points[rows] = features.points
            self._entries[entry_id] = _Entry(bank, self._used, self._used + len(features), photo, features.mirrored,
                                             features.size, features.flat, features.extent)
            self._used += len(features)
            self._active += len(features)
            if self._index is not None:
                self._index.add_with_ids(np.ascontiguousarray(features.descriptors), rows)
            else:
                self._unindexed[entry_id] = features.descriptors
            if self._pending is not None:
                self._pending.append((rows, features.descriptors))

    def remove(self, entry_id: int) -> None:
        with self._lock:
            entry = self._entries.pop(entry_id, None)
            if entry is None:
                return
            self._unindexed.pop(entry_id, None)
            self._members[entry.photo].discard(entry_id)
            if not self._members[entry.photo]:
                del self._members[entry.photo]
            rows = entry.rows
            self._owner[rows] = -1
            self._active -= len(rows)
            if self._index is not None:
                self._index.remove_ids(_selector(rows))
            if self._pending is not None:
                self._pending.append((rows, None))

    def flat_of(self, group: str) -> float | None:
        """The flat share of a banned image's picture (:mod:`.flatness`), kept in its
        ``orb`` entries: from whichever active entry knows it (one banned before the
        share was kept does not); None if none does."""
        with self._lock:
            photo = self._photos.get(group) if group else None
            return next((self._entries[e].flat for e in self._members.get(photo, ())
                         if self._entries[e].flat is not None), None)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for clusters being made in the background (tests, benchmarks)."""
        thread = self._reclustering
        if thread is not None:
            thread.join(timeout)

    def _grow(self, rows: int) -> None:
        if rows > len(self._owner):
            size = max(rows, 2 * len(self._owner), 4096)
            owner = np.full(size, -1, dtype=np.int64)
            owner[: self._used] = self._owner[: self._used]
            photo = np.zeros(size, dtype=np.int64)
            photo[: self._used] = self._photo[: self._used]
            points = np.zeros((size, 2), dtype=np.float32)
            points[: self._used] = self._points[: self._used]
            self._owner, self._photo, self._points = owner, photo, points

    def _ready(self) -> faiss.IndexBinary:
        """The index to search, (re)clustered first where the bank has outgrown it."""
        n = self._active
        if self._index is None and n > defaults.FEATURE_IVF_SYNC_MAX:
            # A large bank at start: brute force at once (adding is a copy), exact but
            # slower, until the clusters made in the background replace it.
            self._use(*self._build(self._snapshot(), clusters=False))
        # A thread that never started (a job timeout's exception between the two lines
        # below) or has ended is no clustering under way.
        idle = self._reclustering is None or not self._reclustering.is_alive()
        if self._index is None or (idle and _needs_clusters(n, self._clustered_for)):
            if self._index is None or n <= defaults.FEATURE_IVF_SYNC_MAX:
                self._use(*self._build(self._snapshot()))
            else:
                self._pending = []
                thread = threading.Thread(target=self._recluster, args=(self._snapshot(),),
                                          name="photosentry-keypoint-clusters", daemon=True)
                thread.start()
                self._reclustering = thread
        return self._index

    def _use(self, index: faiss.IndexBinary, clustered_for: int) -> None:
        self._index, self._clustered_for = index, clustered_for
        self._unindexed.clear()  # the index holds them now
        _return_freed_memory()

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, descriptors) of every active keypoint: read out of the index."""
        if self._index is not None:
            return _contents(self._index)
        entries = list(self._unindexed)
        if not entries:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 32), dtype=np.uint8)
        return (np.concatenate([self._entries[e].rows for e in entries]),
                np.ascontiguousarray(np.concatenate([self._unindexed[e] for e in entries])))

    @staticmethod
    def _build(snapshot: tuple[np.ndarray, np.ndarray], *, clusters: bool = True) -> tuple[faiss.IndexBinary, int]:
        rows, descriptors = snapshot
        index = _index(descriptors, clusters=clusters)
        with _one_thread():
            index.add_with_ids(descriptors, rows)
        return index, (len(rows) if isinstance(index, faiss.IndexBinaryIVF) else 0)

    def _recluster(self, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        try:
            index, clustered_for = self._build(snapshot)
        except Exception:  # noqa: BLE001 - the old index keeps serving; the next search tries again
            log.exception("could not cluster the banned keypoints again")
            with self._lock:
                self._pending, self._reclustering = None, None
            return
        with self._lock:
            for rows, descriptors in self._pending or ():
                if descriptors is None:
                    index.remove_ids(_selector(rows))
                else:
                    index.add_with_ids(np.ascontiguousarray(descriptors), rows)
            self._use(index, clustered_for)
            self._pending, self._reclustering = None, None

    def search(self, query: LocalFeatures,
               regions: Sequence[tuple[str, tuple[int, int, int, int]]] = ()) -> list[tuple[FeatureHit, str]]:
        """The banned photos the upload's keypoints verify, with at least
        ``FEATURE_MIN_INLIERS`` inliers, most first, each with the region (of
        ``regions``: name and frame box) whose pairs verified it best ("" for the whole)."""
        if not self._entries or len(query) < defaults.FEATURE_MIN_INLIERS:
            return []
        pairs: dict[tuple[int, bool], list[tuple[int, int]]] = {}  # (photo, mirrored) -> pairs
        with self._lock:
            index = self._ready()
            if index.ntotal < 2:
                return []
            with _one_thread():
                distances, nearest = index.search(np.ascontiguousarray(query.descriptors), 4)
            # Lowe's ratio test: a descriptor that fits many places says nothing. The
            # second nearest that counts is another photo's, or one of the same set's
            # (a repeated texture); not a twin in the same photo's other set (below).
            rows = np.maximum(nearest, 0)
            owner, photo = self._owner[rows], self._photo[rows]
            counts = ((owner[:, 1:] == owner[:, :1]) | (photo[:, 1:] != photo[:, :1])) & (nearest[:, 1:] >= 0)
            second = np.where(counts.any(axis=1),
                              distances[np.arange(len(nearest)), 1 + counts.argmax(axis=1)], np.inf)
            keep = (distances[:, 0] <= defaults.FEATURE_MAX_DISTANCE) & \
                (distances[:, 0] < defaults.FEATURE_RATIO * second) & (nearest[:, 0] >= 0)
            for q in np.flatnonzero(keep):
                train = int(nearest[q, 0])
                entry = self._entries.get(int(self._owner[train]))
                if entry is not None:
                    pairs.setdefault(entry.set_key, []).append((int(q), train))
            # Rows live for ever, so positions read now stay right after the lock.
            points = self._points
            found = {}
            for key, found_pairs in pairs.items():
                if len(found_pairs) < defaults.FEATURE_MIN_INLIERS:
                    continue
                # Every bank that holds this set of the photo answers for it (the
                # photo banned in a bank that blocks and one that only holds for
                # review: the policy must see both), by its first entry; the pairs
                # themselves name whichever entry FAISS found nearest.
                members = sorted(e for e in self._members.get(key[0], ()) if self._entries[e].set_key == key)
                by_bank = {}
                for e in members:
                    by_bank.setdefault(self._entries[e].bank, e)
                # Any entry of the set that knows the picture's size (older ones do not).
                size = next((self._entries[e].size for e in members if self._entries[e].size[0]), (0, 0))
                found[key] = (by_bank, size, self._entries[members[0]].extent)
        boxes = [(name, np.array(box, dtype=np.float32) * query.scale) for name, box in regions]
        whole = (0.0, 0.0, float(query.size[0]), float(query.size[1])) if query.size[0] else None
        hits = []
        for key, (by_bank, banned_size, extent) in found.items():
            found_pairs = pairs[key]
            best, where = _verified(found_pairs, query.points, points, extent, banned_size, whole), ""
            for name, (left, top, right, bottom) in boxes:
                inside = [(q, b) for q, b in found_pairs
                          if left <= query.points[q, 0] < right and top <= query.points[q, 1] < bottom]
                if len(inside) >= defaults.FEATURE_MIN_INLIERS and len(inside) < len(found_pairs):
                    # The banned photo must then lie in the region (a cell, a
                    # screenshot's photo), not merely overlap it: an app's header in
                    # one cell of a screenshot is not the banned screenshot.
                    inliers = _verified(inside, query.points, points, extent, banned_size, (left, top, right, bottom))
                    if inliers > best:
                        best, where = inliers, name
            if best >= defaults.FEATURE_MIN_INLIERS:
                hits.extend((FeatureHit(entry_id, bank, best, len(found_pairs)), where)
                            for bank, entry_id in by_bank.items())
        return sorted(hits, key=lambda h: -h[0].inliers)


@dataclass(frozen=True)
class _Entry:
    """What the index keeps of an ``orb`` entry (its descriptors are in FAISS, its
    keypoints' positions, owner and photo in the rows' tables)."""

    bank: str
    #: Its keypoints' rows: ``start`` to ``stop`` (one run, handed out at add).
    start: int
    stop: int
    #: The banned photo (its group's number) and whether this is its mirror image's set.
    photo: int
    mirrored: bool
    size: tuple[int, int]
    flat: float | None
    #: Width and height of the box the set's keypoints lie in (:attr:`LocalFeatures.extent`).
    extent: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop, dtype=np.int64)

    @property
    def set_key(self) -> tuple[int, bool]:
        """The set it holds: its photo's, or its photo's mirror image's (entries of one
        image banned again, or in two banks, hold the same sets)."""
        return self.photo, self.mirrored


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``), once an
    index is made: the entries decoded on the way, the snapshot and the brute-force
    index it replaces are freed but stay resident otherwise (at 4,000 image bans 78 KB a
    ban resident for 44 KB live, measured by scripts/bench_keypoints.py). Elsewhere, or
    where it fails, nothing happens."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _selector(rows: np.ndarray) -> faiss.IDSelector:
    """An entry's rows (one run of ids) for ``remove_ids``: as a range, which FAISS tests
    each id it walks against in constant time (an id array is searched one by one: 255
    ids against every keypoint of the bank, 0.1-0.2 s a ban at 2,000 image bans)."""
    return faiss.IDSelectorRange(int(rows[0]), int(rows[-1]) + 1)


def _contents(index: faiss.IndexBinary) -> tuple[np.ndarray, np.ndarray]:
    """The ids and descriptors an index holds (brute force, or an inverted file's lists)."""
    ids: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    if isinstance(index, faiss.IndexBinaryIVF):
        lists = index.invlists
        for number in range(index.nlist):
            n = lists.list_size(number)
            if n:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(number), n).copy())
                codes.append(faiss.rev_swig_ptr(lists.get_codes(number), n * index.code_size).copy()
                             .reshape(n, index.code_size))
    else:
        flat = faiss.downcast_IndexBinary(index.index)
        ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
        codes.append(faiss.vector_to_array(flat.xb).reshape(-1, flat.code_size))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 32), dtype=np.uint8)
    return np.concatenate(ids), np.ascontiguousarray(np.concatenate(codes))


def _needs_clusters(keypoints: int, clustered_for: int) -> bool:
    """Whether an index of ``keypoints`` wants clusters made (again): brute force has
    grown past ``FEATURE_IVF_MIN``, or the clusters were made for far fewer."""
    if keypoints < defaults.FEATURE_IVF_MIN:
        return False
    return clustered_for == 0 or keypoints > defaults.FEATURE_IVF_REGROW * clustered_for


def _index(descriptors: np.ndarray, *, clusters: bool = True) -> faiss.IndexBinary:
    """An empty FAISS index (ids given at add) for ``descriptors`` ((n, 32) uint8): brute
    force while few (or without ``clusters``), else an inverted file whose clusters are
    made from (a sample of) them."""
    n = len(descriptors)
    if n < defaults.FEATURE_IVF_MIN or not clusters:
        return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(256))
    lists = max(16, int(defaults.FEATURE_IVF_LISTS_PER_ROOT * np.sqrt(n)))
    sample = descriptors
    per_list = defaults.FEATURE_IVF_TRAIN_PER_LIST
    if n > per_list * lists:  # k-means needs a few dozen points a cluster, not all of them
        sample = descriptors[np.random.default_rng(0).choice(n, per_list * lists, replace=False)]
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(256), 256, lists)
    ivf.cp.niter = defaults.FEATURE_IVF_TRAIN_ROUNDS
    ivf.cp.max_points_per_centroid = per_list
    ivf.cp.min_points_per_centroid = per_list // 2  # FAISS warns below its default 39
    ivf.cp.verbose = False
    with _one_thread():
        ivf.train(sample)
    ivf.nprobe = defaults.FEATURE_IVF_PROBES
    return ivf


def _verified(pairs: list[tuple[int, int]], query_points: np.ndarray, banned_points: np.ndarray,
              extent: np.ndarray, banned_size: tuple[int, int] = (0, 0),
              within: tuple[float, float, float, float] | None = None) -> int:
    """Pairs consistent with one similarity transform from the banned photo to the
    upload, and only if that transform is plausible for a copy: among other things, the
    box ``within`` (the upload, or the region the pairs were taken from, in keypoint
    pixels) shows most of the banned photo and is filled by a fair part of it
    (:func:`_placed`; skipped where the banned photo's size is not known)."""
    src = banned_points[[b for _, b in pairs]]
    dst = query_points[[q for q, _ in pairs]]
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=defaults.FEATURE_RANSAC_PIXELS, maxIters=500,
        confidence=0.99, refineIters=5)
    if transform is None or mask is None:
        return 0
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if not defaults.FEATURE_MIN_SCALE <= scale <= defaults.FEATURE_MAX_SCALE:
        return 0
    kept = mask.ravel().astype(bool)
    # Inliers bunched in one spot of the banned photo (a logo, a repeated texture) do
    # not show the photo: they must spread over a fair part of it.
    spread = src[kept]
    if len(spread) < 3:
        return 0
    if (np.ptp(spread, axis=0) / extent).prod() < defaults.FEATURE_MIN_SPREAD:
        return 0
    if banned_size[0] and within is not None:
        shown, fills = _placed(transform, banned_size, within)
        if shown < defaults.FEATURE_MIN_SHOWN or fills < defaults.FEATURE_MIN_FILL:
            return 0
    return int(kept.sum())


def _placed(transform: np.ndarray, banned_size: tuple[int, int],
            within: tuple[float, float, float, float]) -> tuple[float, float]:
    """Where the fitted transform puts the banned photo, against the box ``within``: the
    share of the banned photo inside it, and the share of the box it fills.

    A copy shows most of the banned photo (a crop of a fifth off every edge still shows
    36%); an upload that is a part of it, one photo of a banned 2 x 2 collage, shows a
    quarter: matching that would block the innocent photos a banned collage or meme was
    made of. And a copy fills a fair part of where it was found (a collage cell, a
    screenshot's photo: most of it; a whole upload: a quarter-screen photo's share);
    the banned photo shrunk to a stamp in a corner of the box is glyphs of one font
    meeting glyphs of the same font (a chat app's UI), not a copy."""
    w, h = banned_size
    corners = np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float32)
    placed = cv2.transform(corners, transform)[0].astype(np.float32)
    area = abs(float(cv2.contourArea(placed)))
    if area <= 0:
        return 0.0, 0.0
    x0, y0, x1, y1 = within
    frame = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    inside, _ = cv2.intersectConvexConvex(placed, frame)
    box = max(1e-6, (x1 - x0) * (y1 - y0))
    return float(inside) / area, float(inside) / box
