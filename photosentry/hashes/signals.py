"""Signals: the hashes computed from one photo.

Each algorithm is a small class of classmethods (a ThreatExchange-style signal type):
the exact ones hash bytes, the perceptual ones hash a decoded RGB frame and also give
the *query variants* that matching tries (PDQ's 8 dihedral transforms, pHash's 8,
dHash's mirror) so a flipped or rotated copy still meets its banned original. Only the
canonical value is ever stored or shown; variants exist for matching.

What an algorithm *is* (width, default distance, quality threshold) is in the registry
of :mod:`.algorithms`; a signal is how to compute it, and :data:`SIGNALS` holds one per
algorithm.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from .. import defaults
from ..errors import RegistryError
from ..media.budget import further_reduction
from . import perceptual
from .codecs import Algorithm
from .flatness import FlatMap
from .localfeatures import LocalFeatures, query_features
from .regions import Region, propose, square_corners


@dataclass(frozen=True)
class PerceptualHash:
    """One perceptual hash of one frame."""

    algorithm: Algorithm
    value: str
    #: Variants tried at match time, ``value`` first.
    variants: tuple[str, ...]
    #: PDQ's own quality score (0-100); None for algorithms without one.
    quality: int | None = None

    @property
    def weak(self) -> bool:
        """Too low a quality to match on its own (the algorithm's rule; see AlgorithmSpec.is_weak)."""
        return self.algorithm.spec.is_weak(self.quality)


class Signal(ABC):
    """How to compute one hash algorithm; its facts come from the algorithm registry."""

    algorithm: ClassVar[Algorithm]
    #: Largest Hamming distance that counts as a match by default (0 = exact only),
    #: copied from the registry (``Algorithm.spec``) when the subclass is defined.
    default_distance: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "algorithm" in cls.__dict__:
            cls.default_distance = cls.algorithm.spec.default_distance


class BytesSignal(Signal):
    """A cryptographic hash of the file's bytes."""

    @classmethod
    @abstractmethod
    def hash_bytes(cls, data: bytes) -> str:
        """Lowercase hex digest of ``data``."""


class HashFrame:
    """One decoded frame, prepared once for every perceptual hash of it.

    Args:
        rgb: (H, W, 3) uint8.
        image: the same pixels as a Pillow image, if the caller has one.
        source_size: (width, height) of the photo ``rgb`` was reduced from (the scan
            decodes JPEGs at 1/2 to 1/8 scale), each frame pixel the mean of a
            ``reduction`` x ``reduction`` block of it; None: ``rgb`` is the photo.
        quick: a scan's frame: pHash and dHash thumbnails after a box reduction
            (:data:`.perceptual.QUICK_REDUCING_GAP`); what a ban stores is exact.
    """

    def __init__(
        self,
        rgb: np.ndarray,
        image: Image.Image | None = None,
        *,
        source_size: tuple[int, int] | None = None,
        reduction: int = 1,
        quick: bool = False,
        luma: np.ndarray | None = None,
    ) -> None:
        self.rgb = rgb
        self.quick = quick
        self._luma = luma
        self._image = image
        self.source_size = source_size
        self.reduction = reduction

    @functools.cached_property
    def image(self) -> Image.Image:
        return self._image if self._image is not None else Image.fromarray(self.rgb)

    @functools.cached_property
    def luma(self) -> np.ndarray:
        """PDQ's float luminance: shared by the frame's PDQ and its regions'."""
        return self._luma if self._luma is not None else perceptual.pdq_luma(self.rgb)

    @functools.cached_property
    def cv_grey(self) -> np.ndarray:
        """OpenCV's luminance (uint8): shared by region proposals, keypoints and flatness."""
        return cv2.cvtColor(np.ascontiguousarray(self.rgb), cv2.COLOR_RGB2GRAY)

    @functools.cached_property
    def grey(self) -> Image.Image:
        """Pillow's luminance (mode L), as imagehash converts: shared by pHash and dHash."""
        return self.image.convert("L")


class FrameSignal(Signal):
    """A perceptual hash of a decoded frame."""

    #: Reads a thumbnail of a few dozen pixels: a scan may hash a smaller frame for it
    #: than for the others (:func:`hash_frame`'s ``thumbnails``).
    thumbnail: ClassVar[bool] = False

    @classmethod
    def hash_frame(cls, rgb: np.ndarray, image: Image.Image) -> PerceptualHash:
        """Hash one RGB uint8 frame; ``image`` is the same pixels as a Pillow image."""
        return cls.hash_prepared(HashFrame(rgb, image))

    @classmethod
    @abstractmethod
    def hash_prepared(cls, frame: HashFrame) -> PerceptualHash:
        """Hash one prepared frame (the scan prepares each frame once for every signal)."""


class Sha256Signal(BytesSignal):
    algorithm = Algorithm.SHA256

    @classmethod
    def hash_bytes(cls, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class Md5Signal(BytesSignal):
    algorithm = Algorithm.MD5

    @classmethod
    def hash_bytes(cls, data: bytes) -> str:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()


class PdqSignal(FrameSignal):
    algorithm = Algorithm.PDQ
    #: ThreatExchange's name for it (``PdqSignal.QUALITY_THRESHOLD``), from the registry.
    QUALITY_THRESHOLD: ClassVar[int] = Algorithm.PDQ.spec.quality_threshold or 0

    @classmethod
    def hash_prepared(cls, frame: HashFrame) -> PerceptualHash:
        # The 8 variants come from one DCT, as pdqhash.compute_dihedral makes them.
        # They are computed on PDQ's sampling grid, so they equal the hash of a truly
        # flipped photo only approximately (0-18 bits off on photos, worse on pure
        # textures): pHash's variants back them up. PDQ also does not survive crops
        # of even 3%; dHash and pHash catch small ones (docs/matching.md). A frame
        # reduced from a larger photo is hashed with the photo's own filter
        # (perceptual.pdq_dihedral), so it stays within a bit or two of the
        # full-resolution hash that other tools compute.
        variants, quality = perceptual.pdq_dihedral(
            frame.rgb, source_size=frame.source_size, reduction=frame.reduction, luma=frame.luma
        )
        return PerceptualHash(cls.algorithm, variants[0], variants, quality)


# The 8 symmetries of the square, identity first.
_DIHEDRAL = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


class PHashSignal(FrameSignal):
    thumbnail = True
    algorithm = Algorithm.PHASH

    @classmethod
    def hash_prepared(cls, frame: HashFrame) -> PerceptualHash:
        # imagehash.phash shrinks to 32x32 greyscale first; the variants are the
        # transposed thumbnail's hashes, all from its one DCT (perceptual.py). The
        # canonical value is exact; the rotated variants may differ from a full-image
        # rotation by a bit or two of resampling rounding (measured: at most 2 on
        # the test corpus), far inside the match distance.
        variants = perceptual.phash_dihedral(frame.grey, quick=frame.quick)
        return PerceptualHash(cls.algorithm, variants[0], variants)


class DHashSignal(FrameSignal):
    thumbnail = True
    algorithm = Algorithm.DHASH

    @classmethod
    def hash_prepared(cls, frame: HashFrame) -> PerceptualHash:
        # dHash compares neighbouring columns of a 9x8 thumbnail, so only the mirror
        # (the common evasion) is worth a variant; rotations are PDQ's and pHash's job.
        # Mirroring the thumbnail instead of the full photo costs nothing at 12 MP.
        value, mirrored, margin = perceptual.dhash_mirrored(frame.grey, quick=frame.quick)
        # Its information score: the thumbnail's median column difference, in whole grey levels.
        return PerceptualHash(cls.algorithm, value, (value, mirrored), int(margin))


def _signal_registry(
    bytes_signals: tuple[type[BytesSignal], ...], frame_signals: tuple[type[FrameSignal], ...]
) -> dict[Algorithm, type[Signal]]:
    """One signal per algorithm, each of the kind its algorithm needs (a real check, not
    an ``assert``: ``python -O`` must not skip it)."""
    out: dict[Algorithm, type[Signal]] = {}
    for signal in (*bytes_signals, *frame_signals):
        if signal.algorithm in out:
            other = out[signal.algorithm].__name__
            raise RegistryError(f"{signal.__name__} and {other} both hash {signal.algorithm.value}")
        if issubclass(signal, FrameSignal) != signal.algorithm.is_perceptual:
            raise RegistryError(f"{signal.__name__}: {signal.algorithm.value} is "
                                f"{'perceptual' if signal.algorithm.is_perceptual else 'exact'}, the signal is not")
        out[signal.algorithm] = signal
    missing = [a.value for a in Algorithm if a.is_hash and a not in out]
    if missing:
        raise RegistryError(f"hash algorithms without a signal: {', '.join(missing)}")
    return out


BYTES_SIGNALS: tuple[type[BytesSignal], ...] = (Sha256Signal, Md5Signal)
FRAME_SIGNALS: tuple[type[FrameSignal], ...] = (PdqSignal, PHashSignal, DHashSignal)
SIGNALS: dict[Algorithm, type[Signal]] = _signal_registry(BYTES_SIGNALS, FRAME_SIGNALS)


@dataclass(frozen=True)
class FrameHashes:
    """Perceptual hashes of one frame (frame = index in the file), or of a region of it."""

    frame: int
    hashes: tuple[PerceptualHash, ...]
    #: The region of the frame hashed (:attr:`.regions.Region.name`); empty: the whole frame.
    region: str = ""
    #: The share of the hashed picture that is flat colour (:mod:`.flatness`): a
    #: matching detail (never stored); a flat picture's hashes see its layout.
    flat: float = field(default=0.0, compare=False)

    def get(self, algorithm: Algorithm) -> PerceptualHash | None:
        return next((h for h in self.hashes if h.algorithm is algorithm), None)


@dataclass(frozen=True)
class FrameKeypoints:
    """One frame's keypoints for the copy search: the whole frame's, the regions they are
    verified in too (name, frame box), and the regions' own (name, keypoints)."""

    frame: int
    keypoints: LocalFeatures
    regions: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    cells: tuple[tuple[str, LocalFeatures], ...] = ()


@dataclass(frozen=True)
class ImageHashes:
    """Every hash of one photo: exact ones of the bytes, perceptual ones per frame."""

    sha256: str
    md5: str
    frames: tuple[FrameHashes, ...] = ()
    #: Hashes of the regions of the first frame that may hold a photo of their own (a
    #: framed, letterboxed, screenshotted or collaged copy): a matching detail like the
    #: variants, so never stored, shown or put in a bank.
    regions: tuple[FrameHashes, ...] = ()
    #: The first frame's keypoints, for image bans' keypoints to be verified against
    #: (:mod:`.localfeatures`), and the regions that may hold a photo of their own (name,
    #: frame box) whose keypoints are also verified alone; matching details too.
    features: LocalFeatures | None = field(default=None, compare=False)
    feature_regions: tuple[tuple[str, tuple[int, int, int, int]], ...] = field(default=(), compare=False)
    #: Keypoints of a collage's cells and of a screenshot's photo, each found alone, by
    #: region name: four photos share the whole picture's keypoints, and a photo a sixth
    #: of a screenshot's height keeps few of them.
    cell_features: tuple[tuple[str, LocalFeatures], ...] = field(default=(), compare=False)
    #: The same three for each other frame searched for copies (a GIF's, a TIFF's
    #: pages, an image appended to the file): a crop of a banned photo as a second frame
    #: meets no hash.
    frame_features: tuple[FrameKeypoints, ...] = field(default=(), compare=False)

    def exact(self) -> dict[Algorithm, str]:
        return {Algorithm.SHA256: self.sha256, Algorithm.MD5: self.md5}

    @property
    def keypoint_frames(self) -> tuple[FrameKeypoints, ...]:
        """The keypoints of every frame searched for copies, the first frame's first."""
        if self.features is None:
            return ()
        first = FrameKeypoints(self.frames[0].frame if self.frames else 0, self.features, self.feature_regions,
                               self.cell_features)
        return (first, *self.frame_features)

    def to_dict(self) -> dict[str, object]:
        """Canonical values only (variants are a matching detail)."""
        out: dict[str, object] = {"sha256": self.sha256, "md5": self.md5}
        if self.frames:
            out.update(_frame_dict(self.frames[0]))
        if len(self.frames) > 1:
            out["frames"] = [{"frame": f.frame, **_frame_dict(f)} for f in self.frames]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ImageHashes":
        """The inverse of :meth:`to_dict`: canonical values (a hash's only variant is
        itself; matching computes variants from pixels, never from a record).

        Raises:
            ValueError: ``raw`` has no SHA-256 and MD5 (not a hashes record).
        """
        sha256, md5 = raw.get("sha256"), raw.get("md5")
        if not isinstance(sha256, str) or not isinstance(md5, str):
            raise ValueError("a hashes record needs its sha256 and md5")
        listed = raw.get("frames")
        entries = listed if isinstance(listed, list) else [{"frame": 0, **raw}]
        frames = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue
            found = []
            for signal in FRAME_SIGNALS:
                name = signal.algorithm.value
                value = entry.get(name)
                if isinstance(value, str):
                    own = f"{name}_quality"
                    quality = entry.get(own, raw.get(own) if i == 0 else None)
                    found.append(PerceptualHash(signal.algorithm, value, (value,),
                                                quality if isinstance(quality, int) else None))
            if found:
                frame = entry.get("frame", i)
                frames.append(FrameHashes(frame if isinstance(frame, int) else i, tuple(found)))
        return cls(sha256, md5, tuple(frames))


def _frame_dict(frame: FrameHashes) -> dict[str, object]:
    out: dict[str, object] = {}
    for h in frame.hashes:
        out[h.algorithm.value] = h.value
        if h.quality is not None:
            out[f"{h.algorithm.value}_quality"] = h.quality
    return out


def hash_bytes(data: bytes) -> ImageHashes:
    """Exact hashes only: what an unreadable file still gets."""
    return ImageHashes(sha256=Sha256Signal.hash_bytes(data), md5=Md5Signal.hash_bytes(data))


def hash_image(data: bytes, frames: tuple[np.ndarray, ...], frame_indices: tuple[int, ...],
               **options: Any) -> ImageHashes:
    """Exact hashes of ``data`` and perceptual hashes of each decoded frame, and the frames
    searched for copies where ``regions`` or ``features`` ask for it: what
    :func:`hash_frames` and its :class:`CopySearch` give in two steps (the same keyword
    ``options``)."""
    hashes, copies = hash_frames(data, frames, frame_indices, **options)
    return copies.search(hashes) if copies is not None else hashes


def hash_frames(
    data: bytes,
    frames: tuple[np.ndarray, ...],
    frame_indices: tuple[int, ...],
    *,
    source_size: tuple[int, int] | None = None,
    reduction: int = 1,
    regions: bool = False,
    features: bool = False,
    quick: bool = False,
    copy_frames: int = 1,
) -> tuple[ImageHashes, CopySearch | None]:
    """Exact hashes of ``data`` and perceptual hashes of each decoded frame, and the
    search of its frames for copies as a :class:`CopySearch` to run later, or never (a
    scan whose whole photo is blocked already skips it); None where there is nothing to
    search (``regions`` and ``features`` off, no frame).

    Args:
        source_size, reduction: when the frames were decoded at 1/``reduction`` of the
            photo's (width, height) (a scan's fast decode: ``DecodedImage.width``,
            ``.height`` and ``.reduction``), so PDQ filters them as the photo itself;
            a frame whose size is not the photo's reduced size is hashed as it is.
        regions: the copy search hashes the regions of each frame it reads that may
            hold a photo of their own (:func:`.regions.propose`); what a scan matches,
            not what a ban stores.
        features: the copy search finds each frame's keypoints, and its regions' own
            (:func:`.localfeatures.query_features`).
        quick: a scan's hashes: pHash and dHash thumbnails after a box reduction, within
            a bit or two of the exact values a ban stores (:data:`.perceptual.QUICK_REDUCING_GAP`).
        copy_frames: how many of the leading frames the copy search may read (a scan:
            the frames it decoded for the models, not the thumbnails of an animation's
            other frames); the first is always read, the others unless they repeat one.
    """
    exact = hash_bytes(data)
    per_frame = []
    searched: list[_Searched] = []
    copy_search = bool((regions or features) and frames)
    for i, (index, rgb) in enumerate(zip(frame_indices, frames, strict=True)):
        frame = HashFrame(rgb, quick=quick, **_reduced_from(rgb, source_size, reduction))
        flat = 0.0
        if copy_search:
            # Flatness only tells matches against image bans apart, and those hold PDQ
            # hashes, so a scan without them (a ban, a bank of exact hashes) skips it.
            # The first frame's luminance is made anyway where copies are searched for.
            flat_map = FlatMap(frame.cv_grey if i == 0 else rgb)
            flat = flat_map.share()
        per_frame.append(FrameHashes(index, hash_frame(frame, _as_decoded_for_hashes(frame) if copy_search else None),
                                     flat=flat))
        if copy_search and (i == 0 or (i < copy_frames and _another_picture(rgb, searched))):
            searched.append(_Searched(index, rgb, frame, flat_map))
    hashes = ImageHashes(exact.sha256, exact.md5, tuple(per_frame))
    if not searched:
        return hashes, None
    return hashes, CopySearch(tuple(searched), regions, features)


@dataclass(frozen=True)
class _Searched:
    """A frame the copy search reads: its index, pixels, prepared frame and flat map."""

    index: int
    rgb: np.ndarray
    prepared: HashFrame
    flat_map: FlatMap


def _another_picture(rgb: np.ndarray, searched: list[_Searched]) -> bool:
    """Whether a frame is a picture not searched yet (an animation repeats frames as they
    are), within the budget of ``REGION_MORE_FRAMES`` frames beyond the first. Only the
    same pixels count as the same picture: a frame near another (within PDQ 31) may be a
    decoy's twin, the same picture with the banned photo blurred out of it."""
    if len(searched) > defaults.REGION_MORE_FRAMES or min(rgb.shape[:2]) < defaults.REGION_MIN_FRAME_SIDE:
        return False
    return not any(done.rgb.shape == rgb.shape and np.array_equal(done.rgb, rgb) for done in searched)


@dataclass(frozen=True)
class CopySearch:
    """What searching a photo for a copy needs from :func:`hash_frames`: the frames it
    reads (the first, and any other that is not a repeat: a copy as a GIF's second
    frame, a page of a TIFF, an image appended to the file), each for its regions,
    keypoints and its regions' own keypoints."""

    frames: tuple[_Searched, ...]
    regions: bool
    features: bool

    def search(self, hashes: ImageHashes) -> ImageHashes:
        """``hashes`` with the frames' regions hashed and their keypoints found."""
        proposed = [propose(frame.rgb, grey=frame.prepared.cv_grey) for frame in self.frames]
        found: tuple[FrameHashes, ...] = ()
        if self.regions:
            # PDQ only: what hash-only lists hold, and strong alone; a region's 64-bit
            # hashes would only ever be weak evidence, at 3 ms a region.
            found = tuple(r for frame, boxes in zip(self.frames, proposed, strict=True)
                          for r in _regions_hashed(frame, boxes))
        if not self.features:
            return dataclasses.replace(hashes, regions=found)
        first, *more = (_keypoints_of(frame, boxes) for frame, boxes in zip(self.frames, proposed, strict=True))
        return dataclasses.replace(hashes, regions=found, features=first.keypoints, feature_regions=first.regions,
                                   cell_features=first.cells, frame_features=tuple(more))


def _keypoints_of(frame: _Searched, proposed: list[Region]) -> FrameKeypoints:
    """A frame's keypoints, and the regions that get keypoints of their own."""
    grey = frame.prepared.cv_grey
    keypoints = query_features(frame.rgb, grey)
    boxes = tuple((r.name, (r.left, r.top, r.right, r.bottom)) for r in proposed
                  if r.kind in ("content", "block", "panel", "cell", "piece"))[: defaults.FEATURE_REGION_LIMIT]
    # Regions small enough that the whole picture's keypoints, found at 384 pixels,
    # leave them too few get keypoints of their own: a collage's cells, a screenshot's
    # photo (a phone screen is 2,340 pixels tall, so its photo is a sixth of 384; its
    # text takes most of the 500 keypoints). A region the whole picture covers densely
    # (a photo's own "cells" at a horizon) is verified with those, through ``boxes``.
    grid = [r for r in proposed if r.kind == "cell"]
    alone = [r for r in proposed if r.kind in ("content", "block", "panel")] + grid
    cells = tuple((r.name, query_features(r.crop(frame.rgb), r.crop(grey), enlarge=defaults.FEATURE_CELL_ENLARGE))
                  for r in alone[: defaults.FEATURE_REGION_LIMIT]
                  if _own_pass(keypoints, r))
    return FrameKeypoints(frame.index, keypoints, boxes, cells)


def _as_decoded_for_hashes(frame: HashFrame) -> HashFrame:
    """The frame a scan's pHash and dHash read: a JPEG frame the decoder reduced to at
    least ``COPY_DECODE_MIN_SIDE`` for copy detection, box-shrunk by the power of two it
    would have taken for ``DECODE_MIN_SIDE`` alone (as the models' frame is): their
    thumbnails are 32 and 9 pixels, and Pillow's conversions of a 12 MP photo's
    1008 x 756 frame cost 1.5 ms more than of its 504 x 378 one. PDQ keeps the larger
    frame: its quality (>= 50 to count) moved on a smooth picture (a fog at 50 fell
    under it, and its re-encoded copies went from blocked to allowed)."""
    if not frame.quick or frame.source_size is None or frame.reduction <= 1:
        return frame
    h, w = frame.rgb.shape[:2]
    k = further_reduction(h, w, frame.reduction, defaults.DECODE_MIN_SIDE)
    if k == 1:
        return frame
    # The decoder's size at that scale is the ceiling: a last partial block is the mean
    # of what it holds (the edge pixels repeated, here).
    tall, wide = -(-h // k), -(-w // k)
    rgb = frame.rgb
    if (tall * k, wide * k) != (h, w):
        rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), 0, tall * k - h, 0, wide * k - w, cv2.BORDER_REPLICATE)
    small = cv2.resize(np.ascontiguousarray(rgb), (wide, tall), interpolation=cv2.INTER_AREA)
    return HashFrame(small, quick=True, source_size=frame.source_size, reduction=frame.reduction * k)


def _own_pass(keypoints: LocalFeatures, region: Region) -> bool:
    """Whether ``region`` needs keypoints found on it alone: a pass of its own would see
    it larger than the whole frame's (``keypoints``) did, or few of those lie in it."""
    side = max(region.right - region.left, region.bottom - region.top)
    gain = min(defaults.FEATURE_QUERY_SIDE, side) / max(1.0, side * keypoints.scale)
    if gain >= defaults.FEATURE_CELL_PASS_GAIN:
        return True
    x, y = keypoints.points[:, 0] / keypoints.scale, keypoints.points[:, 1] / keypoints.scale
    inside = (x >= region.left) & (x < region.right) & (y >= region.top) & (y < region.bottom)
    return int(inside.sum()) < defaults.FEATURE_CELL_PASS_BELOW


def hash_frame(frame: HashFrame, thumbnails: HashFrame | None = None) -> tuple[PerceptualHash, ...]:
    """Every perceptual hash of one prepared frame (``thumbnails``: the same picture
    smaller, for the signals that read a thumbnail only). pHash carries dHash's score
    (the thumbnail's median column difference): measured on 257 pictures, it separates
    the 64-bit false matches of flat and frame-dominated pictures best, where PDQ's
    quality (100 for nearly every picture) does not (docs/matching.md)."""
    out = [s.hash_prepared(thumbnails if thumbnails is not None and s.thumbnail else frame) for s in FRAME_SIGNALS]
    short = next((h.quality for h in out if h.algorithm is Algorithm.DHASH), None)
    return tuple(h if h.quality is not None else dataclasses.replace(h, quality=short) for h in out)


def _regions_hashed(frame: _Searched, proposed: list[Region]) -> tuple[FrameHashes, ...]:
    """PDQ of each of ``frame``'s ``proposed`` regions."""
    source = _region_source(frame.prepared)
    return tuple(FrameHashes(frame.index, _region_pdq(source, r), r.name,
                             flat=frame.flat_map.share((r.left, r.top, r.right, r.bottom)))
                 for r in proposed)


def _region_source(frame: HashFrame) -> tuple[HashFrame, float]:
    """The frame the regions are hashed from, and its scale: ``frame`` itself, or where
    it is larger than ``REGION_HASH_MAX_SIDE`` (a 48 MP PNG, decoded whole) a copy
    shrunk to half that, so a dozen regions cost milliseconds, not a second; PDQ reads
    64 x 64 samples of a region either way."""
    h, w = frame.rgb.shape[:2]
    if max(h, w) <= defaults.REGION_HASH_MAX_SIDE:
        return frame, 1.0
    scale = defaults.REGION_HASH_MAX_SIDE / 2 / max(h, w)
    small = cv2.resize(frame.rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return HashFrame(small), scale


def _region_pdq(source: tuple[HashFrame, float], region: Region) -> tuple[PerceptualHash, ...]:
    """PDQ of a region of the frame (hashed from ``source``, :func:`_region_source`); and
    of it with its corners filled in where they look rounded off (a chat app's), both
    matched: a photo's own corner (a dark vignette) may look rounded too, and filling it
    would lose what the first one matches."""
    frame, scale = source
    if scale != 1.0:
        h, w = frame.rgb.shape[:2]
        region = dataclasses.replace(region, left=min(w - 1, int(region.left * scale)), top=min(h - 1, int(region.top * scale)),
                                     right=max(1, min(w, round(region.right * scale))),
                                     bottom=max(1, min(h, round(region.bottom * scale))))
    crop = region.crop(frame.rgb)
    found = [_shown_or_mirrored(PdqSignal.hash_prepared(HashFrame(crop, luma=region.crop(frame.luma))))]
    squared = square_corners(crop)
    if squared is not None:
        found.append(_shown_or_mirrored(PdqSignal.hash_prepared(HashFrame(squared))))
    return tuple(found)


#: Which of PDQ's 8 dihedral variants is the left-right mirror (pdqhash's order;
#: measured: a mirrored picture's hash is that variant of the picture's, 0 bits apart).
_PDQ_MIRROR = 5


def _shown_or_mirrored(h: PerceptualHash) -> PerceptualHash:
    # A region is queried as it is and mirrored: flipping a photo before framing it
    # is the cheapest evasion there is (the red team's "mirror + pad"), while rotations
    # would multiply the searches for copies nobody makes (a photo turned on its side
    # inside an upright screenshot).
    return dataclasses.replace(h, variants=(h.variants[0], h.variants[_PDQ_MIRROR]))


def _reduced_from(rgb: np.ndarray, source_size: tuple[int, int] | None, reduction: int) -> dict[str, object]:
    if source_size is None or reduction <= 1:
        return {}
    width, height = source_size
    h, w = rgb.shape[:2]
    if (w, h) != (-(-width // reduction), -(-height // reduction)):
        return {}  # e.g. a TIFF page of its own size: hash it as it is
    return {"source_size": source_size, "reduction": reduction}
