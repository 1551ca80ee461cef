"""The verdict: what was decided about one photo, and every fact behind it.

It is the one record every consumer reads (the CLI table, JSON Lines, later the job
result, the verdict stream and callbacks), so it serialises to plain JSON types and
its reason codes are a stable, documented vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from .. import decode as _decode
from ..hashes.matcher import Match
from ..hashes.signals import ImageHashes
from ..media.trailing import Trailer
from ..models.classifier import ModelScore


class Action(str, Enum):
    """What happens to the photo, least to most severe."""

    #: Shown to people.
    ALLOW = "allow"
    #: Held for a moderator; not shown until released.
    QUARANTINE = "quarantine"
    #: Refused; kept only in the blocked store for evidence.
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def most_severe(cls, actions: list["Action"]) -> "Action":
        return max(actions, key=lambda a: a.severity, default=cls.ALLOW)


_SEVERITY = {Action.ALLOW: 0, Action.QUARANTINE: 1, Action.BLOCK: 2}


class ReasonCode(str, Enum):
    """Stable, machine-readable reasons. Never rename one: pipelines branch on them."""

    #: Nothing matched and every score was under its thresholds.
    CLEAN = "clean"
    #: A hash matched an active entry of a bank.
    BANK_MATCH = "bank_match"
    #: Only weak bank matches (a lone 64-bit hash, a low-detail picture's hash): shown so
    #: a moderator sees them, never acted on (hashes/evidence.py).
    WEAK_MATCH = "weak_match"
    #: A nudity model's score reached a threshold.
    NUDITY = "nudity"
    #: The photo matched an allow bank (a known false positive), which suppressed
    #: other reasons (bank matches, a model score) as the policy's ``[allow]`` permits;
    #: the suppressed reasons are listed in this reason's detail, the matches stay.
    ALLOW_LISTED = "allow_listed"
    #: The file has no bytes.
    EMPTY_FILE = _decode.EMPTY_FILE
    #: The file exceeds the byte limit.
    TOO_LARGE = _decode.TOO_LARGE
    #: The content is not any image format (whatever the extension says).
    NOT_AN_IMAGE = _decode.NOT_AN_IMAGE
    #: A real image format that we do not decode (SVG, PSD, JPEG XL, a video ...).
    UNSUPPORTED_FORMAT = _decode.UNSUPPORTED_FORMAT
    #: An attack: a declared size far beyond what the file's bytes could hold; never decoded.
    DECOMPRESSION_BOMB = _decode.DECOMPRESSION_BOMB
    #: An ordinary picture too big to decode safely in its format (even at 1/8 scale
    #: for a JPEG; PNG, WebP, HEIC ... cannot be reduced); never decoded.
    TOO_MANY_PIXELS = _decode.TOO_MANY_PIXELS
    #: Corrupt or truncated image data.
    UNREADABLE = _decode.UNREADABLE
    #: An animation longer than the frame or pixel budget: part of it was never seen.
    TOO_MANY_FRAMES = "too_many_frames"
    #: A required model could not be loaded, so the photo was not classified.
    MODEL_UNAVAILABLE = "model_unavailable"
    #: Any other failure while scanning, or a job that failed or timed out after its retries.
    SCAN_FAILED = "scan_failed"
    #: A queued job named a source outside the worker's source roots (``..``, a
    #: symlink out, NUL bytes ...): refused and never read.
    SOURCE_REFUSED = "source_refused"
    #: The uploader's penalty score is over the policy's threshold and the policy holds
    #: their otherwise-allowed uploads for review (never lowers a block).
    UPLOADER_FLAGGED = "uploader_flagged"
    #: A moderator reviewed the quarantined photo and allowed it.
    MODERATOR_RELEASED = "moderator_released"
    #: A moderator reviewed the quarantined photo and blocked it.
    MODERATOR_CONFIRMED = "moderator_confirmed"
    #: Another file came under an upload id already decided for different bytes: it is
    #: scanned on its own and held, never handed the other file's verdict.
    UPLOAD_ID_REUSED = "upload_id_reused"
    #: A context value a policy profile reads could not be read (``recipient_age="fifteen"``),
    #: so every profile reading it applied; the detail names the values. Never lowers an action.
    CONTEXT_UNREADABLE = "context_unreadable"
    #: Data after the image's end (or hidden in its container) of a kind the policy's
    #: ``[trailing]`` table quarantines or blocks: a ZIP, a script, unknown bytes.
    #: The detail names its kind, size and offset.
    TRAILING_DATA = "trailing_data"
    #: Trailing content the policy asked to scan (a motion photo's video, an MPF image)
    #: could not be decoded, or only in part: what no one looked at is not allowed.
    TRAILING_UNSCANNED = "trailing_unscanned"
    #: The profile asks for location metadata to be removed, the photo has GPS
    #: coordinates, and its format cannot be rewritten losslessly (``[privacy]``).
    LOCATION_NOT_REMOVED = "location_not_removed"


FAILURE_CODES = frozenset(
    {
        ReasonCode.EMPTY_FILE,
        ReasonCode.TOO_LARGE,
        ReasonCode.NOT_AN_IMAGE,
        ReasonCode.UNSUPPORTED_FORMAT,
        ReasonCode.DECOMPRESSION_BOMB,
        ReasonCode.TOO_MANY_PIXELS,
        ReasonCode.UNREADABLE,
        ReasonCode.TOO_MANY_FRAMES,
        ReasonCode.TRAILING_UNSCANNED,
        ReasonCode.MODEL_UNAVAILABLE,
        ReasonCode.SCAN_FAILED,
        ReasonCode.SOURCE_REFUSED,
        ReasonCode.UPLOAD_ID_REUSED,
    }
)
"""Reasons that mean "not fully scanned": the policy may never map them to allow."""


@dataclass(frozen=True)
class Reason:
    """One reason for the verdict and the action it calls for."""

    code: ReasonCode
    action: Action
    text: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code.value, "action": self.action.value, "text": self.text}
        if self.detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Reason":
        return cls(ReasonCode(raw["code"]), Action(raw["action"]), str(raw.get("text", "")),
                   dict(raw.get("detail") or {}))


@dataclass(frozen=True)
class MediaInfo:
    """What the decoder found (absent when the file could not be decoded)."""

    format: str
    width: int
    height: int
    frame_count: int
    #: Frames hashed and classified: the image's own and those of scanned trailing parts.
    frames_scanned: int
    #: Oddities (``exif_unreadable``), ``gps_coordinates``, and one ``trailing_<kind>:<bytes>``
    #: per part of data found after the image's end.
    notes: tuple[str, ...] = ()
    #: The photo's EXIF or XMP carries GPS coordinates.
    gps: bool = False
    #: What follows the image or hides in its container, part by part.
    trailers: tuple[Trailer, ...] = ()

    @classmethod
    def from_decoded(cls, decoded: "_decode.DecodedImage") -> "MediaInfo":
        notes = (*decoded.notes, *(("gps_coordinates",) if decoded.gps else ()), *(t.note for t in decoded.trailers))
        return cls(decoded.format, decoded.width, decoded.height, decoded.frame_count, len(decoded.frames),
                   notes, decoded.gps, decoded.trailers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "frame_count": self.frame_count,
            "frames_scanned": self.frames_scanned,
            "notes": list(self.notes),
            "gps": self.gps,
            "trailing": [t.to_dict() for t in self.trailers],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "MediaInfo":
        return cls(str(raw["format"]), int(raw["width"]), int(raw["height"]), int(raw["frame_count"]),
                   int(raw["frames_scanned"]), tuple(str(n) for n in raw.get("notes") or ()),
                   bool(raw.get("gps", False)), tuple(Trailer.from_dict(t) for t in raw.get("trailing") or ()))


@dataclass(frozen=True)
class ModeratorDecision:
    """A moderator's decision on a quarantined upload: a fact the policy decides on last."""

    #: ``release`` (allow) or ``confirm`` (block).
    decision: str
    item_id: str
    upload_id: str
    by: str
    reason: str
    #: The bank the photo's hashes went into with the decision, if any.
    bank: str | None = None
    at: float = 0.0

    RELEASE: ClassVar[str] = "release"
    CONFIRM: ClassVar[str] = "confirm"

    def __post_init__(self) -> None:
        if self.decision not in (self.RELEASE, self.CONFIRM):
            raise ValueError(f"a decision is release or confirm, not {self.decision!r}")

    @property
    def released(self) -> bool:
        return self.decision == self.RELEASE

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "item_id": self.item_id, "upload_id": self.upload_id, "by": self.by,
                "reason": self.reason, "bank": self.bank, "at": self.at}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModeratorDecision":
        return cls(str(raw["decision"]), str(raw["item_id"]), str(raw.get("upload_id", "")), str(raw["by"]),
                   str(raw.get("reason", "")), raw.get("bank") if isinstance(raw.get("bank"), str) else None,
                   float(raw.get("at") or 0.0))


