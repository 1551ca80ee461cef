"""Quarantine and blocked stores: content-addressed, private, idempotent."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from photosentry.worker.actions import ActionApplier, ContentStore
from photosentry.worker.pipeline import Scanner
from photosentry.worker.verdict import Action

from .corpus import Corpus


@pytest.fixture
def applier(tmp_path: Path) -> ActionApplier:
    return ActionApplier(quarantine=ContentStore(tmp_path / "quarantine"), blocked=ContentStore(tmp_path / "blocked"))


@pytest.fixture
def scanner(policy, classifier) -> Scanner:  # type: ignore[no-untyped-def]
    return Scanner(policy=policy, matcher=None, classifier=classifier)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_quarantine_moves_the_file_into_a_private_store(tmp_path: Path, corpus: Corpus, applier, scanner) -> None:  # type: ignore[no-untyped-def]
    upload = tmp_path / "inbox" / "upload.jpg"
    upload.parent.mkdir()
    data = corpus.hostile["unreadable"].read_bytes()
    upload.write_bytes(data)
    verdict = scanner.scan_path(upload)
    assert verdict.action is Action.QUARANTINE

    result = applier.apply(verdict, data=data, upload_id="u-1", source=upload)

    assert result.changed and result.source_removed and not upload.exists()
    assert result.stored_at is not None and result.stored_at.read_bytes() == data
    assert result.stored_at.parent.name == verdict.hashes.sha256
    assert _mode(result.stored_at) == 0o600
    store = applier.stores[Action.QUARANTINE]
    for folder in (store.root, result.stored_at.parent, result.stored_at.parent.parent):
        assert _mode(folder) == 0o700
    sidecars = store.sidecars(verdict.hashes.sha256)
    assert len(sidecars) == 1
    assert sidecars[0]["upload_id"] == "u-1"
    assert sidecars[0]["verdict"]["reasons"][0]["code"] == "unreadable"
    assert all(_mode(p) == 0o600 for p in result.stored_at.parent.rglob("*.json"))


def test_applying_the_same_verdict_twice_is_a_no_op(tmp_path: Path, corpus: Corpus, applier, scanner) -> None:  # type: ignore[no-untyped-def]
    data = corpus.hostile["unreadable"].read_bytes()
    verdict = scanner.scan_bytes(data, subject="x")
    first = applier.apply(verdict, data=data, upload_id="u-2")
    second = applier.apply(verdict, data=data, upload_id="u-2")
    assert first.changed and not second.changed
    assert first.stored_at == second.stored_at
    store = applier.stores[Action.QUARANTINE]
    assert len(store.sidecars(verdict.hashes.sha256)) == 1
    # A second upload of the same bytes keeps one copy and adds its own sidecar.
    third = applier.apply(verdict, data=data, upload_id="u-3")
    assert third.changed and third.stored_at == first.stored_at
    assert len(store.sidecars(verdict.hashes.sha256)) == 2
    assert not list(first.stored_at.parent.rglob(".tmp-*"))


def test_allow_leaves_the_file(tmp_path: Path, corpus: Corpus, applier, scanner) -> None:  # type: ignore[no-untyped-def]
    upload = tmp_path / "clean.jpg"
    upload.write_bytes(corpus.clean["chelsea"].read_bytes())
    verdict = scanner.scan_path(upload)
    assert verdict.action is Action.ALLOW
    result = applier.apply(verdict, data=upload.read_bytes(), upload_id="u-4", source=upload)
    assert result == type(result)(Action.ALLOW) and upload.exists()
    assert not any(p.is_file() for p in (tmp_path / "quarantine").rglob("*"))


def test_upload_ids_never_name_paths(tmp_path: Path, corpus: Corpus, applier, scanner) -> None:  # type: ignore[no-untyped-def]
    data = corpus.hostile["not_an_image"].read_bytes()
    verdict = scanner.scan_bytes(data)
    applier.apply(verdict, data=data, upload_id="../../etc/passwd")
    assert not (tmp_path / "etc").exists()
    names = [p.name for p in (tmp_path / "quarantine").rglob("*.json")]
    assert len(names) == 1 and ".." not in names[0] and "/" not in names[0]


def test_store_refuses_bytes_under_the_wrong_hash(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    with pytest.raises(ValueError):
        store.put("0" * 64, b"abc", "k", {})
    with pytest.raises(ValueError):
        store.item_dir("../../x")
