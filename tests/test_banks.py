"""The SQLite bank store and the in-memory matcher that follows it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageFilter

from photosentry.decode import decode
from photosentry.errors import BankNotFound, InvalidHash
from photosentry.hashes.banks import BankConfig, ChangeOp, EntrySource, NewEntry, SqliteBankStore
from photosentry.hashes.codecs import Algorithm, hamming
from photosentry.hashes.localfeatures import banned_features
from photosentry.hashes.matcher import BankMatcher
from photosentry.hashes.signals import ImageHashes, PdqSignal, hash_image
from photosentry.worker.policy import Policy, decide
from photosentry.worker.verdict import Action

from . import corpus as corpus_mod

PHASH_A = "ba8c84536bd3c366"
PHASH_B = "c366ba8c84536bd3"
PDQ_A = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
WHO = {"actor": "alice", "reason": "ticket 123"}


def hashes_of(data: bytes) -> ImageHashes:
    image = decode(data)
    return hash_image(data, image.frames, image.frame_indices)


def entries_for(hashes: ImageHashes, bank: str = "banned", *, only: set[Algorithm] | None = None) -> list[NewEntry]:
    """Bank entries for every hash of a photo (first frame), as `ban add --image` makes."""
    values = {**hashes.exact(), **{h.algorithm: h.value for h in hashes.frames[0].hashes}}
    return [
        NewEntry(algorithm, value, bank, label="test", source=EntrySource.IMAGE, group=hashes.sha256[:12])
        for algorithm, value in values.items()
        if only is None or algorithm in only
    ]


# -- store ----------------------------------------------------------------------------


def test_add_returns_entries(store: SqliteBankStore) -> None:
    assert store.version() == 0
    (entry,) = store.add([NewEntry(Algorithm.PHASH, PHASH_A.upper(), "banned", label="x")], **WHO)
    assert entry.id > 0
    assert (entry.algorithm, entry.value, entry.bank, entry.label) == (Algorithm.PHASH, PHASH_A, "banned", "x")
    assert (entry.added_by, entry.reason, entry.active) == ("alice", "ticket 123", True)
    assert entry.source is EntrySource.MODERATOR
    assert entry.tagged == f"phash:{PHASH_A}"
    assert entry.removed_by is None
    assert store.get(entry.id) == entry
    assert entry.to_dict()["algorithm"] == "phash"
    assert store.version() == 1


def test_new_entry_validates() -> None:
    with pytest.raises(InvalidHash):
        NewEntry(Algorithm.PDQ, PHASH_A, "banned")
    with pytest.raises(ValueError):
        NewEntry(Algorithm.PHASH, PHASH_A, "no spaces allowed")


def test_duplicate_active_add_merges(store: SqliteBankStore) -> None:
    (first,) = store.add([NewEntry(Algorithm.PHASH, PHASH_A, "banned")], **WHO)
    version = store.version()
    (again,) = store.add([NewEntry(Algorithm.PHASH, PHASH_A, "banned")], actor="bob", reason="dup")
    assert again.id == first.id
    assert again.added_by == "alice"
    assert store.version() == version
    # Same hash in another bank is another entry.
    (other,) = store.add([NewEntry(Algorithm.PHASH, PHASH_A, "moderation")], **WHO)
    assert other.id != first.id
    assert len(list(store.entries())) == 2


def test_remove_is_soft(store: SqliteBankStore) -> None:
    (entry,) = store.add([NewEntry(Algorithm.PDQ, PDQ_A, "banned")], **WHO)
    (removed,) = store.remove([entry.id], actor="bob", reason="false positive")
    assert removed.id == entry.id and not removed.active
    assert (removed.removed_by, removed.removed_reason) == ("bob", "false positive")
    assert removed.removed_at is not None and removed.removed_at >= entry.added_at
    assert removed.added_by == "alice"  # history kept
    assert list(store.entries()) == []
    assert list(store.entries(include_removed=True)) == [removed]
    # Removing again changes nothing, not even the version.
    version = store.version()
    assert store.remove([entry.id], actor="carol", reason="again") == [removed]
    assert store.version() == version
    # Re-adding after removal makes a new active entry; the old one stays removed.
    (readded,) = store.add([NewEntry(Algorithm.PDQ, PDQ_A, "banned")], **WHO)
    assert readded.id != entry.id and readded.active
    assert not store.get(entry.id).active


def test_missing_entries(store: SqliteBankStore) -> None:
    with pytest.raises(BankNotFound):
        store.get(999)
    with pytest.raises(BankNotFound):
        store.remove([999], **WHO)
    assert store.version() == 0


def test_version_and_changes_since(store: SqliteBankStore) -> None:
    versions = [store.version()]
    a, b = store.add(
        [NewEntry(Algorithm.PHASH, PHASH_A, "banned"), NewEntry(Algorithm.PHASH, PHASH_B, "moderation")], **WHO
    )
    versions.append(store.version())
    store.remove([a.id], actor="bob", reason="oops")
    versions.append(store.version())
    store.configure_bank("banned", distances={Algorithm.PHASH: 4}, description="", actor="carol", reason="tune")
    versions.append(store.version())
    assert versions == [0, 2, 3, 4]

    changes = store.changes_since(0)
    assert [(c.version, c.op, c.entry_id, c.bank, c.actor) for c in changes] == [
        (1, ChangeOp.ADD, a.id, "banned", "alice"),
        (2, ChangeOp.ADD, b.id, "moderation", "alice"),
        (3, ChangeOp.REMOVE, a.id, "banned", "bob"),
        (4, ChangeOp.BANK, None, "banned", "carol"),
    ]
    assert [c.version for c in store.changes_since(2)] == [3, 4]
    assert store.changes_since(4) == []


def test_actor_and_reason_required(store: SqliteBankStore) -> None:
    entry = NewEntry(Algorithm.PHASH, PHASH_A, "banned")
    for actor, reason in (("", "why"), ("  ", "why"), ("who", ""), ("who", " \t")):
        with pytest.raises(ValueError):
            store.add([entry], actor=actor, reason=reason)
    (added,) = store.add([entry], **WHO)
    with pytest.raises(ValueError):
        store.remove([added.id], actor="", reason="why")
    with pytest.raises(ValueError):
        store.configure_bank("banned", distances={}, description="", actor="who", reason="")
    assert store.version() == 1


def test_configure_bank(store: SqliteBankStore) -> None:
    cfg = store.configure_bank(
        "strict", distances={Algorithm.PDQ: 10, Algorithm.PHASH: 0}, description="tight", **WHO
    )
    assert cfg == BankConfig("strict", {Algorithm.PDQ: 10, Algorithm.PHASH: 0}, "tight")
    assert cfg.distance(Algorithm.PDQ) == 10
    assert cfg.distance(Algorithm.PHASH) == 0
    assert cfg.distance(Algorithm.DHASH) == 8  # default
    assert cfg.distance(Algorithm.SHA256) == 0
    # Reconfiguring replaces the distances.
    cfg = store.configure_bank("strict", distances={Algorithm.DHASH: 3}, description="", **WHO)
    assert cfg.distances == {Algorithm.DHASH: 3}
    # A bank only written to is listed with defaults.
    store.add([NewEntry(Algorithm.PHASH, PHASH_A, "banned")], **WHO)
    assert [b.name for b in store.banks()] == ["banned", "strict"]
    assert store.bank("banned") == BankConfig("banned")


@pytest.mark.parametrize(
    "distances",
    [
        {Algorithm.PDQ: -1},
        {Algorithm.PDQ: 128},  # half the bits: would match noise
        {Algorithm.PHASH: 32},
        {Algorithm.SHA256: 0},  # exact hashes take no distance
    ],
)
def test_configure_bank_rejects_bad_distances(store: SqliteBankStore, distances: dict[Algorithm, int]) -> None:
    with pytest.raises(ValueError):
        store.configure_bank("banned", distances=distances, description="", **WHO)
    assert store.version() == 0
    assert store.banks() == []


def test_configure_bank_rejects_bad_name(store: SqliteBankStore) -> None:
    with pytest.raises(ValueError):
        store.configure_bank("", distances={}, description="", **WHO)


def test_entries_filters(store: SqliteBankStore) -> None:
    store.add(
        [
            NewEntry(Algorithm.PHASH, PHASH_A, "banned", group="g1"),
            NewEntry(Algorithm.PDQ, PDQ_A, "banned", group="g1"),
            NewEntry(Algorithm.PHASH, PHASH_B, "moderation"),
        ],
        **WHO,
    )
    assert [e.value for e in store.entries(bank="moderation")] == [PHASH_B]
    assert [e.algorithm for e in store.entries(group="g1")] == [Algorithm.PHASH, Algorithm.PDQ]


def test_store_persists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "banks.sqlite3"
    with SqliteBankStore(path) as first:
        (entry,) = first.add([NewEntry(Algorithm.PHASH, PHASH_A, "banned")], **WHO)
    with SqliteBankStore(path) as second:
        assert second.get(entry.id) == entry
        assert second.version() == 1


# -- matcher ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def banned_hashes(corpus: corpus_mod.Corpus) -> ImageHashes:
    return hashes_of(corpus.banned.read_bytes())


def test_matcher_matches_every_algorithm(store: SqliteBankStore, banned_hashes: ImageHashes) -> None:
    added = store.add(entries_for(banned_hashes), **WHO)
    matcher = BankMatcher(store)
    assert matcher.size == 5 and matcher.version == store.version()
    matches = matcher.match(banned_hashes)
    assert {m.entry_id for m in matches} == {e.id for e in added}
    assert all(m.distance == 0 and m.bank == "banned" and not m.weak for m in matches)


def test_refresh_follows_another_process(
    tmp_path: Path, store: SqliteBankStore, corpus: corpus_mod.Corpus, banned_hashes: ImageHashes
) -> None:
    matcher = BankMatcher(store)
    assert matcher.match(banned_hashes) == []
    copy = hashes_of(corpus.copies["reencoded_q50"].read_bytes())

    with SqliteBankStore(store.path) as other:  # e.g. the moderator's CLI
        added = other.add(entries_for(banned_hashes, only={Algorithm.PDQ, Algorithm.SHA256}), **WHO)
        assert matcher.match(banned_hashes) == []  # not refreshed yet
        assert matcher.refresh() == 2
        assert matcher.version == other.version()
        assert {m.entry_id for m in matcher.match(banned_hashes)} == {e.id for e in added}
        # A copy matches by PDQ only (its bytes differ).
        (hit,) = matcher.match(copy)
        assert hit.algorithm is Algorithm.PDQ and 0 < hit.distance <= 31

        pdq = next(e for e in added if e.algorithm is Algorithm.PDQ)
        other.remove([pdq.id], actor="bob", reason="appeal upheld")
        assert matcher.refresh() == 1
        assert matcher.match(copy) == []
        assert [m.algorithm for m in matcher.match(banned_hashes)] == [Algorithm.SHA256]
        assert matcher.size == 1
    assert matcher.refresh() == 0


def test_matcher_finds_transformed_copies(
    store: SqliteBankStore, corpus: corpus_mod.Corpus, banned_hashes: ImageHashes
) -> None:
    store.add(entries_for(banned_hashes, only={Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH}), **WHO)
    matcher = BankMatcher(store)
    for name, path in corpus.copies.items():
        matches = matcher.match(hashes_of(path.read_bytes()))
        if name == "cropped_3pct":
            # A 3% crop moves PDQ past 31 and pHash past 8: dHash alone still matches,
            # and a lone 64-bit hash is weak evidence (hashes/evidence.py)...
            assert matches and all(m.weak and m.basis == "lone_64bit" for m in matches), matches
            continue
        assert any(not m.weak for m in matches), name
    for name, path in corpus.clean.items():
        assert matcher.match(hashes_of(path.read_bytes())) == [], name
    # ... until the ban's keypoints (what `ban add IMAGE` stores) put the crop in place.
    banned = corpus.banned.read_bytes()
    features = banned_features(decode(banned).frames[0])
    assert features is not None
    store.add([NewEntry(Algorithm.ORB, features.encode(), "banned", label="test", source=EntrySource.DERIVED,
                        group=banned_hashes.sha256[:12])], **WHO)
    matcher.refresh()
    data = corpus.copies["cropped_3pct"].read_bytes()
    image = decode(data)
    matches = matcher.match(hash_image(data, image.frames, image.frame_indices, features=True))
    orb = next(m for m in matches if m.algorithm is Algorithm.ORB)
    assert orb.basis == "features" and orb.inliers >= 20 and not orb.weak
    dhash = next(m for m in matches if m.algorithm is Algorithm.DHASH)
    assert dhash.basis == "two_hashes" and not dhash.weak


def test_mirrored_copy_matches_through_a_variant(
    store: SqliteBankStore, corpus: corpus_mod.Corpus, banned_hashes: ImageHashes
) -> None:
    store.add(entries_for(banned_hashes, only={Algorithm.PDQ}), **WHO)
    (hit,) = BankMatcher(store).match(hashes_of(corpus.copies["mirrored"].read_bytes()))
    assert hit.variant != 0 and hit.distance <= 31


def test_per_bank_distance(store: SqliteBankStore, banned_hashes: ImageHashes) -> None:
    brighter = ImageEnhance.Brightness(corpus_mod.load(corpus_mod.BANNED_PHOTO)).enhance(1.3)
    near = hashes_of(corpus_mod.jpeg_bytes(brighter))
    distance = hamming(near.frames[0].get(Algorithm.PHASH).value, banned_hashes.frames[0].get(Algorithm.PHASH).value)
    assert 0 < distance <= 8

    (entry,) = store.add(entries_for(banned_hashes, only={Algorithm.PHASH}), **WHO)
    matcher = BankMatcher(store)
    (hit,) = matcher.match(near)
    assert (hit.entry_id, hit.algorithm, hit.distance) == (entry.id, Algorithm.PHASH, distance)

    store.configure_bank("banned", distances={Algorithm.PHASH: 0}, description="exact only", **WHO)
    assert matcher.match(near) != []  # the old view until refreshed
    matcher.refresh()
    assert matcher.bank("banned").distance(Algorithm.PHASH) == 0
    assert matcher.match(near) == []
    assert [m.distance for m in matcher.match(banned_hashes)] == [0]

    # A new matcher reads the setting from the start, and other banks keep the default.
    store.add(entries_for(banned_hashes, "moderation", only={Algorithm.PHASH}), **WHO)
    assert [m.bank for m in BankMatcher(store).match(near)] == ["moderation"]


def test_wider_bank_distance(store: SqliteBankStore, corpus: corpus_mod.Corpus, banned_hashes: ImageHashes) -> None:
    cropped = hashes_of(corpus.copies["cropped_3pct"].read_bytes())
    distance = hamming(cropped.frames[0].get(Algorithm.PHASH).value, banned_hashes.frames[0].get(Algorithm.PHASH).value)
    assert distance > 8
    store.add(entries_for(banned_hashes, only={Algorithm.PHASH}), **WHO)
    matcher = BankMatcher(store)
    assert matcher.match(cropped) == []
    store.configure_bank("banned", distances={Algorithm.PHASH: distance}, description="", **WHO)
    matcher.refresh()
    assert [m.distance for m in matcher.match(cropped)] == [distance]


def test_weak_pdq_flag(store: SqliteBankStore, policy: Policy) -> None:
    blurred = corpus_mod.load(corpus_mod.BANNED_PHOTO).filter(ImageFilter.GaussianBlur(16))
    flat = hashes_of(corpus_mod.jpeg_bytes(blurred))
    pdq = flat.frames[0].get(Algorithm.PDQ)
    assert pdq.quality < PdqSignal.QUALITY_THRESHOLD

    store.add(entries_for(flat, only={Algorithm.PDQ}), **WHO)
    (hit,) = BankMatcher(store).match(flat)
    assert hit.weak and hit.distance == 0
    # A weak match alone decides nothing.
    action, _ = decide(policy.base, matches=[hit])
    assert action is Action.ALLOW


def test_strong_match_sorted_before_weak(store: SqliteBankStore, banned_hashes: ImageHashes) -> None:
    # The banned photo's PDQ (strong), and its dHash under another banned image's group:
    # a lone 64-bit match, weak.
    store.add(entries_for(banned_hashes, only={Algorithm.PDQ}), **WHO)
    (dhash,) = entries_for(banned_hashes, "other", only={Algorithm.DHASH})
    store.add([NewEntry(dhash.algorithm, dhash.value, "other", label="x", source=EntrySource.IMAGE, group="g2")], **WHO)
    matches = BankMatcher(store).match(banned_hashes)
    assert [(m.algorithm, m.weak, m.basis) for m in matches] == [
        (Algorithm.PDQ, False, "pdq"), (Algorithm.DHASH, True, "lone_64bit")]


def test_animated_frame_reported(store: SqliteBankStore, corpus: corpus_mod.Corpus) -> None:
    """A banned photo hidden in the middle of an animation matches on that frame."""
    banned = corpus_mod.load(corpus_mod.BANNED_PHOTO).resize((160, 107))
    clean = corpus_mod.load("coffee.png").resize((160, 107))
    frames = [clean, clean.rotate(90), banned, clean.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    animation = hashes_of(buf.getvalue())
    assert [f.frame for f in animation.frames] == [0, 1, 2, 3]

    store.add(entries_for(hashes_of(corpus_mod.jpeg_bytes(banned)), only={Algorithm.PDQ}), **WHO)
    (hit,) = BankMatcher(store).match(animation)
    assert hit.frame == 2


def _open_and_read_ids(paths: list[str], start_at: float) -> list[str]:
    import time

    time.sleep(max(0.0, start_at - time.time()))  # every process opens at the same instant
    ids = []
    for path in paths:
        with SqliteBankStore(path) as store:
            ids.append(store.store_id())
    return ids


def test_many_processes_opening_a_new_bank_file_at_once_all_succeed(tmp_path: Path) -> None:
    """A rescan pool or a worker fleet starting on a fresh data directory opens the new
    file from several processes at once; SQLite's lock-upgrade deadlock must not fail one."""
    import multiprocessing
    import time

    paths = [str(tmp_path / f"banks-{i}.sqlite3") for i in range(20)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        start_at = time.time() + 3.0  # after the spawned interpreters have started
        results = pool.starmap(_open_and_read_ids, [(paths, start_at)] * 4)
    for i in range(len(paths)):
        assert len({ids[i] for ids in results}) == 1, "every process reads the one store id"
