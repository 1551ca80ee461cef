"""The scan pipeline: bytes in, one :class:`Verdict` out, never an exception.

    read -> decode -> hash -> match -> classify -> decide

Long-lived parts (the policy, the bank matcher, the classifier) are built once and
passed in, so a worker keeps them warm across photos. Every failure inside a stage
becomes a fail-closed reason; the classifier is skipped when a bank match already
blocks. This module knows nothing of Redis or RQ.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .. import defaults
from ..decode import DecodedImage, Limits, decode, read_limited
from ..errors import ModelUnavailable, UnreadableImage
from ..hashes.matcher import BankMatcher, Match
from ..hashes.signals import ImageHashes, hash_bytes, hash_image
from ..models.classifier import ModelScore, NudityClassifier
from .policy import Policy, decide
from .verdict import Action, MediaInfo, ReasonCode, Verdict

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """Mutable state of one scan while it moves through the stages."""

    timings: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[ReasonCode, str]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


class Scanner:
    """Scans photos with one policy, one bank view and one classifier."""

    def __init__(
        self,
        *,
        policy: Policy,
        matcher: BankMatcher | None,
        classifier: NudityClassifier | None,
        limits: Limits = Limits(),
        classifier_error: str | None = None,
        decode_min_side: int | None = defaults.DECODE_MIN_SIDE,
        second_opinions: Sequence[NudityClassifier] = (),
    ) -> None:
        """
        Args:
            policy: decides what the facts mean.
            matcher: the in-memory bank index; None scans with no banks at all.
            classifier: the nudity model; None means it could not be loaded, and
                every photo gets the fail-closed ``model_unavailable`` reason.
            limits: decoding limits.
            classifier_error: why the classifier is missing, for that reason's text.
            decode_min_side: JPEGs are decoded in the DCT domain down to this side
                (the largest any hash or model needs); None decodes every pixel.
            second_opinions: more models (e.g. the NudeNet detector) run after the
                classifier on every photo it classifies; each score is decided on by
                the policy like the first, and a failing one fails closed.
        """
        if classifier is not None:
            policy.require_models([classifier.model_id, *(m.model_id for m in second_opinions)])
        self.policy = policy
        self.matcher = matcher
        self.classifier = classifier
        self.limits = limits
        self.decode_min_side = decode_min_side
        self.second_opinions = tuple(second_opinions)
        self._classifier_error = classifier_error or "no classifier is configured"

    def warm_up(self) -> None:
        """Run one synthetic photo through every stage.

        The first call of each hasher imports its heavy modules and ONNX Runtime
        allocates its arenas; a long-lived worker pays that once, before its first job,
        so the first real upload's timings are honest.
        """
        gradient = np.linspace(0, 255, 64 * 64 * 3, dtype=np.float64).reshape(64, 64, 3).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(gradient).save(buf, format="PNG")
        self.scan_bytes(buf.getvalue(), subject="<warm-up>")

    def scan_path(self, path: str | os.PathLike[str], *, context: Mapping[str, Any] | None = None) -> Verdict:
        """Read a file (within the byte limit) and scan it."""
        run = _Run()
        subject = os.fspath(path)
        with run.stage("read"):
            try:
                data = read_limited(path, self.limits.max_bytes)
            except UnreadableImage as exc:
                run.failures.append((ReasonCode(exc.code), exc.message))
                return self._verdict(subject, run, context or {}, None, None, [], [])
        return self._scan(data, subject, context or {}, run)

    def scan_bytes(self, data: bytes, *, subject: str = "", context: Mapping[str, Any] | None = None) -> Verdict:
        """Scan bytes already in memory."""
        return self._scan(data, subject, context or {}, _Run())

    def failed(
        self,
        code: ReasonCode,
        message: str,
        *,
        subject: str = "",
        context: Mapping[str, Any] | None = None,
        data: bytes | None = None,
    ) -> Verdict:
        """The fail-closed verdict for a photo that never reached the stages
        (a refused source, a file too large to read ...)."""
        return failure_verdict(
            self.policy, code, message, subject=subject, context=context, data=data,
            bank_version=self.matcher.version if self.matcher else 0,
        )

    # -- stages -------------------------------------------------------------------

    def _scan(self, data: bytes, subject: str, context: Mapping[str, Any], run: _Run) -> Verdict:
        try:
            return self._stages(data, subject, context, run)
        except Exception as exc:  # noqa: BLE001 - the last line of fail-closed
            log.exception("scan of %r failed", subject)
            run.failures.append((ReasonCode.SCAN_FAILED, f"{type(exc).__name__}: {exc}"))
            return self._verdict(subject, run, context, _safe_hash(data), None, [], [])

    def _stages(self, data: bytes, subject: str, context: Mapping[str, Any], run: _Run) -> Verdict:
        decoded: DecodedImage | None = None
        with run.stage("decode"):
            try:
                decoded = decode(data, self.limits, min_side=self.decode_min_side)
            except UnreadableImage as exc:
                run.failures.append((ReasonCode(exc.code), exc.message))

        with run.stage("hash"):
            if decoded is None:
                hashes = hash_bytes(data)
            else:
                hashes = hash_image(data, decoded.frames, decoded.frame_indices)
                if decoded.frames_truncated:
                    run.failures.append(
                        (
                            ReasonCode.TOO_MANY_FRAMES,
                            f"{decoded.frame_count} frames; only the first {decoded.frame_indices[-1] + 1}"
                            " fit the frame and pixel budget",
                        )
                    )

        matches: list[Match] = []
        if self.matcher is not None:
            with run.stage("match"):
                matches = self.matcher.match(hashes)

        scores: list[ModelScore] = []
        profile = self.policy.profile_for(context)
        already, _ = decide(profile, matches=matches, failures=run.failures)
        if decoded is not None and already is not Action.BLOCK:
            with run.stage("classify"):
                if self.classifier is None:
                    run.failures.append((ReasonCode.MODEL_UNAVAILABLE, self._classifier_error))
                else:
                    try:
                        scores.append(self.classifier.classify(decoded.frames))
                    except ModelUnavailable as exc:
                        run.failures.append((ReasonCode.MODEL_UNAVAILABLE, str(exc)))
            if self.classifier is not None and self.second_opinions:
                with run.stage("second_opinion"):
                    for model in self.second_opinions:
                        try:
                            scores.append(model.classify(decoded.frames))
                        except ModelUnavailable as exc:
                            run.failures.append((ReasonCode.MODEL_UNAVAILABLE, f"{model.model_id}: {exc}"))
        return self._verdict(subject, run, context, hashes, decoded, matches, scores)

    def _verdict(
        self,
        subject: str,
        run: _Run,
        context: Mapping[str, Any],
        hashes: ImageHashes | None,
        decoded: DecodedImage | None,
        matches: list[Match],
        scores: list[ModelScore],
    ) -> Verdict:
        return _build_verdict(
            self.policy,
            run,
            subject=subject,
            context=context,
            bank_version=self.matcher.version if self.matcher else 0,
            hashes=hashes,
            decoded=decoded,
            matches=matches,
            scores=scores,
        )

def failure_verdict(
    policy: Policy,
    code: ReasonCode,
    message: str,
    *,
    subject: str = "",
    context: Mapping[str, Any] | None = None,
    data: bytes | None = None,
    bank_version: int = 0,
) -> Verdict:
    """A verdict from one failure alone, under ``policy``'s fail-closed rules.

    Needs no scanner (no model, no bank), so it can be built wherever a job is given
    up on, e.g. by whichever process finds a job abandoned by a dead worker.
    """
    run = _Run()
    run.failures.append((code, message))
    return _build_verdict(
        policy,
        run,
        subject=subject,
        context=context or {},
        bank_version=bank_version,
        hashes=_safe_hash(data) if data is not None else None,
    )


def _build_verdict(
    policy: Policy,
    run: _Run,
    *,
    subject: str,
    context: Mapping[str, Any],
    bank_version: int,
    hashes: ImageHashes | None = None,
    decoded: DecodedImage | None = None,
    matches: Sequence[Match] = (),
    scores: Sequence[ModelScore] = (),
) -> Verdict:
    """Decide under ``policy`` and assemble the Verdict: the one place both a full scan
    and a failure-only verdict go through, so they cannot drift apart."""
    start = time.perf_counter()
    profile = policy.profile_for(context)
    action, reasons = decide(profile, matches=matches, scores=scores, failures=run.failures)
    run.timings["decide"] = (time.perf_counter() - start) * 1000.0
    media = None
    if decoded is not None:
        media = MediaInfo(
            decoded.format, decoded.width, decoded.height, decoded.frame_count, len(decoded.frames), decoded.notes
        )
    return Verdict(
        subject=subject,
        action=action,
        reasons=reasons,
        policy_version=policy.version,
        profile=profile.name,
        bank_version=bank_version,
        matches=tuple(matches),
        scores=tuple(scores),
        hashes=hashes,
        media=media,
        timings_ms=dict(run.timings),
        context=dict(context),
    )

def _safe_hash(data: bytes) -> ImageHashes | None:
    try:
        return hash_bytes(data)
    except Exception:  # noqa: BLE001
        return None
