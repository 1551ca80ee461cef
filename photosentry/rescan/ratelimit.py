"""A token bucket: ``rescan --rate N`` starts at most N photos a second, on average."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (default: one second's worth).

    A rescan that was paused (e.g. waiting for workers) may then catch up by at most
    ``burst`` photos, never by the whole pause.
    """

    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def _fill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is now)."""
        self._fill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> bool:
        """Take a token if one is available now."""
        self._fill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def acquire(self) -> None:
        """Block until a token is available, then take it."""
        while not self.take():
            self._sleep(self.wait_time())
