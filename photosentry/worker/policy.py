"""Policy: a versioned TOML file that turns facts into an action with reasons.

``decide`` is a pure function of the profile, the matches, the model scores and any
failure: no I/O, no Redis, no models, so every rule can be tested on its own and a
verdict can be recomputed from recorded facts. Loading refuses any policy that could
allow a photo that was not fully scanned.
"""

from __future__ import annotations

import importlib.resources
import os
from decimal import Decimal, InvalidOperation
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import PolicyError
from ..hashes.codecs import Algorithm
from ..hashes.evidence import REVIEW_ONLY_BASES, describe
from ..hashes.matcher import Match
from ..media import scrub
from ..media import trailing as _trailing
from ..models.classifier import ModelScore
from .verdict import FAILURE_CODES, Action, FlaggedUploader, MediaInfo, ModeratorDecision, Reason, ReasonCode, Verdict

POLICY_ENV = "PHOTOSENTRY_POLICY"
"""Environment variable naming a policy file to use instead of the shipped default."""

DEFAULT_PROFILE = "default"
_TRUE_STRINGS = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE_STRINGS = frozenset({"0", "false", "no", "off", "n", "f"})
_MAX_NUMBER_CHARS = 64


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds of one model; None means that action is never taken on score."""

    quarantine: float | None = None
    block: float | None = None

    def stricter(self, other: "Thresholds") -> "Thresholds":
        return Thresholds(_min(self.quarantine, other.quarantine), _min(self.block, other.block))


#: What an allow-bank match may ever suppress: never a failure (fail closed).
ALLOW_SUPPRESSIBLE = frozenset({ReasonCode.BANK_MATCH, ReasonCode.NUDITY})


@dataclass(frozen=True)
class AllowRules:
    """What a match in an allow bank (a known false positive) may suppress (``[allow]``)."""

    #: Reason codes an allow match suppresses: a subset of ``bank_match`` and ``nudity``.
    suppresses: frozenset[ReasonCode] = ALLOW_SUPPRESSIBLE
    #: Banks whose matches an allow match never suppresses.
    never_suppress_banks: frozenset[str] = frozenset()

    def stricter(self, other: "AllowRules") -> "AllowRules":
        return AllowRules(self.suppresses & other.suppresses, self.never_suppress_banks | other.never_suppress_banks)


#: What ``[trailing]`` may say about a kind of trailing data, least to most severe.
TRAILING_ACTIONS = ("allow", "scan", "quarantine", "block")
#: The shipped answer for each kind (also what a policy file that omits a kind gets):
#: scan what can be scanned, keep harmless filler, quarantine the rest.
DEFAULT_TRAILING = {
    _trailing.MP4: "scan",
    _trailing.JPEG: "scan",
    _trailing.IMAGE: "scan",
    _trailing.METADATA: "allow",
    _trailing.PADDING: "allow",
    _trailing.ZIP: "quarantine",
    _trailing.SCRIPT: "quarantine",
    _trailing.UNKNOWN: "quarantine",
}


@dataclass(frozen=True)
class TrailingRules:
    """What data found after an image's end gets, by kind (the ``[trailing]`` table).

    ``scan``: its content is decoded and scanned like the photo's own frames (a motion
    photo's video, an MPF image); if it cannot be, the photo fails closed
    (``trailing_unscanned``). ``allow``: kept, and named in the verdict's media notes.
    ``quarantine``/``block``: reason ``trailing_data``. ``unknown`` can never be
    allowed (nothing vouches for it) and only ``mp4``/``jpeg``/``image`` can be scanned.
    """

    actions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TRAILING))

    @property
    def scan_kinds(self) -> frozenset[str]:
        return frozenset(k for k, a in self.actions.items() if a == "scan")

    def action(self, kind: str) -> str:
        return self.actions.get(kind, self.actions.get(_trailing.UNKNOWN, "quarantine"))

    def stricter(self, other: Mapping[str, str]) -> "TrailingRules":
        merged = dict(self.actions)
        for kind, action in other.items():
            merged[kind] = max(merged.get(kind, action), action, key=TRAILING_ACTIONS.index)
        return TrailingRules(merged)


@dataclass(frozen=True)
class PrivacyRules:
    """Location privacy (the ``[privacy]`` table)."""

    #: Have allowed uploads written back without GPS and other identifying metadata
    #: (the verdict says ``rewrite: ["strip_metadata"]``; the worker rewrites a path
    #: source in place, losslessly: :mod:`photosentry.media.scrub`).
    strip_metadata: bool = False
    #: What a photo with GPS coordinates gets when its format cannot be rewritten
    #: losslessly (TIFF, BMP, GIF) and stripping was asked for (``location_not_removed``).
    unremovable: Action = Action.QUARANTINE

    def stricter(self, other: "PrivacyRules") -> "PrivacyRules":
        return PrivacyRules(self.strip_metadata or other.strip_metadata,
                            Action.most_severe([self.unremovable, other.unremovable]))


@dataclass(frozen=True)
class Profile:
    """The effective rules for one upload after its context picked profiles."""

    name: str
    models: Mapping[str, Thresholds]
    bank_actions: Mapping[str, Action]
    default_bank_action: Action
    fail_closed: Mapping[ReasonCode, Action]
    allow: AllowRules = AllowRules()
    #: Context values the policy reads but could not (``recipient_age='fifteen'``): every
    #: profile that reads them applies, and the verdict says so.
    unreadable_context: tuple[str, ...] = ()
    #: Hold a flagged uploader's otherwise-allowed uploads for review (``[uploaders]``).
    hold_flagged_uploaders: bool = True
    trailing: TrailingRules = TrailingRules()
    privacy: PrivacyRules = PrivacyRules()

    def bank_action(self, bank: str) -> Action:
        return self.bank_actions.get(bank, self.default_bank_action)

    @property
    def cache_name(self) -> str:
        """The profile's part of a verdict-cache key: an unreadable context is part of the
        verdict (its reason), so such uploads never share entries with readable ones."""
        return self.name + ("!unreadable" if self.unreadable_context else "")


@dataclass(frozen=True)
class _ProfileRule:
    name: str
    description: str
    when_true: tuple[str, ...]
    when_under: Mapping[str, float]
    models: Mapping[str, Thresholds]
    bank_actions: Mapping[str, Action]
    allow: AllowRules | None = None
    trailing: Mapping[str, str] | None = None
    privacy: PrivacyRules | None = None

    def applies(self, reading: "ContextReading") -> bool:
        """Whether the context selects this profile. A key it reads that holds an
        unreadable value selects it too: a producer's typo must never mean the adult
        rules for a child."""
        if any(key in reading.unreadable for key in (*self.when_true, *self.when_under)):
            return True
        if any(reading.flags.get(key) for key in self.when_true):
            return True
        return any(key in reading.numbers and reading.numbers[key] < Decimal(repr(limit))
                   for key, limit in self.when_under.items())


@dataclass(frozen=True)
class ContextReading:
    """The context values the policy's profiles read, as typed values.

    Producers in any language send strings: ``"15"`` is 15 and ``"true"`` is true.
    A value that is neither (``"fifteen"``, ``"maybe"``, ``-1`` for a flag) is kept in
    ``unreadable`` with why; a missing, null or empty value is simply absent.
    """

    flags: Mapping[str, bool]
    #: Exact values: "17.99999999999999999" is under 18, as written.
    numbers: Mapping[str, Decimal]
    #: key -> why its value could not be read.
    unreadable: Mapping[str, str]

    def notes(self) -> tuple[str, ...]:
        return tuple(f"{key}: {why}" for key, why in sorted(self.unreadable.items()))


@dataclass(frozen=True)
class UploaderRules:
    """Repeat uploaders (the ``[uploaders]`` table): penalties that decay, and a flag."""

    context_key: str = defaults.UPLOADER_CONTEXT_KEY
    block_penalty: float = defaults.UPLOADER_BLOCK_PENALTY
    confirm_penalty: float = defaults.UPLOADER_CONFIRM_PENALTY
    threshold: float = defaults.UPLOADER_THRESHOLD
    half_life_days: float = defaults.UPLOADER_HALF_LIFE_DAYS
    #: Hold a flagged uploader's otherwise-allowed uploads for review.
    quarantine_flagged: bool = True


@dataclass(frozen=True)
class ReviewRules:
    """What happens to a quarantined file after a decision (the ``[review]`` table)."""

    #: "keep": a confirmed photo moves to the blocked store as evidence; "delete": it is removed.
    confirmed_files: str = "keep"
    evidence_days: float = float(defaults.EVIDENCE_DAYS)


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy file."""

    version: str
    base: Profile
    rules: tuple[_ProfileRule, ...] = ()
    source: str = "<default>"
    uploaders: UploaderRules = UploaderRules()
    review: ReviewRules = ReviewRules()

    # -- loading ------------------------------------------------------------------

    @classmethod
    def default(cls) -> "Policy":
        """The shipped default policy (or the file named by $PHOTOSENTRY_POLICY)."""
        override = os.environ.get(POLICY_ENV)
        if override:
            return cls.from_file(override)
        text = importlib.resources.files(__package__).joinpath("default_policy.toml").read_text("utf-8")
        return cls.from_toml(text, source="<default>")

    @classmethod
    def from_file(cls, path: str | Path) -> "Policy":
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {str(path)!r}: {exc.strerror or exc}") from exc
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> "Policy":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
        return cls.from_dict(raw, source=source)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<dict>") -> "Policy":
        where = source
        _only(raw, {"version", "description", "models", "banks", "fail_closed", "profiles", "uploaders", "review",
                    "allow", "trailing", "privacy"},
              where)
        version = raw.get("version")
        if not isinstance(version, str) or not version.strip():
            raise PolicyError(f"{where}: `version` must be a non-empty string")
        banks = dict(raw.get("banks", {}))
        default_bank_action = _action(banks.pop("default_action", "block"), f"{where}: banks.default_action")
        _no_allow(default_bank_action, f"{where}: banks.default_action")
        fail_closed: dict[ReasonCode, Action] = {}
        given = dict(raw.get("fail_closed", {}))
        for code in FAILURE_CODES:
            action = _action(given.pop(code.value, "quarantine"), f"{where}: fail_closed.{code.value}")
            if action is Action.ALLOW:
                raise PolicyError(f"{where}: fail_closed.{code.value} = 'allow' would let an unscanned photo through")
            fail_closed[code] = action
        if given:
            raise PolicyError(f"{where}: unknown fail_closed keys {sorted(given)}")
        uploaders = _uploader_rules(raw.get("uploaders", {}), f"{where}: uploaders")
        base = Profile(
            name=DEFAULT_PROFILE,
            models=_models(raw.get("models", {}), f"{where}: models"),
            bank_actions=_bank_actions(banks, f"{where}: banks"),
            default_bank_action=default_bank_action,
            fail_closed=fail_closed,
            allow=_allow_rules(raw.get("allow", {}), f"{where}: allow"),
            hold_flagged_uploaders=uploaders.quarantine_flagged,
            trailing=TrailingRules({**DEFAULT_TRAILING, **_trailing_table(raw.get("trailing", {}), f"{where}: trailing")}),
            privacy=_privacy_rules(raw.get("privacy", {}), f"{where}: privacy", PrivacyRules()),
        )
        rules = []
        for name, body in dict(raw.get("profiles", {})).items():
            w = f"{where}: profiles.{name}"
            if not isinstance(body, Mapping):
                raise PolicyError(f"{w} must be a table")
            _only(body, {"description", "when_true", "when_under", "models", "banks", "allow", "trailing", "privacy"},
                  w)
            when_true = body.get("when_true", [])
            when_under = body.get("when_under", {})
            if not isinstance(when_true, list) or not all(isinstance(k, str) for k in when_true):
                raise PolicyError(f"{w}.when_true must be a list of context keys")
            if not isinstance(when_under, Mapping) or not all(isinstance(v, (int, float)) for v in when_under.values()):
                raise PolicyError(f"{w}.when_under must map context keys to numbers")
            if not when_true and not when_under:
                raise PolicyError(f"{w} has no when_true or when_under: it could never apply")
            rules.append(
                _ProfileRule(
                    name=name,
                    description=str(body.get("description", "")),
                    when_true=tuple(when_true),
                    when_under=dict(when_under),
                    models=_models(body.get("models", {}), f"{w}.models"),
                    bank_actions=_bank_actions(dict(body.get("banks", {})), f"{w}.banks"),
                    allow=_allow_rules(body["allow"], f"{w}.allow") if "allow" in body else None,
                    trailing=_trailing_table(body["trailing"], f"{w}.trailing") if "trailing" in body else None,
                    privacy=_privacy_rules(body["privacy"], f"{w}.privacy", PrivacyRules(False, Action.ALLOW))
                    if "privacy" in body else None,
                )
            )
        return cls(version=version.strip(), base=base, rules=tuple(rules), source=source, uploaders=uploaders,
                   review=_review_rules(raw.get("review", {}), f"{where}: review"))

    # -- use ----------------------------------------------------------------------

    def read_context(self, context: Mapping[str, Any]) -> ContextReading:
        """The values of ``context`` that any profile reads, parsed (see :class:`ContextReading`).

        A key written another way than the policy spells it (``recipientAge``,
        ``Recipient_Age``, ``"recipient_age "``) is unreadable too: a typo must never
        mean the adult rules for a child.
        """
        read: dict[str, Any] = {}  # key -> flag, number or None (absent)
        unreadable: dict[str, str] = {}
        readers = {key: read_flag for rule in self.rules for key in rule.when_true}
        readers.update({key: read_number for rule in self.rules for key in rule.when_under})
        spelled = {_spelling(key): key for key in readers}
        for given in context:
            key = spelled.get(_spelling(str(given)))
            if key is not None and given != key:
                unreadable[key] = f"given as {given!r}, which the policy spells {key!r}"
        for key, reader in readers.items():
            if key in context and key not in unreadable:
                try:
                    read[key] = reader(context[key])
                except (ValueError, TypeError, ArithmeticError) as exc:
                    unreadable[key] = str(exc)
        flags = {k: v for k, v in read.items() if isinstance(v, bool)}
        numbers = {k: v for k, v in read.items() if isinstance(v, Decimal)}
        return ContextReading(flags, numbers, unreadable)

    def profile_for(self, context: Mapping[str, Any]) -> Profile:
        """The base rules made stricter by every profile the context selects."""
        reading = self.read_context(context)
        applied = [r for r in self.rules if r.applies(reading)]
        if not applied:
            return self.base
        models = dict(self.base.models)
        banks = dict(self.base.bank_actions)
        allow = self.base.allow
        trailing = self.base.trailing
        privacy = self.base.privacy
        for rule in applied:
            if rule.allow is not None:
                allow = allow.stricter(rule.allow)
            if rule.trailing is not None:
                trailing = trailing.stricter(rule.trailing)
            if rule.privacy is not None:
                privacy = privacy.stricter(rule.privacy)
            for model, thresholds in rule.models.items():
                models[model] = models[model].stricter(thresholds) if model in models else thresholds
            for bank, action in rule.bank_actions.items():
                current = banks.get(bank, self.base.default_bank_action)
                banks[bank] = Action.most_severe([current, action])
        return Profile(
            name="+".join(r.name for r in applied),
            models=models,
            bank_actions=banks,
            default_bank_action=self.base.default_bank_action,
            fail_closed=self.base.fail_closed,
            allow=allow,
            unreadable_context=reading.notes(),
            hold_flagged_uploaders=self.base.hold_flagged_uploaders,
            trailing=trailing,
            privacy=privacy,
        )

    def redecide(self, verdict: Verdict, *, uploader: FlaggedUploader | None = None,
                 moderator: ModeratorDecision | None = None,
                 failures: Sequence[tuple[ReasonCode, str]] = ()) -> Verdict:
        """``verdict`` decided again from its own facts with ``uploader``, ``moderator`` or
        more ``failures`` added (a cached verdict for a flagged uploader; a moderator's
        decision; bytes found to reuse a decided upload id), through the same
        :func:`decide` as a scan."""
        profile = self.profile_for(verdict.context)
        recorded = [f for f in verdict.failures() if f[0] not in MEDIA_CODES]  # media gives those again
        action, reasons = decide(profile, matches=verdict.matches, scores=verdict.scores, media=verdict.media,
                                 failures=[*recorded, *failures], uploader=uploader, moderator=moderator)
        if moderator is None:
            return replace(verdict, action=action, reasons=reasons, rewrite=rewrites(profile, action, verdict.media))
        return replace(verdict, action=action, reasons=reasons, decision=moderator,
                       quarantine_reasons=verdict.reasons, rewrite=rewrites(profile, action, verdict.media))

    def decision_thresholds(self, model_id: str) -> list[tuple[float | None, float | None]]:
        """Every (quarantine, block) pair a score of ``model_id`` can be judged by: the base
        rules' and each profile's made stricter, as :meth:`profile_for` combines them.
        An optimised build of the model must change no decision under any of them."""
        base = self.base.models.get(model_id)
        pairs = [] if base is None else [(base.quarantine, base.block)]
        for rule in self.rules:
            if model_id in rule.models:
                t = base.stricter(rule.models[model_id]) if base is not None else rule.models[model_id]
                pairs.append((t.quarantine, t.block))
        return pairs

    def require_models(self, model_ids: Sequence[str]) -> None:
        """Refuse to run a model the policy has no thresholds for (its score would be ignored)."""
        missing = [m for m in model_ids if m not in self.base.models]
        if missing:
            raise PolicyError(f"{self.source}: no [models.<id>] thresholds for {missing}")


