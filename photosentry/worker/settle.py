"""Settling a decided upload: record it (with its callback), act on it, follow it up.

Every way a queue job ends goes through :meth:`Settlement.settle`: a fresh verdict, a
verdict replayed for a retried job, and the fail-closed verdict of a job given up. In
order:

    record     one stream entry per upload id and content, and the callback queued in
               the outbox in the same atomic step: durable from here
    act        quarantine and block move the photo into their stores; allow leaves it
    follow up  a quarantined upload is queued for moderators; the verdict counts
               against its uploader

Recording is idempotent, acting is idempotent (content-addressed stores, one sidecar
per upload), and so is following up (the review queue and the uploader ledger key by
upload), so a job that settles twice changes nothing the second time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .actions import ActionApplier, ActionResult
from .delivery import CallbackSigner
from .outbox import CallbackOutbox, PendingCallback
from .payload import ScanPayload
from .review_queue import QuarantineRecord, ReviewQueue
from .sources import Fetched, Origin, SourceRoots
from .stream import Recorded, VerdictStream
from .uploaders import UploaderLedger, uploader_of
from .verdict import Action, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settled:
    """A settled upload: the verdict that stands (the first one, if another attempt
    recorded first) and where it is recorded."""

    verdict: Verdict
    recorded: Recorded
    #: Another file's verdict holds the record key (two jobs under one upload id with
    #: different bytes raced): ``verdict`` is this job's own and was not recorded.
    conflict: bool = False


class Settlement:
    """The stores, queues and ledgers a decided upload goes to (see the module docstring)."""

    def __init__(self, *, actions: ActionApplier, review: ReviewQueue, uploaders: UploaderLedger,
                 outbox: CallbackOutbox, signer: CallbackSigner | None) -> None:
        self.actions = actions
        self.review = review
        self.uploaders = uploaders
        self.outbox = outbox
        self.signer = signer

    def record(self, verdict: Verdict, payload: ScanPayload, *, job_id: str, stream: VerdictStream, key: str,
               content: str) -> Settled:
        """Record ``verdict`` for the bytes ``content`` (their SHA-256, "" if never read)
        under ``key``, with its callback when the job has one and there is a key to sign
        it. If another attempt recorded first for the same bytes, its verdict stands; if
        it recorded for other bytes, nothing is taken from it (``Settled.conflict``)."""
        callback = None
        if payload.callback_url and self.signer is not None:
            callback = PendingCallback(self.outbox, payload.callback_url, self.signer)
        recorded = stream.record(upload_id=payload.upload_id, job_id=job_id, verdict=verdict.to_dict(),
                                 content=content, key=key, callback=callback)
        if recorded.new:
            return Settled(verdict, recorded)
        first = read_verdict(stream, recorded.entry_id)
        recorded_content = recorded.content
        if recorded_content is None:  # a marker from before content markers: ask the verdict
            recorded_content = first.hashes.sha256 if first is not None and first.hashes is not None else ""
        if recorded_content != content:
            return Settled(verdict, recorded, conflict=True)
        # Another attempt for these bytes recorded first: its verdict is the verdict.
        return Settled(first or verdict, recorded)

    def act(self, settled: Settled, payload: ScanPayload, *, job_id: str, fetched: Fetched | None,
            stream: VerdictStream, key: str) -> None:
        """Act on the verdict that stands, then follow it up. A dry run (a rescan that
        only reports) does neither."""
        if payload.dry_run:
            return
        verdict = settled.verdict
        acted = self._move(verdict, fetched, payload)
        if acted is not None and acted.rewritten_sha256:
            stream.note_rewritten(key, acted.rewritten_sha256)
        if verdict.action is Action.QUARANTINE:
            self._queue_for_review(verdict, payload, job_id, settled.recorded.entry_id, fetched, acted, stream, key)
        counted = self.uploaders.record_verdict(verdict, upload_id=payload.upload_id)
        if counted is not None and counted.crossed:
            log.warning("uploader flagged", extra={"score": round(counted.score, 3)})

    def _move(self, verdict: Verdict, fetched: Fetched | None, payload: ScanPayload) -> ActionResult | None:
        if fetched is None or (verdict.action is Action.ALLOW and not verdict.rewrite):
            return None
        # Acted on only while it still is what was read: the same file (device and
        # inode), or the same S3 object version (asked only when there is something to do).
        source: Origin | None = fetched.origin if SourceRoots.still_same(fetched) else None
        if verdict.action is Action.ALLOW:
            return self._rewrite(verdict, fetched, source)
        result = self.actions.apply(verdict, data=fetched.data, upload_id=payload.upload_id, source=source)
        if result.changed:
            log.info("photo moved to the %s store", verdict.action.value,
                     extra={"stored_at": str(result.stored_at), "source_removed": result.source_removed})
        return result

    def _rewrite(self, verdict: Verdict, fetched: Fetched, source: Origin | None) -> ActionResult | None:
        """An allowed upload's ``rewrite`` (``strip_metadata``) on its file or object; a
        failure is logged, never raised: the verdict is recorded and stands. Only an S3
        outage (:class:`~photosentry.errors.StorageUnavailable`) propagates, so the job is
        retried and its replay rewrites."""
        try:
            result = self.actions.rewrite(verdict, data=fetched.data, source=source)
        except (ValueError, OSError) as exc:
            log.error("allowed photo could not be rewritten as its verdict asks",
                      extra={"rewrite": list(verdict.rewrite), "why": f"{type(exc).__name__}: {exc}"})
            return None
        if result.rewritten:
            log.info("allowed photo rewritten", extra={"rewrite": list(verdict.rewrite),
                                                       "path": source.describe() if source else None})
        return result

    def _queue_for_review(self, verdict: Verdict, payload: ScanPayload, job_id: str, stream_id: str,
                          fetched: Fetched | None, acted: ActionResult | None, stream: VerdictStream,
                          key: str) -> None:
        # The item names the stream its verdict is on (stream_id is an id there).
        sha = verdict.hashes.sha256 if verdict.hashes is not None else None
        stored = bool(sha) and self.actions.stores[Action.QUARANTINE].content_path(sha) is not None
        moved = acted is not None and acted.source_removed and fetched is not None and fetched.origin is not None
        moved_from = fetched.origin.describe() if moved else None  # type: ignore[union-attr]
        item_id, new = self.review.index(QuarantineRecord(
            upload_id=payload.upload_id, verdict=verdict, queued_at=time.time(), job_id=job_id,
            stream_id=stream_id, stream=stream.stream, sha256=sha, stored=stored,
            source_path=moved_from,
            callback_url=payload.callback_url, uploader_id=uploader_of(payload.context, self.uploaders.rules),
            key=key,
        ))
        if new:
            log.info("queued for review", extra={"item_id": item_id})


def read_verdict(stream: VerdictStream, entry_id: str) -> Verdict | None:
    """The verdict of one stream entry (None if it was trimmed or holds none)."""
    raw = stream.verdict_at(entry_id)
    return Verdict.from_dict(raw) if raw is not None else None
