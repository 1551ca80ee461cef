"""The verdict stream on a real, private redis-server."""

from __future__ import annotations

import json

import redis

from photosentry.worker.stream import VerdictStream


def test_record_once_per_upload_and_read_with_a_consumer_group(redis_client: redis.Redis) -> None:
    stream = VerdictStream(redis_client, stream="t:verdicts")
    redis_client.xgroup_create("t:verdicts", "pipeline", id="0", mkstream=True)

    first = stream.record(upload_id="u-1", job_id="j-1", verdict={"action": "block", "reasons": []})
    again = stream.record(upload_id="u-1", job_id="j-1-retry", verdict={"action": "block", "reasons": []})
    other = stream.record(upload_id="u-2", job_id="j-2", verdict={"action": "allow"})

    assert first.new and not again.new and other.new
    assert again.entry_id == first.entry_id == stream.recorded("u-1")
    assert redis_client.xlen("t:verdicts") == 2

    batch = redis_client.xreadgroup("pipeline", "c1", {"t:verdicts": ">"}, count=10)
    entries = batch[0][1]
    assert [fields[b"upload_id"] for _, fields in entries] == [b"u-1", b"u-2"]
    assert json.loads(entries[0][1][b"verdict"])["action"] == "block"
    assert entries[0][1][b"action"] == b"block"
    redis_client.xack("t:verdicts", "pipeline", *[eid for eid, _ in entries])
    assert redis_client.xpending("t:verdicts", "pipeline")["pending"] == 0


def test_decoding_client_works_too(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    try:
        stream = VerdictStream(client, stream="t2:verdicts")
        rec = stream.record(upload_id="u", job_id="j", verdict={"action": "allow"})
        assert isinstance(rec.entry_id, str) and stream.recorded("u") == rec.entry_id
        assert stream.recorded("missing") is None
    finally:
        client.delete("t2:verdicts", "t2:verdicts:recorded:u")
        client.close()