def decide(
    profile: Profile,
    *,
    matches: Sequence[Match] = (),
    scores: Sequence[ModelScore] = (),
    failures: Sequence[tuple[ReasonCode, str]] = (),
    uploader: FlaggedUploader | None = None,
    moderator: ModeratorDecision | None = None,
    media: MediaInfo | None = None,
) -> tuple[Action, tuple[Reason, ...]]:
    """The action and its reasons, most severe first: the one place facts become both.

    Args:
        failures: (code, text) pairs for anything that kept the photo from being fully
            scanned; each maps through ``fail_closed`` and can never yield allow.
        media: what the file holds besides its pixels: trailing data (judged by
            ``[trailing]``) and GPS coordinates (``[privacy]``).
        uploader: the upload's uploader is flagged; a photo that would be allowed is
            held for review (``uploader_flagged``) when the profile says so. It never
            lowers an action.
        moderator: a moderator reviewed the quarantined photo; their decision is the
            action (release: allow, confirm: block), whatever the other facts say.
    """
    if moderator is not None:
        return _moderated(moderator)
    reasons: list[Reason] = []
    for code, text in failures:
        reasons.append(Reason(code, profile.fail_closed[code], text))
    if media is not None:
        reasons.extend(_media_reasons(profile, media))

    allowed = [m for m in matches if m.allow and not m.weak]  # weak evidence vouches for nothing
    release = _Release.of(allowed)
    rules = profile.allow
    suppressed: list[Reason] = []
    by_bank: dict[str, list[Match]] = {}
    for m in matches:
        if not m.weak and not m.allow:  # weak evidence decides nothing (hashes/evidence.py)
            by_bank.setdefault(m.bank, []).append(m)
    for bank, hits in by_bank.items():
        if release and ReasonCode.BANK_MATCH in rules.suppresses and bank not in rules.never_suppress_banks:
            cleared = [h for h in hits if release.clears(h)]
            hits = [h for h in hits if not release.clears(h)]
            if cleared:
                suppressed.append(_bank_reason(profile, bank, cleared))
        if hits:
            reasons.append(_bank_reason(profile, bank, hits))

    for score in scores:
        thresholds = profile.models.get(score.model_id, Thresholds())
        for action, limit in ((Action.BLOCK, thresholds.block), (Action.QUARANTINE, thresholds.quarantine)):
            if limit is not None and score.score >= limit:
                reason = Reason(
                    ReasonCode.NUDITY,
                    action,
                    f"{score.model_id} scored {score.score:.3f} (>= {action.value} threshold {limit})"
                    + (f": {', '.join(_found(score))}" if score.detections else ""),
                    {"model": score.model_id, "score": round(score.score, 6), "threshold": limit,
                     **({"labels": _found(score)} if score.detections else {})},
                )
                (suppressed if release.covers(media) and ReasonCode.NUDITY in rules.suppresses
                 else reasons).append(reason)
                break

    if suppressed:
        reasons.append(_allow_listed(allowed, suppressed))
    if not reasons:
        reasons.append(Reason(ReasonCode.CLEAN, Action.ALLOW, "no bank match and no score over a threshold"))
    weak = [m for m in matches if m.weak and not m.allow]
    if weak:
        reasons.append(_weak_reason(weak))
    if profile.unreadable_context:
        reasons.append(Reason(
            ReasonCode.CONTEXT_UNREADABLE, Action.ALLOW,
            f"context could not be read ({'; '.join(profile.unreadable_context)}): profile {profile.name!r},"
            " the strictest it could select, applies",
            {"unreadable": list(profile.unreadable_context), "profile": profile.name},
        ))
    reasons.sort(key=lambda r: -r.action.severity)  # stable: a clean photo's first reason stays `clean`
    action = Action.most_severe([r.action for r in reasons])
    if uploader is not None and profile.hold_flagged_uploaders and action is Action.ALLOW:
        return Action.QUARANTINE, (_flagged(uploader), *reasons)
    return action, tuple(reasons)


