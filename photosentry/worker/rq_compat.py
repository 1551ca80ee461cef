"""Every use of RQ's private API and Redis key layout, in one place.

The worker leans on RQ for more than its public surface offers: moving a job id into
a queue's intermediate list, putting a fetched job back without a retry, recording a
failure by hand, reading which worker owns an execution, and the job-hash fields a
producer can write. Those are internals that RQ may rename in any release, so they
live here, each behind a small function, and ``tests/test_rq_compat.py`` pins the RQ
versions this module was written against: an RQ upgrade fails that test instead of
breaking recovery or the job guard in silence.
"""

from __future__ import annotations

import json
import math
from typing import Any

import redis
import rq
from rq import Queue
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.registry import FailedJobRegistry

SUPPORTED_RQ = ((3, 0), (3, 1))
"""RQ releases this module was checked against: ``>= first, < second`` (major, minor)."""

QUEUE_KEY_PREFIX = Queue.redis_queue_namespace_prefix
"""``rq:queue:``: a queue's job-id list is this plus the queue name."""

JOB_KEY_PREFIX = Job.redis_job_namespace_prefix
"""``rq:job:``: a job's hash is this plus the job id."""

#: Job-hash fields through which a job makes RQ call code or contact the network, or
#: changes when and how often it runs: a producer writes them, so the job guard
#: (:mod:`photosentry.worker.jobguard`) refuses a job that sets any of them to
#: something that is not ours, and clears them before RQ can act on them.
CODE_FIELDS = ("success_callback_name", "failure_callback_name", "stopped_callback_name")
NETWORK_FIELDS = ("webhooks",)
SCHEDULING_FIELDS = ("dependency_ids", "dependency_id", "allow_dependency_failures", "repeats_left",
                     "repeat_intervals", "rate_limit_key", "rate_limit_concurrency", "group_id")
BEHAVIOUR_FIELDS = CODE_FIELDS + NETWORK_FIELDS + SCHEDULING_FIELDS


def rq_version() -> tuple[int, int]:
    major, minor, *_ = (int(p) if p.isdigit() else 0 for p in rq.__version__.split("."))
    return major, minor


def rq_supported() -> bool:
    return SUPPORTED_RQ[0] <= rq_version() < SUPPORTED_RQ[1]


def queue_key(name: str) -> str:
    return QUEUE_KEY_PREFIX + name


def job_key(job_id: str) -> str:
    return JOB_KEY_PREFIX + job_id


def queue_name_of(key: str) -> str:
    return key[len(QUEUE_KEY_PREFIX):] if key.startswith(QUEUE_KEY_PREFIX) else key.rsplit(":", 1)[-1]


def intermediate_key(queue_key_: str) -> str:
    """The list a job id sits in between its dequeue and its StartedJobRegistry entry."""
    return IntermediateQueue.get_intermediate_queue_key(queue_key_)


def failed_registry_key(queue_name: str, connection: redis.Redis) -> str:
    return FailedJobRegistry(queue_name, connection=connection).key


def enqueue_again(queue: Queue, job: Job, *, pipeline: Any = None) -> None:
    """Put an existing job back at the front of ``queue`` without using a retry
    (RQ's own FailedJobRegistry.requeue goes through the same private method)."""
    queue._enqueue_job(job, pipeline=pipeline, at_front=True)


def fetch_dequeued(queue_class: type[Queue], connection: redis.Redis, queue_key_: str, job_id: str,
                   **kwargs: Any) -> Any:
    """RQ's own step after a pop: load the job and its queue (None when the hash is gone)."""
    return queue_class._fetch_dequeued_job(connection, queue_key_, job_id, **kwargs)


def record_failure(job: Job, exc_string: str, pipeline: Any) -> None:
    record_job_failure(job, exc_string, pipeline)


def delete_execution(execution_id: str, job: Job, connection: redis.Redis, pipeline: Any) -> None:
    Execution(execution_id, job.id, connection=connection, worker_name=job.worker_name or "").delete(job, pipeline)


def execution_owner(execution_id: str, job_id: str, connection: redis.Redis) -> str:
    """The worker name of an execution. Raises ValueError when its hash expired."""
    return Execution.fetch(execution_id, job_id, connection=connection).worker_name


def attempts_of(job: Job) -> int:
    """How many attempts of ``job`` a worker has started, from our counter in its meta (0
    when the meta, which a producer writes too, says nothing usable)."""
    meta = job.meta if isinstance(job.meta, dict) else {}
    value = meta.get("attempts", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, min(int(value), 1000))


