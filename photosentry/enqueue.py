"""Enqueue scan jobs: the one call an upload pipeline written in Python needs.

    from redis import Redis
    from photosentry import enqueue_scan

    job_id = enqueue_scan(Redis.from_url(url), source="2026/11/u-8812.jpg",
                          upload_id="u-8812", context={"recipient_is_minor": True},
                          callback_url="https://app.internal/verdicts")

Importing this module loads rq and redis, never a model or numpy: producers stay
light. Pipelines in other languages write the same JSON job themselves; the layout
is in docs/queue.md.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from typing import Any

from redis import Redis

from . import defaults
from .s3.location import S3Location, check_version_id, is_s3_url
from .worker.jobs import FAILURE_CALLBACK, SCAN_FUNCTION
from .worker.payload import ScanPayload


def build_payload(
    *,
    source: str | os.PathLike[str] | bytes,
    upload_id: str,
    context: Mapping[str, Any] | None = None,
    callback_url: str | None = None,
    max_inline_bytes: int = defaults.MAX_INLINE_BYTES,
    dry_run: bool = False,
    force: bool = False,
    version_id: str | None = None,
) -> dict[str, Any]:
    """The JSON job payload for one upload (validated).

    Args:
        source: a path (relative to the worker's first source root, or absolute inside
            one of its roots), an ``s3://bucket/key`` URL (under one of its s3:// roots),
            or the photo's bytes (sent inline, base64).
        upload_id: the pipeline's id for this upload; the verdict stream holds one
            verdict per upload id.
        context: facts the policy may use, e.g. ``{"recipient_age": 15}``.
        callback_url: where the worker POSTs the signed verdict (optional).
        dry_run: the worker decides and records the verdict but moves nothing.
        force: the worker scans even when the verdict cache has these bytes.
        version_id: for an ``s3://`` source in a versioned bucket, the version this
            upload wrote (``PutObject``'s ``VersionId``, or ``versionId`` in an S3 event
            notification): the worker then reads and acts on that version only, even if
            another upload replaced it at the key meanwhile. Pass it whenever it is known.

    Raises:
        ValueError: an invalid field (the message names it), an ``s3://`` URL a worker
            would refuse (a bad bucket, an odd key), a ``version_id`` with a source that
            is not ``s3://`` or that is not a version id, or inline bytes over the limit.
    """
    if version_id is not None and not is_s3_url(source):
        raise ValueError("version_id is for s3:// sources only")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_inline_bytes:
            raise ValueError(f"inline photo is {len(data)} bytes; the limit is {max_inline_bytes}: send a path instead")
        src: dict[str, str] = {"bytes_b64": base64.b64encode(data).decode("ascii")}
    elif is_s3_url(source):
        # Checked here too, so a producer learns of a key workers refuse when it enqueues.
        src = {"s3": S3Location.parse(source).url}
        if version_id is not None:
            src["version_id"] = check_version_id(version_id)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ValueError(f"source path must be a non-empty string without NUL bytes, got {path!r}")
        src = {"path": path}
    else:
        raise ValueError(f"source must be a path or bytes, got {type(source).__name__}")
    payload = ScanPayload.from_dict(
        {"upload_id": upload_id, "source": src, "context": dict(context or {}), "callback_url": callback_url,
         "dry_run": dry_run, "force": force}
    )
    return payload.to_dict()


def enqueue_scan(
    redis: Redis,
    *,
    source: str | os.PathLike[str] | bytes,
    upload_id: str,
    context: Mapping[str, Any] | None = None,
    callback_url: str | None = None,
    queue: str = defaults.UPLOADS_QUEUE,
    job_timeout: int = defaults.JOB_TIMEOUT_S,
    retries: int = defaults.JOB_RETRIES,
    job_id: str | None = None,
    version_id: str | None = None,
) -> str:
    """Put one scan job on a queue; returns the RQ job id.

    The verdict arrives as the job's result, as an entry on the verdict stream of
    ``queue`` (``photosentry:verdicts`` for uploads, ``photosentry:verdicts:bulk`` for
    bulk) and, when ``callback_url`` is given, as a signed POST. A job that fails or times out
    after ``retries`` retries still ends in a recorded ``scan_failed`` quarantine.

    Args:
        redis: connection to the Redis the workers listen on.
        source, upload_id, context, callback_url, version_id: see :func:`build_payload`.
        queue: ``uploads`` (default, high priority) or ``bulk`` (rescans; their
            verdicts go on the bulk stream, so they never trim upload verdicts).
        job_timeout: seconds one attempt may run.
        retries: attempts after the first one fails.
        job_id: a job id of your own (default: a random one).

    Raises:
        ValueError: an invalid argument.
    """
    from rq import Queue
    from rq.serializers import JSONSerializer

    _check_queue_args(queue, job_timeout)
    payload = build_payload(source=source, upload_id=upload_id, context=context, callback_url=callback_url,
                            version_id=version_id)
    q = Queue(queue, connection=redis, serializer=JSONSerializer)
    job = q.enqueue(SCAN_FUNCTION, args=(payload,), job_timeout=job_timeout, job_id=job_id,
                    description=f"scan upload {upload_id}", **_job_options(retries))
    return job.id


def enqueue_payloads(
    redis: Redis,
    payloads: Sequence[Mapping[str, Any]],
    *,
    queue: str = defaults.BULK_QUEUE,
    job_timeout: int = defaults.JOB_TIMEOUT_S,
    retries: int = defaults.JOB_RETRIES,
) -> list[str]:
    """Put many scan jobs on a queue in one Redis round trip; returns their RQ job ids.

    For bulk producers (``photosentry rescan --queue``): one pipeline per chunk instead
    of several round trips per job. Each payload is validated as :func:`build_payload`
    does, and each job gets the same timeout, retries and fail-closed failure callback
    as :func:`enqueue_scan`.

    Raises:
        ValueError: an invalid payload or argument (nothing is enqueued).
    """
    from rq import Queue
    from rq.serializers import JSONSerializer

    _check_queue_args(queue, job_timeout)
    checked = [ScanPayload.from_dict(p).to_dict() for p in payloads]
    q = Queue(queue, connection=redis, serializer=JSONSerializer)
    datas = [
        Queue.prepare_data(SCAN_FUNCTION, args=(payload,), timeout=job_timeout,
                           description=f"scan upload {payload['upload_id']}", **_job_options(retries))
        for payload in checked
    ]
    with redis.pipeline() as pipe:
        jobs = q.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
    return [job.id for job in jobs]


def _check_queue_args(queue: str, job_timeout: int) -> None:
    if queue not in defaults.QUEUES:
        raise ValueError(f"queue must be one of {list(defaults.QUEUES)}, got {queue!r}")
    if job_timeout < 1:
        raise ValueError(f"job_timeout must be at least 1 second, got {job_timeout}")


def _job_options(retries: int) -> dict[str, Any]:
    """What every scan job gets, however it is enqueued: retries, the fail-closed
    failure callback and how long results are kept."""
    from rq import Callback, Retry

    return {
        "retry": Retry(max=retries) if retries > 0 else None,
        "on_failure": Callback(FAILURE_CALLBACK),
        "result_ttl": defaults.RESULT_TTL_S,
        "failure_ttl": defaults.FAILURE_TTL_S,
    }