def _flagged(uploader: FlaggedUploader) -> Reason:
    return Reason(
        ReasonCode.UPLOADER_FLAGGED, Action.QUARANTINE,
        f"uploader {uploader.uploader_id!r} is flagged: penalty score {uploader.score:.2f} >= threshold"
        f" {uploader.threshold:g}",
        {"uploader_id": uploader.uploader_id, "score": round(uploader.score, 6), "threshold": uploader.threshold},
    )


def _moderated(decision: ModeratorDecision) -> tuple[Action, tuple[Reason, ...]]:
    action = Action.ALLOW if decision.released else Action.BLOCK
    code = ReasonCode.MODERATOR_RELEASED if decision.released else ReasonCode.MODERATOR_CONFIRMED
    return action, (Reason(code, action,
                           f"{'released' if decision.released else 'confirmed'} by {decision.by}: {decision.reason}",
                           {"by": decision.by, "item_id": decision.item_id, "bank": decision.bank}),)


def rewrites(profile: Profile, action: Action, media: MediaInfo | None) -> tuple[str, ...]:
    """What the act stage must do to the file before it is shown: ``strip_metadata`` for an
    allowed photo whose profile asks for it, in a format that can be rewritten losslessly."""
    if action is Action.ALLOW and profile.privacy.strip_metadata and media is not None and scrub.can_strip(media.format):
        return (scrub.STRIP_METADATA,)
    return ()


