"""The queue worker: warm processes that take scan jobs off RQ, and their supervisor.

Why a SimpleWorker subclass. RQ's default :class:`rq.Worker` forks a work horse per
job. A fresh horse would either reload the ResNet-50 and the bank index for every
photo (about a second each, against a 0.1 s scan) or inherit ONNX Runtime's thread
pools across ``fork()``, which they do not survive (threads are not copied; the
child can deadlock on a pool lock held at fork time). :class:`rq.SimpleWorker` runs
the job in the worker process itself, so models and index are loaded once and stay
warm. Its job timeout still holds: SimpleWorker keeps RQ's default
``UnixSignalDeathPenalty`` (SIGALRM in the worker's main thread), which raises
``JobTimeoutException`` inside the job (tests/test_worker.py checks it in-process).
A signal is handled between Python bytecodes, so a single long C call (one ONNX run)
finishes first; for a job wedged inside C for good, a watchdog thread ends the
process ``timeout + 30 s`` in, and its job is recovered like any lost job.

What :class:`ScanWorker` adds to SimpleWorker:

- **JSON only, allow-listed functions.** The serializer is RQ's JSONSerializer, and a
  job whose data is not JSON (e.g. pickle) or which names any function other than
  the scan job is failed without being deserialised further or called. With JSON,
  a job still names a function by dotted path; without the allow-list anyone who
  can write to Redis could call ``os.system``.
- **Liveness and recovery.** A thread refreshes ``photosentry:worker:alive:<name>``
  every second (TTL 5 s). Every second one worker of the fleet (the holder of a short
  Redis lock) looks for jobs in the StartedJobRegistry of our queues whose worker's
  key has expired. Each is claimed with one ZREM (so two
  recoverers never both act) and retried - or, out of retries, given up with a
  recorded ``scan_failed`` verdict. RQ's own cleanup would only notice such a job
  ``timeout + 60 s`` after it started, and only on its 10-minute maintenance tick.
- **No job lost at dequeue.** With two queues RQ pops with ``BLPOP`` and only then
  registers the job as started, so a worker killed between the two lost the job.
  :class:`ReliableQueue` moves each job atomically (``LMOVE``) into its queue's RQ
  intermediate list, in strict priority order, and the recovery scan requeues
  entries that stay there unregistered (:func:`recover_intermediate`).
- **Graceful shutdown.** SIGTERM: finish the current job, then exit (RQ's warm
  shutdown). A second SIGTERM or SIGINT: put the current job back at the front of
  its queue, without using up a retry, and exit at once.

The supervisor (:func:`run_pool`) starts N such processes with the ``spawn`` start
method (no ``fork``: each child imports and loads everything itself), restarts any
that die, recovers a dead child's job at once, forwards SIGTERM and serves the
summed Prometheus metrics.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import as_text, now

from .. import defaults
from ..config import redact_url
from . import logs
from .jobs import FAILURE_CALLBACK, SCAN_FUNCTION

log = logging.getLogger(__name__)

WORKER_NAME_PREFIX = "photosentry."
"""Names of our worker processes start with this; recovery only touches their jobs."""

ALIVE_KEY_PREFIX = "photosentry:worker:alive:"
RECOVER_LOCK_KEY = "photosentry:worker:recover-lock"
ALLOWED_FUNCTIONS = frozenset({SCAN_FUNCTION})
WATCHDOG_GRACE_S = 30.0
"""How long past its timeout a job may sit in C code before the watchdog ends the process."""

INTERMEDIATE_SEEN_KEY = "photosentry:worker:intermediate-seen"
"""Hash ``<queue>:<job id>`` -> when the recovery scan first saw that job dequeued but unregistered."""
INTERMEDIATE_GRACE_S = 10.0
"""How long a job may sit in an intermediate list, not yet started, before it is requeued.

