"""The callback outbox: signed callbacks delivered off the scan path, and never lost.

A worker used to POST a verdict's callback inside the job, retrying for about 7.5 s,
so a receiver that held its connections open stalled the next upload for 20 s. Now the
verdict and its callback are written in one atomic step (the stream's record script
adds the callback here when it appends the verdict), the job ends, and delivery
threads in every worker process take due callbacks from Redis:

    photosentry:callbacks:due             ZSET  callback id -> when its next attempt is due
    photosentry:callbacks:item:<id>       HASH  url, upload_id, job_id, stream, stream_id,
                                                verdict, attempts, last_error
    photosentry:callbacks:given-up        STREAM one entry per callback given up (capped)

A callback id is ``<stream>|<entry id>|<url tag>``: one per recorded verdict and URL.
Taking one moves its due time a lease ahead (:data:`LEASE_S`), so if the process dies
mid-attempt another one retries it when the lease runs out. Each attempt is bounded
(:data:`~photosentry.worker.delivery.DEFAULT_ATTEMPT_TIMEOUT_S`), attempts follow the
backoff, and after the last one the callback is recorded as given up: its entry on the
given-up stream says what, where and why, and the verdict itself is on the verdict
stream whatever happened to its callback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from .delivery import (DEFAULT_ATTEMPT_TIMEOUT_S, DEFAULT_BACKOFF_S, CallbackPolicy, CallbackResult, CallbackSigner,
                       attempt_callback)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "photosentry:callbacks:"
LEASE_S = 30.0
"""How long a taken callback stays invisible to other deliverers (far above one attempt)."""
GIVEN_UP_MAXLEN = 100_000
"""Approximate cap on the given-up stream: a receiver down for a day must not fill Redis."""
IDLE_WAIT_S = 0.2
"""How long a delivery thread waits before looking again when nothing is due."""

_TAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
local id = ids[1]
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
local key = ARGV[3] .. id
if redis.call('EXISTS', key) == 0 then
  redis.call('ZREM', KEYS[1], id)
  return {id, {}}
end
redis.call('HINCRBY', key, 'attempts', 1)
return {id, redis.call('HGETALL', key)}
"""


