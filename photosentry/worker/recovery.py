"""Recovering jobs a dead worker held: requeue them, or give them up fail-closed.

A thread in every worker refreshes ``photosentry:worker:alive:<name>`` every second
(TTL 5 s). Every second one worker of the fleet (the holder of a short Redis lock)
looks for jobs in the StartedJobRegistry of our queues whose worker's key has
expired. Each is claimed with one ZREM (so two recoverers never both act) and retried
- or, out of retries, given up with a recorded ``scan_failed`` verdict. RQ's own
cleanup would only notice such a job ``timeout + 60 s`` after it started, and only on
its 10-minute maintenance tick. Jobs lost between :class:`~.dequeue.ReliableQueue`'s
LMOVE and their registration are found in the intermediate lists
(:func:`recover_intermediate`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import as_text

from . import rq_compat

log = logging.getLogger(__name__)

WORKER_NAME_PREFIX = "photosentry."
"""Names of our worker processes start with this; recovery only touches their jobs."""

ALIVE_KEY_PREFIX = "photosentry:worker:alive:"
RECOVER_LOCK_KEY = "photosentry:worker:recover-lock"

INTERMEDIATE_SEEN_KEY = "photosentry:worker:intermediate-seen"
"""Hash ``<queue>:<job id>`` -> when the recovery scan first saw that job dequeued but unregistered."""
INTERMEDIATE_GRACE_S = 10.0
"""How long a job may sit in an intermediate list, not yet started, before it is requeued.

