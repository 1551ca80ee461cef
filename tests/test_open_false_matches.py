"""False matches found by the red team of 2026-12-07 (#17).

Each test states the non-negotiable ("never block the innocent") for an upload that
shares only a part, a template or an app's UI with a banned image. One not fixed yet
would be marked ``xfail(strict=True)``, with what it needs in its reason: it fails
today, and the day a fix makes it pass, the strict mark fails the suite so that the
mark is removed.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageOps

from photosentry.decode import decode
from photosentry.hashes.algorithms import Algorithm
from photosentry.hashes.banks import EntrySource, NewEntry, SqliteBankStore, entries_from_hashes
from photosentry.hashes.derived import derive
from photosentry.hashes.localfeatures import banned_features
from photosentry.hashes.matcher import BankMatcher
from photosentry.hashes.signals import hash_image
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import ReasonCode

from . import corpus as corpus_mod

WORDS = "the a to of and lol omg see you later did tonight what why where party send pics now no yes maybe friday dinner".split()


def jpeg(img: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def ban_by_image(store: SqliteBankStore, banned: Image.Image) -> bytes:
    """Ban a picture as `ban add IMAGE` does; the banned file's bytes."""
    data = jpeg(banned, 92)
    image = decode(data)
    hashes = hash_image(data, image.frames, image.frame_indices)
    entries, _ = entries_from_hashes(hashes, "banned", label="banned", derived=derive(image.frames[0]),
                                     features=banned_features(image.frames[0]))
    store.add(entries, actor="test", reason="red team")
    return data


def scan_after_banning(store: SqliteBankStore, banned: Image.Image, upload: Image.Image):  # type: ignore[no-untyped-def]
    ban_by_image(store, banned)
    return Scanner(policy=Policy.default(), matcher=BankMatcher(store), classifier=None).scan_bytes(jpeg(upload))


