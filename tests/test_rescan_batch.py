"""`rescan --local` in batches: a pool task is several photos and one batched model run,
yet every photo is reported exactly once with the verdict it would get alone, a dead
process costs no photo its verdict, and a kill mid-batch resumes cleanly.

Real photos, a real bank, spawned pool processes running the real model.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

from photosentry import defaults
from photosentry.hashes.banks import SqliteBankStore
from photosentry.rescan.local import LocalBackend, LocalSettings
from photosentry.rescan.runner import Finished, upload_id_for
from photosentry.rescan.source import open_source

from .corpus import Corpus
from .test_pipeline import ban
from .test_rescan_e2e import (
    TREE,
    _kill_group,
    build_tree,
    by_key,
    complete_rows,
    env,  # noqa: F401 - the fixture
    expected,
    rescan,
    rows_of,
    start_rescan,
    stored,
    wait_until,
)

NAMES = {f"r{i}/{rel.replace('/', '-')}": spec for i in range(2) for rel, spec in TREE.items()}


def test_pool_tasks_are_batches_and_a_dead_process_costs_no_photo_its_verdict(
    tmp_path: Path, corpus: Corpus
) -> None:
    root = build_tree(corpus, tmp_path / "uploads", NAMES)
    home = tmp_path / "home"
    home.mkdir()
    with SqliteBankStore(home / defaults.BANK_DB_FILENAME) as store:
        ban(store, corpus.banned)
    items = list(open_source(str(root)).items())
    settings = LocalSettings(source_roots=(str(root),), data_dir=str(home), batch_size=3)
    backend = LocalBackend(settings, processes=1, run_id="t", dry_run=True, default_context={})
    finished: list[Finished] = []
    try:
        backend.start()
        assert (backend.batch_size, backend.capacity) == (3, 6)
        for item in items[:4]:
            backend.submit(item, upload_id_for("t", item))
        assert [len(batch) for batch in backend._tasks.values()] == [3] and backend.in_flight() == 4
        # The process dies under its batch (as under a crashing decoder): every photo of the
        # batch is tried again alone, and only attempts alone count towards giving up.
        first_pool = backend._pool
        (pid,) = first_pool._processes  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        for item in items[4:]:
            while backend.in_flight() >= backend.capacity:
                finished += backend.collect(0.2)
            backend.submit(item, upload_id_for("t", item))
        deadline = time.monotonic() + 120
        while backend.in_flight() and time.monotonic() < deadline:
            finished += backend.collect(0.2)
        assert backend._pool is not first_pool  # the death was seen and a new pool started
    finally:
        backend.close()
    assert Counter(str(f.row["key"]) for f in finished) == Counter(list(NAMES))
    assert by_key([f.row for f in finished]) == expected(NAMES)  # none ended scan_failed
    assert all(f.row["dry_run"] for f in finished)


def test_batched_local_rescan_killed_mid_batch_resumes_exactly_once(
    env: dict[str, str], corpus: Corpus, tmp_path: Path  # noqa: F811
) -> None:
    env = {k: v for k, v in env.items() if k != "PHOTOSENTRY_REDIS_URL"}  # the embedded bank, no cache
    home = Path(env["PHOTOSENTRY_HOME"])
    home.mkdir(parents=True)
    with SqliteBankStore(home / defaults.BANK_DB_FILENAME) as store:
        ban(store, corpus.banned)
    names = {f"r{i}/{rel.replace('/', '-')}": spec for i in range(6) for rel, spec in TREE.items()}
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]), names)
    report = tmp_path / "report.jsonl"
    args = [str(root), "--report", str(report), "-n", "1", "--batch", "4"]
    # --rate keeps the run long enough to be killed in the middle; batches still fill,
    # since the one process is busy while the next photos arrive.
    proc = start_rescan(env, *args, "--rate", "12", log=tmp_path / "first.log")
    try:
        wait_until(lambda: complete_rows(report) >= 3 or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        _kill_group(proc)
    before = complete_rows(report)
    assert 3 <= before < len(names)
    rescan(env, *args, "--resume", check_rc=1)
    rows = rows_of(report)
    assert Counter(str(r["key"]) for r in rows) == Counter(list(names)), "every photo exactly once"
    assert by_key(rows) == expected(names)
    assert stored(home, "blocked") == 1 and stored(home, "quarantine") == 2  # same bytes: stored once
    assert not [p for p in root.rglob("*") if p.is_file() and ("banned" in p.name or "truncated" in p.name)]


def test_batch_option_is_checked_and_documented(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    done = rescan(env, str(tmp_path), "--batch", "0", "--report", str(tmp_path / "r.jsonl"))
    assert done.returncode == 2 and "--batch" in done.stderr
    text = rescan(env, "--help", check_rc=0).stdout
    assert "--batch N" in text and f"Default: {defaults.SCAN_BATCH_GPU}" in text