#: The reason codes :func:`_media_reasons` gives: re-derived from a verdict's media, not
#: carried over as recorded failures, when a verdict is decided again.
MEDIA_CODES = frozenset({ReasonCode.TRAILING_DATA, ReasonCode.TRAILING_UNSCANNED, ReasonCode.LOCATION_NOT_REMOVED})


def _media_reasons(profile: Profile, media: MediaInfo) -> list[Reason]:
    """Reasons from what the file carries besides its pixels."""
    out = []
    for part in media.trailers:
        action = profile.trailing.action(part.kind)
        where = f"{part.kind} data ({part.size} bytes at {part.offset}{', ' + part.source if part.source else ''})"
        if action == "scan":
            if part.error is not None or part.frames_scanned == 0:
                out.append(Reason(ReasonCode.TRAILING_UNSCANNED, profile.fail_closed[ReasonCode.TRAILING_UNSCANNED],
                                  f"{where} could not be scanned: {part.error or 'not decoded'}", part.to_dict()))
        elif action != "allow":
            out.append(Reason(ReasonCode.TRAILING_DATA, Action(action), f"{where} after the image", part.to_dict()))
    if media.gps and profile.privacy.strip_metadata and not scrub.can_strip(media.format):
        out.append(Reason(ReasonCode.LOCATION_NOT_REMOVED, profile.privacy.unremovable,
                          f"the photo carries GPS coordinates and {media.format} files cannot be rewritten"
                          " without them losslessly", {"format": media.format}))
    return out


