"""The verdict stream: one Redis stream entry per upload, for pipelines to consume.

Pipelines read it with consumer groups (XREADGROUP/XACK), so several consumers share
the work and a crashed consumer's entries are re-delivered. A job can run more than
once (a worker killed mid-job is retried), so recording is idempotent per upload: a
Lua script sets ``<prefix>recorded:<upload_id>`` and appends to the stream in one
atomic step, and a repeat returns the first entry's id instead of appending again.

Two streams, chosen by the queue a job was taken from (:func:`stream_for_queue`):
uploads jobs record on ``photosentry:verdicts``, bulk jobs (rescans, retro-hunt
requeues) on ``photosentry:verdicts:bulk``, each with its own cap, so millions of bulk
verdicts can never trim an upload verdict the pipeline has not read yet. A job's
recorded marker lives under the stream it was recorded on, and a retried or recovered
job returns to the queue it came from, so its replay finds it there. Moderator
decisions and ``uploader_flagged`` entries always go on the uploads stream: the
platform acts on them, and they come at human speed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from .. import defaults
from .outbox import PendingCallback

DEFAULT_STREAM = "photosentry:verdicts"
VERDICT_EVENT = "verdict"
"""``event`` of the worker's one entry per upload: the scan's verdict."""
DECISION_EVENT = "decision"
"""``event`` of a moderator's decision on a quarantined upload: a second, later entry for
the same upload id whose ``action`` (allow or block) replaces the verdict's quarantine."""
UPLOADER_FLAGGED_EVENT = "uploader_flagged"
"""``event`` of the entry added when an uploader's penalty score crosses the threshold
(fields ``uploader_id``, ``score``, ``threshold``, and the ``upload_id`` that tipped it)."""
DEFAULT_MAXLEN = 1_000_000
"""Approximate cap on the stream (XADD MAXLEN ~): about a day of a busy platform."""
DEFAULT_RECORD_TTL_S = 30 * 24 * 3600
"""How long the per-upload "already recorded" marker is kept (longer than any retry)."""

# KEYS: stream, marker, content marker[, callback outbox's due set]. ARGV: maxlen, marker
# TTL, the content (SHA-256 of the bytes decided, or empty), the number n of field
# arguments, the n fields[, outbox item prefix, callback URL, URL tag, now, MAC]. The
# marker holds the entry id, the content marker which bytes that entry answers for.
_RECORD = """
local existing = redis.call('GET', KEYS[2])
if existing then return {existing, 0, redis.call('GET', KEYS[3])} end
local n = tonumber(ARGV[4])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5, 4 + n))
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
if KEYS[4] then
  local callback = KEYS[1] .. '|' .. id .. '|' .. ARGV[7 + n]
  local item = {'url', ARGV[6 + n], 'stream', KEYS[1], 'stream_id', id, 'attempts', '0', 'mac', ARGV[9 + n]}
  for i = 5, 4 + n, 2 do
    if ARGV[i] == 'upload_id' or ARGV[i] == 'job_id' or ARGV[i] == 'verdict' then
      table.insert(item, ARGV[i])
      table.insert(item, ARGV[i + 1])
    end
  end
  redis.call('HSET', ARGV[5 + n] .. callback, unpack(item))
  redis.call('ZADD', KEYS[4], ARGV[8 + n], callback)
end
return {id, 1, ARGV[3]}
"""

REUSED_SEPARATOR = "\x1f"
"""Joins an upload id and a content prefix into the record key of another file sent under
an upload id already decided. Upload ids are printable, so no real one contains it."""


def reused_key(upload_id: str, sha256: str | None) -> str:
    """The record key of ``sha256``'s bytes under ``upload_id`` when the id was decided for
    other bytes (``unread`` when these could not be read)."""
    return f"{upload_id}{REUSED_SEPARATOR}{sha256 or 'unread'}"


def stream_for_queue(queue: str | None, *, uploads: str = DEFAULT_STREAM,
                     bulk: str = defaults.BULK_VERDICT_STREAM) -> str:
    """The stream a job's verdict goes on, by the RQ queue it was taken from (``job.origin``).

    Only the bulk queue has a stream of its own; any other queue (and no queue: a scan
    called directly) records on the uploads stream, where the platform is listening.
    """
    return bulk if queue == defaults.BULK_QUEUE else uploads


@dataclass(frozen=True)
class Recorded:
    """Where a verdict was recorded, and whether this call recorded it."""

    entry_id: str
    new: bool
    #: SHA-256 of the bytes the recorded verdict answers for ("" when they were never
    #: read; None when unknown: a marker written before markers named their content).
    content: str | None = ""
    #: SHA-256 of those bytes as the worker wrote them back (``strip_metadata``), if it did:
    #: the same upload, answered by the same verdict.
    rewritten: str | None = None

    def answers_for(self, content: str) -> bool:
        return content == self.content or (bool(content) and content == self.rewritten)


