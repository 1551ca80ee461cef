"""`photosentry rescan` end to end: real photos, a real redis-server, real worker processes.

Local mode runs its own process pool; queue mode enqueues on the bulk queue and follows
the bulk verdict stream while `photosentry worker` processes scan. Interrupted runs (SIGKILL,
Ctrl-C) are resumed and every photo must be in the report exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from photosentry import enqueue_scan
from photosentry.rescan.report import read_rows

from .corpus import Corpus
from . import workers
from .workers import PHOTOSENTRY, log_tail, pool_started, start_pool, stop_pool

DEADLINE_S = 90.0

#: name in the tree -> (corpus photo, expected action, expected first reason)
TREE = {
    "2026/01/clean-coffee.jpg": ("clean:coffee", "allow", "clean"),
    "2026/01/clean-astronaut.jpg": ("clean:astronaut", "allow", "clean"),
    "2026/02/banned-copy.jpg": ("copies:resized_half", "block", "bank_match"),
    "2026/02/truncated.jpg": ("hostile:unreadable", "quarantine", "unreadable"),
    "notes.jpg": ("hostile:not_an_image", "quarantine", "not_an_image"),
}


def corpus_file(corpus: Corpus, ref: str) -> Path:
    group, name = ref.split(":")
    return getattr(corpus, group)[name]


def build_tree(corpus: Corpus, root: Path, names: dict[str, tuple[str, str, str]] = TREE) -> Path:
    for rel, (ref, _, _) in names.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus_file(corpus, ref), target)
    return root


@pytest.fixture
def env(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "uploads"
    root.mkdir()
    out = {**os.environ, "PHOTOSENTRY_REDIS_URL": redis_server, "PHOTOSENTRY_HOME": str(tmp_path / "home"),
           "PHOTOSENTRY_SOURCE_ROOTS": str(root)}
    out.pop("PHOTOSENTRY_POLICY", None)
    return out


@pytest.fixture
def banned(env: dict[str, str], corpus: Corpus) -> None:
    """The corpus's banned photo is in the shared Redis bank (as a moderator would add it)."""
    subprocess.run([PHOTOSENTRY, "ban", "add", str(corpus.banned), "--by", "mod", "--reason", "rescan test"],
                   env=env, check=True, capture_output=True)


@pytest.fixture
def pool(env: dict[str, str], tmp_path: Path, redis_client: redis.Redis) -> Iterator[subprocess.Popen[bytes]]:
    """One long-running worker process (listening on uploads, then bulk)."""
    log = tmp_path / "worker.log"
    proc = start_pool(env, log, "--processes", "1", "--threads", "1", "--log-format", "text")
    try:
        assert pool_started(proc, redis_client, 1, DEADLINE_S), log_tail(log)
        yield proc
    finally:
        stop_pool(proc)


#: Every wait here gives up after DEADLINE_S unless it says otherwise.
wait_until = partial(workers.wait_until, timeout=DEADLINE_S)


def rescan(env: dict[str, str], *args: str, check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PHOTOSENTRY, "rescan", *args], env=env, capture_output=True, text=True,
                          timeout=DEADLINE_S)
    if check_rc is not None:
        assert done.returncode == check_rc, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def start_rescan(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    try:
        return subprocess.Popen([PHOTOSENTRY, "rescan", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        fh.close()


def rows_of(report: Path) -> list[dict[str, Any]]:
    fmt = "csv" if report.suffix == ".csv" else "jsonl"
    return list(read_rows(report, fmt))


def complete_rows(report: Path) -> int:
    if not report.exists():
        return 0
    return report.read_bytes().count(b"\n")


def by_key(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    out = {}
    for row in rows:
        reasons = row["reasons"].split(";") if isinstance(row["reasons"], str) else row["reasons"]
        out[str(row["key"])] = (row["action"], reasons[0])
    return out


def expected(names: dict[str, tuple[str, str, str]] = TREE) -> dict[str, tuple[str, str]]:
    return {rel: (action, reason) for rel, (_, action, reason) in names.items()}


def stored(home: Path, store: str) -> int:
    return sum(1 for _ in (home / store).glob("*/*/content")) if (home / store).exists() else 0


# -- local -------------------------------------------------------------------------------


def test_local_rescan_decides_reports_and_moves_like_a_worker(
    env: dict[str, str], corpus: Corpus, banned: None, tmp_path: Path
) -> None:
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]))
    report = tmp_path / "out" / "report.jsonl"
    done = rescan(env, str(root), "--report", str(report), "-n", "2", check_rc=1)
    rows = rows_of(report)
    assert by_key(rows) == expected() and len(rows) == len(TREE)
    assert {r["status"] for r in rows} == {"scanned"} and not any(r["dry_run"] for r in rows)
    banned_row = next(r for r in rows if r["key"] == "2026/02/banned-copy.jpg")
    assert banned_row["matches"] and banned_row["matches"][0].startswith("banned#")
    # Flagged photos were moved into the stores, as a worker moves them; allowed ones stay.
    home = Path(env["PHOTOSENTRY_HOME"])
    assert stored(home, "blocked") == 1 and stored(home, "quarantine") == 2
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg")) == [
        "2026/01/clean-astronaut.jpg", "2026/01/clean-coffee.jpg"]
    # The summary table: counts per action and reason, time, rate.
    assert "block       bank_match                     1" in done.stdout
    assert "5 photos reported" in done.stdout and "photos/s" in done.stdout
    checkpoint = json.loads((tmp_path / "out" / "report.jsonl.checkpoint.json").read_text())
    assert checkpoint["complete"] and checkpoint["rows"] == 5


