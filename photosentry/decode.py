"""Safe reading: turn untrusted bytes into a few RGB frames, or a reason code.

Hostile files are normal input here. The order of checks is the defence:
1. the byte count is capped before anything is read into memory;
2. the real format is sniffed from magic bytes (the extension is never trusted) and
   Pillow is allowed to use only that one decoder;
3. the header's declared size is checked against the pixel limit *before* any pixel
   is decoded,
   and against what decoding will really cost (:mod:`photosentry.media.budget`: a
   200 MP JPEG is decoded at 1/8 scale, a 60 MP PNG cannot be), so a decompression
   bomb costs a header parse, nothing more;
4. animations are decoded only up to a pixel budget, and a handful of frames is kept
   for hashing and classification: spread evenly over them, or by display time when
   frames are shown for different times (:func:`choose_frames`).

HEIC/HEIF (pillow-heif, libheif) and AVIF (Pillow's own plugin, libavif) go through
the same checks; their irot/imir transforms are applied like EXIF orientation.

Both the hashes and the models consume the output, so this module sits beside them
rather than inside either.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import numpy as np
from PIL import AvifImagePlugin, Image, JpegImagePlugin, UnidentifiedImageError

from . import defaults, progressive
from .errors import UnreadableImage
from .media import budget as _budget
from .media import containers as _containers
from .media import jpeg as _jpeg
from .media import location as _location
from .media import motion as _motion
from .media import trailing as _trailing
from .media.trailing import Trailer
from .media.codes import (  # noqa: F401 - re-exported: the verdict module turns them into ReasonCodes
    DECOMPRESSION_BOMB,
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TOO_MANY_PIXELS,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
)

# Formats we decode, with the Pillow plugin allowed for each.
SUPPORTED_FORMATS: dict[str, str] = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "tiff": "TIFF",
    "bmp": "BMP",
    "heif": "HEIF",
    "avif": "AVIF",
}

#: ISO BMFF brands (major or compatible) that name a still-image file we decode.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
                          b"mif2", b"MiHE"})

_WHITE = 255


@dataclass(frozen=True)
class Limits:
    """Resource limits for one image; see :mod:`photosentry.defaults` for the why."""

    max_bytes: int = defaults.MAX_BYTES
    max_pixels: int = defaults.MAX_PIXELS
    max_total_pixels: int = defaults.MAX_TOTAL_PIXELS
    max_frames: int = defaults.MAX_FRAMES
    scan_frames: int = defaults.SCAN_FRAMES
    hash_frames: int = defaults.HASH_FRAMES
    max_declared_pixels: int = defaults.MAX_DECLARED_PIXELS
    max_decode_bytes: int = defaults.MAX_DECODE_BYTES
    bomb_ratio: int = defaults.DECOMPRESSION_BOMB_RATIO

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_total_pixels", "max_frames", "scan_frames", "hash_frames",
                     "max_declared_pixels", "max_decode_bytes", "bomb_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    @property
    def budget(self) -> _budget.Budget:
        return _budget.Budget(max(self.max_pixels, 1), max(self.max_declared_pixels, self.max_pixels),
                              self.max_decode_bytes, self.bomb_ratio)


@dataclass(frozen=True)
class DecodedImage:
    """The frames of one image that the rest of the pipeline looks at."""

    format: str
    width: int
    height: int
    frame_count: int
    #: RGB uint8 arrays (H, W, 3), EXIF orientation applied, alpha composited on white.
    frames: tuple[np.ndarray, ...]
    #: Index in the file of each entry of ``frames``.
    frame_indices: tuple[int, ...]
    #: True when frames past the budget were never looked at (``too_many_frames``).
    frames_truncated: bool = False
    #: Non-fatal oddities, e.g. ``exif_unreadable``.
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: How much smaller than the file the frames are (1 = full resolution; 2, 4 or 8
    #: when a JPEG was decoded in the DCT domain for a ``min_side`` caller).
    reduction: int = 1
    #: What follows the image or hides in its container (:mod:`photosentry.media.trailing`);
    #: frames of the parts scanned come after the image's own in ``frames``.
    trailers: tuple[Trailer, ...] = ()
    #: The photo's EXIF or XMP carries GPS coordinates.
    gps: bool = False
    #: More frames of an animation, walked but not kept for the models: hashed and matched
    #: only, shrunk to at most ``HASH_FRAME_SIDE`` (their indices in ``hash_frame_indices``).
    hash_frames: tuple[np.ndarray, ...] = ()
    hash_frame_indices: tuple[int, ...] = ()

    @property
    def image_frames(self) -> int:
        """How many entries of ``frames`` are the image's own (the rest came from trailers)."""
        return len(self.frames) - sum(t.frames_scanned for t in self.trailers)


