"""Repeat uploaders: a penalty ledger per uploader id, with exponential decay.

Verdicts count against the uploader named in the upload's context (policy
``[uploaders] context_key``). An upload blocked for its content, or a quarantined one
a moderator confirmed, adds a penalty; the score halves every ``half_life_days``, so
an old incident fades. When the score reaches the threshold the uploader is flagged:
one ``uploader_flagged`` entry goes on the verdict stream per crossing, and the policy
may hold their otherwise-allowed uploads for review until the score decays 10% below it.

Everything lives in Redis, shared by every worker and the review host::

    <prefix>score:<uploader>    hash: score, at (server time of the score), flagged, flags
    <prefix>events:<uploader>   list of JSON events, newest first (capped)
    <prefix>applied:<uploader>  hash: "<kind>:<upload id>" -> time, so a retried job or a
                                double-submitted decision never counts twice

One Lua script decays, adds, detects the crossing, appends the stream entry and logs
the event in one atomic step, so two workers recording at once cannot both miss (or
both emit) a crossing, and a crash cannot leave a flag without its stream entry.
Scores use the Redis server's clock, so workers on hosts with skewed clocks agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from .. import defaults
from .policy import UploaderRules
from .stream import UPLOADER_FLAGGED_EVENT, VerdictStream
from .verdict import Action, FlaggedUploader, ReasonCode, Verdict

FLAG_TOLERANCE = 1e-6
"""Penalties given a moment apart have decayed by a hair: two penalties of 1 against a
threshold of 2 must still flag, so the comparison forgives this much."""

FLAG_HYSTERESIS = 0.1
"""A flag lifts only once the score has decayed 10% below the threshold (about 4.5 days
at a 30-day half-life). Without it a score sitting at the threshold would dip under it
within seconds and every further penalty would count as a new crossing."""

MAX_UPLOADER_ID_LEN = 200
"""Longer context values are not treated as uploader ids (they would bloat key names)."""

#: Reason codes that make a block the uploader's doing; a block for a scan failure
#: (a decompression bomb under a strict policy, a crashed scan) is not counted.
CONTENT_CODES = frozenset({ReasonCode.BANK_MATCH, ReasonCode.NUDITY})


class EventKind:
    """What an uploader event records (plain strings on the wire)."""

    #: The worker blocked an upload for its content (adds block_penalty).
    BLOCK = "block"
    #: The worker blocked an upload for a failure (no penalty).
    BLOCK_FAILURE = "block_failure"
    #: The worker quarantined an upload (no penalty until a moderator confirms it).
    QUARANTINE = "quarantine"
    #: A moderator confirmed a quarantined upload (adds confirm_penalty).
    CONFIRMED = "confirmed"
    #: A moderator released a quarantined upload (no penalty).
    RELEASED = "released"


_RECORD = """
local K_SCORE, K_EVENTS, K_APPLIED, K_STREAM = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uploader, kind, upload_id = ARGV[1], ARGV[2], ARGV[3]
local penalty, half_life, threshold = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local maxlen, ttl, max_events, detail = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local over = threshold - tonumber(ARGV[12])
local lifts_below = threshold * (1 - tonumber(ARGV[13]))
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)

local state = redis.call('HMGET', K_SCORE, 'score', 'at', 'flagged', 'flags')
local score = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
local flags = tonumber(state[4]) or 0
if now > at then score = score * math.pow(0.5, (now - at) / half_life) end
local flagged = (state[3] == '1' and score >= lifts_below) or score >= over

if redis.call('HSETNX', K_APPLIED, kind .. ':' .. upload_id, now_s) == 0 then
    return {0, string.format('%.17g', score), 0, flagged and 1 or 0}
end
score = score + penalty
local crossed = 0
if (not flagged) and score >= over then
    flagged = true
    crossed = 1
    flags = flags + 1
    redis.call('XADD', K_STREAM, 'MAXLEN', '~', maxlen, '*',
        'event', ARGV[11], 'uploader_id', uploader, 'upload_id', upload_id,
        'score', string.format('%.6f', score), 'threshold', ARGV[6], 'flags', tostring(flags))
