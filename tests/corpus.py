"""A small corpus of real photos and hostile files, built on demand.

Real photos come from scikit-image's bundled data (public-domain and CC0 photos that
ship inside the package, so nothing is downloaded). One photo plays "the banned
photo"; its transformed copies (re-encoded, resized, mirrored, lightly cropped) must
match it once it is banned, while the other photos must not.

Used by the tests (a session fixture) and by scripts/bench_scan.py.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

import skimage.data

#: Files bundled in skimage/data used as unrelated, clean photos.
CLEAN_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "camera.png",
    "coins.png",
)
#: The photo that tests ban.
BANNED_PHOTO = "rocket.jpg"
DATA_DIR = Path(skimage.data.__file__).parent


@dataclass(frozen=True)
class Corpus:
    root: Path
    banned: Path
    #: name -> transformed copy of the banned photo that must still match it.
    copies: dict[str, Path]
    clean: dict[str, Path]
    #: reason code -> a file that must be quarantined with that code.
    hostile: dict[str, Path]


def load(name: str) -> Image.Image:
    # Read the bundled file directly: skimage's loaders may try to download.
    with Image.open(DATA_DIR / name) as img:
        img.load()
        return img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()


def save_jpeg(img: Image.Image, path: Path, quality: int = 90) -> Path:
    img.save(path, format="JPEG", quality=quality)
    return path


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` grey pixels (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_with_declared_size(width: int, height: int) -> bytes:
    """A tiny GIF whose screen and frame declare ``width x height`` pixels."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame + b";"


def build(root: Path) -> Corpus:
    """Write the corpus under ``root`` (idempotent) and describe it."""
    root.mkdir(parents=True, exist_ok=True)
    clean_dir, copy_dir, bad_dir = root / "clean", root / "copies", root / "hostile"
    for d in (clean_dir, copy_dir, bad_dir):
        d.mkdir(exist_ok=True)

    banned_img = load(BANNED_PHOTO)
    banned = save_jpeg(banned_img, root / "banned.jpg", quality=92)
    w, h = banned_img.size
    copies = {
        "reencoded_q50": save_jpeg(banned_img, copy_dir / "reencoded_q50.jpg", quality=50),
        "resized_half": save_jpeg(banned_img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), copy_dir / "resized_half.jpg"),
        "mirrored": save_jpeg(banned_img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), copy_dir / "mirrored.jpg"),
        "cropped_3pct": save_jpeg(
            banned_img.crop((int(w * 0.03), int(h * 0.03), w - int(w * 0.03), h - int(h * 0.03))),
            copy_dir / "cropped_3pct.jpg",
        ),
        "as_png": copy_dir / "as_png.png",
        "rotated_90": save_jpeg(banned_img.transpose(Image.Transpose.ROTATE_90), copy_dir / "rotated_90.jpg"),
    }
    banned_img.save(copies["as_png"], format="PNG")

    clean = {}
    for name in CLEAN_PHOTOS:
        img = load(name)
        clean[Path(name).stem] = save_jpeg(img, clean_dir / f"{Path(name).stem}.jpg")

    hostile = {}
    data = banned.read_bytes()
    hostile["unreadable"] = bad_dir / "truncated.jpg"
    hostile["unreadable"].write_bytes(data[: len(data) // 3])
    hostile["empty_file"] = bad_dir / "empty.jpg"
    hostile["empty_file"].write_bytes(b"")
    hostile["not_an_image"] = bad_dir / "notes.jpg"
    hostile["not_an_image"].write_text("this is a text file with a .jpg name\n")
    hostile["decompression_bomb"] = bad_dir / "bomb.png"
    hostile["decompression_bomb"].write_bytes(png_with_declared_size(100_000, 100_000))
    hostile["unsupported_format"] = bad_dir / "vector.jpg"
    hostile["unsupported_format"].write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    return Corpus(root, banned, copies, clean, hostile)


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
