"""Data after the image's end (or hidden in its container), found and named.

Phones write some of it on purpose: Google and Samsung motion photos put an MP4 after
the JPEG (XMP ``GCamera:MicroVideo*`` or a ``Container:Directory`` says where; Samsung
adds its own "SEF" trailer naming the block ``MotionPhoto_Data``), multi-picture JPEGs
(MPF: Ultra HDR gain maps, depth maps, stereo pairs) carry more JPEGs, Samsung HEICs
keep the video in a top-level ``mpvd`` box. Attackers write the rest: a ZIP or a
script appended to a real photo opens as both (a polyglot), and nothing a viewer shows
gives it away.

:func:`find` splits what follows the image into parts by structure (a JPEG runs to
its EOI, an ISO BMFF file to its last box, a SEF block to its declared length, another
image to its own end, a ZIP to its end-of-directory record, PNG chunks to the last whole
chunk) and names each by what it looks like: ``mp4``, ``jpeg``, ``image``, ``zip``, ``script``,
``metadata`` (a vendor's own trailer blocks), ``padding`` (zero bytes) or ``unknown``.
It never decodes anything; the policy decides what each kind gets
(:mod:`photosentry.worker.policy`, ``[trailing]``) and :func:`photosentry.decode.decode`
scans the kinds it is asked to.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import containers, jpeg

MP4 = "mp4"
JPEG = "jpeg"
#: Another image format appended whole (PNG, GIF, WebP, TIFF, BMP): shown by whatever
#: opens the bytes from there, so scanned like an appended JPEG.
IMAGE = "image"
ZIP = "zip"
SCRIPT = "script"
METADATA = "metadata"
PADDING = "padding"
UNKNOWN = "unknown"
KINDS = (MP4, JPEG, IMAGE, ZIP, SCRIPT, METADATA, PADDING, UNKNOWN)
#: Kinds whose content can be decoded and scanned like the photo's own frames.
SCANNABLE = frozenset({MP4, JPEG, IMAGE})

#: Most parts one file is split into; whatever is left after them is one ``unknown`` part.
MAX_PARTS = 16
#: A vendor metadata block (Samsung SEF) larger than this is not "metadata" but ``unknown``:
#: real ones are a few hundred bytes, and a large one could carry anything.
MAX_METADATA_BLOCK = 64 * 1024

_XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
_SAMSUNG_MARKER = b"MotionPhoto_Data"
_MPF_PREFIX = b"MPF\x00"
_SCRIPT_MARKERS = re.compile(
    rb"<\s*(script|html|body|iframe|svg|object|embed|\?php|!doctype)|<%|#!\s*/|javascript:|"
    rb"\b(eval|alert|document\.|window\.|function\s*\()",
    re.IGNORECASE,
)
_SCRIPT_WINDOW = 64 * 1024


@dataclass(frozen=True)
class Trailer:
    """One part of what follows an image (or hides in its container)."""

    kind: str
    offset: int
    size: int
    #: What declared it, when something did: ``mpf``, ``exif:thumbnail``, ``xmp:MotionPhoto``, ``xmp:MicroVideo``,
    #: ``samsung:MotionPhoto_Data``, ``samsung:<block>``, ``heif:mpvd``; empty when found by
    #: structure alone.
    source: str = ""
    #: Frames of its content that were decoded, hashed and classified (0: not scanned).
    frames_scanned: int = 0
    #: Why its content could not be scanned, when it was asked for.
    error: str | None = None
    #: Byte range of the scannable content when it starts after a header (a SEF block's name).
    content: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def note(self) -> str:
        """The media note naming it, e.g. ``trailing_mp4:1048576``."""
        return f"trailing_{self.kind}:{self.size}"

    def span(self) -> tuple[int, int]:
        return self.content or (self.offset, self.offset + self.size)

    def scanned(self, frames: int, error: str | None = None) -> "Trailer":
        return replace(self, frames_scanned=frames, error=error)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "offset": self.offset, "size": self.size}
        if self.source:
            out["source"] = self.source
        out["frames_scanned"] = self.frames_scanned
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Trailer":
        """The inverse of :meth:`to_dict` (a recorded verdict's media)."""
        error = raw.get("error")
        return cls(str(raw["kind"]), int(raw["offset"]), int(raw["size"]), str(raw.get("source", "")),
                   int(raw.get("frames_scanned", 0)), str(error) if error else None)


def find(data: bytes, fmt: str, layout: jpeg.Layout | None = None) -> tuple[Trailer, ...]:
    """Every part of ``data`` that is not the image itself; () when there is none."""
    hidden = list(_hidden_boxes(data)) if fmt in ("heif", "avif") else []
    if fmt == "jpeg" and layout is not None:
        hidden += _exif_thumbnails(data, layout)
    end = containers.image_end(data, fmt, layout)
    if end >= len(data):
        return tuple(hidden)
    declared = _declared(data, layout) if fmt == "jpeg" and layout is not None else {}
    return tuple(hidden) + _split(data, end, declared)


def _split(data: bytes, start: int, declared: dict[int, str]) -> tuple[Trailer, ...]:
    n = len(data)
    claimed = {t.offset: t for t in _samsung_blocks(data, start)}
    parts: list[Trailer] = []
    pos = start
    while pos < n:
        if len(parts) == MAX_PARTS - 1:
            parts.append(_unknown(data, pos, n))
            break
        if pos in claimed:
            part = claimed.pop(pos)
        elif data.startswith(b"\xff\xd8\xff", pos):
            walked = jpeg.parse(data, pos)
            end = walked.end if walked.end is not None else n
            part = Trailer(JPEG, pos, end - pos, declared.get(pos, ""))
        elif data[pos + 4:pos + 8] == b"ftyp":
            end = containers.bmff_end(data, pos)
            part = Trailer(MP4, pos, end - pos, declared.get(pos, ""))
        elif (framed := _framed(data, pos, min([o for o in claimed if o > pos] + [_next_known(data, pos, declared)]),
                                declared.get(pos, ""))) is not None:
            part = framed
        else:
            stop = min([o for o in claimed if o > pos] + [_next_known(data, pos, declared), n])
            video = data.find(b"ftyp", pos + 4, stop)
            if video >= 0 and containers.bmff_end(data, video - 4) > video:
                stop = video - 4  # an MP4 further on: the bytes before it are a part of their own
                if data[pos:stop].endswith(_SAMSUNG_MARKER) and stop - pos <= 64:
                    # Samsung's block name alone, with no SEF directory (older phones, some editors).
                    declared.setdefault(stop, f"samsung:{_SAMSUNG_MARKER.decode()}")
                    parts.append(Trailer(METADATA, pos, stop - pos, "samsung:marker"))
                    pos = stop
                    continue
            part = _unknown(data, pos, stop)
        if part.size <= 0:  # a header that claims nothing (an ftyp box of size 4): the rest is unknown
            part = _unknown(data, pos, n)
        parts.append(part)
        pos = part.offset + part.size
    return tuple(parts)


def _framed(data: bytes, pos: int, limit: int, source: str) -> Trailer | None:
    """The part at ``pos`` when its own framing says where it ends (an appended image, a
    ZIP, a run of PNG chunks), cut at ``limit`` (where a declared part starts); else None."""
    fmt = image_format(data, pos)
    if fmt is not None:
        end = containers.image_end(data[pos:limit], fmt) + pos if fmt in ("tiff", "bmp") else _image_end(data, pos, fmt)
        return Trailer(IMAGE, pos, min(end, limit) - pos, source or fmt)
    end = _png_chunks_end(data, pos, limit)
    if end > pos:
        return Trailer(sniff(data, pos, end), pos, end - pos, source or "png:chunks")
    zipped = _zip_span(data, pos, limit)
    if zipped is not None:
        start, end = zipped
        if start > pos:  # bytes before the archive are a part of their own
            return Trailer(sniff(data, pos, start), pos, start - pos, source)
        return Trailer(ZIP, pos, end - pos, source)
    return None


def image_format(data: bytes, pos: int) -> str | None:
    """The format of an image starting at ``pos`` whose end its own structure gives
    (JPEG and ISO BMFF files are split by :func:`_split` itself)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n", pos):
        return "png"
    if data[pos:pos + 6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"RIFF", pos) and data[pos + 8:pos + 12] == b"WEBP":
        return "webp"
    if containers.is_tiff(data, pos):
        return "tiff"
    if containers.is_bmp(data, pos):
        return "bmp"
    return None


def _image_end(data: bytes, pos: int, fmt: str) -> int:
    if fmt == "png":
        return containers.png_end(data, pos)
    if fmt == "gif":
        return containers.gif_end(data, pos)
    return containers.riff_end(data, pos)


#: A ZIP's end of central directory record: signature, then 18 bytes ending in the
#: comment's length.
_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22


def _zip_span(data: bytes, pos: int, limit: int) -> tuple[int, int] | None:
    """(start, end) of the ZIP whose end record is the first in ``data[pos:limit]``: it
    ends after that record's comment and starts where its directory's offsets say (at
    ``pos`` when they count from the start of the file, as a polyglot's may)."""
    record = data.find(_ZIP_END, pos, limit)
    if record < 0 or record + _ZIP_END_SIZE > limit:
        return None
    directory_size, directory_offset, comment = struct.unpack_from("<IIH", data, record + 12)
    end = min(record + _ZIP_END_SIZE + comment, limit)
    start = record - directory_size - directory_offset
    if not pos < start <= record:
        start = pos
    return start, end


def _png_chunks_end(data: bytes, pos: int, limit: int) -> int:
    """Offset after the run of whole PNG chunks (length, four letters, data, matching CRC)
    starting at ``pos``; ``pos`` when there is none (what a PNG's writer left after IEND)."""
    end = pos
    for _ in range(containers.MAX_STEPS):
        if end + 12 > limit:
            break
        length = struct.unpack_from(">I", data, end)[0]
        kind = data[end + 4:end + 8]
        stop = end + 12 + length
        if not kind.isalpha() or stop > limit:
            break
        if zlib.crc32(data[end + 4:stop - 4]) != struct.unpack_from(">I", data, stop - 4)[0]:
            break
        end = stop
    return end


def _next_known(data: bytes, pos: int, declared: dict[int, str]) -> int:
    """Where the next part some header declared starts (a motion photo's video), if any."""
    later = [o for o in declared if o > pos]
    return min(later) if later else len(data)


def _unknown(data: bytes, start: int, stop: int) -> Trailer:
    return Trailer(sniff(data, start, stop), start, stop - start)


def sniff(data: bytes, start: int, stop: int) -> str:
    """Name bytes that follow no structure we walk: zip, script, padding or unknown."""
    if data.count(b"\x00", start, stop) == stop - start:
        return PADDING
    if data.startswith(b"PK\x03\x04", start) or data.find(b"PK\x05\x06", start, stop) >= 0:
        return ZIP
    if _SCRIPT_MARKERS.search(data, start, min(stop, start + _SCRIPT_WINDOW)):
        return SCRIPT
    return UNKNOWN


# -- what the primary image's own headers declare ------------------------------------------


def _declared(data: bytes, layout: jpeg.Layout) -> dict[int, str]:
    """Offsets of parts a JPEG's headers announce (MPF images, XMP motion photo video)."""
    out: dict[int, str] = {}
    for segment in layout.app(0xE2, _MPF_PREFIX, data):
        for offset in _mpf_offsets(data, segment):
            out.setdefault(offset, "mpf")
    for segment in layout.app(0xE1, _XMP_PREFIX, data):
        xmp = segment.payload(data)[len(_XMP_PREFIX):]
        for offset, source in _xmp_video_offsets(xmp, len(data)):
            out.setdefault(offset, source)
    return out


def _mpf_offsets(data: bytes, segment: jpeg.Segment) -> list[int]:
    """File offsets of the secondary images an MPF index lists (CIPA DC-007)."""
    base = segment.payload_offset + len(_MPF_PREFIX)  # offsets count from the MPF TIFF header
    tiff = data[base:segment.offset + segment.length]
    if tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return []
    e = "<" if tiff[:2] == b"II" else ">"
    try:
        ifd = struct.unpack_from(e + "I", tiff, 4)[0]
        count = struct.unpack_from(e + "H", tiff, ifd)[0]
        for i in range(min(count, 64)):
            tag, _, n, value = struct.unpack_from(e + "HHII", tiff, ifd + 2 + 12 * i)
            if tag != 0xB002:  # MPEntry: 16 bytes per image
                continue
            offsets = []
            for j in range(min(n // 16, 64)):
                _, _, offset = struct.unpack_from(e + "III", tiff, value + 16 * j)
                if offset:  # the first image (offset 0) is the primary itself
                    offsets.append(base + offset)
            return offsets
    except struct.error:
        return []
    return []


_MICRO_VIDEO = re.compile(rb'MicroVideoOffset\s*=\s*"(\d+)"|<GCamera:MicroVideoOffset>(\d+)<')
_CONTAINER_ITEM = re.compile(rb"<Container:Item\b(.*?)/?>", re.DOTALL)
_ITEM_ATTR = re.compile(rb'Item:(Mime|Semantic|Length)\s*=\s*"([^"]*)"')


def _xmp_video_offsets(xmp: bytes, file_size: int) -> list[tuple[int, str]]:
    """Where XMP says a motion photo's video starts: ``GCamera:MicroVideoOffset`` (bytes
    from the end of the file) or the last ``Container:Directory`` item (Motion Photo
    format 1.0: items follow the primary in order, so the last one ends the file)."""
    out = []
    for match in _MICRO_VIDEO.finditer(xmp):
        offset = int(match.group(1) or match.group(2))
        if 0 < offset < file_size:
            out.append((file_size - offset, "xmp:MicroVideo"))
    items = [dict(_ITEM_ATTR.findall(m.group(1))) for m in _CONTAINER_ITEM.finditer(xmp)]
    if items and items[-1].get(b"Mime", b"").startswith(b"video/"):
        length = items[-1].get(b"Length", b"")
        if length.isdigit() and 0 < int(length) < file_size:
            out.append((file_size - int(length), "xmp:MotionPhoto"))
    return out


def motion_photo_markers(xmp: bytes) -> bool:
    """Whether an XMP packet says the file is a motion photo (Google or Samsung)."""
    return bool(re.search(rb"MicroVideo\s*=\s*\"1\"|MotionPhoto\s*=\s*\"1\"|Semantic\s*=\s*\"MotionPhoto\"", xmp))


# -- Samsung's SEF trailer -------------------------------------------------------------------


def _samsung_blocks(data: bytes, start: int) -> list[Trailer]:
    """The blocks a Samsung SEF trailer lists (``...[blocks][SEFH directory][size]SEFT``).

    Each directory entry gives a block's distance back from SEFH and its length; a
    block starts with a 2-byte marker, a 2-byte type, a 4-byte name length and the name.
    ``MotionPhoto_Data`` holds the MP4. Anything that does not add up is left to the
    structural walk (and so to ``unknown``).
    """
    n = len(data)
    if n - start < 12 or data[n - 4:] != b"SEFT":
        return []
    size = struct.unpack_from("<I", data, n - 8)[0]
    head = n - 8 - size
    if head < start or data[head:head + 4] != b"SEFH":
        return []
    try:
        count = struct.unpack_from("<I", data, head + 8)[0]
        parts = [Trailer(METADATA, head, n - head, "samsung:SEF directory")]
        for i in range(min(count, MAX_PARTS)):
            _, offset, length = struct.unpack_from("<III", data, head + 12 + 12 * i)
            block = head - offset
            if block < start or block + length > head or length < 8:
                return []
            name_len = struct.unpack_from("<I", data, block + 4)[0]
            if name_len > 256 or 8 + name_len > length:
                return []
            name = data[block + 8:block + 8 + name_len].decode("ascii", "replace")
            body = (block + 8 + name_len, block + length)
            if data[body[0] + 4:body[0] + 8] == b"ftyp":
                kind = MP4
            elif data.startswith(b"\xff\xd8\xff", body[0]):
                kind = JPEG
            elif image_format(data, body[0]) is not None:
                kind = IMAGE
            else:
                # A small block is metadata only if it does not look like something else:
                # a script or a ZIP under a Samsung block name is still a script or a ZIP.
                kind = sniff(data, *body)
                if kind in (UNKNOWN, PADDING) and length <= MAX_METADATA_BLOCK:
                    kind = METADATA
            parts.append(Trailer(kind, block, length, f"samsung:{name}", content=body))
    except struct.error:
        return []
    return parts


# -- inside the image's own metadata ---------------------------------------------------------

_EXIF_PREFIX = b"Exif\x00\x00"
#: IFD1 tags giving a JPEG thumbnail's offset (from the TIFF header) and length.
_THUMBNAIL_OFFSET, _THUMBNAIL_LENGTH = 0x0201, 0x0202


def _exif_thumbnails(data: bytes, layout: jpeg.Layout) -> list[Trailer]:
    """The JPEG thumbnail an EXIF block carries (IFD1), as a part to scan: galleries and
    file browsers show it instead of the photo, so a banned picture can hide there
    behind an innocent one. Only a thumbnail wholly inside its APP1 segment and starting
    like a JPEG is one a viewer can show."""
    out = []
    for segment in layout.app(0xE1, _EXIF_PREFIX, data):
        base = segment.payload_offset + len(_EXIF_PREFIX)
        stop = segment.offset + segment.length
        found = _ifd1_thumbnail(data[base:stop])
        if found is None:
            continue
        start, end = base + found[0], base + found[0] + found[1]
        if end <= stop and data.startswith(b"\xff\xd8", start):
            out.append(Trailer(JPEG, start, end - start, "exif:thumbnail", content=(start, end)))
    return out


def _ifd1_thumbnail(tiff: bytes) -> tuple[int, int] | None:
    """(offset, length) of the JPEG thumbnail IFD1 of a TIFF-structured EXIF block names."""
    if tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    e = "<" if tiff[:2] == b"II" else ">"
    try:
        ifd0 = struct.unpack_from(e + "I", tiff, 4)[0]
        count = struct.unpack_from(e + "H", tiff, ifd0)[0]
        ifd1 = struct.unpack_from(e + "I", tiff, ifd0 + 2 + 12 * count)[0]
        if not ifd1:
            return None
        tags = {}
        for i in range(min(struct.unpack_from(e + "H", tiff, ifd1)[0], 256)):
            tag, kind, _, value = struct.unpack_from(e + "HHI4s", tiff, ifd1 + 2 + 12 * i)
            if tag in (_THUMBNAIL_OFFSET, _THUMBNAIL_LENGTH):
                tags[tag] = struct.unpack_from(e + ("H" if kind == 3 else "I"), value)[0]
    except struct.error:
        return None
    if tags.get(_THUMBNAIL_OFFSET) and tags.get(_THUMBNAIL_LENGTH):
        return tags[_THUMBNAIL_OFFSET], tags[_THUMBNAIL_LENGTH]
    return None


# -- inside an ISO BMFF still image ----------------------------------------------------------


def _hidden_boxes(data: bytes) -> list[Trailer]:
    """Top-level boxes of a HEIF/AVIF file that carry a whole other file: Samsung's ``mpvd``
    (its motion photo's MP4)."""
    out = []
    for box in containers.boxes(data, 0, len(data)):
        if box.kind == b"mpvd":
            out.append(Trailer(MP4, box.start, box.end - box.start, "heif:mpvd", content=(box.body, box.end)))
    return out
