"""JPEG structure: where the segments are, what the frame header declares, where the image ends.

Pillow tells us what a JPEG decodes to; it does not tell us what decoding will cost
(progressive files hold every DCT coefficient in memory), nor where the image's bytes
stop (anything after EOI is invisible to a viewer, and is where motion photos keep
their video and polyglots their ZIP), nor which APP segments carry location data.
This module walks the marker structure once, without decoding anything, and answers
those three questions for :mod:`photosentry.media.budget`, :mod:`.trailing` and
:mod:`.scrub`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

SOI = b"\xff\xd8"
#: Start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not frames).
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Frames whose coefficients are all held in memory before any output row exists.
PROGRESSIVE_MARKERS = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
LOSSLESS_MARKERS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
SOS, EOI = 0xDA, 0xD9
#: Markers without a length field.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: In entropy-coded data, 0xFF is followed by 0x00 (stuffing) or a restart marker;
#: anything else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
#: Bounds the walk of a hostile file made of nothing but tiny segments.
MAX_SEGMENTS = 100_000


@dataclass(frozen=True)
class Segment:
    """One marker segment: ``data[offset:offset + length]`` is the whole segment."""

    marker: int
    offset: int
    length: int

    @property
    def payload_offset(self) -> int:
        return self.offset + 4

    def payload(self, data: bytes) -> bytes:
        return data[self.offset + 4:self.offset + self.length]


@dataclass(frozen=True)
class Frame:
    """What the start-of-frame header declares."""

    marker: int
    width: int
    height: int
    #: (component id, horizontal sampling, vertical sampling) per component.
    components: tuple[tuple[int, int, int], ...]

    @property
    def progressive(self) -> bool:
        return self.marker in PROGRESSIVE_MARKERS

    @property
    def lossless(self) -> bool:
        return self.marker in LOSSLESS_MARKERS

    def coefficient_bytes(self) -> int:
        """Bytes of DCT coefficients the whole frame holds (2 bytes each, 64 per block):
        what libjpeg keeps in memory for a progressive or multi-scan file."""
        hmax = max((h for _, h, _ in self.components), default=1) or 1
        vmax = max((v for _, _, v in self.components), default=1) or 1
        total = 0
        for _, h, v in self.components:
            cols = _ceil_div(_ceil_div(self.width * h, hmax), 8)
            rows = _ceil_div(_ceil_div(self.height * v, vmax), 8)
            total += cols * rows * 128
        return total


@dataclass(frozen=True)
class Layout:
    """The marker structure of one JPEG image starting at ``start``."""

    start: int
    #: Segments before the first scan (APPn, DQT, SOF, DHT ...), then those between scans.
    segments: tuple[Segment, ...]
    frame: Frame | None
    #: Components in the first scan; fewer than the frame's means a multi-scan
    #: sequential file, which is buffered whole like a progressive one.
    first_scan_components: int
    #: Offset just past EOI; None when the image never ends (truncated or corrupt).
    end: int | None
    #: Where the walk stopped: ``end``, or where the structure stopped making sense
    #: (the end of the data for a file cut short in its entropy-coded data).
    stop: int = 0
    #: SOS segments walked: libjpeg re-reads its whole coefficient buffer for each scan
    #: of a progressive file, so this (not the file's size) bounds its decoding time.
    scans: int = 0

    @property
    def buffered(self) -> bool:
        """libjpeg must hold every coefficient before it outputs a row."""
        if self.frame is None:
            return False
        return self.frame.progressive or 0 < self.first_scan_components < len(self.frame.components)

    def app(self, marker: int, prefix: bytes, data: bytes) -> list[Segment]:
        """The APPn segments whose payload starts with ``prefix`` (e.g. ``b"Exif\\0\\0"``)."""
        return [s for s in self.segments if s.marker == marker and data[s.payload_offset:].startswith(prefix)]


def parse(data: bytes, start: int = 0) -> Layout:
    """Walk the JPEG at ``data[start:]`` (it must begin with SOI) to its EOI.

    Never raises on corrupt data: the walk stops where the structure stops making
    sense, and ``end`` is None unless a real EOI was reached.
    """
    if data[start:start + 2] != SOI:
        raise ValueError("not a JPEG: no SOI marker")
    segments: list[Segment] = []
    frame: Frame | None = None
    first_scan = 0
    scans = 0
    pos = start + 2
    n = len(data)
    while pos + 1 < n and len(segments) < MAX_SEGMENTS:
        if data[pos] != 0xFF:
            return Layout(start, tuple(segments), frame, first_scan, None, pos, scans)
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= n:
            break
        marker = data[pos + 1]
        if marker == EOI:
            return Layout(start, tuple(segments), frame, first_scan, pos + 2, pos + 2, scans)
        if marker in _STANDALONE or marker == 0xD8:
            pos += 2
            continue
        if pos + 4 > n:
            break
        length = struct.unpack_from(">H", data, pos + 2)[0] + 2
        if length < 4 or pos + length > n:
            return Layout(start, tuple(segments), frame, first_scan, None, pos, scans)
        segment = Segment(marker, pos, length)
        segments.append(segment)
        if marker in SOF_MARKERS and frame is None:
            frame = _frame(data, segment)
        pos += length
        if marker == SOS:
            scans += 1
            if not first_scan and length >= 5:
                first_scan = data[segment.payload_offset]
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return Layout(start, tuple(segments), frame, first_scan, None, n, scans)
            pos = found.start()
    return Layout(start, tuple(segments), frame, first_scan, None, min(pos, n), scans)


def _frame(data: bytes, segment: Segment) -> Frame | None:
    body = segment.payload(data)
    if len(body) < 6:
        return None
    height, width, count = struct.unpack_from(">HHB", body, 1)
    components = []
    for i in range(count):
        at = 6 + 3 * i
        if at + 2 >= len(body):
            break
        sampling = body[at + 1]
        components.append((body[at], sampling >> 4, sampling & 0x0F))
    return Frame(segment.marker, width, height, tuple(components))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