@dataclass(frozen=True)
class _Release:
    """What allow matches identify as a released photo: the whole file (its exact bytes),
    or some of its frames, each by near copies of the whole frame in PDQ and at least one
    more perceptual hash.

    One perceptual hash alone never vouches: single-hash collisions are easy to forge,
    and a forged collision with a released photo must not clear a banned one. PDQ must
    be one of them: pHash and dHash (64 bits of the lowest frequencies) stay within a
    few bits of the released photo with a third of it covered by a banned one. Nor do a
    region's hashes or keypoints vouch: they find the released photo *inside* the
    upload (a collage cell, a screenshot). And a frame vouches for itself only: a
    released photo as one frame of a GIF, one page of a TIFF, an appended image or an
    EXIF thumbnail clears nothing in the others."""

    #: The allow matches (strong ones only) the release was read from.
    allowed: tuple[Match, ...]
    whole_file: bool
    frames: frozenset[int]

    @classmethod
    def of(cls, allowed: Sequence[Match]) -> "_Release":
        if any(a.algorithm.is_exact for a in allowed):
            return cls(tuple(allowed), True, frozenset())
        seen: dict[int, set[Algorithm]] = {}
        for a in allowed:
            if a.algorithm.is_perceptual and not a.region:
                seen.setdefault(a.frame, set()).add(a.algorithm)
        return cls(tuple(allowed), False,
                   frozenset(f for f, algos in seen.items() if Algorithm.PDQ in algos and len(algos) >= 2))

    def __bool__(self) -> bool:
        return self.whole_file or bool(self.frames)

    def clears(self, ban: Match) -> bool:
        """A ban match is cleared by the released file's exact bytes; or, in a frame
        identified as the released photo, by an allow entry of the same perceptual hash
        (or keypoints: as many inliers) at least as close as the ban entry, in that frame
        (an exact ban match is cleared only by exact bytes)."""
        if self.whole_file:
            return True
        return not ban.algorithm.is_exact and ban.frame in self.frames and any(
            a.frame == ban.frame and a.algorithm is ban.algorithm and a.distance <= ban.distance for a in self.allowed)

    def covers(self, media: MediaInfo | None) -> bool:
        """Whether everything the models saw is the released photo: its exact bytes, or a
        file of one frame that is identified as it (no media: nothing was decoded, so
        the models saw nothing)."""
        if self.whole_file:
            return True
        return (media is None or media.frames_scanned == 1) and 0 in self.frames


