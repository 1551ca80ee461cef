"""The copies re-uploaders make of a photo, drawn with Pillow: one function per kind.

Each maker takes the photo (RGB), a seeded ``random.Random`` and a :class:`Pool` of
other photos (for collages and backgrounds) and returns the new picture; every
parameter is drawn from the generator, so a seed gives the same copies on every run.
:func:`finish` then saves it as a phone would: JPEG at quality 70-95, sometimes
downsized. The parameters follow what people do with a phone on a social app (story
letterboxes, meme captions, chat screenshots, collage apps, stickers), not what a
detector happens to catch.

Used by scripts/bench_copies.py; ``KINDS`` lists the copies of a banned photo and
``NEGATIVE_FRAMINGS`` the framings made of innocent photos.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
WORDS = ("lol", "omg", "same", "mood", "wait what", "no way", "bruh", "literally me", "iconic",
         "this is so real", "who did this", "not again", "me on monday", "when the teacher says",
         "pov: you forgot", "tag someone", "follow for more", "cant stop laughing", "sooo true",
         "weekend vibes", "best day ever", "guess where", "dont ask", "ok but why", "lmaooo")
HANDLES = ("@lily.x", "@jayden_04", "@not.ur.bestie", "@memes4days", "@skater_k", "@sunny.daze",
           "@the_real_max", "@zoe.snaps", "@dailyfunny", "@k1ra")


class Pool:
    """Other photos to fill collage cells and backgrounds, loaded once and downsized."""

    def __init__(self, paths: list[Path], side: int = 900) -> None:
        self.paths = list(paths)
        self.side = side
        self._cache: dict[Path, Image.Image] = {}

    def pick(self, rng: random.Random) -> Image.Image:
        path = rng.choice(self.paths)
        img = self._cache.get(path)
        if img is None:
            with Image.open(path) as raw:
                raw.draft("RGB", (self.side, self.side))
                img = raw.convert("RGB")
            img.thumbnail((self.side, self.side))
            if len(self._cache) < 400:
                self._cache[path] = img
        return img


def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(FONT_DIR / name), max(6, size))
    except OSError:
        return ImageFont.load_default(max(6, size))


def finish(img: Image.Image, rng: random.Random, *, resize_p: float = 0.3) -> bytes:
    """The copy as uploaded: sometimes downsized by the app, JPEG at quality 70-95."""
    img = img.convert("RGB")
    if rng.random() < resize_p:
        side = rng.choice((640, 720, 800, 960, 1080, 1280))
        if max(img.size) > side:
            img = img.copy()
            img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=rng.randint(70, 95))
    return out.getvalue()


def _scaled(img: Image.Image, factor: float) -> Image.Image:
    return img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.Resampling.LANCZOS)


def _cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fill ``size`` with ``img``, cropping what sticks out (as collage apps do)."""
    return ImageOps.fit(img, size, Image.Resampling.LANCZOS)


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    scale = min(box[0] / img.width, box[1] / img.height)
    return _scaled(img, scale)


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    style = rng.random()
    if style < 0.3:
        return (255, 255, 255)
    if style < 0.55:
        return (0, 0, 0)
    if style < 0.8:  # pastel
        return tuple(rng.randint(170, 255) for _ in range(3))  # type: ignore[return-value]
    return tuple(rng.randint(0, 255) for _ in range(3))  # type: ignore[return-value]


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)


# -- the kinds detected before issue #17 ------------------------------------------------