class VerdictStream:
    """Appends verdicts to a Redis stream, at most once per upload id."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int = DEFAULT_MAXLEN,
        record_ttl_s: int = DEFAULT_RECORD_TTL_S,
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.record_ttl_s = record_ttl_s
        self._record = client.register_script(_RECORD)

    def record(self, *, upload_id: str, job_id: str, verdict: dict[str, Any], content: str = "",
               key: str | None = None, callback: PendingCallback | None = None) -> Recorded:
        """Append ``verdict`` for ``upload_id`` unless one was already recorded under
        ``key`` (default: the upload id; :func:`reused_key` for another file under an id
        already decided). ``content`` is the SHA-256 of the bytes decided ("" when they
        were never read): it goes on the entry and into the marker, so a later job knows
        whether the recorded verdict answers for its bytes (``Recorded.content``).

        With ``callback``, the verdict's callback is queued in its outbox in the same
        atomic step, so a process dying right after can never leave a recorded verdict
        whose callback nobody will send.
        """
        if not upload_id:
            raise ValueError("upload_id is required to record a verdict")
        verdict_json = json.dumps(verdict, separators=(",", ":"))
        fields = {
            "event": VERDICT_EVENT,
            "upload_id": upload_id,
            "job_id": job_id,
            "action": str(verdict.get("action", "")),
            "content_sha256": content,
            "verdict": verdict_json,
        }
        if key is not None and key != upload_id:
            fields["reused"] = "1"  # another file under an upload id decided for other bytes
        extra = None
        if callback is not None:
            extra = callback.record_args(upload_id=upload_id, job_id=job_id, stream=self.stream,
                                         verdict_json=verdict_json)
        return self._append_once(key or upload_id, "recorded", fields, content, extra)

    def record_decision(self, *, upload_id: str, item_id: str, decision: dict[str, Any],
                        verdict: dict[str, Any], content: str, verdict_stream: str | None = None,
                        key: str | None = None) -> Recorded:
        """Append a moderator's decision on ``upload_id``, at most once per record key.

        A separate marker (``<stream>:decided:<key>``) keeps it apart from the verdict
        entry: consumers tell the two apart by ``event``. Like a verdict entry it names
        the content it is about (``content_sha256``, and ``reused`` for another file under
        a decided upload id): a decision on one file never speaks for another.
        ``verdict_stream`` names the stream holding the worker's verdict the decision
        replaces (the bulk stream for a rescan's item; the field is left out when not given).
        """
        if not upload_id:
            raise ValueError("upload_id is required to record a decision")
        fields = {
            "event": DECISION_EVENT,
            "upload_id": upload_id,
            "item_id": item_id,
            "action": str(verdict.get("action", "")),
            "content_sha256": content,
            "decision": json.dumps(decision, separators=(",", ":")),
            "verdict": json.dumps(verdict, separators=(",", ":")),
        }
        if key is not None and key != upload_id:
            fields["reused"] = "1"
        if verdict_stream:
            fields["verdict_stream"] = verdict_stream
        return self._append_once(key or upload_id, "decided", fields, content)

    def _append_once(self, key: str, kind: str, fields: dict[str, str], content: str,
                     callback: tuple[str, list[str]] | None = None) -> Recorded:
        """XADD ``fields`` unless ``<stream>:<kind>:<key>`` is set; set it to the new
        entry's id and its content marker to ``content``, and queue the callback (one Lua
        step)."""
        flat: list[str] = [x for kv in fields.items() for x in kv]
        keys = [self.stream, f"{self.stream}:{kind}:{key}", f"{self.stream}:content-{kind}:{key}"]
        args = [self.maxlen, self.record_ttl_s, content, len(flat), *flat]
        if callback is not None:
            due_key, extra = callback
            keys.append(due_key)
            args.extend(extra)
        entry_id, new, recorded_content = self._record(keys=keys, args=args)
        return Recorded(_text(entry_id), bool(int(new)),
                        None if recorded_content is None else _text(recorded_content))

    def verdict_at(self, entry_id: str) -> dict[str, Any] | None:
        """The verdict field of one entry, as recorded (None if trimmed or absent)."""
        entries = self.client.xrange(self.stream, min=entry_id, max=entry_id, count=1)
        if not entries:
            return None
        fields = entries[0][1]
        raw = fields.get(b"verdict", fields.get("verdict"))
        return json.loads(raw) if raw is not None else None

    def recorded(self, key: str) -> str | None:
        """The stream entry id of the verdict recorded under ``key`` (an upload id), if any."""
        value = self.client.get(f"{self.stream}:recorded:{key}")
        return None if value is None else _text(value)

    def marked(self, key: str) -> Recorded | None:
        """What was recorded under ``key`` (an upload id or a :func:`reused_key`): the
        entry and the content it answers for; None if nothing was."""
        entry_id, content, rewritten = self.client.mget(f"{self.stream}:recorded:{key}",
                                                        f"{self.stream}:content-recorded:{key}",
                                                        f"{self.stream}:content-rewritten:{key}")
        if entry_id is None:
            return None
        return Recorded(_text(entry_id), False, None if content is None else _text(content),
                        None if rewritten is None else _text(rewritten))

    def note_rewritten(self, key: str, content: str) -> None:
        """The worker wrote ``key``'s file back as ``content`` (its SHA-256): a retried job
        that reads the rewritten file is the same upload, not a reused id."""
        self.client.set(f"{self.stream}:content-rewritten:{key}", content, ex=self.record_ttl_s)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
