"""Prometheus metrics of the queue workers.

``photosentry worker --metrics-port P`` serves them on ``http://<host>:P/metrics``.
With ``--processes N`` every worker process writes its samples to a shared folder
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) and the
supervisor serves the sum, so one scrape sees the whole host. Queue depth is read
from Redis at scrape time, so it is right even when every worker is busy.

Names (all prefixed ``photosentry_``; docs/queue.md lists them with their labels):
scans_total, stage_seconds, cache_lookups_total, callbacks_total, jobs_refused_total,
jobs_requeued_total, bank_index_entries, bank_version, model_info, queue_depth.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import defaults
from .verdict import Verdict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Stage latency buckets in seconds: cache hits take ~1 ms, a scan ~100 ms, a slow
#: callback seconds.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The worker's metrics, registered in ``registry`` (a private one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.scans = Counter(
            "photosentry_scans", "Verdicts recorded, by action, most severe reason code and verdict stream"
            " (photosentry:verdicts for uploads, photosentry:verdicts:bulk for the bulk queue).",
            ["action", "reason", "stream"], registry=r,
        )
        self.stage_seconds = Histogram(
            "photosentry_stage_seconds",
            "Time per stage of a job: fetch, cache, decode, hash, match, classify, decide, record, act, callback, total.",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.cache = Counter("photosentry_cache_lookups", "Verdict cache lookups by result (hit, miss).", ["result"], registry=r)
        self.callbacks = Counter(
            "photosentry_callbacks", "HTTP callback attempts by outcome (delivered; failed, to be retried;"
            " given_up after the last attempt; skipped: no key, or a URL the callback policy refuses).", ["outcome"], registry=r
        )
        self.refused = Counter(
            "photosentry_jobs_refused", "Jobs refused before running (not JSON, function not allowed).", ["why"], registry=r
        )
        self.requeued = Counter(
            "photosentry_jobs_requeued", "Jobs taken back from a dead or stopping worker.", ["why"], registry=r
        )
        self.index_entries = Gauge(
            "photosentry_bank_index_entries", "Active bank entries in the worker's in-memory index.",
            registry=r, multiprocess_mode="max",
        )
        self.bank_version = Gauge(
            "photosentry_bank_version", "Bank version the worker's index is at.", registry=r, multiprocess_mode="max"
        )
        self.model_info = Gauge(
            "photosentry_model_info",
            "Loaded model, its version, ONNX Runtime execution provider and build (fp32, int8, fp16) (value 1).",
            ["model", "version", "provider", "variant"], registry=r, multiprocess_mode="max",
        )

    def observe_verdict(self, verdict: Verdict, *, stream: str = "") -> None:
        first = verdict.reasons[0].code.value if verdict.reasons else ""
        self.scans.labels(verdict.action.value, first, stream).inc()

    def observe_stages(self, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def observe_index(self, *, entries: int, version: int) -> None:
        self.index_entries.set(entries)
        self.bank_version.set(version)


class QueueDepthCollector(Collector):
    """``photosentry_queue_depth{queue}``: jobs waiting, read from Redis at each scrape."""

    def __init__(self, client: Any, queues: Sequence[str]) -> None:
        self.client = client
        self.queues = tuple(queues)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("photosentry_queue_depth", "Jobs waiting on each queue.", labels=["queue"])
        for name in self.queues:
            try:
                depth = self.client.llen(f"rq:queue:{name}")
            except Exception:  # noqa: BLE001 - a scrape must not fail because Redis blinked
                continue
            family.add_metric([name], float(depth))
        yield family


def multiprocess_registry() -> CollectorRegistry:
    """A registry that sums the samples every worker process wrote to $PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def mark_process_dead(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve(port: int, registry: CollectorRegistry, addr: str = defaults.METRICS_HOST) -> Any:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread."""
    return start_http_server(port, addr=addr, registry=registry)
