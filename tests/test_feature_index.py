"""The banned keypoints' index keeps up with bans one at a time (hashes/localfeatures.py):
a ban joins it and a removed one leaves it without the index being made again, and new
clusters, when the bank has outgrown them, are made in the background while the old
index serves."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from photosentry import defaults
from photosentry.hashes import localfeatures
from photosentry.hashes.localfeatures import FeatureIndex, LocalFeatures, banned_features, query_features

from . import corpus as corpus_mod


def features_of(name: str, crop: float = 0.0) -> tuple[LocalFeatures, LocalFeatures]:
    """A photo's banned keypoints, and those of an upload cropped by ``crop`` a side."""
    img = corpus_mod.load(name).convert("RGB")
    w, h = img.size
    copy = img.crop((round(w * crop), round(h * crop), round(w * (1 - crop)), round(h * (1 - crop))))
    banned = banned_features(np.asarray(img))
    assert banned is not None
    return banned, query_features(np.asarray(copy))


def noise_ban(seed: int) -> str:
    """Another image ban's keypoints: random descriptors at random places."""
    rng = np.random.default_rng(seed)
    n = defaults.FEATURE_COUNT - 1
    return LocalFeatures(rng.uniform(0, 500, (n, 2)).astype(np.float32),
                         rng.integers(0, 256, (n, 32), dtype=np.uint8), size=(512, 512)).encode()


def hit_ids(index: FeatureIndex, query: LocalFeatures) -> dict[int, int]:
    return {hit.entry_id: hit.inliers for hit, _ in index.search(query)}


@pytest.fixture
def photos() -> dict[str, tuple[LocalFeatures, LocalFeatures]]:
    return {name: features_of(name, 0.1) for name in ("astronaut.png", "coffee.png", "chelsea.png")}


def test_bans_join_and_leave_the_index_without_making_it_again(photos) -> None:  # type: ignore[no-untyped-def]
    index = FeatureIndex()
    for i in range(40):  # past FEATURE_IVF_MIN: an inverted file
        index.add(1000 + i, noise_ban(i), "banned")
    index.add(1, photos["astronaut.png"][0].encode(), "banned")
    assert hit_ids(index, photos["astronaut.png"][1]).keys() == {1}
    built = index._index
    assert isinstance(built, localfeatures.faiss.IndexBinaryIVF)

    index.add(2, photos["coffee.png"][0].encode(), "banned")
    found = hit_ids(index, photos["coffee.png"][1])
    assert index._index is built, "adding a ban made the index again"
    assert found.keys() == {2} and found[2] >= defaults.FEATURE_BLOCK_INLIERS

    index.remove(1)
    assert index._index is built
    assert hit_ids(index, photos["astronaut.png"][1]) == {}
    assert index.keypoints == 41 * (defaults.FEATURE_COUNT - 1)

    # The same ban again (a moderator undoing a removal) is found as before.
    index.add(1, photos["astronaut.png"][0].encode(), "banned")
    assert hit_ids(index, photos["astronaut.png"][1]).keys() == {1}
    assert index._index is built


def test_added_one_by_one_it_finds_what_a_fresh_index_finds(photos) -> None:  # type: ignore[no-untyped-def]
    grown, fresh = FeatureIndex(), FeatureIndex()
    grown.add(1000, noise_ban(0), "banned")
    assert hit_ids(grown, photos["chelsea.png"][1]) == {}  # a brute-force index exists now
    for i in range(1, 40):
        grown.add(1000 + i, noise_ban(i), "banned")
    for name, entry in zip(photos, (1, 2, 3), strict=True):
        grown.add(entry, photos[name][0].encode(), "banned")
    for i in range(40):
        fresh.add(1000 + i, noise_ban(i), "banned")
    for name, entry in zip(photos, (1, 2, 3), strict=True):
        fresh.add(entry, photos[name][0].encode(), "banned")
    for name, entry in zip(photos, (1, 2, 3), strict=True):
        a, b = hit_ids(grown, photos[name][1]), hit_ids(fresh, photos[name][1])
        assert a.keys() == b.keys() == {entry}
        assert abs(a[entry] - b[entry]) <= 0.1 * b[entry], (name, a, b)


