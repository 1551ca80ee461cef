"""Local features with geometric verification: the copies no whole-image hash survives.

A crop of a fifth, a tilt of seven degrees, a sticker, the banned photo as one cell of
a collage or a small part of a screenshot: each moves PDQ far past its distance, but
most of the photo's corners are still there, in the same arrangement. So a ban by
image also stores the ORB keypoints of the banned photo (:func:`banned_features`: the
:data:`~photosentry.defaults.FEATURE_COUNT` strongest, each a 256-bit descriptor and a
position; a few kilobytes, never pixels), as one ``orb`` entry of its group. A scan
extracts the upload's keypoints (:func:`query_features`), pairs each with its nearest
banned descriptors (Lowe's ratio test), and for the banned images with enough pairs
fits a similarity transform (rotation, scale, shift) with RANSAC: the number of pairs
that agree with it, the *inliers*, is the evidence (:class:`FeatureIndex`).

Unrelated photos share a handful of chance pairs that no single transform explains;
the thresholds in :mod:`.evidence` and their measurements are in docs/matching.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import faiss
import numpy as np

from .. import defaults

#: Bytes per stored keypoint: a 32-byte ORB descriptor, then x and y (uint16, big-endian,
#: in pixels of the banned photo reduced to ``FEATURE_BAN_SIDE``).
_POINT_BYTES = 36
#: x and y of an unused slot (a photo with fewer keypoints than the fixed width).
_EMPTY = 0xFFFF
#: The descriptor of the slot that holds the picture's own (width, height) instead of a
#: keypoint (entries from before it have none; they skip the check that needs it).
_SIZE_MARK = np.frombuffer(b"photosentry:size" * 2, dtype=np.uint8)
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

    def __len__(self) -> int:
        return len(self.points)

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
            out[-1, 32:] = np.array(self.size, dtype=">u2").view(np.uint8)
        return out.tobytes().hex()

    @classmethod
    def decode(cls, value: str) -> "LocalFeatures":
        raw = np.frombuffer(bytes.fromhex(value), dtype=np.uint8).reshape(-1, _POINT_BYTES)
        xy = raw[:, 32:].copy().view(">u2").reshape(-1, 2)
        marked = (raw[:, :32] == _SIZE_MARK).all(axis=1)
        used = ~(xy == _EMPTY).all(axis=1) & ~marked
        size = (int(xy[marked][0, 0]), int(xy[marked][0, 1])) if marked.any() else (0, 0)
        return cls(xy[used].astype(np.float32), np.ascontiguousarray(raw[used, :32]), size=size)


#: ORB's descriptor patch (31 pixels) and its border: no keypoint fits in less.
_ORB_MIN_SIDE = 32


def _grey(rgb: np.ndarray, side: int, grey: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    if grey is None:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    scale = side / max(h, w)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return grey, scale
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


def _keypoints(rgb: np.ndarray, side: int, n: int, grey: np.ndarray | None = None) -> LocalFeatures:
    small, scale = _grey(rgb, side, grey)
    return _orb(small, n, scale)


def banned_features(rgb: np.ndarray) -> LocalFeatures | None:
    """The strongest keypoints of a banned photo (None: too few to verify a copy by)."""
    found = _keypoints(rgb, defaults.FEATURE_BAN_SIDE, 4 * defaults.FEATURE_COUNT)
    if len(found) < defaults.FEATURE_MIN_INLIERS:
        return None
    keep = defaults.FEATURE_COUNT - 1  # the last slot of the entry holds the size
    return LocalFeatures(found.points[:keep], found.descriptors[:keep], size=found.size)


def query_features(rgb: np.ndarray, grey: np.ndarray | None = None) -> LocalFeatures:
    """The keypoints of an upload, to be paired with every banned photo's. ``grey``: its
    luminance (OpenCV's, uint8) where the caller has it already."""
    return _keypoints(rgb, defaults.FEATURE_QUERY_SIDE, defaults.FEATURE_QUERY_COUNT, grey)


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
    """Every active ``orb`` entry's keypoints, stacked for one nearest-neighbour search.

    The search is FAISS's: brute force over every banned descriptor for a few image
    bans, then an inverted file (``FEATURE_IVF_*``: the descriptors clustered, and only
    the clusters nearest each query descriptor searched), whose cost grows with the
    square root of the bank instead of the bank (docs/matching.md measures both). It is
    rebuilt, in a few hundred milliseconds per thousand image bans, at the first search
    after bans change, which happen at a moderator's pace.
    """

    def __init__(self) -> None:
        self._sets: dict[int, LocalFeatures] = {}
        self._banks: dict[int, str] = {}
        self._stack: tuple[np.ndarray, np.ndarray, faiss.IndexBinary] | None = None

    def __len__(self) -> int:
        return len(self._sets)

    def add(self, entry_id: int, value: str, bank: str) -> None:
        features = LocalFeatures.decode(value)
        if len(features):
            self._sets[entry_id] = features
            self._banks[entry_id] = bank
            self._stack = None

    def remove(self, entry_id: int) -> None:
        if self._sets.pop(entry_id, None) is not None:
            del self._banks[entry_id]
            self._stack = None

    def _stacked(self) -> tuple[np.ndarray, np.ndarray, faiss.IndexBinary]:
        if self._stack is None:
            ids = list(self._sets)
            owner = np.concatenate([np.full(len(self._sets[i]), i, dtype=np.int64) for i in ids])
            points = np.concatenate([self._sets[i].points for i in ids])
            descriptors = np.ascontiguousarray(np.concatenate([self._sets[i].descriptors for i in ids]))
            self._stack = (owner, points, _index(descriptors))
        return self._stack

    def search(self, query: LocalFeatures,
               regions: Sequence[tuple[str, tuple[int, int, int, int]]] = ()) -> list[tuple[FeatureHit, str]]:
        """The banned photos the upload's keypoints verify, with at least
        ``FEATURE_MIN_INLIERS`` inliers, most first, each with the region (of
        ``regions``: name and frame box) whose pairs verified it best ("" for the whole)."""
        if not self._sets or len(query) < defaults.FEATURE_MIN_INLIERS:
            return []
        owner, points, index = self._stacked()
        pairs: dict[int, list[tuple[int, int]]] = {}
        if index.ntotal < 2:
            return []
        with _one_thread():
            distances, nearest = index.search(np.ascontiguousarray(query.descriptors), 2)
        # Lowe's ratio test, against the second nearest of *another* banned photo's or the
        # same one's: a descriptor that fits many places says nothing.
        keep = (distances[:, 0] <= defaults.FEATURE_MAX_DISTANCE) & \
            (distances[:, 0] < defaults.FEATURE_RATIO * distances[:, 1]) & (nearest[:, 0] >= 0)
        for q in np.flatnonzero(keep):
            train = int(nearest[q, 0])
            pairs.setdefault(int(owner[train]), []).append((int(q), train))
        boxes = [(name, np.array(box, dtype=np.float32) * query.scale) for name, box in regions]
        whole = (0.0, 0.0, float(query.size[0]), float(query.size[1])) if query.size[0] else None
        hits = []
        for entry_id, found_pairs in pairs.items():
            if len(found_pairs) < defaults.FEATURE_MIN_INLIERS:
                continue
            banned_size = self._sets[entry_id].size
            best, where = _verified(found_pairs, query.points, points, banned_size, whole), ""
            for name, (left, top, right, bottom) in boxes:
                inside = [(q, b) for q, b in found_pairs
                          if left <= query.points[q, 0] < right and top <= query.points[q, 1] < bottom]
                if len(inside) >= defaults.FEATURE_MIN_INLIERS and len(inside) < len(found_pairs):
                    # The banned photo must then lie in the region (a cell, a
                    # screenshot's photo), not merely overlap it: an app's header in
                    # one cell of a screenshot is not the banned screenshot.
                    inliers = _verified(inside, query.points, points, banned_size, (left, top, right, bottom))
                    if inliers > best:
                        best, where = inliers, name
            if best >= defaults.FEATURE_MIN_INLIERS:
                hits.append((FeatureHit(entry_id, self._banks[entry_id], best, len(found_pairs)), where))
        return sorted(hits, key=lambda h: -h[0].inliers)


def _index(descriptors: np.ndarray) -> faiss.IndexBinary:
    """A FAISS index of ``descriptors`` ((n, 32) uint8): flat while small, else an inverted
    file trained on (a sample of) them."""
    n = len(descriptors)
    if n < defaults.FEATURE_IVF_MIN:
        flat = faiss.IndexBinaryFlat(256)
        flat.add(descriptors)
        return flat
    lists = max(16, int(defaults.FEATURE_IVF_LISTS_PER_ROOT * np.sqrt(n)))
    sample = descriptors
    if n > 64 * lists:  # k-means needs a few dozen points a cluster, not all of them
        sample = descriptors[np.random.default_rng(0).choice(n, 64 * lists, replace=False)]
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(256), 256, lists)
    with _one_thread():
        ivf.train(sample)
        ivf.add(descriptors)
    ivf.nprobe = defaults.FEATURE_IVF_PROBES
    return ivf


def _verified(pairs: list[tuple[int, int]], query_points: np.ndarray, banned_points: np.ndarray,
              banned_size: tuple[int, int] = (0, 0), within: tuple[float, float, float, float] | None = None) -> int:
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
    extent = np.ptp(spread, axis=0)
    full = np.ptp(banned_points, axis=0) + 1
    if (extent / full).prod() < defaults.FEATURE_MIN_SPREAD:
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
