"""Large photos are scanned, bombs are still refused: the decode plan at work on real
50/108/200 MP JPEGs, a letterboxed 6000x10667 one, and formats that cannot be reduced.

The peak-RSS test runs the scan in a subprocess and asserts its memory (not its time):
a 200 MP JPEG, baseline and progressive, scanned with the real model within 1.5 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, JpegImagePlugin

from photosentry import defaults
from photosentry.decode import DECOMPRESSION_BOMB, TOO_MANY_PIXELS, Limits, decode
from photosentry.errors import UnreadableImage
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.media import budget
from photosentry.media.jpeg import Frame, Layout
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import Action
from scripts.make_hostile import jpeg_with_size

from . import corpus as corpus_mod
from . import media_files
from .test_pipeline import ban

REPO = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_MB = 1536


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, corpus: corpus_mod.Corpus) -> dict[str, Path]:
    """The phone-sized JPEGs (the 108 MP one is the banned photo, upscaled), built once."""
    root = tmp_path_factory.mktemp("large")
    with Image.open(corpus.banned) as banned, Image.open(corpus.clean["coffee"]) as coffee:
        banned, coffee = banned.convert("RGB"), coffee.convert("RGB")
    sizes = media_files.PHONE_SIZES
    files = {
        "50mp": media_files.save_jpeg(media_files.phone_pixels(coffee, sizes["50mp"]), root / "50mp.jpg"),
        "108mp": media_files.save_jpeg(media_files.phone_pixels(banned, sizes["108mp"], seed=1), root / "108mp.jpg"),
    }
    pixels = media_files.phone_pixels(coffee, sizes["200mp"], seed=2)
    files["200mp"] = media_files.save_jpeg(pixels, root / "200mp.jpg")
    files["200mp-progressive"] = media_files.save_jpeg(pixels, root / "200mp-progressive.jpg", progressive=True)
    del pixels
    files["letterboxed"] = media_files.letterboxed_jpeg(root / "letterboxed.jpg", coffee)
    return files


@pytest.fixture(scope="module")
def scanner(classifier: OpenNsfwClassifier) -> Scanner:
    return Scanner(policy=Policy.default(), matcher=None, classifier=classifier)


def test_phone_sized_jpegs_are_decoded_reduced_and_allowed(large: dict[str, Path], scanner: Scanner) -> None:
    for name, path in large.items():
        data = path.read_bytes()
        assert len(data) <= defaults.MAX_BYTES, name
        with JpegImagePlugin.JpegImageFile(path) as img:  # Image.open warns past 89 MP
            size = img.size
        image = decode(data, min_side=defaults.DECODE_MIN_SIDE)
        assert (image.width, image.height) == size, name  # the photo's own size is reported
        h, w = image.frames[0].shape[:2]
        assert image.reduction == 8, (name, image.reduction)
        assert w * h <= Limits().max_pixels and min(w, h) >= defaults.DECODE_MIN_SIDE, name
        verdict = scanner.scan_path(path)
        assert verdict.action is Action.ALLOW, (name, [r.text for r in verdict.reasons])
        assert verdict.reason_codes == ["clean"] and verdict.scores, name


def test_full_decode_of_a_large_jpeg_is_reduced_only_as_far_as_the_limit_needs(large: dict[str, Path]) -> None:
    """``min_side=None`` (what `ban add` asks for): every pixel up to 50 MP, then 1/2, 1/4 ..."""
    assert decode(large["50mp"].read_bytes()).reduction == 1  # 49.9 MP fits
    assert decode(large["108mp"].read_bytes()).reduction == 2  # 27 MP
    assert decode(large["200mp"].read_bytes()).reduction == 2  # 49.9 MP


def test_an_upscaled_108mp_copy_of_a_banned_photo_is_blocked(
    large: dict[str, Path], policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier,
    corpus: corpus_mod.Corpus,
) -> None:
    ban(store, corpus.banned)
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)
    verdict = scanner.scan_path(large["108mp"])
    assert verdict.action is Action.BLOCK, verdict.reason_codes
    assert verdict.reason_codes == ["bank_match"]


PEAK_RSS_SCRIPT = """
import json, sys, time
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
scanner = Scanner(policy=Policy.default(), matcher=None, classifier=OpenNsfwClassifier(threads=1))
scanner.warm_up()

def peak_kb():
    # VmHWM belongs to this process's own memory map. ru_maxrss does not: Linux carries the
    # high-water mark across execve, so a child spawned by a big parent reports the parent's.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

out = {"warm_kb": peak_kb(), "scans": []}
for path in sys.argv[1:]:
    start = time.perf_counter()
    verdict = scanner.scan_path(path)
    out["scans"].append({"path": path, "action": verdict.action.value, "reasons": verdict.reason_codes,
                         "seconds": round(time.perf_counter() - start, 2), "peak_kb": peak_kb()})