def square(name: str) -> Image.Image:
    img = corpus_mod.load(name).convert("RGB")
    side = min(img.size)
    return img.crop(((img.width - side) // 2, (img.height - side) // 2,
                     (img.width + side) // 2, (img.height + side) // 2)).resize((640, 640))


def chat(seed: int, *, keyboard: bool = False, w: int = 1080, h: int = 2340) -> Image.Image:
    """A chat app's screen: one header, bubbles of other words, maybe the keyboard."""
    r = random.Random(seed)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(out)
    d.rectangle((0, 0, w, 220), fill=(245, 245, 245))
    d.text((180, 90), "alex_93", fill=(0, 0, 0), font_size=60)
    d.ellipse((40, 60, 140, 160), fill=(90, 140, 220))
    top = h - 900 if keyboard else h - 200
    y = 300
    while y < top - 200:
        mine = r.random() < 0.5
        x0 = 300 if mine else 40
        d.rounded_rectangle((x0, y, x0 + 740, y + 150), 40, fill=(0, 132, 255) if mine else (230, 230, 235))
        d.text((x0 + 40, y + 45), " ".join(r.choice(WORDS) for _ in range(r.randint(2, 5))),
               fill=(255, 255, 255) if mine else (0, 0, 0), font_size=52)
        y += 190
    if keyboard:
        d.rectangle((0, top, w, h), fill=(210, 213, 219))
        for i, row in enumerate(("qwertyuiop", "asdfghjkl", "zxcvbnm")):
            x = (w - len(row) * 106) // 2
            for ch in row:
                d.rounded_rectangle((x, top + 40 + i * 160, x + 98, top + 170 + i * 160), 12, fill=(255, 255, 255))
                d.text((x + 30, top + 70 + i * 160), ch, fill=(0, 0, 0), font_size=60)
                x += 106
        d.rounded_rectangle((250, top + 520, 830, top + 650), 12, fill=(255, 255, 255))
    return out


def test_banning_a_collage_does_not_block_the_photos_it_was_made_of(store: SqliteBankStore) -> None:
    # Fixed: the ban's keypoints matched any one photo of the banned collage (31 inliers,
    # blocked); now the upload must show most of the banned image (FEATURE_MIN_SHOWN).
    photos = [square(n) for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")]
    banned = Image.new("RGB", (1116, 1116), (255, 255, 255))
    for i, photo in enumerate(photos):
        r, c = divmod(i, 2)
        banned.paste(photo.resize((540, 540)), (12 + c * 552, 12 + r * 552))
    verdict = scan_after_banning(store, banned, photos[1])
    assert ReasonCode.BANK_MATCH.value not in verdict.reason_codes, [(m.basis, m.inliers) for m in verdict.matches]


def test_two_chat_screenshots_with_the_same_keyboard_are_held_for_review_not_blocked(store: SqliteBankStore) -> None:
    # Fixed: whole-image PDQ of two chats of one app was 18 apart (0 with bubbles on the
    # same sides): PDQ sees the layout, not the words. A hash match between two mostly
    # flat pictures (hashes/flatness.py) now holds the photo for review, never blocks it.
    verdict = scan_after_banning(store, chat(1, keyboard=True), chat(7, keyboard=True))
    assert verdict.action.value != "block", [(m.basis, m.distance) for m in verdict.matches]
    assert any(m.basis == "flat_picture" and m.algorithm.value == "pdq" for m in verdict.matches)
    assert not any(m.basis == "two_hashes" for m in verdict.matches)


def test_the_banned_chat_screenshot_itself_is_still_blocked(store: SqliteBankStore) -> None:
    # Its hashes only hold other flat pictures for review, but the same bytes block, and
    # a re-saved copy is held (red team: it was allowed while the rule made such
    # matches weak).
    banned = chat(1, keyboard=True)
    data = ban_by_image(store, banned)
    scanner = Scanner(policy=Policy.default(), matcher=BankMatcher(store), classifier=None)
    assert scanner.scan_bytes(data).action.value == "block"
    resaved = scanner.scan_bytes(jpeg(banned.resize((540, 1170)), 70))
    assert ReasonCode.BANK_MATCH.value in resaved.reason_codes
    assert any(m.basis == "flat_picture" for m in resaved.matches)


def test_a_flat_copy_of_an_image_banned_photo_is_still_blocked(store: SqliteBankStore) -> None:
    # The photo was not flat, so a posterised and mirrored copy of it (flat, and past
    # the keypoints, which do not mirror) keeps PDQ's strength (red team).
    photo = corpus_mod.load("camera.png").convert("RGB")
    copy = ImageOps.mirror(ImageOps.posterize(photo, 2))
    verdict = scan_after_banning(store, photo, copy)
    assert verdict.action.value == "block", [(m.basis, m.distance) for m in verdict.matches]


def chat_of_grey_bubbles(seed: int, shared_at: int, w: int = 1080, h: int = 2340) -> Image.Image:
    """Another chat app's screen: its header, grey bubbles, one line all chats share."""
    r = random.Random(seed)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(out)
    d.rectangle((0, 0, w, 220), fill=(245, 245, 245))
    d.text((180, 90), f"user{seed}", fill=(0, 0, 0), font_size=60)
    for k, y in enumerate(range(300, h - 400, 190)):
        x0 = 300 if r.random() < 0.5 else 40
        text = "see you tonight at the party lol" if k == shared_at else \
            " ".join(r.choice(WORDS) for _ in range(r.randint(2, 5)))
        d.rounded_rectangle((x0, y, x0 + 740, y + 150), 40, fill=(230, 230, 235))
        d.text((x0 + 40, y + 45), text, fill=(0, 0, 0), font_size=52)
    d.rounded_rectangle((40, h - 190, 840, h - 60), 60, outline=(160, 160, 160), width=4)
    return out


def test_an_innocent_chat_screenshot_is_not_held_by_the_apps_ui_keypoints(store: SqliteBankStore) -> None:
    # Fixed: the keypoints of one cell (the header and first bubbles) met the banned
    # chat shrunk to a stamp, glyphs of one font meeting glyphs of the same font (12
    # inliers: held for review); the banned photo must now fill a fair part of where
    # it is found (FEATURE_MIN_FILL).
    verdict = scan_after_banning(store, chat_of_grey_bubbles(1, shared_at=2), chat_of_grey_bubbles(7, shared_at=7))
    assert ReasonCode.BANK_MATCH.value not in verdict.reason_codes, [(m.basis, m.inliers, m.region) for m in verdict.matches]


def test_a_flat_copy_of_a_listed_photo_is_still_blocked(store: SqliteBankStore) -> None:
    # The flat-picture rule holds against image bans only: an imported list holds photos
    # of known abuse, and a posterised copy of one is flat too (camera.png at 2 bits a
    # channel: 0.56 flat, PDQ 22 from the photo).
    photo = corpus_mod.load("camera.png").convert("RGB")
    data = jpeg(photo)
    pdq = next(h for h in hash_image(data, decode(data).frames, (0,)).frames[0].hashes if h.algorithm.value == "pdq")
    store.add([NewEntry(Algorithm.PDQ, pdq.value, "banned", source=EntrySource.IMPORT)], actor="test", reason="list")
    verdict = Scanner(policy=Policy.default(), matcher=BankMatcher(store), classifier=None).scan_bytes(
        jpeg(ImageOps.posterize(photo, 2)))
    assert verdict.action.value == "block", [(m.basis, m.distance) for m in verdict.matches]
    assert any(m.basis == "pdq" for m in verdict.matches)


def test_a_chat_banned_again_still_holds_other_chats_for_review_only(store: SqliteBankStore) -> None:
    # Red team: banned before the flat share was kept, then banned again; the matcher
    # read the older entry (no share) and the innocent chat was blocked.
    from photosentry.hashes.localfeatures import LocalFeatures

    banned = chat(1, keyboard=True)
    data = jpeg(banned, 92)
    frame = decode(data).frames[0]
    old = banned_features(frame)
    assert old is not None
    legacy = LocalFeatures(old.points, old.descriptors, size=old.size).encode()
    group = hash_image(data, (frame,), (0,)).sha256
    store.add([NewEntry(Algorithm.ORB, legacy, "banned", "old", EntrySource.DERIVED, group)], actor="test", reason="old")
    verdict = scan_after_banning(store, banned, chat(7, keyboard=True))
    assert verdict.action.value != "block", [(m.basis, m.distance) for m in verdict.matches]


def test_an_image_ban_moved_with_export_and_import_still_holds_other_chats_for_review(
        store: SqliteBankStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Red team: the entries of an exported image ban arrive as imported, and imported
    # lists keep PDQ's rule, so on the new instance two chats of one app blocked each
    # other again. The ban's keypoint entry brings the picture's flat share along.
    import io as _io

    from photosentry.hashes.imports import ImportFormat, ImportReport, iter_import, write_jsonl

    ban_by_image(store, chat(1, keyboard=True))
    out = _io.StringIO()
    write_jsonl(store.entries(), out)
    moved = SqliteBankStore(tmp_path / "moved.sqlite3")
    try:
        entries = list(iter_import(_io.BytesIO(out.getvalue().encode()), ImportReport(), fmt=ImportFormat.JSONL,
                                   bank=None, default_bank="banned"))
        assert {e.source for e in entries} == {EntrySource.IMPORT}
        moved.add(entries, actor="test", reason="moved")
        verdict = Scanner(policy=Policy.default(), matcher=BankMatcher(moved), classifier=None) \
            .scan_bytes(jpeg(chat(7, keyboard=True)))
        assert verdict.action.value != "block", [(m.basis, m.distance, m.source) for m in verdict.matches]
        assert any(m.basis == "flat_picture" for m in verdict.matches)
    finally:
        moved.close()
