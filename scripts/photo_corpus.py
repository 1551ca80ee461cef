#!/usr/bin/env python
"""A corpus of several hundred distinct real photos, built once and cached.

Sources (nothing but Debian's package archive and the installed scikit-image):

* Debian packages that ship backgrounds, wallpapers, puzzle photos and sample photos
  (:data:`PACKAGES`), fetched with ``apt-get download`` and unpacked with ``dpkg -x``
  in a temporary directory (neither needs root);
* scikit-image's bundled photos (the natural ones; synthetic test pictures such as
  the checkerboard or the phantom are left out).

lomiri-wallpapers*, mate-backgrounds, plasma-workspace-wallpapers and xplanet-images
are never used (:data:`HELD_OUT`): they are kept for a held-out check.

Only raster files count (JPEG, PNG, WebP), at least :data:`MIN_SIDE` px on the short
side, that look like photos: many distinct colours (or grey levels), no big
transparent areas, real detail (icons, drawings and smooth abstract wallpapers stay
out). A *strict* photo is also not mostly flat (screenshots, diagrams, silhouettes);
:func:`photos` gives the strict ones unless asked for all. Packages ship one picture
at several resolutions or crops, and series of one scene (calibration shots, a
tutorial's photo and its computed results), so one photo is kept per series (same
package, folder and first word of the name, digits aside) and per near-duplicate
group (PDQ within :data:`PDQ_DUPLICATE` bits or pHash within :data:`PHASH_DUPLICATE`
bits), the largest. Each photo is stored normalised (longest side at most
:data:`MAX_SIDE` px, JPEG quality 95) with a ``manifest.json`` (name, source package,
source path, size, strict), so later runs are fast and offline.

Debian holds fewer real photos than one might hope: about 195 strict photos (and ~60
looser photo-like pictures) from the packages below, mostly opencv-doc's sample and
manual photos, visp's and the wallpaper packages'.

    python scripts/photo_corpus.py build          # fetch, filter, deduplicate, cache
    python scripts/photo_corpus.py list           # one line per photo
    python scripts/photo_corpus.py --dir D build  # another cache directory

From Python (scripts/ on sys.path)::

    from photo_corpus import photos
    paths = photos()   # builds the cache on first use
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Where the corpus is cached unless told otherwise.
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/photosentry/corpus"))
#: Debian packages with real photos among their raster files, each with a pattern of
#: paths to leave out (tutorial figures derived from other photos, UI screenshots,
#: calibration sequences, masks). Some also hold drawings or UI art; the photo filter
#: (:func:`looks_like_photo`) drops most of those.
PACKAGES: dict[str, str | None] = {
    "gnome-backgrounds": None,
    "ukui-wallpapers": None,
    "sway-backgrounds": None,
    "desktop-base": None,
    "lxqt-themes": None,
    "xfdesktop4-data": None,
    "propaganda-debian": None,
    "debian-edu-artwork-emerald": None,
    "debian-edu-artwork-homeworld": None,
    "debian-edu-artwork-spacefun": None,
    "palapeli-data": None,
    "khangman": r"settings|getnewstuff|khangman-main|notes",
    "jigzo-data": None,
    "digikam-data": None,
    "visp-images-data": r"chessboard|calib|grid|circle|target|mire|marker|mask|tag",
    "gcompris-qt-data": None,
    # The manual's figures of one tutorial (a photo and results computed from it) share
    # a folder and a first word, so one of each is kept (see _series).
    "opencv-doc": r"/shape/|_mask|logo|/left\d|/right\d|chessboard|digits|gradient|/pic\d|templ|tmpl|notes|/ml\.|"
                  r"imageText|detect_blob|ellipses|/cards|/board|/box\.|/reg/|/fuzzy/|aloeGT|output_mattes|trimaps|"
                  r"scenetext_char|scenetext_segmented|peilin|polygon|stanford",
    "libjs-jquery-backstretch": None,
    "imagemagick-6-doc": None,
    "scribus-template": None,
}
#: Never used here: kept aside for a held-out check of the detector.
HELD_OUT = ("lomiri-wallpapers", "mate-backgrounds", "plasma-workspace-wallpapers", "xplanet-images")
#: scikit-image files that are synthetic or not photos of the world.
SKIMAGE_SKIP = {
    "checker_bw.png", "phantom.png", "horse.png", "text.png", "logo.png", "microaneurysms.png",
    "page.png", "lbpcascade_frontalface_opencv.xml", "palisades_of_vogt.tif", "cells3d.tif",
    "brain.tiff", "kidney.tif", "lily.tif", "cell.png", "moon.png", "clock_motion.png",
    "binary_blobs.png", "retina.jpg", "hubble_deep_field.jpg", "eagle.png", "grass.png",
    "gravel.png", "brick.png", "rough-wall.png", "color.png", "horse.png", "chessboard_GRAY.png",
    "chessboard_RGB.png", "green_palette.png", "ihc.png", "skin.jpg", "no_time_for_that_tiny.gif",
}
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Shortest side a source photo must have.
MIN_SIDE = 256
#: Longest side of a stored photo.
MAX_SIDE = 1600
#: Hamming distances under which two pictures are the same picture (one kept).
PDQ_DUPLICATE = 31
PHASH_DUPLICATE = 6
#: A PNG is taken for a photo only with this many distinct colours in a 128 px thumbnail
#: (drawings and screenshots have a few hundred) and at most this much transparency.
MIN_PHOTO_COLOURS = 3000
MIN_PHOTO_GREYS = 120
MAX_TRANSPARENT = 0.02
#: Largest share of flat pixels (equal to their right and lower neighbours) in a photo.
MAX_FLAT = 0.5
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Photo:
    """One stored photo of the corpus."""

    name: str
    package: str
    source: str
    width: int
    height: int
    #: Passes the strict photo test (not mostly flat): the photos to ban in a benchmark.
    #: The others are photo-like pictures (screenshots with photos, dark or studio
    #: shots, art) that still make good innocent uploads.
    strict: bool = True


def looks_like_photo(img: Image.Image, *, is_jpeg: bool, strict: bool = True) -> bool:
    """True for a photograph, False for icons, drawings and gradients; with ``strict``
    also False for mostly flat pictures (screenshots, diagrams, silhouettes, but also
    some dark or studio photos)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA").getchannel("A"))
        if (alpha < 250).mean() > MAX_TRANSPARENT:
            return False
    thumb = img.convert("RGB")
    thumb.thumbnail((128, 128))
    arr = np.asarray(thumb).reshape(-1, 3)
    # JPEG noise adds colours to a flat drawing too, so the bar is the same; a JPEG
    # gradient wallpaper still has few distinct colours after the thumbnail's averaging.
    del is_jpeg
    if np.abs(arr.astype(np.int16) - arr[:, :1]).max() <= 2:
        # A black-and-white photo has at most 256 colours: count grey levels instead.
        if len(np.unique(arr[:, 0])) < MIN_PHOTO_GREYS:
            return False
    elif len(np.unique(arr[:, 0].astype(np.int32) << 16 | arr[:, 1].astype(np.int32) << 8 | arr[:, 2])) < MIN_PHOTO_COLOURS:
        return False
    # Smooth gradients (abstract wallpapers) have many colours but almost no edges.
    grey = np.asarray(thumb.convert("L"), dtype=np.float32)
    detail = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    if detail <= 3.0:
        return False
    # Screenshots, diagrams and silhouettes are mostly flat: pixels equal to their
    # neighbours (sampled, not averaged, so anti-aliasing does not hide it).
    sampled = img.convert("RGB")
    sampled.thumbnail((512, 512), Image.Resampling.NEAREST)
    a = np.asarray(sampled, dtype=np.int16)
    flat = ((np.abs(np.diff(a, axis=1)).max(axis=2)[:-1, :] <= 1) & (np.abs(np.diff(a, axis=0)).max(axis=2)[:, :-1] <= 1))
    return bool(flat.mean() <= MAX_FLAT) if strict else True


