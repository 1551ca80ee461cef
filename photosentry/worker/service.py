"""The warm scan service: everything a worker process builds once and keeps across jobs.

    policy, Redis bank store + BankMatcher (refreshed from the change log), classifier,
    Scanner (warmed up), source roots (folders, s3:// prefixes), quarantine/blocked
    stores (folders, or a bucket: :mod:`~photosentry.worker.stores`), verdict stream,
    verdict cache, callback outbox, review queue, uploader ledger, metrics

One job, in order (docs/queue.md has the why of the order):

    1 refresh   the bank index, if 0.2 s passed since the last refresh
    2 fetch     bytes from a confined source; a refusal is a verdict, not a crash
    3 claim     a verdict already recorded for these bytes under this upload id (a
                retried or recovered job) is settled again, never decided twice;
                other bytes under a decided upload id are decided on their own
    4 cache     SHA-256 + bank version + policy version + profile + models -> verdict
    5 scan      the pipeline (decode, hash, match, classify, decide)
    6 settle    record (one stream entry per upload id and content, the callback
                queued with it), act, follow up (:mod:`~photosentry.worker.settle`)

The verdict is a typed :class:`~photosentry.worker.verdict.Verdict` from the scan to
the edges: it becomes a dict only where it leaves the process (the stream, the cache,
the job result, the review record, a store's sidecar). This module is the only place
that ties the pipeline to Redis; the pipeline and the policy know nothing of either.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from .. import defaults
from ..config import data_dir, ensure_private_dir, redact_url
from ..decode import Limits
from ..errors import JobRefused, PayloadError, SourceRefused, UnreadableImage
from ..hashes.banks import DEFAULT_PREFIX as BANK_PREFIX
from ..hashes.banks import open_store
from ..hashes.signals import ImageHashes
from ..s3.location import split_roots
from .cache import VerdictCache
from .delivery import CallbackPolicy, CallbackSigner
from .hashlog import HashLog
from .logs import job_context
from .metrics import Metrics
from .outbox import CallbackDeliverer, CallbackOutbox
from .payload import ScanPayload, check_upload_id
from .pipeline import Scanner, failure_verdict
from .policy import Policy
from . import jobdata, rq_compat
from .review_queue import ReviewQueue
from .settle import Settled, Settlement, read_verdict
from .sources import Fetched, PathSource, S3Source, Source, SourceRoots, decode_inline
from .stores import open_stores
from .stream import DEFAULT_STREAM, Recorded, VerdictStream, reused_key
from .uploaders import UploaderLedger
from .verdict import Action, ReasonCode, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    """What a worker process needs to build its service (picklable, secrets redacted in repr)."""

    redis_url: str
    #: Folders and ``s3://bucket/prefix/`` URLs path and s3 jobs may read from.
    source_roots: tuple[str, ...] = ()
    data_dir: str | None = None
    #: Where the quarantine and blocked stores are: a folder or ``s3://bucket/prefix/``
    #: (None: the data directory).
    store: str | None = None
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
            f" data_dir={self.data_dir!r}, store={self.store!r}, policy_path={self.policy_path!r},"
            f" callback_key={'<set>' if self.callback_key else None})"
        )

    @classmethod
    def from_env(cls, redis_url: str = "", **overrides: Any) -> "ServiceSettings":
        """Settings from the PHOTOSENTRY_* environment (used where no CLI built them)."""
        roots = tuple(split_roots(os.environ.get(defaults.SOURCE_ROOTS_ENV, "")))  # s3:// URLs kept whole
        base = cls(
            redis_url=redis_url or os.environ.get(defaults.REDIS_URL_ENV, ""),
            source_roots=roots,
            store=os.environ.get(defaults.STORE_ENV) or None,
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
        scanner: Scanner | None = None,
        load_models: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client if client is not None else redis.Redis.from_url(settings.redis_url)
        self.policy = Policy.from_file(settings.policy_path) if settings.policy_path else Policy.default()
        self.metrics = metrics or Metrics()
        self.roots = SourceRoots(settings.source_roots)
        home = ensure_private_dir(data_dir(settings.data_dir))
        self.actions = open_stores(settings.store, home, source_roots=(*self.roots.roots, *self.roots.s3_roots),
                                   s3_client=self.roots.s3_client).applier()
        self.stream = VerdictStream(self.redis, stream=settings.stream)
        self.bulk_stream = VerdictStream(self.redis, stream=settings.bulk_stream, maxlen=settings.bulk_stream_maxlen)
        self.cache = VerdictCache(self.redis, ttl_s=settings.cache_ttl_s)
        self.hashlog = HashLog(self.redis)
        self.review = ReviewQueue(self.redis)
        self.uploaders = UploaderLedger(self.redis, self.policy.uploaders, self.stream)
        self.signer = CallbackSigner(settings.callback_key) if settings.callback_key else None
        self.callback_policy = CallbackPolicy(allow_prefixes=settings.callback_allow,
                                              allow_networks=settings.callback_networks)
        self.outbox = CallbackOutbox(self.redis)
        self.settlement = Settlement(actions=self.actions, review=self.review, uploaders=self.uploaders,
                                     outbox=self.outbox, signer=self.signer)
        self.bank_store = open_store(redis=self.redis, prefix=settings.bank_prefix)
        self.scanner = scanner
        self._build_watch: Any = None
        if self.scanner is None and load_models:
            self.scanner = self._build_scanner()
        if self.scanner is not None:
            self._observe_setup()

    def _build_scanner(self) -> Scanner:
        # Heavy imports here, not at module import: producers import jobs, never this.
        from .assembly import ScannerSpec, build_scanner, watch_build

        spec = ScannerSpec(data_dir=self.settings.data_dir, threads=self.settings.threads,
                           providers=self.settings.providers)
        scanner = build_scanner(spec, self.bank_store, policy=self.policy, start_build=False)
        # No verified build for this host yet: it is built in the background and swapped
        # in between jobs (_swap_in_build); fp32 serves until then.
        self._build_watch = watch_build(scanner, spec)
        classifier = scanner.classifier
        assert classifier is not None and scanner.matcher is not None
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
        applied = matcher.refresh(every_s=0.0 if force else self.settings.refresh_interval_s)
        if applied:
            self._observe_index()
            log.info("bank index refreshed", extra={"changes": applied, "bank_version": matcher.version})
        return applied

    def stream_for(self, queue: str | None) -> VerdictStream:
        """The stream a job from ``queue`` (RQ's ``job.origin``) records on; see
        :func:`~photosentry.worker.stream.stream_for_queue`. None: the uploads stream."""
        return self.bulk_stream if queue == defaults.BULK_QUEUE else self.stream

    def scan(self, raw_payload: object, *, job_id: str, queue: str | None = None) -> Verdict:
        """Run one scan job; returns the verdict that stands for it.

        Args:
            queue: the RQ queue the job was taken from; picks the verdict stream.

        Raises:
            PayloadError: the payload can never be scanned (permanent, not retried).
            redis.RedisError: Redis failed (transient: the job is retried).
        """
        payload = ScanPayload.from_dict(raw_payload)
        with job_context(job_id=job_id, upload_id=payload.upload_id):
            return self._scan(payload, job_id, self.stream_for(queue))

    def _scan(self, payload: ScanPayload, job_id: str, stream: VerdictStream) -> Verdict:
        started = time.perf_counter()
        stages: dict[str, float] = {}
        self.refresh_banks()
        self._swap_in_build()

        with _timed(stages, "fetch"):
            fetched, failure = self._fetch(payload)
        content = hashlib.sha256(fetched.data).hexdigest() if fetched is not None else ""
        claim = self._claim(payload.upload_id, content, stream)
        if claim.verdict is not None:
            log.info("upload already decided; re-applying", extra={"stream": stream.stream,
                                                                  "stream_id": claim.entry_id})
            settled = Settled(claim.verdict, Recorded(claim.entry_id or "", False, content))
            self.settlement.act(settled, payload, job_id=job_id, fetched=fetched, stream=stream, key=claim.key)
            return settled.verdict

        verdict, cache_key, log_hashes = self._decide(payload, fetched, failure, claim, stages)
        verdict = replace(verdict, upload_id=payload.upload_id, dry_run=payload.dry_run,
                          timings_ms={**stages, **verdict.timings_ms})
        with _timed(stages, "record"):
            settled, claim = self._record(verdict, payload, job_id, stream, claim, content)
        if settled.recorded.new:
            self._log_hashes(payload, settled.verdict, log_hashes)
            held = ReasonCode.UPLOADER_FLAGGED in {r.code for r in settled.verdict.reasons}
            # A hold belongs to the uploader, not the bytes: such verdicts are not cached.
            if cache_key is not None and not settled.verdict.cache_hit and not held:
                self.cache.put(cache_key, settled.verdict)
        with _timed(stages, "act"):
            self.settlement.act(settled, payload, job_id=job_id, fetched=fetched, stream=stream, key=claim.key)
        stages["total"] = (time.perf_counter() - started) * 1000.0
        verdict = settled.verdict
        self.metrics.observe_verdict(verdict, stream=stream.stream)
        self.metrics.observe_stages({**verdict.timings_ms, **stages})
        log.info("verdict", extra={"action": verdict.action.value, "reasons": verdict.reason_codes,
                                   "stream": stream.stream, "stream_id": settled.recorded.entry_id,
                                   "new": settled.recorded.new, "ms": round(stages["total"], 1)})
        return verdict

    def _decide(self, payload: ScanPayload, fetched: Fetched | None, failure: tuple[ReasonCode, str] | None,
                claim: "_Claim", stages: dict[str, float]) -> tuple[Verdict, str | None, ImageHashes | None]:
        """The verdict for this job's bytes (from the cache, or scanned), the cache key to
        store a fresh one under, and the hashes to log (with their query variants)."""
        assert self.scanner is not None
        subject = _subject(payload)
        before = claim.failures()
        if failure is not None:
            code, message = failure
            return self.scanner.failed(code, message, subject=subject, context=payload.context, also=before), None, None
        assert fetched is not None
        flagged = self.uploaders.flagged(payload.context)
        cache_key = None
        if self.settings.use_cache and not before:
            with _timed(stages, "cache"):
                cache_key = self.cache.key_for(fetched.data, policy=self.policy, context=payload.context,
                                               scanner=self.scanner)
                # force (a rescan's --force): skip the lookup, but still cache the fresh verdict.
                cached = None if payload.force else self.cache.hit(cache_key, subject=subject,
                                                                   context=payload.context)
            if not payload.force:
                self.metrics.cache.labels("hit" if cached else "miss").inc()
            if cached is not None:
                return (self.policy.redecide(cached, uploader=flagged) if flagged else cached), cache_key, None
        scanned = self.scanner.scan_bytes(fetched.data, subject=subject, context=payload.context, failures=before,
                                          uploader=flagged)
        return scanned, cache_key, scanned.hashes

    def _claim(self, upload_id: str, content: str, stream: VerdictStream) -> "_Claim":
        """What this job's verdict is recorded under, and whether one is there already.

        An upload id's first verdict answers only for the bytes it was decided on (the
        marker says which): a retried or recovered job with the same bytes settles it
        again (so does a job whose file is gone after a quarantine or block moved it).
        Any other file under that id (a pipeline bug or an attack: job 1 a clean photo,
        job 2 anything) is recorded under :func:`reused_key`, scanned on its own and held
        with reason ``upload_id_reused``; it never gets the first file's verdict.
        """
        marked = stream.marked(upload_id)
        if marked is None:
            return _Claim(upload_id)
        first = read_verdict(stream, marked.entry_id)  # None if trimmed from the stream
        first_content = marked.content
        if first_content is None:  # a marker from before content markers
            first_content = first.hashes.sha256 if first is not None and first.hashes is not None else ""
        if content:
            same = first_content == content or marked.answers_for(content)
        else:  # unread now: a quarantine or block moved the file, or it was never readable
            same = first.action is not Action.ALLOW if first is not None else not first_content
        if same:
            return _Claim(upload_id, marked.entry_id, first)  # first None (trimmed): decided again
        return self._reused(upload_id, content, stream,
                            _Reuse(upload_id, first.action if first is not None else None, first_content))

    def _reused(self, upload_id: str, content: str, stream: VerdictStream, reuse: "_Reuse") -> "_Claim":
        key = reused_key(upload_id, content)
        marked = stream.marked(key)
        if marked is None:
            return _Claim(key, reused=reuse)
        verdict = read_verdict(stream, marked.entry_id)
        recorded = marked.content if marked.content is not None else (
            verdict.hashes.sha256 if verdict is not None and verdict.hashes is not None else "")
        if recorded != content and not marked.answers_for(content):  # the key names these bytes: never else
            raise RuntimeError(f"record key {key!r} holds a verdict for other bytes")
        return _Claim(key, marked.entry_id, verdict, reuse)

    def _record(self, verdict: Verdict, payload: ScanPayload, job_id: str, stream: VerdictStream, claim: "_Claim",
                content: str) -> tuple[Settled, "_Claim"]:
        """Record ``verdict`` as ``claim`` says. If another job under the same upload id
        recorded a verdict for other bytes while this one scanned, these bytes are a
        reused upload id after all: decided again with ``upload_id_reused`` and recorded
        under their own key, never handed the other verdict."""
        self._warn_unsigned(payload)
        settled = self.settlement.record(verdict, payload, job_id=job_id, stream=stream, key=claim.key,
                                         content=content)
        if not settled.conflict:
            return settled, claim
        other = read_verdict(stream, settled.recorded.entry_id)
        claim = self._reused(payload.upload_id, content, stream,
                             _Reuse(payload.upload_id, other.action if other is not None else None,
                                    settled.recorded.content or ""))
        if claim.verdict is not None:
            return Settled(claim.verdict, Recorded(claim.entry_id or "", False, content)), claim
        verdict = self.policy.redecide(verdict, failures=claim.failures())
        settled = self.settlement.record(verdict, payload, job_id=job_id, stream=stream, key=claim.key,
                                         content=content)
        return settled, claim

    def _log_hashes(self, payload: ScanPayload, verdict: Verdict, hashes: ImageHashes | None) -> None:
        """Keep this scan's hashes (never the photo) for retro-hunts. Runs after the verdict
        is recorded, and a failure here is logged, never raised: the verdict stands."""
        try:
            hashes = hashes if hashes is not None else verdict.hashes
            if hashes is None:
                return
            self.hashlog.record(upload_id=payload.upload_id, source=payload.source, context=payload.context,
                                action=verdict.action.value, bank_version=verdict.bank_version, hashes=hashes)
        except Exception:  # noqa: BLE001 - retro-hunt data is best effort
            log.warning("could not add the scan to the hash log", exc_info=True)

    def _fetch(self, payload: ScanPayload) -> tuple[Fetched | None, tuple[ReasonCode, str] | None]:
        limits: Limits = getattr(self.scanner, "limits", Limits())
        try:
            source = self._source(payload.source)
            return self.roots.fetch(source, max_bytes=limits.max_bytes), None
        except UnreadableImage as exc:  # SourceRefused included
            if isinstance(exc, SourceRefused):
                log.warning("source refused", extra={"why": exc.message})
            return None, (ReasonCode(exc.code), exc.message)

    def _fetch_within(self, payload: ScanPayload, within_s: float) -> tuple[Fetched | None, str]:
        """The photo read again for giving up on its job, or None and why not.

        Giving up must end: it runs in the job's failure callback (the job timed out,
        perhaps because this very read stalls; the watchdog ends the process 30 s after
        the timeout), in the supervisor and in the fleet's recoverer. So the read runs on
        a thread of its own and is waited for ``within_s`` seconds at most; past that the
        verdict is recorded without the bytes (not moved, not hashed) and the thread is
        left to end on the read's own bounds (S3's body deadline, the byte limit).
        """
        outcome: list[tuple[Fetched | None, str]] = []

        def read() -> None:
            try:
                outcome.append((self._fetch(payload)[0], ""))  # refused or unreadable: None, as before
            except Exception as exc:  # noqa: BLE001 - giving up must not fail
                outcome.append((None, f"the photo could not be read again ({type(exc).__name__})"))

        reader = threading.Thread(target=contextvars.copy_context().run, args=(read,), daemon=True,
                                  name="photosentry-give-up-read")
        reader.start()
        reader.join(within_s)
        if not outcome:
            log.warning("giving up: the photo could not be read again in time; recording the verdict without it",
                        extra={"within_s": within_s, "source": _subject(payload)})
            return None, f"the photo could not be read again within {within_s:g} s: recorded without its bytes"
        return outcome[0]

    def _source(self, raw: Mapping[str, Any]) -> Source:
        keys = set(raw)
        if keys == {"path"}:
            return PathSource(raw["path"])
        if keys == {"s3"}:
            return S3Source(raw["s3"])
        if keys == {"s3", "version_id"}:
            return S3Source(raw["s3"], raw["version_id"])
        if keys == {"bytes_b64"}:
            return decode_inline(raw["bytes_b64"], max_bytes=self.settings.max_inline_bytes)
        raise SourceRefused(f"source must have exactly one of 'path', 's3' (with an optional 'version_id') or"
                            f" 'bytes_b64', got {sorted(keys)}")

    def _warn_unsigned(self, payload: ScanPayload) -> None:
        """A job asks for a callback this worker has no key to sign: it is not queued."""
        if payload.callback_url and self.signer is None:
            self.metrics.callbacks.labels("skipped").inc()
            log.error("callback_url given but no callback key is configured (%s)", defaults.CALLBACK_KEY_ENV)

    def deliverer(self, *, threads: int = defaults.CALLBACK_THREADS) -> CallbackDeliverer | None:
        """Delivery threads for this process's outbox (None without a callback key)."""
        if self.signer is None:
            return None
        return CallbackDeliverer(self.outbox, self.signer, policy=self.callback_policy, threads=threads,
                                 observe=lambda outcome: self.metrics.callbacks.labels(outcome).inc())

    # -- giving up -----------------------------------------------------------------------

    def record_failure(self, raw_payload: Mapping[str, Any], *, job_id: str, why: str,
                       queue: str | None = None) -> Verdict | None:
        """Settle the fail-closed ``scan_failed`` verdict of a job that will not be tried
        again, on the stream of ``queue`` (the job's origin), as its attempts would have.
        Returns the verdict that stands (the first one, if these bytes were already
        decided under the upload id), or None when the payload has no usable upload id.
        """
        stream = self.stream_for(queue)
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
            fetched, unread = None, ""
            if isinstance(payload.source, Mapping):
                fetched, unread = self._fetch_within(payload, defaults.GIVE_UP_READ_S)
            if unread:
                why = f"{why}; {unread}"
            content = hashlib.sha256(fetched.data).hexdigest() if fetched is not None else ""
            claim = self._claim(upload_id, content, stream)
            if claim.verdict is not None:  # decided for these bytes before: that verdict stands
                settled = Settled(claim.verdict, Recorded(claim.entry_id or "", False, content))
            else:
                matcher = getattr(self.scanner, "matcher", None)
                verdict = failure_verdict(
                    self.policy, ReasonCode.SCAN_FAILED, why, subject=_subject(payload), context=payload.context,
                    data=fetched.data if fetched else None, bank_version=matcher.version if matcher else 0,
                    also=claim.failures(),
                )
                settled, claim = self._record(replace(verdict, upload_id=upload_id, dry_run=payload.dry_run),
                                              payload, job_id, stream, claim, content)
            self.settlement.act(settled, payload, job_id=job_id, fetched=fetched, stream=stream, key=claim.key)
            self.metrics.observe_verdict(settled.verdict, stream=stream.stream)
            log.warning("job given up: fail-closed verdict recorded",
                        extra={"action": settled.verdict.action.value, "why": why, "new": settled.recorded.new,
                               "stream": stream.stream, "stream_id": settled.recorded.entry_id})
            return settled.verdict


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
        if isinstance(exc, (PayloadError, JobRefused)):
            job.retries_left = 0  # permanent: retrying cannot help
        if job.retries_left:
            log.warning("job attempt failed; it will be retried",
                        extra={"job_id": job.id, "retries_left": job.retries_left, "error": repr(exc)})
            return
        try:
            raw = job.args[0]
        except Exception:  # noqa: BLE001 - RQ could not read it: try harder, a verdict is owed
            raw = jobdata.payload_of(connection, job.id)
            if raw is None:
                log.error("failed job %s has no readable payload; no verdict can be recorded", job.id)
                return
        if not isinstance(raw, Mapping):
            log.error("failed job %s payload is not an object; no verdict can be recorded", job.id)
            return
        service = service or _CURRENT or ScanService(ServiceSettings.from_env(), client=connection, load_models=False)
        attempts = rq_compat.attempts_of(job) or 1
        if isinstance(exc, JobRefused):
            why = f"job refused: {str(exc)[:300]}"
        else:
            why = (f"job failed after {attempts} attempt{'s' if attempts != 1 else ''}:"
                   f" {type(exc).__name__ if exc else 'lost'}")
            if exc is not None and str(exc):
                why += f": {str(exc)[:300]}"
        service.record_failure(raw, job_id=job.id, why=why, queue=getattr(job, "origin", None))
    except Exception:  # noqa: BLE001 - a raising callback would hide the job's own error
        log.exception("could not record the fail-closed verdict of job %s", getattr(job, "id", "?"))


