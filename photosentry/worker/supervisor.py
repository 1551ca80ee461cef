"""The worker supervisor: N warm worker processes, restarted when they die.

:func:`run_pool` starts the processes with the ``spawn`` start method (no ``fork``:
each child imports and loads everything itself), restarts any that die, recovers a
dead child's job at once instead of waiting for its liveness key to expire, forwards
SIGTERM, and serves the summed Prometheus metrics. Each child also ends when the
supervisor dies, however it dies (:func:`photosentry.procs.end_with_parent`): an
orphaned worker would go on taking jobs that nobody supervises.

The supervisor's loop only watches, restarts and signals: nothing on it may wait on a
photo's source. A dead child's job is put back on its queue from the loop (Redis
commands), but giving it up is handed to a thread, because recording its verdict reads
the photo again (within :data:`~photosentry.defaults.GIVE_UP_READ_S`): a stalled S3
server used to hold the loop there, and the pool stopped restarting workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq.serializers import JSONSerializer

from .. import defaults
from ..config import redact_url
from ..procs import end_with_parent
from . import logs, rq_compat
from .recovery import alive_key, give_up_with_verdict, new_worker_name, recover_abandoned
from .scan_worker import ScanWorker

log = logging.getLogger(__name__)

SETUP_EXIT_CODE = 3
"""Exit status of a worker process that could not build its service (model, policy, Redis)."""
REDIS_RETRY_MAX_S = 10.0
"""Longest wait between a starting worker process's attempts to reach a Redis that is down."""
RECOVERY_MARGIN_S = 30.0
"""How long, beyond reading the photo again, a stopping supervisor waits for the jobs of
dead workers it is still giving up (their verdicts are owed)."""


def _child_main(settings: Any, name: str, queues: Sequence[str], burst: bool, max_job_timeout: int,
                log_json: bool, verbose: bool, parent_pid: int) -> None:
    """Entry point of one worker process (spawned: nothing inherited but arguments)."""
    # SIGTERM when the supervisor dies: finish (or, on the watchdog's second signal,
    # requeue) the current job and exit, never go on unsupervised.
    end_with_parent(parent_pid, signal.SIGTERM)
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
    metrics_host: str = defaults.METRICS_HOST,
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
        metrics_mod.serve(metrics_port, registry, addr=metrics_host)
        log.info("serving metrics on %s:%d/metrics", metrics_host, metrics_port)

    ctx = multiprocessing.get_context("spawn")
    children: dict[str, Any] = {}
    giving_up: list[threading.Thread] = []
    state = {"stopping": False, "signals": 0, "deadline": None}

    def start_one() -> None:
        name = new_worker_name()
        proc = ctx.Process(target=_child_main, name=name,
                           args=(settings, name, tuple(queues), burst, max_job_timeout, log_json, verbose,
                                 os.getpid()))
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
                giving_up[:] = [t for t in giving_up if t.is_alive()]
                giving_up += _after_child_exit(client, name, proc, queues, settings)
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
        # A job being given up was taken from its registry already: its verdict is owed.
        end = time.monotonic() + defaults.GIVE_UP_READ_S + RECOVERY_MARGIN_S
        for thread in giving_up:
            thread.join(max(0.0, end - time.monotonic()))
            if thread.is_alive():
                log.error("a dead worker's job is still being given up (%s); stopping anyway", thread.name)
        for s, handler in old.items():
            signal.signal(s, handler)
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
        client.close()
    return status


def _after_child_exit(client: redis.Redis, name: str, proc: Any, queues: Sequence[str],
                      settings: Any) -> list[threading.Thread]:
    """A child is gone: if it died, recover its job now rather than when its key expires.

    Putting a job back on its queue is a few Redis commands and happens here, before
    the loop decides whether to restart (a burst pool restarts while jobs are queued).
    Giving a job up is handed to a thread (returned): it reads the photo again.
    """
    from . import metrics as metrics_mod

    metrics_mod.mark_process_dead(proc.pid)
    if proc.exitcode == 0:
        return []
    log.warning("worker %s exited with status %s; recovering its job", name, proc.exitcode)
    giving_up: list[threading.Thread] = []

    def give_up_off_the_loop(job: Any, why: str) -> None:
        thread = threading.Thread(target=give_up_with_verdict, args=(job, why), kwargs={"settings": settings},
                                  daemon=True, name=f"photosentry-give-up-{job.id}")
        thread.start()
        giving_up.append(thread)

    try:
        client.delete(alive_key(name))
        recover_abandoned(client, queues, give_up=give_up_off_the_loop, is_dead=lambda owner: owner == name)
        # Drop its registration so `rq info` does not list a ghost until the TTL passes.
        worker = ScanWorker.find_by_key(ScanWorker.redis_worker_namespace_prefix + name, connection=client,
                                        serializer=JSONSerializer)
        if worker is not None:
            worker.register_death()
            client.delete(worker.key)
    except Exception:  # noqa: BLE001 - the other workers' liveness recovery is the fallback
        log.exception("could not recover the job of worker %s", name)
    return giving_up


def _queued(client: redis.Redis, queues: Sequence[str]) -> bool:
    return any(client.llen(rq_compat.queue_key(q)) for q in queues)
