"""The review queue: every quarantined upload, in Redis, oldest first, leased to one moderator.

The worker fleet shares one Redis, so the queue lives there; the photos stay in the
quarantine store on disk (a review host mounts that store: docs/review.md). A record
holds everything a moderator needs without scanning again: the verdict (reasons,
scores, matches, hashes, media), the context, the upload id, the callback URL, and
where the photo is (its SHA-256 in the content-addressed store).

Keys, under ``prefix`` (JSON and plain strings only):

    next_id              counter of item ids (small integers a moderator can type)
    by_upload:<upload>   upload id -> item id: one item per upload, however often indexed
    item:<id>            hash: record (JSON), state, decision (JSON), effects (JSON), decided_at
    pending              sorted set of items waiting for a decision, scored by queue time
    decided              sorted set of decided items, scored by decision time
    claim:<id>           the moderator holding the item (SET NX PX: a lease that expires)
    holding:<moderator>  the item a moderator holds, so each holds at most one
    audit                stream: one entry per decision (who, what, why, when)

States: ``pending`` -> ``deciding`` (the decision is fixed and audited; its effects
are being applied) -> ``released`` or ``confirmed``. A decision is fixed atomically
by the first submit that holds the lease; a double submit finds it and changes
nothing, and a crash while applying effects is finished by submitting it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from .. import defaults
from ..errors import ReviewError
from .verdict import Verdict

PENDING, DECIDING, RELEASED, CONFIRMED = "pending", "deciding", "released", "confirmed"
STATES = (PENDING, DECIDING, RELEASED, CONFIRMED)
MAX_MODERATOR_LEN = 64

_INDEX = """
local existing = redis.call('GET', KEYS[1])
if existing then return {existing, 0} end
local id = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', ARGV[1] .. 'item:' .. id, 'record', ARGV[3], 'state', 'pending')
redis.call('ZADD', KEYS[3], ARGV[2], id)
redis.call('SET', KEYS[1], id)
return {id, 1}
"""

# Claim the oldest pending item nobody else holds (or the one this moderator holds).
# ARGV: prefix, moderator, lease ms, batch size, excluded ids (comma-separated).
_CLAIM_NEXT = """
local prefix, me, lease, batch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local excluded = {}
for id in string.gmatch(ARGV[5], '[^,]+') do excluded[id] = true end
local holding_key = prefix .. 'holding:' .. me
local held = redis.call('GET', holding_key)
if held and not excluded[held] and redis.call('GET', prefix .. 'claim:' .. held) == me
   and redis.call('ZSCORE', KEYS[1], held) then
    redis.call('PEXPIRE', prefix .. 'claim:' .. held, lease)
    redis.call('PEXPIRE', holding_key, lease)
    return held
end
local start = 0
while true do
    local ids = redis.call('ZRANGE', KEYS[1], start, start + batch - 1)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
        if not excluded[id] then
            local claim = prefix .. 'claim:' .. id
            local holder = redis.call('GET', claim)
            if (not holder) or holder == me then
                if held and held ~= id and redis.call('GET', prefix .. 'claim:' .. held) == me then
                    redis.call('DEL', prefix .. 'claim:' .. held)
                end
                redis.call('SET', claim, me, 'PX', lease)
                redis.call('SET', holding_key, id, 'PX', lease)
                return id
            end
        end
    end
    start = start + batch
end
return false
"""

# Claim one named item. Returns {status, holder}: status 'ok', 'held' (by holder),
# 'missing', or the item's state when it is no longer pending.
_CLAIM = """
local prefix, id, me, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HGET', prefix .. 'item:' .. id, 'state')
if not state then return {'missing', ''} end
local claim = prefix .. 'claim:' .. id
local holder = redis.call('GET', claim)
if state ~= 'pending' and state ~= 'deciding' then return {state, holder or ''} end
if holder and holder ~= me then return {'held', holder} end
local holding_key = prefix .. 'holding:' .. me
local held = redis.call('GET', holding_key)
if held and held ~= id and redis.call('GET', prefix .. 'claim:' .. held) == me then
    redis.call('DEL', prefix .. 'claim:' .. held)
