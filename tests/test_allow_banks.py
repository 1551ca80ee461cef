"""Allow banks: known false positives that suppress ban matches, as the policy permits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from PIL import Image

from photosentry.decode import decode
from photosentry.errors import PolicyError
from photosentry.hashes.banks import BankKind, SqliteBankStore, allow_photo, entries_from_hashes
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.codecs import Algorithm
from photosentry.hashes.derived import derive
from photosentry.hashes.localfeatures import banned_features
from photosentry.hashes.matcher import BankMatcher, Match
from photosentry.hashes.signals import hash_image
from photosentry.models.classifier import ModelScore
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy, decide
from photosentry.worker.verdict import Action, MediaInfo, ReasonCode

from . import corpus as corpus_mod

WHO = {"actor": "mod@example.org", "reason": "released false positive"}
MINORS = {"recipient_is_minor": True}


def m(bank: str, entry_id: int, *, allow: bool = False, weak: bool = False,
      algorithm: Algorithm = Algorithm.PDQ, distance: int = 3, region: str = "", frame: int = 0) -> Match:
    return Match(entry_id, bank, algorithm, distance, weak=weak, allow=allow, region=region, frame=frame)


def released(bank: str, entry_id: int, *, weak: bool = False, frame: int = 0) -> list[Match]:
    """Allow matches of a released photo's near copy: its PDQ and its pHash both match."""
    return [m(bank, entry_id, allow=True, weak=weak, frame=frame),
            m(bank, entry_id + 1000, allow=True, algorithm=Algorithm.PHASH, distance=2, frame=frame)]


def media(frames: int) -> MediaInfo:
    return MediaInfo("gif", 640, 480, frames, frames)


def score(value: float) -> ModelScore:
    return ModelScore(model_id="open_nsfw", model_version="1", score=value, labels={"nsfw": value})


def hashes_of(path: Path):
    data = path.read_bytes()
    image = decode(data)
    return hash_image(data, image.frames, image.frame_indices)


# -- policy ------------------------------------------------------------------------


def test_allow_match_suppresses_ban_match_and_keeps_it_visible(policy: Policy) -> None:
    action, reasons = decide(policy.base, matches=[m("banned", 1), *released("fp", 2)])
    assert action is Action.ALLOW
    assert [r.code for r in reasons] == [ReasonCode.ALLOW_LISTED]
    detail = reasons[0].detail
    assert detail["allow_banks"] == ["fp"] and detail["allow_entry_ids"] == [2, 1002]
    assert [s["code"] for s in detail["suppressed"]] == ["bank_match"]
    assert detail["suppressed"][0]["detail"]["bank"] == "banned"


def test_allow_match_suppresses_a_model_quarantine_but_not_for_minors(policy: Policy) -> None:
    allow = released("fp", 2)
    action, reasons = decide(policy.base, matches=allow, scores=[score(0.8)])
    assert action is Action.ALLOW and reasons[0].code is ReasonCode.ALLOW_LISTED
    minors = policy.profile_for(MINORS)
    action, reasons = decide(minors, matches=allow, scores=[score(0.75)])
    assert action is Action.QUARANTINE and [r.code for r in reasons] == [ReasonCode.NUDITY]
    # ... while it still corrects a wrong bank entry for minors.
    action, reasons = decide(minors, matches=[m("moderation", 1), *allow])
    assert action is Action.ALLOW and reasons[0].code is ReasonCode.ALLOW_LISTED


def test_failures_are_never_suppressed(policy: Policy) -> None:
    action, reasons = decide(
        policy.base, matches=[m("banned", 1), *released("fp", 2)], failures=[(ReasonCode.UNREADABLE, "bad")]
    )
    assert action is Action.QUARANTINE
    assert [r.code for r in reasons] == [ReasonCode.UNREADABLE, ReasonCode.ALLOW_LISTED]


def test_weak_allow_match_suppresses_nothing(policy: Policy) -> None:
    action, reasons = decide(policy.base, matches=[m("banned", 1), *released("fp", 2, weak=True)])
    assert action is Action.BLOCK and [r.code for r in reasons] == [ReasonCode.BANK_MATCH]


def test_allow_match_alone_is_clean(policy: Policy) -> None:
    action, reasons = decide(policy.base, matches=[*released("fp", 2)])
    assert action is Action.ALLOW and reasons[0].code is ReasonCode.CLEAN


