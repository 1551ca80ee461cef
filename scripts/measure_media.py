#!/usr/bin/env python
"""Measure what issue 18's formats cost and how far their hashes drift. Prints tables.

1. **HEIC and AVIF copies against the JPEG**: each photo is saved as a JPEG (q92, the
   banned original a moderator would ban) and as HEIC (libheif/x265) and AVIF (libavif)
   at two qualities; the bits PDQ, pHash and dHash move between the JPEG's full decode
   (what `ban add` stores) and each copy's scan decode are counted. Match distances:
   PDQ 31 of 256, pHash and dHash 8 of 64.
2. **Large JPEGs**: phone-sized 50/108/200 MP JPEGs (and a 200 MP progressive one) built
   from a photo, each scanned in a fresh process with the real model; its decode time
   and peak RSS (VmHWM) are printed next to a 12 MP baseline from the same run.

Photos: every JPEG in /usr/share/backgrounds (Debian's lomiri-wallpapers packages, 19
real photos of 1.5-24 MP; see scripts/bench_scan.py), else examples/photos.
Needs the test extra (pillow-heif writes the HEIC files).

    python scripts/measure_media.py                    # both parts
    python scripts/measure_media.py --skip-large       # drift only (a minute)

Nothing here asserts anything: the numbers are for reading, and vary by machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from photosentry import defaults  # noqa: E402
from photosentry.decode import decode  # noqa: E402
from photosentry.hashes.codecs import Algorithm, hamming  # noqa: E402
from photosentry.hashes.signals import hash_image  # noqa: E402
from tests import media_files  # noqa: E402

WALLPAPERS = Path("/usr/share/backgrounds")
ALGORITHMS = (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH)


def photos(folder: Path | None) -> list[Path]:
    if folder is None:
        folder = WALLPAPERS if any(WALLPAPERS.rglob("*.jpg")) else REPO / "examples" / "photos"
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def _hashes(data: bytes, *, min_side: int | None) -> dict[Algorithm, str]:
    image = decode(data, min_side=min_side)
    frame = hash_image(data, image.frames, image.frame_indices).frames[0]
    return {a: frame.get(a).value for a in ALGORITHMS}  # type: ignore[union-attr]


def drift(paths: list[Path]) -> None:
    encoders = {
        "heif q85": lambda img: media_files.heic(img, quality=85),
        "heif q60": lambda img: media_files.heic(img, quality=60),
        "avif q85": lambda img: media_files.avif(img, quality=85),
        "avif q60": lambda img: media_files.avif(img, quality=60),
        "jpeg q75 (reference)": lambda img: media_files.encode(img, "JPEG", quality=75),
    }
    moved: dict[str, dict[Algorithm, list[int]]] = {name: {a: [] for a in ALGORITHMS} for name in encoders}
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        reference = _hashes(media_files.encode(rgb, "JPEG", quality=92), min_side=None)
        for name, encode in encoders.items():
            copy = _hashes(encode(rgb), min_side=defaults.DECODE_MIN_SIDE)
            for a in ALGORITHMS:
                moved[name][a].append(hamming(reference[a], copy[a]))
        print(f"  {path.name}: {rgb.size[0]}x{rgb.size[1]}", file=sys.stderr)
    print(f"\nHash bits moved against the JPEG's full decode ({len(paths)} photos; median / max)\n")
    print(f"{'copy':<22} {'PDQ (31)':>10} {'pHash (8)':>10} {'dHash (8)':>10}")
    for name, per in moved.items():
        cells = [f"{statistics.median(per[a]):g} / {max(per[a])}" for a in ALGORITHMS]
        print(f"{name:<22} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10}")


SCAN_ONE = """
import json, sys, time
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
scanner = Scanner(policy=Policy.default(), matcher=None, classifier=OpenNsfwClassifier(threads=1))
scanner.warm_up()
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) // 1024
warm = hwm()
start = time.perf_counter()
verdict = scanner.scan_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "decode_ms": verdict.timings_ms.get("decode"),
                  "warm_mb": warm, "peak_mb": hwm(), "codes": verdict.reason_codes}))
"""


def large(source: Path) -> None:
    with Image.open(source) as img:
        rgb = img.convert("RGB")
    sizes = {"12mp (baseline)": (4000, 3000), **{k: v for k, v in media_files.PHONE_SIZES.items()}}
    with tempfile.TemporaryDirectory(prefix="measure-media-") as tmp:
        files = {}
        for name, size in sizes.items():
            pixels = media_files.phone_pixels(rgb, size)
            files[name] = media_files.save_jpeg(pixels, Path(tmp) / f"{name.split()[0]}.jpg")
            if name == "200mp":
                files["200mp progressive"] = media_files.save_jpeg(pixels, Path(tmp) / "200p.jpg", progressive=True)
            del pixels
        print(f"\nLarge JPEGs from {source.name}, each scanned by a fresh process with the model (one thread)\n")
        print(f"{'file':<20} {'MB':>6} {'decode ms':>10} {'scan s':>7} {'peak RSS MB':>12} {'warm MB':>8}  verdict")
        for name, path in files.items():
            done = subprocess.run([sys.executable, "-c", SCAN_ONE, str(path)], capture_output=True, text=True,
                                  cwd=REPO, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name:<20} {path.stat().st_size / 1e6:>6.1f} {r['decode_ms']:>10.0f} {r['seconds']:>7.2f}"
                  f" {r['peak_mb']:>12} {r['warm_mb']:>8}  {','.join(r['codes'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Example: python scripts/measure_media.py --skip-large")
    parser.add_argument("--folder", type=Path, help="photos to measure (default: the Debian wallpapers)")
    parser.add_argument("--skip-large", action="store_true", help="leave out the 50-200 MP JPEGs")
    parser.add_argument("--skip-drift", action="store_true", help="leave out the HEIC/AVIF hash drift")
    args = parser.parse_args(argv)
    paths = photos(args.folder)
    if not paths:
        parser.error("no JPEG photos found")
    if not args.skip_drift:
        drift(paths)
    if not args.skip_large:
        large(paths[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
