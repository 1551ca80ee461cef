"""Issue #17: the copies re-uploaders make are caught, an unrelated photo never is.

Real photos (scikit-image's), real framings drawn with Pillow, the real matcher and
policy; a banned photo is banned the way `photosentry ban add IMAGE` bans it, or as a
hash-only PDQ list entry. scripts/bench_copies.py measures the rates on hundreds of
photos; these tests pin the mechanisms: a lone 64-bit hash decides nothing, a region
of the upload matches a hash-only ban, keypoints catch crops, collages and screenshots,
and a review-only match never blocks.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from photosentry import defaults
from photosentry.decode import decode
from photosentry.hashes.banks import EntrySource, NewEntry, SqliteBankStore, entries_from_hashes
from photosentry.hashes.codecs import Algorithm, hamming
from photosentry.hashes.derived import derive
from photosentry.hashes.localfeatures import LocalFeatures, banned_features
from photosentry.hashes import collage as cells_module, regions
from photosentry.hashes.boxes import Box, iou
from photosentry.hashes.matcher import BankMatcher, Match
from photosentry.hashes.signals import hash_image
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy, decide
from photosentry.worker.verdict import Action, ReasonCode

from . import corpus as corpus_mod

WHO = {"actor": "test", "reason": "issue 17"}
OTHERS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png")


def jpeg(img: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def hashes_of(data: bytes):  # type: ignore[no-untyped-def]
    image = decode(data)
    return hash_image(data, image.frames, image.frame_indices)


def ban_image(store: SqliteBankStore, img: Image.Image, bank: str = "banned") -> str:
    data = jpeg(img, 92)
    image = decode(data)
    hashes = hash_image(data, image.frames, image.frame_indices)
    entries, _ = entries_from_hashes(hashes, bank, label="banned", derived=derive(image.frames[0]),
                                     features=banned_features(image.frames[0]))
    store.add(entries, **WHO)
    return hashes.sha256


def ban_pdq_only(store: SqliteBankStore, img: Image.Image) -> None:
    pdq = hashes_of(jpeg(img, 92)).frames[0].get(Algorithm.PDQ)
    assert pdq is not None and not pdq.weak
    store.add([NewEntry(Algorithm.PDQ, pdq.value, "banned", source=EntrySource.IMPORT)], **WHO)


# -- the framings -------------------------------------------------------------------------


def letterbox(img: Image.Image, canvas: tuple[int, int] = (720, 1280), colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    scale = min(canvas[0] / img.width, canvas[1] / img.height)
    photo = img.resize((round(img.width * scale), round(img.height * scale)))
    out = Image.new("RGB", canvas, colour)
    out.paste(photo, ((canvas[0] - photo.width) // 2, (canvas[1] - photo.height) // 2))
    return out


def caption(img: Image.Image, text: str = "WHEN THE WIFI IS DOWN") -> Image.Image:
    bar = round(img.height * 0.2)
    out = Image.new("RGB", (img.width, img.height + bar), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((img.width * 0.05, bar * 0.25), text, fill=(0, 0, 0), font_size=round(bar * 0.45))
    out.paste(img, (0, bar))
    return out


def screenshot(img: Image.Image) -> Image.Image:
    w, h = 1080, 2340
    out = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, w, 220), fill=(245, 245, 245))
    draw.text((180, 90), "alex_93", fill=(0, 0, 0), font_size=60)
    for y in (300, 520):
        draw.rounded_rectangle((40, y, 760, y + 170), 40, fill=(230, 230, 235))
        draw.text((80, y + 50), "look what i found lol", fill=(0, 0, 0), font_size=52)
    photo = img.resize((900, round(900 * img.height / img.width)))
    out.paste(photo, (w - photo.width - 40, 760))
    draw.rounded_rectangle((40, h - 190, 840, h - 60), 60, outline=(160, 160, 160), width=4)
    return out


def collage(img: Image.Image, others: list[Image.Image], slot: int = 3, gutter: int = 12) -> Image.Image:
    cell = 540
    out = Image.new("RGB", (2 * cell + 3 * gutter, 2 * cell + 3 * gutter), (255, 255, 255))
    photos = [*others[:slot], img, *others[slot:]][:4]
    for i, photo in enumerate(photos):
        r, c = divmod(i, 2)
        out.paste(photo.resize((cell, cell)), (gutter + c * (cell + gutter), gutter + r * (cell + gutter)))
    return out


def crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    # Square photos, so a collage cell holds the whole photo (apps crop to fill; keypoints
    # catch that, and bench_copies.py measures it).
    out = {}
    for name in (corpus_mod.BANNED_PHOTO, *OTHERS):
        img = corpus_mod.load(name).convert("RGB")
        side = min(img.size)
        out[name] = img.crop(((img.width - side) // 2, (img.height - side) // 2,
                              (img.width + side) // 2, (img.height + side) // 2)).resize((640, 640))
    return out


def scanner_for(policy: Policy, store: SqliteBankStore) -> Scanner:
    return Scanner(policy=policy, matcher=BankMatcher(store), classifier=None)


# -- precision ----------------------------------------------------------------------------------


def test_a_lone_64_bit_match_is_reported_never_acted_on(policy: Policy, store: SqliteBankStore,
                                                        photos: dict[str, Image.Image]) -> None:
    # An imported dHash list entry equal to a clean photo's dHash: the dune grass.
    data = jpeg(photos["coffee.png"])
    dhash = hashes_of(data).frames[0].get(Algorithm.DHASH)
    assert dhash is not None and not dhash.weak
    store.add([NewEntry(Algorithm.DHASH, dhash.value, "banned", source=EntrySource.IMPORT)], **WHO)
    verdict = Scanner(policy=policy, matcher=BankMatcher(store), classifier=None).scan_bytes(data)
    # classifier=None fails closed with model_unavailable; the match itself adds nothing.
    assert ReasonCode.BANK_MATCH.value not in verdict.reason_codes
    assert ReasonCode.WEAK_MATCH.value in verdict.reason_codes
    (m,) = verdict.matches
    # The scan's quick thumbnail moves a bit or two (perceptual.QUICK_REDUCING_GAP).
    assert m.weak and m.basis == "lone_64bit" and m.distance <= 2


def test_flat_pictures_64_bit_hashes_are_weak(store: SqliteBankStore) -> None:
    # Two different smooth pictures (a warm and a cool evening sky): their dHashes agree,
    # and their thumbnails' columns differ by a grey level or two (dHash's margin), so
    # nothing their 64-bit hashes match can act, even with a second hash agreeing.
    x = np.linspace(0, 1, 512, dtype=np.float32)
    sky = np.outer(np.linspace(0.3, 0.9, 384), 0.7 + 0.08 * x)[..., None]
    a = np.clip(sky * [255, 200, 160], 0, 255).astype(np.uint8)
    b = np.clip(sky * [170, 190, 250] * 1.05, 0, 255).astype(np.uint8)
    banned, upload = hashes_of(jpeg(Image.fromarray(a))), hashes_of(jpeg(Image.fromarray(b)))
    ours, theirs = upload.frames[0].get(Algorithm.DHASH), banned.frames[0].get(Algorithm.DHASH)
    assert ours is not None and theirs is not None and ours.weak and ours.quality is not None and ours.quality < 6
    assert min(hamming(v, theirs.value) for v in ours.variants) <= 8  # it would have matched
    assert all(h.weak for h in upload.frames[0].hashes if h.algorithm is not Algorithm.PDQ)
    entries, _ = entries_from_hashes(banned, "banned")
    store.add([e for e in entries if e.algorithm in (Algorithm.PHASH, Algorithm.DHASH)], **WHO)
    matches = BankMatcher(store).match(upload)
    assert matches and all(m.weak and m.basis == "low_quality" for m in matches)


def test_two_hashes_of_one_banned_image_corroborate(store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    hashes = hashes_of(jpeg(photos["coffee.png"]))
    entries, _ = entries_from_hashes(hashes, "banned")
    store.add([e for e in entries if e.algorithm in (Algorithm.PHASH, Algorithm.DHASH)], **WHO)
    matches = BankMatcher(store).match(hashes_of(jpeg(photos["coffee.png"], 60)))
    assert {(m.algorithm, m.basis, m.weak) for m in matches} == {
        (Algorithm.PHASH, "two_hashes", False), (Algorithm.DHASH, "two_hashes", False)}


def test_a_review_only_match_quarantines_where_its_bank_would_block(policy: Policy) -> None:
    partial = Match(7, "banned", Algorithm.ORB, 240, inliers=15, group="g", basis="features_partial")
    action, reasons = decide(policy.base, matches=[partial])
    assert action is Action.QUARANTINE and reasons[0].code is ReasonCode.BANK_MATCH
    assert reasons[0].detail["bases"] == ["features_partial"] and "15 keypoints" in reasons[0].text
    full = Match(8, "banned", Algorithm.ORB, 200, inliers=56, group="g", basis="features")
    assert decide(policy.base, matches=[partial, full])[0] is Action.BLOCK


# -- recall ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["letterbox", "caption", "screenshot", "collage"])
def test_a_framed_copy_is_blocked_by_an_image_ban(framing: str, policy: Policy, store: SqliteBankStore,
                                                  photos: dict[str, Image.Image]) -> None:
    banned = photos[corpus_mod.BANNED_PHOTO]
    others = [photos[n] for n in OTHERS]
    ban_image(store, banned)
    scanner = scanner_for(policy, store)
    make = {"letterbox": letterbox, "caption": caption, "screenshot": screenshot,
            "collage": lambda img: collage(img, others)}[framing]
    verdict = scanner.scan_bytes(jpeg(make(banned)))
    assert verdict.action is Action.BLOCK, [r.text for r in verdict.reasons]
    (reason,) = [r for r in verdict.reasons if r.code is ReasonCode.BANK_MATCH]
    assert set(reason.detail["bases"]) & {"pdq_region", "features"}, reason.detail
    # The same framing of innocent photos: no bank match at all that could act.
    innocent = scanner.scan_bytes(jpeg(make(others[0]) if framing != "collage" else collage(others[0], others[1:] + others[:1])))
    assert ReasonCode.BANK_MATCH.value not in innocent.reason_codes, [r.text for r in innocent.reasons]


@pytest.mark.parametrize("framing", ["letterbox", "caption", "screenshot", "mirrored letterbox"])
def test_a_framed_copy_is_blocked_by_a_hash_only_pdq_ban(framing: str, policy: Policy, store: SqliteBankStore,
                                                          photos: dict[str, Image.Image]) -> None:
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    # Mirrored first, then framed: a region is queried mirrored too (red team).
    make = {"letterbox": letterbox, "caption": caption, "screenshot": screenshot,
            "mirrored letterbox": lambda img: letterbox(ImageOps.mirror(img))}[framing]
    verdict = scanner_for(policy, store).scan_bytes(jpeg(make(banned)))
    assert verdict.action is Action.BLOCK, [r.text for r in verdict.reasons]
    pdq = [m for m in verdict.matches if m.algorithm is Algorithm.PDQ]
    assert pdq and pdq[0].region and pdq[0].basis == "pdq_region"


@pytest.mark.parametrize("cut", [(0.2, 0, 0, 0), (0.1, 0.1, 0.1, 0.1), (0, 0.2, 0.2, 0), (0.05, 0.15, 0.15, 0.05)])
def test_crops_up_to_a_fifth_are_blocked_by_an_image_ban(cut: tuple[float, float, float, float], policy: Policy,
                                                         store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_image(store, banned)
    verdict = scanner_for(policy, store).scan_bytes(jpeg(crop(banned, *cut)))
    assert verdict.action is Action.BLOCK, [r.text for r in verdict.reasons]


def test_a_tilted_copy_with_a_sticker_is_blocked(policy: Policy, store: SqliteBankStore,
                                                 photos: dict[str, Image.Image]) -> None:
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_image(store, banned)
    tilted = banned.rotate(7, expand=True, fillcolor=(20, 20, 20))
    draw = ImageDraw.Draw(tilted)
    draw.ellipse((60, 60, 200, 200), fill=(255, 210, 0))
    verdict = scanner_for(policy, store).scan_bytes(jpeg(tilted))
    assert verdict.action is Action.BLOCK, [r.text for r in verdict.reasons]


def test_removing_an_image_ban_removes_everything_it_stored(store: SqliteBankStore, policy: Policy,
                                                            photos: dict[str, Image.Image]) -> None:
    banned = photos[corpus_mod.BANNED_PHOTO]
    group = ban_image(store, banned)
    stored = list(store.entries(group=group))
    assert {e.source for e in stored} == {EntrySource.IMAGE, EntrySource.DERIVED}
    # Its keypoints, and its mirror image's.
    assert sum(e.algorithm is Algorithm.ORB for e in stored) == 2
    matcher = BankMatcher(store)
    scanner = Scanner(policy=policy, matcher=matcher, classifier=None)
    copy = jpeg(crop(banned, 0.15, 0, 0, 0.1))
    mirrored = jpeg(crop(ImageOps.mirror(banned), 0.15, 0, 0, 0.1))
    assert scanner.scan_bytes(copy).action is Action.BLOCK
    assert scanner.scan_bytes(mirrored).action is Action.BLOCK
    store.remove([e.id for e in stored], **WHO)
    matcher.refresh()
    assert not matcher.wants_features
    assert scanner.scan_bytes(copy).matches == ()
    assert scanner.scan_bytes(mirrored).matches == ()


def filled_row(cells: list[Image.Image], size: tuple[int, int] = (480, 600)) -> Image.Image:
    """A row of collage cells without gutters, each photo cropped to fill its cell as a
    collage app does (ImageOps.fit: about the centre)."""
    out = Image.new("RGB", (size[0] * len(cells), size[1]))
    for i, photo in enumerate(cells):
        out.paste(ImageOps.fit(photo, size, Image.Resampling.LANCZOS), (i * size[0], 0))
    return out


def test_a_collage_cell_cropped_to_fill_meets_a_cover_window_of_the_ban(store: SqliteBankStore,
                                                                        photos: dict[str, Image.Image]) -> None:
    # The square banned photo fills a 480x600 cell: a fifth of its width is cut off about
    # the centre, which moves its own PDQ far past 31; the ban's cover window does not.
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_image(store, banned)
    data = jpeg(filled_row([photos["chelsea.png"], banned, photos["coffee.png"]]))
    image = decode(data)
    upload = hash_image(data, image.frames, image.frame_indices, regions=True)
    matches = BankMatcher(store).match(upload)
    cover = [m for m in matches if m.algorithm is Algorithm.PDQ and m.basis == "pdq_derived" and "[cover-width-" in m.label]
    assert cover and cover[0].region.startswith(("cell:", "piece:")) and not cover[0].weak, matches


def test_a_photo_with_a_flat_band_of_its_own_does_not_hide_the_seams(photos: dict[str, Image.Image]) -> None:
    # The right-hand photo has a white stripe from top to bottom: taken for a gutter, it
    # made the cut ignore the hard seams of a collage without gutters, so the middle
    # cell was never proposed. The grid cut at both is proposed too.
    banded = photos["coffee.png"].copy()
    ImageDraw.Draw(banded).rectangle((300, 0, 330, banded.height), fill=(255, 255, 255))
    row = filled_row([photos["chelsea.png"], photos[corpus_mod.BANNED_PHOTO], banded], size=(480, 480))
    frame = decode(jpeg(row)).frames[0]
    truth = (480, 0, 960, 480)
    boxes = [(r.left, r.top, r.right, r.bottom) for r in regions.propose(frame)]
    assert max(iou(b, truth) for b in boxes) >= 0.97, boxes
    # Preferring the stripe as a gutter alone would have missed it.
    h, w = frame.shape[:2]
    stride = -(-max(h, w) // 160)
    luma = np.ascontiguousarray(frame[::stride, ::stride]).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    cells, _ = cells_module._grid(cells_module._Seams(luma), (0, 0, luma.shape[1], luma.shape[0]), depth=2, prefer_gutters=True)
    assert all(iou(tuple(v * stride for v in c), truth) < 0.9 for c in cells), cells


def test_a_chat_apps_rounded_corners_are_filled_in_before_pdq(photos: dict[str, Image.Image]) -> None:
    # A chat app shows a photo with its corners rounded off onto the chat's background;
    # the region found is exactly the photo, but four white patches move its PDQ. Filled
    # in from the photo around them, it comes back close to the banned photo's.
    banned = photos[corpus_mod.BANNED_PHOTO]
    mask = Image.new("L", banned.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, banned.width - 1, banned.height - 1), radius=48, fill=255)
    shown = Image.new("RGB", banned.size, (255, 255, 255))
    shown.paste(banned, (0, 0), mask)
    rounded = decode(jpeg(shown)).frames[0]
    filled = regions.square_corners(rounded)
    assert filled is not None

    def pdq(rgb: np.ndarray) -> str:
        image = decode(jpeg(Image.fromarray(rgb)))
        found = hash_image(jpeg(Image.fromarray(rgb)), image.frames, image.frame_indices).frames[0].get(Algorithm.PDQ)
        assert found is not None
        return found.value

    original = pdq(np.asarray(banned))
    assert hamming(pdq(filled), original) < hamming(pdq(rounded), original)
    # A photo with square corners (and its own dark or bright corners) is left alone.
    for name in (corpus_mod.BANNED_PHOTO, *OTHERS):
        assert regions.square_corners(decode(jpeg(photos[name])).frames[0]) is None, name


@pytest.mark.parametrize("size", [(2400, 6), (6, 2400), (1, 1), (40, 40), (64, 16000)])
def test_a_sliver_of_a_picture_is_scanned_not_crashed_on(size: tuple[int, int], policy: Policy, store: SqliteBankStore,
                                                         photos: dict[str, Image.Image]) -> None:
    # ORB's pyramid failed on a picture a few pixels across (a 6 x 2400 banner), so a
    # scan with image bans in the banks ended in scan_failed instead of a verdict.
    ban_image(store, photos[corpus_mod.BANNED_PHOTO])
    out = io.BytesIO()
    photos["coffee.png"].resize(size).save(out, format="PNG")
    verdict = scanner_for(policy, store).scan_bytes(out.getvalue())
    assert ReasonCode.SCAN_FAILED.value not in verdict.reason_codes, [r.text for r in verdict.reasons]
    # Nor do the proposals warn on it (a one-pixel-wide thumbnail averaged nothing).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regions.propose(decode(out.getvalue()).frames[0])


def test_an_orb_entry_keeps_its_photos_size_and_old_entries_still_read(photos: dict[str, Image.Image]) -> None:
    from photosentry.hashes.localfeatures import LocalFeatures

    frame = decode(jpeg(photos["coffee.png"])).frames[0]
    found = banned_features(frame)
    assert found is not None and found.size == (512, 512)  # the square photo reduced as the keypoints are
    again = LocalFeatures.decode(found.encode())
    assert again.size == found.size and len(again) == len(found) and (again.points == found.points.round()).all()
    # An entry written before the size was (every slot a keypoint) reads as it did.
    old = LocalFeatures(found.points, found.descriptors)
    assert LocalFeatures.decode(old.encode()).size == (0, 0) and len(LocalFeatures.decode(old.encode())) == len(found)


def symmetric(img: Image.Image) -> Image.Image:
    """The left half of ``img`` beside its own mirror image: its mirror image is itself."""
    half = img.crop((0, 0, img.width // 2, img.height))
    out = Image.new("RGB", (2 * half.width, half.height))
    out.paste(half, (0, 0))
    out.paste(ImageOps.mirror(half), (half.width, 0))
    return out


@pytest.mark.parametrize("how", ["symmetric picture", "banned twice", "in two banks"])
def test_a_photos_own_keypoint_sets_do_not_outvote_each_other(how: str, policy: Policy, store: SqliteBankStore,
                                                              photos: dict[str, Image.Image]) -> None:
    # Red team: the ratio test counted the same photo's other set (its mirror image's,
    # identical for a symmetric picture; or the same keypoints banned again, or in
    # another bank) as the second nearest, and no pair survived: crops went unblocked.
    banned = symmetric(photos[corpus_mod.BANNED_PHOTO]) if how == "symmetric picture" else photos[corpus_mod.BANNED_PHOTO]
    ban_image(store, banned)
    if how == "banned twice":
        # An older ban of the same image: one set, no flat share kept (entries before this one).
        data = jpeg(banned, 92)
        image = decode(data)
        old = banned_features(image.frames[0])
        assert old is not None
        legacy = LocalFeatures(old.points, old.descriptors, size=old.size).encode()
        store.add([NewEntry(Algorithm.ORB, legacy, "banned", "old", EntrySource.DERIVED, hashes_of(data).sha256)], **WHO)
    if how == "in two banks":
        ban_image(store, banned, bank="partner")
    verdict = scanner_for(policy, store).scan_bytes(jpeg(crop(banned, 0.15, 0.05, 0.0, 0.1)))
    assert verdict.action is Action.BLOCK, [(m.basis, m.inliers) for m in verdict.matches]
    assert any(m.basis == "features" for m in verdict.matches)


def test_a_crop_of_a_photo_banned_in_two_banks_answers_to_both(store: SqliteBankStore,
                                                               photos: dict[str, Image.Image]) -> None:
    # Red team: the keypoints of a photo banned in two banks are one set, and the
    # match named whichever bank's entry FAISS found nearest: banned in a bank that
    # only holds for review and then in one that blocks, this crop (which only
    # keypoints catch) was held for review, not blocked. Every bank holding it answers.
    policy = Policy.from_toml('version = "t"\n[models.open_nsfw]\nquarantine = 0.7\n'
                              '[banks.review]\naction = "quarantine"\n[banks.csam]\naction = "block"\n')
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_image(store, banned, bank="review")
    ban_image(store, banned, bank="csam")
    verdict = scanner_for(policy, store).scan_bytes(jpeg(crop(banned, 0.2, 0.0, 0.0, 0.15)))
    keypoints = {m.bank for m in verdict.matches if m.algorithm is Algorithm.ORB}
    assert keypoints == {"review", "csam"}, [(m.bank, m.basis, m.inliers) for m in verdict.matches]
    assert verdict.action is Action.BLOCK, [r.text for r in verdict.reasons]


def scan_hashes(data: bytes):  # type: ignore[no-untyped-def]
    """What a scan against image bans hashes: regions and keypoints, on its larger decode."""
    from photosentry import defaults

    image = decode(data, min_side=defaults.COPY_DECODE_MIN_SIDE)
    return hash_image(data, image.frames, image.frame_indices, source_size=(image.width, image.height),
                      reduction=image.reduction, regions=True, features=True, quick=True)


def test_a_mirrored_letterboxed_copy_is_blocked_by_a_hash_only_pdq_ban(policy: Policy, store: SqliteBankStore,
                                                                      photos: dict[str, Image.Image]) -> None:
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    verdict = scanner_for(policy, store).scan_bytes(jpeg(letterbox(ImageOps.mirror(banned))))
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.region) for m in verdict.matches]


def test_a_screenshots_photo_still_gets_keypoints_of_its_own(photos: dict[str, Image.Image]) -> None:
    # The pass of its own is skipped only where it would add nothing (a region the whole
    # picture's pass sees as large); a screenshot's photo is a fraction of 384 pixels.
    found = scan_hashes(jpeg(screenshot(photos[corpus_mod.BANNED_PHOTO])))
    assert found.cell_features, [r.region for r in found.regions]


def test_a_mirrored_photo_as_a_collage_cell_is_blocked_by_a_hash_only_pdq_ban(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # Red team: querying a collage's cells as shown only (to save queries at 10
    # million entries) let every such copy past a PDQ list (0 of 16; 12 of 16 before).
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    upload = collage(ImageOps.mirror(banned), [photos[n] for n in OTHERS])
    verdict = scanner_for(policy, store).scan_bytes(jpeg(upload))
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.region) for m in verdict.matches]


def test_a_photo_cropped_into_a_cell_of_a_phone_sized_collage_is_blocked(policy: Policy, store: SqliteBankStore,
                                                                         photos: dict[str, Image.Image]) -> None:
    # A 1080-pixel collage of 4 is decoded at 540 for the scan: each cell is 270 pixels,
    # and keypoints found on it at that size met too few of the ban's (found at 512):
    # 13 in place, held for review. The cell's own pass enlarges it to 384: 86, blocked.
    banned = corpus_mod.load("gravel.png").convert("RGB")
    side = min(banned.size)
    cut = round(side * 0.08)
    square = banned.crop((cut, cut, side - cut, side - cut))
    upload = Image.new("RGB", (1080, 1080))
    for i, photo in enumerate([square, *(photos[n] for n in (corpus_mod.BANNED_PHOTO, "chelsea.png", "coffee.png"))]):
        r, c = divmod(i, 2)
        upload.paste(photo.resize((540, 540)), (c * 540, r * 540))
    ban_image(store, banned)
    verdict = scanner_for(policy, store).scan_bytes(jpeg(upload))
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.inliers, m.region) for m in verdict.matches]


def test_a_photo_between_chat_bubbles_close_to_it_is_blocked_by_a_hash_only_pdq_ban(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # A chat app stacks bubbles a few pixels above and below a photo: they are one solid
    # block with it, and neither that block nor any margin or seam is the photo's box
    # (every region was PDQ 108-128 from it). The rows that start and end where the
    # photo does are (regions._block): 4.
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    w, h = 1080, 2340
    upload = Image.new("RGB", (w, h), (0, 0, 0))
    draw = ImageDraw.Draw(upload)
    draw.rectangle((0, 0, w, 220), fill=(28, 28, 30))
    draw.text((180, 90), "alex_93", fill=(255, 255, 255), font_size=60)
    top, mine, theirs = 900, (0, 122, 255), (58, 58, 60)
    for y0, y1, x0, x1, colour in ((top - 150, top - 14, 420, w - 60, mine), (top - 310, top - 170, 40, 640, theirs),
                                   (top + 774, top + 910, 40, 700, theirs), (top + 930, top + 1070, 500, w - 60, mine)):
        draw.rounded_rectangle((x0, y0, x1, y1), 50, fill=colour)
        draw.text((x0 + 40, y0 + 30), "no way lol", fill=(255, 255, 255), font_size=52)
    upload.paste(banned.resize((760, 760)), (w - 60 - 760, top))
    draw.rounded_rectangle((40, h - 190, 840, h - 60), 60, outline=(160, 160, 160), width=4)
    found = scan_hashes(jpeg(upload))
    assert any(r.region.startswith("block:") for r in found.regions), [r.region for r in found.regions]
    verdict = scanner_for(policy, store).scan_bytes(jpeg(upload))
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.region) for m in verdict.matches]


def _grid_of_four(cells: list[Image.Image], side: int, gutter: int, colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A 2 x 2 collage ``side`` pixels square, ``gutter`` pixels between and around the
    cells, each photo cropped to fill its cell as the apps do."""
    out = Image.new("RGB", (side, side), colour)
    cell = (side - 3 * gutter) // 2
    for i, photo in enumerate(cells):
        r, c = divmod(i, 2)
        out.paste(ImageOps.fit(photo, (cell, cell), Image.Resampling.LANCZOS),
                  (gutter + c * (cell + gutter), gutter + r * (cell + gutter)))
    return out