def _fetch_package(package: str, into: Path) -> Path | None:
    """Download and unpack one package; None when the archive does not have it."""
    work = into / package
    work.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", package], cwd=work, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        print(f"  {package}: not fetched ({exc})", file=sys.stderr)
        return None
    debs = sorted(work.glob("*.deb"))
    if not debs:
        return None
    root = work / "root"
    subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True, timeout=600)
    debs[0].unlink()
    return root


def _skimage_photos() -> list[Path]:
    import skimage.data

    data = Path(skimage.data.__file__).parent
    return sorted(p for p in data.iterdir()
                  if p.suffix.lower() in RASTER_SUFFIXES and p.name not in SKIMAGE_SKIP)


@dataclass
class _Candidate:
    package: str
    path: Path
    image: Image.Image
    pdq: np.ndarray
    phash: np.ndarray
    strict: bool

    @property
    def area(self) -> int:
        return self.image.width * self.image.height


def _series(package: str, path: Path) -> tuple[str, str, str]:
    """Files of one series (``left01``..``left14``, one tutorial's figures, one theme at
    several resolutions) share this key: package, folder, first word of the name
    without digits. Only one photo of a series is kept: the others are the same scene."""
    word = re.split(r"[_\-\s.]+", re.sub(r"\d+", "", path.stem).lower().strip("_- ."))[0]
    return package, str(path.parent), word


