"""``rescan --queue``: jobs on the bulk queue, verdicts followed on the bulk verdict stream.

Items are enqueued in chunks (one Redis pipeline per chunk, :func:`enqueue_payloads`)
with at most ``capacity`` outstanding, so the bulk queue never holds the whole input
and uploads keep their priority (workers take ``bulk`` only when ``uploads`` is
empty). Every worker host that listens on ``bulk`` shares the work.

Each item is decided under its rescan upload id (:func:`.runner.upload_id_for`), so
a worker that recorded the upload's first verdict long ago still scans it afresh.
Workers record bulk jobs' verdicts on their own stream (``photosentry:verdicts:bulk``,
:func:`~photosentry.worker.stream.stream_for_queue`), so however many photos a rescan
sends, the uploads stream the platform reads is untouched. Verdicts are read from the
bulk stream (``XREAD`` from the entry before the first enqueue). Before a chunk is enqueued, the recorded marker of each id is checked: an
item decided by a job of an interrupted run is reported from its stream entry and
not enqueued again. A periodic sweep covers entries the reader cannot see (trimmed
from the stream: the job's result is used) and jobs that failed without a verdict
(reported ``scan_failed``, fail closed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis

from .. import defaults
from ..enqueue import build_payload, enqueue_payloads
from ..s3.location import is_s3_url
from ..worker.stream import VerdictStream, stream_for_queue
from ..worker.verdict import ReasonCode, Verdict
from .report import missing_row, verdict_row
from .runner import Finished
from .source import Item, resolve_entry

SWEEP_INTERVAL_S = 5.0
"""How often in-flight items are checked directly (recorded marker, job status)."""
IDLE_WARNING_S = 30.0
"""Warn when nothing has come back for this long and no worker listens on the bulk queue."""


@dataclass
class _Pending:
    item: Item
    upload_id: str
    path: str
    job_id: str | None = None
    enqueued_at: float = 0.0


class QueueBackend:
    """Enqueues items on the bulk queue and reads their verdicts back; see the module docstring."""

    drains_on_stop = False

    def __init__(
        self,
        client: redis.Redis,
        *,
        run_id: str,
        dry_run: bool,
        force: bool,
        default_context: dict[str, Any],
        source_roots: Sequence[str] = (),
        capacity: int = defaults.RESCAN_QUEUE_CAPACITY,
        chunk: int = defaults.RESCAN_CHUNK,
        stream: str | None = None,
        job_timeout: int = defaults.JOB_TIMEOUT_S,
        stderr: Any = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.dry_run = dry_run
        self.force = force
        self.default_context = default_context
        # Only folders can be checked here; s3:// items are left to the workers.
        self.roots = tuple(r for r in source_roots if not is_s3_url(r))
        self.capacity = capacity
        self.chunk = chunk
        # The stream workers record bulk-queue jobs on (where this run's verdicts land).
        self.stream = VerdictStream(client, stream=stream or stream_for_queue(defaults.BULK_QUEUE))
        self.job_timeout = job_timeout
        self.stderr = stderr or sys.stderr
        self._last_id = "0-0"
        self._unsent: list[_Pending] = []
        self._flying: dict[str, _Pending] = {}
        self._ready: list[Finished] = []
        self._last_sweep = time.monotonic()
        self._last_result = time.monotonic()
        self._warned_idle = False
        self._reported: list[str] = []

    def start(self) -> None:
        self.client.ping()
        last = self.client.xrevrange(self.stream.stream, count=1)
        # Everything recorded from here on is read; anything older is found by the
        # recorded check before its item is enqueued.
        self._last_id = _text(last[0][0]) if last else "0-0"

    def in_flight(self) -> int:
        return len(self._flying) + len(self._unsent)

    def submit(self, item: Item, upload_id: str) -> None:
        path = item.source
        if self.roots and not is_s3_url(path):
            # This host sees the source roots: a missing file is reported here, without a job.
            path = resolve_entry(item.source, self.roots)
            if not os.path.exists(path):
                self._ready.append(Finished(item, missing_row(item, f"{item.source!r} does not exist",
                                                              run=self.run_id, dry_run=self.dry_run)))
                return
        self._unsent.append(_Pending(item, upload_id, path))
        if len(self._unsent) >= self.chunk:
            self._flush()

    def collect(self, timeout: float) -> list[Finished]:
        if self._unsent and (timeout > 0 or len(self._unsent) >= self.chunk):
            self._flush()
        if not self._ready and self._flying:
            self._read(timeout)
        if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_S:
            self._sweep()
        out, self._ready = self._ready, []
        if out:
            self._last_result = time.monotonic()
            self._shorten_markers()
        else:
            self._check_idle()
        return out

    def close(self, *, cancel: bool = False) -> None:
        # Nothing to stop: jobs already enqueued finish on the workers, and a resume
        # reads their verdicts. Unsent items were never enqueued; a resume sends them.
        self._unsent.clear()
        try:
            self._shorten_markers(force=True)
        except redis.RedisError:
            pass  # they expire after 30 days anyway

    def _shorten_markers(self, *, force: bool = False) -> None:
        """Let the "already recorded" markers of reported items expire in a day, not 30.

        A worker keeps one marker per upload id for 30 days, for retries of uploads. A
        reported rescan item needs its marker only against stray duplicate jobs (the
        report row already stops a resume from sending it again), and ten million
        markers would hold over a gigabyte of Redis for a month.
        """
        if not self._reported or (len(self._reported) < self.chunk and not force):
            return
        batch, self._reported = self._reported, []
        with self.client.pipeline(transaction=False) as pipe:
            for uid in batch:
                for kind in ("recorded", "content-recorded"):
                    pipe.expire(f"{self.stream.stream}:{kind}:{uid}", defaults.RESCAN_RECORD_TTL_S)
            pipe.execute()

    # -- enqueue ---------------------------------------------------------------------

    def _flush(self) -> None:
        batch, self._unsent = self._unsent, []
        if not batch:
            return
        decided = self._recorded([p.upload_id for p in batch])
        to_send: list[_Pending] = []
        for pending in batch:
            verdict = decided.get(pending.upload_id)
            if verdict is not None:
                self._ready.append(self._row(pending, verdict))
            else:
                to_send.append(pending)
        if not to_send:
            return
        payloads = [
            build_payload(source=p.path, upload_id=p.upload_id, context={**self.default_context, **p.item.context},
                          dry_run=self.dry_run, force=self.force)
            for p in to_send
        ]
        job_ids = enqueue_payloads(self.client, payloads, queue=defaults.BULK_QUEUE, job_timeout=self.job_timeout)
        now = time.monotonic()
        for pending, job_id in zip(to_send, job_ids, strict=True):
            pending.job_id, pending.enqueued_at = job_id, now
            self._flying[pending.upload_id] = pending

    def _recorded(self, upload_ids: list[str]) -> dict[str, Verdict]:
        """Verdicts already on the stream for these upload ids (a resumed run's items)."""
        with self.client.pipeline(transaction=False) as pipe:
            for uid in upload_ids:
                pipe.get(f"{self.stream.stream}:recorded:{uid}")
            entry_ids = pipe.execute()
        found = {uid: _text(e) for uid, e in zip(upload_ids, entry_ids, strict=True) if e is not None}
        if not found:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for entry_id in found.values():
                pipe.xrange(self.stream.stream, min=entry_id, max=entry_id, count=1)
            entries = pipe.execute()
        out = {}
        for uid, entry in zip(found, entries, strict=True):
            if entry:
                verdict = _verdict_of(entry[0][1])
                if verdict is not None:
                    out[uid] = verdict
        return out  # recorded but trimmed from the stream: enqueued again; the sweep reads the job result

    # -- follow ----------------------------------------------------------------------

    def _read(self, timeout: float) -> None:
        block = max(1, int(timeout * 1000)) if timeout > 0 else None
        reply = self.client.xread({self.stream.stream: self._last_id}, count=1000, block=block)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self._last_id = _text(entry_id)
                if _field(fields, "event") not in (None, "verdict"):
                    continue  # e.g. a moderator's later decision on some upload
                uid = _field(fields, "upload_id")
                pending = self._flying.get(uid) if uid else None
                if pending is None:
                    continue
                verdict = _verdict_of(fields)
                if verdict is not None:
                    del self._flying[uid]
                    self._ready.append(self._row(pending, verdict))

    def _sweep(self) -> None:
        """Check overdue items directly: recorded verdicts the reader missed, failed jobs."""
        from rq.job import Job, JobStatus
        from rq.serializers import JSONSerializer

        self._last_sweep = time.monotonic()
        overdue = [p for p in self._flying.values() if self._last_sweep - p.enqueued_at >= SWEEP_INTERVAL_S]
        if not overdue:
            return
        decided = self._recorded([p.upload_id for p in overdue])
        for pending in overdue:
            verdict = decided.get(pending.upload_id)
            if verdict is None and pending.job_id is not None:
                try:
                    job = Job.fetch(pending.job_id, connection=self.client, serializer=JSONSerializer)
                    status = job.get_status()
                except Exception:  # noqa: BLE001 - expired or unreadable: keep waiting for the stream
                    continue
                if status == JobStatus.FINISHED and isinstance(job.return_value(), dict):
                    verdict = _parsed(job.return_value())
                elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED) and \
                        not self.stream.recorded(pending.upload_id):
                    # The worker's failure callback records scan_failed; if even that did
                    # not happen, fail closed here rather than wait forever.
                    verdict = self._given_up(pending, f"job {pending.job_id} ended {status.value} with no verdict")
            if verdict is not None:
                del self._flying[pending.upload_id]
                self._ready.append(self._row(pending, verdict))

    def _check_idle(self) -> None:
        if self._warned_idle or time.monotonic() - self._last_result < IDLE_WARNING_S or not self._flying:
            return
        from rq import Worker

        if Worker.count(connection=self.client, queue=_bulk_queue(self.client)) == 0:
            print(f"\nwarning: nothing has come back for {IDLE_WARNING_S:.0f} s and no worker listens on the"
                  " bulk queue; start one with `photosentry worker` (it takes uploads, then bulk)",
                  file=self.stderr, flush=True)
            self._warned_idle = True

    def _given_up(self, pending: _Pending, why: str) -> Verdict:
        from ..worker.pipeline import failure_verdict
        from ..worker.policy import Policy

        # The shipped policy's fail-closed rule: this host does not know the workers' policy.
        return replace(failure_verdict(Policy.default(), ReasonCode.SCAN_FAILED, why, subject=pending.item.source),
                       upload_id=pending.upload_id)

    def _row(self, pending: _Pending, verdict: Verdict) -> Finished:
        self._reported.append(pending.upload_id)
        return Finished(pending.item, verdict_row(pending.item, verdict, run=self.run_id, dry_run=self.dry_run))


def _bulk_queue(client: redis.Redis) -> Any:
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(defaults.BULK_QUEUE, connection=client, serializer=JSONSerializer)


def _field(fields: dict[Any, Any], name: str) -> str | None:
    value = fields.get(name.encode(), fields.get(name))
    return None if value is None else _text(value)


def _verdict_of(fields: dict[Any, Any]) -> Verdict | None:
    raw = _field(fields, "verdict")
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return _parsed(value)


def _parsed(value: object) -> Verdict | None:
    """A verdict record read from Redis, typed; None when it is not one."""
    if not isinstance(value, dict):
        return None
    try:
        return Verdict.from_dict(value)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
