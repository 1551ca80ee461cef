"""Where an image's own bytes end, for the formats whose structure says so.

Viewers stop at the end of the image; whatever follows (a motion photo's video, a ZIP,
a script) is invisible to them and to the decoder, so :mod:`.trailing` looks at it
separately. Each function walks the format's framing only (chunk lengths, block
sizes, box sizes), never the compressed data, and returns where that framing stops:
just past the end marker, or where the structure stopped making sense. Fail closed:
a PNG whose IEND was replaced by a ZIP still has the ZIP looked at, from the first
chunk that does not add up.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from . import jpeg

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
#: Bounds the walk of a file made of nothing but tiny chunks, blocks or boxes; a walk
#: that runs out stops there, and the rest is looked at as trailing data.
MAX_STEPS = 1_000_000


def image_end(data: bytes, fmt: str, layout: jpeg.Layout | None = None) -> int:
    """Offset where the image's structure stops (``len(data)`` for TIFF and BMP, whose
    end is not framed, and for a file cut short, which the decoder refuses anyway)."""
    if fmt == "jpeg":
        walked = layout or jpeg.parse(data)
        return walked.end if walked.end is not None else walked.stop
    if fmt == "png":
        return png_end(data)
    if fmt == "gif":
        return gif_end(data)
    if fmt == "webp":
        return riff_end(data)
    if fmt in ("heif", "avif"):
        return bmff_end(data, 0)
    return len(data)


def png_end(data: bytes) -> int:
    pos, steps = len(_PNG_SIG), 0
    while pos + 12 <= len(data) and steps < MAX_STEPS:
        length = struct.unpack_from(">I", data, pos)[0]
        kind = data[pos + 4:pos + 8]
        if pos + 12 + length > len(data):
            return pos
        pos += 12 + length
        if kind == b"IEND":
            return pos
        steps += 1
    return pos


def gif_end(data: bytes) -> int:
    if len(data) < 13:
        return len(data)
    pos = 13
    flags = data[10]
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    steps = [0]
    while pos < len(data) and steps[0] < MAX_STEPS:
        steps[0] += 1
        block = data[pos]
        if block == 0x3B:  # trailer
            return pos + 1
        if block == 0x21:  # extension: label, then sub-blocks
            after = _sub_blocks(data, pos + 2, steps)
        elif block == 0x2C:  # image descriptor, optional local table, LZW size, sub-blocks
            if pos + 10 > len(data):
                return len(data)
            local = data[pos + 9]
            table = 3 << ((local & 7) + 1) if local & 0x80 else 0
            after = _sub_blocks(data, pos + 10 + table + 1, steps)
        else:
            return pos
        if after < 0:
            return len(data)  # cut short inside the image: the decoder's business
        pos = after
    return min(pos, len(data))


def _sub_blocks(data: bytes, pos: int, steps: list[int]) -> int:
    """Offset after a chain of GIF data sub-blocks starting at ``pos``; -1 if cut short."""
    n = len(data)
    while pos < n:
        steps[0] += 1
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
        if steps[0] >= MAX_STEPS:
            return pos
    return -1


def riff_end(data: bytes) -> int:
    if len(data) < 12:
        return len(data)
    size = struct.unpack_from("<I", data, 4)[0]
    return min(8 + size + (size & 1), len(data))


@dataclass(frozen=True)
class Box:
    """One ISO BMFF box: ``data[start:end]``, its payload from ``body``."""

    kind: bytes
    start: int
    body: int
    end: int


def boxes(data: bytes, start: int, stop: int) -> Iterator[Box]:
    """The boxes laid end to end in ``data[start:stop]``; stops at the first that does not fit
    or whose type is not four printable characters (the structure ends there)."""
    pos, steps = start, 0
    while pos + 8 <= stop and steps < MAX_STEPS:
        steps += 1
        size, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if size == 1:
            if pos + 16 > stop:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            body = pos + 16
        elif size == 0:
            size = stop - pos  # extends to the end
        if size < body - pos or pos + size > stop or not all(0x20 <= c < 0x7F for c in kind):
            return
        yield Box(kind, pos, body, pos + size)
        pos += size


def bmff_end(data: bytes, start: int) -> int:
    """Offset just past the last whole top-level box of an ISO BMFF file at ``start``."""
    end = start
    for box in boxes(data, start, len(data)):
        end = box.end
    return end
