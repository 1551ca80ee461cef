"""Real files of the kinds phones and apps upload, written by their real encoders.

HEIC by libheif's x265 encoder (pillow-heif), AVIF by libavif (Pillow), JPEGs by
libjpeg-turbo (Pillow), the motion photo's video by OpenCV's MP4 writer. Large JPEGs
are built strip by strip from a real photo upscaled with a little noise, so a 200 MP
file costs its 600 MB of pixels once and a second or two, and never enters the repository.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

#: Sizes of current phone sensors' full-resolution modes (width x height, landscape).
PHONE_SIZES = {
    "50mp": (8160, 6120),
    "108mp": (12000, 9000),
    "200mp": (16320, 12240),
}
#: A landscape photo letterboxed onto a 9:16 canvas, as apps post it.
LETTERBOX_SIZE = (6000, 10667)

_STRIP = 512


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def heic(img: Image.Image, *, quality: int = 80, exif: bytes | None = None, **params: object) -> bytes:
    """``img`` encoded by libheif/x265 (pillow-heif is a test dependency; workers read with pi-heif)."""
    import pillow_heif

    heif = pillow_heif.from_pillow(img)
    buf = io.BytesIO()
    heif.save(buf, quality=quality, **({"exif": exif} if exif is not None else {}), **params)
    return buf.getvalue()


def heic_sequence(images: list[Image.Image], *, quality: int = 50) -> bytes:
    """Several top-level images in one HEIF file (what a burst or a collage writes)."""
    import pillow_heif

    heif = pillow_heif.from_pillow(images[0])
    for img in images[1:]:
        heif.add_from_pillow(img)
    buf = io.BytesIO()
    heif.save(buf, quality=quality)
    return buf.getvalue()


def avif(img: Image.Image, *, quality: int = 80, **params: object) -> bytes:
    """``img`` encoded by libavif (Pillow's own AVIF plugin)."""
    return encode(img, "AVIF", quality=quality, **params)


def phone_pixels(source: Image.Image, size: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """``source`` upscaled to ``size`` with mild noise (a sensor's texture), built strip by
    strip in place: the only large allocation is the frame itself."""
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    noise = np.random.default_rng(seed).integers(0, 11, size=(_STRIP, width, 3), dtype=np.uint8)
    sw, sh = source.size
    for top in range(0, height, _STRIP):
        rows = min(_STRIP, height - top)
        box = (0, top * sh / height, sw, (top + rows) * sh / height)
        strip = pixels[top:top + rows]
        strip[:] = np.asarray(source.resize((width, rows), Image.Resampling.BILINEAR, box=box))
        # uint8 all the way: squeeze into 5..245, add 0..10, shift back (no overflow, no copies).
        np.clip(strip, 5, 245, out=strip)
        strip += noise[:rows]
        strip -= 5
    return pixels


def save_jpeg(pixels: np.ndarray, path: Path, *, quality: int = 85, **params: object) -> Path:
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality, **params)
    return path


def letterboxed_jpeg(path: Path, source: Image.Image, size: tuple[int, int] = LETTERBOX_SIZE) -> Path:
    """A landscape photo centred on a black portrait canvas (bars above and below)."""
    width, height = size
    sw, sh = source.size
    inner = (width, round(width * sh / sw))
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(source.resize(inner, Image.Resampling.BILINEAR), (0, (height - inner[1]) // 2))
    canvas.save(path, format="JPEG", quality=88)
    return path


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 12, 1, 0, 0, 0)), data)
    return buf.getvalue()


def rewrite_ispe(data: bytes, width: int, height: int) -> bytes:
    """An HEIF/AVIF file whose every ``ispe`` (image spatial extent) box declares ``width x height``."""
    out = bytearray(data)
    at = out.find(b"ispe")
    while at >= 0:
        out[at + 8:at + 16] = struct.pack(">II", width, height)
        at = out.find(b"ispe", at + 4)
    return bytes(out)