def _open_candidate(package: str, path: Path) -> _Candidate | None:
    import imagehash
    import pdqhash

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode big JPEGs at a reduced scale
            img.load()
            is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
            if min(img.size) < MIN_SIDE or not looks_like_photo(img, is_jpeg=is_jpeg, strict=False):
                return None
            strict = looks_like_photo(img, is_jpeg=is_jpeg, strict=True)
            img = ImageOps.exif_transpose(img).convert("RGB")
    except Exception:  # a damaged or odd file in a package is simply not a candidate
        return None
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    small = img.copy()
    small.thumbnail((512, 512))
    bits, _quality = pdqhash.compute(np.asarray(small))
    phash = imagehash.phash(small).hash.flatten()
    return _Candidate(package, path, img, np.asarray(bits, dtype=bool), phash, strict)


def _deduplicate(candidates: list[_Candidate]) -> list[_Candidate]:
    """One candidate per series and per near-duplicate group, the largest (ties: first found)."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].area)
    kept: list[_Candidate] = []
    series: set[tuple[str, str, str]] = set()
    for i in order:
        cand = candidates[i]
        key = _series(cand.package, cand.path)
        if key in series:
            continue
        if any(int(np.count_nonzero(cand.pdq != k.pdq)) <= PDQ_DUPLICATE
               or int(np.count_nonzero(cand.phash != k.phash)) <= PHASH_DUPLICATE for k in kept):
            continue
        series.add(key)
        kept.append(cand)
    return kept


def build(cache_dir: Path | None = None, *, packages: tuple[str, ...] = tuple(PACKAGES),
          unpacked: Path | None = None, verbose: bool = True) -> list[Path]:
    """Fetch, filter, deduplicate and store the corpus; returns the stored photos.

    Args:
        unpacked: a folder with one already unpacked package per subfolder (named as
            the package): used instead of downloading.
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    for held in HELD_OUT:
        if any(p.startswith(held) for p in packages):
            raise ValueError(f"{held!r} is held out and must not be used for the corpus")
    candidates: list[_Candidate] = []
    with tempfile.TemporaryDirectory(prefix="photo_corpus_") as tmp:
        for package in packages:
            root = unpacked / package if unpacked is not None else _fetch_package(package, Path(tmp))
            if root is None or not root.is_dir():
                continue
            skip = re.compile(PACKAGES[package]) if PACKAGES.get(package) else None
            found = [_open_candidate(package, p) for p in sorted(root.rglob("*"))
                     if p.suffix.lower() in RASTER_SUFFIXES and p.is_file() and not p.is_symlink()
                     and not (skip and skip.search(str(p.relative_to(root))))]
            found_ok = [c for c in found if c is not None]
            if verbose:
                print(f"  {package}: {len(found_ok)} photo-like files", file=sys.stderr)
            candidates.extend(found_ok)
            if unpacked is None:
                shutil.rmtree(root, ignore_errors=True)
        sk = [c for c in (_open_candidate("scikit-image", p) for p in _skimage_photos()) if c is not None]
        if verbose:
            print(f"  scikit-image: {len(sk)} photo-like files", file=sys.stderr)
        candidates.extend(sk)
        kept = _deduplicate(candidates)
    kept.sort(key=lambda c: (c.package, str(c.path)))
    tmp_cache = cache.with_name(cache.name + ".building")
    shutil.rmtree(tmp_cache, ignore_errors=True)
    tmp_cache.mkdir(parents=True)
    manifest: list[Photo] = []
    for n, cand in enumerate(kept):
        name = f"{n:04d}-{cand.package}-{cand.path.stem[:40]}.jpg".replace(" ", "_")
        cand.image.save(tmp_cache / name, format="JPEG", quality=95)
        rel = str(cand.path).split(f"/{cand.package}/", 1)[-1].removeprefix("root/") if cand.package != "scikit-image" else cand.path.name
        manifest.append(Photo(name, cand.package, rel, cand.image.width, cand.image.height, cand.strict))
    (tmp_cache / MANIFEST).write_text(json.dumps([asdict(p) for p in manifest], indent=1))
    shutil.rmtree(cache, ignore_errors=True)
    tmp_cache.rename(cache)
    if verbose:
        print(f"{len(candidates)} photo-like files, {len(kept)} distinct photos"
              f" ({sum(c.strict for c in kept)} strict) in {cache}", file=sys.stderr)
    return [cache / p.name for p in manifest]


