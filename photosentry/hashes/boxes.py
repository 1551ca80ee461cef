"""Rectangles of a picture, as region proposals (:mod:`.regions`, :mod:`.collage`) pass
them around: (left, top, right, bottom), right and bottom exclusive."""

from __future__ import annotations

Box = tuple[int, int, int, int]


def area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union: 1 for the same box, 0 for boxes that do not overlap."""
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0
