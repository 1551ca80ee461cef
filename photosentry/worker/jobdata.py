"""Reading a job hash's ``data`` safely, whatever a producer wrote there.

RQ inflates zlib-compressed data without a bound, and Python's JSON parser refuses
integers of more than 4,300 digits: a 1 MB hostile job could take a gigabyte of a
worker's memory, and a valid-JSON payload with one huge number could not be read at
all, so its upload got no verdict. :func:`oversized` says whether data is too big to
touch; :func:`payload_of` reads a payload for the fail-closed verdict even when RQ
could not, numbers too long for Python kept as their digits.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import redis

from . import rq_compat

MAX_JOB_DATA_BYTES = 16 * 1024 * 1024
"""Largest job ``data`` a worker will decompress and parse: an inline photo at the 10 MB
limit is 13.4 MB of base64."""

_MAX_INT_DIGITS = 4000
"""Longer integers in a payload are kept as their digit strings (Python refuses to parse
more than 4,300): no context value or id is legitimately that long, and the policy reads
such a string as an unreadable number."""


def oversized(connection: redis.Redis, job_id: str) -> str | None:
    """Why the job's data is too big to read (compressed or not), or None."""
    key = rq_compat.job_key(job_id)
    if connection.hstrlen(key, "data") > MAX_JOB_DATA_BYTES:
        return f"job data is over {MAX_JOB_DATA_BYTES} bytes"
    raw = connection.hget(key, "data")
    if raw is None:
        return None
    try:
        inflater = zlib.decompressobj()
        inflater.decompress(raw, MAX_JOB_DATA_BYTES)
        if inflater.unconsumed_tail:
            return f"job data inflates to over {MAX_JOB_DATA_BYTES} bytes"
    except zlib.error:
        pass  # not compressed: RQ reads it as it is
    return None


def payload_of(connection: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """The scan payload in the job's data (its first positional argument), or None when
    the data is too big or not a JSON job at all."""
    if oversized(connection, job_id) is not None:
        return None
    raw = connection.hget(rq_compat.job_key(job_id), "data")
    try:
        raw = zlib.decompress(raw) if raw else raw
    except zlib.error:
        pass
    try:
        data = json.loads(raw, parse_int=_int) if raw else None
        payload = data[2][0] if isinstance(data, list) and len(data) > 2 and data[2] else None
    except (ValueError, TypeError, IndexError, KeyError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _int(digits: str) -> int | str:
    return int(digits) if len(digits.lstrip("-")) <= _MAX_INT_DIGITS else digits