def test_manifest_with_missing_unreadable_and_invalid_entries_is_reported_not_fatal(
    env: dict[str, str], corpus: Corpus, tmp_path: Path
) -> None:
    env = {k: v for k, v in env.items() if k != "PHOTOSENTRY_REDIS_URL"}  # the embedded SQLite bank, no cache
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]))
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "pipe.jpg")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("\n".join([
        "# exported 2026-11-22",
        "2026/01/clean-coffee.jpg",
        "2026/02/truncated.jpg",
        "2026/03/gone.jpg",
        str(root / "2026/01/clean-astronaut.jpg"),
        "",
        '{"path": "2026/01/clean-coffee.jpg", "upload_id": "u-77", "context": {"recipient_age": 12}}',
        '{"path": 5}',
        "{broken json",
        "fifo/pipe.jpg",
        str(tmp_path / "outside.jpg"),
    ]) + "\n")
    (tmp_path / "outside.jpg").write_bytes(corpus.clean["camera"].read_bytes())
    report = tmp_path / "report.csv"
    done = rescan(env, str(manifest), "--source-root", str(root), "--report", str(report), "-n", "1",
                  "--dry-run", check_rc=1)
    rows = {int(r["key"]): r for r in rows_of(report)}
    assert sorted(rows) == [2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert (rows[2]["action"], rows[2]["status"]) == ("allow", "scanned")
    assert (rows[3]["action"], rows[3]["reasons"]) == ("quarantine", "unreadable")
    assert (rows[4]["status"], rows[4]["action"], rows[4]["reasons"]) == ("missing", "", "missing")
    assert rows[5]["action"] == "allow"
    assert (rows[7]["upload_id"], rows[7]["profile"]) == ("u-77", "minors")
    for n in (8, 9):
        assert (rows[n]["status"], rows[n]["reasons"]) == ("invalid", "invalid_entry")
    assert (rows[10]["action"], rows[10]["reasons"]) == ("quarantine", "source_refused")  # not a regular file
    assert (rows[11]["action"], rows[11]["reasons"]) == ("quarantine", "source_refused")  # outside the roots
    assert "missing" in done.stdout and "invalid_entry" in done.stdout
    # --local needs to know where a manifest's paths may lie.
    no_roots = {k: v for k, v in env.items() if k != "PHOTOSENTRY_SOURCE_ROOTS"}
    refused = rescan(no_roots, str(manifest), "--report", str(tmp_path / "again.jsonl"))
    assert refused.returncode == 2 and "--source-root" in refused.stderr


def test_verdict_cache_skips_unchanged_photos_unless_forced_and_since_filters(
    env: dict[str, str], corpus: Corpus, banned: None, tmp_path: Path
) -> None:
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]))
    old = time.time() - 400 * 86400
    os.utime(root / "2026/01/clean-coffee.jpg", (old, old))
    first, second, forced = (tmp_path / f"{n}.jsonl" for n in ("first", "second", "forced"))
    rescan(env, str(root), "--report", str(first), "-n", "1", "--dry-run", check_rc=1)
    rescan(env, str(root), "--report", str(second), "-n", "1", "--dry-run", check_rc=1)
    assert by_key(rows_of(second)) == by_key(rows_of(first)) == expected()
    assert Counter(r["status"] for r in rows_of(second)) == {"cached": 5}
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 30 * 86400))
    done = rescan(env, str(root), "--report", str(forced), "-n", "1", "--dry-run", "--force", "--since", since,
                  check_rc=1)
    rows = rows_of(forced)
    assert "2026/01/clean-coffee.jpg" not in by_key(rows) and len(rows) == 4
    assert {r["status"] for r in rows} == {"scanned"}
    assert "1 older than --since" in done.stdout


