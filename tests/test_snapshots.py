"""Bank snapshots: one store's snapshot is never another's, every matcher loads them,
and a large bank read from the store is saved as one (issue #4)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from photosentry import defaults
from photosentry.cli import cli
from photosentry.decode import Limits, decode
from photosentry.hashes.banks import BankStore, NewEntry, SqliteBankStore
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.codecs import Algorithm
from photosentry.hashes.index import codes_to_hex, hex_to_codes
from photosentry.hashes.matcher import BankMatcher
from photosentry.hashes.signals import FrameHashes, ImageHashes, PerceptualHash, hash_image
from photosentry.hashes.snapshot import latest_snapshot, save_snapshot, snapshot_dir, write_snapshot

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "photos"


def pdq_values(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return codes_to_hex(rng.integers(0, 2**63, size=(n, 4), dtype=np.uint64))


def photo(pdq: str) -> ImageHashes:
    return ImageHashes("0" * 64, "0" * 32, (FrameHashes(0, (PerceptualHash(Algorithm.PDQ, pdq, (pdq,), 100),)),))


def fill(store: BankStore, values: list[str], bank: str) -> None:
    store.add([NewEntry(Algorithm.PDQ, v, bank) for v in values], actor="t", reason="r")


@pytest.fixture(params=["sqlite", "redis"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[BankStore, BankStore]]:
    """Two distinct stores of one backend: two SQLite files, or two prefixes of one Redis."""
    if request.param == "sqlite":
        a, b = SqliteBankStore(tmp_path / "a.sqlite3"), SqliteBankStore(tmp_path / "b.sqlite3")
        yield a, b
        a.close()
        b.close()
    else:
        client: redis.Redis = request.getfixturevalue("redis_client")
        yield RedisBankStore(client, prefix="a:"), RedisBankStore(client, prefix="b:")


def test_a_snapshot_of_another_store_is_never_loaded_even_at_a_lower_version(
    two_stores: tuple[BankStore, BankStore], tmp_path: Path
) -> None:
    a, b = two_stores
    a_values, b_values = pdq_values(1, 5), pdq_values(2, 20)
    fill(a, a_values, "a-bank")
    fill(b, b_values, "b-bank")
    assert a.version() < b.version()
    # The worst case: A's snapshot sits in the very folder B's matcher reads (as in the
    # old shared bank-snapshots/redis folder), at a version B has long passed.
    folder = snapshot_dir(tmp_path / "home", b)
    write_snapshot(a, folder)
    assert latest_snapshot(folder, max_version=b.version(), store_id=b.store_id()) is None
    matcher = BankMatcher(b, snapshot_dir=folder)
    assert matcher.loaded_from == "store" and matcher.size == 20
    assert matcher.match(photo(a_values[0])) == []
    assert [m.bank for m in matcher.match(photo(b_values[0]))] == ["b-bank"]
    # Each store's folder is its own, and B's own snapshot is used.
    assert snapshot_dir(tmp_path / "home", a) != folder
    write_snapshot(b, folder)
    assert BankMatcher(b, snapshot_dir=folder).loaded_from == f"snapshot v{b.version()}"


def test_a_large_bank_read_from_the_store_is_saved_as_a_snapshot(
    store: SqliteBankStore, tmp_path: Path
) -> None:
    values = pdq_values(3, 300)
    fill(store, values[:200], "csam")
    fill(store, values[200:], "other")
    folder = tmp_path / "snaps"
    small = BankMatcher(store, snapshot_dir=folder, auto_snapshot_min=301)
    assert small.loaded_from == "store" and small.wrote_snapshot is None and not folder.exists()

    first = BankMatcher(store, snapshot_dir=folder, auto_snapshot_min=300)
    assert first.loaded_from == "store" and first.wrote_snapshot is not None
    assert first.wrote_snapshot.version == store.version() and first.wrote_snapshot.counts["pdq"] == 300
    fill(store, pdq_values(4, 1), "late")  # replayed from the change log
    second = BankMatcher(store, snapshot_dir=folder, auto_snapshot_min=300)
    assert second.loaded_from == f"snapshot v{first.version}" and second.wrote_snapshot is None
    assert second.size == 301
    for value in (values[0], values[250], pdq_values(4, 1)[0]):
        expected = BankMatcher(store).match(photo(value))
        assert expected and second.match(photo(value)) == expected


def test_a_snapshot_that_cannot_be_written_is_logged_not_raised(
    store: SqliteBankStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(store, pdq_values(5, 10), "csam")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    with caplog.at_level(logging.WARNING, logger="photosentry.hashes.matcher"):
        matcher = BankMatcher(store, snapshot_dir=blocked / "snaps", auto_snapshot_min=1)
    assert matcher.size == 10 and matcher.wrote_snapshot is None
    assert "could not write a bank snapshot" in caplog.text


def test_writers_racing_on_one_version_leave_one_good_snapshot(store: SqliteBankStore, tmp_path: Path) -> None:
    values = pdq_values(6, 50)
    fill(store, values, "csam")
    folder = tmp_path / "snaps"
    matcher = BankMatcher(store)
    ids = np.array([e.id for e in store.entries()], np.int64)
    codes = hex_to_codes([e.value for e in store.entries()], 4)
    columns = {Algorithm.PDQ: (ids, codes, np.zeros(len(ids), np.uint16))}
    store_id, version = store.store_id(), store.version()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def write() -> None:
        start.wait()
        try:
            for _ in range(5):
                save_snapshot(folder, store_id=store_id, version=version, banks=["csam"],
                              columns=columns)
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in folder.iterdir()) == [f"v{store.version():012d}"]
    loaded = BankMatcher(store, snapshot_dir=folder)
    assert loaded.loaded_from == f"snapshot v{store.version()}" and loaded.size == 50
    assert loaded.match(photo(values[7])) == matcher.match(photo(values[7]))


# -- every matcher on the host uses the store's snapshot ------------------------------


def _banned_example(store: BankStore) -> tuple[Path, str]:
    path = sorted(p for p in EXAMPLES.iterdir() if p.is_file())[0]
    data = path.read_bytes()
    decoded = decode(data, Limits())
    hashes = hash_image(data, decoded.frames, decoded.frame_indices)
    pdq = next(ph.value for ph in hashes.frames[0].hashes if ph.algorithm is Algorithm.PDQ)
    fill(store, [pdq], "banned")
    fill(store, pdq_values(7, 30), "other")
    return path, pdq


@pytest.fixture
def private_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private index per process, loaded from the snapshot (the shared index file,
    built from the same snapshot, is tested in test_host_index.py)."""
    monkeypatch.setenv(defaults.SHARED_INDEX_ENV, "0")


