"""How much of a picture is flat colour: where a perceptual hash sees layout, not content.

An app's screen (a chat, a settings page, a feed of text) is mostly flat colour with
text on it. PDQ, pHash and dHash read a picture at 64 x 64 samples or fewer, where a
line of text is a grey smear: two chats of one app with the same bubbles on the same
sides and other words hash to the same PDQ (distance 0, measured), however different
what they say. Such a hash identifies the app's layout, not the picture, so a match
between two such pictures holds a photo for review, never blocks it (:mod:`.evidence`). Photographs are never that flat: on the 254
pictures of the benchmark corpus the flattest real photo is under half flat, and only
diagrams and screenshots pass :data:`defaults.FLAT_PICTURE_SHARE`.

A pixel is flat when its 3 x 3 neighbourhood on a thumbnail that every pixel weighs in
(longest side :data:`defaults.REGION_THUMB_SIDE`, :func:`.shrink.shrink`) varies by at
most one grey level: a JPEG keeps an app's background exactly flat, and a photo's sky
keeps its grain.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import defaults
from .boxes import Box
from .shrink import shrink

_NEIGHBOURS = np.ones((3, 3), np.uint8)


class FlatMap:
    """Which pixels of a frame's thumbnail are flat, summed for any box's share."""

    def __init__(self, picture: np.ndarray) -> None:
        """``picture``: the frame, (H, W, 3) RGB or its (H, W) luminance (OpenCV's, uint8)."""
        h, w = picture.shape[:2]
        grey = cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2GRAY) if picture.ndim == 3 else picture
        # Every pixel weighs in, not every n-th: a pattern of dots on the sampled pixels
        # alone (1 in 25 of them) would make any photo look flat (red team).
        small, _ = shrink(grey, defaults.REGION_THUMB_SIDE)
        self._sx, self._sy = small.shape[1] / w, small.shape[0] / h
        # The 3 x 3 range: dilation minus erosion.
        spread = cv2.morphologyEx(small, cv2.MORPH_GRADIENT, _NEIGHBOURS)
        flat = (spread <= 1).view(np.uint8)
        # A summed-area table (a row and a column of zeros first): any box's count of
        # flat pixels in four reads.
        self._sums = cv2.integral(flat)

    def share(self, box: Box | None = None) -> float:
        """The share of ``box`` (frame pixels; None: the whole frame) that is flat colour."""
        rows, cols = self._sums.shape[0] - 1, self._sums.shape[1] - 1
        if box is None:
            left, top, right, bottom = 0, 0, cols, rows
        else:
            left, top = min(cols, int(box[0] * self._sx)), min(rows, int(box[1] * self._sy))
            right = min(cols, max(left + 1, int(np.ceil(box[2] * self._sx))))
            bottom = min(rows, max(top + 1, int(np.ceil(box[3] * self._sy))))
        n = (right - left) * (bottom - top)
        if n <= 0:
            return 0.0
        t = self._sums
        return float(t[bottom, right] - t[top, right] - t[bottom, left] + t[top, left]) / n


def is_flat(share: float) -> bool:
    """Whether a picture this flat hashes to its layout rather than its content."""
    return share >= defaults.FLAT_PICTURE_SHARE