def test_never_suppress_banks_and_profile_narrowing() -> None:
    policy = Policy.from_toml(
        'version = "t"\n[models.open_nsfw]\nquarantine = 0.7\n'
        '[allow]\nsuppresses = ["bank_match"]\nnever_suppress_banks = ["csam"]\n'
        '[profiles.kids]\nwhen_true = ["kid"]\n[profiles.kids.allow]\nsuppresses = []\n'
    )
    action, reasons = decide(policy.base, matches=[m("csam", 1), m("banned", 3), *released("fp", 2)])
    assert action is Action.BLOCK
    assert [r.code for r in reasons] == [ReasonCode.BANK_MATCH, ReasonCode.ALLOW_LISTED]
    assert reasons[0].detail["bank"] == "csam"
    action, _ = decide(policy.base, matches=[*released("fp", 2)], scores=[score(0.8)])
    assert action is Action.QUARANTINE  # nudity is not in this policy's suppresses
    kids = policy.profile_for({"kid": True})
    assert decide(kids, matches=[m("banned", 3), *released("fp", 2)])[0] is Action.BLOCK


def test_one_forged_perceptual_collision_clears_nothing(policy: Policy) -> None:
    """A photo that collides with a released photo in one perceptual hash only (cheap to
    forge) keeps its ban match and its model quarantine."""
    collision = [m("fp", 2, allow=True, algorithm=Algorithm.PHASH, distance=1)]
    action, reasons = decide(policy.base, matches=[m("csam", 1), *collision])
    assert action is Action.BLOCK and [r.code for r in reasons] == [ReasonCode.BANK_MATCH]
    action, reasons = decide(policy.base, matches=collision, scores=[score(0.8)])
    assert action is Action.QUARANTINE and [r.code for r in reasons] == [ReasonCode.NUDITY]


def test_keypoints_and_regions_never_vouch_for_a_photo(policy: Policy) -> None:
    """Keypoints and a region's hashes find a released photo inside the upload: beside a
    banned photo (a collage) or a nude one, it must clear neither."""
    keypoints = m("fp", 2, allow=True, algorithm=Algorithm.ORB, distance=100)
    action, reasons = decide(policy.base, matches=[m("banned", 1, distance=0), keypoints])
    assert action is Action.BLOCK and [r.code for r in reasons] == [ReasonCode.BANK_MATCH]
    in_a_cell = [m("fp", 3, allow=True, region="cell:0,0,300,400"),
                 m("fp", 4, allow=True, algorithm=Algorithm.ORB, distance=50, region="cell:0,0,300,400")]
    action, reasons = decide(policy.base, matches=[m("banned", 1, distance=20, region="cell:300,0,600,400"),
                                                   *in_a_cell])
    assert action is Action.BLOCK and [r.code for r in reasons] == [ReasonCode.BANK_MATCH]
    action, reasons = decide(policy.base, matches=in_a_cell, scores=[score(0.8)])
    assert action is Action.QUARANTINE and [r.code for r in reasons] == [ReasonCode.NUDITY]
    # The released photo itself (its whole frame in two hashes) clears a keypoint ban
    # that verified fewer of its keypoints than its own allow entry did.
    action, reasons = decide(policy.base, matches=[m("banned", 1, algorithm=Algorithm.ORB, distance=230),
                                                   keypoints, *released("fp", 5)])
    assert action is Action.ALLOW and reasons[0].code is ReasonCode.ALLOW_LISTED


def test_a_released_frame_clears_nothing_in_the_files_other_frames(policy: Policy) -> None:
    """A released photo as frame 0 of a GIF (a TIFF page, an appended image, an EXIF
    thumbnail) beside a banned photo as frame 1: each frame answers for itself."""
    ban_in_frame_1 = m("banned", 1, distance=20, frame=1)
    action, reasons = decide(policy.base, matches=[ban_in_frame_1, *released("fp", 2)], media=media(2))
    assert action is Action.BLOCK and [r.code for r in reasons] == [ReasonCode.BANK_MATCH]
    # Released in frame 1 too: cleared there.
    action, _ = decide(policy.base, matches=[ban_in_frame_1, *released("fp", 2, frame=1)], media=media(2))
    assert action is Action.ALLOW
    # The models saw both frames: a release of one does not vouch for the other's score.
    action, reasons = decide(policy.base, matches=released("fp", 2), scores=[score(0.8)], media=media(2))
    assert action is Action.QUARANTINE and [r.code for r in reasons] == [ReasonCode.NUDITY]
    action, _ = decide(policy.base, matches=released("fp", 2), scores=[score(0.8)], media=media(1))
    assert action is Action.ALLOW
    # The released file's exact bytes answer for all of it.
    exact = m("fp", 3, allow=True, algorithm=Algorithm.SHA256, distance=0)
    action, _ = decide(policy.base, matches=[ban_in_frame_1, exact], scores=[score(0.8)], media=media(2))
    assert action is Action.ALLOW


