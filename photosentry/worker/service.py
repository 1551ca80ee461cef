"""The warm scan service: everything a worker process builds once and keeps across jobs.

    policy, RedisBankStore + BankMatcher (refreshed from the change log), classifier,
    Scanner (warmed up), source roots, quarantine/blocked stores, verdict stream,
    verdict cache, callback signer, metrics

One job, in order (docs/queue.md has the why of the order):

    1 refresh   the bank index, if 0.2 s passed since the last refresh
    2 replay    a verdict already recorded for this upload (a retried or recovered
                job) is re-acted and re-delivered, never decided twice
    3 fetch     bytes from a confined source; a refusal is a verdict, not a crash
    4 cache     SHA-256 + bank version + policy version -> cached verdict
    5 scan      the pipeline (decode, hash, match, classify, decide)
    6 record    one stream entry per upload (idempotent) - the verdict is durable now;
                on photosentry:verdicts:bulk for a job from the bulk queue (RQ's
                job.origin decides, never the payload), else on photosentry:verdicts
    7 act       quarantine/block move the file into their stores; allow leaves it
    8 deliver   the signed HTTP callback; its failure never loses the verdict

This module is the only place that ties the pipeline to Redis; the pipeline and the
policy still know nothing of either.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from .. import defaults
from ..config import data_dir, ensure_private_dir, redact_url
from ..decode import Limits
from ..errors import UnreadableImage
from ..hashes.redis_banks import DEFAULT_PREFIX as BANK_PREFIX
from ..hashes.redis_banks import RedisBankStore
from ..review.queue import QuarantineRecord, ReviewQueue
from .actions import ActionApplier, ActionResult, ContentStore
from .cache import VerdictCache, model_builds
from .hashlog import HashLog, hashes_from_verdict
from .delivery import CallbackPolicy, CallbackSigner, post_callback
from .jobs import PayloadError, ScanPayload, check_upload_id
from .logs import job_context
from .metrics import Metrics
from .policy import Policy
from .sources import Fetched, PathSource, Source, SourceRefused, SourceRoots, decode_inline
from .stream import DEFAULT_STREAM, VerdictStream
from .uploaders import UploaderLedger, hold_for_flagged_uploader, uploader_of
from .verdict import Action, ReasonCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    """What a worker process needs to build its service (picklable, secrets redacted in repr)."""

    redis_url: str
    source_roots: tuple[str, ...] = ()
    data_dir: str | None = None
    policy_path: str | None = None
    threads: int | None = None
    providers: tuple[str, ...] = ()
    callback_key: str | None = field(default=None, repr=False)
    #: If set, callbacks go only to URLs starting with one of these prefixes.
    callback_allow: tuple[str, ...] = ()
    #: Networks callbacks may reach although internal (loopback, link-local, metadata),
    #: e.g. ``127.0.0.0/8`` for a receiver on the same host. Default: none.
    callback_networks: tuple[str, ...] = ()
    cache_ttl_s: int = defaults.VERDICT_CACHE_TTL_S
    #: False scans every upload even when its bytes were seen (benchmarks, audits).
    use_cache: bool = True
    refresh_interval_s: float = defaults.BANK_REFRESH_INTERVAL_S
    max_inline_bytes: int = defaults.MAX_INLINE_BYTES
    bank_prefix: str = BANK_PREFIX
    #: Uploads' verdicts, moderator decisions and uploader flags: what the platform acts on.
    stream: str = DEFAULT_STREAM
    #: Verdicts of jobs taken from the bulk queue, with a cap of their own.
    bulk_stream: str = defaults.BULK_VERDICT_STREAM
    bulk_stream_maxlen: int = defaults.BULK_VERDICT_STREAM_MAXLEN

    def __repr__(self) -> str:
        return (
            f"ServiceSettings(redis_url={redact_url(self.redis_url)!r}, source_roots={self.source_roots!r},"
            f" data_dir={self.data_dir!r}, policy_path={self.policy_path!r},"
            f" callback_key={'<set>' if self.callback_key else None})"
        )

    @classmethod
    def from_env(cls, redis_url: str = "", **overrides: Any) -> "ServiceSettings":
        """Settings from the PHOTOSENTRY_* environment (used where no CLI built them)."""
        roots = tuple(p for p in os.environ.get(defaults.SOURCE_ROOTS_ENV, "").split(os.pathsep) if p)
        base = cls(
            redis_url=redis_url or os.environ.get(defaults.REDIS_URL_ENV, ""),
            source_roots=roots,
            callback_key=os.environ.get(defaults.CALLBACK_KEY_ENV) or None,
            callback_networks=tuple(n for n in os.environ.get(defaults.CALLBACK_NETWORKS_ENV, "").split(",") if n),
        )
        return replace(base, **overrides)


class ScanService:
    """Scans queued uploads with warm models and a live bank index.

    Args:
        settings: see :class:`ServiceSettings`.
        client: a Redis client to use instead of one built from ``settings.redis_url``.
        scanner: a ready :class:`~photosentry.worker.pipeline.Scanner` (skips loading).
        load_models: False builds only what recording a fail-closed verdict needs
            (no classifier, no bank index): for processes that only give up on jobs.
        metrics: where to count (a private registry by default).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        client: redis.Redis | None = None,
        scanner: Any | None = None,
        load_models: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client if client is not None else redis.Redis.from_url(settings.redis_url)
        self.policy = Policy.from_file(settings.policy_path) if settings.policy_path else Policy.default()
        self.metrics = metrics or Metrics()
        self.roots = SourceRoots(settings.source_roots)
        home = ensure_private_dir(data_dir(settings.data_dir))
        self.actions = ActionApplier(quarantine=ContentStore(home / "quarantine"), blocked=ContentStore(home / "blocked"))
        self.stream = VerdictStream(self.redis, stream=settings.stream)
        self.bulk_stream = VerdictStream(self.redis, stream=settings.bulk_stream, maxlen=settings.bulk_stream_maxlen)
        self.cache = VerdictCache(self.redis, ttl_s=settings.cache_ttl_s)
        self.hashlog = HashLog(self.redis)
        self.review = ReviewQueue(self.redis)
        self.uploaders = UploaderLedger(self.redis, self.policy.uploaders, self.stream)
        self.signer = CallbackSigner(settings.callback_key) if settings.callback_key else None
        self.callback_policy = CallbackPolicy(allow_prefixes=settings.callback_allow,
                                              allow_networks=settings.callback_networks)
        self.bank_store = RedisBankStore(self.redis, prefix=settings.bank_prefix)
        self.scanner = scanner
        self._build_watch: Any = None
        if self.scanner is None and load_models:
            self.scanner = self._build_scanner()
        self._last_refresh = time.monotonic()
        if self.scanner is not None:
            self._observe_setup()

    def _build_scanner(self) -> Any:
        # Heavy imports here, not at module import: producers import jobs, never this.
        from ..hashes.matcher import BankMatcher
        from ..hashes.snapshot import snapshot_dir
        from ..models.autobuild import watch_default_build
        from ..models.loader import load_classifier
        from .pipeline import Scanner

        # The best verified artifact for this host (int8 on CPU, fp16 on GPU), else fp32.
        def load() -> Any:
            return load_classifier("open_nsfw", data_dir=data_dir(self.settings.data_dir),
                                   threads=self.settings.threads, providers=list(self.settings.providers) or None)

        classifier = load()
        # None verified yet: it is built in the background and swapped in (_swap_in_build).
        self._build_watch = watch_default_build(classifier, "open_nsfw", data_dir(self.settings.data_dir),
                                                self.policy.decision_thresholds("open_nsfw"), load)
        second = []
        if "nudenet" in os.environ.get(defaults.SECOND_MODELS_ENV, "").split(","):
            from ..models.nudenet import NudeNetDetector, licence_notice

            log.warning(licence_notice())
            second.append(NudeNetDetector(threads=self.settings.threads, providers=list(self.settings.providers) or None))
        # Workers on one host share the snapshot of their bank store (the first to read
        # a large bank from Redis writes it), so a restart loads millions in seconds.
        snapshots = snapshot_dir(ensure_private_dir(data_dir(self.settings.data_dir)), self.bank_store)
        scanner = Scanner(policy=self.policy, matcher=BankMatcher(self.bank_store, snapshot_dir=snapshots),
                          classifier=classifier, second_opinions=second)
        scanner.warm_up()
        log.info(
            "scan service ready",
            extra={"model": classifier.model_id, "provider": classifier.provider, "model_variant": classifier.variant,
                   "model_file": str(classifier.path), "bank_version": scanner.matcher.version,
                   "bank_entries": scanner.matcher.size,
                   "bank_loaded_from": scanner.matcher.loaded_from, "policy_version": self.policy.version},
        )
        return scanner

    def _swap_in_build(self) -> None:
        """Between jobs: run the default optimised build once the background build has
        verified and loaded it (models/autobuild.py); fp32 served until then."""
        new = self._build_watch.take() if self._build_watch is not None else None
        if new is None:
            return
        old, self.scanner.classifier, self._build_watch = self.scanner.classifier, new, None
        self.metrics.model_info.labels(old.model_id, old.model_version, old.provider, old.variant).set(0)
        self._observe_setup()
        log.info("model build swapped in", extra={"model": new.model_id, "model_variant": new.variant,
                                                   "provider": new.provider, "model_file": str(new.path)})

    def _observe_setup(self) -> None:
        classifier = getattr(self.scanner, "classifier", None)
        if classifier is not None:
            self.metrics.model_info.labels(classifier.model_id, classifier.model_version,
                                           getattr(classifier, "provider", ""),
                                           getattr(classifier, "variant", "fp32")).set(1)
        self._observe_index()

    def _observe_index(self) -> None:
        matcher = getattr(self.scanner, "matcher", None)
        if matcher is not None:
            self.metrics.observe_index(entries=matcher.size, version=matcher.version)

    # -- one job ----------------------------------------------------------------------

    def refresh_banks(self, *, force: bool = False) -> int:
        """Follow the bank change log if ``refresh_interval_s`` passed; returns changes applied."""
        matcher = getattr(self.scanner, "matcher", None)
        if matcher is None:
            return 0
        now = time.monotonic()
        if not force and now - self._last_refresh < self.settings.refresh_interval_s:
            return 0
        applied = matcher.refresh()
        self._last_refresh = now
        if applied:
            self._observe_index()
            log.info("bank index refreshed", extra={"changes": applied, "bank_version": matcher.version})
        return applied

    def stream_for(self, queue: str | None) -> VerdictStream:
        """The stream a job from ``queue`` (RQ's ``job.origin``) records on; see
        :func:`~photosentry.worker.stream.stream_for_queue`. None: the uploads stream."""
        return self.bulk_stream if queue == defaults.BULK_QUEUE else self.stream

    def scan(self, raw_payload: object, *, job_id: str, queue: str | None = None) -> dict[str, Any]:
        """Run one scan job; returns the recorded verdict dict.

        Args:
            queue: the RQ queue the job was taken from; picks the verdict stream.

        Raises:
            PayloadError: the payload can never be scanned (permanent, not retried).
            redis.RedisError: Redis failed (transient: the job is retried).
        """
        payload = ScanPayload.from_dict(raw_payload)
        with job_context(job_id=job_id, upload_id=payload.upload_id):
            return self._scan(payload, job_id, self.stream_for(queue))

    def _scan(self, payload: ScanPayload, job_id: str, stream: VerdictStream) -> dict[str, Any]:
        started = time.perf_counter()
        stages: dict[str, float] = {}
        self.refresh_banks()
        self._swap_in_build()

        replayed = self._replay(payload, job_id, stream)
        if replayed is not None:
            return replayed

        with _timed(stages, "fetch"):
            fetched, failure = self._fetch(payload)
        subject = _subject(payload)
        cache_key = None
        log_hashes: Any = None
        verdict: dict[str, Any] | None = None
        if failure is not None:
            code, message = failure
            verdict = self.scanner.failed(code, message, subject=subject, context=payload.context).to_dict()
        else:
            assert fetched is not None
            cached = None
            if self.settings.use_cache:
                with _timed(stages, "cache"):
                    cache_key = self._cache_key(fetched.data, payload.context)
                    # force (a rescan's --force): skip the lookup, but still cache the fresh verdict.
                    cached = None if payload.force else self.cache.get(cache_key)
                if not payload.force:
                    self.metrics.cache.labels("hit" if cached else "miss").inc()
            if cached is not None:
                verdict = {**cached, "subject": subject, "context": dict(payload.context), "cache": "hit",
                           "timings_ms": {}}
            else:
                scanned = self.scanner.scan_bytes(fetched.data, subject=subject, context=payload.context)
                log_hashes = scanned.hashes  # with their query variants, for retro-hunts
                verdict = scanned.to_dict()
        verdict["upload_id"] = payload.upload_id
        if payload.dry_run:
            verdict["dry_run"] = True  # readers of the stream must know nothing was moved
        verdict["timings_ms"] = {**{k: round(v, 3) for k, v in stages.items()}, **verdict.get("timings_ms", {})}
        # After the cache lookup and never cached: the hold belongs to the uploader, not the bytes.
        held = hold_for_flagged_uploader(verdict, self.uploaders)

        with _timed(stages, "record"):
            recorded = stream.record(upload_id=payload.upload_id, job_id=job_id, verdict=verdict)
            if recorded.new:
                self._log_hashes(payload, verdict, log_hashes)
        if not recorded.new:
            # Another attempt of this upload recorded first: its verdict is the verdict.
            verdict = self._read_entry(recorded.entry_id, stream) or verdict
        elif cache_key is not None and verdict.get("cache") != "hit" and not held:
            self.cache.put(cache_key, verdict)
        with _timed(stages, "act"):
            acted = self._act(verdict, fetched, payload)
            self._follow_up(verdict, payload, job_id, recorded.entry_id, fetched, acted, stream)
        with _timed(stages, "callback"):
            self._deliver(verdict, payload, job_id, recorded.entry_id, stream)
        stages["total"] = (time.perf_counter() - started) * 1000.0
        self.metrics.observe_verdict(verdict, stream=stream.stream)
        self.metrics.observe_stages({**verdict.get("timings_ms", {}), **stages})
        log.info("verdict", extra={"action": verdict.get("action"), "reasons": _codes(verdict),
                                   "stream": stream.stream, "stream_id": recorded.entry_id, "new": recorded.new,
                                   "ms": round(stages["total"], 1)})
        return verdict

    def _log_hashes(self, payload: ScanPayload, verdict: Mapping[str, Any], hashes: Any) -> None:
        """Keep this scan's hashes (never the photo) for retro-hunts. Runs after the verdict
        is recorded, and a failure here is logged, never raised: the verdict stands."""
        try:
            hashes = hashes if hashes is not None else hashes_from_verdict(verdict)
            if hashes is None:
                return
            self.hashlog.record(upload_id=payload.upload_id, source=payload.source, context=payload.context,
                                action=str(verdict.get("action")), bank_version=int(verdict.get("bank_version") or 0),
                                hashes=hashes)
        except Exception:  # noqa: BLE001 - retro-hunt data is best effort
            log.warning("could not add the scan to the hash log", exc_info=True)

    def _replay(self, payload: ScanPayload, job_id: str, stream: VerdictStream) -> dict[str, Any] | None:
        # The marker lives under the stream the first attempt recorded on: a retried or
        # recovered job goes back to the queue it came from, so it is the same stream.
        entry_id = stream.recorded(payload.upload_id)
        if entry_id is None:
            return None
        verdict = self._read_entry(entry_id, stream)
        if verdict is None:
            return None  # trimmed from the stream: decide again (the stream keeps the first)
        log.info("upload already decided; re-applying and re-delivering",
                 extra={"stream": stream.stream, "stream_id": entry_id})
        try:
            fetched, _ = self._fetch(payload)
        except Exception:  # noqa: BLE001 - the file may be gone: it was moved by the first attempt
            fetched = None
        acted = self._act(verdict, fetched, payload)
        self._follow_up(verdict, payload, job_id, entry_id, fetched, acted, stream)
        self._deliver(verdict, payload, job_id, entry_id, stream)
        return verdict

    def _fetch(self, payload: ScanPayload) -> tuple[Fetched | None, tuple[ReasonCode, str] | None]:
        limits: Limits = getattr(self.scanner, "limits", Limits())
        try:
            source = self._source(payload.source)
            return self.roots.fetch(source, max_bytes=limits.max_bytes), None
        except UnreadableImage as exc:  # SourceRefused included
            if isinstance(exc, SourceRefused):
                log.warning("source refused", extra={"why": exc.message})
            return None, (ReasonCode(exc.code), exc.message)

    def _source(self, raw: Mapping[str, Any]) -> Source:
        keys = set(raw)
        if keys == {"path"}:
            return PathSource(raw["path"])
        if keys == {"bytes_b64"}:
            return decode_inline(raw["bytes_b64"], max_bytes=self.settings.max_inline_bytes)
        raise SourceRefused(f"source must have exactly one of 'path' or 'bytes_b64', got {sorted(keys)}")

    def _cache_key(self, data: bytes, context: Mapping[str, Any]) -> str:
        import hashlib

        matcher = getattr(self.scanner, "matcher", None)
        models = model_builds(self.scanner)
        return self.cache.key(
            hashlib.sha256(data).hexdigest(),
            policy_version=self.policy.version,
            bank_version=matcher.version if matcher is not None else 0,
            profile=self.policy.profile_for(context).name,
            models=models,
        )

    def _read_entry(self, entry_id: str, stream: VerdictStream) -> dict[str, Any] | None:
        entries = stream.client.xrange(stream.stream, min=entry_id, max=entry_id, count=1)
        if not entries:
            return None
        fields = entries[0][1]
        raw = fields.get(b"verdict", fields.get("verdict"))
        return json.loads(raw) if raw is not None else None

    def _act(self, verdict: Mapping[str, Any], fetched: Fetched | None, payload: ScanPayload) -> ActionResult | None:
        action = Action(verdict["action"])
        if action is Action.ALLOW or fetched is None or payload.dry_run:
            return None
        source: Path | None = fetched.path if SourceRoots.still_same(fetched) else None
        result = self.actions.apply_record(
            action, dict(verdict), data=fetched.data, upload_id=payload.upload_id, source=source
        )
        if result.changed:
            log.info("photo moved to the %s store", action.value,
                     extra={"stored_at": str(result.stored_at), "source_removed": result.source_removed})
        return result

    def _follow_up(self, verdict: Mapping[str, Any], payload: ScanPayload, job_id: str, stream_id: str,
                   fetched: Fetched | None, acted: ActionResult | None, stream: VerdictStream) -> None:
        """Queue a quarantined upload for moderators and count the verdict against its
        uploader. Both are idempotent per upload, so a replayed job repeats them safely.
        The review item names the stream its verdict is on (``stream_id`` is an id there);
        an uploader crossing the threshold is announced on the uploads stream whatever
        the job's queue (the ledger writes there)."""
        if getattr(payload, "dry_run", False):  # a rescan that only reports
            return
        if verdict.get("action") == Action.QUARANTINE.value:
            sha = (verdict.get("hashes") or {}).get("sha256")
            stored = bool(sha) and self.actions.stores[Action.QUARANTINE].content_path(sha) is not None
            moved_from = fetched.path if acted is not None and acted.source_removed and fetched is not None else None
            item_id, new = self.review.index(QuarantineRecord(
                upload_id=payload.upload_id, verdict=dict(verdict), queued_at=time.time(), job_id=job_id,
                stream_id=stream_id, stream=stream.stream, sha256=sha, stored=stored,
                source_path=str(moved_from) if moved_from is not None else None,
                callback_url=payload.callback_url, uploader_id=uploader_of(payload.context, self.policy.uploaders),
            ))
            if new:
                log.info("queued for review", extra={"item_id": item_id})
        counted = self.uploaders.record_verdict(verdict, upload_id=payload.upload_id)
        if counted is not None and counted.crossed:
            log.warning("uploader flagged", extra={"score": round(counted.score, 3)})

    def _deliver(self, verdict: Mapping[str, Any], payload: ScanPayload, job_id: str, stream_id: str,
                 stream: VerdictStream) -> None:
        url = payload.callback_url
        if not url:
            return
        if self.signer is None:
            self.metrics.callbacks.labels("skipped").inc()
            log.error("callback_url given but no callback key is configured (%s)", defaults.CALLBACK_KEY_ENV)
            return
        body = json.dumps(
            {"upload_id": payload.upload_id, "job_id": job_id, "stream": stream.stream, "stream_id": stream_id,
             "verdict": verdict},
            separators=(",", ":"),
        ).encode()
        result = post_callback(url, body, self.signer, policy=self.callback_policy)
        if result.refused:  # the URL came from the job: never where the policy forbids
            self.metrics.callbacks.labels("skipped").inc()
            log.error("callback_url refused by the callback policy; not called", extra={"why": result.error})
            return
        self.metrics.callbacks.labels("delivered" if result.delivered else "failed").inc()
        if not result.delivered:
            log.warning("callback not delivered (the verdict is on the stream)",
                        extra={"attempts": result.attempts, "status": result.status, "error": result.error})

    # -- giving up -----------------------------------------------------------------------

    def record_failure(self, raw_payload: Mapping[str, Any], *, job_id: str, why: str,
                       queue: str | None = None) -> dict[str, Any] | None:
        """Record, act on and deliver the fail-closed ``scan_failed`` verdict of a job
        that will not be tried again, on the stream of ``queue`` (the job's origin), as
        its attempts would have. Returns the recorded verdict (the first one, if the
        upload was already decided), or None when the payload has no usable upload id.
        """
        stream = self.stream_for(queue)
        from .pipeline import failure_verdict

        try:
            upload_id = check_upload_id(raw_payload.get("upload_id"))
        except PayloadError as exc:
            log.error("job %s failed and its payload has no usable upload_id: %s", job_id, exc)
            return None
        context = raw_payload.get("context") if isinstance(raw_payload.get("context"), Mapping) else {}
        payload = ScanPayload(upload_id, raw_payload.get("source") or {}, dict(context or {}),
                              raw_payload.get("callback_url") if isinstance(raw_payload.get("callback_url"), str) else None,
                              dry_run=raw_payload.get("dry_run") is True)
        with job_context(job_id=job_id, upload_id=upload_id):
            try:
                fetched, _ = self._fetch(payload) if isinstance(payload.source, Mapping) else (None, None)
            except Exception:  # noqa: BLE001 - giving up must not fail
                fetched = None
            matcher = getattr(self.scanner, "matcher", None)
            verdict = failure_verdict(
                self.policy, ReasonCode.SCAN_FAILED, why, subject=_subject(payload), context=payload.context,
                data=fetched.data if fetched else None, bank_version=matcher.version if matcher else 0,
            ).to_dict()
            verdict["upload_id"] = upload_id
            recorded = stream.record(upload_id=upload_id, job_id=job_id, verdict=verdict)
            if not recorded.new:
                verdict = self._read_entry(recorded.entry_id, stream) or verdict
            acted = self._act(verdict, fetched, payload)
            self._follow_up(verdict, payload, job_id, recorded.entry_id, fetched, acted, stream)
            self._deliver(verdict, payload, job_id, recorded.entry_id, stream)
            self.metrics.observe_verdict(verdict, stream=stream.stream)
            log.warning("job given up: fail-closed verdict recorded",
                        extra={"action": verdict.get("action"), "why": why, "new": recorded.new,
                               "stream": stream.stream, "stream_id": recorded.entry_id})
            return verdict


