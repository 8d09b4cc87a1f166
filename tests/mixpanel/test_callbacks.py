"""Mixpanel's status callbacks (operator side): only Mixpanel's signature over the exact body
is accepted, and only an OpenDSR status is read."""

from __future__ import annotations

import json

import pytest

from mixpanel_dsr.mixpanel.callbacks import (
    CallbackError,
    RequestStatus,
    load_public_key,
    parse,
    verify,
)
from mixpanel_dsr.mixpanel.types import TaskState
from mixpanel_dsr.sandbox import callbacks as sandbox


def test_the_sandbox_signature_verifies_and_nothing_else_does() -> None:
    key = sandbox.new_key()
    public = load_public_key(sandbox.public_pem(key).encode())
    body = sandbox.body_of("3f1c0e8e-0e2b-4f1a-a7c4-d0d4a1c2b3e4", "123", TaskState.STARTED)
    assert body is not None
    signature = sandbox.sign(key, body)
    verify(public, body, signature)
    assert parse(body).status is RequestStatus.IN_PROGRESS
    with pytest.raises(CallbackError, match="does not verify"):
        verify(public, body + b" ", signature)
    with pytest.raises(CallbackError, match="does not verify"):
        verify(public, body, sandbox.sign(sandbox.new_key(), body))
    with pytest.raises(CallbackError, match="no X-OpenDSR-Signature"):
        verify(public, body, None)
    with pytest.raises(CallbackError, match="does not verify"):
        verify(public, body, "not base64!")


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (TaskState.PENDING, "pending"),
        (TaskState.STAGING, "pending"),
        (TaskState.STARTED, "in_progress"),
        (TaskState.SUCCESS, "completed"),
        (TaskState.FAILURE, "cancelled"),
        (TaskState.REVOKED, "cancelled"),
    ],
)
def test_each_mixpanel_state_reads_as_its_opendsr_status(state: TaskState, status: str) -> None:
    body = sandbox.body_of("s-1", "t-1", state)
    assert body is not None
    assert parse(body).status.value == status
    assert sandbox.body_of("s-1", "t-1", TaskState.NOT_FOUND) is None


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"{}", json.dumps({"subject_request_id": "x", "request_status": "done"}).encode(),
     json.dumps({"subject_request_id": 7, "request_status": "pending"}).encode()],
)  # fmt: skip
def test_what_is_not_an_opendsr_status_is_refused(body: bytes) -> None:
    with pytest.raises(CallbackError):
        parse(body)


def test_a_key_that_is_not_rsa_is_refused() -> None:
    with pytest.raises(CallbackError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
