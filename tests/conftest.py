"""Shared fixtures: the photo corpus, an isolated data directory, the loaded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from photosentry.hashes.banks import SqliteBankStore
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.policy import Policy

from . import corpus as corpus_mod


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> corpus_mod.Corpus:
    return corpus_mod.build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def classifier() -> OpenNsfwClassifier:
    # Loaded once: a ResNet-50 session takes a second to build.
    return OpenNsfwClassifier(threads=1)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PhotoSentry home; the environment points every command at it."""
    home = tmp_path / "home"
    monkeypatch.setenv("PHOTOSENTRY_HOME", str(home))
    monkeypatch.delenv("PHOTOSENTRY_POLICY", raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path) -> SqliteBankStore:
    s = SqliteBankStore(tmp_path / "banks.sqlite3")
    yield s
    s.close()


@pytest.fixture
def policy() -> Policy:
    return Policy.default()
