"""What decoding a frame will cost, decided from its header before any pixel exists.

A declared size alone cannot tell a phone's 200 MP photo from an attack: libjpeg
decodes a JPEG at 1/2, 1/4 or 1/8 scale in the DCT domain, so a 200 MP JPEG costs a
3 MP frame plus its entropy decoding, while a 60 MP PNG costs every one of its pixels.
:func:`plan` therefore decides from what decoding will really hold:

- the frame it decodes to (after the largest DCT reduction the consumers allow, and at
  least the one that brings it under ``max_pixels``);
- for a progressive or multi-scan JPEG, every DCT coefficient of the full-size frame,
  which libjpeg keeps in memory whatever the output scale;
- the declared size itself, which bounds entropy-decoding time for reducible files;
- for a JPEG, its number of scans: libjpeg goes over the whole frame once per scan, so
  a small file made of thousands of scans costs minutes (``decompression_bomb``).

A refusal says which of two things the file is. ``decompression_bomb`` names an attack:
a huge declared size in a file far too small to hold it (more raw pixel bytes per
byte of file than any real encoder produces). ``too_many_pixels`` is an ordinary
picture too big to decode safely in its format; it is quarantined all the same
(fail closed), but a moderator reading the reason knows it is not an attack.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults
from ..errors import UnreadableImage
from .codes import DECOMPRESSION_BOMB, TOO_MANY_PIXELS, UNREADABLE
from .jpeg import Layout

#: Scales libjpeg can decode to in the DCT domain.
JPEG_REDUCTIONS = (1, 2, 4, 8)


def further_reduction(height: int, width: int, reduction: int, min_side: int) -> int:
    """The power of two by which a JPEG frame decoded at 1/``reduction`` (``height`` x
    ``width``) can be box-shrunk further to what the decoder would have given for
    ``min_side``: its short side stays at least ``min_side``, and the whole reduction
    stays one libjpeg can make (``JPEG_REDUCTIONS``)."""
    k = 1
    while min(height, width) // (2 * k) >= min_side and reduction * k * 2 <= JPEG_REDUCTIONS[-1]:
        k *= 2
    return k
#: Bytes per output pixel held while a frame is decoded and converted (RGBA at worst).
_OUTPUT_BYTES_PER_PIXEL = 4


@dataclass(frozen=True)
class Plan:
    """How one frame will be decoded."""

    #: 1 = every pixel; 2, 4 or 8: a JPEG decoded at that fraction of its size.
    reduction: int
    width: int
    height: int
    #: Estimated bytes the decoder holds for this frame (output plus coefficient buffers).
    memory: int


@dataclass(frozen=True)
class Budget:
    """The limits :func:`plan` checks against (a view of :class:`photosentry.decode.Limits`)."""

    max_pixels: int = defaults.MAX_PIXELS
    max_declared_pixels: int = defaults.MAX_DECLARED_PIXELS
    max_decode_bytes: int = defaults.MAX_DECODE_BYTES
    bomb_ratio: int = defaults.DECOMPRESSION_BOMB_RATIO
    max_scans: int = defaults.MAX_JPEG_SCANS


def plan(
    fmt: str,
    width: int,
    height: int,
    file_bytes: int,
    budget: Budget,
    *,
    layout: Layout | None = None,
    min_side: int | None = None,
) -> Plan:
    """Decide how a frame of ``width x height`` declared by a ``file_bytes`` file is decoded.

    Args:
        fmt: the sniffed format; only ``jpeg`` (with its ``layout``) can be reduced.
        layout: the JPEG's marker structure (progressive files cost their coefficients).
        min_side: the smallest side any consumer needs; the largest DCT reduction that
            keeps both sides at least this long is taken. None: as little as the budget allows.

    Raises:
        UnreadableImage: ``decompression_bomb``, ``too_many_pixels`` or ``unreadable``.
    """
    if width < 1 or height < 1:
        raise UnreadableImage(UNREADABLE, f"declared size {width}x{height} is empty")
    if layout is not None and layout.scans > budget.max_scans:
        raise UnreadableImage(DECOMPRESSION_BOMB,
                              f"{fmt} has {layout.scans} scans (limit {budget.max_scans}): the decoder would"
                              f" re-process the whole {width}x{height} frame for each of them")
    declared = width * height
    if declared > budget.max_pixels and is_bomb(declared, file_bytes, budget):
        raise bomb(fmt, width, height, file_bytes)
    reductions = _reductions(fmt, layout)
    if declared > budget.max_declared_pixels:
        raise too_many(fmt, width, height, f"over the {_mp(budget.max_declared_pixels)} any file may declare")
    fits = [r for r in reductions if _ceil(width, r) * _ceil(height, r) <= budget.max_pixels]
    if not fits:
        how = "even at 1/8 scale" if len(reductions) > 1 else f"and {fmt} cannot be decoded at a reduced size"
        raise too_many(fmt, width, height, f"over the {_mp(budget.max_pixels)} a frame may decode to, {how}")
    reduction = fits[0]
    if min_side is not None:
        if min_side < 1:
            raise ValueError(f"min_side must be at least 1, got {min_side}")
        wanted = [r for r in reductions if min(width, height) // r >= min_side]
        reduction = max(reduction, max(wanted, default=1))
    out_w, out_h = _ceil(width, reduction), _ceil(height, reduction)
    memory = out_w * out_h * _OUTPUT_BYTES_PER_PIXEL
    if layout is not None and layout.frame is not None and layout.buffered:
        memory += layout.frame.coefficient_bytes()
    if memory > budget.max_decode_bytes:
        raise too_many(fmt, width, height,
                       f"decoding would hold {memory // 2**20} MiB (limit {budget.max_decode_bytes // 2**20} MiB;"
                       " a progressive JPEG keeps every coefficient of the full-size frame)")
    return Plan(reduction, out_w, out_h, memory)


def is_bomb(declared_pixels: int, file_bytes: int, budget: Budget) -> bool:
    """More raw RGB bytes per byte of file than real encoders produce."""
    return declared_pixels * 3 > budget.bomb_ratio * max(1, file_bytes)


def refuse_frame(fmt: str, width: int, height: int, file_bytes: int, budget: Budget) -> UnreadableImage:
    """The refusal for a frame (a TIFF page, a GIF frame) declaring more than ``max_pixels``."""
    if is_bomb(width * height, file_bytes, budget):
        return bomb(fmt, width, height, file_bytes)
    return too_many(fmt, width, height, f"over the {_mp(budget.max_pixels)} a frame may decode to")


def bomb(fmt: str, width: int, height: int, file_bytes: int) -> UnreadableImage:
    return UnreadableImage(
        DECOMPRESSION_BOMB,
        f"{fmt} declares {width}x{height} ({_mp(width * height)}) in a file of {file_bytes} bytes:"
        " far more pixels than any real encoder packs into so few bytes",
    )


def too_many(fmt: str, width: int, height: int, why: str) -> UnreadableImage:
    return UnreadableImage(TOO_MANY_PIXELS, f"{fmt} of {width}x{height} ({_mp(width * height)}) is {why}")


def _reductions(fmt: str, layout: Layout | None) -> tuple[int, ...]:
    if fmt != "jpeg" or layout is None or layout.frame is None:
        return (1,)
    # Pillow's draft scales greyscale and YCbCr/RGB frames; CMYK/YCCK and lossless
    # JPEGs are decoded whole.
    if layout.frame.lossless or len(layout.frame.components) not in (1, 3):
        return (1,)
    return JPEG_REDUCTIONS


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"
