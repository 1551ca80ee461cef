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
import zlib
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
    """``img`` encoded by libheif/x265 (pillow-heif's wheel has the encoder; workers only decode)."""
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


# -- motion photos and other trailers ----------------------------------------------------------


def mp4_video(frames: list[np.ndarray], *, fps: int = 30) -> bytes:
    """RGB frames written by OpenCV's MP4 writer (MPEG-4 part 2, what every OpenCV wheel has)."""
    import os
    import tempfile

    import cv2

    height, width = frames[0].shape[:2]
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        assert writer.isOpened(), "OpenCV cannot write MP4 here"
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


def clip_of(img: Image.Image, seconds: float = 1.5, fps: int = 30) -> bytes:
    """A short video of ``img`` slowly panning, as a motion photo's clip looks."""
    width, height = (img.size[0] // 16) * 16, (img.size[1] // 16) * 16
    base = np.asarray(img.convert("RGB").resize((width + 32, height), Image.Resampling.BILINEAR))
    frames = [np.ascontiguousarray(base[:, i * 32 // int(seconds * fps):][:, :width])
              for i in range(int(seconds * fps))]
    return mp4_video(frames, fps=fps)


GOOGLE_CONTAINER_XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:GCamera="http://ns.google.com/photos/1.0/camera/"'
    ' xmlns:Container="http://ns.google.com/photos/1.0/container/"'
    ' xmlns:Item="http://ns.google.com/photos/1.0/container/item/"'
    ' GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1" GCamera:MotionPhotoPresentationTimestampUs="0">'
    '<Container:Directory><rdf:Seq>'
    '<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="image/jpeg" Item:Semantic="Primary"'
    ' Item:Length="0" Item:Padding="0"/></rdf:li>'
    '<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="video/mp4" Item:Semantic="MotionPhoto"'
    ' Item:Length="{length}"/></rdf:li>'
    '</rdf:Seq></Container:Directory></rdf:Description></rdf:RDF></x:xmpmeta>'
)
GOOGLE_MICROVIDEO_XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:GCamera="http://ns.google.com/photos/1.0/camera/"'
    ' GCamera:MicroVideo="1" GCamera:MicroVideoVersion="1" GCamera:MicroVideoOffset="{length}"'
    ' GCamera:MicroVideoPresentationTimestampUs="0"/></rdf:RDF></x:xmpmeta>'
)


def google_motion_photo(still: Image.Image, video: bytes, *, style: str = "container", **jpeg: object) -> bytes:
    """A Google motion photo: the JPEG (XMP says where the video is), then the MP4."""
    template = GOOGLE_CONTAINER_XMP if style == "container" else GOOGLE_MICROVIDEO_XMP
    xmp = template.format(length=len(video)).encode()
    return encode(still.convert("RGB"), "JPEG", quality=90, xmp=xmp, **jpeg) + video


def samsung_motion_photo(still: Image.Image, video: bytes, **jpeg: object) -> bytes:
    """A Samsung motion photo: the JPEG, a ``MotionPhoto_Data`` SEF block holding the MP4, the
    SEF directory (``SEFH`` ... ``SEFT``) that lists it."""
    name = b"MotionPhoto_Data"
    block = b"\x00\x00\x30\x0a" + struct.pack("<I", len(name)) + name + video
    directory = b"SEFH" + struct.pack("<II", 107, 1) + b"\x00\x00\x30\x0a" + struct.pack("<II", len(block), len(block))
    return (encode(still.convert("RGB"), "JPEG", quality=90, **jpeg) + block + directory
            + struct.pack("<I", len(directory)) + b"SEFT")


def samsung_sef(image: bytes, blocks: list[tuple[bytes, int, bytes]]) -> bytes:
    """``image`` followed by Samsung SEF blocks ``(name, type, body)`` and the SEF directory
    listing them (each entry: type, distance back from SEFH, length), as Samsung phones
    write ``Image_UTC_Data``, ``MotionPhoto_Data`` and the rest."""
    out, entries = bytearray(image), []
    for name, kind, body in blocks:
        block = b"\x00\x00" + struct.pack("<HI", kind, len(name)) + name + body
        entries.append((kind, len(out), len(block)))
        out += block
    head = len(out)
    directory = b"SEFH" + struct.pack("<II", 107, len(entries)) + b"".join(
        b"\x00\x00" + struct.pack("<HII", kind, head - at, size) for kind, at, size in entries)
    return bytes(out) + directory + struct.pack("<I", len(directory)) + b"SEFT"


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """An EXIF block (``Exif\\0\\0`` and a little-endian TIFF structure) whose IFD1 carries
    ``thumbnail`` as its JPEG thumbnail, as cameras and phones write it."""
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 1)  # Orientation: 1
    ifd1_at = 8 + len(ifd0) + 4
    thumb_at = ifd1_at + 2 + 3 * 12 + 4
    ifd1 = struct.pack("<H", 3) + b"".join(struct.pack("<HHII", *entry) for entry in (
        (0x0103, 3, 1, 6),  # Compression: JPEG
        (0x0201, 4, 1, thumb_at),
        (0x0202, 4, 1, len(thumbnail)),
    )) + struct.pack("<I", 0)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd0 + struct.pack("<I", ifd1_at) + ifd1 + thumbnail


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def multi_picture(primary: Image.Image, *others: Image.Image) -> bytes:
    """An MPO / multi-picture JPEG (MPF index in APP2), as Pillow writes it."""
    return encode(primary.convert("RGB"), "MPO", save_all=True, append_images=[o.convert("RGB") for o in others],
                  quality=90)


def gps_exif(lat: float = 48.8584, lon: float = 2.2945, orientation: int | None = None) -> bytes:
    """EXIF with GPS coordinates (the Eiffel Tower by default), a camera and a serial number."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Phone 15"
    if orientation is not None:
        exif[0x0112] = orientation

    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        d = int(value)
        m = int((value - d) * 60)
        return (float(d), float(m), round((value - d - m / 60) * 3600, 2))

    gps = exif.get_ifd(0x8825)
    gps.update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)})
    exif.get_ifd(0x8769)[0xA431] = "SN-0042-1337"  # BodySerialNumber
    return exif.tobytes()


def samsung_heic_motion_photo(still: Image.Image, video: bytes) -> bytes:
    """A Samsung HEIC motion photo: the video in a top-level ``mpvd`` box after the image's boxes."""
    return heic(still.convert("RGB"), exif=gps_exif()) + struct.pack(">I", 8 + len(video)) + b"mpvd" + video


def many_scans_jpeg(img: Image.Image, extra_scans: int) -> bytes:
    """A progressive JPEG whose last scan (with the Huffman table before it) is repeated
    ``extra_scans`` times before EOI: a few bytes each, yet libjpeg goes over the whole
    frame again for every one of them (the "progressive scan" CPU bomb)."""
    data = encode(img.convert("RGB"), "JPEG", quality=90, progressive=True)
    at = data.rfind(b"\xff\xda")
    table = data.rfind(b"\xff\xc4", 0, at)
    start = table if table > data.rfind(b"\xff\xda", 0, at) else at
    assert data.endswith(b"\xff\xd9")
    return data[:-2] + data[start:-2] * extra_scans + b"\xff\xd9"