# -- the process-wide service ---------------------------------------------------------

_CURRENT: ScanService | None = None


def install(service: ScanService | None) -> None:
    """Make ``service`` the one jobs in this process use (a worker does this at start)."""
    global _CURRENT
    _CURRENT = service


def current_service() -> ScanService:
    if _CURRENT is None:
        raise RuntimeError("no scan service in this process: scan jobs run in `photosentry worker`")
    return _CURRENT


def fail_closed(job: Any, connection: Any, exc: BaseException | None, *, service: ScanService | None = None) -> None:
    """Body of the RQ failure callback; see :func:`photosentry.worker.jobs.on_scan_failure`."""
    try:
        if isinstance(exc, PayloadError):
            job.retries_left = 0  # permanent: retrying cannot help
        if job.retries_left:
            log.warning("job attempt failed; it will be retried",
                        extra={"job_id": job.id, "retries_left": job.retries_left, "error": repr(exc)})
            return
        try:
            raw = job.args[0]
        except Exception as err:  # noqa: BLE001 - a payload that is not JSON: nothing to record
            log.error("failed job %s has no readable payload (%s); no verdict can be recorded", job.id, err)
            return
        if not isinstance(raw, Mapping):
            log.error("failed job %s payload is not an object; no verdict can be recorded", job.id)
            return
        service = service or _CURRENT or ScanService(ServiceSettings.from_env(), client=connection, load_models=False)
        attempts = int((job.meta or {}).get("attempts", 0) or 0) or 1
        why = f"job failed after {attempts} attempt{'s' if attempts != 1 else ''}: {type(exc).__name__ if exc else 'lost'}"
        if exc is not None and str(exc):
            why += f": {str(exc)[:300]}"
        service.record_failure(raw, job_id=job.id, why=why, queue=getattr(job, "origin", None))
    except Exception:  # noqa: BLE001 - a raising callback would hide the job's own error
        log.exception("could not record the fail-closed verdict of job %s", getattr(job, "id", "?"))


# -- helpers ---------------------------------------------------------------------------


class _timed:
    def __init__(self, stages: dict[str, float], name: str) -> None:
        self.stages, self.name = stages, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.stages[self.name] = self.stages.get(self.name, 0.0) + (time.perf_counter() - self.start) * 1000.0


def _subject(payload: ScanPayload) -> str:
    path = payload.source.get("path") if isinstance(payload.source, Mapping) else None
    return path if isinstance(path, str) else f"upload:{payload.upload_id}"


def _codes(verdict: Mapping[str, Any]) -> list[str]:
    return [str(r.get("code")) for r in verdict.get("reasons", [])]


__all__ = ["ScanService", "ServiceSettings", "current_service", "fail_closed", "install"]