def test_a_release_needs_pdq_among_its_two_hashes(policy: Policy) -> None:
    # pHash and dHash stay within a few bits of a released photo a third of which a
    # banned photo covers; PDQ does not.
    low_frequencies = [m("fp", 2, allow=True, algorithm=Algorithm.PHASH, distance=6),
                       m("fp", 3, allow=True, algorithm=Algorithm.DHASH, distance=7)]
    action, reasons = decide(policy.base, matches=[m("banned", 1, algorithm=Algorithm.ORB, distance=241),
                                                   m("fp", 4, allow=True, algorithm=Algorithm.ORB, distance=230),
                                                   *low_frequencies])
    assert action is Action.BLOCK and reasons[0].code is ReasonCode.BANK_MATCH


def test_a_ban_match_is_cleared_only_by_an_allow_match_as_close_in_its_own_hash(policy: Policy) -> None:
    # Released photo's near copy (PDQ 3, pHash 2); the ban entry matches by dHash: no
    # allow entry of that hash vouches for the distance, so the ban stands.
    action, reasons = decide(policy.base, matches=[m("banned", 1, algorithm=Algorithm.DHASH, distance=4),
                                                   *released("fp", 2)])
    assert action is Action.BLOCK and reasons[0].code is ReasonCode.BANK_MATCH
    # A PDQ ban match closer than the allow match stands; a farther one is cleared.
    action, _ = decide(policy.base, matches=[m("banned", 1, distance=1), *released("fp", 2)])
    assert action is Action.BLOCK
    action, reasons = decide(policy.base, matches=[m("banned", 1, distance=9), *released("fp", 2)])
    assert action is Action.ALLOW and reasons[0].code is ReasonCode.ALLOW_LISTED


def test_exact_bytes_released_clear_every_match_but_exact_bans_need_exact_allows(policy: Policy) -> None:
    exact_allow = m("fp", 2, allow=True, algorithm=Algorithm.SHA256, distance=0)
    action, reasons = decide(policy.base, matches=[m("banned", 1, algorithm=Algorithm.SHA256, distance=0),
                                                   m("banned", 3), exact_allow])
    assert action is Action.ALLOW and reasons[0].code is ReasonCode.ALLOW_LISTED
    # Near copies in two perceptual hashes do not clear a ban of these exact bytes.
    action, reasons = decide(policy.base, matches=[m("banned", 1, algorithm=Algorithm.SHA256, distance=0),
                                                   *released("fp", 2)])
    assert action is Action.BLOCK and reasons[0].detail["entry_ids"] == [1]


@pytest.mark.parametrize(
    "table",
    ['[allow]\nsuppresses = ["unreadable"]\n', '[allow]\nsuppresses = "bank_match"\n',
     '[allow]\nnever_suppress_banks = [1]\n', '[allow]\nunknown = 1\n'],
)
def test_policy_refuses_bad_allow_tables(table: str) -> None:
    with pytest.raises(PolicyError):
        Policy.from_toml('version = "t"\n' + table)


# -- banks ---------------------------------------------------------------------------


def test_kind_is_stored_and_kept_when_not_given(store: SqliteBankStore) -> None:
    cfg = store.configure_bank("fp", distances={}, description="", kind=BankKind.ALLOW, **WHO)
    assert cfg.is_allow
    cfg = store.configure_bank("fp", distances={Algorithm.PDQ: 20}, description="x", **WHO)
    assert cfg.kind is BankKind.ALLOW and cfg.distances == {Algorithm.PDQ: 20}
    assert store.bank("new").kind is BankKind.BAN


def test_kind_round_trips_on_redis(redis_client) -> None:  # type: ignore[no-untyped-def]
    store = RedisBankStore(redis_client, prefix="test:allow:")
    store.configure_bank("fp", distances={}, description="", kind=BankKind.ALLOW, **WHO)
    assert store.bank("fp").is_allow and not store.bank("banned").is_allow


