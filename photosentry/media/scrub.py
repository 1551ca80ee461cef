"""Write a photo back without where it was taken or who took it, pixels untouched.

:func:`strip_metadata` is a pure function from bytes to bytes. It never decodes or
re-encodes: it drops or blanks the containers' metadata units, so the picture a viewer
shows is bit for bit the same.

- **JPEG**: APP1 Exif is replaced by a minimal one holding only the orientation (so
  the photo still displays upright), and every other identifying segment is dropped:
  XMP (location, face regions, motion photo markers), APP13 IPTC/Photoshop, maker and
  vendor APPn (including C2PA/JUMBF), MPF, comments. APP0 JFIF, APP2 ICC profiles and
  APP14 Adobe (colour transform) stay.
- **PNG**: ``eXIf`` (replaced by the orientation alone when it has one), ``tEXt``,
  ``zTXt``, ``iTXt`` (XMP lives there) and ``tIME`` are dropped.
- **WebP**: ``EXIF`` (orientation kept as for PNG) and ``XMP `` chunks are dropped and
  the VP8X flags and RIFF size follow.
- **HEIC/HEIF, AVIF**: the Exif and XMP items are overwritten in place with empty ones
  of the same length (libheif and libavif read them from ``iloc`` offsets, so nothing
  may move); irot/imir keep the orientation. A Samsung ``mpvd`` box (a motion photo's
  video) becomes a zeroed ``free`` box.

Whatever follows the image's end (a motion photo's video, padding, a vendor trailer)
is dropped in every format: the video can carry its own location (``©xyz``).
TIFF, BMP and GIF are not rewritten (:func:`can_strip` says so; the policy decides
what a photo with coordinates in those formats gets).
"""

from __future__ import annotations

import struct
import warnings

from PIL import Image

from . import containers, jpeg

STRIP_METADATA = "strip_metadata"
SUPPORTED_FORMATS = frozenset({"jpeg", "png", "webp", "heif", "avif"})

_EXIF = b"Exif\x00\x00"
_ICC = b"ICC_PROFILE\x00"
_JFIF = b"JFIF\x00"
_ADOBE = b"Adobe"
_ORIENTATION = 0x0112


def can_strip(fmt: str) -> bool:
    """Whether :func:`strip_metadata` can rewrite files of format ``fmt`` (a sniffed name)."""
    return fmt in SUPPORTED_FORMATS


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """``data`` without GPS, identifying metadata or trailing data, the pixels untouched.

    Args:
        data: the whole file.
        fmt: its sniffed format (``photosentry.decode.sniff_format``).

    Raises:
        ValueError: the format is not supported, or its structure is broken.
    """
    if fmt == "jpeg":
        return _jpeg(data)
    if fmt == "png":
        return _png(data)
    if fmt == "webp":
        return _webp(data)
    if fmt in ("heif", "avif"):
        return _bmff(data)
    raise ValueError(f"{fmt} files cannot be rewritten without their metadata")


# -- JPEG ------------------------------------------------------------------------------------


def _jpeg(data: bytes) -> bytes:
    layout = jpeg.parse(data)
    if layout.end is None or layout.frame is None:
        raise ValueError("the JPEG has no complete image to keep")
    out = [jpeg.SOI]
    cursor = 2
    exif_written = False
    for segment in layout.segments:
        out.append(data[cursor:segment.offset])  # entropy-coded data and fill bytes between segments
        cursor = segment.offset + segment.length
        payload = segment.payload(data)
        if segment.marker == 0xE1 and payload.startswith(_EXIF):
            if not exif_written:
                exif_written = True
                orientation = _orientation(payload[len(_EXIF):])
                if orientation is not None:
                    out.append(_app1_exif(orientation))
            continue
        if _keep_jpeg_segment(segment.marker, payload):
            out.append(data[segment.offset:cursor])
    out.append(data[cursor:layout.end])
    return b"".join(out)


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xFE:  # COM
        return False
    if 0xE0 <= marker <= 0xEF:
        return (marker == 0xE0 and payload.startswith(_JFIF)) or (marker == 0xE2 and payload.startswith(_ICC)) or (
            marker == 0xEE and payload.startswith(_ADOBE))
    return True  # DQT, DHT, SOF, DRI, SOS ...: the picture itself