def _found(data: bytes, truth: tuple[int, int, int, int], side: int) -> float:
    """The best IoU of a region a scan proposes with ``truth`` (upload pixels)."""
    image = decode(data, min_side=defaults.COPY_DECODE_MIN_SIDE)
    frame = image.frames[0]
    k = frame.shape[1] / side
    scaled = tuple(v * k for v in truth)
    return max([iou((r.left, r.top, r.right, r.bottom), scaled) for r in regions.propose(frame)] or [0.0])


@pytest.mark.parametrize("side, gutter", [(1440, 3), (1280, 5), (1100, 6)])
def test_a_collage_with_gutters_a_few_pixels_wide_is_cut_into_its_cells(side: int, gutter: int,
                                                                         photos: dict[str, Image.Image]) -> None:
    # A few pixels of white between the cells of a phone-sized collage are a pixel or two
    # in the frame a scan decodes at half size, and often no clean line of the region
    # thumbnail (every third pixel): a bright line between two steps, taken for a line
    # drawn in a photo. The frame's own rows show it flat.
    upload = _grid_of_four([photos[n] for n in (*OTHERS[:3], corpus_mod.BANNED_PHOTO)], side, gutter)
    cell = (side - 3 * gutter) // 2
    truth = (2 * gutter + cell, 2 * gutter + cell, side - gutter, side - gutter)
    assert _found(jpeg(upload), truth, side) >= 0.9