# -- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reuse:
    """What a reused upload id was first decided for (``action`` None if that entry was
    trimmed from the stream)."""

    upload_id: str
    action: Action | None
    content: str


@dataclass(frozen=True)
class _Claim:
    """Where a job's verdict is recorded (see :meth:`ScanService._claim`)."""

    #: The record key: the upload id, or :func:`reused_key` for a reused upload id.
    key: str
    #: The verdict already recorded under ``key`` (to settle again), and its stream entry.
    entry_id: str | None = None
    verdict: Verdict | None = None
    #: What the upload id was first decided for, when this is another file.
    reused: _Reuse | None = None

    def failures(self) -> list[tuple[ReasonCode, str]]:
        if self.reused is None:
            return []
        first = self.reused
        decided = f" ({first.action.value})" if first.action is not None else ""
        what = f"other bytes (sha256 {first.content[:16]}...)" if first.content else "a file that was never read"
        return [(ReasonCode.UPLOAD_ID_REUSED,
                 f"upload id {first.upload_id!r} was already decided{decided} for {what};"
                 " this file was scanned on its own and held")]


class _timed:
    def __init__(self, stages: dict[str, float], name: str) -> None:
        self.stages, self.name = stages, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.stages[self.name] = self.stages.get(self.name, 0.0) + (time.perf_counter() - self.start) * 1000.0


def _subject(payload: ScanPayload) -> str:
    for field_name in ("path", "s3"):
        named = payload.source.get(field_name) if isinstance(payload.source, Mapping) else None
        if isinstance(named, str):
            return named
    return f"upload:{payload.upload_id}"


__all__ = ["ScanService", "ServiceSettings", "current_service", "fail_closed", "install"]
