"""The table printed when a rescan ends: counts per action and reason, time, rate."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

_ACTION_ORDER = {"allow": 0, "quarantine": 1, "block": 2, "": 3}


class Summary:
    """Counts of the rows written by this invocation."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ended: float | None = None
        self.by_reason: Counter[tuple[str, str]] = Counter()
        self.by_status: Counter[str] = Counter()
        self.rows = 0
        #: Entries older than --since, not scanned and not reported.
        self.filtered = 0
        #: Entries already in the report from before a --resume.
        self.already_done = 0
        #: Moves re-applied on resume for rows written just before an interruption.
        self.settled = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        reasons = row.get("reasons") or []
        if isinstance(reasons, str):
            reasons = reasons.split(";")
        self.by_reason[(str(row.get("action") or ""), str(reasons[0]) if reasons else "")] += 1
        self.by_status[str(row.get("status", ""))] += 1

    def stop(self) -> None:
        self.ended = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def flagged(self) -> bool:
        """True if any row is not an allow (quarantine, block, missing, invalid)."""
        return any(action != "allow" for action, _ in self.by_reason)

    def render(self) -> str:
        lines = [f"{'ACTION':<12}{'REASON':<22}{'PHOTOS':>10}"]
        for (action, reason), n in sorted(self.by_reason.items(), key=lambda kv: (_ACTION_ORDER.get(kv[0][0], 9),
                                                                                 kv[0][1])):
            lines.append(f"{action or '-':<12}{reason:<22}{n:>10}")
        elapsed = self.elapsed
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        lines.append("")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items())) or "none"
        lines.append(f"{self.rows} photo{'s' if self.rows != 1 else ''} reported in {elapsed:.2f} s"
                     f" ({rate:.1f} photos/s): {statuses}")
        extra = []
        if self.already_done:
            extra.append(f"{self.already_done} already reported before this resume")
        if self.settled:
            extra.append(f"{self.settled} interrupted move{'s' if self.settled != 1 else ''} completed")
        if self.filtered:
            extra.append(f"{self.filtered} older than --since (not scanned, not reported)")
        if extra:
            lines.append("; ".join(extra))
        return "\n".join(lines)