A live worker registers its job within milliseconds of the LMOVE; only a dead one (or
one cut off from Redis) leaves it there. A requeued job that did run after all runs
twice, which is harmless: verdicts are recorded once per upload id."""


def alive_key(worker_name: str) -> str:
    return ALIVE_KEY_PREFIX + worker_name


def new_worker_name() -> str:
    return f"{WORKER_NAME_PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def requeue_job(
    connection: redis.Redis,
    job_id: str,
    *,
    execution_id: str | None = None,
    consume_retry: bool,
    give_up: Callable[[Job, str], None] | None = None,
    why: str,
) -> str:
    """Put a started job back on its queue (or give it up); returns what was done.

    ``consume_retry`` counts the lost attempt against the job's retries, so a photo
    that keeps killing workers (out of memory, a decoder crash) ends, after its
    retries, in a fail-closed verdict via ``give_up`` instead of looping forever.
    """
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return "gone"
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return "not_started"
    queue = Queue(job.origin, connection=connection, serializer=JSONSerializer)
    with connection.pipeline() as pipe:
        # A worker that died after registering the job but before RQ's own LREM leaves
        # it in the intermediate list too; drop it so it is not requeued a second time.
        pipe.lrem(rq_compat.intermediate_key(queue.key), 1, job_id)
        if execution_id:
            rq_compat.delete_execution(execution_id, job, connection, pipe)
        if consume_retry and not job.retries_left:
            exc_string = f"abandoned: {why}"
            rq_compat.record_failure(job, exc_string, pipe)
            pipe.execute()
            if give_up is not None:
                give_up(job, why)
            return "failed"
        job.started_at = None
        if consume_retry:
            job.retry(queue, pipe)  # one retry used; back at the front when so configured
        else:
            rq_compat.enqueue_again(queue, job, pipeline=pipe)
        pipe.execute()
    return "requeued"


def recover_abandoned(
    connection: redis.Redis,
    queue_names: Sequence[str],
    *,
    give_up: Callable[[Job, str], None] | None = None,
    is_dead: Callable[[str], bool] | None = None,
) -> list[tuple[str, str]]:
    """Requeue (or give up) started jobs whose PhotoSentry worker is dead.

    A worker is dead when its liveness key has expired (or ``is_dead`` says so).
    Returns (job id, outcome) pairs.
    """
    dead = is_dead or (lambda name: not connection.exists(alive_key(name)))
    done: list[tuple[str, str]] = []
    for name in queue_names:
        registry = Queue(name, connection=connection, serializer=JSONSerializer).started_job_registry
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            try:
                owner = rq_compat.execution_owner(execution_id, job_id, connection)
            except ValueError:  # the execution hash expired; fall back to the job's record
                try:
                    owner = Job.fetch(job_id, connection=connection, serializer=JSONSerializer).worker_name or ""
                except NoSuchJobError:
                    owner = ""
            if not owner.startswith(WORKER_NAME_PREFIX) or not dead(owner):
                continue
            # One ZREM claims the job: of two recoverers racing, only one gets 1.
            if not connection.zrem(registry.key, f"{job_id}:{execution_id}"):
                continue
            outcome = requeue_job(connection, job_id, execution_id=execution_id, consume_retry=True,
                                  give_up=give_up, why=f"worker {owner} died")
            log.warning("recovered job of a dead worker", extra={"job_id": job_id, "dead_worker": owner,
                                                                  "outcome": outcome})
            done.append((job_id, outcome))
    return done


def recover_intermediate(
    connection: redis.Redis,
    queue_names: Sequence[str],
    *,
    grace_s: float = INTERMEDIATE_GRACE_S,
    clock: Callable[[], float] = time.time,
) -> list[tuple[str, str]]:
    """Requeue jobs dequeued (LMOVEd into an intermediate list) but never started.

    :class:`ReliableQueue` moves a job into ``rq:queue:<name>:intermediate`` and the
    worker then adds it to the StartedJobRegistry and removes it from that list. A job
    found in the list, not in the registry, on scans ``grace_s`` apart, belongs to a
    worker that died in between: it goes back to the front of its queue, without
    using a retry (none of its code ran). One LREM claims it, so of two recoverers, or
    a recoverer and a late worker, only one acts. Returns (job id, outcome) pairs.
    """
    seen = {as_text(k): float(v) for k, v in connection.hgetall(INTERMEDIATE_SEEN_KEY).items()}
    current: set[str] = set()
    done: list[tuple[str, str]] = []
    t = clock()
    for name in queue_names:
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        key = rq_compat.intermediate_key(queue.key)
        job_ids = [as_text(j) for j in connection.lrange(key, 0, -1)]
        if not job_ids:
            continue
        registered = {j for j, _ in queue.started_job_registry.get_job_and_execution_ids(cleanup=False)}
        for job_id in job_ids:
            if job_id in registered:
                continue
            field = f"{name}:{job_id}"
            first = seen.get(field)
            if first is None and grace_s > 0:
                connection.hsetnx(INTERMEDIATE_SEEN_KEY, field, t)
                current.add(field)
                continue
            if first is not None and t - first < grace_s:
                current.add(field)
                continue
            if not connection.lrem(key, 1, job_id):
                continue  # claimed by another recoverer, or the worker went on after all
            outcome = _requeue_dequeued(connection, queue, job_id)
            log.warning("recovered job lost between dequeue and start", extra={"job_id": job_id,
                                                                                "outcome": outcome})
            done.append((job_id, outcome))
    stale = [f for f in seen if f not in current]
    if stale:
        connection.hdel(INTERMEDIATE_SEEN_KEY, *stale)
    return done


def _requeue_dequeued(connection: redis.Redis, queue: Queue, job_id: str) -> str:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return "gone"
    except Exception:  # noqa: BLE001 - undecodable: put the id back; the worker refuses it
        connection.lpush(queue.key, job_id)
        return "requeued"
    if job.get_status(refresh=False) != JobStatus.QUEUED:
        return "not_queued"  # started, finished or failed since: handled elsewhere
    rq_compat.enqueue_again(queue, job)
    return "requeued"


def give_up_with_verdict(job: Job, why: str, *, settings: Any | None = None) -> None:
    """Record the fail-closed verdict of a job that ran out of retries while abandoned.

    In a worker process the warm service records it; elsewhere (the supervisor) a
    light service is built from ``settings`` (or the environment).
    """
    from .service import ScanService, current_service, fail_closed

    service = None
    if settings is not None:
        try:
            current_service()
        except RuntimeError:
            service = ScanService(settings, client=job.connection, load_models=False)
    fail_closed(job, job.connection, _Abandoned(why), service=service)


class _Abandoned(Exception):
    """A job's worker died under it."""