print(json.dumps(out))
"""


def test_a_200mp_scan_stays_under_1_5_gb(large: dict[str, Path]) -> None:
    paths = [str(large["200mp"]), str(large["200mp-progressive"])]
    done = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, *paths], capture_output=True, text=True,
                          timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for scan in report["scans"]:
        print(f"{Path(scan['path']).name}: {scan['seconds']} s, peak RSS {scan['peak_kb'] // 1024} MB"
              f" (warm worker {report['warm_kb'] // 1024} MB)")
        assert scan["action"] == "allow", scan
    peak_mb = report["scans"][-1]["peak_kb"] // 1024
    assert peak_mb <= PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb} MB"


def test_the_letterboxed_portrait_keeps_its_size_and_orientation(large: dict[str, Path]) -> None:
    image = decode(large["letterboxed"].read_bytes(), min_side=defaults.DECODE_MIN_SIDE)
    assert (image.width, image.height) == media_files.LETTERBOX_SIZE
    h, w = image.frames[0].shape[:2]
    assert h > w and image.reduction == 8


# -- formats that cannot be reduced, and bombs ----------------------------------------------


NON_REDUCIBLE = {
    "png": lambda img: media_files.encode(img, "PNG"),
    "webp": lambda img: media_files.encode(img, "WEBP", quality=85),
    "gif": lambda img: media_files.encode(img.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
    "tiff": lambda img: media_files.encode(img, "TIFF", compression="tiff_lzw"),
    "bmp": lambda img: media_files.encode(img, "BMP"),
    "heif": lambda img: media_files.heic(img),
    "avif": lambda img: media_files.avif(img),
}


@pytest.mark.parametrize("fmt", sorted(NON_REDUCIBLE))
def test_a_picture_too_big_for_its_format_is_too_many_pixels_not_a_bomb(fmt: str, corpus: corpus_mod.Corpus) -> None:
    """Under a 200,000-pixel limit the 640x427 photo (273,280 pixels) is "too big": the JPEG is
    decoded at 1/2, every other format is refused for what it is, not as an attack."""
    with Image.open(corpus.banned) as img:
        photo = img.convert("RGB")
    limits = Limits(max_pixels=200_000)
    jpeg = decode(media_files.encode(photo, "JPEG", quality=90), limits)
    assert jpeg.reduction == 2 and jpeg.frames[0].size <= 3 * 200_000
    with pytest.raises(UnreadableImage) as info:
        decode(NON_REDUCIBLE[fmt](photo), limits)
    assert info.value.code == TOO_MANY_PIXELS, info.value.message
    assert "cannot be decoded at a reduced size" in info.value.message or fmt in ("gif", "tiff")


def test_a_tiny_jpeg_declaring_100mp_is_still_a_bomb(corpus: corpus_mod.Corpus) -> None:
    """Reducible or not, 100 MP declared in a 60 KB file is an attack: refused from its header."""
    data = corpus.banned.read_bytes()
    for width, height in ((10_000, 10_000), (16_320, 12_240), (65_500, 65_500)):
        with pytest.raises(UnreadableImage) as info:
            decode(jpeg_with_size(data, width, height), min_side=defaults.DECODE_MIN_SIDE)
        assert info.value.code == DECOMPRESSION_BOMB, (width, info.value.message)


def _layout(marker: int, sampling: tuple[tuple[int, int], ...], size: tuple[int, int]) -> Layout:
    components = tuple((i + 1, h, v) for i, (h, v) in enumerate(sampling))
    return Layout(0, (), Frame(marker, size[0], size[1], components), len(components), 1000)


def test_progressive_jpegs_pay_for_their_coefficients() -> None:
    size = media_files.PHONE_SIZES["200mp"]
    plan_420 = budget.plan("jpeg", *size, 40_000_000, Limits().budget,
                           layout=_layout(0xC2, ((2, 2), (1, 1), (1, 1)), size), min_side=512)
    assert plan_420.reduction == 8 and 550 * 2**20 < plan_420.memory < Limits().max_decode_bytes
    baseline = budget.plan("jpeg", *size, 40_000_000, Limits().budget,
                           layout=_layout(0xC0, ((2, 2), (1, 1), (1, 1)), size), min_side=512)
    assert baseline.memory < 20 * 2**20  # a baseline file holds only its 1/8 output
    with pytest.raises(UnreadableImage) as info:  # 4:4:4 progressive: 1.2 GB of coefficients
        budget.plan("jpeg", *size, 40_000_000, Limits().budget,
                    layout=_layout(0xC2, ((1, 1), (1, 1), (1, 1)), size), min_side=512)
    assert info.value.code == TOO_MANY_PIXELS and "coefficient" in info.value.message
    with pytest.raises(UnreadableImage) as info:  # past what any file may declare
        budget.plan("jpeg", 30_000, 20_000, 90_000_000, Limits().budget,
                    layout=_layout(0xC0, ((2, 2), (1, 1), (1, 1)), (30_000, 20_000)))
    assert info.value.code == TOO_MANY_PIXELS
