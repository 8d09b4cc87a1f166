"""Webhook notifications (pure): CloudEvent shape, stable delivery ids, signatures a
receiver can check, backoff, and which URLs may be called."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mixpanel_dsr.api.models import NotificationEvent
from mixpanel_dsr.notifications import (
    BACKOFF,
    build,
    delivery_id,
    event_type,
    next_delay,
    sign,
    verify_signature,
    webhook_url_allowed,
)

SECRET = b"whsec-test"
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def note(kind: NotificationEvent = NotificationEvent.SUCCEEDED, occasion: str = "") -> bytes:
    return build(
        kind, occasion=occasion, namespace="privacy", name="priv-1", uid="u-1", time=NOW,
        data={"phase": "Succeeded", "labels": {"privacy.example.com/ticket": "PRIV-1"}},
    ).body  # fmt: skip


def test_a_cloudevent_with_the_request_as_source_and_subject() -> None:
    event = json.loads(note())
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.mixpaneldsr.request.succeeded"
    assert event["source"].endswith("/namespaces/privacy/datasubjectrequests/priv-1")
    assert event["subject"] == "priv-1"
    assert event["time"] == "2026-11-30T12:00:00Z"
    assert event["data"]["labels"] == {"privacy.example.com/ticket": "PRIV-1"}
    assert event_type(NotificationEvent.DEADLINE_NEAR) == "io.mixpaneldsr.request.deadline_near"


def test_the_delivery_id_is_the_same_on_every_resend_and_differs_per_event() -> None:
    assert json.loads(note())["id"] == json.loads(note())["id"]
    ids = {
        delivery_id("u-1", NotificationEvent.SUCCEEDED, ""),
        delivery_id("u-1", NotificationEvent.FAILED, ""),
        delivery_id("u-1", NotificationEvent.FAILED, "retry-1"),
        delivery_id("u-2", NotificationEvent.FAILED, ""),
    }
    assert len(ids) == 4


def test_a_receiver_accepts_our_signature_and_refuses_a_changed_body_or_an_old_one() -> None:
    body = note()
    header = sign(SECRET, 1_800_000_000, body)
    assert verify_signature(SECRET, header, body, now=1_800_000_010)
    assert not verify_signature(b"other", header, body, now=1_800_000_010)
    assert not verify_signature(SECRET, header, body + b" ", now=1_800_000_010)
    assert not verify_signature(SECRET, header, body, now=1_800_000_000 + 3600)
    assert not verify_signature(SECRET, "garbage", body, now=1_800_000_000)


def test_retries_back_off_up_to_an_hour() -> None:
    delays = [next_delay(n) for n in range(1, 12)]
    assert delays == sorted(delays)
    assert delays[0] == BACKOFF[0]
    assert delays[-1] == 3600.0


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", [], True),
        ("http://127.0.0.1:9000/hook", [], True),
        ("http://ticket-bridge.privacy.svc:8080/hook", [], False),
        (
            "http://ticket-bridge.privacy.svc:8080/hook",
            ["http://ticket-bridge.privacy.svc:8080/"],
            True,
        ),
        ("https://evil.example.com/", ["https://hooks.example.com/"], False),
        ("https://hooks.example.com/dsr", ["https://hooks.example.com/"], True),
        ("https://user:pw@hooks.example.com/", [], False),
        ("ftp://hooks.example.com/", [], False),
    ],
)
def test_which_urls_may_be_called(url: str, allowed: list[str], ok: bool) -> None:
    assert webhook_url_allowed(url, allowed) is ok
