"""Signed callbacks against a real local HTTP receiver."""

from __future__ import annotations

import json

import pytest

from photosentry.worker.delivery import CallbackPolicy, CallbackSigner, post_callback

from .callback_receiver import KEY, Receiver

BODY = json.dumps({"upload_id": "u-1", "action": "block"}).encode()
#: The receiver listens on loopback, which callbacks may only reach when allowed.
LOCAL = CallbackPolicy(allow_networks=("127.0.0.0/8",))


def test_signed_callback_is_accepted(receiver: Receiver) -> None:
    result = post_callback(receiver.url, BODY, CallbackSigner(KEY), policy=LOCAL, sleep=lambda s: None)
    assert result.delivered and result.attempts == 1 and result.status == 204
    assert receiver.received == [{"upload_id": "u-1", "action": "block"}]


def test_wrong_key_is_rejected_and_not_retried(receiver: Receiver) -> None:
    result = post_callback(receiver.url, BODY, CallbackSigner(b"another-key-of-16+bytes"), policy=LOCAL,
                           sleep=lambda s: None)
    assert not result.delivered and result.attempts == 1 and result.status == 401
    assert receiver.rejected == 1 and receiver.received == []


def test_server_errors_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.fail_next = [503, 500, 429]
    waits: list[float] = []
    result = post_callback(receiver.url, BODY, CallbackSigner(KEY), policy=LOCAL, backoff_s=(0.1, 0.2, 0.4, 0.8),
                           sleep=waits.append)
    assert result.delivered and result.attempts == 4
    assert waits == [0.1, 0.2, 0.4]


def test_unreachable_receiver_gives_up_without_raising() -> None:
    result = post_callback("http://127.0.0.1:9/none", BODY, CallbackSigner(KEY), policy=LOCAL, backoff_s=(0.0, 0.0),
                           timeout_s=1)
    assert not result.delivered and result.attempts == 3 and result.error


def test_signature_rejects_tampering_and_replays() -> None:
    signer = CallbackSigner(KEY)
    headers = signer.headers(BODY, timestamp=1_000_000)
    assert signer.verify(BODY, headers, now=1_000_010)
    assert not signer.verify(BODY + b" ", headers, now=1_000_010)
    assert not signer.verify(BODY, headers, now=1_000_000 + 301)
    assert not signer.verify(BODY, {}, now=1_000_000)
    assert "0123" not in repr(signer)
    with pytest.raises(ValueError):
        CallbackSigner(b"short")
