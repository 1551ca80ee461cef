"""Shrinking a scan's luminance fast, with every pixel still counted.

OpenCV's area average is exact but slow at a scale that is not a whole number: 0.7-0.9
ms to bring a 750 x 530 frame to 384 or 240 pixels, twice a scan (keypoints, flatness).
Halving by area is OpenCV's fast path (each output pixel the mean of a 2 x 2 block), and
a bilinear step of less than a factor of two after it still reads every pixel: 0.2 ms
for both. Nothing a scan shrinks this way is compared with a ban's pixels, only with
what a ban derived the same way or at its own size (keypoints are scale-invariant).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Halve while the picture is at least this many times the side wanted: the bilinear
#: step after it then shrinks by less than 1.9 (every input pixel weighs in) or
#: enlarges by under 5% (a 751-pixel side halved to 375 for 384).
_HALVE_FROM = 1.9


def shrink(grey: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``grey`` (H, W uint8) with its longest side brought down to ``side``, and the
    scale (output pixels per input pixel); a picture already that small is returned as
    it is, at scale 1."""
    h, w = grey.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return np.ascontiguousarray(grey), 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = grey
    while max(small.shape[:2]) >= _HALVE_FROM * side and min(small.shape[:2]) >= 2:
        small = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (small.shape[1], small.shape[0]) != size:
        small = cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(small), scale
