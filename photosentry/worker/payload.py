"""The scan job's payload: its JSON schema and validation.

A job is plain JSON from end to end (RQ's JSONSerializer; pickle never crosses Redis),
so a pipeline in any language can enqueue one without importing us. The RQ job calls
``photosentry.worker.jobs.scan_upload`` with one positional argument, the payload::

    {
      "version": 1,
      "upload_id": "u-8812",                        # required; one verdict per upload id
      "source": {"path": "2026/11/u-8812.jpg"},     # inside a source root, or
                {"s3": "s3://uploads/2026/u-8812.jpg"},  # under an s3:// source root
                                                    # (+ "version_id": "..." in a versioned bucket), or
                {"bytes_b64": "<base64>"},          # the photo itself (up to 10 MB)
      "context": {"recipient_is_minor": true},      # optional; picks policy profiles
      "callback_url": "https://app/verdicts",       # optional; signed POST of the verdict
      "dry_run": true,                              # optional; decide and record, move nothing
      "force": true                                 # optional; scan even on a verdict-cache hit
    }

docs/queue.md documents the Redis layout a foreign producer writes. This module is
what producers (:mod:`photosentry.enqueue`), rescans and the worker share; it imports
nothing heavy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PayloadError

PAYLOAD_VERSION = 1
"""Version of the payload schema; a worker refuses versions it does not know."""

MAX_UPLOAD_ID_LEN = 200
MAX_URL_LEN = 2048
MAX_CONTEXT_KEYS = 64
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class ScanPayload:
    """A validated scan job payload."""

    upload_id: str
    #: Exactly one of ``{"path": str}``, ``{"s3": "s3://bucket/key"}`` (with an optional ``"version_id"``) or
    #: ``{"bytes_b64": str}``. Checked by the worker, where a bad source becomes a ``source_refused`` verdict,
    #: not a crash.
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
            raise PayloadError("source must be an object: {\"path\": ...}, {\"s3\": ...} or {\"bytes_b64\": ...}")
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
