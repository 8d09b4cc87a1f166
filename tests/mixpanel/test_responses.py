"""Parsing of every documented response shape (pure)."""

from __future__ import annotations

import json

import pytest

from mixpanel_dsr.mixpanel.responses import (
    ErrorEnvelopeError,
    ResponseShapeError,
    parse_create,
    parse_error,
    parse_json,
    parse_state,
    parse_status,
    tracking_id_str,
)
from mixpanel_dsr.mixpanel.types import ComplianceType, TaskState

LINK = "https://storage.example.com/export.zip?X-Goog-Signature=abc123"


def test_parse_json_rejects_non_json_without_quoting_it() -> None:
    with pytest.raises(ResponseShapeError) as info:
        parse_json(b"<html>secret-id-1</html>")
    assert "secret-id-1" not in str(info.value)
    assert info.value.__context__ is None or "secret" not in str(info.value.__context__)
    assert parse_json(b'{"a": 1}') == {"a": 1}


def test_parse_json_rejects_invalid_utf8() -> None:
    with pytest.raises(ResponseShapeError):
        parse_json(b"\xff\xfe\xfa")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc-123", "abc-123"),
        (" 42 ", "42"),
        (1234567890123456789, "1234567890123456789"),
        (12.0, "12"),
        (12.5, None),
        (True, None),
        ("", None),
        (None, None),
        ({"x": 1}, None),
    ],
)
def test_tracking_id_str(value: object, expected: str | None) -> None:
    assert tracking_id_str(value) == expected


def test_create_results_task_id() -> None:
    task = parse_create({"status": "ok", "results": {"task_id": "t-1"}}, "deletion")
    assert task.tracking_id == "t-1"
    assert task.kind == "deletion"
    assert task.state is None


def test_create_results_numeric_task_id() -> None:
    payload = json.loads('{"status":"ok","results":{"task_id":98765432109876543210}}')
    assert parse_create(payload, "retrieval").tracking_id == "98765432109876543210"


def test_create_one_element_list_with_tracking_id() -> None:
    payload = {
        "status": "ok",
        "results": [
            {
                "tracking_id": 1234567890123,
                "status": "PENDING",
                "compliance_type": "gdpr",
                "distinct_id_count": 3,
                "project_id": 12,
                "whatever_new": {"nested": True},
            }
        ],
    }
    task = parse_create(payload, "deletion")
    assert task.tracking_id == "1234567890123"
    assert task.state is TaskState.PENDING
    assert task.compliance_type is ComplianceType.GDPR
    assert task.distinct_id_count == 3


def test_create_without_envelope() -> None:
    assert parse_create({"task_id": "x"}, "deletion").tracking_id == "x"


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "ok", "results": {}},
        {"status": "ok", "results": {"task_id": ""}},
        {"status": "ok", "results": {"task_id": None}},
        {"status": "ok", "results": []},
        {"status": "ok", "results": [{"tracking_id": "a"}, {"tracking_id": "b"}]},
        {"status": "ok", "results": "t-1"},
        ["t-1"],
        "t-1",
        None,
    ],
)
def test_create_unusable_shapes(payload: object) -> None:
    with pytest.raises(ResponseShapeError):
        parse_create(payload, "deletion")


def test_create_error_envelope_is_distinguished() -> None:
    with pytest.raises(ErrorEnvelopeError):
        parse_create({"status": "error", "error": "nope"}, "deletion")


def test_status_pending() -> None:
    payload = {
        "status": "ok",
        "results": {"status": "PENDING", "result": "", "distinct_ids": ["1"]},
    }
    status = parse_status(payload)
    assert status.state is TaskState.PENDING
    assert status.result_link is None
    assert status.distinct_ids == ("1",)
    assert status.distinct_id_count == 1
    assert status.known_state