A live worker registers its job within milliseconds of the LMOVE; only a dead one (or
one cut off from Redis) leaves it there. A requeued job that did run after all runs
twice, which is harmless: verdicts are recorded once per upload id."""
BLOCK_S = 0.5
"""Longest blocking wait (on the top-priority queue) before the lower queues are polled again."""

MAX_JOB_DATA_BYTES = 16 * 1024 * 1024
"""Largest job ``data`` a worker will decompress and parse: an inline photo at the 10 MB
limit is 13.4 MB of base64. RQ inflates zlib-compressed data without a bound, so a 1 MB
hostile job could otherwise take a gigabyte of the worker's memory."""

COMMAND_POLL_S = 0.5
"""Longest read of the listener for RQ's pubsub commands; it bounds how long a stopping
worker waits for that thread (see :meth:`ScanWorker.subscribe`)."""

SETUP_EXIT_CODE = 3
"""Exit status of a worker process that could not build its service (model, policy, Redis)."""
REDIS_RETRY_MAX_S = 10.0
"""Longest wait between a starting worker process's attempts to reach a Redis that is down."""


def alive_key(worker_name: str) -> str:
    return ALIVE_KEY_PREFIX + worker_name


def new_worker_name() -> str:
    return f"{WORKER_NAME_PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


# -- recovery ---------------------------------------------------------------------------


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
        pipe.lrem(queue.intermediate_queue_key, 1, job_id)
        if execution_id:
            Execution(execution_id, job_id, connection=connection, worker_name=job.worker_name or "").delete(job, pipe)
        if consume_retry and not job.retries_left:
            exc_string = f"abandoned: {why}"
            record_job_failure(job, exc_string, pipe)
            pipe.execute()
            if give_up is not None:
                give_up(job, why)
            return "failed"
        job.started_at = None
        if consume_retry:
            job.retry(queue, pipe)  # one retry used; back at the front when so configured
        else:
            # RQ's own requeue path (FailedJobRegistry.requeue) uses _enqueue_job too.
            queue._enqueue_job(job, pipeline=pipe, at_front=True)
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
                owner = Execution.fetch(execution_id, job_id, connection=connection).worker_name
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
        key = queue.intermediate_queue_key
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
    queue._enqueue_job(job, at_front=True)
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


# -- reliable dequeue -------------------------------------------------------------------


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
                job_id = connection.lmove(key, IntermediateQueue.get_intermediate_queue_key(key))
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
                job_id = connection.blmove(first, IntermediateQueue.get_intermediate_queue_key(first),
                                           min(BLOCK_S, left))
                if job_id is None:
                    continue
                found = first, job_id
            queue_key, job_id = as_text(found[0]), as_text(found[1])
            # A job hash is untrusted input: one RQ cannot parse (a bad date, status or
            # timeout) used to end the worker, and recovery put it back for the next one.
            problem = _oversized_job(connection, job_id)
            fetched = None
            if problem is None:
                try:
                    fetched = cls._fetch_dequeued_job(connection, queue_key, job_id, job_class=job_class,
                                                      serializer=serializer, death_penalty_class=death_penalty_class)
                except Exception as exc:  # noqa: BLE001 - whatever a hostile hash makes RQ raise
                    problem = f"RQ cannot read the job ({type(exc).__name__}: {str(exc)[:200]})"
            if problem is not None:
                refuse_unreadable_job(connection, queue_key, job_id, problem)
                continue
            if fetched is None:  # the job hash is gone: nothing to run, nothing to keep
                connection.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, job_id)
                continue
            return fetched


def _oversized_job(connection: redis.Redis, job_id: str) -> str | None:
    """Why the job's data is too big to read (compressed or not), or None."""
    key = f"rq:job:{job_id}"
    if connection.hstrlen(key, "data") > MAX_JOB_DATA_BYTES:
        return f"job data is over {MAX_JOB_DATA_BYTES} bytes"
    raw = connection.hget(key, "data")
    if raw is None:
        return None
    try:
        inflater = zlib.decompressobj()
        inflater.decompress(raw, MAX_JOB_DATA_BYTES)
        if inflater.unconsumed_tail:
            return f"job data inflates to over {MAX_JOB_DATA_BYTES} bytes"
    except zlib.error:
        pass  # not compressed: RQ reads it as it is
    return None