end
redis.call('HSET', K_SCORE, 'score', string.format('%.17g', score), 'at', now_s,
           'flagged', flagged and '1' or '0', 'flags', tostring(flags))
redis.call('LPUSH', K_EVENTS, cjson.encode({at = now_s, kind = kind, upload_id = upload_id,
    penalty = ARGV[4], score = string.format('%.6f', score), crossed = tostring(crossed), detail = detail}))
redis.call('LTRIM', K_EVENTS, 0, max_events - 1)
for _, key in ipairs({K_SCORE, K_EVENTS, K_APPLIED}) do redis.call('EXPIRE', key, ttl) end
return {1, string.format('%.17g', score), crossed, flagged and 1 or 0}
"""


@dataclass(frozen=True)
class Recorded:
    """What recording one event did."""

    #: False when this (kind, upload) was already counted: nothing changed.
    new: bool
    score: float
    #: This event took the score over the threshold (an uploader_flagged entry was added).
    crossed: bool
    flagged: bool


@dataclass(frozen=True)
class Standing:
    """An uploader's record now: the decayed score, whether flagged, the history."""

    uploader_id: str
    score: float
    threshold: float
    flagged: bool
    #: How many times the score crossed the threshold (each one an uploader_flagged entry).
    flags: int
    events: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"uploader_id": self.uploader_id, "score": round(self.score, 6), "threshold": self.threshold,
                "flagged": self.flagged, "flags": self.flags, "events": list(self.events)}