def test_new_clusters_are_made_in_the_background_and_changes_meanwhile_kept(
        photos, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(defaults, "FEATURE_IVF_SYNC_MAX", 2 * defaults.FEATURE_IVF_MIN)
    index = FeatureIndex()
    for i in range(20):
        index.add(1000 + i, noise_ban(i), "banned")
    assert hit_ids(index, photos["coffee.png"][1]) == {}
    first, clustered = index._index, index._clustered_for
    assert clustered == 20 * (defaults.FEATURE_COUNT - 1)

    # Hold the background clustering until the scan side has changed the bank.
    release, started = threading.Event(), threading.Event()
    build = FeatureIndex._build

    def held(snapshot, *, clusters=True):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(30)
        return build(snapshot, clusters=clusters)

    monkeypatch.setattr(FeatureIndex, "_build", staticmethod(held))
    for i in range(20, 100):  # 5 times the clustered bank
        index.add(1000 + i, noise_ban(i), "banned")
    index.add(1, photos["astronaut.png"][0].encode(), "banned")
    # This search starts the clustering and does not wait for it.
    assert hit_ids(index, photos["astronaut.png"][1]).keys() == {1}
    assert started.wait(30) and index._index is first
    index.add(2, photos["coffee.png"][0].encode(), "banned")
    index.remove(1)
    assert hit_ids(index, photos["coffee.png"][1]).keys() == {2}
    release.set()
    index.wait(60)
    assert index._index is not first and index._clustered_for > 4 * clustered
    assert hit_ids(index, photos["coffee.png"][1]).keys() == {2}
    assert hit_ids(index, photos["astronaut.png"][1]) == {}
    assert index.keypoints == 100 * (defaults.FEATURE_COUNT - 1) + len(photos["coffee.png"][0])


def test_a_photo_without_keypoints_adds_nothing() -> None:
    index = FeatureIndex()
    flat = Image.new("RGB", (300, 300), (120, 120, 120))
    assert banned_features(np.asarray(flat)) is None
    index.add(5, LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)).encode(), "banned")
    assert len(index) == 0 and index.keypoints == 0
    index.remove(5)


def test_a_large_bank_at_start_is_searched_by_brute_force_until_its_clusters_are_made(
        photos, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(defaults, "FEATURE_IVF_SYNC_MAX", 2 * defaults.FEATURE_IVF_MIN)
    release = threading.Event()
    build = FeatureIndex._build

    def held(snapshot, *, clusters=True):  # type: ignore[no-untyped-def]
        if clusters:  # the brute-force index at start is made at once
            release.wait(30)
        return build(snapshot, clusters=clusters)

    monkeypatch.setattr(FeatureIndex, "_build", staticmethod(held))
    index = FeatureIndex()
    for i in range(40):
        index.add(1000 + i, noise_ban(i), "banned")
    index.add(1, photos["chelsea.png"][0].encode(), "banned")
    # The first search does not wait for the clusters, and finds the ban.
    assert hit_ids(index, photos["chelsea.png"][1]).keys() == {1}
    assert isinstance(index._index, localfeatures.faiss.IndexBinaryIDMap)
    release.set()
    index.wait(60)
    assert isinstance(index._index, localfeatures.faiss.IndexBinaryIVF)
    assert hit_ids(index, photos["chelsea.png"][1]).keys() == {1}


def test_a_bans_flat_share_comes_from_whichever_active_entry_knows_it(photos) -> None:  # type: ignore[no-untyped-def]
    own = photos["coffee.png"][0]
    legacy = LocalFeatures(own.points, own.descriptors, size=own.size)  # banned before the share was kept
    index = FeatureIndex()
    index.add(1, legacy.encode(), "banned", "g")
    assert index.flat_of("g") is None
    index.add(2, own.encode(), "banned", "g")
    assert index.flat_of("g") == pytest.approx(own.flat, abs=0.01)
    assert index.flat_of("other") is None and index.flat_of("") is None
    index.remove(2)
    assert index.flat_of("g") is None


def test_a_copy_is_verified_against_its_own_bans_keypoints_whatever_else_is_banned(photos) -> None:  # type: ignore[no-untyped-def]
    # How far the inliers spread is measured against the banned photo's own keypoints:
    # not against every banned keypoint's, where one large picture banned beside it
    # (here keypoints across 60,000 pixels) made every other ban's copies look bunched.
    banned, copy = photos["coffee.png"]
    alone = FeatureIndex()
    alone.add(1, banned.encode(), "banned")
    expected = hit_ids(alone, copy)
    assert expected.get(1, 0) >= defaults.FEATURE_BLOCK_INLIERS

    index = FeatureIndex()
    rng = np.random.default_rng(5)
    n = defaults.FEATURE_COUNT - 1
    huge = LocalFeatures(rng.uniform(0, 60_000, (n, 2)).astype(np.float32),
                         rng.integers(0, 256, (n, 32), dtype=np.uint8), size=(60_000, 60_000))
    index.add(2, huge.encode(), "banned")
    index.add(1, banned.encode(), "banned")
    assert hit_ids(index, copy) == expected
