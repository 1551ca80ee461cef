"""The rescan driver: input in order, a bounded window in flight, rows out, checkpoints.

Both backends (:mod:`.local`, :mod:`.remote`) take items and hand back
:class:`Finished` rows in any order. The driver:

- streams the input, skipping what a resumed run already reported and what is
  older than ``--since``;
- keeps at most ``capacity`` items in flight and at most ``window`` items between
  the watermark and the newest one started, so memory stays flat for any input size;
- starts at most ``--rate`` items a second (a token bucket);
- writes each row (flushed), then runs its act (the move), then advances the
  watermark, and saves the checkpoint about once a second;
- on the first Ctrl-C (or SIGTERM) stops starting items, lets the local pool finish
  the few in flight (queued jobs just stay queued), saves the checkpoint and says how
  to resume; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import defaults
from ..worker.payload import MAX_UPLOAD_ID_LEN
from .checkpoint import Checkpoint, OrderWindow, ResumeState
from .ratelimit import TokenBucket
from .report import ReportWriter, invalid_row
from .source import FolderSource, Item, ManifestSource, S3PrefixSource, resolve_entry
from .summary import Summary


@dataclass(frozen=True)
class Finished:
    """One item's report row, and the move to make once the row is written."""

    item: Item
    row: dict[str, Any]
    act: Callable[[], None] | None = field(default=None, repr=False)


class Backend(Protocol):
    capacity: int
    #: True: on Ctrl-C, wait for the items in flight (a local pool, seconds at most).
    #: False: leave them (queued jobs finish anyway; a resume reads their verdicts).
    drains_on_stop: bool

    def start(self) -> None: ...
    def submit(self, item: Item, upload_id: str) -> None: ...
    def in_flight(self) -> int: ...
    def collect(self, timeout: float) -> list[Finished]: ...
    def close(self, *, cancel: bool = False) -> None: ...


def upload_id_for(run_id: str, item: Item) -> str:
    """The upload id a rescanned item is decided under.

    ``rescan:<run id>:<the manifest's upload id>``, or, without one,
    ``rescan:<run id>:path:<sha256 of the path>``. Workers record one verdict per
    upload id and replay it for a repeat, so the original id would only bring back the
    first scan's verdict; a new run id gets a fresh verdict, while a resumed run keeps
    its run id and never decides the same item twice.
    """
    base = item.upload_id or f"path:{hashlib.sha256(item.source.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}"
    uid = f"rescan:{run_id}:{base}"
    if len(uid) > MAX_UPLOAD_ID_LEN:
        uid = f"rescan:{run_id}:sha256:{hashlib.sha256(base.encode()).hexdigest()[:40]}"
    return uid


@dataclass
class Outcome:
    """How a run ended."""

    interrupted: bool
    complete: bool
    summary: Summary


