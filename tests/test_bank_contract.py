"""The bank store contract: every backend passes the same tests (DESIGN.md, "Banks").

Each test runs once per backend, SQLite and Redis (a private redis-server, see
tests/redis_server.py). A few Redis-only tests at the end cover what SQLite has no
equivalent of: clients with and without ``decode_responses``, and key prefixes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import redis

from photosentry.errors import BankNotFound, InvalidHash
from photosentry.hashes import banks
from photosentry.hashes.banks import (
    BankConfig,
    BankStore,
    ChangeOp,
    EntrySource,
    NewEntry,
    SqliteBankStore,
)
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.codecs import Algorithm
from photosentry.hashes.matcher import BankMatcher
from photosentry.hashes.signals import SIGNALS, FrameHashes, ImageHashes, PerceptualHash

#: (backend, location): a SQLite file path or a Redis URL. Plain strings, so that
#: processes started with 'spawn' can open the same backend.
BackendSpec = tuple[str, str]
OpenStore = Callable[[], BankStore]

#: Allowance for clock granularity: Redis stamps changes with its own clock, in microseconds.
CLOCK_SLACK_S = 1e-3
CONCURRENT_WRITERS = 4
CONCURRENT_HASHES = 50


def fake_hash(algorithm: Algorithm, n: int) -> str:
    """A valid, deterministic hash value for ``algorithm`` (never degenerate in practice)."""
    digest = hashlib.sha256(f"{algorithm.value}-{n}".encode()).hexdigest()
    return (digest * (algorithm.bits // 256 + 1))[: algorithm.bits // 4]  # ORB keypoints are kilobytes


def entry(n: int, bank: str = "banned", algorithm: Algorithm = Algorithm.SHA256, **kw: object) -> NewEntry:
    return NewEntry(algorithm, fake_hash(algorithm, n), bank, **kw)  # type: ignore[arg-type]


def flip_bits(value: str, count: int) -> str:
    """``value`` with its lowest ``count`` bits inverted (Hamming distance ``count``)."""
    width = len(value)
    return format(int(value, 16) ^ ((1 << count) - 1), f"0{width}x")


def _open(spec: BackendSpec) -> tuple[BankStore, Callable[[], None]]:
    kind, location = spec
    # Through the factory every caller uses, so the contract covers what they get.
    if kind == "sqlite":
        s = banks.open_store(sqlite=location)
        return s, s.close
    client = redis.Redis.from_url(location)
    return banks.open_store(redis=client), client.close


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendSpec:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "banks.sqlite3"))
    request.getfixturevalue("redis_client")  # flushes the database for this test
    return ("redis", request.getfixturevalue("redis_server"))


@pytest.fixture
def open_store(backend: BackendSpec) -> Iterator[OpenStore]:
    """Opens another store object on the same backend, each on its own connection."""
    closers: list[Callable[[], None]] = []

    def open_one() -> BankStore:
        s, close = _open(backend)
        closers.append(close)
        return s

    yield open_one
    for close in closers:
        close()


@pytest.fixture
def bank_store(open_store: OpenStore) -> BankStore:
    return open_store()


# -- entries ---------------------------------------------------------------------


def test_add_then_get_round_trips_every_field(bank_store: BankStore) -> None:
    value = fake_hash(Algorithm.PDQ, 1)
    new = NewEntry(
        Algorithm.PDQ, value.upper(), "csam", label="ünïcode \"label\" / ✓", source=EntrySource.IMPORT, group="img-7"
    )
    before = time.time()
    (added,) = bank_store.add([new], actor="alice@example", reason="from list \\ 2024/05 \"q\"")
    after = time.time()

    assert added.id >= 1
    assert added.algorithm is Algorithm.PDQ
    assert added.value == value  # normalized to lowercase
    assert (added.bank, added.label, added.group) == ("csam", "ünïcode \"label\" / ✓", "img-7")
    assert (added.added_by, added.reason) == ("alice@example", "from list \\ 2024/05 \"q\"")
    assert added.source is EntrySource.IMPORT
    assert before - CLOCK_SLACK_S <= added.added_at <= after + CLOCK_SLACK_S
    assert added.active is True
    assert (added.removed_by, added.removed_at, added.removed_reason) == (None, None, None)
    assert added.tagged == f"pdq:{value}"
    assert bank_store.get(added.id) == added
    assert bank_store.get(added.id).to_dict() == added.to_dict()


def test_every_algorithm_round_trips(bank_store: BankStore) -> None:
    added = bank_store.add([entry(1, algorithm=a) for a in Algorithm], actor="a", reason="r")
    assert [(e.algorithm, e.value) for e in added] == [(a, fake_hash(a, 1)) for a in Algorithm]
    assert [bank_store.get(e.id) for e in added] == added


def test_active_duplicate_is_merged_without_a_new_version(bank_store: BankStore) -> None:
    (first,) = bank_store.add([entry(1, label="first")], actor="alice", reason="r1")
    version = bank_store.version()

    again = bank_store.add([entry(1, label="second"), entry(1)], actor="bob", reason="r2")

    assert again == [first, first]  # the existing entry, label and author unchanged
    assert bank_store.version() == version
    assert [e.id for e in bank_store.entries()] == [first.id]


def test_duplicate_key_is_bank_algorithm_and_value(bank_store: BankStore) -> None:
    value = fake_hash(Algorithm.SHA256, 1)  # PDQ and SHA-256 are both 64 hex digits
    added = bank_store.add(
        [
            NewEntry(Algorithm.SHA256, value, "a"),
            NewEntry(Algorithm.SHA256, value, "b"),
            NewEntry(Algorithm.PDQ, value, "a"),
        ],
        actor="a",
        reason="r",
    )
    assert len({e.id for e in added}) == 3
    assert bank_store.version() == 3


def test_remove_is_a_soft_delete_with_its_audit_fields(bank_store: BankStore) -> None:
    kept, gone = bank_store.add([entry(1), entry(2)], actor="alice", reason="banned")
    before = time.time()
    (removed,) = bank_store.remove([gone.id], actor="bob", reason="false positive")
    after = time.time()

    assert removed.active is False
    assert (removed.removed_by, removed.removed_reason) == ("bob", "false positive")
    assert removed.removed_at is not None and before - CLOCK_SLACK_S <= removed.removed_at <= after + CLOCK_SLACK_S
    # Who added it and why is kept for audit.
    assert replace(removed, active=True, removed_by=None, removed_at=None, removed_reason=None) == gone
    assert bank_store.get(gone.id) == removed
    assert [e.id for e in bank_store.entries()] == [kept.id]
    assert [e.id for e in bank_store.entries(include_removed=True)] == [kept.id, gone.id]


def test_readding_a_removed_hash_creates_a_new_entry(bank_store: BankStore) -> None:
    (old,) = bank_store.add([entry(1)], actor="a", reason="r")
    bank_store.remove([old.id], actor="a", reason="mistake")
    (new,) = bank_store.add([entry(1)], actor="a", reason="it was right after all")
    assert new.id != old.id and new.active
    assert bank_store.get(old.id).active is False
    assert bank_store.add([entry(1)], actor="a", reason="r") == [new]


def test_removing_a_removed_entry_changes_nothing(bank_store: BankStore) -> None:
    (e,) = bank_store.add([entry(1)], actor="alice", reason="r")
    (first,) = bank_store.remove([e.id], actor="bob", reason="first")
    version = bank_store.version()

    assert bank_store.remove([e.id, e.id], actor="carol", reason="second") == [first, first]
    assert bank_store.version() == version
    assert bank_store.get(e.id) == first


def test_unknown_id_raises_bank_not_found_and_changes_nothing(bank_store: BankStore) -> None:
    (e,) = bank_store.add([entry(1)], actor="a", reason="r")
    version = bank_store.version()
    with pytest.raises(BankNotFound, match="999"):
        bank_store.get(999)
    with pytest.raises(BankNotFound, match="999"):
        bank_store.remove([999], actor="a", reason="r")
    with pytest.raises(BankNotFound, match="999"):
        bank_store.remove([e.id, 999], actor="a", reason="r")
    assert bank_store.get(e.id).active
    assert bank_store.version() == version


def test_empty_writes_change_nothing(bank_store: BankStore) -> None:
    assert bank_store.add([], actor="a", reason="r") == []
    assert bank_store.remove([], actor="a", reason="r") == []
    assert bank_store.version() == 0


# -- versions and the change log -------------------------------------------------


def test_every_change_bumps_the_version_and_is_logged_in_order(bank_store: BankStore) -> None:
    assert bank_store.version() == 0
    assert bank_store.changes_since(0) == []

    a, b = bank_store.add([entry(1), entry(2, bank="other")], actor="alice", reason="r1")
    bank_store.add([entry(1)], actor="alice", reason="duplicate: no change")
    bank_store.remove([a.id], actor="bob", reason="r2")
    bank_store.remove([a.id], actor="bob", reason="again: no change")
    bank_store.configure_bank("csam", distances={}, description="", actor="carol", reason="r3")

    changes = bank_store.changes_since(0)
    assert [(c.op, c.entry_id, c.bank, c.actor, c.reason) for c in changes] == [
        (ChangeOp.ADD, a.id, "banned", "alice", "r1"),
        (ChangeOp.ADD, b.id, "other", "alice", "r1"),
        (ChangeOp.REMOVE, a.id, "banned", "bob", "r2"),
        (ChangeOp.BANK, None, "csam", "carol", "r3"),
    ]
    versions = [c.version for c in changes]
    assert all(v1 < v2 for v1, v2 in zip(versions, versions[1:]))
    assert versions[-1] == bank_store.version()
    assert [c.at for c in changes] == sorted(c.at for c in changes)
    for i, c in enumerate(changes):
        assert bank_store.changes_since(c.version) == changes[i + 1 :]
    assert bank_store.changes_since(bank_store.version() + 10) == []


# -- listing ---------------------------------------------------------------------


def test_entries_filter_by_bank_group_and_removal_in_id_order(bank_store: BankStore) -> None:
    a1, b1, a2, a3, b2 = bank_store.add(
        [entry(1, "a", group="g"), entry(2, "b", group="g"), entry(3, "a"), entry(4, "a", group="g"), entry(5, "b")],
        actor="x",
        reason="r",
    )
    bank_store.remove([a3.id], actor="x", reason="r")

    def ids(**kw: object) -> list[int]:
        return [e.id for e in bank_store.entries(**kw)]  # type: ignore[arg-type]

    assert ids() == [a1.id, b1.id, a2.id, b2.id]
    assert ids(include_removed=True) == [a1.id, b1.id, a2.id, a3.id, b2.id]
    assert ids(bank="a") == [a1.id, a2.id]
    assert ids(bank="a", include_removed=True) == [a1.id, a2.id, a3.id]
    assert ids(group="g") == [a1.id, b1.id]
    assert ids(group="g", include_removed=True) == [a1.id, b1.id, a3.id]
    assert ids(bank="b", group="g") == [b1.id]
    assert ids(group="") == [a2.id, b2.id]  # "" is "no group", not "any group"
    assert ids(bank="nope") == []
    assert ids(group="nope") == []


def test_entries_pages_through_many_entries_in_id_order(bank_store: BankStore) -> None:
    added = bank_store.add([entry(n) for n in range(1100)], actor="x", reason="r")
    removed = {e.id for e in added[::7]}
    bank_store.remove(sorted(removed), actor="x", reason="r")

    assert [e.id for e in bank_store.entries()] == [e.id for e in added if e.id not in removed]
    assert [e.id for e in bank_store.entries(include_removed=True)] == [e.id for e in added]


# -- banks -----------------------------------------------------------------------


def test_configure_bank_stores_distances_and_falls_back_to_defaults(bank_store: BankStore) -> None:
    cfg = bank_store.configure_bank(
        "csam", distances={Algorithm.PDQ: 20, Algorithm.PHASH: 4}, description="industry list", actor="a", reason="r"
    )
    assert cfg == BankConfig("csam", {Algorithm.PDQ: 20, Algorithm.PHASH: 4}, "industry list")
    assert bank_store.bank("csam") == cfg
    assert cfg.distance(Algorithm.PDQ) == 20
    assert cfg.distance(Algorithm.DHASH) == SIGNALS[Algorithm.DHASH].default_distance
    assert cfg.distance(Algorithm.SHA256) == 0

    # Reconfiguring replaces the whole set: PDQ goes back to its default.
    cfg = bank_store.configure_bank("csam", distances={Algorithm.DHASH: 5}, description="", actor="a", reason="r")
    assert cfg == BankConfig("csam", {Algorithm.DHASH: 5}, "")
    assert cfg.distance(Algorithm.PDQ) == SIGNALS[Algorithm.PDQ].default_distance


@pytest.mark.parametrize(
    ("name", "distances", "error"),
    [
        ("csam", {Algorithm.SHA256: 1}, InvalidHash),
        ("csam", {Algorithm.MD5: 0}, InvalidHash),
        ("csam", {Algorithm.PDQ: 128}, ValueError),
        ("csam", {Algorithm.PHASH: 32}, ValueError),
        ("csam", {Algorithm.DHASH: -1}, ValueError),
        ("not a name", {}, ValueError),
        ("", {}, ValueError),
    ],
)
def test_configure_bank_rejects_bad_input(
    bank_store: BankStore, name: str, distances: dict[Algorithm, int], error: type[Exception]
) -> None:
    with pytest.raises(error):
        bank_store.configure_bank(name, distances=distances, description="", actor="a", reason="r")
    assert bank_store.version() == 0
    assert bank_store.banks() == []


def test_configure_bank_accepts_the_largest_distance(bank_store: BankStore) -> None:
    largest = {Algorithm.PDQ: 127, Algorithm.PHASH: 31, Algorithm.DHASH: 31}
    cfg = bank_store.configure_bank("b", distances=largest, description="", actor="a", reason="r")
    assert cfg.distances == largest


def test_banks_lists_banks_configured_or_written_to(bank_store: BankStore) -> None:
    assert bank_store.banks() == []
    (e,) = bank_store.add([entry(1, "moderation")], actor="a", reason="r")
    bank_store.configure_bank("csam", distances={Algorithm.PDQ: 10}, description="d", actor="a", reason="r")
    bank_store.remove([e.id], actor="a", reason="r")  # a bank once written to stays listed

    assert bank_store.banks() == [BankConfig("csam", {Algorithm.PDQ: 10}, "d"), BankConfig("moderation")]
    assert bank_store.bank("moderation") == BankConfig("moderation")
    assert bank_store.bank("never-seen") == BankConfig("never-seen")


# -- validation ------------------------------------------------------------------

MISSING_AUDIT = [("", "r"), ("a", ""), ("  ", "r"), ("a", " \t")]


@pytest.mark.parametrize(("actor", "reason"), MISSING_AUDIT)
def test_every_write_needs_an_actor_and_a_reason(bank_store: BankStore, actor: str, reason: str) -> None:
    (e,) = bank_store.add([entry(1)], actor="a", reason="r")
    with pytest.raises(ValueError, match="--by|--reason"):
        bank_store.add([entry(2)], actor=actor, reason=reason)
    with pytest.raises(ValueError, match="--by|--reason"):
        bank_store.remove([e.id], actor=actor, reason=reason)
    with pytest.raises(ValueError, match="--by|--reason"):
        bank_store.configure_bank("b", distances={}, description="", actor=actor, reason=reason)
    assert bank_store.version() == 1
    assert bank_store.get(e.id).active


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        (Algorithm.PDQ, "abc"),
        (Algorithm.SHA256, "g" * 64),
        (Algorithm.PHASH, "0" * 16),
        (Algorithm.MD5, "f" * 32),
        (Algorithm.DHASH, fake_hash(Algorithm.PDQ, 1)),
    ],
)
def test_invalid_hash_is_rejected_before_reaching_the_store(
    bank_store: BankStore, algorithm: Algorithm, value: str
) -> None:
    with pytest.raises(InvalidHash):
        bank_store.add([entry(1), NewEntry(algorithm, value, "banned")], actor="a", reason="r")
    with pytest.raises(ValueError, match="bank name"):
        NewEntry(Algorithm.SHA256, fake_hash(Algorithm.SHA256, 1), "no spaces")
    assert bank_store.version() == 0
    assert list(bank_store.entries(include_removed=True)) == []


# -- store identity ------------------------------------------------------------------


def test_store_id_is_stable_across_connections_and_writes(open_store: OpenStore) -> None:
    first = open_store()
    store_id = first.store_id()
    assert len(store_id) == 32 and int(store_id, 16) >= 0
    first.add([entry(1)], actor="a", reason="r")
    assert open_store().store_id() == store_id == first.store_id()


def test_another_store_has_another_id(backend: BackendSpec, open_store: OpenStore, tmp_path: Path) -> None:
    ours = open_store().store_id()
    kind, location = backend
    if kind == "sqlite":
        # A deleted and recreated file is another store, even at the same path.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(location + suffix):
                os.remove(location + suffix)
        other, close = _open(backend)
    else:
        client = redis.Redis.from_url(location)
        other, close = RedisBankStore(client, prefix="other:"), client.close
    try:
        assert other.store_id() != ours
    finally:
        close()


# -- a matcher follows writes made through another connection ----------------------


def test_matcher_refresh_applies_changes_from_another_store(open_store: OpenStore) -> None:
    reader, writer = open_store(), open_store()
    (old,) = writer.add([entry(1)], actor="a", reason="r")
    matcher = BankMatcher(reader)
    assert matcher.size == 1

    pdq_value = fake_hash(Algorithm.PDQ, 1)
    pdq, sha = writer.add([entry(1, algorithm=Algorithm.PDQ), entry(2)], actor="b", reason="r")
    writer.remove([old.id], actor="b", reason="r")
    writer.configure_bank("banned", distances={Algorithm.PDQ: 10}, description="", actor="b", reason="r")

    assert matcher.refresh() == 4
    assert matcher.version == writer.version() == reader.version()
    assert matcher.size == 2
    assert matcher.bank("banned").distance(Algorithm.PDQ) == 10

    def photo(sha256: str, pdq_hex: str) -> ImageHashes:
        ph = PerceptualHash(Algorithm.PDQ, pdq_hex, (pdq_hex,), quality=100)
        return ImageHashes(sha256, fake_hash(Algorithm.MD5, 99), (FrameHashes(0, (ph,)),))

    matches = matcher.match(photo(fake_hash(Algorithm.SHA256, 2), flip_bits(pdq_value, 3)))
    assert [(m.entry_id, m.distance) for m in matches] == [(sha.id, 0), (pdq.id, 3)]
    # The removed entry no longer matches, and the new bank distance (10) applies.
    assert matcher.match(photo(fake_hash(Algorithm.SHA256, 1), flip_bits(pdq_value, 12))) == []
    assert matcher.refresh() == 0


# -- concurrent writers ------------------------------------------------------------


def _add_same_hashes(spec: BackendSpec, start: Barrier, results: multiprocessing.Queue[list[int]]) -> None:
    """Runs in a spawned process: add the shared hashes one change at a time."""
    store, close = _open(spec)
    try:
        start.wait(timeout=60)
        ids = [
            store.add([entry(n, bank="race")], actor=f"worker-{os.getpid()}", reason="race")[0].id
            for n in range(CONCURRENT_HASHES)
        ]
        results.put(ids)
    finally:
        close()


@pytest.mark.timeout(180)
def test_concurrent_writers_merge_duplicates(backend: BackendSpec, open_store: OpenStore) -> None:
    store = open_store()  # SQLite: creates the schema before the writers race for it
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(CONCURRENT_WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_add_same_hashes, args=(backend, start, results)) for _ in range(CONCURRENT_WRITERS)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=150) for _ in procs]
    except queue.Empty:
        pytest.fail(f"a writer process died: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()

    assert [p.exitcode for p in procs] == [0] * CONCURRENT_WRITERS
    assert all(ids == got[0] for ids in got), "every writer must see the same entry per hash"
    active = list(store.entries(bank="race"))
    assert len(active) == CONCURRENT_HASHES
    assert [e.id for e in active] == sorted(got[0])
    changes = store.changes_since(0)
    versions = [c.version for c in changes]
    assert len(changes) == CONCURRENT_HASHES and len(set(versions)) == CONCURRENT_HASHES
    assert versions == sorted(versions) and versions[-1] == store.version()
    assert sorted(c.entry_id for c in changes if c.entry_id is not None) == sorted(got[0])


# -- Redis only ------------------------------------------------------------------


def test_redis_accepts_clients_with_and_without_decoding(redis_server: str, redis_client: redis.Redis) -> None:
    with redis.Redis.from_url(redis_server, decode_responses=True) as decoding:
        raw, text = RedisBankStore(redis_client), RedisBankStore(decoding)
        (a,) = text.add([entry(1, label="ü", group="g")], actor="ä", reason="r")
        (b,) = raw.add([entry(2, algorithm=Algorithm.PDQ)], actor="a", reason="r")
        raw.remove([a.id], actor="ö", reason="ß")
        text.configure_bank("banned", distances={Algorithm.PDQ: 9}, description="é", actor="a", reason="r")

        for store in (raw, text):
            assert store.get(a.id).removed_by == "ö"
            assert list(store.entries(include_removed=True, group="g")) == [raw.get(a.id)]
            assert store.bank("banned") == BankConfig("banned", {Algorithm.PDQ: 9}, "é")
        assert list(raw.entries()) == list(text.entries()) == [b]
        assert raw.changes_since(0) == text.changes_since(0)
        assert [c.actor for c in raw.changes_since(0)] == ["ä", "a", "ö", "a"]


def test_redis_prefixes_separate_stores_and_hold_every_key(redis_client: redis.Redis) -> None:
    one = RedisBankStore(redis_client, prefix="one:")
    two = RedisBankStore(redis_client)
    one.add([entry(1, group="g")], actor="a", reason="r")
    one.configure_bank("b", distances={}, description="", actor="a", reason="r")
    two.add([entry(1), entry(2)], actor="a", reason="r")

    assert [e.id for e in one.entries()] == [1]
    assert [e.id for e in two.entries()] == [1, 2]
    assert (one.version(), two.version()) == (2, 2)
    keys = [k.decode() for k in redis_client.scan_iter()]
    assert keys and all(k.startswith(("one:", "photosentry:bank:")) for k in keys)
    # Plain strings: what an operator sees with redis-cli.
    assert redis_client.hget("one:entry:1", "value") == fake_hash(Algorithm.SHA256, 1).encode()


# -- the factory -----------------------------------------------------------------


def test_open_store_picks_the_backend_and_refuses_ambiguous_arguments(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    with banks.open_store(sqlite=tmp_path / "b.sqlite3") as store:
        assert isinstance(store, SqliteBankStore) and store.path == tmp_path / "b.sqlite3"
    shared = banks.open_store(redis=redis_client, prefix="p:")
    assert isinstance(shared, RedisBankStore) and shared.prefix == "p:"
    assert banks.open_store(redis=redis_client).prefix == "photosentry:bank:"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="exactly one"):
        banks.open_store()
    with pytest.raises(ValueError, match="exactly one"):
        banks.open_store(redis=redis_client, sqlite=tmp_path / "c.sqlite3")
    with pytest.raises(ValueError, match="prefix"):
        banks.open_store(sqlite=tmp_path / "c.sqlite3", prefix="p:")
    assert not (tmp_path / "c.sqlite3").exists()


def test_importing_the_banks_package_leaves_redis_py_unloaded() -> None:
    # The CLI and scans that use only the SQLite bank never pay for redis-py.
    import subprocess
    import sys

    code = ("import sys, photosentry.hashes.banks as b; assert 'redis' not in sys.modules;"
            " b.RedisBankStore; assert 'redis' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_keypoint_entries_are_read_apart_and_leave_with_their_removal(bank_store: BankStore) -> None:
    # A matcher that loaded its hashes from a snapshot reads image bans' keypoints alone.
    added = bank_store.add([entry(n, algorithm=a, group=f"image{n}") for n in (1, 2) for a in Algorithm],
                           actor="a", reason="r")
    orb = [e for e in added if e.algorithm is Algorithm.ORB]
    read = [(i, v, b) for ids, values, banks in bank_store.active_columns(Algorithm.ORB)
            for i, v, b in zip(ids, values, banks, strict=True)]
    assert read == [(e.id, e.value, e.bank) for e in orb]
    # With their groups: one image ban's two sets are one photo to the keypoint index.
    read_groups = [(i, v, b, g) for ids, values, banks, groups in bank_store.active_features(chunk=1)
                   for i, v, b, g in zip(ids, values, banks, groups, strict=True)]
    assert read_groups == [(e.id, e.value, e.bank, e.group) for e in orb]
    bank_store.remove([orb[0].id], actor="a", reason="r")
    assert [i for ids, _, _ in bank_store.active_columns(Algorithm.ORB) for i in ids] == [orb[1].id]
    assert [i for ids, _, _, _ in bank_store.active_features() for i in ids] == [orb[1].id]