def test_old_sqlite_bank_file_gains_the_kind_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE banks (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '',"
               " pdq_distance INTEGER, phash_distance INTEGER, dhash_distance INTEGER)")
    db.execute("INSERT INTO banks (name, pdq_distance) VALUES ('old', 12)")
    db.commit()
    db.close()
    with SqliteBankStore(path) as store:
        assert store.bank("old").kind is BankKind.BAN and store.bank("old").distance(Algorithm.PDQ) == 12


# -- end to end: a released photo ---------------------------------------------------


def test_released_photo_is_allowed_but_other_banned_photos_are_not(
    policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier, corpus: corpus_mod.Corpus
) -> None:
    banned = hashes_of(corpus.banned)
    entries, _ = entries_from_hashes(banned, "banned", label="upstream list")
    store.add(entries, actor="importer", reason="list 2026-11")
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)
    assert scanner.scan_path(corpus.banned).action is Action.BLOCK

    allow_photo(store, banned, bank="false_positives", **WHO)
    assert store.bank("false_positives").is_allow
    assert scanner.matcher is not None and scanner.matcher.refresh() > 0
    verdict = scanner.scan_path(corpus.banned)
    assert verdict.action is Action.ALLOW
    assert verdict.reason_codes == ["allow_listed"]
    assert {m.bank for m in verdict.matches} == {"banned", "false_positives"}
    assert all(m.allow == (m.bank == "false_positives") for m in verdict.matches)
    assert verdict.scores, "the model still ran once the ban match was suppressed"
    assert verdict.to_dict()["matches"][0]["allow"] in (True, False)


def test_a_released_photo_beside_a_banned_one_clears_nothing(
    policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier, corpus: corpus_mod.Corpus,
    tmp_path: Path,
) -> None:
    # Both added as `ban add IMAGE` adds them: hashes, derived crops and keypoints.
    def add(path: Path, bank: str) -> None:
        image = decode(path.read_bytes())
        entries, _ = entries_from_hashes(hashes_of(path), bank, label=path.name, derived=derive(image.frames[0]),
                                         features=banned_features(image.frames[0]))
        store.add(entries, **WHO)

    released_photo = corpus.clean["coffee"]
    store.configure_bank("false_positives", distances={}, description="", kind=BankKind.ALLOW, **WHO)
    add(released_photo, "false_positives")
    add(corpus.banned, "banned")
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)
    assert scanner.scan_path(released_photo).action is Action.ALLOW

    left, right = Image.open(corpus.banned).convert("RGB"), Image.open(released_photo).convert("RGB")
    right = right.resize((round(right.width * left.height / right.height), left.height))
    collage = Image.new("RGB", (left.width + right.width, left.height))
    collage.paste(left, (0, 0))
    collage.paste(right, (left.width, 0))
    path = tmp_path / "collage.jpg"
    collage.save(path, quality=90)
    verdict = scanner.scan_path(path)
    assert verdict.action is Action.BLOCK, [r.text for r in verdict.reasons]
    assert any(m.allow for m in verdict.matches), "the released photo was found, and cleared nothing"


def test_a_gif_of_a_released_photo_and_a_banned_one_is_blocked(
    policy: Policy, store: SqliteBankStore, classifier: OpenNsfwClassifier, corpus: corpus_mod.Corpus,
    tmp_path: Path,
) -> None:
    released_photo = corpus.clean["coffee"]
    allow_photo(store, hashes_of(released_photo), bank="false_positives", **WHO)
    entries, _ = entries_from_hashes(hashes_of(corpus.banned), "banned", label="upstream list")
    store.add(entries, **WHO)
    scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)
    first, second = Image.open(released_photo).convert("RGB"), Image.open(corpus.banned).convert("RGB")
    second = second.resize(first.size)
    path = tmp_path / "two.gif"
    first.save(path, save_all=True, append_images=[second], duration=500, loop=0)
    assert scanner.scan_bytes(path.read_bytes()).action is Action.BLOCK
    # Each frame alone: the released one is allowed, the banned one blocked.
    first.save(tmp_path / "one.gif")
    assert scanner.scan_path(tmp_path / "one.gif").action is Action.ALLOW


def test_allow_photo_refuses_a_ban_bank(store: SqliteBankStore, corpus: corpus_mod.Corpus) -> None:
    hashes = hashes_of(corpus.banned)
    entries, _ = entries_from_hashes(hashes, "banned")
    store.add(entries, **WHO)
    with pytest.raises(ValueError, match="ban bank"):
        allow_photo(store, hashes, bank="banned", **WHO)
