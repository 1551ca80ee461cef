"""Repeat uploaders on real Redis: penalties, decay, one flag per crossing, held uploads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from photosentry.errors import PolicyError
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.matcher import BankMatcher
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.review_queue import ReviewQueue
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy, UploaderRules
from photosentry.worker.service import ScanService, ServiceSettings
from photosentry.worker.stream import VerdictStream
from photosentry.worker.uploaders import UploaderLedger, uploader_of
from photosentry.worker.verdict import Verdict

from .corpus import Corpus
from .test_quarantine import bank_photo, photosentry, upload


def flagged_entries(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange("photosentry:verdicts")
            if f[b"event"] == b"uploader_flagged"]


def ledger(client: redis.Redis, **rules: float) -> UploaderLedger:
    return UploaderLedger(client, UploaderRules(**{"threshold": 2.0, **rules}), VerdictStream(client))


def test_penalties_add_once_per_upload_and_flag_once_per_crossing(redis_client: redis.Redis) -> None:
    book = ledger(redis_client)
    first = book.record("u-1", kind="block", upload_id="a", penalty=1.0)
    assert (first.new, first.score, first.crossed, first.flagged) == (True, pytest.approx(1.0, rel=1e-6), False,
                                                                      False)
    assert not book.record("u-1", kind="block", upload_id="a", penalty=1.0).new  # a retried job
    second = book.record("u-1", kind="confirmed", upload_id="b", penalty=1.0)
    assert second.crossed and second.flagged and second.score == pytest.approx(2.0, rel=1e-6)
    assert book.record("u-1", kind="block", upload_id="c", penalty=1.0).crossed is False  # still over: no new flag
    [entry] = flagged_entries(redis_client)
    assert entry["uploader_id"] == "u-1" and entry["upload_id"] == "b" and float(entry["score"]) == pytest.approx(2.0)
    standing = book.standing("u-1")
    assert standing.flagged and standing.flags == 1
    assert [e["kind"] for e in standing.events] == ["block", "confirmed", "block"][::-1]
    assert standing.events[1]["crossed"] and book.standing("other").score == 0.0


def test_penalties_decay_by_half_life_and_a_new_crossing_flags_again(redis_client: redis.Redis) -> None:
    book = ledger(redis_client, half_life_days=10)
    book.record("u-2", kind="block", upload_id="a", penalty=1.5)
    book.record("u-2", kind="block", upload_id="b", penalty=1.5)
    assert book.is_flagged("u-2")[0] and len(flagged_entries(redis_client)) == 1
    key = "photosentry:uploader:score:u-2"
    at = float(redis_client.hget(key, "at"))
    # 6.5 days on (the score was last written at `at`): 3 * 2**-0.65 = 1.91, under the
    # threshold but not 10% under it, so the flag holds and no new crossing is counted.
    redis_client.hset(key, "at", repr(at - 6.5 * 86400))
    flagged, score = book.is_flagged("u-2")
    assert score == pytest.approx(3 * 2 ** -0.65, rel=1e-3) and flagged
    # Ten days on: it halved, and the flag has lifted.
    redis_client.hset(key, "at", repr(at - 10 * 86400))
    flagged, score = book.is_flagged("u-2")
    assert score == pytest.approx(1.5, rel=1e-3) and not flagged
    # Back over the threshold: a second crossing, a second event.
    again = book.record("u-2", kind="block", upload_id="c", penalty=1.0)
    assert again.crossed and again.score == pytest.approx(2.5, rel=1e-3)
    assert [e["flags"] for e in flagged_entries(redis_client)] == ["1", "2"]


def test_only_content_blocks_and_confirmations_cost_penalties(redis_client: redis.Redis) -> None:
    book = ledger(redis_client)
    ctx = {"uploader_id": "u-3"}
    block = {"action": "block", "context": ctx, "reasons": [{"code": "bank_match", "action": "block"}]}
    failed = {"action": "block", "context": ctx, "reasons": [{"code": "decompression_bomb", "action": "block"}]}
    held = {"action": "quarantine", "context": ctx, "reasons": [{"code": "nudity", "action": "quarantine"}]}
    v = Verdict.from_dict  # the verdicts as a worker records them
    assert book.record_verdict(v({"action": "allow", "context": ctx}), upload_id="0") is None
    assert book.record_verdict(v(failed), upload_id="1").score == 0.0
    assert book.record_verdict(v(held), upload_id="2").score == 0.0
    assert book.record_verdict(v(block), upload_id="3").score == pytest.approx(1.0)
    assert book.record_verdict(v({**block, "context": {}}), upload_id="4") is None
    assert book.record_decision("u-3", upload_id="2", confirmed=False, actor="a", item_id="1").score == \
        pytest.approx(1.0)
    assert [e["kind"] for e in book.standing("u-3").events] == ["released", "block", "quarantine", "block_failure"]


def test_uploader_ids_are_taken_only_when_usable() -> None:
    rules = UploaderRules()
    assert uploader_of({"uploader_id": 8812}, rules) == "8812"
    assert uploader_of({"uploader_id": " u-1 "}, rules) == "u-1"
    for bad in (None, True, "", "x" * 201, "a\nb", 1.5, ["u"]):
        assert uploader_of({"uploader_id": bad}, rules) is None
    assert uploader_of({"user": "u-1"}, UploaderRules(context_key="user")) == "u-1"


def test_policy_uploaders_table_is_validated() -> None:
    base = Policy.default()
    assert base.uploaders.threshold == 2.5 and base.uploaders.quarantine_flagged
    assert base.review.confirmed_files == "keep" and base.review.evidence_days == 90
    for bad in ("threshold = 0", "half_life_days = -1", "block_penalty = 'x'", "quarantine_flagged = 1",
                "surprise = 1", "context_key = ''"):
        with pytest.raises(PolicyError, match="uploaders"):
            Policy.from_toml(f'version = "t"\n[uploaders]\n{bad}\n')
    with pytest.raises(PolicyError, match="review"):
        Policy.from_toml('version = "t"\n[review]\nconfirmed_files = "shred"\n')


@pytest.fixture
def strict_service(redis_client: redis.Redis, redis_server: str, tmp_path: Path, classifier: OpenNsfwClassifier,
                   policy: Policy) -> ScanService:
    """A worker whose policy flags an uploader after two content blocks."""
    text = Path(__file__).resolve().parents[1].joinpath("photosentry/worker/default_policy.toml").read_text()
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(text.replace("threshold = 2.5", "threshold = 2.0"))
    root = tmp_path / "uploads"
    root.mkdir()
    settings = ServiceSettings(redis_url=redis_server, source_roots=(str(root),), data_dir=str(tmp_path / "home"),
                               policy_path=str(policy_file), refresh_interval_s=0.0)
    scanner = Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)), classifier=classifier)
    return ScanService(settings, client=redis_client, scanner=scanner)


def test_a_flagged_uploaders_next_uploads_are_held_for_review(
    redis_client: redis.Redis, strict_service: ScanService, corpus: Corpus
) -> None:
    service = strict_service
    bank_photo(redis_client, corpus.banned, "banned")
    banned = corpus.banned.read_bytes()
    clean = corpus.clean["astronaut"].read_bytes()
    # A clean photo from someone else first: its allow verdict is cached.
    assert upload(redis_client, service, clean, "other-1", context={"uploader_id": "u-ok"})["action"] == "allow"
    for i in range(2):
        assert upload(redis_client, service, banned, f"bad-{i}", context={"uploader_id": "u-9"})["action"] == "block"
    [flag] = flagged_entries(redis_client)
    assert flag["uploader_id"] == "u-9" and flag["upload_id"] == "bad-1"

    held = upload(redis_client, service, clean, "bad-2", context={"uploader_id": "u-9"})
    assert held["action"] == "quarantine"
    assert [r["code"] for r in held["reasons"]] == ["uploader_flagged", "clean"]
    assert held["reasons"][0]["detail"]["uploader_id"] == "u-9"
    [item] = ReviewQueue(redis_client).pending()
    assert item.record.upload_id == "bad-2" and item.record.uploader_id == "u-9"
    # Never lowers a block, and never leaks to others through the verdict cache.
    assert upload(redis_client, service, banned, "bad-3", context={"uploader_id": "u-9"})["action"] == "block"
    assert upload(redis_client, service, clean, "other-2", context={"uploader_id": "u-ok"})["action"] == "allow"
    assert len(flagged_entries(redis_client)) == 1

    settings = service.settings
    out = photosentry(settings, "uploader", "show", "u-9", "--policy", settings.policy_path)
    assert out.exit_code == 0, out.output
    assert "score     3.00 of threshold 2 (FLAGGED)" in out.output
    assert "flagged   1 time(s)" in out.output and "-> flagged" in out.output and "bank_match" in out.output
    as_json = json.loads(photosentry(settings, "uploader", "show", "u-9", "--json").output)
    assert [e["upload_id"] for e in as_json["events"]] == ["bad-3", "bad-2", "bad-1", "bad-0"]
    assert "no blocks" in photosentry(settings, "uploader", "show", "nobody").output


def test_scores_use_the_redis_clock(redis_client: redis.Redis) -> None:
    book = ledger(redis_client)
    book.record("u-5", kind="block", upload_id="a", penalty=1.0)
    at = float(redis_client.hget("photosentry:uploader:score:u-5", "at"))
    assert abs(at - time.time()) < 5  # the test machine runs redis-server locally
