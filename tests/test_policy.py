"""Policy loading, profile selection and the pure ``decide`` function."""

from __future__ import annotations

from pathlib import Path

import pytest

from photosentry.errors import PolicyError
from photosentry.hashes.codecs import Algorithm
from photosentry.hashes.matcher import Match
from photosentry.models.classifier import ModelScore
from photosentry.worker.policy import POLICY_ENV, Policy, Thresholds, decide
from photosentry.worker.verdict import FAILURE_CODES, Action, ReasonCode

MINIMAL = 'version = "t1"\n[models.open_nsfw]\nquarantine = 0.7\nblock = 0.97\n'


def score(value: float, model: str = "open_nsfw") -> ModelScore:
    return ModelScore(model_id=model, model_version="1.0", score=value, labels={"sfw": 1 - value, "nsfw": value})


def match(bank: str, *, entry_id: int = 1, distance: int = 0, weak: bool = False) -> Match:
    return Match(entry_id, bank, Algorithm.PDQ, distance, weak=weak)


def codes(reasons: tuple) -> list[str]:
    return [r.code.value for r in reasons]


# -- loading ---------------------------------------------------------------------------


def test_default_policy_loads(policy: Policy) -> None:
    assert policy.version
    assert policy.source == "<default>"
    assert policy.base.models["open_nsfw"] == Thresholds(0.70, 0.97)
    assert policy.base.bank_action("banned") is Action.BLOCK
    assert policy.base.bank_action("csam") is Action.BLOCK
    assert policy.base.bank_action("moderation") is Action.QUARANTINE
    assert policy.base.bank_action("anything-else") is Action.BLOCK
    assert set(policy.base.fail_closed) == FAILURE_CODES
    assert all(a is not Action.ALLOW for a in policy.base.fail_closed.values())
    assert [r.name for r in policy.rules] == ["minors"]
    policy.require_models(["open_nsfw"])
    with pytest.raises(PolicyError):
        policy.require_models(["some_other_model"])


def test_policy_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(MINIMAL)
    monkeypatch.setenv(POLICY_ENV, str(path))
    loaded = Policy.default()
    assert (loaded.version, loaded.source) == ("t1", str(path))
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(PolicyError):
        Policy.default()


def test_minimal_policy_defaults_fail_closed() -> None:
    loaded = Policy.from_toml(MINIMAL)
    assert all(a is Action.QUARANTINE for a in loaded.base.fail_closed.values())
    assert loaded.base.default_bank_action is Action.BLOCK
    assert loaded.rules == ()


@pytest.mark.parametrize(
    "text",
    [
        # Allowing a photo that was not fully scanned.
        MINIMAL + '[fail_closed]\nunreadable = "allow"\n',
        MINIMAL + '[fail_closed]\nmodel_unavailable = "ALLOW"\n',
        # A bank match that allows.
        MINIMAL + '[banks]\ndefault_action = "allow"\n',
        MINIMAL + '[banks.friends]\naction = "allow"\n',
        # Unknown keys anywhere.
        MINIMAL + 'colour = "blue"\n',
        MINIMAL + '[fail_closed]\nunreadible = "block"\n',
        'version = "t1"\n[models.open_nsfw]\nquarantine = 0.7\nblok = 0.9\n',
        MINIMAL + '[banks.x]\naction = "block"\nseverity = 3\n',
        MINIMAL + '[profiles.kids]\nwhen_true = ["a"]\nwhen_older = { age = 3 }\n',
        # Thresholds out of order or range.
        'version = "t1"\n[models.open_nsfw]\nquarantine = 0.8\nblock = 0.5\n',
        'version = "t1"\n[models.open_nsfw]\nquarantine = 1.5\n',
        'version = "t1"\n[models.open_nsfw]\nquarantine = "high"\n',
        # Structure.
        '[models.open_nsfw]\nquarantine = 0.7\n',  # no version
        'version = ""\n',
        'version = "t1"\n[banks.x]\naction = "delete"\n',
        MINIMAL + "[profiles.never]\ndescription = 'no condition'\n",
        MINIMAL + '[profiles.kids]\nwhen_true = "recipient_is_minor"\n',
        MINIMAL + '[profiles.kids]\nwhen_under = { age = "eighteen" }\n',
        "version = 't1'\nthis is not toml",
    ],
)
def test_bad_policies_rejected(text: str) -> None:
    with pytest.raises(PolicyError):
        Policy.from_toml(text)


def test_policy_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Policy.from_toml(MINIMAL + '[fail_closed]\nunreadable = "allow"\n')


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        Policy.from_file(tmp_path / "nope.toml")


