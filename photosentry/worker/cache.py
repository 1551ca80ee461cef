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

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis

from .. import defaults
from .policy import Policy
from .verdict import ReasonCode, Verdict

DEFAULT_PREFIX = "photosentry:vcache:"

#: Reason codes that say "we did not really look", or that are about the upload rather
#: than its bytes: such verdicts are not cached.
UNCACHEABLE_CODES = frozenset({ReasonCode.MODEL_UNAVAILABLE, ReasonCode.SCAN_FAILED, ReasonCode.SOURCE_REFUSED,
                               ReasonCode.CONTEXT_UNREADABLE, ReasonCode.UPLOAD_ID_REUSED,
                               ReasonCode.UPLOADER_FLAGGED})

#: Fields of a verdict record that belong to one upload, not to the bytes; not stored.
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

    def key_for(self, data: bytes, *, policy: Policy, context: Mapping[str, Any], scanner: Any) -> str:
        """The key of ``data`` scanned by ``scanner`` under ``policy`` for ``context``: what a
        queue worker and ``rescan --local`` both compute, so they share entries."""
        matcher = getattr(scanner, "matcher", None)
        return self.key(hashlib.sha256(data).hexdigest(), policy_version=policy.version,
                        bank_version=matcher.version if matcher is not None else 0,
                        profile=policy.profile_for(context).cache_name, models=model_builds(scanner))

    def get(self, key: str) -> Verdict | None:
        raw = self.client.get(key)
        if raw is None:
            return None
        try:
            return Verdict.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            return None  # a corrupt entry is a miss, never a verdict

    def hit(self, key: str, *, subject: str, context: Mapping[str, Any]) -> Verdict | None:
        """The cached verdict under ``key`` as this upload's (its subject and context, no
        timings, marked as a cache hit), or None."""
        found = self.get(key)
        if found is None:
            return None
        if found.hashes is None or found.hashes.sha256 != key.rsplit(":", 1)[-1]:
            return None  # not a verdict on these bytes (written by hand, or damaged): scan them
        return replace(found, subject=subject, context=dict(context), cache_hit=True, timings_ms={})

    def put(self, key: str, verdict: Verdict) -> bool:
        """Store ``verdict`` unless it records a transient failure or a fact about its
        upload rather than its bytes; True if stored."""
        if {r.code for r in verdict.reasons} & UNCACHEABLE_CODES:
            return False
        kept = {k: v for k, v in verdict.to_dict().items() if k not in _PER_UPLOAD}
        self.client.set(key, json.dumps(kept, separators=(",", ":")), ex=self.ttl_s)
        return True