def manifest(cache_dir: Path | None = None) -> list[Photo]:
    """The stored corpus's manifest (builds the corpus first if it is not cached)."""
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    if not (cache / MANIFEST).is_file():
        build(cache)
    return [Photo(**row) for row in json.loads((cache / MANIFEST).read_text())]


def photos(cache_dir: Path | None = None, *, strict: bool = True) -> list[Path]:
    """Paths of the corpus's photos, sorted by name; builds the cache on first use.

    Args:
        strict: only those that pass the strict photo test (:attr:`Photo.strict`, the
            default); False adds the looser photo-like pictures (mostly diagrams,
            screenshots and textures, a few dark photos).
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    return [cache / p.name for p in manifest(cache) if p.strict or not strict]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build or list a cached corpus of distinct real photos from Debian packages "
                    "(apt-get download + dpkg -x, no root) and scikit-image's bundled photos.")
    parser.add_argument("--dir", type=Path, default=DEFAULT_CACHE,
                        help=f"cache directory (default {DEFAULT_CACHE})")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="fetch, filter, deduplicate and store the corpus (replaces a cached one)")
    b.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(PACKAGES), metavar="PACKAGE",
                   help="Debian packages to take photos from (default: all of the built-in list)")
    b.add_argument("--unpacked", type=Path, default=None,
                   help="a folder of already unpacked packages (one subfolder per package, named as it)"
                        " to use instead of downloading")
    sub.add_parser("list", help="one line per photo: name, package, size (builds first if needed)")
    sub.add_parser("path", help="print the cache directory, building it first if needed")
    args = parser.parse_args(argv)
    if args.command == "build":
        got = build(args.dir, packages=tuple(args.packages), unpacked=args.unpacked)
        print(f"{len(got)} photos in {args.dir}")
    elif args.command == "list":
        rows = manifest(args.dir)
        counts: dict[str, int] = {}
        for p in rows:
            print(f"{p.name}\t{p.package}\t{p.width}x{p.height}\t{'strict' if p.strict else 'loose'}\t{p.source}")
            counts[p.package] = counts.get(p.package, 0) + 1
        print(f"# {len(rows)} photos ({sum(p.strict for p in rows)} strict): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    else:
        photos(args.dir)
        print(args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
