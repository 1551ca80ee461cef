"""The queue worker process: an RQ SimpleWorker that keeps models warm and loses no job.

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

- **JSON only, our jobs on our terms.** The serializer is RQ's JSONSerializer, and
  :mod:`~photosentry.worker.jobguard` refuses (with the upload's fail-closed verdict)
  a job whose data is not JSON, which names any function other than the scan job, or
  whose hash sets callbacks, webhooks, dependencies or repeats of its own; our
  failure callback always runs. With JSON, a job still names a function by dotted
  path; without the guard anyone who can write to Redis could call ``os.system``.
- **Liveness and recovery** (:mod:`~photosentry.worker.recovery`): a liveness key
  refreshed every second, and one worker of the fleet at a time requeuing the jobs of
  dead workers.
- **No job lost at dequeue** (:class:`~photosentry.worker.dequeue.ReliableQueue`).
- **Graceful shutdown.** SIGTERM: finish the current job, then exit (RQ's warm
  shutdown). A second SIGTERM or SIGINT: put the current job back at the front of
  its queue, without using up a retry, and exit at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import now

from .. import defaults
from ..errors import JobRefused
from . import logs, rq_compat
from .dequeue import ReliableQueue, refuse_unreadable_job
from .jobguard import JobRules, Refusal, defuse_registered, guard
from .jobs import SCAN_FUNCTION
from .recovery import (RECOVER_LOCK_KEY, WORKER_NAME_PREFIX, alive_key, give_up_with_verdict, new_worker_name,
                       recover_abandoned, recover_intermediate, requeue_job)

log = logging.getLogger(__name__)

WATCHDOG_GRACE_S = 30.0
"""How long past its timeout a job may sit in C code before the watchdog ends the process."""

COMMAND_POLL_S = 0.5
"""Longest read of the listener for RQ's pubsub commands; it bounds how long a stopping
worker waits for that thread (see :meth:`ScanWorker.subscribe`)."""


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


class ScanWorker(SimpleWorker):
    """An RQ SimpleWorker for scan jobs; see the module docstring for what it adds.

    Args:
        queues: queue names in priority order (default: uploads, then bulk).
        max_job_timeout: an upper bound on any job's own timeout (seconds).
        alive_ttl_s, recover_interval_s: liveness key TTL and recovery period.
        (other keyword arguments go to :class:`rq.SimpleWorker`; ``serializer`` must
        be JSON.)
    """

    allowed_functions: frozenset[str] = frozenset({SCAN_FUNCTION})
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
        callback_drain_s: float = defaults.CALLBACK_DRAIN_S,
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
        self.job_rules = JobRules(allowed_functions=self.allowed_functions, max_timeout_s=max_job_timeout)
        self.alive_ttl_s = alive_ttl_s
        self.recover_interval_s = recover_interval_s
        self.metrics = metrics
        self.callback_drain_s = callback_drain_s
        self._deliverer: Any | None = None
        self._current_job: Job | None = None
        self._job_started_mono: float | None = None
        self._stop_thread = threading.Event()
        self._thread: threading.Thread | None = None
        self._recoverer: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        logs.worker_var.set(self.name)
        self._beat()  # alive before the first dequeue, so no recoverer takes our job
        super().bootstrap(*args, **kwargs)
        self._recover()
        self._thread = threading.Thread(target=self._liveness_loop, name="photosentry-liveness", daemon=True)
        self._thread.start()
        self._deliverer = _installed_deliverer()
        if self._deliverer is not None:
            self._deliverer.start()

    def teardown(self) -> None:
        self._stop_thread.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._recoverer is not None:  # a job it took from a dead worker is owed its verdict
            self._recoverer.join(timeout=defaults.GIVE_UP_READ_S + 30.0)
        if self._deliverer is not None:
            # A burst run's last verdicts (or a stopping worker's) still reach their receivers.
            self._deliverer.stop(drain_s=self.callback_drain_s)
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
        rq_compat.subscribe_with_poll(self, COMMAND_POLL_S)

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
        except StopRequested:
            raise  # SIGTERM arrived meanwhile: RQ's handler stops an idle worker by raising it
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
            if time.monotonic() - last_recover >= self.recover_interval_s and not self._recovering():
                # On a thread of its own: giving a job up reads its photo again (seconds,
                # bounded), and the beat must not stop meanwhile, or this worker would be
                # taken for dead and its own job recovered under it.
                self._recoverer = threading.Thread(target=self._recover, name="photosentry-recover", daemon=True)
                self._recoverer.start()
                last_recover = time.monotonic()

    def _recovering(self) -> bool:
        return self._recoverer is not None and self._recoverer.is_alive()

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
        refusal = guard(job, queue, self.job_rules)
        if refusal is not None:
            self._refuse(job, queue, refusal)
            return
        # Counted by us: RQ's number_of_retries only counts jobs that return Retry.
        job.meta["attempts"] = rq_compat.attempts_of(job) + 1
        job.save_meta()
        self._current_job, self._job_started_mono = job, time.monotonic()
        try:
            super().execute_job(job, queue)
        finally:
            self._current_job = self._job_started_mono = None

    def clean_registries(self) -> None:
        """RQ's registry maintenance, after every registered job hash is defused (RQ's
        cleanup would call a planted entry's callbacks and webhooks, and exit the worker
        on one it cannot read), and never ending the worker."""
        for queue in self.queues:
            try:
                rq_compat.registry_maintenance(
                    self, queue, before=lambda q: defuse_registered(q, self.job_rules, refuse=_refuse_registered))
            except StopRequested:
                # SIGTERM during maintenance: RQ stops an idle worker by raising this from
                # its signal handler; swallowed, the worker went on to wait for jobs and
                # never stopped (tests/test_queue_e2e.py's SIGTERM test, 2 runs in 3).
                raise
            except Exception:  # noqa: BLE001 - maintenance is tried again on the next tick
                log.exception("registry maintenance of queue %s failed", queue.name)
        self.last_cleaned_at = now()

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # RQ removes the intermediate entry only for single-queue workers; ReliableQueue
        # puts one there for any number of queues.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def _refuse(self, job: Job, queue: Queue, refusal: Refusal) -> None:
        """Fail ``job`` without running it, and give its upload the fail-closed verdict a
        job that cannot be scanned gets (when its payload names a usable upload id)."""
        why = refusal.text
        log.error("job refused: %s", why, extra={"job_id": job.id})
        if self.metrics is not None:
            self.metrics.refused.labels(refusal.kind).inc()
        execution = self.prepare_execution(job)
        self.connection.lrem(rq_compat.intermediate_key(queue.key), 1, job.id)  # ReliableQueue moved it there
        job.retries_left = 0
        job.started_at = job.ended_at = now()
        self.handle_job_failure(job, queue, exc_string=f"refused: {why}", execution=execution)
        from .service import fail_closed

        fail_closed(job, self.connection, JobRefused(why))
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


def _installed_deliverer() -> Any | None:
    """Callback delivery threads for the scan service installed in this process, if any."""
    from .service import current_service

    try:
        service = current_service()
    except RuntimeError:
        return None
    return service.deliverer()


def _refuse_registered(queue: Queue, job_id: str, why: str) -> None:
    refuse_unreadable_job(queue.connection, queue.key, job_id, why)
