"""Telling the upload pipeline: signed HTTP callbacks.

The signature scheme is the one webhook senders commonly use: HMAC-SHA256 over
``"<timestamp>.<body>"`` with a shared key, sent as

    X-PhotoSentry-Timestamp: 1763788800
    X-PhotoSentry-Signature: v1=<hex digest>

so a receiver can reject both forged bodies and replays of old ones. A callback that
keeps failing is given up after its retries; the verdict itself is recorded elsewhere
first, so a dead receiver never loses it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

TIMESTAMP_HEADER = "X-PhotoSentry-Timestamp"
SIGNATURE_HEADER = "X-PhotoSentry-Signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
"""How old a signed callback may be before a receiver should refuse it as a replay."""
DEFAULT_BACKOFF_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
"""Waits between attempts: five attempts over about 7.5 s."""


class CallbackSigner:
    """Signs and verifies callback bodies with a shared key (never shown in reprs)."""

    def __init__(self, key: bytes | str) -> None:
        key = key.encode("utf-8") if isinstance(key, str) else key
        if len(key) < 16:
            raise ValueError("callback signing key must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "CallbackSigner(key=<redacted>)"

    def signature(self, body: bytes, timestamp: int) -> str:
        mac = hmac.new(self._key, f"{timestamp}.".encode() + body, hashlib.sha256)
        return f"{SIGNATURE_VERSION}={mac.hexdigest()}"

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: self.signature(body, ts)}

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None
    ) -> bool:
        """True if ``headers`` carry a valid, fresh signature of ``body``."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            ts = int(lowered[TIMESTAMP_HEADER.lower()])
            given = lowered[SIGNATURE_HEADER.lower()]
        except (KeyError, ValueError):
            return False
        if abs((time.time() if now is None else now) - ts) > tolerance_s:
            return False
        return hmac.compare_digest(given, self.signature(body, ts))


@dataclass(frozen=True)
class CallbackResult:
    """How a callback went: delivered or not, after how many attempts, last status."""

    delivered: bool
    attempts: int
    status: int | None
    error: str = ""


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def post_callback(
    url: str,
    body: bytes,
    signer: CallbackSigner,
    *,
    backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
    timeout_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CallbackResult:
    """POST ``body`` as JSON with a fresh signature per attempt; retry with backoff.

    Client errors other than 408/429 are not retried: the receiver has said no.
    Never raises for network or HTTP failures - it reports them.
    """
    attempts = 0
    status: int | None = None
    error = ""
    for wait in (0.0, *backoff_s):
        if wait:
            sleep(wait)
        attempts += 1
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **signer.headers(body)},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - scheme checked by caller
                status = response.status
                if 200 <= status < 300:
                    return CallbackResult(True, attempts, status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            if not _retryable(exc.code):
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return CallbackResult(False, attempts, status, error)