end
redis.call('SET', claim, me, 'PX', lease)
redis.call('SET', holding_key, id, 'PX', lease)
return {'ok', me}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

_UNCLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""

# Fix a decision: the caller must hold the lease; the first decision wins.
# KEYS: item, claim, pending, audit. ARGV: actor, decision JSON, kind, audit maxlen, item id.
# Returns {status, detail}: 'begun' | 'deciding' (decision JSON) | 'decided' (decision
# JSON) | 'held' (holder) | 'unclaimed' | 'missing'.
_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
if state ~= 'pending' then
    return {state == 'deciding' and 'deciding' or 'decided', redis.call('HGET', KEYS[1], 'decision') or ''}
end
local holder = redis.call('GET', KEYS[2])
if not holder then return {'unclaimed', ''} end
if holder ~= ARGV[1] then return {'held', holder} end
redis.call('HSET', KEYS[1], 'state', 'deciding', 'decision', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'item_id', ARGV[5], 'decision', ARGV[3],
           'by', ARGV[1], 'entry', ARGV[2])
return {'begun', ARGV[2]}
"""

_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'deciding' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'effects', ARGV[2], 'decided_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
return 1
"""


@dataclass(frozen=True)
class QuarantineRecord:
    """What the worker knew when it quarantined an upload; never changes afterwards."""

    upload_id: str
    verdict: Verdict
    queued_at: float
    job_id: str = ""
    #: The verdict's entry on the verdict stream.
    stream_id: str = ""
    #: The stream ``stream_id`` is on: photosentry:verdicts:bulk for a bulk job (a
    #: rescan), else photosentry:verdicts (also what an empty value, an item queued
    #: before bulk jobs had a stream of their own, means). Decisions always go on the
    #: uploads stream (docs/review.md).
    stream: str = ""
    #: SHA-256 of the photo: its folder in the content-addressed quarantine store.
    sha256: str | None = None
    #: The photo's bytes are in the quarantine store (False: nothing could be read or kept).
    stored: bool = False
    #: The file the worker moved into quarantine (resolved, inside a source root), so a
    #: release can put it back; None for inline uploads or when unknown.
    source_path: str | None = None
    callback_url: str | None = None
    uploader_id: str | None = None
    #: What the verdict was recorded under: the upload id, or ``<upload id>#<sha256
    #: prefix>`` for another file sent under an upload id already decided. Empty: the
    #: upload id (items queued before reused ids were told apart).
    key: str = ""

    @property
    def record_key(self) -> str:
        return self.key or self.upload_id

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "verdict": self.verdict.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "QuarantineRecord":
        raw = json.loads(text)
        fields = {k: raw.get(k) for k in cls.__dataclass_fields__ if k in raw}
        fields["verdict"] = Verdict.from_dict(raw.get("verdict") or {})
        return cls(**fields)

    @property
    def reasons(self) -> list[dict[str, Any]]:
        """The reasons as moderators are shown them (the CLI and the page)."""
        return [r.to_dict() for r in self.verdict.reasons]

    @property
    def context(self) -> dict[str, Any]:
        return dict(self.verdict.context)


@dataclass(frozen=True)
class QueueItem:
    """One item of the review queue as read back: its record and where it stands."""

    item_id: str
    record: QuarantineRecord
    state: str
    decision: dict[str, Any] | None = None
    effects: dict[str, Any] | None = None
    decided_at: float | None = None
    #: The moderator holding the item's lease now (None: free).
    claimed_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "state": self.state, "claimed_by": self.claimed_by,
                "record": self.record.to_dict(), "decision": self.decision, "effects": self.effects,
                "decided_at": self.decided_at}


def check_moderator(name: str) -> str:
    """A moderator name safe to use in keys and the audit trail."""
    name = (name or "").strip()
    if not name or len(name) > MAX_MODERATOR_LEN or not all(c.isalnum() or c in "-_.@" for c in name):
        raise ValueError(f"{name!r} is not a valid moderator name (letters, digits, - _ . @; up to 64)")
    return name