def _app1_exif(orientation: int) -> bytes:
    payload = _EXIF + _tiff_orientation(orientation)
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _tiff_orientation(orientation: int | None) -> bytes:
    """A little-endian TIFF header and IFD0 with the orientation alone (or no entry at all)."""
    if orientation is None:
        return b"II*\x00" + struct.pack("<IH", 8, 0) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<IHHHIHHI", 8, 1, _ORIENTATION, 3, 1, orientation, 0, 0)


def _orientation(tiff: bytes) -> int | None:
    """The EXIF orientation (2..8) of a TIFF block, or None when it is 1, absent or unreadable."""
    try:
        exif = Image.Exif()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif.load(tiff)
            value = exif.get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - hostile EXIF: nothing of it is kept
        return None
    return value if isinstance(value, int) and 2 <= value <= 8 else None


# -- PNG -------------------------------------------------------------------------------------

_PNG_DROP = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"})


def _png(data: bytes) -> bytes:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    out = [data[:8]]
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            break
        if kind == b"eXIf":
            orientation = _orientation(data[pos + 8:end - 4])
            if orientation is not None:
                out.append(_png_chunk(b"eXIf", _tiff_orientation(orientation)))
        elif kind not in _PNG_DROP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)
    raise ValueError("the PNG has no IEND chunk")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


# -- WebP ------------------------------------------------------------------------------------

_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def _webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file")
    end = containers.riff_end(data)
    chunks = []
    pos = 12
    while pos + 8 <= end:
        kind = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        stop = pos + 8 + size + (size & 1)
        if stop > end:
            raise ValueError("a WebP chunk runs past the file")
        chunks.append((kind, data[pos:stop]))
        pos = stop
    kept = []
    exif_kept = False
    for kind, chunk in chunks:
        if kind == b"EXIF":
            orientation = _orientation(_strip_exif_prefix(chunk[8:8 + struct.unpack_from("<I", chunk, 4)[0]]))
            if orientation is not None:
                body = _tiff_orientation(orientation)
                kept.append(b"EXIF" + struct.pack("<I", len(body)) + body)
                exif_kept = True
        elif kind != b"XMP ":
            kept.append(chunk)
    if kept and kept[0][:4] == b"VP8X":
        flags = kept[0][8] & ~_VP8X_XMP & (~_VP8X_EXIF if not exif_kept else 0xFF)
        kept[0] = kept[0][:8] + bytes([flags & 0xFF]) + kept[0][9:]
    body = b"WEBP" + b"".join(kept)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _strip_exif_prefix(block: bytes) -> bytes:
    return block[len(_EXIF):] if block.startswith(_EXIF) else block


# -- HEIF / AVIF -------------------------------------------------------------------------------

_EMPTY_XMP = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
              b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
_XMP_END = b'<?xpacket end="w"?>'