def url_tag(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class PendingCallback:
    """A callback to queue with a verdict (see :meth:`VerdictStream.record`)."""

    outbox: "CallbackOutbox"
    url: str
    signer: CallbackSigner

    def record_args(self, *, upload_id: str, job_id: str, stream: str, verdict_json: str,
                    now: float | None = None) -> tuple[str, list[str]]:
        """The due key and arguments the stream's record script needs to queue this
        callback atomically with its verdict, with the MAC a deliverer checks."""
        mac = self.signer.item_mac(*_mac_parts(self.url, upload_id, job_id, stream, verdict_json))
        return self.outbox.due_key, [self.outbox.item_prefix, self.url, url_tag(self.url),
                                     repr(time.time() if now is None else now), mac]


def _mac_parts(url: str, upload_id: str, job_id: str, stream: str, verdict_json: str) -> tuple[str, ...]:
    return (url, upload_id, job_id, stream, verdict_json)


@dataclass(frozen=True)
class Taken:
    """One callback a deliverer took, with the attempt it is on (1 for the first)."""

    callback_id: str
    fields: Mapping[str, str]
    attempt: int

    def body(self) -> bytes:
        """What the receiver gets (docs/queue.md): the recorded verdict and where it is."""
        head = {k: self.fields.get(k, "") for k in ("upload_id", "job_id", "stream", "stream_id")}
        text = json.dumps(head, separators=(",", ":"))
        return (text[:-1] + ',"verdict":' + self.fields.get("verdict", "null") + "}").encode()


class CallbackOutbox:
    """The Redis side of the outbox: queue, take, settle (see the module docstring)."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX,
                 backoff_s: Sequence[float] = DEFAULT_BACKOFF_S, lease_s: float = LEASE_S) -> None:
        self.client = client
        self.prefix = prefix
        self.backoff_s = tuple(backoff_s)
        self.lease_s = lease_s
        self.due_key = prefix + "due"
        self.given_up_key = prefix + "given-up"
        self.item_prefix = prefix + "item:"
        self._take = client.register_script(_TAKE)

    @property
    def max_attempts(self) -> int:
        return len(self.backoff_s) + 1

    def take(self, now: float | None = None) -> Taken | None:
        """The next due callback, leased to the caller; None when nothing is due."""
        got = self._take(keys=[self.due_key], args=[repr(time.time() if now is None else now), self.lease_s,
                                                    self.item_prefix])
        if not got:
            return None
        raw_id, flat = got
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        try:
            attempt = int(fields.get("attempts", "1") or 1)
        except ValueError:
            attempt = 1
        return Taken(_text(raw_id), fields, max(1, attempt))

    def delivered(self, taken: Taken) -> None:
        with self.client.pipeline() as pipe:
            pipe.delete(self.item_prefix + taken.callback_id)
            pipe.zrem(self.due_key, taken.callback_id)
            pipe.execute()

    def retry_later(self, taken: Taken, error: str, now: float | None = None) -> None:
        wait = self.backoff_s[min(taken.attempt, len(self.backoff_s)) - 1]
        with self.client.pipeline() as pipe:
            pipe.hset(self.item_prefix + taken.callback_id, "last_error", error[:500])
            pipe.zadd(self.due_key, {taken.callback_id: (time.time() if now is None else now) + wait}, xx=True)
            pipe.execute()

    def give_up(self, taken: Taken, error: str) -> str:
        """Record ``taken`` as given up (an entry on the given-up stream) and drop it."""
        entry = {k: taken.fields.get(k, "") for k in ("upload_id", "job_id", "stream", "stream_id", "url")}
        entry.update(attempts=str(taken.attempt), error=error[:500], callback_id=taken.callback_id)
        with self.client.pipeline() as pipe:
            pipe.xadd(self.given_up_key, entry, maxlen=GIVEN_UP_MAXLEN, approximate=True)
            pipe.delete(self.item_prefix + taken.callback_id)
            pipe.zrem(self.due_key, taken.callback_id)
            entry_id, *_ = pipe.execute()
        return _text(entry_id)

    def pending(self) -> int:
        return int(self.client.zcard(self.due_key))

    def next_due(self) -> float | None:
        first = self.client.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None


class CallbackDeliverer:
    """Delivery threads of one worker process: take a due callback, attempt it once,
    settle it (delivered, due again after its backoff, or given up); repeat.

    Several threads, so one receiver that hangs for a whole attempt holds up only the
    callbacks of one thread, never a scan. Counts outcomes on ``observe`` (delivered,
    failed, given_up, skipped).
    """

    def __init__(self, outbox: CallbackOutbox, signer: CallbackSigner, *, policy: CallbackPolicy,
                 threads: int, timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
                 observe: Callable[[str], None] | None = None) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.outbox = outbox
        self.signer = signer
        self.policy = policy
        self.timeout_s = timeout_s
        self.observe = observe or (lambda outcome: None)
        self._count = threads
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._count):
            thread = threading.Thread(target=self._loop, name=f"photosentry-callbacks-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, drain_s: float = 0.0) -> None:
        """Stop taking callbacks; first, for up to ``drain_s``, deliver what is due now
        (a burst worker's last verdicts). An attempt in flight ends within its timeout."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            due = self.outbox.next_due()
            if due is None or due > time.time() + 0.05:
                break
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 1.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                taken = self.outbox.take()
            except redis.RedisError as exc:
                log.warning("callback outbox unreachable: %s", exc)
                self._stop.wait(1.0)
                continue
            if taken is None:
                self._stop.wait(IDLE_WAIT_S)
                continue
            try:
                self.deliver(taken)
            except Exception:  # noqa: BLE001 - the lease brings it back; the thread must live on
                log.exception("callback %s could not be settled", taken.callback_id)

    def deliver(self, taken: Taken) -> CallbackResult | None:
        """One attempt of ``taken``, then settle it. Returns the attempt's result."""
        url = taken.fields.get("url", "")
        extra = {"upload_id": taken.fields.get("upload_id"), "attempt": taken.attempt}
        if not url:  # its item expired or was never written: nothing to send
            self.outbox.delivered(taken)
            return None
        expected = self.signer.item_mac(*_mac_parts(url, *(taken.fields.get(k, "") for k in
                                                          ("upload_id", "job_id", "stream", "verdict"))))
        if not hmac.compare_digest(expected, taken.fields.get("mac", "")):
            # Not written by a worker with our key: never signed, never sent.
            self.outbox.give_up(taken, "not queued by a worker (its MAC does not check): not sent")
            self.observe("skipped")
            log.error("callback in the outbox was not queued by a worker; not sent", extra=extra)
            return None
        if taken.attempt > self.outbox.max_attempts:  # attempts lost to dead processes count too
            self.outbox.give_up(taken, "out of attempts (earlier attempts ended with their process)")
            self.observe("given_up")
            log.error("callback given up", extra=extra)
            return None
        result = attempt_callback(url, taken.body(), self.signer, policy=self.policy, timeout_s=self.timeout_s)
        if result.delivered:
            self.outbox.delivered(taken)
            self.observe("delivered")
        elif result.refused:  # the URL came from the job: never where the policy forbids
            self.outbox.give_up(taken, result.error)
            self.observe("skipped")
            log.error("callback_url refused by the callback policy; not called", extra={**extra, "why": result.error})
        elif result.retryable and taken.attempt < self.outbox.max_attempts:
            self.outbox.retry_later(taken, result.error)
            self.observe("failed")
            log.warning("callback attempt failed; retrying later", extra={**extra, "error": result.error})
        else:
            self.outbox.give_up(taken, result.error)
            self.observe("given_up")
            log.error("callback given up (the verdict is on the stream)",
                      extra={**extra, "status": result.status, "error": result.error})
        return result


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