def _bank_reason(profile: Profile, bank: str, hits: Sequence[Match]) -> Reason:
    closest = min(hits, key=lambda m: (m.basis in REVIEW_ONLY_BASES, m.distance / m.algorithm.bits))
    action = profile.bank_action(bank)
    if all(m.basis in REVIEW_ONLY_BASES for m in hits) and action.severity > Action.QUARANTINE.severity:
        action = Action.QUARANTINE  # evidence enough to hold for a moderator, not to block
    how = describe(closest) if closest.algorithm.is_features else \
        f"{closest.algorithm.value} distance {closest.distance}, {describe(closest)}"
    return Reason(
        ReasonCode.BANK_MATCH,
        action,
        f"matches {len(hits)} entr{'y' if len(hits) == 1 else 'ies'} of bank {bank!r}"
        f" (closest: entry {closest.entry_id}, {how})",
        {"bank": bank, "entry_ids": sorted(m.entry_id for m in hits),
         **({"bases": sorted({m.basis for m in hits if m.basis})} if any(m.basis for m in hits) else {}),
         **({"regions": sorted({m.region for m in hits if m.region})} if any(m.region for m in hits) else {})},
    )


def _weak_reason(weak: Sequence[Match]) -> Reason:
    """The evidence that was not enough to act on, for the record and the moderators."""
    closest = min(weak, key=lambda m: m.distance / m.algorithm.bits)
    return Reason(
        ReasonCode.WEAK_MATCH,
        Action.ALLOW,
        f"{len(weak)} weak match{'es' if len(weak) != 1 else ''} not acted on (closest: entry {closest.entry_id}"
        f" of bank {closest.bank!r}, {closest.algorithm.value} distance {closest.distance}: {describe(closest)})",
        {"entry_ids": sorted(m.entry_id for m in weak), "banks": sorted({m.bank for m in weak}),
         "bases": sorted({m.basis for m in weak})},
    )