def _bmff(data: bytes) -> bytes:
    end = containers.bmff_end(data, 0)
    out = bytearray(data[:end])
    meta = next((b for b in containers.boxes(out, 0, end) if b.kind == b"meta"), None)
    if meta is None:
        raise ValueError("no meta box")
    children = {b.kind: b for b in containers.boxes(out, meta.body + 4, meta.end)}
    if b"iinf" not in children or b"iloc" not in children:
        raise ValueError("no item information or item locations")
    kinds = _item_kinds(out, children[b"iinf"])
    idat = children.get(b"idat")
    for item_id, method, extents in _item_locations(out, children[b"iloc"]):
        kind = kinds.get(item_id)
        if kind not in ("exif", "xmp"):
            continue
        base = idat.body if method == 1 and idat is not None else 0
        if method not in (0, 1) or (method == 1 and idat is None):
            raise ValueError(f"{kind} item {item_id} is stored in a way that cannot be blanked")
        spans = [(base + offset, base + offset + length) for offset, length in extents]
        if any(a < 0 or b > len(out) for a, b in spans):
            raise ValueError(f"{kind} item {item_id} points outside the file")
        _blank(out, spans, kind)
    for box in containers.boxes(out, 0, end):
        if box.kind == b"mpvd":
            out[box.start + 4:box.start + 8] = b"free"
            out[box.body:box.end] = bytes(box.end - box.body)
    return bytes(out)


def _blank(out: bytearray, spans: list[tuple[int, int]], kind: str) -> None:
    total = sum(b - a for a, b in spans)
    if kind == "exif":
        # 4-byte offset to the TIFF header (0), then an empty TIFF IFD, zero padded.
        content = struct.pack(">I", 0) + _tiff_orientation(None)
    else:
        pad = total - len(_EMPTY_XMP) - len(_XMP_END)
        content = _EMPTY_XMP + b" " * pad + _XMP_END if pad >= 0 else b" " * total
    content = content[:total].ljust(total, b"\x00")
    at = 0
    for a, b in spans:
        out[a:b] = content[at:at + b - a]
        at += b - a


def _item_kinds(data: bytearray, iinf: containers.Box) -> dict[int, str]:
    version = data[iinf.body]
    first = iinf.body + 4 + (2 if version == 0 else 4)
    kinds = {}
    for infe in containers.boxes(data, first, iinf.end):
        if infe.kind != b"infe":
            continue
        v = data[infe.body]
        if v < 2:
            continue
        at = infe.body + 4
        item_id = struct.unpack_from(">H" if v == 2 else ">I", data, at)[0]
        at += (2 if v == 2 else 4) + 2
        item_type = bytes(data[at:at + 4])
        rest = bytes(data[at + 4:infe.end])
        if item_type == b"Exif":
            kinds[item_id] = "exif"
        elif item_type == b"mime":
            parts = rest.split(b"\x00")
            if len(parts) > 1 and b"rdf+xml" in parts[1]:
                kinds[item_id] = "xmp"
    return kinds


def _item_locations(data: bytearray, iloc: containers.Box) -> list[tuple[int, int, list[tuple[int, int]]]]:
    version = data[iloc.body]
    at = iloc.body + 4
    sizes = data[at] >> 4, data[at] & 15, data[at + 1] >> 4, (data[at + 1] & 15) if version in (1, 2) else 0
    offset_size, length_size, base_size, index_size = sizes
    at += 2
    count = struct.unpack_from(">H" if version < 2 else ">I", data, at)[0]
    at += 2 if version < 2 else 4
    items = []
    for _ in range(count):
        item_id = struct.unpack_from(">H" if version < 2 else ">I", data, at)[0]
        at += 2 if version < 2 else 4
        method = 0
        if version in (1, 2):
            method = struct.unpack_from(">H", data, at)[0] & 15
            at += 2
        at += 2  # data_reference_index
        base, at = _uint(data, at, base_size)
        extent_count = struct.unpack_from(">H", data, at)[0]
        at += 2
        extents = []
        for _ in range(extent_count):
            at += index_size
            offset, at = _uint(data, at, offset_size)
            length, at = _uint(data, at, length_size)
            extents.append((base + offset, length))
        if at > iloc.end:
            raise ValueError("the item location box runs past its end")
        items.append((item_id, method, extents))
    return items


def _uint(data: bytearray, at: int, size: int) -> tuple[int, int]:
    if size == 0:
        return 0, at
    if size not in (4, 8):
        raise ValueError(f"an item location field of {size} bytes")
    return int.from_bytes(data[at:at + size], "big"), at + size
