"""Rescan building blocks without a model: input order, manifests, report, checkpoint, rate."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pytest

from photosentry.rescan.checkpoint import Checkpoint, OrderWindow, checkpoint_path, read_resume_state
from photosentry.rescan.ratelimit import TokenBucket
from photosentry.rescan.report import ReportWriter, drop_partial_line, read_rows, verdict_row
from photosentry.rescan.runner import upload_id_for
from photosentry.rescan.source import FolderSource, Item, ManifestSource, parse_line, parse_time
from photosentry.enqueue import build_payload
from photosentry.worker.payload import MAX_UPLOAD_ID_LEN, PayloadError, ScanPayload, check_upload_id
from photosentry.worker.verdict import Verdict


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_walk_is_in_order_key_order_and_new_files_fall_into_place(tmp_path: Path) -> None:
    for rel in ("b.jpg", "a/z.jpg", "a.jpg", "a/b/c.jpg", "c/d.jpg", "A.jpg"):
        touch(tmp_path / rel)
    (tmp_path / "link-to-a").symlink_to(tmp_path / "a")  # a symlinked folder is an entry, not a subtree
    keys = [item.key for item in FolderSource(tmp_path).items()]
    assert keys == sorted(keys)
    assert [i.key_text for i in FolderSource(tmp_path).items()] == [
        "A.jpg", "a/b/c.jpg", "a/z.jpg", "a.jpg", "b.jpg", "c/d.jpg", "link-to-a"]
    assert FolderSource(tmp_path).count() == 7
    # A photo added after an interruption sits between its neighbours; later keys do not shift.
    touch(tmp_path / "a/m.jpg")
    after = [i.key for i in FolderSource(tmp_path).items()]
    assert after == sorted(after) and after.index(("a", "m.jpg")) == 2


def test_manifest_lines_plain_json_comments_and_errors() -> None:
    assert parse_line(1, b"\n") is None
    assert parse_line(2, b"  # a comment\n") is None
    plain = parse_line(3, b"2026/11/a.jpg\n")
    assert plain == Item(3, "2026/11/a.jpg")
    rich = parse_line(4, b'{"path": "b.jpg", "upload_id": "u-1", "context": {"recipient_age": 15},'
                         b' "timestamp": "2026-11-02T10:00:00Z"}\n')
    assert rich is not None and rich.error is None
    assert (rich.source, rich.upload_id, dict(rich.context)) == ("b.jpg", "u-1", {"recipient_age": 15})
    assert rich.timestamp == parse_time("2026-11-02T10:00:00+00:00")
    bad = {
        b'{"path": "x.jpg", "context": {"a": [1]}}': "context values",
        b'{"upload_id": "u"}': "needs \"path\"",
        b'{"path": "x.jpg", "colour": "red"}': "unknown fields",
        b'{"path": "x.jpg", "timestamp": "yesterday"}': "not an ISO 8601 date",
        b"{not json": "not valid JSON",
        b"\xff\xfe.jpg": "not UTF-8",
        b"[1, 2]": None,  # a plain path that happens to start with '[' is just a (missing) path
    }
    for raw, message in bad.items():
        item = parse_line(9, raw)
        assert item is not None
        if message is None:
            assert item.error is None
        else:
            assert item.error is not None and message in item.error, (raw, item.error)


def test_parse_time_forms() -> None:
    assert parse_time("2026-11-01") == parse_time("2026-11-01T00:00:00Z") == parse_time(1793491200)
    assert parse_time("2026-11-01T02:00:00+02:00") == parse_time("2026-11-01")
    for bad in ("", "soon", None, True, float("nan")):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_a_big_manifest_is_streamed_not_loaded(tmp_path: Path) -> None:
    manifest = tmp_path / "big.txt"
    lines = 200_000
    with manifest.open("w") as fh:
        for i in range(lines):
            fh.write(f"photos/{i:09d}/some-long-folder-name/and-a-long-file-name-{i}.jpg\n")
    size = manifest.stat().st_size
    source = ManifestSource(manifest)
    assert source.count() == lines
    tracemalloc.start()
    try:
        n = sum(1 for _ in source.items())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == lines
    assert peak < size / 10, f"reading a {size}-byte manifest peaked at {peak} bytes"


def test_upload_ids_are_stable_per_run_and_valid() -> None:
    a = Item(("x.jpg",), "/srv/x.jpg")
    assert upload_id_for("run1", a) == upload_id_for("run1", a)
    assert upload_id_for("run1", a) != upload_id_for("run2", a)
    assert upload_id_for("run1", Item(1, "x.jpg", upload_id="u-8812")) == "rescan:run1:u-8812"
    long = upload_id_for("run1", Item(1, "x.jpg", upload_id="u" * MAX_UPLOAD_ID_LEN))
    assert len(long) <= MAX_UPLOAD_ID_LEN and check_upload_id(long) == long


def _row(key: object, action: str = "allow") -> dict:
    item = Item(key if isinstance(key, int) else tuple(str(key).split("/")), f"/p/{key}")  # type: ignore[arg-type]
    verdict = Verdict.from_dict({"action": action, "reasons": [{"code": "clean", "action": action,
                                                                "text": "t\nwith newline"}],
                                 "hashes": {"sha256": "ab", "md5": "cd"}})
    return verdict_row(item, verdict, run="r", dry_run=False)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_report_rows_round_trip_and_a_half_written_row_is_cut(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"report.{fmt}"
    writer = ReportWriter(path, fmt)
    for key in ("a.jpg", "b/c.jpg"):
        writer.write(_row(key))
    writer.close()
    with path.open("ab") as fh:
        fh.write(b'{"key":"half' if fmt == "jsonl" else b"d.jpg,/p/d.jp")  # killed mid-write
    assert drop_partial_line(path) > 0
    rows = list(read_rows(path, fmt))
    assert [r["key"] for r in rows] == ["a.jpg", "b/c.jpg"]
    assert rows[0]["detail"] == "t with newline"  # one physical line per row
    assert drop_partial_line(path) == 0
    writer = ReportWriter(path, fmt)  # appending keeps the one CSV header
    writer.write(_row("e.jpg"))
    writer.close()
    assert [r["key"] for r in read_rows(path, fmt)] == ["a.jpg", "b/c.jpg", "e.jpg"]


def test_order_window_watermark_only_passes_finished_items() -> None:
    w = OrderWindow()
    for k in (1, 2, 3, 4):
        w.add(k)
    w.finish(2)
    w.finish(4)
    assert w.watermark is None and len(w) == 4
    w.finish(1)
    assert w.watermark == 2 and len(w) == 2
    w.finish(3)
    assert w.watermark == 4 and len(w) == 0


def test_resume_state_reads_only_rows_past_the_watermark(tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report, "jsonl")
    for key, action in ((1, "allow"), (2, "allow"), (3, "block"), (5, "quarantine"), (4, "allow")):
        writer.write(_row(key, action))
    writer.close()
    cp = Checkpoint(run_id="r", mode="local", source={"kind": "manifest"}, report_format="jsonl")
    cp.set_watermark(2)
    cp.save(checkpoint_path(report))
    loaded = Checkpoint.load(checkpoint_path(report))
    assert loaded.watermark_key() == 2
    state = read_resume_state(report, loaded, int)
    assert state.rows == 5 and state.done_ahead == {3, 4, 5}
    assert [r["key"] for r in state.unsettled] == [3, 5]
    assert all(state.is_done(k) for k in (1, 2, 3, 4, 5)) and not state.is_done(6)


def test_checkpoint_rejects_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.checkpoint.json"
    bad.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="not a version 1"):
        Checkpoint.load(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        Checkpoint.load(bad)
    assert not list(tmp_path.glob(".x*"))  # no temporary files left behind by saves
    os.remove(bad)


def test_token_bucket_paces_starts() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        bucket.acquire()
    # 4 saved up at the start, then one every 0.25 s.
    assert now[0] == pytest.approx(2.0)
    now[0] += 100  # a long pause saves up at most one second's worth
    assert sum(bucket.take() for _ in range(10)) == 4
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_payload_dry_run_and_force_flags() -> None:
    plain = build_payload(source="a.jpg", upload_id="u-1")
    assert "dry_run" not in plain and "force" not in plain  # ordinary jobs keep their shape
    flagged = build_payload(source="a.jpg", upload_id="u-1", dry_run=True, force=True)
    assert flagged["dry_run"] is True and flagged["force"] is True
    parsed = ScanPayload.from_dict(flagged)
    assert parsed.dry_run and parsed.force
    with pytest.raises(PayloadError, match="dry_run must be true or false"):
        ScanPayload.from_dict({**plain, "dry_run": "yes"})