def failure_callback_name(job: Job) -> str | None:
    return job._failure_callback_name


def set_failure_callback(job: Job, name: str) -> None:
    job._failure_callback_name = name


def foreign_fields(job: Job, *, failure_callback: str) -> list[str]:
    """The behaviour fields of ``job`` (see :data:`CODE_FIELDS` ...) a producer set to
    anything but what our own enqueue writes."""
    found = []
    if job._success_callback_name:
        found.append("success_callback_name")
    if job._failure_callback_name not in (None, failure_callback):
        found.append("failure_callback_name")
    if job._stopped_callback_name:
        found.append("stopped_callback_name")
    if job.webhooks:
        found.append("webhooks")
    if job._dependency_ids:
        found.append("dependency_ids")
    if job.repeats_left is not None or job.repeat_intervals:
        found.append("repeats_left")
    if job.rate_limit_key:
        found.append("rate_limit_key")
    return found


def neutralize(job: Job, *, failure_callback: str) -> None:
    """Clear every behaviour field in memory, our failure callback in place, so no RQ
    code path (success, failure, refusal) can call, fetch or reschedule what a producer
    chose. :func:`neutralize_stored` does the same to the hash in Redis."""
    job._success_callback_name = None
    job._failure_callback_name = failure_callback
    job._stopped_callback_name = None
    job.webhooks = []
    job._dependency_ids = []
    job.allow_dependency_failures = None
    job.repeats_left = None
    job.repeat_intervals = None
    job.rate_limit_key = None
    job.rate_limit_concurrency = None
    job.group_id = None


def neutralize_stored(connection: redis.Redis, job_id: str, *, failure_callback: str, origin: str,
                      timeout: int | None = None, retries_left: int | None = None,
                      attempts: int | None = None) -> None:
    """Make the stored hash agree with :func:`neutralize`, so RQ's own registry cleanup or
    a recovery that re-reads the hash never acts on a producer's fields either. Retry
    intervals go too: a worker runs no scheduler, so a retry is always immediate."""
    key = job_key(job_id)
    with connection.pipeline() as pipe:
        pipe.hdel(key, *(f for f in BEHAVIOUR_FIELDS if f != "failure_callback_name"), "retry_intervals")
        mapping: dict[str, Any] = {"failure_callback_name": failure_callback, "origin": origin}
        if timeout is not None:
            mapping["timeout"] = timeout
        if retries_left is not None:
            mapping["retries_left"] = retries_left
        if attempts is not None:
            mapping["meta"] = json.dumps({"attempts": attempts})
        pipe.hset(key, mapping=mapping)
        pipe.execute()


def registry_maintenance(worker: Any, queue: Queue, before: Any) -> None:
    """RQ's per-queue maintenance (``BaseWorker.clean_registries``'s loop body), with
    ``before(queue)`` run first under the same lock, and the lock released whatever
    happens (RQ's own loop held it for 15 minutes when a hash it could not read raised)."""
    from rq import worker_registration
    from rq.registry import clean_registries

    if not queue.acquire_maintenance_lock():
        return
    try:
        worker.log.info("Worker %s: cleaning registries for queue: %s", worker.name, queue.name)
        before(queue)
        clean_registries(queue, worker._exc_handlers)
        worker_registration.clean_worker_registry(queue)
        queue.intermediate_queue.cleanup(worker, queue)
    finally:
        queue.release_maintenance_lock()


def started_job_ids(queue: Queue) -> list[str]:
    return [job_id for job_id, _ in queue.started_job_registry.get_job_and_execution_ids(cleanup=False)]


def drop_started(queue: Queue, job_id: str) -> None:
    """Take every StartedJobRegistry entry of ``job_id`` out (``<job id>:<execution id>``)."""
    registry = queue.started_job_registry
    members = [m for m in queue.connection.zrange(registry.key, 0, -1)
               if _text(m) == job_id or _text(m).startswith(job_id + ":")]
    if members:
        queue.connection.zrem(registry.key, *members)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def subscribe_with_poll(worker: Any, poll_s: float) -> None:
    """RQ's ``Worker.subscribe`` with ``poll_s`` reads instead of RQ's fixed 60 s."""
    worker.log.info("Worker %s: subscribing to channel %s", worker.name, worker.pubsub_channel_name)
    worker.pubsub = worker.connection.pubsub()
    worker.pubsub.subscribe(**{worker.pubsub_channel_name: worker.handle_payload})
    worker.pubsub_thread = worker.pubsub.run_in_thread(sleep_time=poll_s, daemon=True,
                                                       exception_handler=worker._pubsub_exception_handler)
