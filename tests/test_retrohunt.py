"""Retro-hunt: the hash log written by workers, and `photosentry retrohunt` on a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from click.testing import CliRunner
from rq import Queue
from rq.serializers import JSONSerializer

from photosentry.cli import cli
from photosentry.decode import decode
from photosentry.hashes.banks import entries_from_hashes
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.signals import hash_image
from photosentry.worker.hashlog import HashLog, pack_hashes, unpack_hashes

from .corpus import Corpus


def hashes_of(path: Path):  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    image = decode(data)
    return hash_image(data, image.frames, image.frame_indices)


def test_pack_round_trips_every_variant(corpus: Corpus) -> None:
    hashes = hashes_of(corpus.banned)
    assert unpack_hashes(pack_hashes(hashes)) == hashes
    assert len(pack_hashes(hashes)) < 450


def test_retrohunt_finds_earlier_scans_of_newly_banned_photos(
    corpus: Corpus, redis_server: str, redis_client: redis.Redis, data_dir: Path
) -> None:
    log = HashLog(redis_client)
    copies = dict(corpus.copies)
    scanned = {"orig": corpus.banned, **{f"copy-{k}": v for k, v in copies.items()},
               **{f"clean-{k}": v for k, v in corpus.clean.items()}}
    for upload_id, path in scanned.items():
        log.record(upload_id=upload_id, source={"path": path.name}, context={"k": 1}, action="allow",
                   bank_version=0, hashes=hashes_of(path))
    store = RedisBankStore(redis_client)
    entries, _ = entries_from_hashes(hashes_of(corpus.banned), "csam", label="list 12")
    store.add(entries, actor="importer", reason="new list")

    result = CliRunner().invoke(cli, ["retrohunt", "--redis-url", redis_server, "--json", "--requeue"])
    assert result.exit_code == 1, result.output
    hits = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    found = {h["upload_id"] for h in hits}
    assert "orig" in found
    assert not any(u.startswith("clean-") for u in found)
    # Re-encoded and resized copies are caught by their perceptual hashes alone.
    assert {"copy-reencoded_q50", "copy-resized_half"} <= found
    assert all(h["bank"] == "csam" and h["previous_action"] == "allow" for h in hits)
    queue = Queue("bulk", connection=redis_client, serializer=JSONSerializer)
    payloads = [job.args[0] for job in queue.get_jobs()]
    assert {p["upload_id"] for p in payloads} == {f"{u}:retrohunt:{store.version()}" for u in found}
    assert all(p["context"] == {"k": 1} for p in payloads)

    # The next hunt starts where this one stopped: nothing new, nothing found.
    again = CliRunner().invoke(cli, ["retrohunt", "--redis-url", redis_server])
    assert again.exit_code == 0 and "0 matches" in again.output


def test_retention_is_bounded(redis_client: redis.Redis, corpus: Corpus) -> None:
    log = HashLog(redis_client, max_entries=50)
    hashes = hashes_of(corpus.banned)
    for i in range(300):
        log.record(upload_id=f"u{i}", source={"bytes_b64": "xx"}, context={}, action="allow", bank_version=1,
                   hashes=hashes)
    assert len(log) < 300  # trimmed approximately on append
    record = next(iter(next(log.read())))
    assert record.source == {"inline": True}  # photo bytes are never logged
    HashLog(redis_client, retention_days=0).trim()
    assert len(log) == 0