def test_fail_closed_may_block() -> None:
    loaded = Policy.from_toml(MINIMAL + '[fail_closed]\ndecompression_bomb = "block"\n')
    assert loaded.base.fail_closed[ReasonCode.DECOMPRESSION_BOMB] is Action.BLOCK
    assert loaded.base.fail_closed[ReasonCode.UNREADABLE] is Action.QUARANTINE


# -- profiles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        {"recipient_is_minor": "true"},
        {"recipient_is_minor": True},
        {"uploader_is_minor": "yes"},
        {"audience_includes_minors": 1},
        {"recipient_age": 15},
        {"recipient_age": "15"},
        {"uploader_age": 17.9},
        {"recipient_age": 30, "recipient_is_minor": "true"},
    ],
)
def test_minors_profile_selected(policy: Policy, context: dict) -> None:
    profile = policy.profile_for(context)
    assert profile.name == "minors"
    assert profile.models["open_nsfw"] == Thresholds(0.30, 0.80)
    assert profile.bank_action("moderation") is Action.BLOCK


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"recipient_age": 30},
        {"recipient_age": "30"},
        {"recipient_age": 18},
        {"recipient_age": ""},
        {"recipient_is_minor": "false"},
        {"recipient_is_minor": "0"},
        {"recipient_is_minor": None},
        {"some_other_key": "true"},
        {"some_other_key": "fifteen"},  # no profile reads it
    ],
)
def test_minors_profile_not_selected(policy: Policy, context: dict) -> None:
    profile = policy.profile_for(context)
    assert profile is policy.base
    assert profile.name == "default"


@pytest.mark.parametrize(
    "context",
    [
        # These two once fell back to the adult profile in silence (issue #15).
        {"recipient_age": "thirty"},
        {"recipient_age": True},  # a bool is not an age
        {"recipient_age": "fifteen"},
        {"recipient_is_minor": "maybe"},
        {"uploader_is_minor": 2},
        {"audience_includes_minors": "sometimes", "recipient_age": 30},
    ],
)
def test_an_unreadable_context_value_selects_the_profiles_that_read_it_and_says_so(
    policy: Policy, context: dict
) -> None:
    profile = policy.profile_for(context)
    assert profile.name == "minors"
    assert profile.models["open_nsfw"] == Thresholds(0.30, 0.80)
    assert profile.unreadable_context
    action, reasons = decide(profile, scores=[score(0.01)])
    assert action is Action.ALLOW
    assert codes(reasons) == ["clean", "context_unreadable"]
    note = reasons[1]
    assert note.detail["profile"] == "minors" and note.detail["unreadable"]
    assert next(iter(context)) in note.text
    # stricter thresholds do apply: 0.5 is allowed for adults, quarantined here
    assert decide(profile, scores=[score(0.5)])[0] is Action.QUARANTINE


def test_profiles_only_make_things_stricter() -> None:
    text = (
        'version = "t2"\n'
        "[models.open_nsfw]\nquarantine = 0.5\nblock = 0.9\n"
        "[banks.moderation]\naction = 'quarantine'\n"
        "[banks.strict]\naction = 'block'\n"
        "[profiles.a]\nwhen_true = ['a']\n"
        "[profiles.a.models.open_nsfw]\nquarantine = 0.6\nblock = 0.8\n"  # looser quarantine: ignored
        "[profiles.a.banks.strict]\naction = 'quarantine'\n"  # looser: ignored
        "[profiles.b]\nwhen_true = ['b']\n"
        "[profiles.b.models.open_nsfw]\nquarantine = 0.2\n"
        "[profiles.b.models.other]\nblock = 0.5\n"
        "[profiles.b.banks.moderation]\naction = 'block'\n"
    )
    loaded = Policy.from_toml(text)
    a = loaded.profile_for({"a": True})
    assert a.name == "a"
    assert a.models["open_nsfw"] == Thresholds(0.5, 0.8)
    assert a.bank_action("strict") is Action.BLOCK
    both = loaded.profile_for({"a": True, "b": "on"})
    assert both.name == "a+b"
    assert both.models["open_nsfw"] == Thresholds(0.2, 0.8)
    assert both.models["other"] == Thresholds(None, 0.5)
    assert both.bank_action("moderation") is Action.BLOCK
    assert both.fail_closed == loaded.base.fail_closed
    # The base is untouched.
    assert loaded.base.models["open_nsfw"] == Thresholds(0.5, 0.9)


# -- decide ----------------------------------------------------------------------------


def test_clean_is_allowed(policy: Policy) -> None:
    action, reasons = decide(policy.base, scores=[score(0.01)])
    assert action is Action.ALLOW
    assert codes(reasons) == ["clean"]
    assert decide(policy.base)[0] is Action.ALLOW