def reencode(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return img


def resize(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return _scaled(img, rng.uniform(0.25, 0.7))


def mirror(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def rotate90(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return img.transpose(rng.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180)))


def grayscale(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def tone(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A filter app's look: brightness, contrast, saturation and sometimes a tint."""
    out = img
    ops = [(ImageEnhance.Brightness, 0.7, 1.3), (ImageEnhance.Contrast, 0.7, 1.4), (ImageEnhance.Color, 0.5, 1.6)]
    for op, lo, hi in rng.sample(ops, rng.randint(1, 3)):
        out = op(out).enhance(rng.uniform(lo, hi))
    if rng.random() < 0.4:
        tint = np.array([rng.uniform(0.85, 1.15) for _ in range(3)], dtype=np.float32)
        out = Image.fromarray(np.clip(np.asarray(out, dtype=np.float32) * tint, 0, 255).astype(np.uint8))
    return out


def blur(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0) * max(img.size) / 1000))


def stretch(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    factor = rng.uniform(0.7, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.4)
    if rng.random() < 0.5:
        return img.resize((round(img.width * factor), img.height), Image.Resampling.LANCZOS)
    return img.resize((img.width, round(img.height * factor)), Image.Resampling.LANCZOS)


def watermark(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A handle stamped on the photo, as re-posting accounts do."""
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = round(img.width * rng.uniform(0.03, 0.07))
    text = rng.choice(HANDLES) if rng.random() < 0.7 else rng.choice(HANDLES) + " • " + rng.choice(WORDS)
    f = font(size, bold=rng.random() < 0.5)
    w, h = _text_size(draw, text, f)
    spots = [(0.03, 0.03), (0.97, 0.03), (0.03, 0.97), (0.97, 0.97), (0.5, 0.5), (0.5, 0.9)]
    fx, fy = rng.choice(spots)
    x = round(fx * img.width - fx * w)
    y = round(fy * img.height - fy * h)
    alpha = rng.randint(120, 230)
    draw.text((x, y), text, font=f, fill=(255, 255, 255, alpha), stroke_width=max(1, size // 15),
              stroke_fill=(0, 0, 0, alpha))
    return Image.alpha_composite(out, layer).convert("RGB")


# -- the kinds issue #17 asks for -------------------------------------------------------

def crop_centre(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """Zoomed in: about the same share off every edge, up to 20%."""
    base = rng.uniform(0.05, 0.20)
    cuts = [min(0.20, max(0.02, base + rng.uniform(-0.02, 0.02))) for _ in range(4)]
    w, h = img.size
    return img.crop((round(cuts[0] * w), round(cuts[1] * h), round(w - cuts[2] * w), round(h - cuts[3] * h)))


def crop_edge(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """Off-centre: 10-20% off one or two edges, or a window keeping ~64% of the area."""
    w, h = img.size
    mode = rng.random()
    if mode < 0.35:
        edges = [rng.randrange(4)]
    elif mode < 0.7:
        edges = rng.sample(range(4), 2)
    else:
        kw, kh = rng.uniform(0.77, 0.83), rng.uniform(0.77, 0.83)
        x0 = rng.uniform(0, 1 - kw) * w
        y0 = rng.uniform(0, 1 - kh) * h
        return img.crop((round(x0), round(y0), round(x0 + kw * w), round(y0 + kh * h)))
    box = [0.0, 0.0, float(w), float(h)]
    for edge in edges:
        cut = rng.uniform(0.10, 0.20)
        if edge == 0:
            box[0] = cut * w
        elif edge == 1:
            box[1] = cut * h
        elif edge == 2:
            box[2] = w - cut * w
        else:
            box[3] = h - cut * h
    return img.crop(tuple(round(v) for v in box))  # type: ignore[arg-type]


def _pattern(size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    a, b = _random_colour(rng), _random_colour(rng)
    style = rng.choice(("stripes", "checker", "dots", "gradient", "noise"))
    canvas = Image.new("RGB", size, a)
    draw = ImageDraw.Draw(canvas)
    step = max(4, round(min(w, h) * rng.uniform(0.01, 0.04)))
    if style == "stripes":
        for x in range(-h, w, step * 2):
            draw.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=b)
    elif style == "checker":
        for y in range(0, h, step):
            for x in range(0, w, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=b)
    elif style == "dots":
        for y in range(0, h, step * 2):
            for x in range(0, w, step * 2):
                draw.ellipse((x, y, x + step, y + step), fill=b)
    elif style == "gradient":
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        arr = (np.array(a, np.float32) * (1 - t) + np.array(b, np.float32) * t) * np.ones((1, w, 1), np.float32)
        canvas = Image.fromarray(arr.astype(np.uint8))
    else:
        nrng = np.random.default_rng(rng.randrange(2**32))
        arr = nrng.integers(0, 256, (max(1, h // 4), max(1, w // 4), 3), dtype=np.uint8)
        canvas = Image.fromarray(arr).resize(size, Image.Resampling.NEAREST)
    return canvas


def border(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A frame of 2-10% of the short side: solid, patterned, or a Polaroid's."""
    t = max(2, round(min(img.size) * rng.uniform(0.02, 0.10)))
    left = top = right = t
    bottom = t * 3 if rng.random() < 0.15 else t
    size = (img.width + left + right, img.height + top + bottom)
    canvas = _pattern(size, rng) if rng.random() < 0.4 else Image.new("RGB", size, _random_colour(rng))
    canvas.paste(img, (left, top))
    return canvas


def _background(img: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    style = rng.random()
    if style < 0.35:
        return Image.new("RGB", size, (0, 0, 0))
    if style < 0.6:
        return Image.new("RGB", size, (255, 255, 255))
    # A story's blurred, darkened fill from the photo itself.
    small = _cover(_scaled(img, 0.25), (max(1, size[0] // 8), max(1, size[1] // 8)))
    back = small.filter(ImageFilter.GaussianBlur(3)).resize(size, Image.Resampling.BILINEAR)
    return ImageEnhance.Brightness(back).enhance(rng.uniform(0.5, 0.9))


def _letterbox(img: Image.Image, rng: random.Random, canvas: tuple[int, int]) -> Image.Image:
    out = _background(img, canvas, rng)
    photo = _fit(img, canvas)
    if rng.random() < 0.4:
        photo = _scaled(photo, rng.uniform(0.8, 0.97))
    x = (canvas[0] - photo.width) // 2
    slack = canvas[1] - photo.height
    y = slack // 2 if rng.random() < 0.6 else round(slack * rng.uniform(0.3, 0.7))
    out.paste(photo, (x, y))
    return out


def letterbox_9x16(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A story: the photo on a 9:16 canvas."""
    width = rng.choice((720, 1080))
    return _letterbox(img, rng, (width, width * 16 // 9))


def letterbox_1x1(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A square post of a non-square photo."""
    side = rng.choice((1080, 1200, 1440))
    return _letterbox(img, rng, (side, side))


def _text_size(draw: ImageDraw.ImageDraw, text: str, f: object) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=f)  # type: ignore[arg-type]
    return box[2] - box[0], box[3] - box[1]


def _caption(img: Image.Image, rng: random.Random, *, above: bool) -> Image.Image:
    bar_h = round(img.height * rng.uniform(0.10, 0.25))
    bg = (255, 255, 255) if rng.random() < 0.75 else (0, 0, 0)
    bar = Image.new("RGB", (img.width, bar_h), bg)
    draw = ImageDraw.Draw(bar)
    lines = [rng.choice(WORDS)] + ([rng.choice(WORDS)] if rng.random() < 0.5 else [])
    size = round(bar_h / (len(lines) + 0.8))
    f = font(size, bold=rng.random() < 0.6)
    while size > 8 and max(_text_size(draw, line, f)[0] for line in lines) > img.width * 0.92:
        size = round(size * 0.85)
        f = font(size, bold=True)
    y = (bar_h - size * len(lines) * 1.15) / 2
    for line in lines:
        w, _ = _text_size(draw, line, f)
        x = (img.width - w) / 2 if rng.random() < 0.7 else img.width * 0.04
        draw.text((x, y), line, font=f, fill=_text_colour(bg))
        y += size * 1.15
    out = Image.new("RGB", (img.width, img.height + bar_h), bg)
    if above:
        out.paste(bar, (0, 0))
        out.paste(img, (0, bar_h))
    else:
        out.paste(img, (0, 0))
        out.paste(bar, (0, img.height))
    return out


def caption_above(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return _caption(img, rng, above=True)


def caption_below(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return _caption(img, rng, above=False)


def _rounded(img: Image.Image, radius: int) -> tuple[Image.Image, Image.Image]:
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, img.width - 1, img.height - 1), radius=radius, fill=255)
    return img, mask


def _status_bar(draw: ImageDraw.ImageDraw, w: int, h: int, fg: tuple[int, int, int], rng: random.Random) -> None:
    f = font(round(h * 0.55), bold=True)
    draw.text((round(w * 0.06), round(h * 0.2)), f"{rng.randint(7, 23)}:{rng.randint(0, 59):02d}", font=f, fill=fg)
    bx = round(w * 0.86)
    draw.rounded_rectangle((bx, round(h * 0.3), bx + round(w * 0.07), round(h * 0.75)), radius=4, outline=fg, width=2)
    level = rng.uniform(0.2, 1.0)
    draw.rectangle((bx + 3, round(h * 0.3) + 3, bx + 3 + round((w * 0.07 - 6) * level), round(h * 0.75) - 3), fill=fg)
    for i in range(4):
        x = round(w * 0.74) + i * round(w * 0.012)
        draw.rectangle((x, round(h * (0.7 - 0.1 * i)), x + round(w * 0.008), round(h * 0.75)), fill=fg)


def _bubble(draw: ImageDraw.ImageDraw, w: int, y: int, rng: random.Random, dark: bool, mine: bool) -> int:
    """One text bubble at height ``y``; returns the y below it."""
    size = round(w * 0.04)
    f = font(size)
    text = rng.choice(WORDS)
    if rng.random() < 0.4:
        text += " " + rng.choice(WORDS)
    tw, _ = _text_size(draw, text, f)
    bw, bh = min(round(w * 0.75), tw + round(size * 1.6)), round(size * 2.2)
    x = w - bw - round(w * 0.04) if mine else round(w * 0.04)
    fill = (0, 122, 255) if mine else ((58, 58, 60) if dark else (229, 229, 234))
    draw.rounded_rectangle((x, y, x + bw, y + bh), radius=round(bh * 0.45), fill=fill)
    colour = (255, 255, 255) if mine or dark else (0, 0, 0)
    draw.text((x + round(size * 0.8), y + round(size * 0.5)), text, font=f, fill=colour)
    return y + bh + round(size * 0.6)


def screenshot(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A phone screenshot of a chat or a gallery showing the photo (>= 1/4 of the screen)."""
    w, h = rng.choice(((1080, 2340), (1170, 2532), (720, 1600), (1080, 2400)))
    dark = rng.random() < 0.4
    bg = (0, 0, 0) if dark else (255, 255, 255)
    fg = (255, 255, 255) if dark else (0, 0, 0)
    screen = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(screen)
    status_h, bar_h = round(h * 0.03), round(h * 0.065)
    _status_bar(draw, w, status_h, fg, rng)
    chat = rng.random() < 0.6
    # Header: a chat's contact, or a gallery's back arrow and date.
    hf = font(round(bar_h * 0.38), bold=True)
    top = status_h + bar_h
    draw.line((0, top, w, top), fill=(128, 128, 128), width=1)
    draw.text((round(w * 0.04), status_h + round(bar_h * 0.25)), "<", font=hf, fill=(0, 122, 255))
    if chat:
        r = round(bar_h * 0.35)
        cx = round(w * 0.16)
        cy = status_h + bar_h // 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(rng.randint(60, 220) for _ in range(3)))
        draw.text((cx + r + round(w * 0.03), status_h + round(bar_h * 0.28)), rng.choice(HANDLES)[1:], font=hf, fill=fg)
        bottom = h - bar_h
        draw.rounded_rectangle((round(w * 0.04), bottom + round(bar_h * 0.2), round(w * 0.84), h - round(bar_h * 0.2)),
                               radius=round(bar_h * 0.3), outline=(128, 128, 128), width=2)
        max_w, max_h = round(w * 0.92), round(h * 0.6)
    else:
        draw.text((round(w * 0.35), status_h + round(bar_h * 0.28)), f"{rng.choice(('Today', 'Yesterday', 'March 3'))}",
                  font=hf, fill=fg)
        bottom = h - bar_h
        for i in range(4):  # share, like, edit, delete icons
            x = round(w * (0.12 + 0.25 * i))
            draw.ellipse((x - 18, bottom + bar_h // 2 - 18, x + 18, bottom + bar_h // 2 + 18), outline=fg, width=3)
        max_w, max_h = w, bottom - top
    # The photo: at least a quarter of the screen where its shape allows it.
    fit = min(max_w / img.width, max_h / img.height)
    least = math.sqrt(0.25 * w * h / (img.width * img.height))
    scale = fit if least >= fit else rng.uniform(least, fit)
    photo = _scaled(img, scale)
    mask = None
    if chat and rng.random() < 0.7 or not chat and rng.random() < 0.2:
        photo, mask = _rounded(photo, round(w * rng.uniform(0.02, 0.05)))
    if chat:
        y = top + round(h * 0.02)
        room = bottom - top - photo.height - round(h * 0.04)
        before = rng.uniform(0, max(0, room)) if room > 0 else 0
        while y < top + before - h * 0.06:
            y = _bubble(draw, w, y, rng, dark, rng.random() < 0.5)
        mine = rng.random() < 0.5
        x = w - photo.width - round(w * 0.04) if mine else round(w * 0.04)
        x = max(0, min(x, w - photo.width))
        y = min(y, bottom - photo.height)
        screen.paste(photo, (x, y), mask)
        y += photo.height + round(h * 0.015)
        while y < bottom - h * 0.07:
            y = _bubble(draw, w, y, rng, dark, rng.random() < 0.5)
        # The input bar stays on top of anything that scrolled under it.
        draw.rectangle((0, bottom, w, h), fill=bg)
        draw.rounded_rectangle((round(w * 0.04), bottom + round(bar_h * 0.2), round(w * 0.84), h - round(bar_h * 0.2)),
                               radius=round(bar_h * 0.3), outline=(128, 128, 128), width=2)
    else:
        x = (w - photo.width) // 2
        y = top + (bottom - top - photo.height) // 2
        screen.paste(photo, (x, y), mask)
    return screen


_LAYOUTS: dict[int, tuple[tuple[tuple[float, float, float, float], ...], ...]] = {
    2: (((0, 0, .5, 1), (.5, 0, 1, 1)), ((0, 0, 1, .5), (0, .5, 1, 1))),
    3: (((0, 0, 1 / 3, 1), (1 / 3, 0, 2 / 3, 1), (2 / 3, 0, 1, 1)),
        ((0, 0, 1, 1 / 3), (0, 1 / 3, 1, 2 / 3), (0, 2 / 3, 1, 1)),
        ((0, 0, .5, 1), (.5, 0, 1, .5), (.5, .5, 1, 1)),
        ((0, 0, 1, .5), (0, .5, .5, 1), (.5, .5, 1, 1))),
    4: (((0, 0, .5, .5), (.5, 0, 1, .5), (0, .5, .5, 1), (.5, .5, 1, 1)),
        ((0, 0, .6, 1), (.6, 0, 1, 1 / 3), (.6, 1 / 3, 1, 2 / 3), (.6, 2 / 3, 1, 1)),
        ((0, 0, 1, .6), (0, .6, 1 / 3, 1), (1 / 3, .6, 2 / 3, 1), (2 / 3, .6, 1, 1))),
}


def collage(img: Image.Image, rng: random.Random, pool: Pool, n: int) -> Image.Image:
    """A collage app's grid of ``n`` photos, ``img`` in one cell, ``pool`` photos in the others.

    The canvas is shaped so the chosen cell has about the photo's own shape (within
    15%, as a user picks a layout that suits the photo); every cell is then filled
    with its photo cropped to the cell, as the apps do. With or without gutters.
    """
    layout = rng.choice(_LAYOUTS[n])
    slot = rng.randrange(n)
    first = img
    x0, y0, x1, y1 = layout[slot]
    aspect = first.width / first.height * rng.uniform(0.87, 1.15)
    # cell aspect = (x1-x0)*W / ((y1-y0)*H) = aspect  =>  H = W*(x1-x0)/((y1-y0)*aspect)
    long_side = rng.choice((1080, 1280, 1440, 1600))
    ratio = (x1 - x0) / ((y1 - y0) * aspect)
    W, H = (long_side, round(long_side * ratio)) if ratio <= 1 else (round(long_side / ratio), long_side)
    gutter = 0 if rng.random() < 0.5 else max(2, round(max(W, H) * rng.uniform(0.008, 0.03)))
    canvas = Image.new("RGB", (W, H), _random_colour(rng) if gutter else (255, 255, 255))
    for i, (a, b, c, d) in enumerate(layout):
        box = (round(a * W) + (gutter if a == 0 else gutter // 2), round(b * H) + (gutter if b == 0 else gutter // 2),
               round(c * W) - (gutter if c == 1 else gutter // 2), round(d * H) - (gutter if d == 1 else gutter // 2))
        size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
        photo = first if i == slot else pool.pick(rng)
        canvas.paste(_cover(photo, size), box[:2])
    return canvas


def collage_fitted(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A collage app's grid of 2-4 photos that fits each photo whole into its cell
    (scaled up or down, never cropped) on one padding colour, ``img`` in one cell: the
    layouts that show every photo entire. A landscape photo in a tall cell floats on
    padding wider than any gutter."""
    n = rng.choice((2, 3, 4))
    layout = rng.choice(_LAYOUTS[n])
    slot = rng.randrange(n)
    long_side = rng.choice((1080, 1280, 1440, 1600))
    W, H = (long_side, round(long_side * rng.choice((1.0, 1.25, 16 / 9)))) if rng.random() < 0.5 else \
        (long_side, round(long_side * rng.choice((1.0, 0.8, 9 / 16))))
    padding = rng.choice(((255, 255, 255), (0, 0, 0), (242, 242, 242), _random_colour(rng)))
    inset = rng.uniform(0.0, 0.08)  # room left around each photo inside its cell, a share of each side
    canvas = Image.new("RGB", (W, H), padding)
    for i, (a, b, c, d) in enumerate(layout):
        cw, ch = (c - a) * W, (d - b) * H
        room = (max(1, round(cw * (1 - 2 * inset)) - 4), max(1, round(ch * (1 - 2 * inset)) - 4))
        photo = _fit(img if i == slot else pool.pick(rng), room)
        canvas.paste(photo, (round(a * W + (cw - photo.width) / 2), round(b * H + (ch - photo.height) / 2)))
    return canvas


def collage2(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return collage(img, rng, pool, 2)


def collage3(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return collage(img, rng, pool, 3)


def collage4(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    return collage(img, rng, pool, 4)


def _inscribed(w: int, h: int, angle: float) -> tuple[float, float]:
    """Largest axis-aligned rectangle inside a w x h rectangle rotated by ``angle``."""
    a = math.radians(abs(angle))
    sin, cos = math.sin(a), math.cos(a)
    long_, short = max(w, h), min(w, h)
    if short <= 2 * sin * cos * long_ or abs(sin - cos) < 1e-10:
        x = 0.5 * short
        wr, hr = (x / sin, x / cos) if w >= h else (x / cos, x / sin)
    else:
        cos2 = cos * cos - sin * sin
        wr, hr = (w * cos - h * sin) / cos2, (h * cos - w * sin) / cos2
    return wr, hr


def rotate_small(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """A crooked re-shot or a tilt: 2-10 degrees, corners filled or cropped away."""
    angle = rng.uniform(2, 10) * rng.choice((-1, 1))
    if rng.random() < 0.5:
        return img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_random_colour(rng))
    turned = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    wr, hr = _inscribed(img.width, img.height, angle)
    cx, cy = turned.width / 2, turned.height / 2
    return turned.crop((round(cx - wr / 2), round(cy - hr / 2), round(cx + wr / 2), round(cy + hr / 2)))


def _sticker(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    s = x1 - x0
    kind = rng.choice(("smiley", "heart", "star", "text", "sparkle"))
    if kind == "smiley":
        draw.ellipse(box, fill=(255, 204, 0, 255), outline=(200, 140, 0, 255), width=max(1, s // 30))
        e = s // 8
        draw.ellipse((x0 + s * 0.3 - e, y0 + s * 0.35 - e, x0 + s * 0.3 + e, y0 + s * 0.35 + e), fill=(60, 40, 0, 255))
        draw.ellipse((x0 + s * 0.7 - e, y0 + s * 0.35 - e, x0 + s * 0.7 + e, y0 + s * 0.35 + e), fill=(60, 40, 0, 255))
        draw.arc((x0 + s * 0.22, y0 + s * 0.3, x0 + s * 0.78, y0 + s * 0.8), 20, 160, fill=(60, 40, 0, 255),
                 width=max(2, s // 14))
    elif kind == "heart":
        c = (rng.randint(200, 255), rng.randint(0, 80), rng.randint(60, 140), 255)
        draw.ellipse((x0, y0 + s * 0.1, x0 + s * 0.55, y0 + s * 0.6), fill=c)
        draw.ellipse((x0 + s * 0.45, y0 + s * 0.1, x1, y0 + s * 0.6), fill=c)
        draw.polygon([(x0 + s * 0.03, y0 + s * 0.45), (x1 - s * 0.03, y0 + s * 0.45), (x0 + s * 0.5, y1)], fill=c)
    elif kind in ("star", "sparkle"):
        points = 5 if kind == "star" else 4
        inner = 0.45 if kind == "star" else 0.2
        cx, cy, r = x0 + s / 2, y0 + s / 2, s / 2
        pts = []
        for i in range(points * 2):
            rad = r if i % 2 == 0 else r * inner
            t = math.pi * i / points - math.pi / 2
            pts.append((cx + rad * math.cos(t), cy + rad * math.sin(t)))
        c = (255, 230, 60, 255) if kind == "star" else (255, 255, 255, 255)
        draw.polygon(pts, fill=c)
    else:
        text = rng.choice(WORDS)
        size = max(8, s // 2)
        f = font(size, bold=True)
        while size > 8 and draw.textlength(text, font=f) > s * 1.6:  # a word sticker, about the box's width
            size = round(size * 0.85)
            f = font(size, bold=True)
        draw.text((x0, y0 + s // 4), text, font=f, fill=tuple(rng.randint(0, 255) for _ in range(3)) + (255,),
                  stroke_width=max(1, s // 25), stroke_fill=(0, 0, 0, 255))


def overlay(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """Stickers, emoji and words over up to 10% of the photo."""
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    budget = img.width * img.height * rng.uniform(0.03, 0.10)
    count = rng.randint(1, 4)
    for _ in range(count):
        side = max(8, round(math.sqrt(budget / count)))
        side = min(side, img.width - 1, img.height - 1)
        x = rng.randint(0, img.width - side)
        y = rng.randint(0, img.height - side)
        _sticker(draw, (x, y, x + side, y + side), rng)
    return Image.alpha_composite(out, layer).convert("RGB")


Maker = Callable[[Image.Image, random.Random, Pool], Image.Image]

#: Kinds the matcher caught before issue #17.
KINDS_BEFORE: dict[str, Maker] = {
    "reencode": reencode, "resize": resize, "mirror": mirror, "rotate90": rotate90, "grayscale": grayscale,
    "tone": tone, "blur": blur, "stretch": stretch, "watermark": watermark,
}
#: Kinds issue #17 adds.
KINDS_NEW: dict[str, Maker] = {
    "crop_centre": crop_centre, "crop_edge": crop_edge, "border": border,
    "letterbox_9x16": letterbox_9x16, "letterbox_1x1": letterbox_1x1,
    "caption_above": caption_above, "caption_below": caption_below, "screenshot": screenshot,
    "collage2": collage2, "collage3": collage3, "collage4": collage4, "collage_fitted": collage_fitted,
    "rotate_small": rotate_small, "overlay": overlay,
}


def mirror_framed(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """Mirrored, then framed: the cheapest evasion stacked on a framing."""
    frame = rng.choice((border, letterbox_9x16, letterbox_1x1, caption_above, screenshot))
    return frame(mirror(img, rng, pool), rng, pool)


def mirror_cropped(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """Mirrored, then cropped (centred or off-centre)."""
    return rng.choice((crop_centre, crop_edge))(mirror(img, rng, pool), rng, pool)


def two_edits(img: Image.Image, rng: random.Random, pool: Pool) -> Image.Image:
    """Two edits drawn at random: one to the photo, then one that frames or covers it."""
    first = rng.choice((mirror, tone, grayscale, blur, crop_edge, crop_centre, rotate_small, stretch))
    then = rng.choice((border, letterbox_9x16, letterbox_1x1, caption_above, caption_below, screenshot, overlay,
                       watermark, collage2))
    return then(first(img, rng, pool), rng, pool)


#: Two edits at once; counted apart from the issue's kinds.
KINDS_COMBINED: dict[str, Maker] = {"mirror_framed": mirror_framed, "mirror_cropped": mirror_cropped,
                                    "two_edits": two_edits}
KINDS: dict[str, Maker] = {**KINDS_BEFORE, **KINDS_NEW, **KINDS_COMBINED}
#: Kinds whose copy is saved without the app's extra downsizing (the kind *is* a size).
NO_EXTRA_RESIZE = frozenset({"reencode", "resize"})
#: Framings made of innocent photos: none of them may be blocked.
NEGATIVE_FRAMINGS: dict[str, Maker] = {
    "letterbox_9x16": letterbox_9x16, "letterbox_1x1": letterbox_1x1, "caption_above": caption_above,
    "caption_below": caption_below, "screenshot": screenshot, "crop_centre": crop_centre,
    "crop_edge": crop_edge, "border": border, "overlay": overlay,
    # The pool of a negative's collage holds negatives only.
    "collage2": collage2, "collage3": collage3, "collage4": collage4, "collage_fitted": collage_fitted,
}