def uploader_of(context: Mapping[str, Any] | None, rules: UploaderRules) -> str | None:
    """The uploader id in ``context``, or None when there is no usable one."""
    if not context:
        return None
    value = context.get(rules.context_key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    if not text or len(text) > MAX_UPLOADER_ID_LEN or not text.isprintable():
        return None
    return text


class UploaderLedger:
    """Penalties per uploader in Redis (see the module docstring for the keys)."""

    def __init__(
        self,
        client: redis.Redis,
        rules: UploaderRules,
        stream: VerdictStream,
        *,
        prefix: str = defaults.UPLOADER_PREFIX,
        history_days: float = defaults.UPLOADER_HISTORY_DAYS,
        max_events: int = defaults.UPLOADER_HISTORY_EVENTS,
    ) -> None:
        self.client = client
        self.rules = rules
        self.stream = stream
        self.prefix = prefix
        self.history_s = int(history_days * 86400)
        self.max_events = max_events
        self._record = client.register_script(_RECORD)

    @property
    def half_life_s(self) -> float:
        return self.rules.half_life_days * 86400.0

    def _keys(self, uploader: str) -> list[str]:
        return [f"{self.prefix}score:{uploader}", f"{self.prefix}events:{uploader}",
                f"{self.prefix}applied:{uploader}"]

    # -- writes -----------------------------------------------------------------------

    def record(self, uploader: str, *, kind: str, upload_id: str, penalty: float,
               detail: Mapping[str, Any] | None = None) -> Recorded:
        """Count one event against ``uploader``; a repeat of (kind, upload_id) changes nothing."""
        if not upload_id:
            raise ValueError("an uploader event needs the upload id it is about")
        if penalty < 0 or math.isnan(penalty):
            raise ValueError(f"penalty must be >= 0, got {penalty!r}")
        new, score, crossed, flagged = self._record(
            keys=[*self._keys(uploader), self.stream.stream],
            args=[uploader, kind, upload_id, repr(float(penalty)), repr(self.half_life_s), repr(self.rules.threshold),
                  self.stream.maxlen, self.history_s, self.max_events,
                  json.dumps(dict(detail or {}), separators=(",", ":")), UPLOADER_FLAGGED_EVENT,
                  repr(FLAG_TOLERANCE), repr(FLAG_HYSTERESIS)],
        )
        return Recorded(bool(int(new)), float(score), bool(int(crossed)), bool(int(flagged)))

    def record_verdict(self, verdict: Verdict, *, upload_id: str) -> Recorded | None:
        """Count a worker's verdict against the uploader in its context (None: nothing to count).

        Allowed uploads are not recorded (they would cost a write per upload for no
        penalty); quarantines are recorded without a penalty, for the history.
        """
        uploader = uploader_of(verdict.context, self.rules)
        if uploader is None:
            return None
        if verdict.action is Action.BLOCK:
            blocking = {r.code for r in verdict.reasons if r.action is Action.BLOCK}
            if blocking & CONTENT_CODES:
                kind, penalty = EventKind.BLOCK, self.rules.block_penalty
            else:
                kind, penalty = EventKind.BLOCK_FAILURE, 0.0
        elif verdict.action is Action.QUARANTINE:
            kind, penalty = EventKind.QUARANTINE, 0.0
        else:
            return None
        return self.record(uploader, kind=kind, upload_id=upload_id, penalty=penalty,
                           detail={"reasons": verdict.reason_codes})

    def flagged(self, context: Mapping[str, Any]) -> FlaggedUploader | None:
        """The upload's uploader, when they are flagged: a fact for the policy to decide on."""
        uploader = uploader_of(context, self.rules)
        if uploader is None:
            return None
        flagged, score = self.is_flagged(uploader)
        return FlaggedUploader(uploader, score, self.rules.threshold) if flagged else None

    def record_decision(self, uploader: str, *, upload_id: str, confirmed: bool, actor: str,
                        item_id: str) -> Recorded:
        """Count a moderator's decision: a confirmation adds confirm_penalty, a release nothing."""
        kind = EventKind.CONFIRMED if confirmed else EventKind.RELEASED
        penalty = self.rules.confirm_penalty if confirmed else 0.0
        return self.record(uploader, kind=kind, upload_id=upload_id, penalty=penalty,
                           detail={"by": actor, "item_id": item_id})

    # -- reads ------------------------------------------------------------------------

    def score(self, uploader: str) -> tuple[float, int, bool]:
        """The decayed score now, the number of crossings so far, and whether flagged now."""
        raw = self.client.hmget(self._keys(uploader)[0], "score", "at", "flags", "flagged")
        if raw[0] is None:
            return 0.0, 0, False
        seconds, micros = self.client.time()
        now = seconds + micros / 1e6
        score, at = float(raw[0]), float(raw[1] or now)
        if now > at:
            score *= 0.5 ** ((now - at) / self.half_life_s)
        threshold = self.rules.threshold
        flagged = (raw[3] == b"1" and score >= threshold * (1 - FLAG_HYSTERESIS)) or score >= threshold - FLAG_TOLERANCE
        return score, int(raw[2] or 0), flagged

    def is_flagged(self, uploader: str) -> tuple[bool, float]:
        """Whether ``uploader`` is flagged now (see FLAG_HYSTERESIS), and their score."""
        score, _, flagged = self.score(uploader)
        return flagged, score

    def standing(self, uploader: str, *, limit: int = 100) -> Standing:
        score, flags, flagged = self.score(uploader)
        raw_events = self.client.lrange(self._keys(uploader)[1], 0, max(0, limit - 1))
        events = []
        for raw in raw_events:
            event = json.loads(raw)
            event["at"] = float(event["at"])
            event["penalty"] = float(event["penalty"])
            event["score"] = float(event["score"])
            event["crossed"] = event.get("crossed") == "1"
            event["detail"] = json.loads(event.get("detail") or "{}")
            events.append(event)
        return Standing(uploader, score, self.rules.threshold, flagged, flags, tuple(events))


__all__ = ["CONTENT_CODES", "EventKind", "Recorded", "Standing", "UploaderLedger", "uploader_of"]
