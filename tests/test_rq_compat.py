"""Pins the RQ releases photosentry/worker/rq_compat.py was written against.

Recovery, reliable dequeue and the job guard use RQ internals (private methods, key
layouts, job-hash fields). An RQ upgrade that renames one must fail here, by name,
rather than break job recovery in silence.
"""

from __future__ import annotations

import inspect

import redis
import rq
from rq import Queue, SimpleWorker
from rq.job import Job

from photosentry.worker import rq_compat


def test_the_installed_rq_is_one_rq_compat_was_checked_against() -> None:
    assert rq_compat.rq_supported(), (
        f"rq {rq.__version__} is outside {rq_compat.SUPPORTED_RQ}: re-check every function of"
        " photosentry/worker/rq_compat.py against its source, then widen SUPPORTED_RQ"
        " (and the pin in pyproject.toml)")


def test_the_private_api_rq_compat_uses_is_there() -> None:
    assert callable(getattr(Queue, "_enqueue_job"))
    assert "at_front" in inspect.signature(Queue._enqueue_job).parameters
    assert callable(getattr(Queue, "_fetch_dequeued_job"))
    for name in ("pubsub_channel_name", "handle_payload", "_pubsub_exception_handler"):
        assert hasattr(SimpleWorker, name) or name in inspect.getsource(SimpleWorker.__mro__[1])


def test_the_job_hash_fields_the_guard_clears_are_the_ones_rq_reads() -> None:
    restore = inspect.getsource(Job.restore)
    for field in rq_compat.BEHAVIOUR_FIELDS:
        assert f"'{field}'" in restore, f"RQ no longer reads {field!r}: update rq_compat"
    job = Job(connection=redis.Redis())
    for attr in ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name", "webhooks",
                 "_dependency_ids", "allow_dependency_failures", "repeats_left", "repeat_intervals",
                 "rate_limit_key", "rate_limit_concurrency", "group_id"):
        assert hasattr(job, attr), attr


def test_key_layout() -> None:
    client = redis.Redis()
    assert rq_compat.queue_key("uploads") == Queue("uploads", connection=client).key == "rq:queue:uploads"
    assert rq_compat.job_key("j1") == "rq:job:j1"
    assert rq_compat.intermediate_key("rq:queue:uploads") == "rq:queue:uploads:intermediate"
    assert rq_compat.failed_registry_key("uploads", client) == "rq:failed:uploads"
    assert rq_compat.queue_name_of("rq:queue:bulk") == "bulk"
