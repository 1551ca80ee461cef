"""The scan pipeline: bytes in, one :class:`Verdict` out, never an exception.

    read -> decode -> hash -> match -> classify -> decide

Long-lived parts (the policy, the bank matcher, the classifier) are built once and
passed in, so a worker keeps them warm across photos. Every failure inside a stage
becomes a fail-closed reason; the classifier is skipped when a bank match already
blocks. For bulk work, :meth:`Scanner.scan_many` runs the same stages with the
classify stage batched across photos, each verdict as a scan alone would give it.
This module knows nothing of Redis or RQ.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .. import defaults
from ..decode import DecodedImage, Limits, decode, read_limited
from ..errors import ModelUnavailable, UnreadableImage
from ..media.budget import further_reduction
from ..hashes.codecs import Algorithm, hamming
from ..hashes.matcher import BankMatcher, Match
from ..hashes.signals import CopySearch, ImageHashes, hash_bytes, hash_frames
from ..models.classifier import ModelScore, NudityClassifier
from .policy import Policy, decide, rewrites
from .verdict import Action, FlaggedUploader, MediaInfo, Reason, ReasonCode, Verdict

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


@dataclass
class _Photo:
    """One photo between the stages: what is known of it so far."""

    data: bytes
    subject: str
    context: Mapping[str, Any]
    run: _Run
    uploader: FlaggedUploader | None = None
    decoded: DecodedImage | None = None
    hashes: ImageHashes | None = None
    matches: list[Match] = field(default_factory=list)
    scores: list[ModelScore] = field(default_factory=list)
    #: The frames the models see (:func:`_model_frames`), set once hashed.
    model_frames: tuple[np.ndarray, ...] = ()
    #: Decoded, and not already blocked by a bank match or a failure.
    needs_models: bool = False
    #: Set once decided (by the catch-all for an unexpected error, or at the end).
    verdict: Verdict | None = None

    @property
    def frame_count(self) -> int:
        return len(self.model_frames)

    @property
    def held_bytes(self) -> int:
        """Memory this photo holds while it waits for the models: its bytes and pixels."""
        pixels = sum(f.nbytes for f in self.decoded.frames) if self.decoded is not None else 0
        return len(self.data) + pixels


@dataclass(frozen=True)
class ScanItem:
    """One photo for :meth:`Scanner.scan_many`: its bytes, and what scan_bytes would be given."""

    data: bytes
    subject: str = ""
    context: Mapping[str, Any] | None = None


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

    def scan_bytes(self, data: bytes, *, subject: str = "", context: Mapping[str, Any] | None = None,
                   failures: Sequence[tuple[ReasonCode, str]] = (), uploader: FlaggedUploader | None = None) -> Verdict:
        """Scan bytes already in memory.

        Args:
            failures: facts known before the scan that keep it from being a clean one
                (e.g. ``upload_id_reused``); the policy decides on them with the rest.
            uploader: the upload's uploader is flagged: a fact for the policy too.
        """
        run = _Run()
        run.failures.extend(failures)
        return self._scan(data, subject, context or {}, run, uploader)

    def scan_many(self, items: Iterable[ScanItem], *, batch_size: int | None = None) -> list[Verdict]:
        """Scan many photos, the models run over several photos' frames per call.

        Each photo is decoded, hashed and matched alone; a photo already decided (a
        bank block, an unreadable file) never waits for the models. The rest are
        classified together, up to ``batch_size`` frames per model call (an animation's
        frames are batched with other photos' and its score is the max over its own),
        then decided one by one. Every verdict equals what :meth:`scan_bytes` gives that
        photo alone; the classify time of a call is shared by its photos' frame counts.
        If a batched call fails, each of its photos is classified alone, so a bad photo
        costs only its own verdict. ``items`` is consumed as it goes: at most
        ``batch_size`` frames and ``defaults.SCAN_BATCH_MAX_BYTES`` of photos wait at once.

        Args:
            items: the photos, in order; the verdicts come back in the same order.
            batch_size: most frames per model call; None: :meth:`default_batch_size`.
        """
        size = self.default_batch_size() if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {size}")
        verdicts: list[Verdict] = []
        waiting: list[tuple[int, _Photo]] = []
        frames = held = 0

        def flush() -> None:
            group = [photo for _, photo in waiting]
            self._classify_group(group, size)
            for index, photo in waiting:
                verdicts[index] = self._conclude(photo)
            waiting.clear()

        for item in items:
            photo = _Photo(item.data, item.subject, item.context or {}, _Run())
            self._guarded(photo, self._prepare)
            if not photo.needs_models:
                verdicts.append(self._conclude(photo))
                continue
            verdicts.append(None)  # type: ignore[arg-type]  # filled by flush()
            waiting.append((len(verdicts) - 1, photo))
            frames += photo.frame_count
            held += photo.held_bytes
            if frames >= size or held >= defaults.SCAN_BATCH_MAX_BYTES:
                flush()
                frames = held = 0
        if waiting:
            flush()
        return verdicts

    def default_batch_size(self) -> int:
        """Frames per model call for :meth:`scan_many` on the classifier's provider."""
        provider = getattr(self.classifier, "provider", "CPUExecutionProvider")
        return defaults.SCAN_BATCH_CPU if provider == "CPUExecutionProvider" else defaults.SCAN_BATCH_GPU

    def failed(
        self,
        code: ReasonCode,
        message: str,
        *,
        subject: str = "",
        context: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        also: Sequence[tuple[ReasonCode, str]] = (),
    ) -> Verdict:
        """The fail-closed verdict for a photo that never reached the stages
        (a refused source, a file too large to read ...)."""
        return failure_verdict(
            self.policy, code, message, subject=subject, context=context, data=data,
            bank_version=self.matcher.version if self.matcher else 0, also=also,
        )

    # -- stages -------------------------------------------------------------------

    def _scan(self, data: bytes, subject: str, context: Mapping[str, Any], run: _Run,
              uploader: FlaggedUploader | None = None) -> Verdict:
        photo = _Photo(data, subject, context, run, uploader=uploader)
        self._guarded(photo, self._prepare)
        if photo.needs_models:
            self._guarded(photo, self._classify)
        return self._conclude(photo)

    def _guarded(self, photo: "_Photo", stage: Callable[["_Photo"], None]) -> None:
        """Run one stage of ``photo``; an unexpected error decides it (fail closed) and no
        later stage runs."""
        if photo.verdict is not None:
            return
        try:
            stage(photo)
        except Exception as exc:  # noqa: BLE001 - the last line of fail-closed
            photo.verdict = self._crashed(photo, exc)

    def _crashed(self, photo: "_Photo", exc: Exception) -> Verdict:
        log.exception("scan of %r failed", photo.subject)
        photo.needs_models = False
        photo.run.failures.append((ReasonCode.SCAN_FAILED, f"{type(exc).__name__}: {exc}"))
        return self._verdict(photo.subject, photo.run, photo.context, _safe_hash(photo.data), None, [], [])

    def _conclude(self, photo: "_Photo") -> Verdict:
        if photo.verdict is None:
            try:
                photo.verdict = self._verdict(photo.subject, photo.run, photo.context, photo.hashes, photo.decoded,
                                              photo.matches, photo.scores, photo.uploader)
            except Exception as exc:  # noqa: BLE001 - the last line of fail-closed
                photo.verdict = self._crashed(photo, exc)
        return photo.verdict

    def _copy_search(self) -> tuple[bool, bool]:
        """Whether to hash the upload's regions and find its keypoints: only where a
        bank holds what they are matched against (PDQ hashes, image bans' keypoints)."""
        if self.matcher is None:
            return False, False
        return self.matcher.wants_regions, self.matcher.wants_features

    def _found_in_every_bank(self, reasons: Sequence[Reason]) -> bool:
        """Whether every ban bank already blocks the photo."""
        blocking = {r.detail.get("bank") for r in reasons if r.code is ReasonCode.BANK_MATCH and r.action is Action.BLOCK}
        return bool(blocking) and self.matcher is not None and self.matcher.ban_banks <= blocking

    def _decode_side(self, copy_search: tuple[bool, bool]) -> int | None:
        """The decode's smallest side: larger where regions or keypoints are looked for."""
        if self.decode_min_side is not None and any(copy_search):
            return max(self.decode_min_side, defaults.COPY_DECODE_MIN_SIDE)
        return self.decode_min_side

    def _prepare(self, photo: "_Photo") -> None:
        """decode -> hash -> match, and whether the models still have a say."""
        run, data = photo.run, photo.data
        profile = self.policy.profile_for(photo.context)
        decoded: DecodedImage | None = None
        regions, features = copy_search = self._copy_search()
        with run.stage("decode"):
            try:
                decoded = decode(data, self.limits, min_side=self._decode_side(copy_search),
                                 scan_trailing=profile.trailing.scan_kinds)
            except UnreadableImage as exc:
                run.failures.append((ReasonCode(exc.code), exc.message))
        photo.decoded = decoded

        copies: CopySearch | None = None
        with run.stage("hash"):
            if decoded is None:
                photo.hashes = hash_bytes(data)
            else:
                # A reduced frame is hashed with the photo's own PDQ filter, so the
                # values stay those of the full-resolution photo (perceptual.py).
                photo.hashes, copies = hash_frames(data, decoded.frames + decoded.hash_frames,
                                                   decoded.frame_indices + decoded.hash_frame_indices,
                                                   source_size=(decoded.width, decoded.height),
                                                   reduction=decoded.reduction, regions=regions, features=features,
                                                   quick=True, copy_frames=len(decoded.frames))
                photo.model_frames = _model_frames(decoded, photo.hashes, self.decode_min_side)
                if decoded.frames_truncated:
                    run.failures.append(
                        (
                            ReasonCode.TOO_MANY_FRAMES,
                            f"{decoded.frame_count} frames; only the first {decoded.frame_indices[-1] + 1}"
                            " fit the frame and pixel budget",
                        )
                    )

        media = MediaInfo.from_decoded(decoded) if decoded is not None else None
        found = None
        if self.matcher is not None:
            with run.stage("match"):
                found = self.matcher.find(photo.hashes)
                photo.matches = self.matcher.graded(found)
        already, reasons = decide(profile, matches=photo.matches, failures=run.failures, media=media)
        if copies is not None and found is not None and not self._found_in_every_bank(reasons):
            # The copy search (regions, keypoints) is most of a scan's hashing. A photo
            # whose whole frame every ban bank already blocks (a re-encoded or resized
            # copy) has the evidence it needs, as it has for skipping the models; one
            # blocked for anything else, or by one bank of several, is still searched,
            # so its verdict says whether, and in which banks, it is banned (a `csam`
            # bank's photo inset in a meme another bank bans).
            with run.stage("hash"):
                photo.hashes = copies.search(photo.hashes)
            with run.stage("match"):
                self.matcher.find_copies(photo.hashes, found)
                photo.matches = self.matcher.graded(found)
            already, _ = decide(profile, matches=photo.matches, failures=run.failures, media=media)
        photo.needs_models = decoded is not None and already is not Action.BLOCK

    def _classify(self, photo: "_Photo") -> None:
        """The classifier, then the second opinions, on one photo's frames."""
        with photo.run.stage("classify"):
            if self.classifier is None:
                photo.run.failures.append((ReasonCode.MODEL_UNAVAILABLE, self._classifier_error))
            else:
                self._score_one(self.classifier, photo)
        if self.classifier is not None and self.second_opinions:
            with photo.run.stage("second_opinion"):
                for model in self.second_opinions:
                    self._score_one(model, photo)

    def _score_one(self, model: NudityClassifier, photo: "_Photo") -> None:
        assert photo.decoded is not None
        try:
            photo.scores.append(model.classify(photo.model_frames))
        except ModelUnavailable as exc:
            text = str(exc) if model is self.classifier else f"{model.model_id}: {exc}"
            photo.run.failures.append((ReasonCode.MODEL_UNAVAILABLE, text))

    # -- batches (scan_many) -----------------------------------------------------------

    def _classify_group(self, group: list["_Photo"], batch_size: int) -> None:
        """The models over a group of photos, frames of different photos in one call."""
        if self.classifier is None or len(group) == 1:
            for photo in group:
                self._guarded(photo, self._classify)
            return
        self._score_batched(self.classifier, group, "classify", batch_size)
        for model in self.second_opinions:
            # A photo the catch-all decided while scored alone gets no second opinion,
            # as in scan_bytes, where the error ends the scan.
            self._score_batched(model, [p for p in group if p.verdict is None], "second_opinion", batch_size)

    def _score_batched(self, model: NudityClassifier, group: list["_Photo"], stage: str, batch_size: int) -> None:
        """One model over ``group`` in batched calls; if a call fails, each photo is scored
        alone, so one bad photo (or a batch too big for the device) costs only its own verdict."""
        if not group:
            return
        start = time.perf_counter()
        scores: list[ModelScore] | None
        try:
            scores = model.classify_many([p.model_frames for p in group], batch_size=batch_size)
            if len(scores) != len(group):
                raise ValueError(f"{len(scores)} scores for {len(group)} photos")
        except Exception as exc:  # noqa: BLE001 - each photo gets its own chance below
            log.warning("%s: a batch of %d photos failed (%s: %s); scoring them one by one",
                        model.model_id, len(group), type(exc).__name__, exc)
            scores = None
        # The call's time, shared by frame count: what each photo cost the model.
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        frames = sum(p.frame_count for p in group)
        for photo in group:
            photo.run.timings[stage] = photo.run.timings.get(stage, 0.0) + elapsed_ms * photo.frame_count / frames
        if scores is not None:
            for photo, score in zip(group, scores, strict=True):
                photo.scores.append(score)
            return
        for photo in group:
            self._guarded(photo, lambda p: self._score_alone(model, p, stage))

    def _score_alone(self, model: NudityClassifier, photo: "_Photo", stage: str) -> None:
        with photo.run.stage(stage):
            self._score_one(model, photo)

    def _verdict(
        self,
        subject: str,
        run: _Run,
        context: Mapping[str, Any],
        hashes: ImageHashes | None,
        decoded: DecodedImage | None,
        matches: list[Match],
        scores: list[ModelScore],
        uploader: FlaggedUploader | None = None,
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
            uploader=uploader,
        )


def _model_frames(decoded: DecodedImage, hashes: ImageHashes, model_side: int | None) -> tuple[np.ndarray, ...]:
    """The frames the models see: every frame, less trailing images (an EXIF thumbnail,
    an MPF preview) that show the same picture as the photo itself, which the models see
    already; their hashes are matched all the same. ``hashes.frames`` follow
    ``decoded.frames`` one for one (hash-only frames come after them)."""
    frames, own = decoded.frames, decoded.image_frames
    if decoded.format == "jpeg" and model_side is not None:
        frames = tuple(_at_model_side(f, decoded.reduction, model_side) if i < own else f
                       for i, f in enumerate(frames))
    first = hashes.frames[0].get(Algorithm.PDQ) if hashes.frames else None
    if own >= len(frames) or first is None or first.weak:
        return frames
    keep = list(frames[:own])
    for i in range(own, len(frames)):
        ph = hashes.frames[i].get(Algorithm.PDQ) if i < len(hashes.frames) else None
        same = ph is not None and not ph.weak and min(hamming(v, first.value) for v in ph.variants) <= \
            defaults.PDQ_MATCH_DISTANCE
        if not same:
            keep.append(frames[i])
    return tuple(keep)


def _at_model_side(frame: np.ndarray, reduction: int, model_side: int) -> np.ndarray:
    """A JPEG frame decoded larger for copy detection (``COPY_DECODE_MIN_SIDE``), shrunk
    by the power of two the decoder would have taken for the models alone, as a box
    mean: the models see what they saw before copy detection needed the pixels, and
    stretching a frame four times the size to 256x256 cost them 1.5 ms a photo."""
    h, w = frame.shape[:2]
    k = further_reduction(h, w, reduction, model_side)
    if k == 1:
        return frame
    return cv2.resize(frame, (w // k, h // k), interpolation=cv2.INTER_AREA)


def failure_verdict(
    policy: Policy,
    code: ReasonCode,
    message: str,
    *,
    subject: str = "",
    context: Mapping[str, Any] | None = None,
    data: bytes | None = None,
    bank_version: int = 0,
    also: Sequence[tuple[ReasonCode, str]] = (),
) -> Verdict:
    """A verdict from one failure (and the failures in ``also``) alone, under
    ``policy``'s fail-closed rules.

    Needs no scanner (no model, no bank), so it can be built wherever a job is given
    up on, e.g. by whichever process finds a job abandoned by a dead worker.
    """
    run = _Run()
    run.failures.append((code, message))
    run.failures.extend(also)
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
    uploader: FlaggedUploader | None = None,
) -> Verdict:
    """Decide under ``policy`` and assemble the Verdict: the one place both a full scan
    and a failure-only verdict go through, so they cannot drift apart."""
    start = time.perf_counter()
    profile = policy.profile_for(context)
    media = MediaInfo.from_decoded(decoded) if decoded is not None else None
    action, reasons = decide(profile, matches=matches, scores=scores, failures=run.failures, media=media,
                             uploader=uploader)
    run.timings["decide"] = (time.perf_counter() - start) * 1000.0
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
        rewrite=rewrites(profile, action, media),
    )


def _safe_hash(data: bytes) -> ImageHashes | None:
    try:
        return hash_bytes(data)
    except Exception:  # noqa: BLE001
        return None