def _allow_listed(allowed: Sequence[Match], suppressed: Sequence[Reason]) -> Reason:
    """The one reason recording what allow matches suppressed (the matches stay in the verdict)."""
    closest = min(allowed, key=lambda m: m.distance / m.algorithm.bits)
    banks = sorted({m.bank for m in allowed})
    return Reason(
        ReasonCode.ALLOW_LISTED,
        Action.ALLOW,
        f"allow bank {', '.join(repr(b) for b in banks)} (entry {closest.entry_id},"
        f" {closest.algorithm.value} distance {closest.distance}) suppressed "
        + ", ".join(f"{r.code.value} ({r.action.value})" for r in suppressed),
        {
            "allow_banks": banks,
            "allow_entry_ids": sorted(m.entry_id for m in allowed),
            "suppressed": [r.to_dict() for r in suppressed],
        },
    )


# -- parsing helpers ------------------------------------------------------------------


def _allow_rules(table: Any, where: str) -> AllowRules:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where} must be a table")
    _only(table, {"suppresses", "never_suppress_banks"}, where)
    codes = table.get("suppresses", sorted(c.value for c in ALLOW_SUPPRESSIBLE))
    banks = table.get("never_suppress_banks", [])
    allowed = sorted(c.value for c in ALLOW_SUPPRESSIBLE)
    if not isinstance(codes, list) or not all(isinstance(c, str) and c in allowed for c in codes):
        raise PolicyError(f"{where}.suppresses must be a list drawn from {allowed} (failures are never suppressed)")
    if not isinstance(banks, list) or not all(isinstance(b, str) for b in banks):
        raise PolicyError(f"{where}.never_suppress_banks must be a list of bank names")
    return AllowRules(frozenset(ReasonCode(c) for c in codes), frozenset(banks))



def _trailing_table(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where} must be a table")
    _only(table, set(_trailing.KINDS), where)
    out = {}
    for kind, value in table.items():
        action = str(value).lower()
        if action not in TRAILING_ACTIONS:
            raise PolicyError(f"{where}.{kind}: {value!r} is not one of {list(TRAILING_ACTIONS)}")
        if action == "scan" and kind not in _trailing.SCANNABLE:
            raise PolicyError(f"{where}.{kind}: only {sorted(_trailing.SCANNABLE)} can be scanned")
        if kind == _trailing.UNKNOWN and action == "allow":
            raise PolicyError(f"{where}.unknown = 'allow' would let content nothing vouches for through")
        out[str(kind)] = action
    return out


def _privacy_rules(table: Any, where: str, base: PrivacyRules) -> PrivacyRules:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where} must be a table")
    _only(table, {"strip_metadata", "unremovable"}, where)
    strip = table.get("strip_metadata", base.strip_metadata)
    if not isinstance(strip, bool):
        raise PolicyError(f"{where}.strip_metadata must be true or false")
    unremovable = _action(table["unremovable"], f"{where}.unremovable") if "unremovable" in table else base.unremovable
    return PrivacyRules(strip, unremovable)


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _action(value: Any, where: str) -> Action:
    try:
        return Action(str(value).lower())
    except ValueError:
        raise PolicyError(f"{where}: {value!r} is not an action (allow, quarantine, block)") from None