def sniff_format(head: bytes) -> str | None:
    """Name the image format from the first bytes, or None if not an image we know.

    Recognised-but-unsupported formats get their own names (``heif``, ``svg`` ...)
    so the verdict can say ``unsupported_format`` rather than ``not_an_image``.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[4:8] == b"ftyp":
        return _iso_bmff_kind(head)
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "jxl"
    if head[:4] == b"8BPS":
        return "psd"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return "ico"
    if head[:4] == b"%PDF":
        return "pdf"
    stripped = head.lstrip()[:256].lower()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped):
        return "svg"
    return None


def _iso_bmff_kind(head: bytes) -> str:
    """``avif``, ``heif`` or ``isobmff`` (a video, or a still format we do not know) from an ftyp box."""
    size = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    compatible = {head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if major in _AVIF_BRANDS or (major in (b"mif1", b"msf1", b"miaf") and compatible & _AVIF_BRANDS):
        return "avif"
    if major in _HEIF_BRANDS or (major == b"miaf" and compatible & _HEIF_BRANDS):
        return "heif"
    return "isobmff"


def read_limited(source: str | os.PathLike[str] | BinaryIO, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` from a path or binary file, refusing anything larger.

    Raises:
        UnreadableImage: ``too_large`` past the limit, ``unreadable`` on I/O errors.
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > max_bytes:
                    raise UnreadableImage(TOO_LARGE, f"file is {size} bytes, limit is {max_bytes}")
                data = fh.read(max_bytes + 1)
        else:
            data = source.read(max_bytes + 1)
    except UnreadableImage:
        raise
    except OSError as exc:
        raise UnreadableImage(UNREADABLE, f"could not read file: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise UnreadableImage(TOO_LARGE, f"more than {max_bytes} bytes")
    return data


def decode(
    data: bytes, limits: Limits = Limits(), *, min_side: int | None = None, scan_trailing: Collection[str] = ()
) -> DecodedImage:
    """Decode untrusted image bytes within ``limits``.

    Args:
        data: the file's bytes.
        limits: resource limits, checked from the header before any pixel is decoded.
        min_side: the smallest width and height any consumer needs. A single-frame
            JPEG larger than that is decoded in the DCT domain at 1/2, 1/4 or 1/8 scale
            (libjpeg-turbo's scaled IDCT through Pillow's ``draft``), the largest
            reduction that keeps both sides >= ``min_side``: a 12 MP photo costs its
            entropy decoding plus a 1/16 of the IDCT and colour work. ``width`` and
            ``height`` still report the full size; ``reduction`` says by how much the
            frames are smaller. None decodes every pixel, except that a JPEG declaring
            more than ``limits.max_pixels`` is always reduced until it fits.
        scan_trailing: kinds of trailing parts (``mp4``, ``jpeg``, ``image``) whose content
            is decoded and scanned too: a motion photo's sampled video frames, an MPF image,
            an appended PNG, GIF, WebP, TIFF or BMP.
            Their frames follow the image's own; every part found is listed in
            ``trailers`` whether scanned or not.

    Raises:
        UnreadableImage: with a stable ``code`` for every way the bytes can fail.
    """
    if not data:
        raise UnreadableImage(EMPTY_FILE, "file is empty")
    if len(data) > limits.max_bytes:
        raise UnreadableImage(TOO_LARGE, f"{len(data)} bytes, limit is {limits.max_bytes}")
    fmt = sniff_format(data[:64])
    if fmt is None:
        raise UnreadableImage(NOT_AN_IMAGE, "content is not a recognised image format")
    if fmt not in SUPPORTED_FORMATS:
        raise UnreadableImage(UNSUPPORTED_FORMAT, f"{fmt} images are not supported")

    layout = _jpeg.parse(data) if fmt == "jpeg" else None
    img = _open(data, fmt, limits)
    with img:
        width, height = img.size
        plan = _plan(data, fmt, (width, height), limits, layout, min_side)
        try:
            reduction = _draft(img, plan)
            gps = _location.has_coordinates(img)
            image = None
            lean = _dc_scans_only(data, img, reduction, (width, height))
            if lean is not None:
                try:
                    image = _decode_frames(lean, fmt, limits, reduction, (width, height), len(data))
                except Exception:  # noqa: BLE001 - the file as it is decides, below
                    image = None
            if image is None:
                image = _decode_frames(img, fmt, limits, reduction, (width, height), len(data),
                                       _containers.frame_durations(data, fmt))
        except UnreadableImage:
            raise
        except Image.DecompressionBombError as exc:
            raise _pillow_refusal(exc, fmt, len(data), limits) from exc
        except MemoryError as exc:
            raise UnreadableImage(DECOMPRESSION_BOMB, "decoding ran out of memory") from exc
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
            raise UnreadableImage(UNREADABLE, f"{fmt} data is corrupt or truncated: {exc}") from exc
    trailers = _trailing.find(data, fmt, layout)
    if not trailers:
        return replace(image, gps=gps)
    return _scan_trailers(replace(image, gps=gps), data, trailers, frozenset(scan_trailing), limits, min_side)


#: Block size a coded AV1 or HEVC frame may exceed its declared ``ispe`` size by.
_CODED_PADDING = 64


def _plan(
    data: bytes, fmt: str, size: tuple[int, int], limits: Limits, layout: _jpeg.Layout | None, min_side: int | None
) -> _budget.Plan:
    """The budget's plan for the declared size, or for an AVIF's or HEIC's coded size when
    its AV1 sequence header or HEVC SPS says more than ``ispe`` (the decoder allocates
    the coded frame)."""
    width, height = size
    coded = max(_containers.coded_frame_sizes(data, fmt), key=lambda s: s[0] * s[1], default=size)
    # Encoders pad to their block size (x265 codes a 333x201 photo as 334x202, anything
    # under 64 px as 64x64) and crop with clap: that much is the same picture.
    padded = (-(-width // _CODED_PADDING) * _CODED_PADDING, -(-height // _CODED_PADDING) * _CODED_PADDING)
    if coded[0] * coded[1] <= width * height or (coded[0] <= padded[0] and coded[1] <= padded[1]):
        return _budget.plan(fmt, width, height, len(data), limits.budget, layout=layout, min_side=min_side)
    try:
        return _budget.plan(fmt, *coded, len(data), limits.budget, min_side=min_side)
    except UnreadableImage as exc:
        raise UnreadableImage(exc.code, f"{exc.message} (the size its coded data declares; ispe declares"
                                        f" {width}x{height})") from exc


def _scan_trailers(
    image: DecodedImage, data: bytes, trailers: tuple[Trailer, ...], kinds: frozenset[str], limits: Limits,
    min_side: int | None,
) -> DecodedImage:
    """Decode the trailing parts of the asked-for kinds and append their frames.

    Their frames together may hold at most ``limits.max_pixels`` (as an animation's kept
    frames do), and at most ``limits.scan_frames`` parts are scanned; a part that cannot
    be scanned keeps its ``error`` and the policy fails it closed.
    """
    frames = list(image.frames)
    budget = limits.max_pixels
    done: list[Trailer] = []
    scanned_parts = 0
    for part in trailers:
        if part.kind not in kinds or part.kind not in _trailing.SCANNABLE:
            done.append(part)
            continue
        if scanned_parts >= limits.scan_frames or budget < 1:
            done.append(part.scanned(0, "more trailing parts than the frame and pixel budget can scan"))
            continue
        scanned_parts += 1
        start, stop = part.span()
        got, error = _part_frames(data[start:stop], part.kind, limits, budget, min_side)
        budget -= sum(frame.shape[0] * frame.shape[1] for frame in got)
        frames.extend(got)
        done.append(part.scanned(len(got), error))
    # Frames from trailers are numbered after the image's own, in the order they were found.
    extra = range(image.frame_count, image.frame_count + len(frames) - len(image.frames))
    indices = (*image.frame_indices, *extra)
    return replace(image, frames=tuple(frames), frame_indices=indices, trailers=tuple(done))


def _part_frames(
    content: bytes, kind: str, limits: Limits, budget: int, min_side: int | None
) -> tuple[list[np.ndarray], str | None]:
    """(frames, why not all of it was scanned) for one trailing part's content."""
    if kind in (_trailing.JPEG, _trailing.IMAGE):
        try:
            part = decode(content, replace(limits, max_pixels=min(budget, limits.max_pixels)), min_side=min_side)
        except UnreadableImage as exc:
            return [], f"{exc.code}: {exc.message}"
        return list(part.frames), ("too_many_frames: part of it was never seen" if part.frames_truncated else None)
    try:
        video = _motion.sample(content, frames=limits.scan_frames, max_frames=limits.max_frames,
                               walk_pixels=defaults.MAX_VIDEO_PIXELS, keep_pixels=budget)
    except _motion.VideoUnreadable as exc:
        return [], str(exc)
    except Exception as exc:  # noqa: BLE001 - OpenCV/FFmpeg failures are the file's fault
        return [], f"the video could not be decoded: {type(exc).__name__}: {exc}"
    if video.truncated:
        return list(video.frames), f"the video declares {video.frame_count} frames; only part of it fit the budget"
    return list(video.frames), None


