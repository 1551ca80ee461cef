"""Where a rescan stands: a small JSON file next to the report, and what resuming reads.

The report is the record of work done (one flushed row per finished item). The
checkpoint adds what the report cannot say on its own:

- the run's settings (source, mode, run id, dry run, force, since, context, format),
  so ``--resume`` continues the same run and refuses to mix in another one;
- a *watermark*: an order key (:mod:`.source`) such that every selected item up to it
  has its row. It is written (atomically, after an fsync of the report) about once a
  second, so resuming never has to hold the keys of millions of finished items: only
  the rows written after the last checkpoint, a window's worth, are read into memory.

Resuming: cut a half-written last row, read the rows past the watermark into a set,
then stream the input again and skip every item up to the watermark or in the set.
Each input entry therefore ends up in the report exactly once.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .report import drop_partial_line, read_rows
from .source import OrderKey

CHECKPOINT_VERSION = 1
SUFFIX = ".checkpoint.json"


def checkpoint_path(report: str | os.PathLike[str]) -> Path:
    """The checkpoint of a report: ``<report>.checkpoint.json`` beside it."""
    return Path(f"{os.fspath(report)}{SUFFIX}")


@dataclass
class Checkpoint:
    """The settings of one rescan run and how far it got."""

    run_id: str
    mode: str
    source: dict[str, Any]
    report_format: str
    dry_run: bool = False
    force: bool = False
    since: float | None = None
    context: dict[str, Any] = field(default_factory=dict)
    source_roots: list[str] = field(default_factory=list)
    #: Every selected item with an order key up to this one has its row (None: none yet).
    watermark: Any = None
    #: Rows in the report when this was written.
    rows: int = 0
    complete: bool = False
    started_at: str = ""
    updated_at: str = ""
    version: int = CHECKPOINT_VERSION

    # -- the watermark as an order key -------------------------------------------------

    def watermark_key(self) -> OrderKey | None:
        w = self.watermark
        if w is None:
            return None
        return tuple(w) if isinstance(w, list) else int(w)

    def set_watermark(self, key: OrderKey | None) -> None:
        self.watermark = list(key) if isinstance(key, tuple) else key

    # -- file --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temporary file, fsync, rename): a kill leaves the old one or the new one."""
        self.updated_at = _now()
        if not self.started_at:
            self.started_at = self.updated_at
        target = Path(path)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(self), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Checkpoint":
        """Raises ValueError for a file that is not a checkpoint this version can read."""
        try:
            raw = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the checkpoint {os.fspath(path)!r}: {exc}") from exc
        if not isinstance(raw, Mapping) or raw.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{os.fspath(path)!r} is not a version {CHECKPOINT_VERSION} rescan checkpoint")
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ValueError(f"{os.fspath(path)!r} is not a complete rescan checkpoint: {exc}") from exc


@dataclass
class ResumeState:
    """What the report says is already done, past the checkpoint's watermark."""

    watermark: OrderKey | None
    #: Order keys of rows written after the watermark (finished out of order, or after
    #: the last checkpoint). Small: at most a window's worth plus about a second of rows.
    done_ahead: set[Any]
    #: Complete rows in the report.
    rows: int
    #: Rows past the watermark whose action moves the photo: the move may not have
    #: happened before the kill, so it is applied again (it is idempotent).
    unsettled: list[dict[str, Any]]
    #: Bytes of a half-written last row that were cut off.
    cut_bytes: int = 0

    def is_done(self, key: OrderKey) -> bool:
        if self.watermark is not None and key <= self.watermark:  # type: ignore[operator]
            return True
        return key in self.done_ahead


def read_resume_state(report: str | os.PathLike[str], checkpoint: Checkpoint,
                      key_of: Callable[[Any], OrderKey]) -> ResumeState:
    """Cut a half-written last row and collect the rows past the watermark."""
    cut = drop_partial_line(report)
    watermark = checkpoint.watermark_key()
    ahead: set[Any] = set()
    unsettled: list[dict[str, Any]] = []
    rows = 0
    for row in read_rows(report, checkpoint.report_format):
        rows += 1
        key = key_of(row["key"])
        if watermark is not None and key <= watermark:  # type: ignore[operator]
            continue
        ahead.add(key)
        if row.get("action") in ("quarantine", "block"):
            unsettled.append(row)
    return ResumeState(watermark, ahead, rows, unsettled, cut)


class OrderWindow:
    """Items in flight, in input order, and the watermark behind them.

    The driver never lets more than ``capacity`` items sit between the watermark and
    the newest one submitted (see :attr:`full`), which bounds both the memory of a
    run and what a resume must read back.
    """

    def __init__(self, watermark: OrderKey | None = None) -> None:
        self.watermark = watermark
        self._order: deque[Any] = deque()
        self._finished: set[Any] = set()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: OrderKey) -> None:
        self._order.append(key)

    def finish(self, key: OrderKey) -> None:
        self._finished.add(key)
        while self._order and self._order[0] in self._finished:
            done = self._order.popleft()
            self._finished.discard(done)
            self.watermark = done

    def extend_finished(self, keys: Iterable[OrderKey]) -> None:
        for key in keys:
            self.finish(key)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
