"""The verdict cache: the same bytes under the same rules cost one Redis GET.

Duplicate uploads are common (forwards, reposts, retries). A verdict depends only on
the bytes, the banks, the policy, the policy profile the context picked and the
models, so all of them are in the key:

    <prefix><policy version>:<bank version>:<profile>:<models>:<sha256>

A moderator's ban raises the bank version, so every cached verdict made before it
stops being found at once: nothing is ever invalidated by hand, and the TTL only
bounds memory. Verdicts that record a transient failure (a model that did not load, a
scan that crashed, a refused source) are never cached: the next upload deserves a
real scan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from .. import defaults

DEFAULT_PREFIX = "photosentry:vcache:"

#: Reason codes that say "we did not really look": such verdicts are not cached.
UNCACHEABLE_CODES = frozenset({"model_unavailable", "scan_failed", "source_refused",
                               # about the upload, not its bytes
                               "context_unreadable", "upload_id_reused"})

#: Fields of a verdict that belong to one upload, not to the bytes; dropped on store.
_PER_UPLOAD = ("subject", "context", "timings_ms", "upload_id", "cache", "dry_run")


def model_builds(scanner: Any) -> list[str]:
    """The cache key's model part for ``scanner``: every model that can change the verdict,
    with its build (``id@version:variant``). A verdict decided without a second opinion,
    or by another artifact, must not be served for one. Workers and ``rescan --local``
    both key by this, so they share entries.
    """
    classifier = getattr(scanner, "classifier", None)
    running = [classifier, *getattr(scanner, "second_opinions", ())] if classifier is not None else []
    return [f"{m.model_id}@{m.model_version}:{getattr(m, 'variant', 'fp32')}" for m in running]


class VerdictCache:
    """Verdict dicts in Redis keyed by SHA-256 + bank version + policy version."""

    def __init__(
        self, client: redis.Redis, *, ttl_s: int = defaults.VERDICT_CACHE_TTL_S, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"cache TTL must be at least 1 s, got {ttl_s}")
        self.client = client
        self.ttl_s = ttl_s
        self.prefix = prefix

    def key(self, sha256: str, *, policy_version: str, bank_version: int, profile: str, models: Sequence[str]) -> str:
        model_part = ",".join(sorted(models)) or "-"
        return f"{self.prefix}{policy_version}:{bank_version}:{profile}:{model_part}:{sha256}"

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.client.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None  # a corrupt entry is a miss, never a verdict
        return value if isinstance(value, dict) else None

    def put(self, key: str, verdict: dict[str, Any]) -> bool:
        """Store ``verdict`` unless it records a transient failure; True if stored."""
        codes = {r.get("code") for r in verdict.get("reasons", [])}
        if codes & UNCACHEABLE_CODES:
            return False
        kept = {k: v for k, v in verdict.items() if k not in _PER_UPLOAD}
        self.client.set(key, json.dumps(kept, separators=(",", ":")), ex=self.ttl_s)
        return True