@dataclass(frozen=True)
class FlaggedUploader:
    """The upload's uploader is flagged (penalty score over the policy's threshold)."""

    uploader_id: str
    score: float
    threshold: float


@dataclass(frozen=True)
class Verdict:
    """The decision about one photo."""

    subject: str
    action: Action
    reasons: tuple[Reason, ...]
    policy_version: str
    profile: str
    bank_version: int
    matches: tuple[Match, ...] = ()
    scores: tuple[ModelScore, ...] = ()
    hashes: ImageHashes | None = None
    media: MediaInfo | None = None
    #: Milliseconds per pipeline stage, in the order they ran.
    timings_ms: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    # -- what a queue worker adds for one upload --------------------------------------
    #: The upload this verdict is for (queue jobs and rescans; None for a plain scan).
    upload_id: str | None = None
    #: Decided earlier for the same bytes under the same rules (the verdict cache).
    cache_hit: bool = False
    #: Recorded, but nothing was moved (``rescan --dry-run``).
    dry_run: bool = False
    # -- a moderator's decision replacing a quarantine -------------------------------
    decision: ModeratorDecision | None = None
    #: The reasons the photo was quarantined for, before the decision.
    quarantine_reasons: tuple[Reason, ...] = ()
    #: What the act stage must do to an allowed file before it is shown:
    #: ``strip_metadata`` (the profile's ``[privacy]``; :mod:`photosentry.media.scrub`).
    rewrite: tuple[str, ...] = ()

    @property
    def reason_codes(self) -> list[str]:
        return [r.code.value for r in self.reasons]

    def failures(self) -> list[tuple[ReasonCode, str]]:
        """The facts that kept the photo from a full scan, as the policy was given them."""
        return [(r.code, r.text) for r in self.reasons if r.code in FAILURE_CODES]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subject": self.subject,
            "action": self.action.value,
            "reasons": [r.to_dict() for r in self.reasons],
            "matches": [m.to_dict() for m in self.matches],
            "scores": [s.to_dict() for s in self.scores],
            "hashes": self.hashes.to_dict() if self.hashes else None,
            "media": self.media.to_dict() if self.media else None,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "policy_version": self.policy_version,
            "profile": self.profile,
            "bank_version": self.bank_version,
            "context": self.context,
            **({"rewrite": list(self.rewrite)} if self.rewrite else {}),
        }
        # Only when set, so a plain scan's JSON keeps its shape.
        if self.upload_id is not None:
            out["upload_id"] = self.upload_id
        if self.cache_hit:
            out["cache"] = "hit"
        if self.dry_run:
            out["dry_run"] = True  # readers of the stream must know nothing was moved
        if self.decision is not None:
            out["quarantine_reasons"] = [r.to_dict() for r in self.quarantine_reasons]
            out["decision"] = self.decision.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Verdict":
        """The inverse of :meth:`to_dict`: a verdict read back from the stream, the cache,
        a review record or a store sidecar. Fields a record leaves out (the cache keeps
        no per-upload ones) take their defaults.

        Raises:
            ValueError, KeyError, TypeError: ``raw`` is not a verdict record.
        """
        hashes, media, decision = raw.get("hashes"), raw.get("media"), raw.get("decision")
        return cls(
            subject=str(raw.get("subject", "")),
            action=Action(raw["action"]),
            reasons=tuple(Reason.from_dict(r) for r in raw.get("reasons") or ()),
            policy_version=str(raw.get("policy_version", "")),
            profile=str(raw.get("profile", "")),
            bank_version=int(raw.get("bank_version") or 0),
            matches=tuple(Match.from_dict(m) for m in raw.get("matches") or ()),
            scores=tuple(ModelScore.from_dict(s) for s in raw.get("scores") or ()),
            hashes=ImageHashes.from_dict(hashes) if isinstance(hashes, Mapping) else None,
            media=MediaInfo.from_dict(media) if isinstance(media, Mapping) else None,
            timings_ms={str(k): float(v) for k, v in dict(raw.get("timings_ms") or {}).items()},
            context=dict(raw.get("context") or {}),
            upload_id=str(raw["upload_id"]) if raw.get("upload_id") is not None else None,
            cache_hit=raw.get("cache") == "hit",
            dry_run=raw.get("dry_run") is True,
            decision=ModeratorDecision.from_dict(decision) if isinstance(decision, Mapping) else None,
            quarantine_reasons=tuple(Reason.from_dict(r) for r in raw.get("quarantine_reasons") or ()),
            rewrite=tuple(str(r) for r in raw.get("rewrite") or ()),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))
