"""The hash-algorithm registry: it checks itself, and every part that names per-algorithm
facts (signals, SQLite columns, CLI flags, the weak rule) reads it."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from photosentry import defaults
from photosentry.cli import cli
from photosentry.errors import PhotoSentryError, RegistryError
from photosentry.hashes.algorithms import ALGORITHMS, PERCEPTUAL, Algorithm, AlgorithmSpec, _registry
from photosentry.hashes.banks import SqliteBankStore
from photosentry.hashes.signals import (
    BYTES_SIGNALS,
    FRAME_SIGNALS,
    SIGNALS,
    Md5Signal,
    PdqSignal,
    PerceptualHash,
    Sha256Signal,
    _signal_registry,
)


def test_registry_holds_the_facts_the_project_documents() -> None:
    assert list(ALGORITHMS) == list(Algorithm)
    assert PERCEPTUAL == (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH)
    assert [(a.bits, a.spec.default_distance, a.spec.max_distance) for a in Algorithm] == [
        (256, 0, 0), (128, 0, 0),
        (256, defaults.PDQ_MATCH_DISTANCE, 127), (64, defaults.PHASH_MATCH_DISTANCE, 31),
        (64, defaults.DHASH_MATCH_DISTANCE, 31), (defaults.FEATURE_COUNT * 36 * 8, 0, 0),
    ]
    assert [a for a in Algorithm if a.is_features] == [Algorithm.ORB]
    for algorithm, signal in SIGNALS.items():  # the hashers take their facts from it
        assert signal.default_distance == algorithm.spec.default_distance
    assert PdqSignal.QUALITY_THRESHOLD == Algorithm.PDQ.spec.quality_threshold == defaults.PDQ_QUALITY_THRESHOLD


def test_weak_rule_is_the_quality_threshold_of_algorithms_that_have_one() -> None:
    threshold = defaults.PDQ_QUALITY_THRESHOLD
    pdq = "ab" * 32
    assert PerceptualHash(Algorithm.PDQ, pdq, (pdq,), threshold - 1).weak
    assert PerceptualHash(Algorithm.PDQ, pdq, (pdq,), None).weak  # no score counts as 0
    assert not PerceptualHash(Algorithm.PDQ, pdq, (pdq,), threshold).weak
    # The 64-bit hashes carry their frame's PDQ quality and are gated at their own threshold.
    short = defaults.SHORT_HASH_QUALITY_THRESHOLD
    assert PerceptualHash(Algorithm.PHASH, "ab" * 8, ("ab" * 8,), short - 1).weak
    assert not PerceptualHash(Algorithm.DHASH, "ab" * 8, ("ab" * 8,), short).weak


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([*ALGORITHMS.values(), ALGORITHMS[Algorithm.MD5]], "registered twice"),
        ([s for a, s in ALGORITHMS.items() if a is not Algorithm.DHASH], "without a spec: dhash"),
        ([replace(s, default_distance=3) if a is Algorithm.MD5 else s for a, s in ALGORITHMS.items()],
         "matched exactly"),
        ([replace(s, default_distance=40) if a is Algorithm.PHASH else s for a, s in ALGORITHMS.items()],
         "outside 0..31"),
        ([replace(s, bits=96) if a is Algorithm.DHASH else s for a, s in ALGORITHMS.items()], "64-bit words"),
    ],
    ids=["duplicate", "missing", "exact-with-distance", "distance-too-wide", "not-whole-words"],
)
def test_an_inconsistent_algorithm_registry_is_refused(specs: list[AlgorithmSpec], message: str) -> None:
    with pytest.raises(RegistryError, match=message) as caught:
        _registry(specs)
    assert isinstance(caught.value, PhotoSentryError)


def test_an_inconsistent_signal_registry_is_refused_even_under_python_O() -> None:
    # A real exception, not an assert: `python -O` strips asserts.
    with pytest.raises(RegistryError, match="both hash sha256"):
        _signal_registry((Sha256Signal, Md5Signal, Sha256Signal), FRAME_SIGNALS)
    with pytest.raises(RegistryError, match="without a signal: md5"):
        _signal_registry((Sha256Signal,), FRAME_SIGNALS)
    with pytest.raises(RegistryError, match="pdq is perceptual"):
        _signal_registry((*BYTES_SIGNALS, type("FakePdq", (Md5Signal,), {"algorithm": Algorithm.PDQ})),
                         FRAME_SIGNALS[1:])


def test_sqlite_banks_table_has_a_distance_column_per_perceptual_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "banks.sqlite3"
    with SqliteBankStore(path):
        pass
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(banks)")]
    assert [c for c in columns if c.endswith("_distance")] == [a.spec.distance_column for a in PERCEPTUAL]


def test_a_bank_file_missing_a_distance_column_gains_it_and_keeps_its_banks(tmp_path: Path) -> None:
    # A file written before dHash was registered: the same file without its column.
    path = tmp_path / "banks.sqlite3"
    with SqliteBankStore(path) as store:
        store.configure_bank("old", distances={Algorithm.PHASH: 5}, description="kept", actor="a", reason="r")
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE banks DROP COLUMN dhash_distance")
    db.close()
    with SqliteBankStore(path) as store:
        assert store.bank("old").distances == {Algorithm.PHASH: 5}
        store.configure_bank("old", distances={Algorithm.DHASH: 4}, description="kept", actor="a", reason="r")
        assert store.bank("old").distances == {Algorithm.DHASH: 4}


def test_ban_configure_has_one_distance_flag_per_perceptual_algorithm(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(cli, ["ban", "configure", "--help"]).output
    for algorithm in PERCEPTUAL:
        spec = algorithm.spec
        assert f"{spec.cli_option} INTEGER RANGE" in help_text
        assert f"{spec.label} match distance (default {spec.default_distance})" in help_text
        assert f"[0<=x<={spec.max_distance}]" in help_text
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "ban", "configure", "b", "--dhash", "5", "--pdq", "20",
                                 "--by", "a", "--reason", "r"])
    assert result.exit_code == 0, result.output
    assert "pdq <= 20, phash <= 8, dhash <= 5" in result.output
    too_wide = runner.invoke(cli, ["--data-dir", str(tmp_path), "ban", "configure", "b", "--phash", "32",
                                   "--by", "a", "--reason", "r"])
    assert too_wide.exit_code == 2
