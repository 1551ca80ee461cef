"""Moderator decisions: release (allow) or confirm (block) a quarantined upload.

One decision, in order (the same for the CLI and the web page):

    1 claim    the moderator must hold the item's lease (the CLI takes it; the page has it)
    2 fix      the decision is written and appended to the audit stream in one atomic
               step; the first submit wins, a double submit finds it and does nothing
    3 effects  each one idempotent, so a crash here is finished by submitting again:
               bank entries (a ban, or an allow-bank entry), the uploader penalty, the
               file (restored, kept as evidence or deleted), the decision entry on the
               uploads verdict stream (one per upload; there too for an item a bulk
               job quarantined, whose verdict is on photosentry:verdicts:bulk)
    4 finish   the item is marked released / confirmed and its lease dropped
    5 deliver  the signed callback to the upload's callback_url (at least once)

Hashes for bank entries come from the verdict the worker recorded, so a decision
never needs the photo to be scanned again, and banned content is never put in a bank.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from ..decode import Limits, decode
from ..hashes.derived import DerivedHash, derive
from ..hashes.localfeatures import LocalFeatures, banned_features
from ..hashes.banks import BankStore, EntrySource, allow_photo, entries_from_hashes, open_store
from ..s3.location import is_s3_url
from ..worker import confined
from ..worker.delivery import CallbackPolicy, CallbackSigner, post_callback
from ..worker.policy import Policy
from ..worker.sources import SourceRefused, SourceRoots
from ..worker.stores import open_stores
from ..worker.stream import VerdictStream
from ..worker.uploaders import UploaderLedger
from ..worker.verdict import ModeratorDecision, Verdict
from ..worker.review_queue import CONFIRMED, RELEASED, QueueItem, ReviewError, ReviewQueue, check_moderator

log = logging.getLogger(__name__)

RELEASE, CONFIRM = ModeratorDecision.RELEASE, ModeratorDecision.CONFIRM


@dataclass(frozen=True)
class Outcome:
    """What a decision did."""

    item_id: str
    decision: dict[str, Any]
    effects: dict[str, Any]
    #: The item was already decided this way: nothing was done again.
    already: bool = False
    #: The verdict the decision delivers (None when nothing was done again).
    verdict: Verdict | None = None


class Reviewer:
    """Takes moderators' decisions on the review queue.

    Args:
        client: the Redis the workers share (queue, banks, stream, uploader ledger).
        home: the data directory whose ``quarantine/`` and ``blocked/`` stores the
            workers write (mounted on the review host).
        policy: for the uploader penalties and what happens to a confirmed file.
        source_roots: where released files may be put back (the workers' source roots:
            folders, and ``s3://`` prefixes for photos uploaded to a bucket).
        store: the workers' ``--store`` (a folder or ``s3://bucket/prefix/``) when the
            stores are not in ``home``.
        signer: signs decision callbacks; None skips them (the stream still has them).
        callback_allow: only call back URLs under one of these prefixes (empty: any).
        callback_networks: internal networks callbacks may reach (see
            :class:`~photosentry.worker.delivery.CallbackPolicy`).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        home: Path,
        policy: Policy | None = None,
        source_roots: Sequence[str] = (),
        store: str | None = None,
        signer: CallbackSigner | None = None,
        callback_allow: Sequence[str] = (),
        callback_networks: Sequence[str] = (),
        bank_store: BankStore | None = None,
        queue: ReviewQueue | None = None,
        stream: VerdictStream | None = None,
    ) -> None:
        self.client = client
        self.policy = policy or Policy.default()
        self.queue = queue or ReviewQueue(client)
        self.stream = stream or VerdictStream(client)
        self.banks = bank_store or open_store(redis=client)
        self.ledger = UploaderLedger(client, self.policy.uploaders, self.stream)
        self.roots = SourceRoots(source_roots) if source_roots else None
        stores = open_stores(store, Path(home),
                             source_roots=(*self.roots.roots, *self.roots.s3_roots) if self.roots else (),
                             s3_client=self.roots.s3_client if self.roots else None)
        self.quarantine, self.blocked = stores.quarantine, stores.blocked
        self.signer = signer
        self.callback_allow = tuple(callback_allow)
        self.callback_policy = CallbackPolicy(allow_prefixes=self.callback_allow,
                                              allow_networks=tuple(callback_networks))

    # -- reading -------------------------------------------------------------------------

    def photo(self, item: QueueItem) -> Any:
        """Where the quarantined photo of ``item`` is (a path on this host, or an S3
        location), if it is still in the store; None otherwise."""
        sha = item.record.sha256
        return self.quarantine.content_path(sha) if sha and item.record.stored else None

    def photo_bytes(self, item: QueueItem) -> bytes | None:
        """The quarantined photo of ``item``, if it is still in the store."""
        sha = item.record.sha256
        return self.quarantine.read(sha) if sha and item.record.stored else None

    # -- deciding ------------------------------------------------------------------------

    def release(self, item_id: str, *, actor: str, reason: str, allow_bank: str | None = None,
                take_lease: bool = False, deliver: bool = True) -> Outcome:
        """Allow the photo: restore it, tell the pipeline, and optionally allow-bank its hashes."""
        return self.decide(item_id, RELEASE, actor=actor, reason=reason, bank=allow_bank,
                           take_lease=take_lease, deliver=deliver)

    def confirm(self, item_id: str, *, actor: str, reason: str, ban_bank: str | None = None,
                take_lease: bool = False, deliver: bool = True) -> Outcome:
        """Block the photo: tell the pipeline, penalise the uploader, optionally ban its hashes."""
        return self.decide(item_id, CONFIRM, actor=actor, reason=reason, bank=ban_bank,
                           take_lease=take_lease, deliver=deliver)

    def decide(self, item_id: str, kind: str, *, actor: str, reason: str, bank: str | None = None,
               take_lease: bool = False, deliver: bool = True) -> Outcome:
        """Release or confirm ``item_id`` as ``actor``, who must hold its lease.

        Args:
            take_lease: claim the item for ``actor`` first (the CLI); the page claims
                when it shows the item, so it passes False.
            deliver: POST the callback now; False leaves it to :meth:`deliver`.

        Raises:
            ReviewError: ``missing``, ``held`` (another moderator has it), ``unclaimed``,
                ``decided`` (already decided the other way), ``nothing_stored``,
                ``no_hashes``, ``bad_bank``.
            ValueError: a bad actor or an empty reason.
        """
        if kind not in (RELEASE, CONFIRM):
            raise ValueError(f"decision must be {RELEASE!r} or {CONFIRM!r}, got {kind!r}")
        actor = check_moderator(actor)
        reason = (reason or "").strip()
        if not reason:
            raise ValueError("every decision needs a reason (--reason)")
        item_id = str(item_id)
        item = self.queue.get(item_id)
        if item is None:
            raise ReviewError("missing", f"no quarantined item {item_id}")
        if item.state in (RELEASED, CONFIRMED):
            return self._already(item, kind)
        if item.state != "deciding":
            self._check(item, kind, bank)
        if take_lease:
            try:
                self.queue.claim(item_id, actor)
            except ReviewError as exc:
                if exc.code != "decided":
                    raise
        decision = {"decision": kind, "item_id": item_id, "upload_id": item.record.upload_id, "by": actor,
                    "reason": reason, "bank": bank, "at": time.time()}
        status, detail = self.queue.begin_decision(item_id, actor, decision)
        if status == "missing":
            raise ReviewError("missing", f"no quarantined item {item_id}")
        if status == "held":
            raise ReviewError("held", f"item {item_id} is being reviewed by {detail}")
        if status == "unclaimed":
            raise ReviewError("unclaimed", f"item {item_id} is not claimed by {actor}: open it first")
        assert isinstance(detail, dict)
        if detail.get("decision") != kind:
            raise ReviewError("decided", f"item {item_id} was already decided: {detail.get('decision')} by"
                                         f" {detail.get('by')}")
        if status == "decided":
            return self._already(self.queue.get(item_id) or item, kind)
        # 'begun' (ours) or 'deciding' (a crashed attempt of the same decision): apply it.
        outcome = self._apply(self.queue.get(item_id) or item, detail)
        if deliver:
            self.deliver(outcome)
        return outcome

    def _check(self, item: QueueItem, kind: str, bank: str | None) -> None:
        record = item.record
        if kind == RELEASE and not (record.stored and self.photo(item) is not None):
            raise ReviewError("nothing_stored", f"item {item.item_id} has no stored photo on this host, so no one"
                                                " can have looked at it: it cannot be released (confirm it, or"
                                                " have the upload sent again to be scanned)")
        if bank is None:
            return
        if record.verdict.hashes is None:
            raise ReviewError("no_hashes", f"item {item.item_id} has no hashes to put in bank {bank!r}")
        try:
            existing = {cfg.name: cfg for cfg in self.banks.banks()}
            is_allow = self.banks.bank(bank).is_allow
        except ValueError as exc:
            raise ReviewError("bad_bank", str(exc)) from exc
        if kind == RELEASE:
            if bank in existing and not is_allow:
                raise ReviewError("bad_bank", f"bank {bank!r} is a ban bank: releasing into it would block the photo")
        elif is_allow:
            raise ReviewError("bad_bank", f"bank {bank!r} is an allow bank: a ban goes into a ban bank")

    def _already(self, item: QueueItem, kind: str) -> Outcome:
        decision = item.decision or {}
        if decision.get("decision") != kind:
            raise ReviewError("decided", f"item {item.item_id} was already {item.state} by {decision.get('by')}")
        return Outcome(item.item_id, decision, dict(item.effects or {}), already=True)

    def _apply(self, item: QueueItem, decision: dict[str, Any]) -> Outcome:
        record = item.record
        kind, actor, reason, bank = decision["decision"], decision["by"], decision["reason"], decision.get("bank")
        effects: dict[str, Any] = {}
        if bank:
            effects.update(self._bank(item, kind, bank, actor, reason))
        if record.uploader_id:
            got = self.ledger.record_decision(record.uploader_id, upload_id=record.upload_id,
                                              confirmed=kind == CONFIRM, actor=actor, item_id=item.item_id)
            effects["uploader"] = {"id": record.uploader_id, "score": round(got.score, 6), "flagged": got.flagged,
                                   "crossed": got.crossed}
        data = self._read(item)
        if kind == RELEASE:
            effects.update(self._restore(record, data))
        else:
            effects.update(self._evidence(item, data, decision))
        if record.sha256 and record.stored:
            self.quarantine.discard(record.sha256, record.upload_id)
        # The policy decides with the moderator's decision as its last fact.
        verdict = replace(self.policy.redecide(record.verdict, moderator=ModeratorDecision.from_dict(decision)),
                          upload_id=record.upload_id)
        # On the uploads stream even for a rescan's (bulk) item: the platform acts on a
        # decision, decisions come at human speed, and a rescan must not trim them.
        recorded = self.stream.record_decision(upload_id=record.upload_id, item_id=item.item_id,
                                               decision=decision, verdict=verdict.to_dict(),
                                               content=record.sha256 or "",
                                               verdict_stream=record.stream or self.stream.stream,
                                               key=record.record_key)
        effects["stream_id"] = recorded.entry_id
        self.queue.finish_decision(item.item_id, state=RELEASED if kind == RELEASE else CONFIRMED, effects=effects,
                                   actor=actor)
        log.info("moderator decision", extra={"item_id": item.item_id, "upload_id": record.upload_id,
                                              "decision": kind, "by": actor})
        return Outcome(item.item_id, decision, effects, verdict=verdict)

    def _bank(self, item: QueueItem, kind: str, bank: str, actor: str, reason: str) -> dict[str, Any]:
        label = f"review item {item.item_id} ({item.record.upload_id})"[:120]
        hashes = item.record.verdict.hashes
        assert hashes is not None  # checked before the decision was fixed
        why = f"review item {item.item_id}: {reason}"
        if kind == RELEASE:
            # Makes a new bank an allow bank first; refuses a ban bank.
            added = allow_photo(self.banks, hashes, bank=bank, actor=actor, reason=why, label=label)
        else:
            derived, features = self._derived(item)
            entries, _ = entries_from_hashes(hashes, bank, label=label, source=EntrySource.IMAGE,
                                             derived=derived, features=features)
            added = self.banks.add(entries, actor=actor, reason=why)
        key = "allow_bank" if kind == RELEASE else "ban_bank"
        return {key: bank, "bank_entries": [e.id for e in added], "bank_version": self.banks.version()}

    def _derived(self, item: QueueItem) -> tuple[list[DerivedHash], LocalFeatures | None]:
        """The crop and rotation hashes and the keypoints of the confirmed photo
        (hashes/derived.py, localfeatures.py), from its quarantined copy; none when that
        is gone (the ban keeps its own hashes)."""
        try:
            data = self.photo_bytes(item)
            if data is None:
                return [], None
            frame = decode(data, Limits()).frames[0]
            return derive(frame), banned_features(frame)
        except Exception as exc:  # noqa: BLE001 - the ban itself must not fail for its extras
            log.warning("no derived hashes for review item %s: %s", item.item_id, exc)
            return [], None

    def _read(self, item: QueueItem) -> bytes | None:
        return self.photo_bytes(item)

    def _restore(self, record: Any, data: bytes | None) -> dict[str, Any]:
        """Put the released photo back where the worker took it from, if this host can."""
        if data is None:
            return {"restored_to": None, "restore_note": "the photo is no longer in the quarantine store"}
        if not record.source_path:
            return {"restored_to": None, "restore_note": "uploaded inline: the pipeline keeps its own copy"}
        if self.roots is None:
            return {"restored_to": None, "restore_note": "no source root configured on the review host"}
        if is_s3_url(record.source_path):
            return self._restore_object(record, data)
        target = Path(record.source_path)
        try:
            parent, root = self.roots.resolve(str(target.parent))
        except SourceRefused as exc:
            return {"restored_to": None, "restore_note": f"not restored: {exc.message}"}
        if target.name in ("", ".", ".."):
            return {"restored_to": None, "restore_note": "not restored: the recorded path names no file"}
        dest = parent / target.name
        # Through the folder's descriptor, reached from the root without a symlink: a
        # folder swapped for one after resolve() cannot send the photo outside the roots.
        try:
            folder = confined.open_dir(root, parent.relative_to(root).parts)
        except OSError as exc:
            return {"restored_to": None, "restore_note": f"not restored: {parent} changed: {exc.strerror or exc}"}
        try:
            if _exists(folder, target.name):
                same = _holds(folder, target.name, data)
                return {"restored_to": str(dest) if same else None,
                        "restore_note": "already there" if same else "a different file now has that name: not replaced"}
            tmp = confined.private_name("restore")
            confined.create_exclusive(folder, tmp, data, mode=0o644)  # an ordinary upload again, readable by the pipeline
            try:
                os.link(tmp, target.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            except FileExistsError:  # never replaces a file that appeared meanwhile
                return {"restored_to": None, "restore_note": "a file appeared at that name: not replaced"}
            finally:
                confined.unlink_quietly(folder, tmp)
        finally:
            os.close(folder)
        return {"restored_to": str(dest)}

    def _restore_object(self, record: Any, data: bytes) -> dict[str, Any]:
        """Put the released photo back in its bucket (inside the review host's s3:// roots),
        never over an object that appeared under its key meanwhile."""
        from ..s3.objects import content_type_for, restore

        assert self.roots is not None
        try:
            location = self.roots.resolve_s3(record.source_path)
        except SourceRefused as exc:
            return {"restored_to": None, "restore_note": f"not restored: {exc.message}"}
        media = record.verdict.media
        return restore(self.roots.s3_client, location, data,
                       content_type=content_type_for(media.format if media is not None else None))

    def _evidence(self, item: QueueItem, data: bytes | None, decision: dict[str, Any]) -> dict[str, Any]:
        rules = self.policy.review
        sha = item.record.sha256
        if data is None or not sha:
            return {"file": "none stored"}
        if rules.confirmed_files == "delete":
            return {"file": "deleted"}
        self.blocked.put(sha, data, item.record.upload_id,
                         {"upload_id": item.record.upload_id, "verdict": item.record.verdict.to_dict(),
                          "decision": decision})
        until = float(decision["at"]) + rules.evidence_days * 86400.0
        return {"file": "kept as evidence", "evidence_until": until}

    # -- delivery ------------------------------------------------------------------------

    def deliver(self, outcome: Outcome) -> dict[str, Any] | None:
        """POST the signed decision to the upload's callback URL; records how it went."""
        item = self.queue.get(outcome.item_id)
        if item is None or outcome.already:
            return None
        url = item.record.callback_url
        if not url:
            return None
        if self.signer is None:
            result: dict[str, Any] = {"delivered": False, "error": "no callback key configured"}
        else:
            import json

            body = json.dumps({"event": "decision", "upload_id": item.record.upload_id, "item_id": item.item_id,
                               "stream_id": outcome.effects.get("stream_id"), "decision": outcome.decision,
                               "verdict": outcome.verdict.to_dict() if outcome.verdict else None},
                              separators=(",", ":")).encode()
            got = post_callback(url, body, self.signer, policy=self.callback_policy)
            result = {"delivered": got.delivered, "attempts": got.attempts, "status": got.status, "error": got.error}
        self.queue.set_effects(outcome.item_id, {**outcome.effects, "callback": result})
        if not result["delivered"]:
            log.warning("decision callback not delivered (it is on the stream)", extra={"item_id": item.item_id, **result})
        return result

    # -- retention -----------------------------------------------------------------------

    def purge(self, *, now: float | None = None) -> list[str]:
        """Delete evidence files whose retention ended; returns the item ids purged."""
        now = time.time() if now is None else now
        purged = []
        for item_id in self.queue.decided_before(now):
            item = self.queue.get(item_id)
            if item is None or item.state != CONFIRMED:
                continue
            effects = dict(item.effects or {})
            until = effects.get("evidence_until")
            if effects.get("file") != "kept as evidence" or until is None or float(until) > now:
                continue
            if item.record.sha256:
                self.blocked.discard(item.record.sha256, item.record.upload_id)
            effects["file"] = "evidence purged"
            effects["purged_at"] = now
            self.queue.set_effects(item_id, effects)
            purged.append(item_id)
        return purged


def _exists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _holds(folder: int, name: str, data: bytes) -> bool:
    """``name`` in ``folder`` is a regular file (not a symlink) holding exactly ``data``."""
    try:
        fd = os.open(name, confined.O_READ, dir_fd=folder)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(len(data) + 1) == data
    finally:
        os.close(fd)


__all__ = ["CONFIRM", "RELEASE", "Outcome", "Reviewer"]
