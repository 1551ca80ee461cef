"""Where the banned photo might be inside an upload: query-side region proposals.

Re-uploaders rarely post a banned photo bare: they frame it, letterbox it onto a 9:16
story canvas, add a caption bar, show it inside a chat screenshot or put it in a
collage. A whole-image hash of such a copy describes the framing as much as the photo,
so PDQ misses it. Here the upload is searched for the rectangles a photo would occupy,
and each one is hashed and matched like the photo itself (:func:`propose`):

- ``trim``: uniform margins cut off each edge: borders, letterbox bars, caption bars
  (a bar may carry text: a line counts as margin when most of its pixels are the
  bar's colour);
- ``frame``: a frame of even thickness, at the depth where three sides have an edge
  (a striped, dotted or checked frame, which no trim takes off);
- ``edges``: the strongest straight edge near each side (a patterned frame); ``outline``:
  the outermost straight line near each side that steps all along while the lines
  outside it barely do (a photo on a story's blurred copy of itself, however faint);
  ``sharp``: the band of lines with a photo's detail in them;
- ``content``: the largest solid block of pixels that are not the picture's
  background colours (a screenshot's flat UI and its text are background; text strokes
  are thinner than the opening that removes them); ``block``: within it, the rows solid
  from one side to the other at the same two columns (a photo whose chat bubbles,
  a few pixels above or below it, joined its block);
- ``cell``: the cells of a collage (:mod:`.collage`), split along straight seams that
  cross the picture, up to two levels deep; ``fitted``: a cell without its uniform
  margins (a layout that fits each photo whole into its cell and pads the rest); ``piece``: a part of the first split that
  the second split cut again, and the cells of the grid cut without preferring gutters.

Every box is then also tried without the uniform lines along its sides (``tight``: a
chat bubble's padding of a few pixels, a thin frame, too thin for the thumbnail),
beside it, with PDQ only.

Everything runs on a thumbnail (longest side :data:`defaults.REGION_THUMB_SIDE`), so
it costs about 3 ms a photo; the crops are cut from the frame the scan decoded.
Proposals only add queries: the whole photo is always matched too, and what a region
match counts for is the evidence rule's call (:mod:`.evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import defaults
from .boxes import Box, area, iou
from .collage import cells_of, gutters_off


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame: ``kind`` names the proposer, the box is in frame pixels."""

    kind: str
    left: int
    top: int
    right: int
    bottom: int

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.left},{self.top},{self.right},{self.bottom}"

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        return rgb[self.top:self.bottom, self.left:self.right]

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)




#: Kinds that are one photo of a collage: a fitted photo in a grid's cell may cover a
#: twentieth of the picture (``REGION_CELL_MIN_AREA``).
_COLLAGE_KINDS = frozenset({"cell", "fitted", "panel"})


