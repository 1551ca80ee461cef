"""The verdict: what was decided about one photo, and every fact behind it.

It is the one record every consumer reads (the CLI table, JSON Lines, later the job
result, the verdict stream and callbacks), so it serialises to plain JSON types and
its reason codes are a stable, documented vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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
    #: What the act stage must do to an allowed file before it is shown:
    #: ``strip_metadata`` (the profile's ``[privacy]``; :mod:`photosentry.media.scrub`).
    rewrite: tuple[str, ...] = ()

    @property
    def reason_codes(self) -> list[str]:
        return [r.code.value for r in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        return {
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

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))
