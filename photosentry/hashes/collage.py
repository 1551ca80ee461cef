"""Where the photos of a collage are: its cells, cut along the seams that cross it.

Collage apps put two to four (or more) photos in a grid, with or without gutters
between them, often one large photo beside a stack of small ones. :func:`cells_of`
cuts a thumbnail along every straight seam that crosses it one way (a uniform gutter
band, or a hard edge all along that is neither texture nor a drawn line), then each
piece along the seams that cross it the other way, both ways round; and proposes the
pieces and a second grid (one that does not prefer gutters) beside the cells, because
a photo's own straight edges and flat bands pass for seams and gutters now and then.
:func:`gutters_off` sheds a thin gutter left along a cell's edges. The boxes are
thumbnail pixels; :mod:`.regions` refines them on the frame and hashes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from .. import defaults
from .boxes import Box, iou


def cells_of(luma: np.ndarray, box: Box, *, depth: int, fine: np.ndarray | None = None,
             stride: int = 1, colours: np.ndarray | None = None) -> tuple[list[Box], list[Box]]:
    """The cells of ``box`` if it is a grid: cut along every seam that crosses it one way,
    then each piece along every seam that crosses it the other way (columns first, then
    rows first: a large photo beside a stack of small ones is found either way); and
    more boxes that may be cells where a seam was a mistake (:func:`_grid`'s second list).

    A collage app draws every gutter alike or none at all, so once a cut finds a
    gutter, the pieces are cut at gutters only: a photo's own straight edge (a
    horizon, a table) inside a cell of a guttered collage is not a seam. But a photo
    may have a flat band of its own (a white margin, a black sky) that passes for a
    gutter and hides the hard edges of a collage without gutters, so the grid cut at
    gutters and hard edges alike is proposed too.

    ``fine``: the frame's luminance (uint8) that ``luma`` samples every ``stride``-th
    pixel of, where the caller has it: a gutter a pixel or two wide in the frame (4
    pixels in a collage decoded at half its size) is often no clean line of the
    thumbnail, only a bright line between two steps, which :func:`_seams` takes for a
    line drawn in a photo; the frame's own lines tell that it is flat.
    """
    seams = _Seams(luma, fine, stride, colours)
    cells, whole = _grid(seams, box, depth=depth, prefer_gutters=True)
    mixed, mixed_whole = _grid(seams, box, depth=depth, prefer_gutters=False)
    more = [b for b in _distinct(mixed + mixed_whole + whole) if not any(iou(b, c) >= 0.9 for c in cells)]
    return cells or [box], more


def _grid(seams: "_Seams", box: Box, *, depth: int, prefer_gutters: bool) -> tuple[list[Box], list[Box]]:
    """:func:`cells_of`'s grid, one way: the cells, and the pieces of the first cut that
    the second cut split (the piece is a cell too when its "seams" are the photo's own:
    a horizon, a figure of two panels)."""
    cells: list[Box] = []
    whole: list[Box] = []
    for axis in (1, 0):
        pieces, guttered = seams.cut(box, axis, gutters_only=False, prefer_gutters=prefer_gutters)
        if len(pieces) == 1:
            continue
        for piece in pieces:
            parts = seams.cut(piece, 1 - axis, gutters_only=guttered and prefer_gutters,
                              prefer_gutters=prefer_gutters)[0] if depth > 1 else [piece]
            cells.extend(parts)
            if len(parts) > 1:
                whole.append(piece)
    return _distinct(cells), _distinct(whole)


def _distinct(boxes: list[Box]) -> list[Box]:
    out: list[Box] = []
    for b in boxes:
        if not any(iou(b, kept) >= 0.9 for kept in out):
            out.append(b)
    return out


Seam = tuple[float, int, int]  # strength, end of the part before, start of the part after


class _Seams:
    """The seams crossing boxes of a thumbnail's luminance, found once for each box and
    direction: both of :func:`cells_of`'s grids cut the same boxes."""

    def __init__(self, luma: np.ndarray, fine: np.ndarray | None = None, stride: int = 1,
                 colours: np.ndarray | None = None) -> None:
        self.luma = luma
        self.colours = colours
        self.fine, self.stride = fine, stride
        self._found: dict[tuple[Box, int], tuple[list[Seam], list[Seam], int]] = {}
        # The colour steps between neighbouring lines, each way, made once: every box
        # cut reads a part of them.
        self._steps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _colour_steps(self, box: Box, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(signed steps (lines - 1, m, 3), whether any channel steps strongly) across
        ``box``'s lines (axis 1: its columns as lines)."""
        if self.colours is None:
            return None
        if axis not in self._steps:
            c = self.colours
            steps = c[1:] - c[:-1] if axis == 0 else c[:, 1:] - c[:, :-1]
            size = np.abs(steps)
            strong = np.maximum(np.maximum(size[..., 0], size[..., 1]), size[..., 2]) > defaults.REGION_SEAM_STEP
            # Columns as lines: transposed views, not copies.
            self._steps[axis] = (steps, strong) if axis == 0 else (steps.transpose(1, 0, 2), strong.T)
        steps, strong = self._steps[axis]
        left, top, right, bottom = box
        if axis == 1:
            return steps[left:right - 1, top:bottom], strong[left:right - 1, top:bottom]
        return steps[top:bottom - 1, left:right], strong[top:bottom - 1, left:right]

    def cut(self, box: Box, axis: int, *, gutters_only: bool, prefer_gutters: bool) -> tuple[list[Box], bool]:
        """``box`` cut along every seam crossing it (axis 1: vertical seams, into
        columns), and whether it has gutters. Where it has, its hard edges are the
        photos' own unless ``prefer_gutters`` is off; with ``gutters_only``, always."""
        left, top, right, bottom = box
        if min(right - left, bottom - top) < 24:
            return [box], False
        key = (box, axis)
        if key not in self._found:
            grey = self.luma[top:bottom, left:right]
            lines = None
            if self.fine is not None and self.stride > 1:
                # The frame's lines each thumbnail line stands for, across the box's
                # thumbnail columns (rows) only: the rows (columns) a thin gutter lies in.
                k = self.stride
                lines = (self.fine[top * k: bottom * k: k, left * k: right * k].T if axis == 1
                         else self.fine[top * k: bottom * k, left * k: right * k: k])
            self._found[key] = (*_seams(grey.T if axis == 1 else grey, lines, self.stride,
                                        self._colour_steps(box, axis)),
                                right - left if axis == 1 else bottom - top)
        gutters, edges, n = self._found[key]
        found = gutters if gutters_only or (gutters and prefer_gutters) else gutters + edges
        kept: list[Seam] = []
        for seam in sorted(found, reverse=True):
            if all(abs(seam[1] - k[1]) >= 0.15 * n for k in kept):
                kept.append(seam)
        out, at = [], 0
        for _, end, start in sorted(kept, key=lambda k: k[1]):
            out.append((at, end))
            at = start
        out.append((at, n))
        if axis == 1:
            return [(left + a, top, left + b, bottom) for a, b in out], bool(gutters)
        return [(left, top + a, right, top + b) for a, b in out], bool(gutters)


def _seams(grey: np.ndarray, fine: np.ndarray | None = None, stride: int = 1,
           colour_steps: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[list[Seam], list[Seam]]:
    """The horizontal seams of ``grey`` away from its edges: its gutters and its hard edges.

    A gutter is a uniform band crossing the whole width; a hard edge is a row step
    larger than :data:`defaults.REGION_SEAM_STEP` along most of the width, where the
    rows around it have far fewer (a textured photo's rows all have many), and not
    undone by an opposite step a row or two on (that is a drawn line: a grid printed in
    the photo, a table's ruling). :meth:`_Seams.cut` chooses among them; seams closer
    than 0.15 of the height to a stronger one are its echo (a grid finer than 6 x 6 is
    stripes, not photos). ``fine``: the frame's lines behind ``grey``'s, ``stride`` of
    them to each (line y stands for ``fine[y * stride:(y + 1) * stride]``); a line next to
    a strong step is flat too where one of its frame lines is (a thin gutter).
    ``colour_steps``: the colour steps between ``grey``'s lines and where any channel
    steps strongly (:meth:`_Seams._colour_steps`), for seams of colour alone.
    """
    h = grey.shape[0]
    lo, hi = int(h * 0.12), int(h * 0.88)
    if hi - lo < 4:
        return [], []
    signed = np.diff(grey, axis=0)  # signed[y] is the step between rows y and y + 1
    strong = np.abs(signed) > defaults.REGION_SEAM_STEP
    edge = strong.mean(axis=1)
    stepped = edge >= defaults.REGION_SEAM_FILL  # stepped[y]: in luminance, between lines y and y + 1
    hard = np.zeros(len(edge), dtype=bool)
    lines = np.flatnonzero(stepped)
    if len(lines):
        hard[lines] = _seam_like_at(lines, lambda rows: np.sign(signed[rows]), strong, edge)
    if colour_steps is not None:
        # Two photos of about the same brightness meet at a step of colour (a field of
        # flowers beside a grey fog): a seam in luminance or in any one channel counts.
        steps, strong_c = colour_steps
        edge_c = strong_c.mean(axis=1)
        candidates = (edge_c >= defaults.REGION_SEAM_COLOUR_FILL) & ~hard
        lines = np.flatnonzero(candidates)
        if len(lines):
            hard[lines] = _seam_like_at(lines, functools.partial(_colour_sign, steps), strong_c, edge_c)
        edge = np.maximum(edge, edge_c)
    # Python lists from here: the walk below reads them line by line, and a numpy
    # scalar read costs ten times a list's.
    flat_lines = grey.std(axis=1) < 2.5
    if fine is not None and fine.shape[1] >= 8:
        # A thin gutter's thumbnail line has a step beside it, into it or out of it.
        between = np.zeros(h, dtype=bool)
        between[1:-1] = stepped[:-1] | stepped[1:]
        lines = np.flatnonzero(between & ~flat_lines)
        if len(lines):
            rows = np.minimum(lines[:, None] * stride + np.arange(stride)[None, :], len(fine) - 1)
            flat_lines[lines] = fine[rows].astype(np.float32).std(axis=2).min(axis=1) < 2.5
    flat = flat_lines.tolist()
    hard, edge = hard.tolist(), edge.tolist()
    gutters: list[Seam] = []
    edges: list[Seam] = []
    y = lo
    while y < hi:
        if flat[y]:
            end = y
            while end + 1 < h and flat[end + 1]:
                end += 1
            start = y
            while start - 1 >= 0 and flat[start - 1]:
                start -= 1
            if start > 0 and end < h - 1 and end - start + 1 <= 0.1 * h:
                gutters.append((1.0 + (end - start + 1) / h, start, end + 1))
            y = end + 1
            continue
        if hard[y]:
            edges.append((edge[y], y + 1, y + 1))
        y += 1
    return gutters, edges


def _seam_like_at(lines: np.ndarray, sign_of: Callable[[np.ndarray], np.ndarray], strong: np.ndarray,
                  share: np.ndarray) -> np.ndarray:
    """Whether each of ``lines`` (steps between two lines, ``strong`` along ``share`` of
    it) is where two pictures meet: the lines about it step far less often (else it is
    texture), and no opposite step a line or two on undoes it (else it is a drawn line:
    a grid printed in the photo, a table's ruling). Only the lines about each candidate
    are read: ``sign_of(rows)`` gives the sign of every pixel's step on those rows (a
    luminance step's, or a colour step's in its most changed channel)."""
    n = len(share)
    # The median over the four lines on each side, past the immediate neighbours (which a
    # seam's blur may touch); the ends repeat.
    near = np.clip(lines[:, None] + np.array([-5, -4, -3, -2, 2, 3, 4, 5])[None, :], 0, n - 1)
    ok = share[lines] >= 2.0 * np.median(share[near], axis=1)
    rows = np.clip(lines[:, None] + np.arange(-2, 3)[None, :], 0, n - 1)  # (lines, 5): y-2 .. y+2
    sign = sign_of(rows)
    hit = strong[rows]
    for k in (1, 2):
        for other, inside in ((2 + k, lines + k < n), (2 - k, lines - k >= 0)):  # k below, k above
            undone = (hit[:, 2] & hit[:, other] & (sign[:, 2] != sign[:, other])).mean(axis=1)
            ok &= ~inside | (undone < 0.5 * share[lines])
    return ok


def _colour_sign(steps: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The sign of each pixel's colour step (``steps`` (n, m, 3)) on ``rows``, in the
    channel that changed most."""
    part = steps[rows]
    size = np.abs(part)
    r, g, b = size[..., 0], size[..., 1], size[..., 2]
    return np.sign(np.where(r >= np.maximum(g, b), part[..., 0], np.where(g >= b, part[..., 1], part[..., 2])))


def gutters_off(colours: np.ndarray, box: Box) -> Box:
    """A collage cell ``box`` without the flat lines along its edges, up to
    ``REGION_CELL_GUTTER`` of its side: a gutter too thin to be a seam's flat band of
    its own (a line or two of the thumbnail) stays in the cell the seam ended; a photo's
    own flat edge (a sky, a white margin) is not cut into beyond that."""
    left, top, right, bottom = box
    part = colours[top:bottom, left:right]
    if part.shape[0] < 8 or part.shape[1] < 8:
        return box
    rows, cols = (max(1, int(n * defaults.REGION_CELL_GUTTER)) for n in part.shape[:2])

    def run(lines: np.ndarray) -> int:  # flat lines (n, m, 3) from the first, at most all n
        flat = lines.std(axis=1).max(axis=1) <= 4.0
        return len(flat) if flat.all() else int(np.argmin(flat))

    across = part.transpose(1, 0, 2)
    return (left + run(across[:cols]), top + run(part[:rows]),
            right - run(across[::-1][:cols]), bottom - run(part[::-1][:rows]))