def propose(rgb: np.ndarray, *, grey: np.ndarray | None = None, limit: int = defaults.REGION_LIMIT) -> list[Region]:
    """Up to ``limit`` rectangles of ``rgb`` (H, W, 3 uint8) that may hold a photo of
    their own, largest evidence first; none for a photo that fills its frame. ``grey``:
    its luminance (OpenCV's, uint8) where the caller has it already."""
    h, w = rgb.shape[:2]
    if min(h, w) < defaults.REGION_MIN_FRAME_SIDE:
        return []
    # Every n-th pixel, not an area average: margins, backgrounds and seams survive
    # it, and averaging a 12 MP frame would cost more than everything else here.
    stride = -(-max(h, w) // defaults.REGION_THUMB_SIDE)
    small = np.ascontiguousarray(rgb[::stride, ::stride])
    sh, sw = small.shape[:2]
    # The thumbnail's colours as signed numbers (for margins) and its luminance (for
    # edges, detail and seams), each made once: every proposer reads a part of them.
    colours = small.astype(np.int16)
    luma = small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    full: Box = (0, 0, sw, sh)
    found: list[tuple[str, Box]] = []
    trimmed = _trim(colours, full)
    if trimmed != full:
        found.append(("trim", trimmed))
    framed = _frame(luma)
    if framed is not None:
        found.append(("frame", framed))
    edged = _edges(luma, trimmed)
    if edged != trimmed:
        found.append(("edges", edged))
    outlined = _outline(luma, trimmed)
    if outlined != trimmed:
        found.append(("outline", outlined))
    sharp = _sharp(luma)
    if sharp is not None:
        found.append(("sharp", sharp))
    bases = [trimmed]
    solid = _solid(small)
    content, blocks = _blocks(solid) if solid is not None else (None, [])
    block = None
    if content is not None:
        block = _block(solid, content)
        content = _trim(colours, content)
        found.append(("content", content))
        bases.append(content)
    # Two photos side by side with no padding between them are one panel: cut it too.
    panels = [_trim(colours, b) for b in blocks]
    bases.extend(panels)
    # Before the cells: a block on padding is a photo's own box, where a grid cut
    # through padding is a guess (and a small guess may be a sliver of padding).
    found.extend(("panel", b) for b in panels)
    pieces: list[tuple[str, Box]] = []
    fitted: list[tuple[str, Box]] = []
    if grey is None:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    for base in dict.fromkeys(bases):
        cells, more = cells_of(luma, base, depth=defaults.REGION_SPLIT_DEPTH, fine=grey, stride=stride, colours=colours)
        if len(cells) > 1:
            grid = [gutters_off(colours, c) for c in cells]
            found.extend(("cell", c) for c in grid)
            # A layout that fits each photo whole into its cell pads the rest: the
            # photo is the cell without its margins (PDQ only: the cell's own keypoints
            # hold the photo's).
            fitted.extend(("fitted", f) for f in (_trim(colours, c) for c in grid) if f not in grid)
        pieces.extend(("piece", gutters_off(colours, c)) for c in more)
    # After the cells: where the split found the photo too, its cell is the query (a
    # cell has keypoints of its own).
    if block is not None and block != content:
        found.append(("block", block))
    found.extend(fitted)
    found.extend(pieces)
    # Last: they only matter where the trim cut into a photo's own flat edge.
    if trimmed != full:
        found.extend(("trim", b) for b in _framings(full, trimmed))
    out: list[Region] = []
    # Boxes are told apart after refinement, in frame pixels, and only when they nearly
    # coincide: PDQ matches a crop within a percent or two of each side, so a box at
    # IoU 0.92 with the frame (a 2% border) or with an earlier, rougher box is a query
    # of its own.
    kept: list[Box] = [(0, 0, w, h)]
    fx, fy = w / sw, h / sh
    for kind, box in found:
        if area(box) < defaults.REGION_MIN_AREA * sw * sh and not (
                kind in _COLLAGE_KINDS and area(box) >= defaults.REGION_CELL_MIN_AREA * sw * sh
                and 3 * min(box[2] - box[0], box[3] - box[1]) >= max(box[2] - box[0], box[3] - box[1])):
            continue  # too small; a collage's photo may be smaller, but is no sliver
        coarse = (round(box[0] * fx), round(box[1] * fy), min(w, round(box[2] * fx)), min(h, round(box[3] * fy)))
        fine = _refined(grey, coarse, reach=stride + 1)
        if any(iou(fine, k) >= defaults.REGION_SAME_BOX for k in kept):
            continue
        kept.append(fine)
        out.append(Region(kind, *fine))
        if len(out) >= limit:
            break
    # A chat bubble's coloured padding, a thin frame: lines too thin for the thumbnail,
    # yet 8 pixels on one side move PDQ past 31. Each box is also queried without them
    # (beside it: a photo's own flat edge, a film still's bars, may be what was banned),
    # within a budget of their own, so that they never crowd out a region.
    tightened: list[Region] = []
    for region in out:
        box = (region.left, region.top, region.right, region.bottom)
        tight = _tight(grey, box)
        if tight != box and not any(iou(tight, k) >= defaults.REGION_TIGHT_SAME_BOX for k in kept):
            kept.append(tight)
            # A kind of its own: a PDQ query only (the box's keypoints are its own box's).
            tightened.append(Region("tight", *tight))
            if len(tightened) >= defaults.REGION_TIGHT_LIMIT:
                break
    return out + tightened


def _tight(grey: np.ndarray, box: Box) -> Box:
    """``box`` without the uniform lines along its sides (most of each line the outermost
    one's grey level), up to ``REGION_TIGHT_SHARE`` of its side; a side keeps its lines
    where fewer than 2 are uniform, or all that were looked at are."""
    left, top, right, bottom = box
    part = grey[top:bottom, left:right]
    if part.shape[0] < 16 or part.shape[1] < 16:
        return box
    cut = []
    tolerance = defaults.REGION_MARGIN_TOLERANCE
    for lines in (part, part[::-1], part.T, part.T[::-1]):  # top, bottom, left, right
        reach = max(2, int(len(lines) * defaults.REGION_TIGHT_SHARE))
        # Most of each line the padding's colour (a bubble's rounded corners are not),
        # which its middle pixel has if the line is padding at all.
        colour = int(lines[0][len(lines[0]) // 2])
        if (np.abs(lines[0].astype(np.int16) - colour) <= tolerance).mean() < defaults.REGION_CLEAN_LINE:
            cut.append(0)  # most boxes: the outermost line is the photo's
            continue
        near = np.abs(lines[:reach].astype(np.int16) - colour) <= tolerance
        flat = near.mean(axis=1) >= defaults.REGION_CLEAN_LINE
        depth = reach if flat.all() else int(np.argmin(flat))
        cut.append(depth if 2 <= depth < reach else 0)
    top_cut, bottom_cut, left_cut, right_cut = cut
    return (left + left_cut, top + top_cut, right - right_cut, bottom - bottom_cut)


def square_corners(crop: np.ndarray) -> np.ndarray | None:
    """``crop`` (H, W, 3 uint8) with rounded-off corners filled in from the photo around
    them, or None where it has none. Chat apps round a photo's corners onto the chat's
    background; those four patches of white or black move PDQ by 10-30 bits, enough to
    push an exactly found photo past 31 (bench_copies: 11 of 80 screenshots' exact
    crops; filled in, 7; the PDQ-only list's screenshots 75.0 -> 78.8%). The scan
    matches both the region and this (signals._region_pdq).

    A corner is rounded where the pixels of the tip's colour make the outside of a
    quarter circle of radius r (the run of that colour along both edges from the tip),
    and at least three corners are, with about the same radius: an app rounds them all
    alike, while a photo's own dark corner is a blob of no such shape."""
    h, w = crop.shape[:2]
    limit = int(min(h, w) * defaults.REGION_CORNER)
    if limit < 4:
        return None
    yy, xx = np.mgrid[0:limit, 0:limit]
    found: list[tuple[int, bool, bool]] = []  # (radius, at the bottom, at the right)
    tolerance = 2 * defaults.REGION_MARGIN_TOLERANCE
    for tried, (flip_y, flip_x) in enumerate(((False, False), (False, True), (True, False), (True, True))):
        if len(found) + 4 - tried < 3:
            return None  # three corners can no longer be found
        # The corner turned to the top left, its tip at [0, 0].
        turned = crop[::-1 if flip_y else 1, ::-1 if flip_x else 1]
        tip = turned[0, 0].astype(np.int16)
        # The run of the tip's colour along both edges first (most photos' corners end
        # it at once), the whole patch only where it may be a rounded corner.
        row = (np.abs(turned[0, :limit].astype(np.int16) - tip) <= tolerance).all(axis=1)
        col = (np.abs(turned[:limit, 0].astype(np.int16) - tip) <= tolerance).all(axis=1)
        along = min(int(np.argmin(row)) if not row.all() else limit, int(np.argmin(col)) if not col.all() else limit)
        if not 3 <= along < limit:
            continue
        patch = turned[:limit, :limit].astype(np.int16)
        same = (np.abs(patch - tip) <= tolerance).all(axis=2)
        outside = (yy[:along, :along] - along) ** 2 + (xx[:along, :along] - along) ** 2 > along * along
        part = same[:along, :along]
        union = (part | outside).sum()
        if union and (part & outside).sum() / union >= 0.5:
            found.append((along, flip_y, flip_x))
    if len(found) < 3:
        return None
    radii = sorted(r for r, _, _ in found)
    middle = radii[len(radii) // 2]
    found = [f for f in found if abs(f[0] - middle) <= 0.35 * middle]
    if len(found) < 3:
        return None
    mask = np.zeros((h, w), np.uint8)
    for r, flip_y, flip_x in found:
        outside = ((yy[:r + 1, :r + 1] - r) ** 2 + (xx[:r + 1, :r + 1] - r) ** 2 > (r - 1) ** 2).astype(np.uint8)
        rows = slice(h - r - 1, h) if flip_y else slice(0, r + 1)
        cols = slice(w - r - 1, w) if flip_x else slice(0, r + 1)
        mask[rows, cols] |= outside[::-1 if flip_y else 1, ::-1 if flip_x else 1]
    return cv2.inpaint(np.ascontiguousarray(crop), mask, 3, cv2.INPAINT_TELEA)


def _refined(grey: np.ndarray, box: Box, *, reach: int) -> Box:
    """``box`` with each side moved, within ``reach`` pixels, onto the frame line where
    the picture changes most: the thumbnail places a side to a thumbnail pixel (half a
    percent), and PDQ moves a dozen bits for that."""
    h, w = grey.shape
    left, top, right, bottom = box

    def best(lines: np.ndarray, at: int, limit: int) -> int:
        # lines[i] is the i-th line across the box; the side sits between lines at-1 and at.
        lo, hi = max(1, at - reach), min(limit - 1, at + reach)
        if hi <= lo:
            return at
        near = lines[lo - 1:hi + 1].astype(np.float32)
        steps = np.abs(near[1:] - near[:-1]).mean(axis=1)
        return lo + int(steps.argmax())

    # Only the lines near each side are compared: a few rows and columns of the frame.
    rows = grey[:, left:right]
    cols = grey[top:bottom].T
    top = best(rows, top, h) if top > 0 else 0
    bottom = best(rows, bottom, h) if bottom < h else h
    left = best(cols, left, w) if left > 0 else 0
    right = best(cols, right, w) if right < w else w
    return (left, top, right, bottom) if right - left >= 8 and bottom - top >= 8 else box


# -- margins ------------------------------------------------------------------------------


def _trim(colours: np.ndarray, box: Box) -> Box:
    """``box`` of ``colours`` ((h, w, 3) int16) without the uniform margins on each edge
    (twice: a frame around a border)."""
    for _ in range(2):
        left, top, right, bottom = box
        part = colours[top:bottom, left:right]
        if part.shape[0] < 8 or part.shape[1] < 8:
            return box
        t = _margin(part)
        b = _margin(part[::-1])
        lft = _margin(part.transpose(1, 0, 2))
        rgt = _margin(part.transpose(1, 0, 2)[::-1])
        new = (left + lft, top + t, right - rgt, bottom - b)
        if new[2] - new[0] < 0.25 * (right - left) or new[3] - new[1] < 0.25 * (bottom - top):
            return box  # nearly all margin: a flat picture, not a framed one
        if new == box:
            break
        box = new
    return box


def _framings(full: Box, box: Box) -> list[Box]:
    """Other readings of the margins trimmed off ``full`` to leave ``box``, for a photo
    with a flat edge of its own (a white figure background, a black sky) that the
    margin's colour ran on into: a frame or a letterbox is centred, so of two opposite
    margins the thinner one is the framing's and the other side is cut there too; a
    caption is one bar, so the other sides' margins may be the photo's own."""
    depth = [box[0] - full[0], box[1] - full[1], full[2] - box[2], full[3] - box[3]]
    centred = list(depth)
    for a, b in ((0, 2), (1, 3)):
        if depth[a] and depth[b]:
            centred[a] = centred[b] = min(depth[a], depth[b])
    deepest = int(np.argmax(depth))
    single = [d if i == deepest else 0 for i, d in enumerate(depth)]
    out = []
    for d in (centred, single):
        if d != depth:
            out.append((full[0] + d[0], full[1] + d[1], full[2] - d[2], full[3] - d[3]))
    return out


def _margin(lines: np.ndarray) -> int:
    """How many of ``lines`` (rows from an edge inward, (n, m, 3) int16) are a margin:
    the margin is the outermost line's colour; a caption bar's lines of text are still
    margin while a fair share of them is that colour, and the margin ends at the last
    clean line before the first line that is not (a bar has padding under its text)."""
    n = lines.shape[0]
    reach = n // 2
    ref = np.median(lines[0], axis=0).astype(np.int16)
    tol = defaults.REGION_MARGIN_TOLERANCE
    outer = (np.abs(lines[0] - ref) <= tol).all(axis=1).mean()
    if outer < defaults.REGION_CLEAN_LINE:
        return 0  # most photos: their edge is no margin, so the lines inside are not read
    near = np.abs(lines[:reach] - ref) <= tol
    share = (near[..., 0] & near[..., 1] & near[..., 2]).mean(axis=1)
    clean = share >= defaults.REGION_CLEAN_LINE
    broken = np.flatnonzero(share < defaults.REGION_TEXT_LINE)
    cleans = np.flatnonzero(clean[: broken[0] if len(broken) else reach])
    depth = int(cleans[-1]) + 1
    return depth if depth >= max(2, int(n * defaults.REGION_MIN_MARGIN)) else 0


def _edges(luma: np.ndarray, box: Box) -> Box:
    """``box`` of ``luma`` cut at the strongest straight edge crossing it near each side:
    where a photo meets a patterned frame, a blurred story background or a bar."""
    left, top, right, bottom = box
    grey = luma[top:bottom, left:right]
    h, w = grey.shape
    out = [left, top, right, bottom]
    # Top and bottom first; then the sides, along the rows between them only (a photo
    # scaled down on a story canvas is a band: its sides are a third of the height).
    rows = (np.abs(np.diff(grey, axis=0)) > defaults.REGION_SEAM_STEP).mean(axis=1)  # between y and y + 1
    _ends(rows, h, out, 1, 3)
    band = grey[out[1] - top: out[3] - top]
    if band.shape[0] >= 8:
        cols = (np.abs(np.diff(band, axis=1)) > defaults.REGION_SEAM_STEP).mean(axis=0)
        _ends(cols, w, out, 0, 2)
    return (out[0], out[1], out[2], out[3])


def _ends(profile: np.ndarray, n: int, out: list[int], near: int, far: int) -> None:
    """Move ``out[near]`` and ``out[far]`` onto the strongest line of ``profile`` within
    reach of each end, if one is strong enough."""
    reach = int(n * defaults.REGION_EDGE_REACH)
    if reach < 2:
        return
    head, tail = profile[:reach], profile[::-1][:reach]
    if head.max() >= defaults.REGION_EDGE_FILL:
        out[near] += int(head.argmax()) + 1
    if tail.max() >= defaults.REGION_EDGE_FILL:
        out[far] -= int(tail.argmax()) + 1


def _outline(luma: np.ndarray, box: Box) -> Box:
    """``box`` of ``luma`` cut, on each side, at the outermost straight line that steps
    along nearly all of its length while the lines outside it barely step: where a
    photo meets a bar, a border or a story's blurred copy of itself, however faint the
    step (a dark photo on its darkened copy steps a few levels), since what lies
    outside a pasted photo is smoother than its edge. The sides are looked for along
    the rows between the top and bottom found (a photo on a story canvas is a band)."""
    left, top, right, bottom = box
    grey = luma[top:bottom, left:right]
    out = [left, top, right, bottom]
    _outer(grey, out, 1, 3)
    band = grey[out[1] - top: out[3] - top]
    if band.shape[0] >= 8:
        _outer(band.T, out, 0, 2)
    return (out[0], out[1], out[2], out[3])


def _outer(grey: np.ndarray, out: list[int], near: int, far: int) -> None:
    """Move ``out[near]`` and ``out[far]`` onto the outermost line of ``grey``'s rows,
    from the top and from the bottom, that :func:`_outline` takes for a photo's edge."""
    n = grey.shape[0]
    reach = int(n * defaults.REGION_EDGE_REACH)
    if reach < 3 or grey.shape[1] < 8:
        return
    for rows, at, sign in ((grey[: reach + 1], near, 1), (grey[::-1][: reach + 1], far, -1)):
        steps = np.abs(np.diff(rows, axis=0))  # steps[y]: between lines y and y + 1
        calm = np.maximum(steps[:-2], steps[1:-1])  # the two steps outside steps[y + 2]
        line = (steps[2:] >= defaults.REGION_LINE_STEP) & (steps[2:] >= 2.0 * calm)
        share = line.mean(axis=1)
        hits = np.flatnonzero(share >= defaults.REGION_LINE_FILL)
        # The very first steps have no calm lines outside them: a margin of one or two
        # lines is left to :func:`_trim`.
        if len(hits):
            out[at] += sign * (int(hits[0]) + 3)


def _frame(grey: np.ndarray) -> Box | None:
    """``grey`` inside a frame of even thickness: the depth at which the top, left and
    right sides all have a straight edge (a luminance step over ``REGION_SEAM_STEP``
    along ``REGION_FRAME_FILL`` of the line, a line either way for the thumbnail's
    rounding), and the bottom's edge at that depth or, for a Polaroid's deeper bottom,
    the strongest one within four times it. A striped, dotted or checked frame has
    edges of its own, but rarely at one depth on three sides, and never is it flat
    enough for :func:`_trim`."""
    h, w = grey.shape
    reach = int(min(h, w) * defaults.REGION_FRAME_DEPTH)
    if reach < 3:
        return None

    def profile(lines: np.ndarray, n: int) -> np.ndarray:  # share stepping between line t-1 and t
        lines = lines[: n + 2]
        share = (np.abs(np.diff(lines, axis=0)) > defaults.REGION_SEAM_STEP).mean(axis=1)
        return np.concatenate([[0.0], share])

    sides = [profile(grey[:, int(0.1 * w): int(0.9 * w)], 4 * reach),
             profile(grey.T[:, int(0.1 * h): int(0.9 * h)], reach),
             profile(grey.T[::-1, int(0.1 * h): int(0.9 * h)], reach),
             profile(grey[::-1, int(0.1 * w): int(0.9 * w)], 4 * reach)]
    loose = [np.maximum(np.maximum(p[:-2], p[1:-1]), p[2:]) for p in sides]  # loose[t - 1]: best of t-1..t+1
    top, left, right = (p[: reach - 1] for p in loose[:3])
    score = np.minimum(np.minimum(top, left), right)
    t = int(score.argmax())
    if score[t] < defaults.REGION_FRAME_FILL:
        return None
    depth = [int(np.argmax(sides[i][t: t + 3])) + t for i in range(3)]
    bottom = sides[3][t: 4 * (t + 1) + 1]
    if len(bottom) == 0 or bottom.max() < defaults.REGION_FRAME_FILL:
        return None
    below = t + (int(np.argmax(bottom[:3])) if bottom[:3].max() >= defaults.REGION_FRAME_FILL else int(bottom.argmax()))
    box = (depth[1], depth[0], w - depth[2], h - below)
    return box if box[2] - box[0] >= 8 and box[3] - box[1] >= 8 else None


def _sharp(grey: np.ndarray) -> Box | None:
    """The band of lines of ``grey`` with a photo's detail in them: a story's background
    is the photo itself blurred and darkened, with no edge a margin or a line would find,
    but next to the photo it has next to no detail."""
    h, w = grey.shape
    if min(h, w) < 8:
        return None  # a sliver (a thumbnail one pixel wide has no detail along its rows)
    across = np.abs(np.diff(grey, axis=1)).mean(axis=1)  # detail along each row
    rows = np.flatnonzero(across > defaults.REGION_SHARP_SHARE * np.percentile(across, 90))
    if len(rows) < 8:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    down = np.abs(np.diff(grey[top:bottom], axis=0)).mean(axis=0)  # detail down each column
    cols = np.flatnonzero(down > defaults.REGION_SHARP_SHARE * np.percentile(down, 90))
    if len(cols) < 8:
        return None
    box = (int(cols[0]), top, int(cols[-1]) + 1, bottom)
    return box if area(box) < 0.85 * h * w else None


# -- the photo inside a screenshot ----------------------------------------------------------------


def _solid(small: np.ndarray) -> np.ndarray | None:
    """Where ``small`` is not the picture's background: a screenshot's photo, its chat
    bubbles and buttons, as solid blocks (uint8 0/1; text strokes are thinner than the
    opening that removes them), or None where the picture has no background colour."""
    h, w = small.shape[:2]
    quant = (small >> 3).astype(np.int32)
    codes = (quant[..., 0] << 10) | (quant[..., 1] << 5) | quant[..., 2]
    counts = np.bincount(codes.ravel(), minlength=1 << 15)
    border = np.concatenate([codes[0], codes[-1], codes[:, 0], codes[:, -1]])
    border_counts = np.bincount(border, minlength=1 << 15)
    common = np.flatnonzero(counts >= defaults.REGION_BACKGROUND_SHARE * h * w)
    background = [c for c in common if border_counts[c] >= 0.05 * len(border)]
    if not background:
        return None
    # A pixel one bin off a background colour (JPEG noise, anti-aliasing) is background too.
    is_background = np.zeros(1 << 15, dtype=bool)
    steps = np.array([-1, 0, 1])
    for c in background:
        r, g, b = ((c >> 10) & 31) + steps, ((c >> 5) & 31) + steps, (c & 31) + steps
        r, g, b = r[(r >= 0) & (r < 32)], g[(g >= 0) & (g < 32)], b[(b >= 0) & (b < 32)]
        is_background[(r[:, None, None] << 10) | (g[None, :, None] << 5) | b[None, None, :]] = True
    mask = ~is_background[codes]
    k = max(3, round(min(h, w) * 0.025)) | 1
    kernel = np.ones((k, k), np.uint8)
    solid = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(solid, cv2.MORPH_CLOSE, kernel)


def _blocks(solid: np.ndarray) -> tuple[Box | None, list[Box]]:
    """The bounding boxes of the solid blocks that are not background and may be photos:
    the ``content`` (the largest, a screenshot's photo), if it is a clear part of the
    picture (not nearly all of it, not a sliver), and the ``panel``s beside it, up to
    ``REGION_PANELS`` of at least ``REGION_CELL_MIN_AREA``, largest first (photos a
    collage app fitted whole into their cells, each on its own padding, which no
    gutter or seam between cells marks; the largest too where it is under
    ``REGION_MIN_AREA``)."""
    h, w = solid.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=4)
    content: Box | None = None
    panels: list[Box] = []
    for rank, i in enumerate(1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")):
        x, y, bw, bh, pixels = (int(v) for v in stats[i])
        share = bw * bh / (h * w)
        photo_like = share <= 0.9 and pixels >= 0.6 * bw * bh
        if rank == 0 and not photo_like:
            break  # the picture's main block is no photo: nor are the smaller ones
        if share < defaults.REGION_CELL_MIN_AREA or len(panels) + (content is not None) > defaults.REGION_PANELS:
            break
        if rank == 0 and share >= defaults.REGION_MIN_AREA:
            content = (x, y, x + bw, y + bh)
        elif photo_like:
            panels.append((x, y, x + bw, y + bh))
    return content, panels


def _block(solid: np.ndarray, box: Box) -> Box | None:
    """The largest rectangle inside ``box`` whose rows are solid from one side to the
    other at the same two columns: the photo, where the chat bubbles next to it joined
    its solid block (a bubble a few pixels above or below a photo is one block with it,
    but its rows start and end elsewhere). The rows at its top and bottom that cover
    most of that span are the photo's rounded corners and are kept."""
    left, top, right, bottom = box
    part = solid[top:bottom, left:right].astype(bool)
    filled = part.any(axis=1)
    first = np.where(filled, part.argmax(axis=1), 0)
    last = np.where(filled, part.shape[1] - 1 - part[:, ::-1].argmax(axis=1), -1)
    full = filled & (part.sum(axis=1) >= 0.95 * (last - first + 1)) & (last - first + 1 >= 8)
    best: tuple[int, int, int] | None = None  # (area, start row, stop row)
    y, n = 0, part.shape[0]
    while y < n:
        if not full[y]:
            y += 1
            continue
        stop = y + 1
        while stop < n and full[stop] and abs(first[stop] - first[y]) <= 1 and abs(last[stop] - last[y]) <= 1:
            stop += 1
        size = (stop - y) * (last[y] - first[y] + 1)
        if stop - y >= 8 and (best is None or size > best[0]):
            best = (size, y, stop)
        y = stop
    if best is None:
        return None
    _, start, stop = best
    left_col, right_col = int(first[start]), int(last[start])  # the run's span, its first row's
    span = part[:, left_col: right_col + 1]
    reach = max(2, (stop - start) // 10)
    for _ in range(reach):
        if start == 0 or span[start - 1].mean() < 0.8:
            break
        start -= 1
    for _ in range(reach):
        if stop == n or span[stop].mean() < 0.8:
            break
        stop += 1
    return (left + left_col, top + start, left + right_col + 1, top + stop)
