"""A motion photo's video, sampled into frames the scan can hash and classify.

OpenCV's FFmpeg backend reads the MP4 from a private temporary file (in /dev/shm where
there is one, so the bytes never reach a disk; it is removed before this returns).
Callers hand it only bytes that start with an ISO BMFF ``ftyp`` box, and OpenCV is told
to open captures with FFmpeg's ``protocol_whitelist`` set to ``file``, so a crafted
container has no way to make FFmpeg open a URL. Frames are walked in order up to a pixel budget (video frames depend on the ones
before them) and a few spread evenly over what was reachable are kept, each scaled to
its share of the budget, as an animation's are in :mod:`photosentry.decode`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from .. import defaults
from ..errors import VideoUnreadable

#: FFmpeg options OpenCV passes to every capture it opens in this process: read local
#: files only (an HLS playlist or a reference movie could otherwise name a URL).
_CAPTURE_OPTIONS = "protocol_whitelist;file"
_SHM = "/dev/shm"


@dataclass(frozen=True)
class VideoFrames:
    """What sampling one video gave."""

    frames: tuple[np.ndarray, ...]
    #: The frame count the container declares (0 when it does not say).
    frame_count: int
    #: Frames past the walking budget were never looked at.
    truncated: bool


def sample(
    data: bytes,
    *,
    frames: int = defaults.SCAN_FRAMES,
    max_frames: int = defaults.MAX_FRAMES,
    walk_pixels: int = defaults.MAX_VIDEO_PIXELS,
    keep_pixels: int = defaults.MAX_PIXELS,
) -> VideoFrames:
    """Up to ``frames`` RGB frames spread over the video in ``data`` (MP4/MOV bytes).

    Args:
        frames: how many to keep.
        max_frames: walk no further than this many frames.
        walk_pixels: walk no further than this many decoded pixels (bounds time).
        keep_pixels: the kept frames together hold at most this many pixels.

    Raises:
        VideoUnreadable: not a video OpenCV can read, or one with no frame.
    """
    import cv2  # heavy; only motion photos need it

    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", _CAPTURE_OPTIONS)
    folder = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="photosentry-motion-", suffix=".mp4", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                raise VideoUnreadable("the video could not be opened")
            return _sample(capture, cv2, frames, max_frames, walk_pixels, keep_pixels)
        finally:
            capture.release()
    finally:
        os.unlink(path)


def _sample(capture, cv2, wanted: int, max_frames: int, walk_pixels: int, keep_pixels: int) -> VideoFrames:  # noqa: ANN001
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if declared < 1 or width < 1 or height < 1:
        raise VideoUnreadable(f"the video declares {declared} frames of {width}x{height}")
    reachable = min(declared, max_frames, max(1, walk_pixels // (width * height)))
    indices = sorted({int(round(i)) for i in np.linspace(0, reachable - 1, min(wanted, reachable))})
    share = max(1, keep_pixels // len(indices))
    kept: list[np.ndarray] = []
    for index in range(indices[-1] + 1):
        if not capture.grab():
            break  # the container declared more frames than it holds
        if index in indices:
            ok, bgr = capture.retrieve()
            if not ok or bgr is None or bgr.ndim != 3:
                continue
            kept.append(_fit(cv2, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), share))
    if not kept:
        raise VideoUnreadable("no frame of the video could be decoded")
    return VideoFrames(tuple(kept), declared, reachable < declared)


def _fit(cv2, rgb: np.ndarray, pixels: int) -> np.ndarray:  # noqa: ANN001
    h, w = rgb.shape[:2]
    if h * w <= pixels:
        return np.ascontiguousarray(rgb)
    scale = (pixels / (h * w)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
