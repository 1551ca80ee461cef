"""The in-process API the README documents: photosentry.scan and photosentry.new_scanner."""

from __future__ import annotations

from pathlib import Path

import pytest

import photosentry
from photosentry.config import ensure_private_dir
from photosentry.decode import decode
from photosentry.hashes.banks import EntrySource, entries_from_hashes, open_store
from photosentry.hashes.signals import hash_image

from .corpus import Corpus


def test_scan_gives_a_typed_verdict_for_a_path_or_bytes(data_dir: Path, corpus: Corpus) -> None:
    scanner = photosentry.new_scanner(threads=1)
    by_path = photosentry.scan(corpus.clean["coffee"], scanner=scanner)
    by_bytes = photosentry.scan(corpus.clean["coffee"].read_bytes(), scanner=scanner)
    assert isinstance(by_path, photosentry.Verdict)
    assert by_path.action is by_bytes.action is photosentry.Action.ALLOW
    assert by_path.hashes == by_bytes.hashes
    hostile = photosentry.scan(b"\x89PNG\r\n\x1a\n but nothing after", scanner=scanner)
    assert hostile.action is photosentry.Action.QUARANTINE  # never an exception, never allowed


def test_scan_uses_the_embedded_bank_and_the_context(data_dir: Path, corpus: Corpus) -> None:
    data = corpus.banned.read_bytes()
    decoded = decode(data)
    with open_store(sqlite=ensure_private_dir(data_dir) / "banks.sqlite3") as store:
        entries, _ = entries_from_hashes(hash_image(data, decoded.frames, decoded.frame_indices), "banned",
                                         label="api test", source=EntrySource.IMAGE)
        store.add(entries, actor="t", reason="t")
    verdict = photosentry.scan(corpus.banned, context={"recipient_age": "15"})
    assert verdict.action is photosentry.Action.BLOCK and verdict.profile == "minors"
    assert photosentry.ReasonCode.BANK_MATCH in {r.code for r in verdict.reasons}


def test_an_unreadable_context_is_a_clear_error(data_dir: Path, corpus: Corpus) -> None:
    scanner = photosentry.new_scanner(threads=1)
    with pytest.raises(ValueError, match="recipient_age"):
        photosentry.scan(corpus.clean["coffee"], context={"recipient_age": "fifteen"}, scanner=scanner)