class ReviewQueue:
    """The review queue and its leases (see the module docstring for the keys)."""

    def __init__(self, client: redis.Redis, *, prefix: str = defaults.REVIEW_PREFIX,
                 lease_s: float = defaults.REVIEW_LEASE_S) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease must be above 0 s, got {lease_s}")
        self.client = client
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self._index = client.register_script(_INDEX)
        self._claim_next = client.register_script(_CLAIM_NEXT)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._unclaim = client.register_script(_UNCLAIM)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- the worker's side ---------------------------------------------------------------

    def index(self, record: QuarantineRecord) -> tuple[str, bool]:
        """Queue ``record`` for review unless its upload is queued already: (item id, new)."""
        item_id, new = self._index(
            keys=[self._key("by_upload", record.record_key), self._key("next_id"), self._key("pending")],
            args=[self.prefix, repr(float(record.queued_at)), record.to_json()],
        )
        return _text(item_id), bool(int(new))

    # -- reads ---------------------------------------------------------------------------

    def get(self, item_id: str) -> QueueItem | None:
        item_id = str(item_id)
        if not item_id.isdigit():
            return None
        raw = self.client.hgetall(self._key("item", item_id))
        if not raw:
            return None
        return self._item(item_id, {_text(k): _text(v) for k, v in raw.items()}, self.holder(item_id))

    def by_upload(self, upload_id: str) -> str | None:
        value = self.client.get(self._key("by_upload", upload_id))
        return None if value is None else _text(value)

    def pending_count(self) -> int:
        return int(self.client.zcard(self._key("pending")))

    def pending(self, *, limit: int = 100, offset: int = 0) -> list[QueueItem]:
        """Pending items, oldest first."""
        ids = [_text(i) for i in self.client.zrange(self._key("pending"), offset, offset + limit - 1)]
        return self._many(ids)

    def decided(self, *, limit: int = 100) -> list[QueueItem]:
        """Decided items, newest decision first."""
        ids = [_text(i) for i in self.client.zrevrange(self._key("decided"), 0, limit - 1)]
        return self._many(ids)

    def deciding(self) -> list[QueueItem]:
        """Items whose decision is fixed but whose effects were not all applied (a crash)."""
        out = []
        for key in self.client.scan_iter(match=self._key("item", "*"), count=500):
            item_id = _text(key).rsplit(":", 1)[-1]
            if _text(self.client.hget(key, "state") or b"") == DECIDING:
                item = self.get(item_id)
                if item is not None:
                    out.append(item)
        return sorted(out, key=lambda i: int(i.item_id))

    def decided_before(self, when: float) -> list[str]:
        return [_text(i) for i in self.client.zrangebyscore(self._key("decided"), "-inf", when)]

    def holder(self, item_id: str) -> str | None:
        value = self.client.get(self._key("claim", str(item_id)))
        return None if value is None else _text(value)

    def _many(self, ids: Iterable[str]) -> list[QueueItem]:
        ids = list(ids)
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hgetall(self._key("item", item_id))
        raws = pipe.execute()
        holders = self.client.mget([self._key("claim", i) for i in ids])
        out = []
        for item_id, raw, holder in zip(ids, raws, holders, strict=True):
            if raw:
                out.append(self._item(item_id, {_text(k): _text(v) for k, v in raw.items()},
                                      None if holder is None else _text(holder)))
        return out

    @staticmethod
    def _item(item_id: str, raw: Mapping[str, str], holder: str | None) -> QueueItem:
        return QueueItem(
            item_id=item_id,
            record=QuarantineRecord.from_json(raw["record"]),
            state=raw.get("state", PENDING),
            decision=json.loads(raw["decision"]) if raw.get("decision") else None,
            effects=json.loads(raw["effects"]) if raw.get("effects") else None,
            decided_at=float(raw["decided_at"]) if raw.get("decided_at") else None,
            claimed_by=holder,
        )

    # -- leases --------------------------------------------------------------------------

    def claim_next(self, moderator: str, *, exclude: Iterable[str] = ()) -> str | None:
        """Lease the oldest pending item no one else holds (or the one ``moderator`` holds)."""
        moderator = check_moderator(moderator)
        got = self._claim_next(keys=[self._key("pending")],
                               args=[self.prefix, moderator, self.lease_ms, 200, ",".join(map(str, exclude))])
        return None if got is None else _text(got)

    def claim(self, item_id: str, moderator: str) -> None:
        """Lease one item to ``moderator``.

        Raises:
            ReviewError: ``missing``, ``held`` (by another moderator), or the item's
                state when it is already decided.
        """
        moderator = check_moderator(moderator)
        status, holder = (_text(x) for x in self._claim(keys=[], args=[self.prefix, str(item_id), moderator,
                                                                        self.lease_ms]))
        if status == "ok":
            return
        if status == "missing":
            raise ReviewError("missing", f"no quarantined item {item_id}")
        if status == "held":
            raise ReviewError("held", f"item {item_id} is being reviewed by {holder}")
        raise ReviewError("decided", f"item {item_id} was already {status}")

    def renew(self, item_id: str, moderator: str) -> bool:
        """Extend ``moderator``'s lease on the item; False if they no longer hold it."""
        return bool(self._renew(keys=[self._key("claim", str(item_id)), self._key("holding", moderator)],
                                args=[moderator, self.lease_ms]))

    def unclaim(self, item_id: str, moderator: str) -> bool:
        """Give the item back (skip); False if ``moderator`` did not hold it."""
        return bool(self._unclaim(keys=[self._key("claim", str(item_id)), self._key("holding", moderator)],
                                  args=[moderator, str(item_id)]))

    # -- decisions -----------------------------------------------------------------------

    def begin_decision(self, item_id: str, actor: str, decision: Mapping[str, Any]) -> tuple[str, dict[str, Any] | str]:
        """Fix ``decision`` (and append it to the audit stream) if ``actor`` holds the lease.

        Returns (status, detail): ``begun``, ``deciding`` or ``decided`` with the fixed
        decision; ``held`` with the holder; ``unclaimed`` or ``missing``.
        """
        body = json.dumps(dict(decision), separators=(",", ":"))
        status, detail = (_text(x) for x in self._begin(
            keys=[self._key("item", str(item_id)), self._key("claim", str(item_id)), self._key("pending"),
                  self._key("audit")],
            args=[actor, body, str(decision.get("decision", "")), defaults.REVIEW_AUDIT_MAXLEN, str(item_id)],
        ))
        if status in ("begun", "deciding", "decided"):
            return status, json.loads(detail) if detail else {}
        return status, detail

    def finish_decision(self, item_id: str, *, state: str, effects: Mapping[str, Any], actor: str) -> bool:
        if state not in (RELEASED, CONFIRMED):
            raise ValueError(f"not a final state: {state!r}")
        return bool(self._finish(
            keys=[self._key("item", str(item_id)), self._key("decided"), self._key("claim", str(item_id))],
            args=[state, json.dumps(dict(effects), separators=(",", ":")), repr(time.time()), str(item_id), actor],
        ))

    def set_effects(self, item_id: str, effects: Mapping[str, Any]) -> None:
        self.client.hset(self._key("item", str(item_id)), "effects", json.dumps(dict(effects), separators=(",", ":")))

    def audit(self, *, count: int = 100) -> list[dict[str, Any]]:
        """The newest decisions in the audit stream, newest first."""
        out = []
        for entry_id, fields in self.client.xrevrange(self._key("audit"), count=count):
            row = {_text(k): _text(v) for k, v in fields.items()}
            row["entry"] = json.loads(row.get("entry") or "{}")
            out.append({"id": _text(entry_id), **row})
        return out


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["CONFIRMED", "DECIDING", "PENDING", "RELEASED", "STATES", "QuarantineRecord", "QueueItem",
           "ReviewError", "ReviewQueue", "check_moderator"]