def test_status_success_link_is_hidden() -> None:
    payload = {
        "status": "ok",
        "results": {
            "status": "SUCCESS",
            "result": LINK,
            "distinct_ids": ["alice@example.com", 7],
            "tracking_id": 55,
            "compliance_type": "ccpa",
            "project_id": 123,
            "date_requested": "2024-01-01T00:00:00",
            "requesting_user": "admin@example.com",
            "extra": [1, 2, 3],
        },
    }
    status = parse_status(payload)
    assert status.state is TaskState.SUCCESS
    assert status.result_link is not None
    assert status.result_link.get_secret_value() == LINK
    assert status.tracking_id == "55"
    assert status.compliance_type is ComplianceType.CCPA
    assert status.project_id == "123"
    assert status.distinct_ids == ("alice@example.com", "7")
    for rendering in (repr(status), str(status), status.model_dump_json()):
        assert LINK not in rendering
        assert "alice@example.com" not in rendering


@pytest.mark.parametrize("state", [s.value for s in TaskState])
def test_status_every_documented_state(state: str) -> None:
    status = parse_status({"status": "ok", "results": {"status": state}})
    assert status.state is TaskState(state)
    assert status.raw_state == state


def test_status_state_case_insensitive() -> None:
    assert parse_status({"results": {"status": "revoked"}}).state is TaskState.REVOKED


def test_status_unknown_state_maps_to_unknown() -> None:
    status = parse_status({"status": "ok", "results": {"status": "ARCHIVED"}})
    assert status.state is TaskState.UNKNOWN
    assert status.raw_state == "ARCHIVED"
    assert not status.known_state
    assert not status.state.terminal
    assert not status.state.cancellable


def test_parse_state() -> None:
    assert parse_state(" started ") is TaskState.STARTED
    assert parse_state("weird") is TaskState.UNKNOWN


def test_status_one_element_list() -> None:
    status = parse_status({"status": "ok", "results": [{"status": "STAGING", "result": None}]})
    assert status.state is TaskState.STAGING
    assert status.result_link is None


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "ok", "results": {}},
        {"status": "ok", "results": {"status": ""}},
        {"status": "ok", "results": {"status": 3}},
        {"status": "error", "error": "x"},
        [],
    ],
)
def test_status_unusable_shapes(payload: object) -> None:
    with pytest.raises(ResponseShapeError):
        parse_status(payload)


def test_error_string() -> None:
    body = parse_error(b'{"status":"error","error":"Invalid token"}')
    assert body.text == "Invalid token"
    assert body.conflicting_distinct_ids == ()


def test_error_conflict_shape() -> None:
    raw = {
        "status": "error",
        "error": {"conflicting_distinct_ids": ["a", "b"], "conflicting_task_ids": [11, "t2"]},
    }
    body = parse_error(json.dumps(raw).encode())
    assert body.conflicting_distinct_ids == ("a", "b")
    assert body.conflicting_task_ids == ("11", "t2")
    assert body.text is None
    assert "'a'" not in repr(body)


def test_error_object_with_message() -> None:
    assert parse_error(b'{"error": {"message": "bad"}}').text == "bad"
    assert parse_error(b'{"detail": "nope"}').text == "nope"


def test_error_non_json_and_odd_shapes() -> None:
    assert parse_error(b"Bad Gateway").text == "Bad Gateway"
    assert parse_error(b"").text is None
    assert parse_error(b"[1,2]").text is None
    assert parse_error(b'"plain"').text == "plain"
    assert parse_error(b'{"status":"error"}').text is None


def test_error_pages_that_are_not_json_give_one_short_line() -> None:
    page = (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )
    assert parse_error(page).text == "HTML page: 502 Bad Gateway"
    untitled = b"<!DOCTYPE html><html><body><h1>Service\n  Unavailable</h1></body></html>"
    assert parse_error(untitled).text == "HTML page: Service Unavailable"
    assert parse_error(b"<html></html>").text == "HTML page"
    long = parse_error(b"x" * 5000).text
    assert long is not None
    assert len(long) == 200
    assert parse_error(b"upstream\r\n  timed out\n").text == "upstream timed out"
