"""Structured JSON logs: one object per line, with the job id and upload id in it.

A log shipper indexes ``upload_id`` and ``job_id`` without parsing text, so "what
happened to upload u-8812" is one query. The ids ride in context variables set by the
service for the duration of a job, so every log line inside it (ours, RQ's, the
decoder's) carries them.

Whatever the level (``-v`` is DEBUG), the AWS libraries' request dumps never reach
the output: they carry the access key id and, with temporary credentials, the
session token. :func:`configure` pins those loggers at INFO and its handler drops
their records below INFO, even if something lowers their level later.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..s3.client import WIRE_LOGGERS, quiet_wire_logs

job_id_var: ContextVar[str] = ContextVar("photosentry_job_id", default="")
upload_id_var: ContextVar[str] = ContextVar("photosentry_upload_id", default="")
worker_var: ContextVar[str] = ContextVar("photosentry_worker", default="")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; ``extra={...}`` fields are kept."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        for key, var in (("worker", worker_var), ("job_id", job_id_var), ("upload_id", upload_id_var)):
            value = var.get()
            if value:
                out[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class WireFilter(logging.Filter):
    """Drops the AWS libraries' records below INFO (their request dumps, with credentials)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        return not any(record.name == name or record.name.startswith(name + ".") for name in WIRE_LOGGERS)


def configure(level: int = logging.INFO, *, json_format: bool = True) -> None:
    """Send every log line to stderr, as JSON (default) or plain text; never the AWS
    libraries' DEBUG request dumps (see the module docstring)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(WireFilter())
    quiet_wire_logs()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextmanager
def job_context(*, job_id: str, upload_id: str) -> Iterator[None]:
    tokens = (job_id_var.set(job_id), upload_id_var.set(upload_id))
    try:
        yield
    finally:
        job_id_var.reset(tokens[0])
        upload_id_var.reset(tokens[1])
