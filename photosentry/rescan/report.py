"""The rescan report: one row per input entry, appended and flushed as each one ends.

Being append-only and flushed per row, the report is also the record of what is done:
after a SIGKILL every complete line is a finished item, a half-written last line is
cut off on resume, and the checkpoint (:mod:`.checkpoint`) only needs a watermark.

Rows are the same in both formats and both modes (JSON Lines keeps lists as lists;
CSV joins them with ``;``)::

    key             order key: the path under the folder, or the manifest line number
    source          the path that was read (or sent to a worker)
    upload_id       the manifest's upload id ("" for folders and plain lines)
    status          scanned | cached (verdict cache hit) | missing | invalid
    action          allow | quarantine | block ("" when there was nothing to decide)
    reasons         reason codes, most severe first (missing, invalid_entry for those rows)
    detail          the first reason in words
    score           the highest model score, if the model ran
    matches         bank matches as bank#entry:algorithm:distance
    sha256          of the bytes that were decided on
    policy_version, bank_version, profile
    dry_run         true when nothing was moved
    run             the rescan's run id
    at              when the row was written (UTC)
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from ..worker.verdict import Verdict
from .source import Item

FIELDS = ("key", "source", "upload_id", "status", "action", "reasons", "detail", "score", "matches", "sha256",
          "policy_version", "bank_version", "profile", "dry_run", "run", "at")
FORMATS = ("jsonl", "csv")

MISSING = "missing"
"""Reason code of a row whose file does not exist: never an allow, nothing to move."""
INVALID_ENTRY = "invalid_entry"
"""Reason code of a manifest line that cannot be used (bad JSON, no path ...)."""


class Status(str, Enum):
    """How a row's verdict came about."""

    #: Scanned now.
    SCANNED = "scanned"
    #: Same bytes, bank version, policy version and models as a cached verdict: not scanned again.
    CACHED = "cached"
    #: The file was not there.
    MISSING = "missing"
    #: The manifest line could not be used.
    INVALID = "invalid"


def format_for(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """``explicit``, else ``csv`` for a ``.csv`` report, else ``jsonl``."""
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"report format must be one of {FORMATS}, got {explicit!r}")
        return explicit
    return "csv" if str(path).lower().endswith(".csv") else "jsonl"


def verdict_row(item: Item, verdict: Verdict, *, run: str, dry_run: bool) -> dict[str, Any]:
    """The row of an item that got a verdict (from a scan, the cache or a worker)."""
    scores = [s.score for s in verdict.scores]
    return _row(
        item,
        status=Status.CACHED if verdict.cache_hit else Status.SCANNED,
        action=verdict.action.value,
        reasons=verdict.reason_codes,
        detail=verdict.reasons[0].text if verdict.reasons else "",
        score=round(max(scores), 6) if scores else None,
        matches=[f"{m.bank}#{m.entry_id}:{m.algorithm.value}:{m.distance}" for m in verdict.matches],
        sha256=verdict.hashes.sha256 if verdict.hashes is not None else "",
        policy_version=verdict.policy_version,
        bank_version=verdict.bank_version,
        profile=verdict.profile,
        run=run,
        dry_run=dry_run,
    )


def missing_row(item: Item, detail: str, *, run: str, dry_run: bool) -> dict[str, Any]:
    return _row(item, status=Status.MISSING, action="", reasons=[MISSING], detail=detail, run=run, dry_run=dry_run)


def invalid_row(item: Item, *, run: str, dry_run: bool) -> dict[str, Any]:
    return _row(item, status=Status.INVALID, action="", reasons=[INVALID_ENTRY], detail=item.error or "",
                run=run, dry_run=dry_run)


def _row(item: Item, *, status: Status, action: str, reasons: list[str], detail: str, run: str, dry_run: bool,
         score: float | None = None, matches: list[str] | None = None, sha256: str = "", policy_version: str = "",
         bank_version: Any = None, profile: str = "") -> dict[str, Any]:
    return {
        "key": item.key_text,
        "source": item.source,
        "upload_id": item.upload_id or "",
        "status": status.value,
        "action": action,
        "reasons": reasons,
        "detail": " ".join(detail.split())[:500],  # one physical line per row, in both formats
        "score": score,
        "matches": matches or [],
        "sha256": sha256,
        "policy_version": policy_version,
        "bank_version": bank_version,
        "profile": profile,
        "dry_run": dry_run,
        "run": run,
        "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class ReportWriter:
    """Appends rows to the report, flushing each one."""

    def __init__(self, path: str | os.PathLike[str], fmt: str) -> None:
        self.path = Path(path)
        self.format = format_for(path, fmt)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = self.path.open("a", encoding="utf-8", newline="")
        self.rows = 0
        if self.format == "csv" and new:
            self._fh.write(_csv_line(list(FIELDS)))
            self._fh.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        if self.format == "csv":
            line = _csv_line([_csv_value(row.get(f)) for f in FIELDS])
        else:
            line = json.dumps({f: row.get(f) for f in FIELDS}, separators=(",", ":"), ensure_ascii=False) + "\n"
        self._fh.write(line)
        self._fh.flush()  # a killed process loses at most the row being written
        self.rows += 1

    def sync(self) -> None:
        """fsync, so a checkpoint written next never covers rows a crash could lose."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def drop_partial_line(path: str | os.PathLike[str]) -> int:
    """Cut a last line that has no newline (a row being written when the process was
    killed); returns the bytes removed."""
    p = Path(path)
    if not p.exists():
        return 0
    size = p.stat().st_size
    if size == 0:
        return 0
    with p.open("rb+") as fh:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl != -1:
                keep = pos - step + nl + 1
                break
            pos -= step
        else:
            keep = 0
        if keep < size:
            fh.truncate(keep)
    return size - keep


def read_rows(path: str | os.PathLike[str], fmt: str) -> Iterator[dict[str, Any]]:
    """The complete rows of a report, one at a time (streamed, never loaded whole)."""
    p = Path(path)
    if not p.exists():
        return
    with p.open("r", encoding="utf-8", newline="") as fh:
        if format_for(p, fmt) == "csv":
            for row in csv.DictReader(fh):
                yield dict(row)
            return
        for line in fh:
            if line.endswith("\n") and line.strip():
                yield json.loads(line)