def test_photos_of_one_brightness_that_meet_at_a_step_of_colour_are_two_cells(photos: dict[str, Image.Image]) -> None:
    # No gutter, and the left photo has the right one's brightness (mirrored) under its
    # own colours: across the seam, luminance does not step at all; colour does.
    right = ImageOps.fit(photos["coffee.png"], (600, 600))
    left = np.asarray(ImageOps.fit(photos["chelsea.png"], (600, 600)).convert("YCbCr")).copy()
    left[..., 0] = np.asarray(ImageOps.mirror(right).convert("L"))
    upload = Image.new("RGB", (1200, 600))
    upload.paste(Image.fromarray(left, "YCbCr").convert("RGB"), (0, 0))
    upload.paste(right, (600, 0))
    assert _found(jpeg(upload, 92), (600, 0, 1200, 600), 1200) >= 0.9


def test_a_photo_fitted_into_its_cell_with_padding_is_proposed_without_it(photos: dict[str, Image.Image]) -> None:
    # Some layouts fit each photo whole into its cell and pad the rest: the cell is found
    # by its gutters, the photo inside it by trimming the padding off.
    side, gutter = 1200, 20
    out = Image.new("RGB", (side, side), (40, 40, 40))
    cell = (side - 3 * gutter) // 2
    truth = (0, 0, 0, 0)
    for i, name in enumerate((*OTHERS[:3], corpus_mod.BANNED_PHOTO)):
        r, c = divmod(i, 2)
        photo = corpus_mod.load(name).convert("RGB")
        photo.thumbnail((cell, cell))
        box = Image.new("RGB", (cell, cell), (250, 250, 250))
        at = ((cell - photo.width) // 2, (cell - photo.height) // 2)
        box.paste(photo, at)
        x, y = gutter + c * (cell + gutter), gutter + r * (cell + gutter)
        out.paste(box, (x, y))
        truth = (x + at[0], y + at[1], x + at[0] + photo.width, y + at[1] + photo.height)
    assert _found(jpeg(out), truth, side) >= 0.9


def _fitted_on_padding(banned: Image.Image, others: list[Image.Image], side: int = 1200) -> tuple[Image.Image, Box]:
    """A collage app's layout of one wide cell over three narrow ones, each photo fitted
    whole into its cell, within 8% of its sides, on one padding colour (no cell is
    drawn): the photos float on the padding, and the banned one (bottom middle) covers
    a twentieth of the picture.
    Returns the upload and the banned photo's box in it."""
    out = Image.new("RGB", (side, side), (236, 236, 236))
    cells = [(0, 0, side, side // 2), *((i * side // 3, side // 2, (i + 1) * side // 3, side) for i in range(3))]
    pictures = [others[0], others[1], banned, others[2]]
    truth: Box = (0, 0, 0, 0)
    for (left, top, right, bottom), photo in zip(cells, pictures, strict=True):
        room = (round((right - left) * 0.84), round((bottom - top) * 0.84))
        k = min(room[0] / photo.width, room[1] / photo.height)
        fitted = photo.resize((round(photo.width * k), round(photo.height * k)), Image.Resampling.LANCZOS)
        at = (left + (right - left - fitted.width) // 2, top + (bottom - top - fitted.height) // 2)
        out.paste(fitted, at)
        if photo is banned:
            truth = (at[0], at[1], at[0] + fitted.width, at[1] + fitted.height)
    return out, truth


def test_photos_fitted_whole_on_a_padding_colour_are_each_proposed(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # No gutter or seam marks these cells, and the padding around a landscape photo in a
    # narrow cell is wider than any gutter: each photo is a solid block of its own on
    # the padding (a `panel`), found beside the largest (`content`).
    banned = corpus_mod.load(corpus_mod.BANNED_PHOTO).convert("RGB")  # landscape, 3:2
    others = [corpus_mod.load(n).convert("RGB") for n in OTHERS[:3]]
    upload, truth = _fitted_on_padding(banned, others)
    data = jpeg(upload)
    assert _found(data, truth, upload.width) >= 0.9
    ban_pdq_only(store, banned)
    verdict = scanner_for(policy, store).scan_bytes(data)
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.region) for m in verdict.matches]


def test_three_photos_in_a_row_on_a_square_canvas_are_each_proposed(photos: dict[str, Image.Image]) -> None:
    # Fitted whole into the thirds of a square canvas, with a little padding between
    # them: the square ones are 8% of the picture, under the 10% a region needs, and one
    # block with their neighbours (the padding between them closes).
    side, gap = 1200, 40
    cell = (side - 4 * gap) // 3
    out = Image.new("RGB", (side, side), (255, 255, 255))
    top = (side - cell) // 2
    wide = photos[OTHERS[0]].resize((cell, cell * 2 // 3))
    out.paste(wide, (gap, top + (cell - wide.height) // 2))
    out.paste(photos[OTHERS[1]].resize((cell, cell)), (2 * gap + cell, top))
    out.paste(photos[corpus_mod.BANNED_PHOTO].resize((cell, cell)), (3 * gap + 2 * cell, top))
    truth = (3 * gap + 2 * cell, top, 3 * gap + 3 * cell, top + cell)
    assert _found(jpeg(out), truth, side) >= 0.9


@pytest.mark.parametrize("container", ["GIF", "TIFF"])
def test_a_framed_copy_as_a_later_frame_is_blocked_by_a_hash_only_pdq_ban(
        container: str, policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # Red team: the regions were the first frame's only, so a letterboxed copy behind an
    # innocent first frame passed a PDQ list 40 times in 40.
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    boxed = letterbox(banned)
    innocent = photos[OTHERS[0]].resize(boxed.size)
    out = io.BytesIO()
    innocent.save(out, format=container, save_all=True, append_images=[boxed])
    verdict = scanner_for(policy, store).scan_bytes(out.getvalue())
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.frame, m.region) for m in verdict.matches]
    assert verdict.matches[0].frame == 1 and verdict.matches[0].region


def test_a_framed_copy_behind_its_own_blurred_twin_is_still_searched(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # Red team: frames within PDQ 31 of one already searched were skipped, so a first
    # frame showing the same letterbox with the banned photo blurred to a smudge hid the
    # copy behind it (26 of 40 letterboxes allowed).
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    boxed = letterbox(banned)
    decoy = letterbox(banned.resize((16, 16), Image.Resampling.BILINEAR).resize(banned.size, Image.Resampling.BICUBIC))
    out = io.BytesIO()
    decoy.save(out, format="GIF", save_all=True, append_images=[boxed], duration=100)
    verdict = scanner_for(policy, store).scan_bytes(out.getvalue())
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.frame, m.region) for m in verdict.matches]


def test_a_framed_copy_behind_five_other_pictures_is_still_searched(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # Every frame the models see is searched, so decoys in front cannot use up a budget.
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    boxed = letterbox(banned)
    decoys = [photos[name].resize(boxed.size) for name in OTHERS]
    decoys.append(ImageOps.mirror(decoys[0]))
    out = io.BytesIO()
    decoys[0].save(out, format="GIF", save_all=True, append_images=[*decoys[1:], boxed], duration=100)
    verdict = scanner_for(policy, store).scan_bytes(out.getvalue())
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.frame, m.region) for m in verdict.matches]
    assert verdict.matches[0].frame == 5


def test_a_cropped_copy_as_a_gifs_second_frame_is_blocked_by_an_image_ban(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # Red team: keypoints were the first frame's only, so a crop (which no hash meets)
    # behind an innocent first frame passed an image ban 40 times in 40.
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_image(store, banned)
    cropped = crop(banned, 0.12, 0.12, 0.12, 0.12).resize(banned.size)
    out = io.BytesIO()
    photos[OTHERS[0]].save(out, format="GIF", save_all=True, append_images=[cropped])
    verdict = scanner_for(policy, store).scan_bytes(out.getvalue())
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.frame, m.region) for m in verdict.matches]
    assert {m.frame for m in verdict.matches if m.algorithm is Algorithm.ORB} == {1}


def test_a_photo_in_a_chat_bubble_with_a_thin_padding_is_blocked_by_a_hash_only_pdq_ban(
        policy: Policy, store: SqliteBankStore, photos: dict[str, Image.Image]) -> None:
    # A chat app pads a photo with a few pixels of its bubble's colour: too thin for the
    # region thumbnail, so every box found holds the padding, and 8 pixels on a side
    # moved PDQ past 31. Each box is also queried without its uniform edge lines.
    banned = photos[corpus_mod.BANNED_PHOTO]
    ban_pdq_only(store, banned)
    upload = Image.new("RGB", (720, 1560), (11, 20, 26))
    draw = ImageDraw.Draw(upload)
    draw.rectangle((0, 0, 720, 120), fill=(31, 44, 51))
    draw.rounded_rectangle((380, 200, 700, 280), 16, fill=(0, 92, 75))
    photo = banned.resize((620, 620))
    draw.rounded_rectangle((62, 330, 62 + 620 + 16, 330 + 620 + 16), 10, fill=(0, 92, 75))
    upload.paste(photo, (70, 338))
    draw.rounded_rectangle((420, 1000, 700, 1080), 16, fill=(0, 92, 75))
    verdict = scanner_for(policy, store).scan_bytes(jpeg(upload))
    assert verdict.action is Action.BLOCK, [(m.algorithm.value, m.distance, m.region) for m in verdict.matches]
