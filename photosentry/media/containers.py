"""Where an image's own bytes end, for the formats whose structure says so.

Viewers stop at the end of the image; whatever follows (a motion photo's video, a ZIP,
a script) is invisible to them and to the decoder, so :mod:`.trailing` looks at it
separately. Each function walks the format's framing only (chunk lengths, block
sizes, box sizes), never the compressed data, and returns where that framing stops:
just past the end marker, or where the structure stopped making sense. Fail closed:
a PNG whose IEND was replaced by a ZIP still has the ZIP looked at, from the first
chunk that does not add up.

:func:`coded_frame_sizes` reads, the same way, the frame size an AVIF's AV1 data or a
HEIC's HEVC data codes, which the decoder allocates whatever the ``ispe`` box declares.
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
    """Offset where the image's structure stops (``len(data)`` for a file cut short,
    which the decoder refuses anyway)."""
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
    if fmt == "tiff":
        return tiff_end(data)
    if fmt == "bmp":
        return bmp_end(data)
    return len(data)


def png_end(data: bytes, start: int = 0) -> int:
    pos, steps = start + len(_PNG_SIG), 0
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


def gif_end(data: bytes, start: int = 0) -> int:
    if len(data) - start < 13:
        return len(data)
    pos = start + 13
    flags = data[start + 10]
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


def riff_end(data: bytes, start: int = 0) -> int:
    if len(data) - start < 12:
        return len(data)
    size = struct.unpack_from("<I", data, start + 4)[0]
    return min(start + 8 + size + (size & 1), len(data))


#: BMP info header sizes (core, v1 ... v5): anything else is not a BMP header.
_BMP_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})


def is_bmp(data: bytes, start: int = 0) -> bool:
    """``BM`` followed by a header that adds up (two letters alone are too common in text)."""
    if not data.startswith(b"BM", start) or len(data) - start < 26:
        return False
    offset, header = struct.unpack_from("<II", data, start + 10)
    return header in _BMP_HEADERS and 14 + header <= offset <= 1 << 24


def bmp_end(data: bytes, start: int = 0) -> int:
    """Where a BMP's pixel data ends: its offset plus the rows its header declares (or the
    stored size of compressed data). The declared file size is not trusted: decoders
    ignore it, so it could claim appended bytes as the image's own."""
    if not is_bmp(data, start):
        return len(data)
    declared, offset, header = struct.unpack_from("<I4xII", data, start + 2)
    if header == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", data, start + 18)
        compression, stored = 0, 0
    elif len(data) - start >= 38:
        width, height, _, bits, compression, stored = struct.unpack_from("<iiHHII", data, start + 18)
    else:
        return len(data)
    if compression in (0, 3, 6):  # rows of pixels (3, 6: with colour masks in the header)
        pixels = ((abs(width) * bits + 31) // 32) * 4 * abs(height)
    elif stored:
        pixels = stored
    else:  # compressed with no stored size: only the declared size says where it ends
        pixels = declared - offset
    return min(start + offset + max(pixels, 0), len(data))


#: Bytes per value of each TIFF field type (TIFF 6.0 and BigTIFF's 8-byte ones).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}
#: (offsets tag, byte counts tag): strips, tiles, an old-style JPEG thumbnail.
_TIFF_DATA_TAGS = ((273, 279), (324, 325), (513, 514))
#: Tags whose values are offsets of further IFDs: SubIFDs, Exif, GPS, Interoperability.
_TIFF_IFD_TAGS = frozenset({330, 34665, 34853, 40965})
#: Most IFDs walked in one TIFF (pages, sub-images, Exif and GPS directories).
_MAX_IFDS = 1024


def is_tiff(data: bytes, start: int = 0) -> bool:
    return data[start:start + 4] in (b"II*\x00", b"MM\x00*")


def tiff_end(data: bytes, start: int = 0) -> int:
    """Just past the last byte any IFD of a TIFF at ``start`` refers to: the directories,
    every value stored outside them, strips, tiles and the JPEG thumbnail, following the
    page chain and the SubIFD, Exif, GPS and Interoperability directories. A reference
    past the end of the data is not counted: it would otherwise claim whatever was
    appended as the image's own (a file cut short is the decoder's to refuse)."""
    if not is_tiff(data, start):
        return len(data)
    e = "<" if data[start] == 0x49 else ">"
    n = len(data)

    def at(offset: int) -> int:
        return start + offset

    end = start + 8
    try:
        pending = [struct.unpack_from(e + "I", data, start + 4)[0]]
        seen: set[int] = set()
        while pending and len(seen) < _MAX_IFDS:
            ifd = pending.pop()
            if ifd == 0 or ifd in seen or at(ifd) + 2 > n:
                continue
            seen.add(ifd)
            count = struct.unpack_from(e + "H", data, at(ifd))[0]
            if at(ifd) + 2 + 12 * count + 4 > n:
                continue  # a directory cut short: from here on is looked at as trailing data
            end = max(end, at(ifd) + 2 + 12 * count + 4)
            values: dict[int, list[int]] = {}
            for i in range(count):
                tag, kind, number, raw = struct.unpack_from(e + "HHI4s", data, at(ifd) + 2 + 12 * i)
                size = _TIFF_TYPE_SIZES.get(kind, 1) * number
                where = at(ifd) + 2 + 12 * i + 8 if size <= 4 else at(struct.unpack(e + "I", raw)[0])
                if size > 4 and where + size <= n:  # past the end: a claim, not the image's bytes
                    end = max(end, where + size)
                if kind in (3, 4, 13) and (tag in _TIFF_IFD_TAGS or any(tag in pair for pair in _TIFF_DATA_TAGS)):
                    fmt = e + ("H" if kind == 3 else "I") * min(number, (n - where) // _TIFF_TYPE_SIZES[kind])
                    values[tag] = list(struct.unpack_from(fmt, data, where))
            for offsets_tag, counts_tag in _TIFF_DATA_TAGS:
                for offset, length in zip(values.get(offsets_tag, []), values.get(counts_tag, [])):
                    if at(offset) + length <= n:
                        end = max(end, at(offset) + length)
            for tag in _TIFF_IFD_TAGS & values.keys():
                pending.extend(values[tag])
            pending.append(struct.unpack_from(e + "I", data, at(ifd) + 2 + 12 * count)[0])
    except struct.error:
        pass  # what was walked stands; the rest is looked at as trailing data
    return min(end, n)


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


# -- what an AVIF's AV1 data says about its size -------------------------------------------
#
# ``ispe`` declares an item's size, and it is what Pillow reports and the budget checks;
# but the AV1 or HEVC decoder allocates what the coded data's sequence header or SPS
# says, before libavif or libheif compares the two. An AVIF whose ``ispe`` says 64x64
# over a 8192x8192 sequence header has its 67 MP frame decoded anyway (then cropped), so
# the budget must see the coded size too.

#: Boxes whose payload is more boxes (after the header bytes given) on the way to an
#: ``av1C`` or ``hvcC``: the item properties of a still, the sample description of a sequence.
_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0, b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0,
               b"stbl": 0, b"stsd": 8, b"av01": 78, b"hvc1": 78, b"hev1": 78}
#: Per format: the codec configuration box, and the item type whose data is coded frames.
_CODECS = {"avif": (b"av1C", b"av01"), "heif": (b"hvcC", b"hvc1")}
_HEVC_SPS = 33
#: Most coded items whose data is read (libheif refuses files with more than 1,000 items).
_MAX_ITEMS = 1024
_OBU_SEQUENCE_HEADER = 1


def coded_frame_sizes(data: bytes, fmt: str) -> list[tuple[int, int]]:
    """The frame size (width, height) every sequence parameter set of an AVIF or HEIC
    codes: an AV1 sequence header's maximum frame size (in ``av1C`` config OBUs and at
    the start of each ``av01`` item's data), an HEVC SPS's picture size (in ``hvcC`` and
    at the start of each ``hvc1`` item's data). Never raises; what does not parse is
    skipped (the decoder then refuses it)."""
    if fmt not in _CODECS:
        return []
    config, item_type = _CODECS[fmt]
    sizes: list[tuple[int, int]] = []
    meta: Box | None = None
    stack = [(0, len(data), 0)]
    steps = 0
    while stack and steps < MAX_STEPS:
        start, stop, depth = stack.pop()
        for box in boxes(data, start, stop):
            steps += 1
            if box.kind == b"meta" and depth == 0:
                meta = box
            if box.kind == config:
                sizes.extend(_config_sizes(data, box, fmt))
            elif box.kind in _CONTAINERS and depth < 8:
                stack.append((box.body + _CONTAINERS[box.kind], box.end, depth + 1))
    if meta is not None:
        try:
            for start, stop in _item_data(data, meta, item_type):
                stop = min(stop, start + 4096, len(data))
                if fmt == "avif":
                    sizes.extend(_sequence_sizes(data, start, stop))
                else:
                    sizes.extend(_nal_sizes(data, start, stop, 4))
        except (IndexError, struct.error):
            pass  # a meta box that does not add up: libavif or libheif refuses it
    return sizes


def _config_sizes(data: bytes, box: Box, fmt: str) -> list[tuple[int, int]]:
    try:
        if fmt == "avif":
            return _sequence_sizes(data, box.body + 4, box.end) if box.end - box.body > 4 else []
        return _hvcc_sizes(data, box)
    except (IndexError, struct.error):
        return []


def _hvcc_sizes(data: bytes, box: Box) -> list[tuple[int, int]]:
    """Picture sizes of the SPS NAL units in an ``hvcC`` box's arrays (ISO 14496-15 8.3.3)."""
    out = []
    pos = box.body + 22
    arrays = data[pos]
    pos += 1
    for _ in range(arrays):
        kind, count = data[pos] & 0x3F, struct.unpack_from(">H", data, pos + 1)[0]
        pos += 3
        for _ in range(count):
            length = struct.unpack_from(">H", data, pos)[0]
            if kind == _HEVC_SPS:
                found = _sps_size(data[pos + 2:min(pos + 2 + length, box.end)])
                if found is not None:
                    out.append(found)
            pos += 2 + length
            if pos > box.end:
                return out
    return out


def _nal_sizes(data: bytes, start: int, stop: int, length_size: int) -> list[tuple[int, int]]:
    """Picture sizes of the SPS NAL units among the first length-prefixed NAL units of
    ``data[start:stop]`` (an item may carry its own SPS, which the decoder then uses)."""
    out = []
    pos = start
    for _ in range(16):
        if pos + length_size + 2 > stop:
            break
        length = int.from_bytes(data[pos:pos + length_size], "big")
        nal = data[pos + length_size:min(pos + length_size + length, stop)]
        if (nal[0] >> 1) & 0x3F == _HEVC_SPS:
            found = _sps_size(nal)
            if found is not None:
                out.append(found)
        pos += length_size + length
    return out


def _sps_size(nal: bytes) -> tuple[int, int] | None:
    """``pic_width_in_luma_samples`` x ``pic_height_in_luma_samples`` of an HEVC SPS NAL
    unit (H.265 7.3.2.2), after its 2-byte header and emulation prevention bytes."""
    bits = _Bits(nal[2:].replace(b"\x00\x00\x03", b"\x00\x00"))
    try:
        bits.read(4)  # sps_video_parameter_set_id
        sub_layers = bits.read(3)
        bits.read(1)
        bits.read(96)  # general profile, tier and level
        present = [(bits.read(1), bits.read(1)) for _ in range(sub_layers)]
        if sub_layers:
            bits.read(2 * (8 - sub_layers))
        for profile, level in present:
            bits.read(88 * profile + 8 * level)
        bits.uvlc()  # sps_seq_parameter_set_id
        chroma = bits.uvlc()
        if chroma == 3:  # 4:4:4
            bits.read(1)
        width, height = bits.uvlc(), bits.uvlc()
        if bits.read(1):  # the conformance window crops the coded size to the picture's
            left, right, top, bottom = bits.uvlc(), bits.uvlc(), bits.uvlc(), bits.uvlc()
            width -= (2 if chroma in (1, 2) else 1) * (left + right)
            height -= (2 if chroma == 1 else 1) * (top + bottom)
        return max(width, 1), max(height, 1)
    except IndexError:
        return None


def _item_data(data: bytes, meta: Box, item_type: bytes) -> list[tuple[int, int]]:
    """File ranges of the first extent of each item of ``item_type`` (``iinf`` names the
    type, ``iloc`` the bytes; only items stored in the file itself, construction method 0)."""
    children = {b.kind: b for b in boxes(data, meta.body + 4, meta.end)}
    wanted = set()
    if b"iinf" in children:
        iinf = children[b"iinf"]
        first = iinf.body + (6 if data[iinf.body] == 0 else 8)
        for entry in boxes(data, first, iinf.end):
            version = data[entry.body] if entry.body < entry.end else 0
            if entry.kind != b"infe" or version < 2:
                continue
            id_size = 2 if version == 2 else 4
            at = entry.body + 4
            if at + id_size + 6 > entry.end:
                continue
            item = int.from_bytes(data[at:at + id_size], "big")
            if data[at + id_size + 2:at + id_size + 6] == item_type:
                wanted.add(item)
    if not wanted or b"iloc" not in children:
        return []
    return [span for item, span in _iloc(data, children[b"iloc"]) if item in wanted]


def _iloc(data: bytes, iloc: Box) -> Iterator[tuple[int, tuple[int, int]]]:
    """(item id, (start, stop) of its first extent) for items stored at file offsets."""
    version = data[iloc.body]
    pos = iloc.body + 4
    sizes = data[pos] >> 4, data[pos] & 15, data[pos + 1] >> 4, data[pos + 1] & 15
    offset_size, length_size, base_size = sizes[0], sizes[1], sizes[2]
    index_size = sizes[3] if version in (1, 2) else 0
    pos += 2
    wide = version == 2
    count = _uint(data, pos, 4 if wide else 2)
    pos += 4 if wide else 2

    def take(size: int) -> int:
        nonlocal pos
        if pos + size > iloc.end:
            raise IndexError("iloc runs past its box")
        value = _uint(data, pos, size)
        pos += size
        return value

    for _ in range(min(count, _MAX_ITEMS)):
        item = take(4 if wide else 2)
        method = take(2) & 15 if version in (1, 2) else 0
        take(2)  # data reference index
        base = take(base_size)
        extents = take(2)
        first: tuple[int, int] | None = None
        for _ in range(min(extents, _MAX_ITEMS)):
            take(index_size)
            offset, length = take(offset_size), take(length_size)
            if first is None:
                first = (base + offset, base + offset + (length or len(data)))
        if method == 0 and first is not None and first[0] < len(data):
            yield item, first


def _uint(data: bytes, pos: int, size: int) -> int:
    if size == 0:
        return 0
    if pos + size > len(data):
        raise IndexError("past the end of the data")
    return int.from_bytes(data[pos:pos + size], "big")


def _sequence_sizes(data: bytes, start: int, stop: int) -> list[tuple[int, int]]:
    """Max frame sizes of the sequence header OBUs among the OBUs in ``data[start:stop]``."""
    out = []
    pos = start
    for _ in range(16):
        if pos >= stop:
            break
        header = data[pos]
        kind, extension, has_size = (header >> 3) & 15, header & 4, header & 2
        pos += 2 if extension else 1
        if not has_size:
            size = stop - pos
        else:
            size, pos = _leb128(data, pos, stop)
            if size < 0:
                break
        if kind == _OBU_SEQUENCE_HEADER:
            found = _sequence_size(data[pos:min(pos + size, stop)])
            if found is not None:
                out.append(found)
        pos += size
    return out


def _leb128(data: bytes, pos: int, stop: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= stop:
            return -1, pos
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    return -1, pos


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise IndexError("sequence header cut short")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def uvlc(self) -> int:
        zeros = 0
        while not self.read(1):
            zeros += 1
            if zeros >= 32:
                raise IndexError("uvlc too long")
        return self.read(zeros) + (1 << zeros) - 1


def _sequence_size(payload: bytes) -> tuple[int, int] | None:
    """``max_frame_width`` x ``max_frame_height`` of an AV1 sequence header OBU (AV1 spec 5.5)."""
    bits = _Bits(payload)
    try:
        bits.read(3)  # seq_profile
        bits.read(1)  # still_picture
        if bits.read(1):  # reduced_still_picture_header
            bits.read(5)
        else:
            buffer_delay_bits = 0
            if bits.read(1):  # timing_info_present_flag
                bits.read(64)
                if bits.read(1):  # equal_picture_interval
                    bits.uvlc()
            decoder_model = bits.read(1)
            if decoder_model:
                buffer_delay_bits = bits.read(5) + 1
                bits.read(32 + 5 + 5)
            initial_display_delay = bits.read(1)
            for _ in range(bits.read(5) + 1):  # operating points
                bits.read(12)
                if bits.read(5) > 7:  # seq_level_idx
                    bits.read(1)
                if decoder_model and bits.read(1):
                    bits.read(2 * buffer_delay_bits + 1)
                if initial_display_delay and bits.read(1):
                    bits.read(4)
        width_bits, height_bits = bits.read(4) + 1, bits.read(4) + 1
        return bits.read(width_bits) + 1, bits.read(height_bits) + 1
    except IndexError:
        return None


# -- how long each frame of an animation is shown --------------------------------------------


def frame_durations(data: bytes, fmt: str) -> list[int] | None:
    """Display time of each frame in milliseconds, as the file declares it (GIF graphic
    control extensions, WebP ANMF chunks, APNG fcTL chunks), read from the framing
    without decoding; None for other formats or when the framing does not add up."""
    try:
        if fmt == "gif":
            return _gif_durations(data)
        if fmt == "webp":
            return _webp_durations(data)
        if fmt == "png":
            return _apng_durations(data)
    except (IndexError, struct.error):
        return None
    return None


def _gif_durations(data: bytes) -> list[int] | None:
    pos = 13
    flags = data[10]
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    out: list[int] = []
    delay = 0
    steps = [0]
    while pos < len(data) and steps[0] < MAX_STEPS:
        steps[0] += 1
        block = data[pos]
        if block == 0x3B:
            break
        if block == 0x21:
            if data[pos + 1] == 0xF9 and data[pos + 2] >= 4:  # graphic control: delay in 1/100 s
                delay = struct.unpack_from("<H", data, pos + 4)[0] * 10
            after = _sub_blocks(data, pos + 2, steps)
        elif block == 0x2C:
            local = data[pos + 9]
            table = 3 << ((local & 7) + 1) if local & 0x80 else 0
            after = _sub_blocks(data, pos + 10 + table + 1, steps)
            out.append(delay)
            delay = 0
        else:
            return None
        if after < 0:
            break
        pos = after
    return out


def _webp_durations(data: bytes) -> list[int] | None:
    out = []
    pos, end = 12, riff_end(data)
    for _ in range(MAX_STEPS):
        if pos + 8 > end:
            break
        kind, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if kind == b"ANMF":
            out.append(int.from_bytes(data[pos + 8 + 12:pos + 8 + 15], "little"))
        pos += 8 + size + (size & 1)
    return out or None


def _apng_durations(data: bytes) -> list[int] | None:
    out = []
    pos = len(_PNG_SIG)
    for _ in range(MAX_STEPS):
        if pos + 12 > len(data):
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"fcTL":
            numerator, denominator = struct.unpack_from(">HH", data, pos + 8 + 20)
            out.append(numerator * 1000 // (denominator or 100))
        if kind == b"IEND":
            break
        pos += 12 + length
    return out or None