class Driver:
    """Runs one rescan invocation; see the module docstring."""

    def __init__(
        self,
        *,
        source: FolderSource | ManifestSource | S3PrefixSource,
        backend: Backend,
        writer: ReportWriter,
        checkpoint: Checkpoint,
        checkpoint_file: Path,
        resume: ResumeState | None = None,
        since: float | None = None,
        stat_roots: Sequence[str] = (),
        rate: float | None = None,
        window: int | None = None,
        progress: bool | None = None,
        checkpoint_every_s: float = defaults.RESCAN_CHECKPOINT_INTERVAL_S,
        stderr: Any = None,
    ) -> None:
        self.source = source
        self.backend = backend
        self.writer = writer
        self.checkpoint = checkpoint
        self.checkpoint_file = checkpoint_file
        self.resume = resume
        self.since = since
        self.stat_roots = tuple(stat_roots)
        self.bucket = TokenBucket(rate) if rate else None
        self.window_limit = window or max(defaults.RESCAN_MIN_WINDOW, 4 * backend.capacity)
        self.window = OrderWindow(resume.watermark if resume else checkpoint.watermark_key())
        self.progress = progress
        self.checkpoint_every_s = checkpoint_every_s
        self.stderr = stderr or sys.stderr
        self.summary = Summary()
        self.summary.settled = 0
        self._stop = threading.Event()
        self._signals = 0
        self._last_checkpoint = 0.0
        self._bar: Any = None

    # -- the run -----------------------------------------------------------------------

    def run(self) -> Outcome:
        exhausted = False
        interrupted = False
        old = self._install_signals()
        self._bar = self._new_bar()
        counter = self._start_counting()
        try:
            for item in self.source.items():
                if self._stop.is_set():
                    break
                if not self._admit(item):
                    continue
                if item.error is not None:
                    self.window.add(item.key)
                    self._done([Finished(item, invalid_row(item, run=self.checkpoint.run_id,
                                                           dry_run=self.checkpoint.dry_run))])
                    continue
                if not self._wait_for_room():
                    break
                self.window.add(item.key)
                self.backend.submit(item, upload_id_for(self.checkpoint.run_id, item))
                self._done(self.backend.collect(0))
                self._maybe_checkpoint()
            else:
                exhausted = True
            while self.window and not (self._stop.is_set() and not self.backend.drains_on_stop):
                self._done(self.backend.collect(0.2))
                self._maybe_checkpoint()
                if self._signals > 1:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            interrupted = interrupted or self._stop.is_set()
            self.backend.close(cancel=self._signals > 1 or (interrupted and not self.backend.drains_on_stop))
            self._restore_signals(old)
            complete = exhausted and not self.window
            self._save_checkpoint(complete=complete)
            self.summary.stop()
            if counter is not None:
                counter.cancel()
            if self._bar is not None:
                if complete:
                    self._bar.total = self._bar.n
                    self._bar.refresh()
                self._bar.close()
        return Outcome(interrupted=interrupted and not complete, complete=complete, summary=self.summary)

    def _admit(self, item: Item) -> bool:
        """False for an item this invocation skips (already reported, or older than --since)."""
        if self.resume is not None and self.resume.is_done(item.key):
            self.summary.already_done += 1
            self._tick()
            return False
        if self.since is not None and item.error is None and not self._recent(item):
            self.summary.filtered += 1
            self._tick()
            return False
        return True

    def _recent(self, item: Item) -> bool:
        stamp = item.timestamp
        if stamp is None and isinstance(self.source, ManifestSource):
            try:
                stamp = os.stat(resolve_entry(item.source, self.stat_roots)).st_mtime
            except OSError:
                return True  # cannot tell (missing, or not visible here): scan and report it
        return stamp is None or stamp >= self.since  # type: ignore[operator]

    def _wait_for_room(self) -> bool:
        """Block (collecting results) until another item may start; False if stopping."""
        while (self.backend.in_flight() >= self.backend.capacity or len(self.window) >= self.window_limit):
            if self._stop.is_set():
                return False
            self._done(self.backend.collect(0.2))
            self._maybe_checkpoint()
        if self.bucket is not None:
            while not self.bucket.take():
                if self._stop.is_set():
                    return False
                self._done(self.backend.collect(min(self.bucket.wait_time(), 0.2)))
                self._maybe_checkpoint()
        return not self._stop.is_set()

    def _done(self, finished: list[Finished]) -> None:
        for f in finished:
            self.writer.write(f.row)
            if f.act is not None:
                f.act()  # after the row: an interruption in between is settled on resume
            self.window.finish(f.item.key)
            self.summary.add(f.row)
            self._tick()

    # -- checkpoint, progress, signals ----------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_every_s:
            self._save_checkpoint(complete=False)

    def _save_checkpoint(self, *, complete: bool) -> None:
        self.writer.sync()  # rows first: the watermark may only cover rows on disk
        self.checkpoint.set_watermark(self.window.watermark)
        self.checkpoint.rows = (self.resume.rows if self.resume else 0) + self.writer.rows
        self.checkpoint.complete = complete
        self.checkpoint.save(self.checkpoint_file)
        self._last_checkpoint = time.monotonic()

    def _new_bar(self) -> Any:
        from tqdm import tqdm

        # disable=None: shown on a terminal, silent when stderr is a file or a pipe.
        disable = None if self.progress is None else not self.progress
        return tqdm(total=None, unit="photo", dynamic_ncols=True, file=self.stderr, disable=disable,
                    smoothing=0.05, desc="rescan")

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _start_counting(self) -> threading.Timer | None:
        """Count the input in the background, for the bar's total and ETA."""
        if self._bar is None or self._bar.disable:
            return None

        def count() -> None:
            try:
                total = self.source.count()
            except OSError:
                return
            if self._bar is not None and not self._bar.disable:
                self._bar.total = total
                self._bar.refresh()

        timer = threading.Timer(0.0, count)
        timer.daemon = True
        timer.start()
        return timer

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _restore_signals(self, old: dict[int, Any]) -> None:
        for s, handler in old.items():
            signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            self._stop.set()
            what = ("finishing the photos in flight" if self.backend.drains_on_stop
                    else "queued jobs stay queued; their verdicts are read on resume")
            print(f"\nstopping: {what} (Ctrl-C again to stop at once)", file=self.stderr, flush=True)
            return
        raise KeyboardInterrupt