def test_resume_after_sigkill_reports_every_photo_exactly_once(
    env: dict[str, str], corpus: Corpus, banned: None, tmp_path: Path
) -> None:
    names = {f"batch/{i:02d}-{rel.replace('/', '-')}": spec for i in range(2) for rel, spec in TREE.items()}
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]), names)
    report = tmp_path / "report.jsonl"
    args = [str(root), "--report", str(report), "-n", "1"]
    proc = start_rescan(env, *args, "--rate", "4", log=tmp_path / "first.log")
    try:
        wait_until(lambda: complete_rows(report) >= 3 or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)  # the CLI itself, mid-run, no chance to clean up
        proc.wait(10)
    finally:
        _kill_group(proc)
    before = complete_rows(report)
    assert 3 <= before < len(names)

    done = rescan(env, *args, "--resume", check_rc=1)
    rows = rows_of(report)
    keys = Counter(str(r["key"]) for r in rows)
    assert keys == Counter(list(names)), "every photo exactly once"
    assert by_key(rows) == expected(names)
    # Rows of photos still in the tree are skipped (moved ones are no longer walked).
    assert "already reported before this resume" in done.stdout, done.stdout
    home = Path(env["PHOTOSENTRY_HOME"])
    assert stored(home, "blocked") == 1  # the two banned copies are the same bytes: stored once
    assert not [p for p in root.rglob("*") if p.is_file() and ("banned" in p.name or "truncated" in p.name)]
    assert rescan(env, *args, "--resume", check_rc=0).stdout.startswith(f"{report}: this rescan is already complete")


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(
    env: dict[str, str], corpus: Corpus, tmp_path: Path
) -> None:
    names = {f"{i:02d}.jpg": ("clean:coffee", "allow", "clean") for i in range(8)}
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]), names)
    report = tmp_path / "report.jsonl"
    log = tmp_path / "first.log"
    proc = start_rescan(env, str(root), "--report", str(report), "-n", "1", "--rate", "3", log=log)
    try:
        wait_until(lambda: complete_rows(report) >= 2 or proc.poll() is not None)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130, log.read_text()
    finally:
        _kill_group(proc)
    text = log.read_text()
    assert "interrupted" in text and f"--report {report} --resume" in text
    assert not json.loads((tmp_path / "report.jsonl.checkpoint.json").read_text())["complete"]
    first = complete_rows(report)
    assert first < len(names)
    # Options fixed at the start cannot change on resume; the report cannot be reused without --resume.
    assert rescan(env, str(root), "--report", str(report), "--resume", "--dry-run").returncode == 2
    assert rescan(env, str(root), "--report", str(report)).returncode == 2
    rescan(env, str(root), "--report", str(report), "--resume", "-n", "1", check_rc=0)
    assert Counter(str(r["key"]) for r in rows_of(report)) == Counter(list(names))


# -- queue -------------------------------------------------------------------------------


def test_queue_mode_gives_the_local_results_and_dry_run_moves_nothing(
    env: dict[str, str], corpus: Corpus, banned: None, pool: subprocess.Popen[bytes], tmp_path: Path,
    redis_client: redis.Redis
) -> None:
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]))
    files = sorted(p for p in root.rglob("*") if p.is_file())
    local, queued, real = (tmp_path / f"{n}.jsonl" for n in ("local", "queued", "real"))
    rescan(env, str(root), "--report", str(local), "-n", "1", "--dry-run", "--force", check_rc=1)
    for key in redis_client.scan_iter("photosentry:vcache:*"):
        redis_client.delete(key)  # whatever the cache holds next, the forced queue run put there
    rescan(env, str(root), "--queue", "--report", str(queued), "--dry-run", "--force", check_rc=1)
    assert by_key(rows_of(queued)) == by_key(rows_of(local)) == expected()
    assert {r["status"] for r in rows_of(queued)} == {"scanned"}  # --force: the cache the local run filled is bypassed
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files  # a dry run leaves every file in place
    entries = [json.loads(f[b"verdict"]) for _, f in redis_client.xrange("photosentry:verdicts:bulk")]
    assert len(entries) == len(TREE) and all(v["dry_run"] for v in entries)
    assert not redis_client.exists("photosentry:verdicts")  # the uploads stream is left alone
    assert all(v["upload_id"].startswith(f"rescan:{rows_of(queued)[0]['run']}:path:") for v in entries)

    # For real: the workers move the flagged photos; the verdicts come from the cache the
    # forced run filled (--force skips the lookup, not the store).
    rescan(env, str(root), "--queue", "--report", str(real), check_rc=1)
    rows = rows_of(real)
    assert by_key(rows) == expected() and {r["status"] for r in rows} == {"cached"}
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg")) == [
        "2026/01/clean-astronaut.jpg", "2026/01/clean-coffee.jpg"]


