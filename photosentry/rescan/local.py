"""``rescan --local``: a pool of scanner processes on this machine.

Each process is started with ``spawn`` (ONNX Runtime's thread pools do not survive
``fork``) and builds its scanner once, in the pool initializer: policy, bank index,
a one-thread model by default, warmed up. It then takes a batch of photos at a time
(``--batch``: frames per model call, default by the model's provider):

    fetch each (confined to the source roots, like a worker) -> verdict cache ->
    Scanner.scan_many over the rest (the model runs over several photos per call)

and returns one verdict per photo; each equals what a one-photo scan gives. A batch
being filled is sent when full, when a process would otherwise sit idle, or after
``RESCAN_BATCH_LINGER_S``. A batch whose process died is retried photo by photo, and
only those solo attempts count towards ``MAX_ATTEMPTS``, so a photo that crashes its
decoder costs only its own verdict. It never moves anything itself: the parent writes the
report row first and only then moves a quarantined or blocked photo, through the
same :class:`~photosentry.worker.actions.ActionApplier` as a worker. A kill between
the two leaves a row whose move has not happened; resuming applies it again (moves
are idempotent). The opposite order would leave a moved photo with no row, which a
resume would then report as missing.

With ``--redis-url`` the processes use the shared Redis bank and verdict cache, so
their verdicts, cache entries included, are the ones queue workers would give.
Without it they use the embedded SQLite bank of the data directory and no cache,
like ``photosentry scan``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from .. import defaults
from ..config import data_dir, ensure_private_dir
from ..errors import UnreadableImage
from ..procs import end_with_parent
from ..worker.cache import VerdictCache
from ..worker.sources import Fetched, Origin, SourceRefused, SourceRoots, source_for
from ..worker.verdict import Action, ReasonCode, Verdict
from .report import missing_row, verdict_row
from .runner import Finished
from .source import Item

#: A photo whose process died under it is tried this many times before it is given
#: a fail-closed ``scan_failed`` verdict (a decoder crash must not loop forever).
MAX_ATTEMPTS = 2


@dataclass(frozen=True)
class LocalSettings:
    """What each pool process needs to build its scanner (picklable)."""

    #: Folders and ``s3://`` prefixes photos may be read from.
    source_roots: tuple[str, ...]
    data_dir: str | None = None
    #: The workers' ``--store`` (a folder or ``s3://bucket/prefix/``); None: the data directory.
    store: str | None = None
    policy_path: str | None = None
    redis_url: str | None = None
    threads: int = 1
    providers: tuple[str, ...] = ()
    #: False bypasses the verdict cache on lookup (``--force``); fresh verdicts are still cached.
    use_cache: bool = True
    #: Frames per model call (and photos per pool task); None: the scanner's default for its provider.
    batch_size: int | None = None
    cache_ttl_s: int = defaults.VERDICT_CACHE_TTL_S
    refresh_interval_s: float = defaults.BANK_REFRESH_INTERVAL_S


@dataclass(frozen=True)
class Outcome:
    """What a pool process found for one photo."""

    verdict: Verdict | None = None
    #: Set when the file does not exist (then ``verdict`` is None).
    missing: str | None = None
    #: The bytes read, kept only for a verdict that moves the photo.
    fetched: Fetched | None = None
    #: An unexpected error for this photo alone (the parent makes it a ``scan_failed`` verdict).
    error: str | None = None


@dataclass
class _Task:
    item: Item
    upload_id: str
    #: Attempts alone in a pool task (a batch that died is retried photo by photo).
    attempts: int = 0


# -- inside a pool process -------------------------------------------------------------

_WORKER: "_PoolWorker | None" = None


class _PoolWorker:
    def __init__(self, settings: LocalSettings) -> None:
        from ..worker.assembly import ScannerSpec, build_scanner, open_bank_store

        self.settings = settings
        self.cache = None
        client = None
        if settings.redis_url:
            import redis

            client = redis.Redis.from_url(settings.redis_url)
            self.cache = VerdictCache(client, ttl_s=settings.cache_ttl_s)
        # The models a queue worker runs on this host (the verified artifact, else fp32;
        # the second opinions named in the environment), so both modes decide alike.
        store = open_bank_store(redis=client, data_dir_=settings.data_dir)
        spec = ScannerSpec(data_dir=settings.data_dir, policy_path=settings.policy_path, threads=settings.threads,
                           providers=settings.providers)
        self.scanner = build_scanner(spec, store)
        self.policy = self.scanner.policy
        self.batch_size = settings.batch_size or self.scanner.default_batch_size()
        self.roots = SourceRoots(settings.source_roots)

    def scan_many(self, tasks: list[tuple[str, dict[str, Any], str]], dry_run: bool) -> list[Outcome]:
        """One outcome per (source, context, upload id), in order; never raises for one photo."""
        from ..worker.pipeline import ScanItem

        # A ban made during the rescan applies to the rest of it.
        assert self.scanner.matcher is not None
        self.scanner.matcher.refresh(every_s=self.settings.refresh_interval_s)
        outcomes: list[Outcome | None] = [None] * len(tasks)
        to_scan: list[tuple[int, Fetched, str | None]] = []

        def items() -> Iterator[ScanItem]:
            # Consumed by scan_many as it goes: a photo is read only when the batch has room.
            for index, (source, context, upload_id) in enumerate(tasks):
                try:
                    found = self._lookup(source, context, upload_id, dry_run)
                except Exception as exc:  # noqa: BLE001 - a bug or a Redis error costs this photo only
                    found = Outcome(error=f"{type(exc).__name__}: {exc}")
                if isinstance(found, Outcome):
                    outcomes[index] = found
                    continue
                fetched, key = found
                to_scan.append((index, fetched, key))
                yield ScanItem(fetched.data, source, context)

        verdicts = self.scanner.scan_many(items(), batch_size=self.batch_size)
        for (index, fetched, key), verdict in zip(to_scan, verdicts, strict=True):
            upload_id = tasks[index][2]
            try:
                if key is not None:
                    self.cache.put(key, verdict)  # type: ignore[union-attr]
                outcomes[index] = self._moving(verdict, fetched, upload_id, dry_run)
            except Exception as exc:  # noqa: BLE001 - as above
                outcomes[index] = Outcome(error=f"{type(exc).__name__}: {exc}")
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    def _lookup(self, source: str, context: dict[str, Any], upload_id: str,
                dry_run: bool) -> Outcome | tuple[Fetched, str | None]:
        """An outcome without scanning (missing, refused, cached), or the bytes to scan and
        their cache key."""
        scanner = self.scanner
        try:
            fetched = self.roots.fetch(source_for(source), max_bytes=scanner.limits.max_bytes)
        except SourceRefused as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return Outcome(missing=exc.message)
            return Outcome(self._finish(scanner.failed(ReasonCode.SOURCE_REFUSED, exc.message, subject=source,
                                                        context=context), upload_id, dry_run))
        except UnreadableImage as exc:  # too large, or a read error
            return Outcome(self._finish(scanner.failed(ReasonCode(exc.code), exc.message, subject=source,
                                                        context=context), upload_id, dry_run))
        key = None
        if self.cache is not None:
            # The same key a queue worker computes, so both share cache entries.
            key = self.cache.key_for(fetched.data, policy=self.policy, context=context, scanner=scanner)
            cached = self.cache.hit(key, subject=source, context=context) if self.settings.use_cache else None
            if cached is not None:
                return self._moving(cached, fetched, upload_id, dry_run)
        return fetched, key

    def _moving(self, verdict: Verdict, fetched: Fetched, upload_id: str, dry_run: bool) -> Outcome:
        verdict = self._finish(verdict, upload_id, dry_run)
        moves = verdict.action is not Action.ALLOW and not dry_run
        return Outcome(verdict, fetched=fetched if moves else None)

    @staticmethod
    def _finish(verdict: Verdict, upload_id: str, dry_run: bool) -> Verdict:
        return replace(verdict, upload_id=upload_id, dry_run=dry_run)


def _init_process(settings: LocalSettings, parent_pid: int) -> None:
    global _WORKER
    # A rescan killed with SIGKILL must not leave its pool scanning (and moving files)
    # on its own; its checkpoint lets a new run resume instead.
    end_with_parent(parent_pid, signal.SIGKILL)
    # Ctrl-C reaches the whole terminal process group; only the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if settings.threads == 1:
        # One core per process: OpenCV's own pool (resizing in decode and hashing) would
        # otherwise start a thread per core in every process and oversubscribe the host.
        import cv2

        cv2.setNumThreads(1)
    _WORKER = _PoolWorker(settings)


def _scan_in_process(tasks: list[tuple[str, dict[str, Any], str]], dry_run: bool) -> list[Outcome]:
    assert _WORKER is not None, "pool initializer did not run"
    return _WORKER.scan_many(tasks, dry_run)


def _probe() -> tuple[int, int]:
    """(this process's id, its batch size)."""
    assert _WORKER is not None, "pool initializer did not run"
    time.sleep(0.02)  # long enough for a sibling that is ready to take the next probe
    return os.getpid(), _WORKER.batch_size


# -- in the parent ---------------------------------------------------------------------


class LocalBackend:
    """Runs items through a process pool, a batch per pool task; see the module docstring."""

    drains_on_stop = True

    def __init__(self, settings: LocalSettings, *, processes: int, run_id: str, dry_run: bool,
                 default_context: dict[str, Any]) -> None:
        from ..worker.policy import Policy

        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if settings.batch_size is not None and settings.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {settings.batch_size}")
        self.settings = settings
        self.processes = processes
        #: Photos per pool task; the processes' own batch size once start() has asked them.
        self.batch_size = settings.batch_size or 1
        self.run_id = run_id
        self.dry_run = dry_run
        self.default_context = default_context
        self.policy = Policy.from_file(settings.policy_path) if settings.policy_path else Policy.default()
        self.actions = None
        if not dry_run:
            from ..worker.stores import open_stores

            home = ensure_private_dir(data_dir(settings.data_dir))
            # Refuses a store or data directory inside a rescanned folder (or holding one).
            self.actions = open_stores(settings.store, home, source_roots=settings.source_roots).applier()
        self._pool = self._new_pool()
        self._tasks: dict[Future[list[Outcome]], list[_Task]] = {}
        self._filling: list[_Task] = []
        self._filling_since = 0.0
        self._ready: list[Finished] = []
        self._roots: SourceRoots | None = None  # for settle(), built when a resume needs it

    @property
    def capacity(self) -> int:
        """Photos in flight: a batch running in every process and one waiting for it."""
        return self.processes * 2 * self.batch_size

    def start(self) -> None:
        """Wait until every process has loaded its model (a set-up error surfaces here).

        A process still loading takes no task, so the ready ones answer every probe;
        probes go out until each process has answered one. Otherwise the first photos
        would wait for the slowest model load, and timings would count it. The answers
        carry each process's batch size (chosen for its model's provider).
        """
        seen: dict[int, int] = {}
        while len(seen) < self.processes:
            probes = [self._pool.submit(_probe) for _ in range(self.processes)]
            seen.update(probe.result() for probe in probes)
        self.batch_size = min(seen.values())

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_process, initargs=(self.settings, os.getpid()))

    def submit(self, item: Item, upload_id: str) -> None:
        if not self._filling:
            self._filling_since = time.monotonic()
        self._filling.append(_Task(item, upload_id))
        if len(self._filling) >= self.batch_size:
            self._send()

    def _send(self) -> None:
        """The batch being filled goes to the pool."""
        batch, self._filling = self._filling, []
        if batch:
            self._start(batch)

    def _start(self, batch: list[_Task]) -> None:
        if len(batch) == 1:
            batch[0].attempts += 1
        payload = [(t.item.source, {**self.default_context, **dict(t.item.context)}, t.upload_id) for t in batch]
        future = self._pool.submit(_scan_in_process, payload, self.dry_run)
        self._tasks[future] = batch

    def in_flight(self) -> int:
        return sum(len(batch) for batch in self._tasks.values()) + len(self._filling)

    def collect(self, timeout: float) -> list[Finished]:
        # A batch still filling goes now if the driver is about to wait (it cannot start
        # more, has no more, or is held by --rate) while a process has nothing to do, or
        # once its first photo has lingered: it never waits for photos that are not coming.
        idle = timeout > 0 and len(self._tasks) < self.processes
        if self._filling and (idle or time.monotonic() - self._filling_since >= defaults.RESCAN_BATCH_LINGER_S):
            self._send()
        out, self._ready = self._ready, []
        if not self._tasks:
            return out
        done, _ = wait(list(self._tasks), timeout=0 if out else timeout, return_when=FIRST_COMPLETED)
        broken: list[_Task] = []
        for future in done:
            batch = self._tasks.pop(future)
            try:
                outcomes = future.result()
            except BrokenProcessPool:
                broken.extend(batch)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug in one scan must not end the run
                if len(batch) > 1:
                    for task in batch:  # find the photo it belongs to; the others get their verdicts
                        self._start([task])
                    continue
                outcomes = [Outcome(error=f"{type(exc).__name__}: {exc}")]
            out.extend(self._finished(task, outcome) for task, outcome in zip(batch, outcomes, strict=True))
        if broken:
            out.extend(self._recover(broken))
        return out

    def _recover(self, broken: list[_Task]) -> list[Finished]:
        """A process died (out of memory, a crashing decoder): every task in flight failed
        with it. Start a new pool and try each photo again, alone, up to MAX_ATTEMPTS
        attempts alone."""
        for batch in self._tasks.values():  # the rest of the pool's tasks failed too
            broken.extend(batch)
        self._tasks.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        out = []
        for task in broken:
            if task.attempts >= MAX_ATTEMPTS:
                why = f"the scanning process died {task.attempts} times on this photo"
                out.append(self._finished(task, Outcome(self._failed(task, why))))
            else:
                self._start([task])
        return out

    def _failed(self, task: _Task, why: str) -> Verdict:
        from ..worker.pipeline import failure_verdict

        context = {**self.default_context, **dict(task.item.context)}
        verdict = failure_verdict(self.policy, ReasonCode.SCAN_FAILED, why, subject=task.item.source,
                                  context=context)
        return replace(verdict, upload_id=task.upload_id)

    def _finished(self, task: _Task, outcome: Outcome) -> Finished:
        if outcome.error is not None:
            outcome = Outcome(self._failed(task, outcome.error))
        if outcome.missing is not None:
            return Finished(task.item, missing_row(task.item, outcome.missing, run=self.run_id, dry_run=self.dry_run))
        assert outcome.verdict is not None
        row = verdict_row(task.item, outcome.verdict, run=self.run_id, dry_run=self.dry_run)
        act = None
        if self.actions is not None and outcome.fetched is not None:
            act = _Move(self.actions, outcome.verdict, self._bound(outcome.fetched), task.upload_id)
        return Finished(task.item, row, act)

    def _bound(self, fetched: Fetched) -> Fetched:
        """What a pool process read, with this process's S3 client to move it with (a
        client does not cross processes)."""
        from ..s3.objects import S3Object

        if not isinstance(fetched.origin, S3Object):
            return fetched
        if self._roots is None:
            self._roots = SourceRoots(self.settings.source_roots)
        return replace(fetched, origin=fetched.origin.bound(self._roots.s3_client))

    def settle(self, row: dict[str, Any], upload_id: str) -> bool:
        """Apply again the move of a row written just before an interruption.

        The file is moved only if it is still there and still has the bytes the row was
        decided on; True if it was moved now.
        """
        if self.actions is None or not row.get("sha256"):
            return False
        if self._roots is None:
            self._roots = SourceRoots(self.settings.source_roots)
        try:
            fetched = self._roots.fetch(source_for(str(row["source"])), max_bytes=defaults.MAX_BYTES)
        except UnreadableImage:
            return False  # gone: moved before the interruption
        if hashlib.sha256(fetched.data).hexdigest() != row["sha256"]:
            return False  # replaced since: a new photo, for a new scan
        source = fetched.origin if SourceRoots.still_same(fetched) else None
        result = self.actions.apply_record(Action(row["action"]), {"rescan_row": dict(row)}, data=fetched.data,
                                           upload_id=upload_id, source=source)
        return result.source_removed

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            # A second Ctrl-C: do not wait for scans in flight (resume redoes them).
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
        self._pool.shutdown(wait=not cancel, cancel_futures=True)


@dataclass(frozen=True)
class _Move:
    """The act of one verdict, run by the driver right after the row is written."""

    actions: Any
    verdict: Verdict
    fetched: Fetched
    upload_id: str

    def __call__(self) -> None:
        source: Origin | None = self.fetched.origin if SourceRoots.still_same(self.fetched) else None
        self.actions.apply(self.verdict, data=self.fetched.data, upload_id=self.upload_id, source=source)


def default_processes() -> int:
    """All the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
