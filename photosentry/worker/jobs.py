"""The thin RQ entry points of a scan job.

The payload's schema lives in :mod:`photosentry.worker.payload`. Everything heavy
(models, the bank index) lives in :mod:`photosentry.worker.service`, built once per
worker process; these functions only hand over to it, so importing this module (as
RQ does to find the function by its dotted path) loads no model.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

SCAN_FUNCTION = "photosentry.worker.jobs.scan_upload"
"""Dotted path of the RQ job function (what a foreign producer writes as func_name)."""

FAILURE_CALLBACK = "photosentry.worker.jobs.on_scan_failure"
"""Dotted path of the RQ failure callback that records the fail-closed verdict."""


# -- RQ entry points --------------------------------------------------------------


def scan_upload(payload: dict[str, Any]) -> dict[str, Any]:
    """Scan one upload; returns the verdict dict (also RQ's job result).

    Runs inside a :class:`photosentry.worker.scan_worker.ScanWorker`, which built the warm
    service (models, bank index, stores) before its first job.
    """
    from rq import get_current_job

    from .service import current_service

    job = get_current_job()
    # The queue the job was taken from picks the verdict stream (bulk or uploads): RQ
    # sets origin when the job is enqueued, and a retry or a recovery keeps it, so every
    # attempt and the final give-up record on the same stream. A payload field could not
    # be trusted to: any producer could write one.
    return current_service().scan(payload, job_id=job.id if job is not None else "",
                                  queue=job.origin if job is not None else None).to_dict()


def on_scan_failure(
    job: Any,
    connection: Any,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback: after the last retry, record a fail-closed verdict.

    RQ calls it after every failed attempt (a raised error, a timeout, or an attempt
    abandoned by a dead worker); only the final one records ``scan_failed``. Never
    raises: a raising callback would replace the job's own error in RQ's records.
    """
    from .service import fail_closed

    fail_closed(job, connection, exc_value)
