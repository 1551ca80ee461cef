"""Ban-side derived hashes: PDQ of the crops and small rotations of a banned image.

PDQ does not survive a crop of more than a few percent or a rotation of a few degrees,
and those are what re-uploaders do first. Query-side regions (:mod:`.regions`) find a
photo *inside* a bigger picture; a copy that is a *part* of the banned photo is found
here instead, from the other side: when a moderator bans an image, the PDQ hashes of
windows of it (:data:`WINDOWS`: a tenth or a fifth cut off one edge, two edges or
every edge; a collage cell's cover crop about the centre along one axis; rotations
by a few degrees, cropped to what stays inside the frame) are
stored beside its own, tied to it by its group, as ``derived`` entries. A copy cropped
like one of them meets it within PDQ's distance; nothing changes at query time.

Only derived *hashes* are stored, never pixels; they are listed, exported, counted in
the audit trail and removed with the ban like its other entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from . import perceptual
from .. import defaults

Window = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DerivedHash:
    """The PDQ hash of one transformed window of a banned image."""

    name: str
    value: str
    quality: int


def _cut(top: float = 0, bottom: float = 0, left: float = 0, right: float = 0) -> Window:
    def window(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        return rgb[round(h * top): h - round(h * bottom), round(w * left): w - round(w * right)]
    return window


def _rotated(degrees: float) -> Window:
    def window(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        out = cv2.warpAffine(rgb, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # The largest centred rectangle of the same shape inside the turned frame.
        a = math.radians(abs(degrees))
        k = 1 / (math.cos(a) + math.sin(a) * max(w / h, h / w))
        dh, dw = round(h * (1 - k) / 2), round(w * (1 - k) / 2)
        return out[dh: h - dh, dw: w - dw]
    return window


#: Shares of a side that cover windows cut off, half at each end.
COVER_CUTS = (0.03, 0.06, 0.09, 0.12, 0.15)


def _windows() -> dict[str, Window]:
    out: dict[str, Window] = {}
    for f in (0.1, 0.2):
        pct = round(f * 100)
        for edge in ("top", "bottom", "left", "right"):
            out[f"cut-{edge}-{pct}"] = _cut(**{edge: f})
        for v in ("top", "bottom"):
            for hz in ("left", "right"):
                out[f"cut-{v}-{hz}-{pct}"] = _cut(**{v: f, hz: f})
        out[f"cut-all-{pct}"] = _cut(f / 2, f / 2, f / 2, f / 2)
    out["cut-all-30"] = _cut(0.15, 0.15, 0.15, 0.15)
    # A collage app fills its cell with the photo cropped about its centre along one
    # axis, by up to 15% when the user picks a layout of about the photo's shape.
    # Steps of 3% keep every such cover crop within PDQ's reach of one window
    # (scripts/bench_copies.py: collage cells found exactly match one 94-100% of the
    # time, against 28-36% for the photo's own hash).
    for f in COVER_CUTS:
        pct = round(f * 100)
        out[f"cover-width-{pct}"] = _cut(left=f / 2, right=f / 2)
        out[f"cover-height-{pct}"] = _cut(top=f / 2, bottom=f / 2)
    for degrees in (-8, -4, 4, 8):
        out[f"rotate-{degrees}"] = _rotated(degrees)
    return out


#: Every window a ban derives, by name (the name is recorded in the entry's label).
WINDOWS: dict[str, Window] = _windows()


def derive(rgb: np.ndarray) -> list[DerivedHash]:
    """PDQ of each window of ``rgb`` (H, W, 3 uint8, the banned image at full decode),
    leaving out windows too flat to hash well and repeats of an earlier value."""
    h, w = rgb.shape[:2]
    scale = defaults.DERIVED_HASH_SIDE / max(h, w)
    if scale < 1:  # PDQ samples 64x64: a 1024-pixel image loses nothing it would see
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    out: list[DerivedHash] = []
    seen: set[str] = set()
    for name, window in WINDOWS.items():
        part = np.ascontiguousarray(window(rgb))
        if min(part.shape[:2]) < perceptual.PDQ_MIN_SIDE:
            continue
        variants, quality = perceptual.pdq_dihedral(part)
        value = variants[0]
        if quality < defaults.PDQ_QUALITY_THRESHOLD or value in seen or set(value) in ({"0"}, {"f"}):
            continue
        seen.add(value)
        out.append(DerivedHash(name, value, quality))
    return out