def test_block_bank_match(policy: Policy) -> None:
    action, reasons = decide(policy.base, matches=[match("banned", entry_id=7, distance=3)], scores=[score(0.01)])
    assert action is Action.BLOCK
    (reason,) = reasons
    assert reason.code is ReasonCode.BANK_MATCH
    assert reason.detail == {"bank": "banned", "entry_ids": [7]}


def test_several_matches_one_reason_per_bank(policy: Policy) -> None:
    matches = [match("banned", entry_id=3, distance=9), match("banned", entry_id=1, distance=2), match("moderation")]
    action, reasons = decide(policy.base, matches=matches)
    assert action is Action.BLOCK
    assert [(r.detail["bank"], r.action) for r in reasons] == [("banned", Action.BLOCK), ("moderation", Action.QUARANTINE)]
    assert reasons[0].detail["entry_ids"] == [1, 3]
    assert "entry 1" in reasons[0].text


def test_unlisted_bank_uses_default_action(policy: Policy) -> None:
    assert decide(policy.base, matches=[match("industry-list")])[0] is Action.BLOCK


def test_moderation_bank_depends_on_profile(policy: Policy) -> None:
    assert decide(policy.base, matches=[match("moderation")])[0] is Action.QUARANTINE
    minors = policy.profile_for({"recipient_is_minor": "true"})
    assert decide(minors, matches=[match("moderation")])[0] is Action.BLOCK


def test_weak_matches_ignored(policy: Policy) -> None:
    action, reasons = decide(policy.base, matches=[match("banned", weak=True)])
    # Reported for the moderators, not acted on.
    assert action is Action.ALLOW and codes(reasons) == ["clean", "weak_match"]
    assert reasons[1].action is Action.ALLOW and reasons[1].detail["banks"] == ["banned"]
    # ...but a strong match in the same bank still counts, and only it is listed.
    action, reasons = decide(policy.base, matches=[match("banned", weak=True), match("banned", entry_id=2)])
    assert action is Action.BLOCK and reasons[0].detail["entry_ids"] == [2]


@pytest.mark.parametrize(
    "value, default_action, minors_action",
    [
        (0.0, Action.ALLOW, Action.ALLOW),
        (0.29, Action.ALLOW, Action.ALLOW),
        (0.30, Action.ALLOW, Action.QUARANTINE),
        (0.69, Action.ALLOW, Action.QUARANTINE),
        (0.70, Action.QUARANTINE, Action.QUARANTINE),
        (0.80, Action.QUARANTINE, Action.BLOCK),
        (0.96, Action.QUARANTINE, Action.BLOCK),
        (0.97, Action.BLOCK, Action.BLOCK),
        (1.0, Action.BLOCK, Action.BLOCK),
    ],
)
def test_score_thresholds(policy: Policy, value: float, default_action: Action, minors_action: Action) -> None:
    action, reasons = decide(policy.base, scores=[score(value)])
    assert action is default_action
    if action is not Action.ALLOW:
        (reason,) = reasons
        assert reason.code is ReasonCode.NUDITY
        assert reason.detail["model"] == "open_nsfw"
    assert decide(policy.profile_for({"recipient_age": 15}), scores=[score(value)])[0] is minors_action


def test_score_of_unknown_model_is_not_acted_on(policy: Policy) -> None:
    assert decide(policy.base, scores=[score(1.0, model="mystery")])[0] is Action.ALLOW


@pytest.mark.parametrize("code", sorted(FAILURE_CODES, key=lambda c: c.value))
def test_failures_never_allow(policy: Policy, code: ReasonCode) -> None:
    action, reasons = decide(policy.base, failures=[(code, "broken")], scores=[score(0.0)])
    assert action is Action.QUARANTINE
    assert codes(reasons) == [code.value]
    # With a block bank match as well, the block wins and both reasons are kept.
    action, reasons = decide(policy.base, failures=[(code, "broken")], matches=[match("banned")])
    assert action is Action.BLOCK
    assert codes(reasons) == ["bank_match", code.value]


def test_failure_mapped_to_block() -> None:
    loaded = Policy.from_toml(MINIMAL + '[fail_closed]\nunreadable = "block"\n')
    action, _ = decide(loaded.base, failures=[(ReasonCode.UNREADABLE, "truncated")])
    assert action is Action.BLOCK


def test_reasons_most_severe_first(policy: Policy) -> None:
    action, reasons = decide(
        policy.base,
        matches=[match("moderation")],
        scores=[score(0.99)],
        failures=[(ReasonCode.TOO_MANY_FRAMES, "long")],
    )
    assert action is Action.BLOCK
    assert [r.action for r in reasons] == sorted((r.action for r in reasons), key=lambda a: -a.severity)
    assert reasons[0].code is ReasonCode.NUDITY
