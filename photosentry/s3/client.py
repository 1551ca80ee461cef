"""The S3 client a process uses, and what its errors mean for a job.

One boto3 client per process (clients are thread-safe), built from the standard AWS
configuration: credentials from the environment, ``~/.aws``, an instance or pod role;
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an S3-compatible server;
``AWS_REGION``. PhotoSentry never reads, logs or stores credentials itself, and keeps
the AWS libraries' request dumps (DEBUG) out of its logs.

Every request is bounded: a connection attempt gives up after
:data:`~photosentry.defaults.S3_CONNECT_TIMEOUT_S`, a read that stalls after
:data:`~photosentry.defaults.S3_READ_TIMEOUT_S`, and botocore's "standard" retry mode
makes at most :data:`~photosentry.defaults.S3_MAX_ATTEMPTS` attempts (with backoff) on
throttling, 5xx answers and dropped connections. The job's own timeout bounds the rest.

What an error means (:func:`classify`):

=========== ====================================================== =========================
kind        S3 says                                                a job
=========== ====================================================== =========================
missing     404, ``NoSuchKey``, ``NoSuchBucket``, ``NoSuchVersion`` ``source_refused`` (like a missing file)
denied      403, ``AccessDenied``, ``InvalidObjectState`` (archived) ``source_refused``: fail closed, not retried
changed     412 ``PreconditionFailed``: not the version that was read  nothing is deleted or replaced
transient   anything else: a timeout, a dropped connection, 5xx,    the job raises
            throttling, a 409 conflict                              :class:`StorageUnavailable` and is retried
=========== ====================================================== =========================
"""

from __future__ import annotations

import logging
from typing import Any

from .. import defaults
from ..errors import StorageUnavailable

MISSING, DENIED, CHANGED, TRANSIENT = "missing", "denied", "changed", "transient"

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden", "403", "InvalidObjectState",
                           "AccountProblem"})
_CHANGED_CODES = frozenset({"PreconditionFailed", "412"})


def connect(*, endpoint_url: str | None = None) -> Any:
    """A new S3 client with bounded timeouts and retries (see the module docstring).

    Args:
        endpoint_url: an S3-compatible server; default: ``AWS_ENDPOINT_URL(_S3)``, else AWS.

    Raises:
        ImportError: boto3 is not installed (``pip install 'photosentry[s3]'``).
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ImportError("s3:// sources and stores need boto3: pip install 'photosentry[s3]'") from exc
    config = Config(
        connect_timeout=defaults.S3_CONNECT_TIMEOUT_S,
        read_timeout=defaults.S3_READ_TIMEOUT_S,
        retries={"max_attempts": defaults.S3_MAX_ATTEMPTS, "mode": "standard"},
        # A worker process holds at most a few requests at once (its job, a review read).
        max_pool_connections=10,
    )
    quiet_wire_logs()
    # A session of its own: boto3's default session is shared module state, not thread-safe.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
"""Loggers that print whole requests at DEBUG: headers with the access key id, the
signature and, with temporary credentials, the session token itself."""


def quiet_wire_logs() -> None:
    """Pin the AWS libraries' loggers at INFO (they still say, at INFO, where credentials
    were found, never what they are).

    Pinned whatever the root logger's level is now: a command that builds its client
    first and turns on DEBUG afterwards (``photosentry -v review``) must not let the
    request dumps through. A level an operator set at INFO or above is kept.
    :func:`photosentry.worker.logs.configure` calls this too, and filters its handler.
    """
    for name in WIRE_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherit the root's) included
            logger.setLevel(logging.INFO)


def classify(exc: BaseException) -> str:
    """``missing``, ``denied``, ``changed`` or ``transient`` for an error of an S3 request."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return TRANSIENT  # no answer at all: a timeout, a refused or dropped connection
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if code in _MISSING_CODES or status == 404:
        return MISSING
    if code in _DENIED_CODES or status == 403:
        return DENIED
    if code in _CHANGED_CODES or status == 412:
        return CHANGED
    return TRANSIENT


def status_of(exc: BaseException) -> int | None:
    """The HTTP status S3 answered with (None: no answer)."""
    response = getattr(exc, "response", None)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return int(status) if isinstance(status, int) else None


def describe(exc: BaseException) -> str:
    """A short text for logs and verdicts: the error code and S3's message (never a
    request's headers or signature, which name the access key)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code") or (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "error"
        message = str(error.get("Message") or "").strip()
        return f"{code}: {message}" if message else str(code)
    return f"{type(exc).__name__}: {exc}"


def unavailable(what: str, exc: BaseException) -> StorageUnavailable:
    """The transient error to raise for ``exc`` (chained by the caller)."""
    return StorageUnavailable(f"{what} failed: {describe(exc)}")


def s3_errors() -> tuple[type[BaseException], ...]:
    """The exception types an S3 request raises (botocore's, the socket's own, and
    urllib3's, which a response body read as it arrives raises unwrapped)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    return (ClientError, BotoCoreError, OSError, HTTPError)
