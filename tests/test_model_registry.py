"""The model registry: the one place a model name becomes a model."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from photosentry.cli import cli
from photosentry.errors import RegistryError
from photosentry.models.manifest import BUILTIN_MANIFESTS
from photosentry.models.registry import (
    DEFAULT_CLASSIFIER,
    SECOND_OPINION_NAMES,
    SECOND_OPINIONS,
    SecondOpinion,
    _registry,
    second_opinions,
)


def test_every_registered_model_has_a_shipped_manifest() -> None:
    assert DEFAULT_CLASSIFIER in BUILTIN_MANIFESTS
    assert SECOND_OPINION_NAMES == ("nudenet",)
    assert all(o.manifest in BUILTIN_MANIFESTS for o in SECOND_OPINIONS.values())


def test_names_select_registered_models_once_in_registry_order_and_ignore_others() -> None:
    # PHOTOSENTRY_SECOND_MODELS has always ignored names it does not know.
    assert second_opinions("nudenet,nudenet,unknown,".split(",")) == (SECOND_OPINIONS["nudenet"],)
    assert second_opinions(["", "NudeNet"]) == ()


def test_an_inconsistent_model_registry_is_refused() -> None:
    nudenet = SECOND_OPINIONS["nudenet"]
    with pytest.raises(RegistryError, match="registered twice"):
        _registry([nudenet, nudenet])
    with pytest.raises(RegistryError, match="no shipped manifest 'nope'"):
        _registry([SecondOpinion("other", "nope", nudenet._build, nudenet._notice)])


def test_scan_offers_exactly_the_registered_second_opinions() -> None:
    result = CliRunner().invoke(cli, ["scan", "--second-model", "other", "x.jpg"])
    assert result.exit_code == 2
    assert "'other' is not 'nudenet'" in result.output or "'other' is not one of 'nudenet'" in result.output


def test_scan_second_model_runs_the_registered_model_and_shows_its_notice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    photo = Path(__file__).resolve().parents[1] / "examples" / "photos" / "rocket.jpg"
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "scan", "--json", "--second-model", "nudenet",
                                      str(photo)])
    assert result.exit_code == 0, result.output
    assert "AGPL" in result.stderr
    verdict = json.loads(result.stdout.splitlines()[-1])
    assert {s["model"] for s in verdict["scores"]} >= {"open_nsfw", SECOND_OPINIONS["nudenet"].manifest}
