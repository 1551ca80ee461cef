"""Safe reading: turn untrusted bytes into a few RGB frames, or a reason code.

Hostile files are normal input here. The order of checks is the defence:
1. the byte count is capped before anything is read into memory;
2. the real format is sniffed from magic bytes (the extension is never trusted) and
   Pillow is allowed to use only that one decoder;
3. the header's declared size is checked against the pixel limit *before* any pixel
   is decoded, so a decompression bomb costs a header parse, nothing more;
4. animations are decoded only up to a pixel budget, and a handful of frames spread
   evenly over them is kept for hashing and classification.

Both the hashes and the models consume the output, so this module sits beside them
rather than inside either.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import defaults, progressive
from .errors import UnreadableImage

# Reason codes produced here; the verdict module re-exports them as ReasonCode members.
EMPTY_FILE = "empty_file"
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
DECOMPRESSION_BOMB = "decompression_bomb"
UNREADABLE = "unreadable"

# Formats we decode, with the Pillow plugin allowed for each.
SUPPORTED_FORMATS: dict[str, str] = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "tiff": "TIFF",
    "bmp": "BMP",
}

_WHITE = 255


@dataclass(frozen=True)
class Limits:
    """Resource limits for one image; see :mod:`photosentry.defaults` for the why."""

    max_bytes: int = defaults.MAX_BYTES
    max_pixels: int = defaults.MAX_PIXELS
    max_total_pixels: int = defaults.MAX_TOTAL_PIXELS
    max_frames: int = defaults.MAX_FRAMES
    scan_frames: int = defaults.SCAN_FRAMES

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_total_pixels", "max_frames", "scan_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")


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
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "heif"
        return "isobmff"
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


def decode(data: bytes, limits: Limits = Limits(), *, min_side: int | None = None) -> DecodedImage:
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
            frames are smaller. None decodes every pixel.

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

    try:
        with warnings.catch_warnings():
            # Our own pixel limit (checked next) is stricter than Pillow's warning level,
            # and Pillow's warnings about corrupt tags are noise here: the outcome is the
            # verdict, and it must not depend on the process's warning filters.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=[SUPPORTED_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(DECOMPRESSION_BOMB, str(exc)) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UnreadableImage(UNREADABLE, f"{fmt} header could not be parsed: {exc}") from exc

    with img:
        width, height = img.size
        pixels = width * height
        if width < 1 or height < 1:
            raise UnreadableImage(UNREADABLE, f"declared size {width}x{height} is empty")
        if pixels > limits.max_pixels:
            raise UnreadableImage(
                DECOMPRESSION_BOMB,
                f"declared size {width}x{height} ({pixels} pixels) exceeds {limits.max_pixels}",
            )
        try:
            reduction = _draft(img, fmt, min_side)
            lean = _dc_scans_only(data, img, reduction, (width, height))
            if lean is not None:
                try:
                    return _decode_frames(lean, fmt, limits, reduction, (width, height))
                except Exception:  # noqa: BLE001 - the file as it is decides, below
                    pass
            return _decode_frames(img, fmt, limits, reduction, (width, height))
        except UnreadableImage:
            raise
        except MemoryError as exc:
            raise UnreadableImage(DECOMPRESSION_BOMB, "decoding ran out of memory") from exc
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
            raise UnreadableImage(UNREADABLE, f"{fmt} data is corrupt or truncated: {exc}") from exc


def _draft(img: Image.Image, fmt: str, min_side: int | None) -> int:
    """Ask the JPEG decoder for DCT-domain downscaling; returns the reduction (1 = none).

    Only after the pixel limit passed: the declared size was checked on the header, and
    ``draft`` only ever makes the decoded frame smaller.
    """
    if min_side is None or fmt != "jpeg":
        return 1
    if min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    width, height = img.size
    if min(width, height) < 2 * min_side:
        return 1  # even 1/2 scale would go below what a consumer needs
    if img.mode not in ("RGB", "L", "YCbCr"):
        return 1  # CMYK/YCCK: let the full decoder do its colour conversion
    img.draft(img.mode, (min_side, min_side))
    return max(1, round(width / img.size[0]))


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
            out = Image.open(io.BytesIO(lean), formats=["JPEG"])
            out.draft(img.mode, (full_size[0] // reduction, full_size[1] // reduction))
    except Exception:  # noqa: BLE001 - the original file is still there to decode
        return None
    return out if out.size == img.size and out.mode == img.mode else None


def _decode_frames(
    img: Image.Image, fmt: str, limits: Limits, reduction: int = 1, full_size: tuple[int, int] | None = None
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
    indices = sorted({int(round(i)) for i in np.linspace(0, reachable - 1, wanted)})

    notes: list[str] = []
    transpose = _exif_transpose_method(img, notes)
    frames: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in decode(): corrupt-data warnings are noise
        for index in indices:
            if index:
                img.seek(index)
            # Pages of a TIFF may each declare their own size: check every one.
            if img.size[0] * img.size[1] > limits.max_pixels:
                raise UnreadableImage(
                    DECOMPRESSION_BOMB, f"frame {index} declares {img.size[0]}x{img.size[1]} pixels"
                )
            rgb = to_rgb_array(img)
            if transpose is not None:
                rgb = _apply_transpose(rgb, transpose)
            frames.append(rgb)
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
    )


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
