"""The scan job: its JSON payload schema and the thin RQ entry points.

A job is plain JSON from end to end (RQ's JSONSerializer; pickle never crosses Redis),
so a pipeline in any language can enqueue one without importing us. The RQ job calls
:data:`SCAN_FUNCTION` with one positional argument, the payload::

    {
      "version": 1,
      "upload_id": "u-8812",                        # required; one verdict per upload id
      "source": {"path": "2026/11/u-8812.jpg"},     # inside a source root, or
                {"bytes_b64": "<base64>"},          # the photo itself (up to 10 MB)
      "context": {"recipient_is_minor": true},      # optional; picks policy profiles
      "callback_url": "https://app/verdicts",       # optional; signed POST of the verdict
      "dry_run": true,                              # optional; decide and record, move nothing
      "force": true                                 # optional; scan even on a verdict-cache hit
    }

docs/queue.md documents the Redis layout a foreign producer writes. Everything heavy
(models, the bank index) lives in :mod:`photosentry.worker.service`, built once per
worker process; these functions only hand over to it, so importing this module (as
every producer does through :mod:`photosentry.enqueue`) loads no model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..errors import PayloadError

PAYLOAD_VERSION = 1
"""Version of the payload schema; a worker refuses versions it does not know."""

SCAN_FUNCTION = "photosentry.worker.jobs.scan_upload"
"""Dotted path of the RQ job function (what a foreign producer writes as func_name)."""

FAILURE_CALLBACK = "photosentry.worker.jobs.on_scan_failure"
"""Dotted path of the RQ failure callback that records the fail-closed verdict."""

MAX_UPLOAD_ID_LEN = 200
MAX_URL_LEN = 2048
MAX_CONTEXT_KEYS = 64
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class ScanPayload:
    """A validated scan job payload."""

    upload_id: str
    #: Exactly one of ``{"path": str}`` or ``{"bytes_b64": str}``. Checked again by the
    #: worker, where a bad source becomes a ``source_refused`` verdict, not a crash.
    source: Mapping[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    version: int = PAYLOAD_VERSION
    #: Decide and record the verdict, but leave the photo where it is (rescan --dry-run).
    dry_run: bool = False
    #: Scan even when the verdict cache holds a verdict for these bytes (rescan --force).
    force: bool = False

    @classmethod
    def from_dict(cls, raw: object) -> "ScanPayload":
        """Validate a decoded payload.

        Raises:
            PayloadError: the payload is unusable; its message names the field.
        """
        if not isinstance(raw, Mapping):
            raise PayloadError(f"job payload must be a JSON object, got {type(raw).__name__}")
        unknown = set(raw) - {"version", "upload_id", "source", "context", "callback_url", "dry_run", "force"}
        if unknown:
            raise PayloadError(f"unknown payload fields {sorted(unknown)}")
        version = raw.get("version", PAYLOAD_VERSION)
        if version != PAYLOAD_VERSION:
            raise PayloadError(f"payload version {version!r} is not supported (this worker reads {PAYLOAD_VERSION})")
        upload_id = check_upload_id(raw.get("upload_id"))
        source = raw.get("source")
        if not isinstance(source, Mapping):
            raise PayloadError("source must be an object: {\"path\": ...} or {\"bytes_b64\": ...}")
        context = raw.get("context") or {}
        check_context(context)
        callback_url = raw.get("callback_url")
        if callback_url is not None:
            check_callback_url(callback_url)
        flags = {name: raw.get(name, False) for name in ("dry_run", "force")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise PayloadError(f"{name} must be true or false, got {value!r}")
        return cls(upload_id, dict(source), dict(context), callback_url, version, **flags)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "upload_id": self.upload_id,
            "source": dict(self.source),
            "context": dict(self.context),
            "callback_url": self.callback_url,
        }
        # Only when set, so ordinary upload jobs keep their shape for foreign producers.
        out.update({name: True for name in ("dry_run", "force") if getattr(self, name)})
        return out


def check_upload_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_UPLOAD_ID_LEN:
        raise PayloadError(f"upload_id must be a string of 1..{MAX_UPLOAD_ID_LEN} characters, got {value!r}")
    if not value.isprintable():
        raise PayloadError(f"upload_id {value!r} contains control characters")
    return value


def check_context(context: object) -> None:
    if not isinstance(context, Mapping):
        raise PayloadError(f"context must be a JSON object, got {type(context).__name__}")
    if len(context) > MAX_CONTEXT_KEYS:
        raise PayloadError(f"context has {len(context)} keys; at most {MAX_CONTEXT_KEYS}")
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, _SCALARS):
            raise PayloadError(f"context values must be strings, numbers, booleans or null; {key!r} is {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"context value {key!r} is not a finite number")


def check_callback_url(url: object) -> str:
    if not isinstance(url, str) or len(url) > MAX_URL_LEN or not url.startswith(("http://", "https://")):
        raise PayloadError(f"callback_url must be an http(s) URL of at most {MAX_URL_LEN} characters, got {url!r}")
    return url


# -- RQ entry points --------------------------------------------------------------


def scan_upload(payload: dict[str, Any]) -> dict[str, Any]:
    """Scan one upload; returns the verdict dict (also RQ's job result).

    Runs inside a :class:`photosentry.worker.main.ScanWorker`, which built the warm
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
                                  queue=job.origin if job is not None else None)


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
