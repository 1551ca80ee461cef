"""Enqueueing: a plain-JSON RQ job any language can write, validated at the producer."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.config import redact_url
from photosentry.enqueue import build_payload
from photosentry.worker.jobs import FAILURE_CALLBACK, SCAN_FUNCTION
from photosentry.worker.payload import PayloadError, ScanPayload


def test_job_is_json_with_the_documented_payload(redis_client: redis.Redis) -> None:
    job_id = enqueue_scan(redis_client, source="2026/11/u-1.jpg", upload_id="u-1",
                          context={"recipient_age": 15}, callback_url="https://app.example/v")
    raw = redis_client.hgetall(f"rq:job:{job_id}")
    data = json.loads(zlib.decompress(raw[b"data"]))  # JSON, never pickle
    assert data == [SCAN_FUNCTION, None, [{"version": 1, "upload_id": "u-1", "source": {"path": "2026/11/u-1.jpg"},
                                           "context": {"recipient_age": 15},
                                           "callback_url": "https://app.example/v"}], {}]
    assert raw[b"failure_callback_name"].decode() == FAILURE_CALLBACK
    assert raw[b"origin"] == b"uploads" and int(raw[b"retries_left"]) == 2
    assert redis_client.lrange("rq:queue:uploads", 0, -1) == [job_id.encode()]
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert job.func_name == SCAN_FUNCTION and job.args[0]["upload_id"] == "u-1"


def test_inline_bytes_and_bulk_queue(redis_client: redis.Redis) -> None:
    job_id = enqueue_scan(redis_client, source=b"\xff\xd8photo", upload_id="u-2", queue="bulk")
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert job.args[0]["source"] == {"bytes_b64": "/9hwaG90bw=="}
    assert Queue("bulk", connection=redis_client, serializer=JSONSerializer).count == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"upload_id": ""}, "upload_id"),
        ({"upload_id": "a\nb"}, "control"),
        ({"context": {"nested": {"a": 1}}}, "context"),
        ({"callback_url": "file:///etc/passwd"}, "callback_url"),
        ({"source": "a\x00b"}, "NUL"),
        ({"source": 12}, "path or bytes"),
    ],
)
def test_invalid_arguments_are_refused_at_the_producer(kwargs: dict, match: str) -> None:
    args = {"source": "a.jpg", "upload_id": "u", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_payload(**args)


def test_inline_limit_and_unknown_queue(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="limit"):
        build_payload(source=b"x" * 11, upload_id="u", max_inline_bytes=10)
    with pytest.raises(ValueError, match="queue"):
        enqueue_scan(redis_client, source="a.jpg", upload_id="u", queue="default")


def test_payload_schema_refuses_unknown_fields_and_versions() -> None:
    with pytest.raises(PayloadError, match="unknown"):
        ScanPayload.from_dict({"upload_id": "u", "source": {"path": "a"}, "extra": 1})
    with pytest.raises(PayloadError, match="version"):
        ScanPayload.from_dict({"version": 2, "upload_id": "u", "source": {"path": "a"}})


def test_importing_the_package_loads_no_model_or_numpy() -> None:
    code = ("import sys, photosentry; from photosentry import enqueue_scan; import photosentry.worker.jobs;"
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_redis_passwords_are_redacted() -> None:
    assert redact_url("redis://:s3cret@cache:6380/0") == "redis://:***@cache:6380/0"
    assert redact_url("redis://user:s3cret@cache/1") == "redis://user:***@cache/1"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
