"""Moderator decisions end to end: a real worker quarantines, the CLI decides, on real Redis.

A photo is put in the `moderation` bank so a real scan quarantines it; the worker
(ScanService in this process, as in test_worker.py) moves it into the quarantine store
and queues it for review. `photosentry quarantine confirm/release` then decide it and
the decision must reach the bank, the stores, the uploader ledger, the audit trail,
the verdict stream and the signed callback, exactly once however often it is sent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from rq.job import Job
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.cli import cli
from photosentry.hashes.banks import entries_from_hashes
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.signals import hash_image
from photosentry.decode import Limits, decode
from photosentry.worker.review_queue import ReviewQueue
from photosentry.worker.service import ScanService, ServiceSettings

from .callback_receiver import KEY, Receiver
from .corpus import Corpus
from .test_worker import run_burst


def bank_photo(client: redis.Redis, photo: Path, bank: str) -> None:
    """Put every hash of ``photo`` in ``bank`` (what `ban add` does) on the shared Redis bank."""
    data = photo.read_bytes()
    decoded = decode(data, Limits())
    entries, _ = entries_from_hashes(hash_image(data, decoded.frames, decoded.frame_indices), bank, label=photo.name)
    RedisBankStore(client).add(entries, actor="setup", reason="test")


def upload(client: redis.Redis, service: ScanService, source: Any, upload_id: str, **kwargs: Any) -> dict[str, Any]:
    """Enqueue one upload, let an in-process worker take it, return its verdict."""
    job_id = enqueue_scan(client, source=source, upload_id=upload_id, **kwargs)
    run_burst(client, service)
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer).return_value()


def stream_entries(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange("photosentry:verdicts")]


def photosentry(settings: ServiceSettings, *args: str) -> Any:
    env = {"PHOTOSENTRY_REDIS_URL": settings.redis_url, "PHOTOSENTRY_HOME": settings.data_dir,
           "PHOTOSENTRY_CALLBACK_KEY": KEY.decode(), "PHOTOSENTRY_SOURCE_ROOTS": settings.source_roots[0]}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def quarantined(client: redis.Redis, service: ScanService, corpus: Corpus, name: str, upload_id: str,
                root: Path, **kwargs: Any) -> dict[str, Any]:
    """Upload corpus photo ``name`` (banked in `moderation`) by path, so the worker quarantines it."""
    bank_photo(client, corpus.clean[name], "moderation")
    shutil.copy(corpus.clean[name], root / f"{name}.jpg")
    verdict = upload(client, service, f"{name}.jpg", upload_id, **kwargs)
    assert verdict["action"] == "quarantine" and verdict["reasons"][0]["code"] == "bank_match"
    return verdict


def test_worker_queues_each_quarantined_upload_once_with_everything_a_moderator_needs(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus, receiver: Receiver
) -> None:
    root = Path(settings.source_roots[0])
    verdict = quarantined(redis_client, service, corpus, "coffee", "up-1", root,
                          context={"uploader_id": "u-1", "recipient_age": 30}, callback_url=receiver.url)
    queue = ReviewQueue(redis_client)
    [item] = queue.pending()
    record = item.record
    assert (item.item_id, item.state, record.upload_id, record.uploader_id) == ("1", "pending", "up-1", "u-1")
    assert record.verdict.matches and record.verdict.hashes.to_dict()["pdq"] == verdict["hashes"]["pdq"]
    assert record.context == {"uploader_id": "u-1", "recipient_age": 30}
    assert record.callback_url == receiver.url and record.stored
    assert record.source_path == str((root / "coffee.jpg").resolve())
    assert not (root / "coffee.jpg").exists()  # moved into the quarantine store
    assert record.stream_id == redis_client.get("photosentry:verdicts:recorded:up-1").decode()

    # The same upload again (a retried job) is replayed, never queued twice; a second upload is.
    upload(redis_client, service, corpus.clean["coffee"].read_bytes(), "up-1")
    upload(redis_client, service, corpus.clean["coffee"].read_bytes(), "up-2")
    assert [i.record.upload_id for i in queue.pending()] == ["up-1", "up-2"]
    assert queue.get("2").record.source_path is None  # inline: the pipeline keeps its own copy

    listed = photosentry(settings, "quarantine", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[1].split()[0] == "1" and "bank_match" in lines[1] and "u-1" in lines[1] and "up-1" in lines[1]
    assert "2 pending" in listed.output
    shown = photosentry(settings, "quarantine", "show", "1")
    assert "matches 5 entries of bank 'moderation'" in shown.output or "bank 'moderation'" in shown.output
    assert f"pdq:{verdict['hashes']['pdq']}" in shown.output and "context   uploader_id=u-1" in shown.output
    as_json = json.loads(photosentry(settings, "quarantine", "show", "1", "--json").output)
    assert as_json["record"]["verdict"]["reasons"] == verdict["reasons"]


def test_confirm_with_ban_blocks_re_uploads_and_counts_once(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus, receiver: Receiver
) -> None:
    root = Path(settings.source_roots[0])
    verdict = quarantined(redis_client, service, corpus, "coffee", "up-1", root,
                          context={"uploader_id": "u-1"}, callback_url=receiver.url)
    sha = verdict["hashes"]["sha256"]
    home = Path(settings.data_dir)
    assert (home / "quarantine" / sha[:2] / sha / "content").is_file()
    receiver.received.clear()
    bank_version = RedisBankStore(redis_client).version()

    done = photosentry(settings, "quarantine", "confirm", "1", "--by", "alice", "--reason", "ticket 881",
                       "--ban", "banned")
    assert done.exit_code == 0, done.output
    assert "item 1 confirmed by alice" in done.output and "hashes in bank 'banned'" in done.output
    assert "callback delivered" in done.output

    # The bank: every hash of the photo, the PDQ of its crops and rotations and its
    # keypoints (read from the quarantined copy), as entries grouped by its SHA-256;
    # never the photo.
    store = RedisBankStore(redis_client)
    banned = list(store.entries(bank="banned"))
    assert {e.algorithm.value for e in banned} == {"sha256", "md5", "pdq", "phash", "dhash", "orb"}
    assert {e.source.value for e in banned} == {"image", "derived"}
    assert sum(e.source.value == "derived" and e.algorithm.value == "pdq" for e in banned) >= 10
    assert {e.group for e in banned} == {sha} and all(e.added_by == "alice" for e in banned)
    assert all("ticket 881" in e.reason for e in banned)
    # The file: evidence in the blocked store, gone from quarantine.
    assert (home / "blocked" / sha[:2] / sha / "content").read_bytes() == corpus.clean["coffee"].read_bytes()
    assert not (home / "quarantine" / sha[:2] / sha).exists()
    # The stream: the verdict, then a decision entry of its own kind.
    entries = stream_entries(redis_client)
    assert [(e["event"], e["upload_id"], e["action"]) for e in entries] == [("verdict", "up-1", "quarantine"),
                                                                            ("decision", "up-1", "block")]
    decided = json.loads(entries[1]["verdict"])
    assert decided["reasons"][0]["code"] == "moderator_confirmed" and decided["reasons"][0]["action"] == "block"
    assert decided["quarantine_reasons"] == verdict["reasons"] and decided["hashes"] == verdict["hashes"]
    assert json.loads(entries[1]["decision"])["by"] == "alice"
    # The callback: signed (the receiver checks), marked as a decision.
    [callback] = receiver.received
    assert callback["event"] == "decision" and callback["verdict"]["action"] == "block"
    assert callback["stream_id"] == [i for i, _ in redis_client.xrange("photosentry:verdicts")][1].decode()
    # The audit trail and the uploader.
    audit = photosentry(settings, "quarantine", "audit")
    assert "item      1 confirm  by alice" in audit.output and "ticket 881" in audit.output
    shown = photosentry(settings, "uploader", "show", "u-1")
    assert "score     1.00 of threshold 2.5" in shown.output and "confirmed" in shown.output

    # A double submit changes nothing: no second entry, ban or penalty.
    again = photosentry(settings, "quarantine", "confirm", "1", "--by", "alice", "--reason", "ticket 881",
                        "--ban", "banned")
    assert again.exit_code == 0 and "already confirmed" in again.output
    assert len(stream_entries(redis_client)) == 2 and len(receiver.received) == 1
    assert store.version() == bank_version + len(banned)
    assert "score     1.00" in photosentry(settings, "uploader", "show", "u-1").output
    other = photosentry(settings, "quarantine", "release", "1", "--by", "bob", "--reason", "appeal")
    assert other.exit_code == 1 and "already confirmed by alice" in other.output

    # The ban is in force: the same photo, and a re-encoded copy, are blocked at upload.
    again_up = upload(redis_client, service, corpus.clean["coffee"].read_bytes(), "up-3")
    assert again_up["action"] == "block" and any(r["detail"]["bank"] == "banned" for r in again_up["reasons"]
                                                 if r["code"] == "bank_match")
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.open(corpus.clean["coffee"]).resize((300, 200)).save(buffer, format="JPEG", quality=70)
    assert upload(redis_client, service, buffer.getvalue(), "up-4")["action"] == "block"


def test_release_restores_the_file_and_allow_banks_it(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus
) -> None:
    root = Path(settings.source_roots[0])
    quarantined(redis_client, service, corpus, "chelsea", "up-1", root, context={"uploader_id": "u-2"})
    queue = ReviewQueue(redis_client)
    queue.claim("1", "bob")  # bob has it open on the review page

    held = photosentry(settings, "quarantine", "release", "1", "--by", "alice", "--reason", "fine")
    assert held.exit_code == 1 and "being reviewed by bob" in held.output
    assert queue.get("1").state == "pending"
    queue.unclaim("1", "bob")

    no_reason = photosentry(settings, "quarantine", "release", "1", "--by", "alice")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    done = photosentry(settings, "quarantine", "release", "1", "--by", "alice", "--reason", "cat photo, fine",
                       "--allow-bank", "released")
    assert done.exit_code == 0, done.output
    assert f"restored to {(root / 'chelsea.jpg').resolve()}" in done.output
    assert (root / "chelsea.jpg").read_bytes() == corpus.clean["chelsea"].read_bytes()
    item = queue.get("1")
    assert item.state == "released" and item.decision["by"] == "alice" and item.claimed_by is None
    store = RedisBankStore(redis_client)
    assert store.bank("released").is_allow and len(list(store.entries(bank="released"))) == 5
    [_, decision] = stream_entries(redis_client)
    assert decision["event"] == "decision" and decision["action"] == "allow"
    assert json.loads(decision["verdict"])["reasons"][0]["code"] == "moderator_released"
    assert "released" in photosentry(settings, "uploader", "show", "u-2").output
    assert "score     0.00" in photosentry(settings, "uploader", "show", "u-2").output

    # The same photo uploaded again is allowed: the allow bank suppresses the moderation match.
    again = upload(redis_client, service, corpus.clean["chelsea"].read_bytes(), "up-2")
    assert again["action"] == "allow", again["reasons"]
    assert queue.pending_count() == 0


def test_decisions_refuse_what_cannot_be_done(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus
) -> None:
    # Nothing was read (an unreadable source path): nothing to look at, so no release.
    refused = upload(redis_client, service, "missing.jpg", "up-1")
    assert refused["action"] == "quarantine" and refused["reasons"][0]["code"] == "source_refused"
    out = photosentry(settings, "quarantine", "release", "1", "--by", "alice", "--reason", "x")
    assert out.exit_code == 1 and "no stored photo" in out.output
    out = photosentry(settings, "quarantine", "confirm", "1", "--by", "alice", "--reason", "x", "--ban", "banned")
    assert out.exit_code == 1 and "no hashes" in out.output
    assert photosentry(settings, "quarantine", "confirm", "1", "--by", "alice", "--reason", "bogus").exit_code == 0
    assert photosentry(settings, "quarantine", "show", "99").exit_code == 1
    assert photosentry(settings, "quarantine", "confirm", "99", "--by", "a", "--reason", "x").exit_code == 1

    # A ban bank is never used as an allow bank (that would block the photo), nor the reverse.
    root = Path(settings.source_roots[0])
    quarantined(redis_client, service, corpus, "astronaut", "up-2", root)
    out = photosentry(settings, "quarantine", "release", "2", "--by", "alice", "--reason", "x",
                      "--allow-bank", "moderation")
    assert out.exit_code == 1 and "ban bank" in out.output
    assert ReviewQueue(redis_client).get("2").state == "pending"


def test_evidence_is_purged_after_its_retention(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus
) -> None:
    from photosentry.review.decisions import Reviewer

    root = Path(settings.source_roots[0])
    verdict = quarantined(redis_client, service, corpus, "coffee", "up-1", root)
    sha = verdict["hashes"]["sha256"]
    reviewer = Reviewer(redis_client, home=Path(settings.data_dir))
    outcome = reviewer.confirm("1", actor="alice", reason="r", take_lease=True)
    until = outcome.effects["evidence_until"]
    assert until == pytest.approx(outcome.decision["at"] + 90 * 86400)
    evidence = Path(settings.data_dir) / "blocked" / sha[:2] / sha / "content"
    assert reviewer.purge(now=until - 60) == [] and evidence.exists()
    assert reviewer.purge(now=until + 1) == ["1"] and not evidence.exists()
    assert reviewer.queue.get("1").effects["file"] == "evidence purged"
    assert reviewer.purge(now=until + 2) == []


def test_two_moderators_never_hold_the_same_item(redis_client: redis.Redis) -> None:
    from photosentry.worker.review_queue import QuarantineRecord
    from photosentry.worker.verdict import Verdict

    queue = ReviewQueue(redis_client, lease_s=30)
    held = Verdict.from_dict({"action": "quarantine"})
    for i in range(3):
        queue.index(QuarantineRecord(upload_id=f"u{i}", verdict=held, queued_at=100.0 + i))
    assert queue.index(QuarantineRecord(upload_id="u0", verdict=held, queued_at=1.0)) == ("1", False)
    assert queue.claim_next("alice") == "1"
    assert queue.claim_next("bob") == "2"
    assert queue.claim_next("alice") == "1"  # still hers: the same item again, renewed
    assert queue.claim_next("alice", exclude=("1",)) == "3"  # skip: she now holds 3, 1 is free
    assert queue.holder("1") is None and queue.holder("3") == "alice"
    assert queue.claim_next("carol") == "1"
    assert queue.claim_next("dave") is None
    with pytest.raises(Exception, match="being reviewed by bob"):
        queue.claim("2", "alice")
    assert not queue.renew("2", "alice") and queue.renew("2", "bob")
    # A lease that is not renewed expires and the item goes to the next moderator.
    redis_client.pexpire("photosentry:review:claim:2", 1)
    import time

    time.sleep(0.01)
    assert queue.claim_next("dave") == "2"
