"""Calibration sets: the photos an optimised model build is verified (and quantised) on.

An operator passes their own uploads (``photosentry models optimize --calibration``);
a fresh install uses the set shipped in ``photosentry/models/calibration/`` (public
domain and CC0 photos, see its LICENSES.md), made again from those files on any host.
Either way a set is frames decoded as the scan decodes them, named by a digest, so an
artifact's record says exactly what it was verified on.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..decode import decode, read_limited
from ..errors import UnreadableImage

SHIPPED_PREFIX = "shipped:"
_GRIDS = (2, 3)  # crops of each photo: a 2x2 and a 3x3 grid of overlapping windows
_WARMTH = (0.0, 0.25, 0.5)  # red up, blue down by this much (green up by a fifth of it): skin-like tones


@dataclass(frozen=True)
class CalibrationSet:
    """Real photos decoded once, with the digest that names the set."""

    files: tuple[tuple[str, str], ...]
    frames: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for sha in sorted(sha for _, sha in self.files):
            h.update(bytes.fromhex(sha))
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        return {"digest": self.digest, "photos": len(self.files), "files": [list(f) for f in self.files]}


def photo_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files under ``paths`` (files or folders, recursively), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"calibration path {str(p)!r} does not exist")
    return sorted(dict.fromkeys(out))


def load_calibration(paths: Sequence[str | Path], *, limit: int | None = None) -> CalibrationSet:
    """Decode the photos under ``paths`` the way the scan does; unreadable files are skipped.

    Raises:
        ValueError: no readable photo was found.
    """
    files, frames = [], []
    for path in photo_files(paths):
        try:
            data = read_limited(path, defaults.MAX_BYTES)
            decoded = decode(data, min_side=defaults.DECODE_MIN_SIDE)
        except UnreadableImage:
            continue
        files.append((str(path), hashlib.sha256(data).hexdigest()))
        frames.append(decoded.frames[0])
        if limit is not None and len(files) >= limit:
            break
    if not files:
        raise ValueError(f"no readable photo under {[str(p) for p in paths]}")
    return CalibrationSet(tuple(files), tuple(frames))


def calibration_from_record(record: dict[str, Any]) -> CalibrationSet:
    """The recorded calibration set, re-read and checked against its digest.

    Raises:
        ValueError: a file is gone or changed, so the recorded drift cannot be re-measured.
    """
    if is_shipped(record):  # the default build's set: made again from the package's photos
        cal = shipped_calibration()
        if cal.digest != record.get("digest"):
            raise ValueError("the shipped calibration set changed (another PhotoSentry version); pass --calibration")
        return cal
    paths = [f[0] for f in record.get("files", [])]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} calibration photos are gone (first: {missing[0]}); pass --calibration")
    cal = load_calibration(paths)
    if cal.digest != record.get("digest"):
        raise ValueError("the calibration photos changed since the artifact was made; pass --calibration")
    return cal


def shipped_calibration() -> CalibrationSet:
    """The calibration set a host can always make: the photos shipped in
    ``photosentry/models/calibration`` (public domain and CC0, see its LICENSES.md) and,
    for each, crops on a 2x2 and a 3x3 grid, cycling through warmer tones.

    The photos as they are all score near zero on open_nsfw; the crops and warmer tones
    spread the scores up to ~0.9, so the check that no decision flips covers the policy's
    bands too. Deterministic: the same photos give the same frames and digest.
    """
    files: list[tuple[str, str]] = []
    frames: list[np.ndarray] = []
    for name, data in _shipped_photos():
        rgb = decode(data, min_side=defaults.DECODE_MIN_SIDE).frames[0]
        for i, (label, variant) in enumerate(_variants(rgb)):
            warm = _WARMTH[i % len(_WARMTH)]
            if warm:
                variant, label = _warmer(variant, warm), f"{label}+warm{warm}"
            variant = np.ascontiguousarray(variant)
            files.append((f"{SHIPPED_PREFIX}{name}#{label}", hashlib.sha256(variant.tobytes()).hexdigest()))
            frames.append(variant)
    return CalibrationSet(tuple(files), tuple(frames))


def is_shipped(record: dict[str, Any]) -> bool:
    """Whether an artifact's calibration record names the shipped set."""
    files = record.get("files") or []
    return bool(files) and all(str(f[0]).startswith(SHIPPED_PREFIX) for f in files)


def _shipped_photos() -> Iterator[tuple[str, bytes]]:
    folder = importlib.resources.files("photosentry.models") / "calibration"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".jpg"):
            yield entry.name.removesuffix(".jpg"), entry.read_bytes()


def _variants(rgb: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    yield "whole", rgb
    h, w = rgb.shape[:2]
    for n in _GRIDS:
        ch, cw = h // n, w // n  # close-ups: the model's scores spread most on these
        for row in range(n):
            for col in range(n):
                top, left = row * (h - ch) // (n - 1), col * (w - cw) // (n - 1)
                yield f"crop{n}x{n}-{row}{col}", rgb[top : top + ch, left : left + cw]


def _warmer(rgb: np.ndarray, amount: float) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[..., 0] *= 1.0 + amount
    out[..., 1] *= 1.0 + amount / 5
    out[..., 2] *= 1.0 - amount
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def shipped_digest() -> str:
    """Names the shipped set cheaply (its files and the recipe that makes the frames),
    for the build key: no decoding at every process start."""
    h = hashlib.sha256(repr((_GRIDS, _WARMTH, defaults.DECODE_MIN_SIDE)).encode())
    for name, data in _shipped_photos():
        h.update(name.encode() + hashlib.sha256(data).digest())
    return h.hexdigest()
