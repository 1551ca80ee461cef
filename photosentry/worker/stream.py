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

# KEYS: stream, marker[, callback outbox's due set]. ARGV: maxlen, marker TTL, the number n
# of field arguments, the n fields[, outbox item prefix, callback URL, URL tag, now].
_RECORD = """
local existing = redis.call('GET', KEYS[2])
if existing then return {existing, 0} end
local n = tonumber(ARGV[3])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 4, 3 + n))
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
if KEYS[3] then
  local callback = KEYS[1] .. '|' .. id .. '|' .. ARGV[6 + n]
  local item = {'url', ARGV[5 + n], 'stream', KEYS[1], 'stream_id', id, 'attempts', '0'}
  for i = 4, 3 + n, 2 do
    if ARGV[i] == 'upload_id' or ARGV[i] == 'job_id' or ARGV[i] == 'verdict' then
      table.insert(item, ARGV[i])
      table.insert(item, ARGV[i + 1])
    end
  end
  redis.call('HSET', ARGV[4 + n] .. callback, unpack(item))
  redis.call('ZADD', KEYS[3], ARGV[7 + n], callback)
end
return {id, 1}
"""


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

    def record(self, *, upload_id: str, job_id: str, verdict: dict[str, Any], event: str = "verdict",
               key: str | None = None, callback: PendingCallback | None = None) -> Recorded:
        """Append ``verdict`` for ``upload_id`` unless one was already recorded under
        ``key`` (default: the upload id; see :meth:`ScanService._claim` on a reused upload
        id, whose other file is recorded under ``<upload id>#<sha256 prefix>``).

        With ``callback``, the verdict's callback is queued in its outbox in the same
        atomic step, so a process dying right after can never leave a recorded verdict
        whose callback nobody will send.
        """
        if not upload_id:
            raise ValueError("upload_id is required to record a verdict")
        fields = {
            "event": event,
            "upload_id": upload_id,
            "job_id": job_id,
            "action": str(verdict.get("action", "")),
            "verdict": json.dumps(verdict, separators=(",", ":")),
        }
        return self._append_once(f"{self.stream}:recorded:{key or upload_id}", fields, callback)

    def record_decision(self, *, upload_id: str, item_id: str, decision: dict[str, Any],
                        verdict: dict[str, Any], verdict_stream: str | None = None,
                        key: str | None = None) -> Recorded:
        """Append a moderator's decision on ``upload_id``, at most once per upload.

        A separate marker (``<stream>:decided:<upload_id>``) keeps it apart from the
        verdict entry: consumers tell the two apart by ``event``. ``verdict_stream``
        names the stream holding the worker's verdict the decision replaces (the bulk
        stream for a rescan's item; the field is left out when not given).
        """
        if not upload_id:
            raise ValueError("upload_id is required to record a decision")
        fields = {
            "event": DECISION_EVENT,
            "upload_id": upload_id,
            "item_id": item_id,
            "action": str(verdict.get("action", "")),
            "decision": json.dumps(decision, separators=(",", ":")),
            "verdict": json.dumps(verdict, separators=(",", ":")),
        }
        if verdict_stream:
            fields["verdict_stream"] = verdict_stream
        return self._append_once(f"{self.stream}:decided:{key or upload_id}", fields)

    def _append_once(self, marker: str, fields: dict[str, str], callback: PendingCallback | None = None) -> Recorded:
        """XADD ``fields`` unless ``marker`` is set; set it to the new entry's id, and queue
        ``callback`` (one Lua step)."""
        flat: list[str] = [x for kv in fields.items() for x in kv]
        keys, args = [self.stream, marker], [self.maxlen, self.record_ttl_s, len(flat), *flat]
        if callback is not None:
            due_key, extra = callback.outbox.record_args(callback.url)
            keys.append(due_key)
            args.extend(extra)
        entry_id, new = self._record(keys=keys, args=args)
        return Recorded(_text(entry_id), bool(int(new)))

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
