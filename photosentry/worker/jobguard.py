"""What a job hash may ask of a worker: only our scan, on our terms.

Anyone who can write to the queue's Redis writes the whole job hash, not just the
payload, and RQ acts on many of its fields: callbacks it imports and calls (success,
failure, stopped), webhooks it sends to any URL, dependencies and repeats that
reschedule jobs, a failure callback that replaces ours (a job naming
``builtins.print`` there ended with no verdict at all). So before a job runs the
guard

- refuses it unless it names the scan function with exactly one positional payload,
  and unless every behaviour field is unset or ours (the refusal is recorded as the
  upload's fail-closed verdict, like any failed job);
- clears those fields in memory *and* in Redis for every job, refused or not, so no
  RQ path (success, failure, registry cleanup) can act on them;
- bounds what it tolerates: the timeout, the retries and their intervals; and takes
  the queue the job really came from as its origin (which picks the verdict stream),
  not the one the hash claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import as_text

from .. import defaults
from . import rq_compat
from .jobs import FAILURE_CALLBACK, SCAN_FUNCTION


@dataclass(frozen=True)
class JobRules:
    """The terms a worker runs jobs on."""

    allowed_functions: frozenset[str] = frozenset({SCAN_FUNCTION})
    failure_callback: str = FAILURE_CALLBACK
    max_timeout_s: int = defaults.JOB_TIMEOUT_S
    max_retries: int = defaults.MAX_JOB_RETRIES


@dataclass(frozen=True)
class Refusal:
    """Why a job is not run: ``kind`` labels the metric, ``text`` goes to the log and verdict."""

    kind: str
    text: str


def guard(job: Job, queue: Queue, rules: JobRules) -> Refusal | None:
    """Put ``job`` on our terms; returns why it must be refused, or None to run it."""
    try:
        refusal = _refusal(job, rules)
    except Exception as exc:  # noqa: BLE001 - DeserializationError, or anything a hostile payload causes
        refusal = Refusal("not_json", f"job data is not a JSON job ({type(exc).__name__}); only JSON jobs are run")
    foreign = rq_compat.foreign_fields(job, failure_callback=rules.failure_callback)
    if refusal is None and foreign:
        refusal = Refusal("fields", f"the job hash sets {', '.join(foreign)}; workers run only their own callbacks"
                                    " and schedule jobs themselves")
    rq_compat.neutralize(job, failure_callback=rules.failure_callback)
    job.origin = queue.name
    if not job.timeout or job.timeout < 0 or job.timeout > rules.max_timeout_s:
        job.timeout = rules.max_timeout_s
    if job.retries_left is not None:
        job.retries_left = max(0, min(job.retries_left, rules.max_retries))
    # A worker runs no scheduler: a retry waits for nothing (RQ schedules one with an
    # interval, and an empty list made its retry raise).
    job.retry_intervals = None
    # meta is the producer's too: only our attempts counter survives, as an int.
    job.meta = {"attempts": rq_compat.attempts_of(job)}
    rq_compat.neutralize_stored(job.connection, job.id, failure_callback=rules.failure_callback, origin=queue.name,
                                timeout=int(job.timeout), retries_left=job.retries_left,
                                attempts=job.meta["attempts"])
    return refusal


def defuse_registered(queue: Queue, rules: JobRules, *, refuse: Callable[[Queue, str, str], None]) -> None:
    """Before RQ's own maintenance reads them, put the jobs of ``queue``'s
    StartedJobRegistry and intermediate list on our terms.

    RQ's registry cleanup calls an expired job's failure callback and sends its webhooks
    straight from the stored hash, and anyone who can write to Redis can plant an entry
    there without the job ever being dequeued. So each such hash gets its behaviour
    fields cleared and our failure callback first; one RQ cannot even read (it used to
    make the worker exit) is taken out and refused through ``refuse``.
    """
    connection = queue.connection
    intermediate = [as_text(j) for j in connection.lrange(rq_compat.intermediate_key(queue.key), 0, -1)]
    for job_id in dict.fromkeys(rq_compat.started_job_ids(queue) + intermediate):
        if not connection.exists(rq_compat.job_key(job_id)):
            continue
        try:
            Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except Exception as exc:  # noqa: BLE001 - whatever a hostile hash makes RQ raise
            rq_compat.drop_started(queue, job_id)
            refuse(queue, job_id, f"RQ cannot read the job ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        rq_compat.neutralize_stored(connection, job_id, failure_callback=rules.failure_callback, origin=queue.name)


def _refusal(job: Job, rules: JobRules) -> Refusal | None:
    name = job.func_name
    if name not in rules.allowed_functions:
        return Refusal("function", f"function {name!r} is not a PhotoSentry job function")
    if job.instance is not None or job.kwargs or len(job.args) != 1:
        return Refusal("shape", "a scan job takes exactly one positional argument, its payload"
                                " (no instance, no keyword arguments)")
    return None
