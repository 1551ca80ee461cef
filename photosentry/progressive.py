"""Progressive JPEGs decoded at 1/8 scale from their DC scans alone.

At 1/8 scale libjpeg computes each full-resolution component's pixel from its block's
DC coefficient only (the 1x1 inverse DCT), yet for a progressive JPEG it still
entropy-decodes every AC scan first: most of the file, and most of the time (a 12 MP
progressive photo: ~60 ms at 1/8 scale, against ~10 ms for a baseline one). This
module rewrites such a file into one libjpeg decodes to the *same pixels* for a
fraction of the work:

- every segment before and between the scans is kept in order (tables, EXIF,
  restart intervals), and so is every DC scan (first and refinement);
- the AC scans of full-resolution components are dropped, and each such component
  gets one synthetic AC scan that codes all its blocks as zero (a run of
  end-of-band codes, a few bytes). Without it libjpeg would see those coefficients
  as "not yet received" and smooth the blocks (estimating AC terms from the
  neighbours' DC), which changes the pixels; coded as zero, nothing is estimated,
  and the 1x1 inverse DCT never reads them;
- subsampled components keep all their scans: libjpeg-turbo decodes 4:2:0 chroma
  at 1/8 scale with a 2x2 inverse DCT (scaling up by the DCT instead of upsampling),
  which reads AC coefficients. Only on libjpeg-turbo, whose rule is known
  (``jdmaster.c``: a component is scaled up only when both its axes are), are the
  AC scans of chroma that is not scaled up (4:2:2, 4:4:0) dropped as well.

Only a file whose whole structure parses (every segment, every scan up to the end of
image marker, Huffman-coded progressive, one to three components) is rewritten; any
other gets None and is decoded as it is, so a truncated or odd file fails or
succeeds exactly as before. tests/test_progressive.py checks pixel-for-pixel equality
with the full decode at 1/8 scale.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from PIL import features

SCALE = 8
"""The only scale at which the DC coefficients alone make the picture."""

_SOF_PROGRESSIVE = 0xC2
# Every other start-of-frame: baseline/extended (no separate AC scans to drop), lossless,
# hierarchical, arithmetic-coded: left to libjpeg as they are.
_SOF_OTHER = frozenset({0xC0, 0xC1, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS, _EOI, _DHT, _DRI = 0xDA, 0xD9, 0xC4, 0xDD
# The end of a scan's entropy-coded data: 0xFF followed by anything but a stuffed zero,
# a restart marker (RST0-7, part of the scan) or another 0xFF (fill).
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_EOB_RUN_MAX_LOG2 = 14  # EOB14: a run of 2^14 .. 2^15 - 1 blocks


@dataclass(frozen=True)
class _Component:
    ident: int
    h: int
    v: int


def dc_only(data: bytes, *, turbo: bool | None = None) -> bytes | None:
    """``data`` rewritten to decode identically at 1/8 scale, or None to decode it as it is.

    Args:
        data: a JPEG file (the caller has sniffed it).
        turbo: whether Pillow's libjpeg is libjpeg-turbo (None: ask Pillow); decides
            whether chroma that is not scaled up by the DCT may lose its AC scans.
    """
    if turbo is None:
        turbo = bool(features.check_feature("libjpeg_turbo"))
    try:
        return _rewrite(data, turbo)
    except (IndexError, struct.error):
        return None  # a segment shorter than its fields: not a file to be clever with


def _rewrite(data: bytes, turbo: bool) -> bytes | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    out: list[bytes] = [b"\xff\xd8"]
    components: list[_Component] | None = None
    size = (0, 0)
    dc_only_ids: set[int] = set()
    dropped = 0
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= n:
            return None
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            if components is None or not dropped:
                return None
            out.append(_zero_ac_scans(components, size, dc_only_ids))
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7 or marker == 0xD8:
            return None  # TEM, a stray RST or a second SOI: not a plain file
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > n:
            return None
        body = data[pos + 2 : pos + length]
        segment = data[pos - 2 : pos + length]
        pos += length
        if marker in _SOF_OTHER:
            return None
        if marker == _SOF_PROGRESSIVE:
            if components is not None:
                return None
            height, width, count = struct.unpack_from(">HHB", body, 1)
            if not 1 <= count <= 3 or width < 1 or height < 1:
                return None  # CMYK/YCCK is colour-converted in full; leave it alone
            components = [_Component(body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15)
                          for i in range(count)]
            if any(c.h not in (1, 2, 4) or c.v not in (1, 2, 4) for c in components):
                return None
            size = (width, height)
            dc_only_ids = _dc_only_components(components, turbo)
        if marker != _SOS:
            out.append(segment)
            continue
        if components is None:
            return None
        found = _SCAN_END.search(data, pos)
        if found is None:
            return None  # the scan runs to the end of the file: truncated
        end = found.start()
        scan_components = body[0]
        ss, se = body[1 + 2 * scan_components], body[2 + 2 * scan_components]
        if ss == 0 and se == 0 or scan_components != 1 or body[1] not in dc_only_ids:
            out.append(segment)
            out.append(data[pos:end])
        else:
            dropped += 1
        pos = end
    return None  # no end-of-image marker


def _dc_only_components(components: list[_Component], turbo: bool) -> set[int]:
    """Components whose 1/8-scale pixels come from the DC coefficient alone."""
    h_max, v_max = max(c.h for c in components), max(c.v for c in components)
    out = set()
    for c in components:
        full = c.h == h_max and c.v == v_max
        # libjpeg-turbo scales a subsampled component up by the DCT (2x2 or larger
        # inverse DCT, reading AC terms) when both its axes allow it.
        scaled_up = h_max % (2 * c.h) == 0 and v_max % (2 * c.v) == 0
        if full or (turbo and not scaled_up):
            out.add(c.ident)
    return out


def _zero_ac_scans(components: list[_Component], size: tuple[int, int], ids: set[int]) -> bytes:
    """For each component in ``ids``: an AC scan (bands 1-63, full precision) of zeros."""
    width, height = size
    h_max, v_max = max(c.h for c in components), max(c.v for c in components)
    # Restart intervals of earlier scans would apply to these scans too; switch them off.
    parts = [b"\xff\xdd\x00\x04\x00\x00"]
    # AC table 0 (the dropped scans' tables are not needed any more): 15 codes of
    # 4 bits, code r for symbol EOBr (a run of 2^r + r extra bits blocks).
    table = bytes([0x10]) + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(_EOB_RUN_MAX_LOG2 + 1))
    parts.append(b"\xff\xc4" + struct.pack(">H", 2 + len(table)) + table)
    for c in components:
        if c.ident not in ids:
            continue
        cols = -(-(-(-width * c.h // h_max)) // 8)  # blocks across: ceil(ceil(w * h / h_max) / 8)
        rows = -(-(-(-height * c.v // v_max)) // 8)
        header = bytes([1, c.ident, 0x00, 1, 63, 0x00])
        parts.append(b"\xff\xda" + struct.pack(">H", 2 + len(header)) + header)
        parts.append(_eob_runs(cols * rows))
    return b"".join(parts)


def _eob_runs(blocks: int) -> bytes:
    """Entropy-coded end-of-band runs covering ``blocks`` blocks, byte-stuffed and padded."""
    acc = bits = 0
    out = bytearray()

    def put(value: int, length: int) -> None:
        nonlocal acc, bits
        acc = (acc << length) | value
        bits += length
        while bits >= 8:
            bits -= 8
            byte = (acc >> bits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
        acc &= (1 << bits) - 1

    left = blocks
    while left > 0:
        r = min(_EOB_RUN_MAX_LOG2, left.bit_length() - 1)
        run = min(left, (1 << (r + 1)) - 1)
        put(r, 4)
        if r:
            put(run - (1 << r), r)
        left -= run
    if bits:
        put((1 << (8 - bits)) - 1, 8 - bits)  # pad with ones, as the standard asks
    return bytes(out)
