"""Policy: a versioned TOML file that turns facts into an action with reasons.

``decide`` is a pure function of the profile, the matches, the model scores and any
failure: no I/O, no Redis, no models, so every rule can be tested on its own and a
verdict can be recomputed from recorded facts. Loading refuses any policy that could
allow a photo that was not fully scanned.
"""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import PolicyError
from ..hashes.matcher import Match
from ..models.classifier import ModelScore
from .verdict import FAILURE_CODES, Action, Reason, ReasonCode

POLICY_ENV = "PHOTOSENTRY_POLICY"
"""Environment variable naming a policy file to use instead of the shipped default."""

DEFAULT_PROFILE = "default"
_TRUE_STRINGS = frozenset({"1", "true", "yes", "on", "y", "t"})


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


@dataclass(frozen=True)
class Profile:
    """The effective rules for one upload after its context picked profiles."""

    name: str
    models: Mapping[str, Thresholds]
    bank_actions: Mapping[str, Action]
    default_bank_action: Action
    fail_closed: Mapping[ReasonCode, Action]
    allow: AllowRules = AllowRules()

    def bank_action(self, bank: str) -> Action:
        return self.bank_actions.get(bank, self.default_bank_action)


@dataclass(frozen=True)
class _ProfileRule:
    name: str
    description: str
    when_true: tuple[str, ...]
    when_under: Mapping[str, float]
    models: Mapping[str, Thresholds]
    bank_actions: Mapping[str, Action]
    allow: AllowRules | None = None

    def applies(self, context: Mapping[str, Any]) -> bool:
        if any(_truthy(context.get(key)) for key in self.when_true):
            return True
        for key, limit in self.when_under.items():
            number = _number(context.get(key))
            if number is not None and number < limit:
                return True
        return False


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
                    "allow"},
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
        base = Profile(
            name=DEFAULT_PROFILE,
            models=_models(raw.get("models", {}), f"{where}: models"),
            bank_actions=_bank_actions(banks, f"{where}: banks"),
            default_bank_action=default_bank_action,
            fail_closed=fail_closed,
            allow=_allow_rules(raw.get("allow", {}), f"{where}: allow"),
        )
        rules = []
        for name, body in dict(raw.get("profiles", {})).items():
            w = f"{where}: profiles.{name}"
            if not isinstance(body, Mapping):
                raise PolicyError(f"{w} must be a table")
            _only(body, {"description", "when_true", "when_under", "models", "banks", "allow"}, w)
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
                )
            )
        return cls(version=version.strip(), base=base, rules=tuple(rules), source=source,
                   uploaders=_uploader_rules(raw.get("uploaders", {}), f"{where}: uploaders"),
                   review=_review_rules(raw.get("review", {}), f"{where}: review"))

    # -- use ----------------------------------------------------------------------

    def profile_for(self, context: Mapping[str, Any]) -> Profile:
        """The base rules made stricter by every profile the context selects."""
        applied = [r for r in self.rules if r.applies(context)]
        if not applied:
            return self.base
        models = dict(self.base.models)
        banks = dict(self.base.bank_actions)
        allow = self.base.allow
        for rule in applied:
            if rule.allow is not None:
                allow = allow.stricter(rule.allow)
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
        )

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
) -> tuple[Action, tuple[Reason, ...]]:
    """The action and its reasons, most severe first.

    ``failures`` are (code, text) pairs for anything that kept the photo from being
    fully scanned; each maps through ``fail_closed`` and can never yield allow.
    """
    reasons: list[Reason] = []
    for code, text in failures:
        reasons.append(Reason(code, profile.fail_closed[code], text))

    allowed = [m for m in matches if m.allow and not m.weak]  # a low-quality PDQ hash vouches for nothing
    vouched = _vouched_for(allowed)
    rules = profile.allow
    suppressed: list[Reason] = []
    by_bank: dict[str, list[Match]] = {}
    for m in matches:
        if not m.weak and not m.allow:  # a low-quality PDQ hash does not match on its own
            by_bank.setdefault(m.bank, []).append(m)
    for bank, hits in by_bank.items():
        if vouched and ReasonCode.BANK_MATCH in rules.suppresses and bank not in rules.never_suppress_banks:
            cleared = [h for h in hits if _cleared(h, allowed)]
            hits = [h for h in hits if not _cleared(h, allowed)]
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
                (suppressed if vouched and ReasonCode.NUDITY in rules.suppresses else reasons).append(reason)
                break

    if suppressed:
        reasons.append(_allow_listed(allowed, suppressed))
    if not reasons:
        return Action.ALLOW, (Reason(ReasonCode.CLEAN, Action.ALLOW, "no bank match and no score over a threshold"),)
    reasons.sort(key=lambda r: -r.action.severity)
    return Action.most_severe([r.action for r in reasons]), tuple(reasons)


def _vouched_for(allowed: Sequence[Match]) -> bool:
    """Whether allow matches identify this photo as a released one: its exact bytes, or
    near copies in at least two perceptual hashes. One perceptual hash alone never
    vouches: single-hash collisions are easy to forge, and a forged collision with a
    released photo must not clear a banned one."""
    if any(not a.algorithm.is_perceptual for a in allowed):
        return True
    return len({a.algorithm for a in allowed}) >= 2


def _cleared(ban: Match, allowed: Sequence[Match]) -> bool:
    """A ban match is cleared by the released photo's exact bytes, or by an allow entry of
    the same perceptual hash at least as close as the ban entry (an exact ban match is
    cleared only by exact bytes)."""
    return any(
        not a.algorithm.is_perceptual
        or (ban.algorithm.is_perceptual and a.algorithm is ban.algorithm and a.distance <= ban.distance)
        for a in allowed
    )


def _bank_reason(profile: Profile, bank: str, hits: Sequence[Match]) -> Reason:
    closest = min(hits, key=lambda m: m.distance / m.algorithm.bits)
    return Reason(
        ReasonCode.BANK_MATCH,
        profile.bank_action(bank),
        f"matches {len(hits)} entr{'y' if len(hits) == 1 else 'ies'} of bank {bank!r}"
        f" (closest: entry {closest.entry_id}, {closest.algorithm.value} distance {closest.distance})",
        {"bank": bank, "entry_ids": sorted(m.entry_id for m in hits)},
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


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_STRINGS
    return bool(value) if isinstance(value, (bool, int, float)) else False


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _found(score: ModelScore) -> list[str]:
    """A detector's labels, strongest first, so a moderator sees why (e.g. FEMALE_BREAST_EXPOSED 0.91)."""
    return list(dict.fromkeys(f"{d.label} {d.confidence:.2f}" for d in score.detections))[:5]


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
