"""Taking a job off the queues without ever holding it only in a worker's memory.

RQ 3.0 dequeues from several queues with ``BLPOP``: between the pop and the
StartedJobRegistry, the job exists only in the worker, and a SIGKILL there loses it.
:class:`ReliableQueue` moves each job atomically (``LMOVE``) into its queue's RQ
intermediate list, in strict priority order, and the recovery scan requeues entries
that stay there unregistered (:func:`~.recovery.recover_intermediate`). A job hash is
untrusted input: one too big or too broken to read is refused here
(:func:`refuse_unreadable_job`), its upload still getting its fail-closed verdict.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DequeueTimeout, StopRequested
from rq.job import Job, JobStatus
from rq.utils import as_text, now

from .. import defaults
from . import jobdata, rq_compat

log = logging.getLogger(__name__)

BLOCK_S = 0.5
"""Longest blocking wait (on the top-priority queue) before the lower queues are polled again."""


class ReliableQueue(Queue):
    """A Queue whose ``dequeue_any`` never holds a job only in a worker's memory.

    RQ 3.0 dequeues from several queues with ``BLPOP``: between the pop and the
    StartedJobRegistry, the job exists only in the worker, and a SIGKILL there loses
    it. Here each queue, in priority order, is tried with a non-blocking ``LMOVE``
    into its RQ intermediate list (``rq:queue:<name>:intermediate``, as RQ itself does
    for one queue). When all are empty, the worker blocks with ``BLMOVE`` on the first
    (highest-priority) queue for at most :data:`BLOCK_S`, then polls all of them again,
    so priority stays strict and a lower-priority job waits at most that long.
    :meth:`ScanWorker.prepare_job_execution` removes the entry once the job is
    registered; :func:`recover_intermediate` requeues entries left by dead workers.
    Needs Redis >= 6.2 (LMOVE).
    """

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls,
        queues: Any,
        timeout: int | None,
        connection: redis.Redis,
        job_class: Any = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        keys = [q.key for q in queues]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = None
            for key in keys:
                job_id = connection.lmove(key, rq_compat.intermediate_key(key))
                if job_id is not None:
                    found = key, job_id
                    break
            if found is None:
                if deadline is None:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DequeueTimeout(timeout, keys)
                first = keys[0]
                job_id = connection.blmove(first, rq_compat.intermediate_key(first),
                                           min(BLOCK_S, left))
                if job_id is None:
                    continue
                found = first, job_id
            queue_key, job_id = as_text(found[0]), as_text(found[1])
            # A job hash is untrusted input: one RQ cannot parse (a bad date, status or
            # timeout) used to end the worker, and recovery put it back for the next one.
            problem = jobdata.oversized(connection, job_id)
            fetched = None
            if problem is None:
                try:
                    fetched = rq_compat.fetch_dequeued(cls, connection, queue_key, job_id, job_class=job_class,
                                                       serializer=serializer, death_penalty_class=death_penalty_class)
                except StopRequested:
                    raise  # SIGTERM meanwhile (RQ's handler raises it to stop an idle worker)
                except Exception as exc:  # noqa: BLE001 - whatever a hostile hash makes RQ raise
                    problem = f"RQ cannot read the job ({type(exc).__name__}: {str(exc)[:200]})"
            if problem is not None:
                refuse_unreadable_job(connection, queue_key, job_id, problem)
                continue
            if fetched is None:  # the job hash is gone: nothing to run, nothing to keep
                connection.lrem(rq_compat.intermediate_key(queue_key), 1, job_id)
                continue
            return fetched


def refuse_unreadable_job(connection: redis.Redis, queue_key: str, job_id: str, why: str) -> None:
    """Fail a dequeued job whose hash cannot be read safely, without running it.

    It is taken off the intermediate list, marked failed and put in the queue's
    FailedJobRegistry by hand (RQ cannot load it), and, when its payload is readable
    JSON with a usable upload id, the upload gets its fail-closed verdict like any
    other job that could not be scanned.
    """
    queue_name = rq_compat.queue_name_of(queue_key)
    log.error("job refused: %s", why, extra={"job_id": job_id})
    key = rq_compat.job_key(job_id)
    with connection.pipeline() as pipe:
        pipe.lrem(rq_compat.intermediate_key(queue_key), 1, job_id)
        pipe.hdel(key, *rq_compat.BEHAVIOUR_FIELDS)  # nothing of the producer's may run later
        pipe.hset(key, mapping={"status": JobStatus.FAILED.value, "exc_info": f"refused: {why}",
                                "ended_at": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        pipe.zadd(rq_compat.failed_registry_key(queue_name, connection), {job_id: time.time() + defaults.FAILURE_TTL_S})
        pipe.execute()
    payload = jobdata.payload_of(connection, job_id)
    if payload is None:
        return
    try:
        from .service import current_service

        current_service().record_failure(payload, job_id=job_id, why=f"job refused: {why}", queue=queue_name)
    except Exception:  # noqa: BLE001 - the job is failed and logged either way
        log.exception("could not record the fail-closed verdict of refused job %s", job_id)