def _open(data: bytes, fmt: str, limits: Limits) -> Image.Image:
    """Parse the header with the one Pillow plugin the sniffed format allows.

    JPEGs are opened with the JPEG plugin's class itself rather than ``Image.open``:
    Pillow's own bomb check there refuses anything over 179 MP by declared size alone
    (a 200 MP phone photo) before our plan can take DCT scaling into account, and
    ``Image.open`` turns a JPEG with MPF secondary images into an MPO whose later
    "frames" are the trailing images (:mod:`photosentry.media.trailing` finds and
    scans those as what they are). Opening parses headers only; no pixel is decoded.
    """
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (checked next) is stricter than Pillow's warning level,
            # and Pillow's warnings about corrupt tags are noise here: the outcome is the
            # verdict, and it must not depend on the process's warning filters.
            warnings.simplefilter("ignore")
            if fmt == "jpeg":
                return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
            if fmt == "heif":
                # The plugin's class itself, so libheif's own words reach the verdict
                # ("Security limit exceeded: iloc box contains 1200 items ...") instead of
                # Image.open's "cannot identify image file".
                return _heif_class()(io.BytesIO(data))
            if fmt == "avif":
                if not AvifImagePlugin.SUPPORTED:  # a Pillow built without libavif
                    raise UnreadableImage(UNSUPPORTED_FORMAT, "avif support is not installed (Pillow without libavif)")
                return AvifImagePlugin.AvifImageFile(io.BytesIO(data))
            return Image.open(io.BytesIO(data), formats=[SUPPORTED_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise _pillow_refusal(exc, fmt, len(data), limits) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise UnreadableImage(UNREADABLE, f"{fmt} header could not be parsed: {exc}") from exc
    except RuntimeError as exc:  # pillow-heif reports libheif errors this way
        raise UnreadableImage(UNREADABLE, f"{fmt} header could not be parsed: {exc}") from exc


_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")


def _pillow_refusal(exc: Exception, fmt: str, file_bytes: int, limits: Limits) -> UnreadableImage:
    """Classify a size Pillow refused by itself (over 179 MP, or a GIF frame while seeking):
    by the pixel count its message states, a bomb when the count cannot be read."""
    found = _PILLOW_PIXELS.search(str(exc))
    if found is None:
        return UnreadableImage(DECOMPRESSION_BOMB, str(exc))
    pixels = int(found.group(1))
    if _budget.is_bomb(pixels, file_bytes, limits.budget):
        return UnreadableImage(DECOMPRESSION_BOMB, f"{fmt} declares {pixels} pixels in a file of {file_bytes} bytes")
    return UnreadableImage(TOO_MANY_PIXELS, f"{fmt} declares {pixels / 1e6:.1f} MP, over the"
                           f" {limits.max_pixels / 1e6:.1f} MP a frame may decode to")


def _heif_class() -> type[Image.Image]:
    """pillow-heif's image class, imported on first use as the heavy hashers are.

    Not pi-heif (its decode-only build): pi-heif 1.4.0 bundles libheif 1.23.0, which
    segfaults on a fuzzed file (tests/data/heic-crashes-libheif-1.23.0.heic) that
    pillow-heif's libheif 1.23.7 refuses cleanly; a decoder that can crash the worker is
    worse than a wheel that also carries an encoder we never call.
    """
    try:
        import pillow_heif
    except ImportError as exc:  # a broken install: say so rather than crash
        raise UnreadableImage(UNSUPPORTED_FORMAT, f"heif support is not installed: {exc}") from exc
    return pillow_heif.HeifImageFile


def _draft(img: Image.Image, plan: _budget.Plan) -> int:
    """Ask the JPEG decoder for the plan's DCT-domain reduction; returns the one it took.

    Only after the plan passed: the declared size was checked on the header, and
    ``draft`` only ever makes the decoded frame smaller.
    """
    if plan.reduction == 1:
        return 1
    width, height = img.size
    # draft picks the largest scale whose output is at least the size asked for.
    img.draft(img.mode, (width // plan.reduction, height // plan.reduction))
    taken = max(1, round(width / img.size[0]))
    if taken < plan.reduction and img.size[0] * img.size[1] > plan.width * plan.height:
        raise UnreadableImage(TOO_MANY_PIXELS, f"the decoder would not reduce {width}x{height} by {plan.reduction}")
    return taken


def _dc_scans_only(data: bytes, img: Image.Image, reduction: int, full_size: tuple[int, int]) -> Image.Image | None:
    """At 1/8 scale, a progressive JPEG rewritten to its DC scans (photosentry.progressive:
    the same pixels for a fraction of the entropy decoding), drafted like ``img``; else None."""
    if reduction != progressive.SCALE or not img.info.get("progressive"):
        return None
    lean = progressive.dc_only(data)
    if lean is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as in decode(): the same header was parsed there
            out = JpegImagePlugin.JpegImageFile(io.BytesIO(lean))
            out.draft(img.mode, (full_size[0] // reduction, full_size[1] // reduction))
    except Exception:  # noqa: BLE001 - the original file is still there to decode
        return None
    return out if out.size == img.size and out.mode == img.mode else None


def choose_frames(reachable: int, wanted: int, durations: list[int] | None = None) -> list[int]:
    """Which of the first ``reachable`` frames to keep, at most ``wanted``, in file order.

    Evenly spread over the frames when every frame is shown as long (or the file does not
    say). Otherwise by display time, so that a frame shown for 10 s among a thousand
    1 ms frames is kept whatever its index: the first frame (what a still preview shows)
    and the last reached (what an animation that stops leaves on screen; it also keeps
    the last index the walk reached), the ``SCAN_LONGEST_FRAMES`` frames shown longest, then frames at evenly spread
    moments of the animation's running time, then evenly spread frames.
    """
    spread = [int(round(i)) for i in np.linspace(0, reachable - 1, wanted)]
    shown = list(durations[:reachable]) if durations is not None and len(durations) >= reachable else []
    if not shown or min(shown) == max(shown):
        return sorted(set(spread))
    order: list[int] = [0, reachable - 1]
    order += sorted(range(reachable), key=lambda i: (-shown[i], i))[:defaults.SCAN_LONGEST_FRAMES]
    ends = np.cumsum(shown)
    moments = max(1, (wanted - len(set(order))))
    order += [int(np.searchsorted(ends, (k + 0.5) * ends[-1] / moments, side="right")) for k in range(moments)]
    chosen: list[int] = []
    for index in order + spread:
        if index not in chosen and index < reachable and len(chosen) < wanted:
            chosen.append(index)
    return sorted(chosen)


def _decode_frames(
    img: Image.Image, fmt: str, limits: Limits, reduction: int = 1, full_size: tuple[int, int] | None = None,
    file_bytes: int = 0, durations: list[int] | None = None,
) -> DecodedImage:
    width, height = img.size
    full_width, full_height = full_size or (width, height)
    frame_count = int(getattr(img, "n_frames", 1) or 1)
    # Frames must be decoded in order (GIF frames build on each other), so the budget
    # bounds how far into the file we go, not just how many frames we keep.
    reachable = min(frame_count, limits.max_frames, max(1, limits.max_total_pixels // (width * height)))
    truncated = reachable < frame_count
    # Kept frames are held, hashed and classified at full size: together they may cost
    # no more pixels than one largest still (a 20 KB GIF with a 49 MP screen otherwise
    # costs four 49 MP frames: 2.2 GB and 13 s, scripts/make_hostile.py).
    wanted = min(limits.scan_frames, reachable, max(1, limits.max_pixels // (width * height)))
    indices = choose_frames(reachable, wanted, durations)
    # Every other frame walked is hashed too (a banned frame among a thousand is matched
    # even when the models never see it), evenly spread when there are more than the budget.
    kept = set(indices)
    spare = max(0, min(limits.hash_frames, reachable) - len(indices))
    others = [i for i in range(reachable) if i not in kept]
    hashed = sorted({others[int(round(k))] for k in np.linspace(0, len(others) - 1, spare)}) if spare and others else []

    notes: list[str] = []
    transpose = _exif_transpose_method(img, notes)
    frames: list[np.ndarray] = []
    hash_frames: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in decode(): corrupt-data warnings are noise
        for index in sorted(kept.union(hashed)):
            if index:
                img.seek(index)
            # Pages of a TIFF may each declare their own size: check every one.
            if img.size[0] * img.size[1] > limits.max_pixels:
                raise _budget.refuse_frame(f"{fmt} frame {index}", img.size[0], img.size[1], file_bytes,
                                           limits.budget)
            rgb = to_rgb_array(img) if index in kept else _shrunk(img)
            if transpose is not None:
                rgb = _apply_transpose(rgb, transpose)
            (frames if index in kept else hash_frames).append(rgb)
    out_h, out_w = frames[0].shape[:2]
    if reduction > 1:
        # Report the photo's own size (orientation applied), not the reduced frame's.
        out_w, out_h = (full_width, full_height) if (out_w, out_h) == (width, height) else (full_height, full_width)
    return DecodedImage(
        format=fmt,
        width=out_w,
        height=out_h,
        frame_count=frame_count,
        frames=tuple(frames),
        frame_indices=tuple(indices),
        frames_truncated=truncated,
        notes=tuple(notes),
        reduction=reduction,
        hash_frames=tuple(hash_frames),
        hash_frame_indices=tuple(hashed),
    )


def _shrunk(img: Image.Image) -> np.ndarray:
    """A frame that is only hashed, at most ``HASH_FRAME_SIDE`` on its longer side (the
    hashes shrink it further anyway: PDQ to 64 px, pHash to 32, dHash to 9)."""
    rgb = to_rgb_array(img)
    height, width = rgb.shape[:2]
    side = defaults.HASH_FRAME_SIDE
    if max(width, height) <= side:
        return rgb
    size = (max(1, width * side // max(width, height)), max(1, height * side // max(width, height)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def _exif_transpose_method(img: Image.Image, notes: list[str]) -> int | None:
    """The EXIF orientation as a transpose method, or None; absurd EXIF is ignored."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # the same outcome under any warning filter
            orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - hostile EXIF must not stop the scan
        notes.append("exif_unreadable")
        return None
    if caught:
        notes.append("exif_unreadable")  # Pillow skipped corrupt tags; what it read still counts
    if orientation is None:
        return None
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation if isinstance(orientation, int) else -1)
    if method is None and orientation != 1:
        notes.append("exif_orientation_invalid")
    return method


def _apply_transpose(rgb: np.ndarray, method: int) -> np.ndarray:
    # Same result as ImageOps.exif_transpose, on the array we already have.
    return np.asarray(Image.fromarray(rgb).transpose(method))


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an RGB uint8 array, alpha composited on white.

    White because that is what most viewers show behind a transparent photo. 16-bit
    modes keep their top 8 bits rather than being clipped, so a 16-bit greyscale photo
    keeps its picture instead of turning white; 32-bit integer and float modes carry no
    bit depth, so they are scaled by their range.
    """
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("L", "1"):
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode.startswith("I;16"):
        # Declared 16-bit: keep the top 8 bits, so brightness does not depend on content.
        grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("I", "F"):
        grey = _scale_to_uint8(np.asarray(img))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
        return _composite_on_white(rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    if int(alpha.min()) == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    rgb = rgba[:, :, :3].astype(np.uint16)
    out = (rgb * alpha + _WHITE * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if float(finite.max(initial=0.0)) <= 1.0 else 255.0
        return np.clip(finite / top * 255.0, 0, 255).astype(np.uint8)
    wide = values.astype(np.int64)
    top = int(wide.max(initial=0))
    if top <= 255:
        return np.clip(wide, 0, 255).astype(np.uint8)
    if top <= 65535:
        return (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
    return (np.clip(wide, 0, None) * 255 // top).astype(np.uint8)