def refuse_unreadable_job(connection: redis.Redis, queue_key: str, job_id: str, why: str) -> None:
    """Fail a dequeued job whose hash cannot be read safely, without running it.

    It is taken off the intermediate list, marked failed and put in the queue's
    FailedJobRegistry by hand (RQ cannot load it), and, when its payload is readable
    JSON with a usable upload id, the upload gets its fail-closed verdict like any
    other job that could not be scanned.
    """
    queue_name = queue_key.rsplit(":", 1)[-1]
    log.error("job refused: %s", why, extra={"job_id": job_id})
    key = f"rq:job:{job_id}"
    with connection.pipeline() as pipe:
        pipe.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, job_id)
        pipe.hset(key, mapping={"status": JobStatus.FAILED.value, "exc_info": f"refused: {why}",
                                "ended_at": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        pipe.zadd(f"rq:failed:{queue_name}", {job_id: time.time() + defaults.FAILURE_TTL_S})
        pipe.execute()
    payload = _readable_payload(connection, key)
    if payload is None:
        return
    try:
        from .service import current_service

        current_service().record_failure(payload, job_id=job_id, why=f"job refused: {why}", queue=queue_name)
    except Exception:  # noqa: BLE001 - the job is failed and logged either way
        log.exception("could not record the fail-closed verdict of refused job %s", job_id)


def _readable_payload(connection: redis.Redis, key: str) -> dict[str, Any] | None:
    import json

    if _oversized_job(connection, key.split(":", 2)[-1]) is not None:
        return None
    raw = connection.hget(key, "data")
    try:
        raw = zlib.decompress(raw) if raw else raw
    except zlib.error:
        pass
    try:
        data = json.loads(raw) if raw else None
        payload = data[2][0] if isinstance(data, list) and len(data) > 2 and data[2] else None
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return payload if isinstance(payload, dict) else None


class ScanJobTimeoutException(BaseException):
    """The job timeout, raised in the job by SIGALRM.

    RQ's own JobTimeoutException is an ``Exception``, so the scan's last line of
    fail-closed (and the decoder's catch-all) caught it and recorded a verdict of their
    own: a slow but valid photo came out ``unreadable`` and was never retried. As a
    BaseException it reaches RQ, which fails the attempt: the job is retried, then
    ends ``scan_failed``, as for any other failure.
    """


class ScanDeathPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM death penalty, raising :class:`ScanJobTimeoutException`."""

    def __init__(self, timeout: Any, exception: Any = None, **kwargs: Any) -> None:
        super().__init__(timeout, ScanJobTimeoutException, **kwargs)


# -- the worker -------------------------------------------------------------------------


class ScanWorker(SimpleWorker):
    """An RQ SimpleWorker for scan jobs; see the module docstring for what it adds.

    Args:
        queues: queue names in priority order (default: uploads, then bulk).
        max_job_timeout: an upper bound on any job's own timeout (seconds).
        alive_ttl_s, recover_interval_s: liveness key TTL and recovery period.
        (other keyword arguments go to :class:`rq.SimpleWorker`; ``serializer`` must
        be JSON.)
    """

    allowed_functions: frozenset[str] = ALLOWED_FUNCTIONS
    queue_class = ReliableQueue
    death_penalty_class = ScanDeathPenalty

    def __init__(
        self,
        queues: Sequence[str] = defaults.QUEUES,
        name: str | None = None,
        *,
        max_job_timeout: int = defaults.JOB_TIMEOUT_S,
        alive_ttl_s: float = defaults.WORKER_ALIVE_TTL_S,
        recover_interval_s: float = defaults.REAPER_INTERVAL_S,
        metrics: Any | None = None,
        **kwargs: Any,
    ) -> None:
        serializer = kwargs.setdefault("serializer", JSONSerializer)
        if serializer not in (JSONSerializer, "json", "rq.serializers.JSONSerializer"):
            raise ValueError("ScanWorker only runs JSON jobs; pickle never crosses Redis")
        kwargs["serializer"] = JSONSerializer
        name = name or new_worker_name()
        if not name.startswith(WORKER_NAME_PREFIX):
            raise ValueError(f"worker names must start with {WORKER_NAME_PREFIX!r} (recovery relies on it)")
        super().__init__(list(queues), name, **kwargs)
        self.max_job_timeout = max_job_timeout
        self.alive_ttl_s = alive_ttl_s
        self.recover_interval_s = recover_interval_s
        self.metrics = metrics
        self._current_job: Job | None = None
        self._job_started_mono: float | None = None
        self._stop_thread = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        logs.worker_var.set(self.name)
        self._beat()  # alive before the first dequeue, so no recoverer takes our job
        super().bootstrap(*args, **kwargs)
        self._recover()
        self._thread = threading.Thread(target=self._liveness_loop, name="photosentry-liveness", daemon=True)
        self._thread.start()

    def teardown(self) -> None:
        self._stop_thread.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.connection.delete(alive_key(self.name))
        except redis.RedisError:
            pass
        super().teardown()

    def subscribe(self) -> None:
        # RQ's own subscribe listens for `rq` commands (shutdown, stop-job) with 60 s
        # reads. redis-py 8.2 made PubSubWorkerThread.stop() join the listener without
        # a bound, and once the listener has read the UNSUBSCRIBE reply it waits those
        # 60 s to be subscribed again: a SIGTERMed worker then took a minute to exit
        # (tests/test_queue_e2e.py::test_sigterm_stops_the_pool_cleanly, one run in ~9).
        # Short reads bound the stop by COMMAND_POLL_S on any redis-py.
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=COMMAND_POLL_S, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def _beat(self) -> None:
        self.connection.set(alive_key(self.name), os.getpid(), px=int(self.alive_ttl_s * 1000))

    def _recover(self) -> None:
        try:
            # One worker in the whole fleet scans per interval: the scan reads every
            # started job, and a hundred workers doing it every second would add up.
            if not self.connection.set(RECOVER_LOCK_KEY, self.name, nx=True, px=int(self.recover_interval_s * 1000)):
                return
            done = recover_abandoned(self.connection, self.queue_names(), give_up=give_up_with_verdict)
            done += recover_intermediate(self.connection, self.queue_names())
        except Exception:  # noqa: BLE001 - recovery is retried on the next tick
            log.exception("recovering abandoned jobs failed")
            return
        if self.metrics is not None:
            for _, outcome in done:
                self.metrics.requeued.labels("worker_died").inc()

    def _liveness_loop(self) -> None:
        last_recover = time.monotonic()
        while not self._stop_thread.wait(min(1.0, self.alive_ttl_s / 3)):
            self._watchdog()
            try:
                self._beat()
            except redis.RedisError as exc:
                log.warning("liveness beat failed: %s", exc)
            if time.monotonic() - last_recover >= self.recover_interval_s:
                self._recover()
                last_recover = time.monotonic()

    def _watchdog(self) -> None:
        job, started = self._current_job, self._job_started_mono
        if job is None or started is None or not job.timeout or job.timeout < 0:
            return
        if time.monotonic() - started > job.timeout + WATCHDOG_GRACE_S:
            log.critical("job %s is stuck past its timeout (in C code?); ending this process so it is"
                         " recovered", job.id)
            os._exit(70)

    # jobs ------------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        refusal = self._refusal(job)
        if refusal is not None:
            self._refuse(job, queue, refusal)
            return
        if not job._failure_callback_name:
            # A foreign producer may omit it; fail-closed must not depend on the producer.
            job._failure_callback_name = FAILURE_CALLBACK
        if not job.timeout or job.timeout < 0 or job.timeout > self.max_job_timeout:
            job.timeout = self.max_job_timeout
        # Counted by us: RQ's number_of_retries only counts jobs that return Retry.
        job.meta["attempts"] = int(job.meta.get("attempts", 0) or 0) + 1
        job.save_meta()
        self._current_job, self._job_started_mono = job, time.monotonic()
        try:
            super().execute_job(job, queue)
        finally:
            self._current_job = self._job_started_mono = None

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # RQ removes the intermediate entry only for single-queue workers; ReliableQueue
        # puts one there for any number of queues.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def _refusal(self, job: Job) -> str | None:
        try:
            name = job.func_name
        except Exception as exc:  # noqa: BLE001 - DeserializationError, or anything a hostile payload causes
            return f"job data is not a JSON job ({type(exc).__name__}); only JSON jobs are run"
        if name not in self.allowed_functions:
            return f"function {name!r} is not a PhotoSentry job function"
        return None

    def _refuse(self, job: Job, queue: Queue, why: str) -> None:
        log.error("job refused: %s", why, extra={"job_id": job.id})
        if self.metrics is not None:
            self.metrics.refused.labels("not_json" if "not a JSON" in why else "function").inc()
        execution = self.prepare_execution(job)
        self.connection.lrem(queue.intermediate_queue_key, 1, job.id)  # ReliableQueue moved it there
        job.retries_left = 0
        job.started_at = job.ended_at = now()
        self.handle_job_failure(job, queue, exc_string=f"refused: {why}", execution=execution)
        self.set_state("idle")

    # signals ---------------------------------------------------------------------------

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Second SIGTERM/SIGINT: requeue the current job (no retry used) and exit now."""
        requested = self._shutdown_requested_date
        if requested is not None and now() - requested < timedelta(seconds=1):
            return  # the same Ctrl+C delivered twice (by the terminal and the supervisor)
        job = self._current_job
        if job is not None:
            try:
                outcome = requeue_job(self.connection, job.id, execution_id=self._execution_id(),
                                      consume_retry=False, why="worker stopped")
                log.warning("cold shutdown: current job put back", extra={"job_id": job.id, "outcome": outcome})
                if self.metrics is not None:
                    self.metrics.requeued.labels("shutdown").inc()
            except Exception:  # noqa: BLE001 - recovery by liveness still catches it
                log.exception("could not requeue job %s on cold shutdown", job.id)
        self._stop_thread.set()
        try:
            self.connection.delete(alive_key(self.name))
            self.register_death()
        except redis.RedisError:
            pass
        logging.shutdown()
        os._exit(1)

    def _execution_id(self) -> str | None:
        execution = next(iter(self.executions.values()), None)
        return execution.id if execution is not None else None


# -- the supervisor ---------------------------------------------------------------------


def _child_main(settings: Any, name: str, queues: Sequence[str], burst: bool, max_job_timeout: int,
                log_json: bool, verbose: bool) -> None:
    """Entry point of one worker process (spawned: nothing inherited but arguments)."""
    logs.configure(logging.DEBUG if verbose else logging.INFO, json_format=log_json)
    logs.worker_var.set(name)
    # SIGTERM while loading models: just exit (nothing taken yet).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    from .service import ScanService, install

    wait = 0.5
    while True:
        try:
            service = ScanService(settings)
            break
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, redis.AuthenticationError):
                log.critical("worker could not start: %s", exc)
                os._exit(SETUP_EXIT_CODE)
            # Redis restarting is not a set-up error: exiting with SETUP_EXIT_CODE here
            # made the supervisor stop the whole pool after a one-second Redis restart
            # (scripts/drill_faults.py). Nothing was taken yet, so just wait for it.
            log.warning("Redis is unreachable while starting (%s); retrying in %.1f s", exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, REDIS_RETRY_MAX_S)
        except Exception as exc:  # noqa: BLE001 - report and exit with the set-up status
            log.critical("worker could not start: %s", exc, exc_info=True)
            os._exit(SETUP_EXIT_CODE)
    install(service)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    worker = ScanWorker(queues, name=name, connection=service.redis, max_job_timeout=max_job_timeout,
                        metrics=service.metrics)
    worker.work(burst=burst, logging_level="DEBUG" if verbose else "INFO")


def run_pool(
    settings: Any,
    *,
    processes: int = 1,
    burst: bool = False,
    queues: Sequence[str] = defaults.QUEUES,
    max_job_timeout: int = defaults.JOB_TIMEOUT_S,
    metrics_port: int | None = None,
    log_json: bool = True,
    verbose: bool = False,
    shutdown_grace_s: float | None = None,
) -> int:
    """Run ``processes`` worker processes until stopped (or, with ``burst``, until the
    queues are empty). Returns an exit status: 0, or 3 when a worker could not start.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    grace = shutdown_grace_s if shutdown_grace_s is not None else max_job_timeout + 10.0
    client = redis.Redis.from_url(settings.redis_url)
    client.ping()
    log.info("starting %d worker process(es) on %s, queues %s", processes, redact_url(settings.redis_url),
             ",".join(queues))

    multiproc_dir = None
    if metrics_port is not None:
        from . import metrics as metrics_mod

        multiproc_dir = tempfile.mkdtemp(prefix="photosentry-metrics-")
        os.environ[metrics_mod.MULTIPROC_ENV] = multiproc_dir
        registry = metrics_mod.multiprocess_registry()
        registry.register(metrics_mod.QueueDepthCollector(client, queues))
        metrics_mod.serve(metrics_port, registry)
        log.info("serving metrics on :%d/metrics", metrics_port)

    ctx = multiprocessing.get_context("spawn")
    children: dict[str, Any] = {}
    state = {"stopping": False, "signals": 0, "deadline": None}

    def start_one() -> None:
        name = new_worker_name()
        proc = ctx.Process(target=_child_main, name=name,
                           args=(settings, name, tuple(queues), burst, max_job_timeout, log_json, verbose))
        proc.start()
        children[name] = proc

    def on_signal(signum: int, frame: Any) -> None:
        state["signals"] += 1
        if not state["stopping"]:
            state["stopping"] = True
            state["deadline"] = time.monotonic() + grace
            log.info("stopping: workers finish their current job (signal again to requeue it and stop now)")
        for proc in children.values():
            if proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for _ in range(processes):
            start_one()
        while children:
            time.sleep(0.1)
            for name, proc in list(children.items()):
                if proc.is_alive():
                    continue
                proc.join()
                del children[name]
                _after_child_exit(client, name, proc, queues, settings)
                if proc.exitcode == SETUP_EXIT_CODE:
                    status = SETUP_EXIT_CODE
                    state["stopping"] = True
                    on_signal(signal.SIGTERM, None)
                    continue
                crashed = proc.exitcode != 0
                if state["stopping"]:
                    continue
                if not burst or (crashed and _queued(client, queues)):
                    log.warning("restarting worker %s (exit %s)", name, proc.exitcode)
                    start_one()
            deadline = state["deadline"]
            if state["stopping"] and deadline is not None and time.monotonic() > deadline:
                for name, proc in children.items():
                    if proc.is_alive():
                        log.error("worker %s did not stop within %.0f s; killing it", name, grace)
                        proc.kill()
                state["deadline"] = None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
        client.close()
    return status


def _after_child_exit(client: redis.Redis, name: str, proc: Any, queues: Sequence[str], settings: Any) -> None:
    """A child is gone: if it died, recover its job now rather than when its key expires."""
    from . import metrics as metrics_mod

    metrics_mod.mark_process_dead(proc.pid)
    if proc.exitcode == 0:
        return
    log.warning("worker %s exited with status %s; recovering its job", name, proc.exitcode)
    try:
        client.delete(alive_key(name))
        recover_abandoned(client, queues, give_up=functools.partial(give_up_with_verdict, settings=settings),
                          is_dead=lambda owner: owner == name)
        # Drop its registration so `rq info` does not list a ghost until the TTL passes.
        worker = ScanWorker.find_by_key(ScanWorker.redis_worker_namespace_prefix + name, connection=client,
                                        serializer=JSONSerializer)
        if worker is not None:
            worker.register_death()
            client.delete(worker.key)
    except Exception:  # noqa: BLE001 - the other workers' liveness recovery is the fallback
        log.exception("could not recover the job of worker %s", name)


def _queued(client: redis.Redis, queues: Sequence[str]) -> bool:
    return any(client.llen(f"rq:queue:{q}") for q in queues)