def _no_allow(action: Action, where: str) -> None:
    if action is Action.ALLOW:
        raise PolicyError(f"{where}: a bank match cannot allow (use an allow-bank instead)")


def _models(table: Any, where: str) -> dict[str, Thresholds]:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where} must be a table")
    out = {}
    for model, body in table.items():
        if not isinstance(body, Mapping):
            raise PolicyError(f"{where}.{model} must be a table with quarantine/block")
        _only(body, {"quarantine", "block"}, f"{where}.{model}")
        values = {}
        for key in ("quarantine", "block"):
            value = body.get(key)
            if value is not None and (not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0):
                raise PolicyError(f"{where}.{model}.{key} must be a number in 0..1, got {value!r}")
            values[key] = None if value is None else float(value)
        if values["quarantine"] is not None and values["block"] is not None and values["block"] < values["quarantine"]:
            raise PolicyError(f"{where}.{model}: block ({values['block']}) is below quarantine ({values['quarantine']})")
        out[str(model)] = Thresholds(**values)
    return out


def _bank_actions(table: Mapping[str, Any], where: str) -> dict[str, Action]:
    out = {}
    for bank, body in table.items():
        if not isinstance(body, Mapping):
            raise PolicyError(f"{where}.{bank} must be a table with `action`")
        _only(body, {"action", "description"}, f"{where}.{bank}")
        action = _action(body.get("action"), f"{where}.{bank}.action")
        _no_allow(action, f"{where}.{bank}.action")
        out[str(bank)] = action
    return out


def _uploader_rules(table: Any, where: str) -> UploaderRules:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where} must be a table")
    _only(table, {"context_key", "block_penalty", "confirm_penalty", "threshold", "half_life_days",
                  "quarantine_flagged"}, where)
    base = UploaderRules()
    numbers = {}
    for key in ("block_penalty", "confirm_penalty", "threshold", "half_life_days"):
        value = table.get(key, getattr(base, key))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PolicyError(f"{where}.{key} must be a number >= 0, got {value!r}")
        numbers[key] = float(value)
    if numbers["threshold"] <= 0 or numbers["half_life_days"] <= 0:
        raise PolicyError(f"{where}: threshold and half_life_days must be above 0")
    key = table.get("context_key", base.context_key)
    if not isinstance(key, str) or not key.strip():
        raise PolicyError(f"{where}.context_key must be a non-empty string")
    flag = table.get("quarantine_flagged", base.quarantine_flagged)
    if not isinstance(flag, bool):
        raise PolicyError(f"{where}.quarantine_flagged must be true or false")
    return UploaderRules(context_key=key.strip(), quarantine_flagged=flag, **numbers)


def _review_rules(table: Any, where: str) -> ReviewRules:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where} must be a table")
    _only(table, {"confirmed_files", "evidence_days"}, where)
    files = table.get("confirmed_files", "keep")
    if files not in ("keep", "delete"):
        raise PolicyError(f"{where}.confirmed_files must be 'keep' or 'delete', got {files!r}")
    days = table.get("evidence_days", float(defaults.EVIDENCE_DAYS))
    if isinstance(days, bool) or not isinstance(days, (int, float)) or days < 0:
        raise PolicyError(f"{where}.evidence_days must be a number of days >= 0, got {days!r}")
    return ReviewRules(confirmed_files=files, evidence_days=float(days))


def read_flag(value: Any) -> bool | None:
    """A context flag: true/false, 1/0, or their strings (``"true"``, ``"no"`` ...).

    Returns None when absent (null or an empty string). Raises ValueError, saying what
    was given, for anything else: ``"maybe"`` is not a no.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in _TRUE_STRINGS:
            return True
        if text in _FALSE_STRINGS:
            return False
    raise ValueError(f"{value!r} is not true or false")


def read_number(value: Any) -> Decimal | None:
    """A context number, exactly as written: a JSON number or its string (``"15"``).
    None when absent (null or an empty string); ValueError, saying what was given, for
    anything else (words, NaN, infinities, numbers too long to be an age or a limit)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    text = value.strip() if isinstance(value, str) else repr(value)
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError(f"{text[:20]}... ({len(text)} characters) is not a number a context holds")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _spelling(key: str) -> str:
    """A key as a typo would not change it: case, spaces, ``_`` and ``-`` dropped."""
    return "".join(c for c in key.casefold() if c.isalnum())


def _found(score: ModelScore) -> list[str]:
    """A detector's labels, strongest first, so a moderator sees why (e.g. FEMALE_BREAST_EXPOSED 0.91)."""
    return list(dict.fromkeys(f"{d.label} {d.confidence:.2f}" for d in score.detections))[:5]


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