def test_scan_loads_the_snapshot(data_dir: Path, private_index: None) -> None:
    with SqliteBankStore(data_dir / defaults.BANK_DB_FILENAME) as store:
        path, _ = _banned_example(store)
        version = store.version()
    runner = CliRunner()
    before = runner.invoke(cli, ["scan", str(path)])
    assert before.exit_code == 1 and "block" in before.output and "loaded from store" in before.output
    assert runner.invoke(cli, ["ban", "snapshot"]).exit_code == 0
    after = runner.invoke(cli, ["scan", str(path)])
    assert after.exit_code == 1 and f"loaded from snapshot v{version}" in after.output
    assert after.output.splitlines()[1] == before.output.splitlines()[1]  # the same verdict row


def test_worker_loads_the_snapshot_of_its_redis_bank(settings, redis_client: redis.Redis, private_index) -> None:  # type: ignore[no-untyped-def]
    from photosentry.worker.service import ScanService

    bank = RedisBankStore(redis_client, prefix=settings.bank_prefix)
    _, pdq = _banned_example(bank)
    folder = snapshot_dir(Path(settings.data_dir), bank)
    write_snapshot(bank, folder)
    service = ScanService(settings, client=redis_client)
    matcher = service.scanner.matcher
    assert matcher.loaded_from == f"snapshot v{bank.version()}" and matcher.size == 31
    assert matcher.match(photo(pdq)) == BankMatcher(bank).match(photo(pdq)) != []


def test_local_rescan_processes_load_the_snapshot(tmp_path: Path, private_index: None) -> None:
    from photosentry.rescan.local import LocalSettings, _PoolWorker

    home = tmp_path / "home"
    with SqliteBankStore(home / defaults.BANK_DB_FILENAME) as store:
        _, pdq = _banned_example(store)
        write_snapshot(store, snapshot_dir(home, store))
        expected = BankMatcher(store).match(photo(pdq))
        version = store.version()
    worker = _PoolWorker(LocalSettings(source_roots=(str(EXAMPLES),), data_dir=str(home)))
    matcher = worker.scanner.matcher
    assert matcher.loaded_from == f"snapshot v{version}"
    assert matcher.match(photo(pdq)) == expected != []