def test_queue_rescan_decides_afresh_uploads_already_recorded(
    env: dict[str, str], corpus: Corpus, pool: subprocess.Popen[bytes], tmp_path: Path,
    redis_client: redis.Redis
) -> None:
    root = Path(env["PHOTOSENTRY_SOURCE_ROOTS"])
    shutil.copyfile(corpus.copies["mirrored"], root / "u-1.jpg")
    # The upload was scanned when it arrived, before its photo was banned: allowed.
    enqueue_scan(redis_client, source=str(root / "u-1.jpg"), upload_id="u-1")
    wait_until(lambda: redis_client.get("photosentry:verdicts:recorded:u-1"))
    first = json.loads(redis_client.xrange("photosentry:verdicts")[0][1][b"verdict"])
    assert first["action"] == "allow"
    subprocess.run([PHOTOSENTRY, "ban", "add", str(corpus.banned), "--by", "mod", "--reason", "new list"],
                   env=env, check=True, capture_output=True)

    manifest = tmp_path / "uploads.jsonl"
    manifest.write_text(json.dumps({"path": "u-1.jpg", "upload_id": "u-1"}) + "\n"
                        + json.dumps({"path": "u-2.jpg", "upload_id": "u-2"}) + "\n")
    report = tmp_path / "report.jsonl"
    rescan(env, str(manifest), "--queue", "--source-root", str(root), "--report", str(report), check_rc=1)
    rows = {r["upload_id"]: r for r in rows_of(report)}
    assert (rows["u-1"]["action"], rows["u-1"]["reasons"][0]) == ("block", "bank_match")
    assert rows["u-2"]["status"] == "missing" and rows["u-2"]["action"] == ""
    run = rows["u-1"]["run"]
    # The rescan's verdict and marker are on the bulk stream; the uploads stream still has
    # only the upload's own verdict.
    [(_, fields)] = redis_client.xrange("photosentry:verdicts:bulk")
    assert fields[b"upload_id"].decode() == f"rescan:{run}:u-1"
    assert [f[b"upload_id"] for _, f in redis_client.xrange("photosentry:verdicts")] == [b"u-1"]
    assert redis_client.get(f"photosentry:verdicts:bulk:recorded:rescan:{run}:u-1") is not None
    assert redis_client.get(f"photosentry:verdicts:recorded:rescan:{run}:u-1") is None
    # The rescan's marker lasts a day once reported; the upload's own keeps its 30 days.
    assert 0 < redis_client.ttl(f"photosentry:verdicts:bulk:recorded:rescan:{run}:u-1") <= 24 * 3600
    assert redis_client.ttl("photosentry:verdicts:recorded:u-1") > 24 * 3600
    assert not (root / "u-1.jpg").exists()  # blocked now: moved into the blocked store by the worker


def test_queue_resume_after_sigkill_reports_every_photo_exactly_once(
    env: dict[str, str], corpus: Corpus, pool: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    names = {f"{i:02d}.jpg": ("clean:coffee" if i % 2 else "clean:astronaut", "allow", "clean") for i in range(10)}
    root = build_tree(corpus, Path(env["PHOTOSENTRY_SOURCE_ROOTS"]), names)
    report = tmp_path / "report.jsonl"
    args = [str(root), "--queue", "--report", str(report)]
    proc = start_rescan(env, *args, "--rate", "4", log=tmp_path / "first.log")
    try:
        wait_until(lambda: complete_rows(report) >= 2 or proc.poll() is not None)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        _kill_group(proc)
    assert complete_rows(report) < len(names)
    rescan(env, *args, "--resume", check_rc=0)
    assert Counter(str(r["key"]) for r in rows_of(report)) == Counter(list(names))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever the test left of the rescan's process group (its pool processes)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(10)
