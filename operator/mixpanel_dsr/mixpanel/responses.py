"""Parsing of the GDPR API's response bodies (pure: no I/O).

Tolerant where the fact sheet is unclear:

- the envelope ``{"status": "ok", "results": ...}``; ``results`` may be an object or a
  one-element list holding the task object; a body without the envelope is read as the
  results themselves;
- a create answers with ``results.task_id`` or (in the prose docs) ``results[0].tracking_id``;
- tracking ids may be JSON numbers or strings and are always returned as ``str``;
- unknown extra fields are ignored;
- a state string this client does not know maps to :attr:`TaskState.UNKNOWN` (which Mixpanel
  itself uses for "could not look it up, try again"), with the raw string kept in
  ``TaskStatus.raw_state``: the safe reading of a state we do not understand is "not done yet,
  poll again", never success, failure or cancellable.

Errors are raised as :class:`ResponseShapeError`, whose messages never quote the body (a status
body holds distinct ids and the export link).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .types import ComplianceType, TaskState

logger = logging.getLogger("mixpanel_dsr.mixpanel.responses")

TaskKind = Literal["deletion", "retrieval"]


class ResponseShapeError(ValueError):
    """A body that is not JSON or not in any shape this client knows. The message is generic."""


class ErrorEnvelopeError(ResponseShapeError):
    """A 2xx body whose envelope says ``"status": "error"``: Mixpanel refused, nothing done."""


class CreatedTask(BaseModel):
    """What a create call returns: the tracking id of the new task, plus what Mixpanel echoed."""

    model_config = ConfigDict(frozen=True)

    tracking_id: str
    kind: TaskKind
    state: TaskState | None = None
    compliance_type: ComplianceType | None = None
    distinct_id_count: int | None = None


class TaskStatus(BaseModel):
    """A task's status. ``result_link`` and ``distinct_ids`` never show in repr/str."""

    model_config = ConfigDict(frozen=True)

    state: TaskState
    #: The state string exactly as Mixpanel sent it (differs from ``state`` when unknown).
    raw_state: str
    tracking_id: str | None = None
    #: Signed link to a finished retrieval's export (personal data); None until there is one.
    result_link: SecretStr | None = None
    #: Distinct ids the task holds, as echoed by Mixpanel (personal data: not in repr or dumps).
    distinct_ids: tuple[str, ...] | None = Field(default=None, repr=False, exclude=True)
    distinct_id_count: int | None = None
    compliance_type: ComplianceType | None = None
    project_id: str | None = None
    date_requested: str | None = None

    @property
    def known_state(self) -> bool:
        """False when Mixpanel sent a state string this client does not know."""
        return self.raw_state.upper() == self.state.value


class ErrorBody(BaseModel):
    """What an error response said. ``text`` is raw (not yet sanitised)."""

    model_config = ConfigDict(frozen=True)

    text: str | None = None
    conflicting_distinct_ids: tuple[str, ...] = Field(default=(), repr=False)
    conflicting_task_ids: tuple[str, ...] = ()


def parse_json(body: bytes) -> Any:
    """The decoded JSON of a body; :class:`ResponseShapeError` when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        # Not chained: json's error keeps the whole document (.doc).
        pass
    raise ResponseShapeError("body is not JSON")


def tracking_id_str(value: Any) -> str | None:
    """A tracking id as a string (from a JSON string or integer), or None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _results(payload: Any) -> Mapping[str, Any]:
    """The task object of an ``ok`` envelope (dict, or one-element list holding a dict)."""
    if not isinstance(payload, Mapping):
        raise ResponseShapeError("response is not a JSON object")
    status = payload.get("status")
    if isinstance(status, str) and status.lower() == "error":
        raise ErrorEnvelopeError("response has status 'error'")
    results: Any = payload.get("results", payload)
    if isinstance(results, list):
        if len(results) != 1:
            raise ResponseShapeError(f"results is a list of {len(results)} elements, expected 1")
        results = results[0]
    if not isinstance(results, Mapping):
        raise ResponseShapeError("results is not an object")
    return results


def _compliance_type(value: Any) -> ComplianceType | None:
    if isinstance(value, str):
        try:
            return ComplianceType(value.strip().upper())
        except ValueError:
            return None
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _id_list(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    out: list[str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(str(item))
    return tuple(out)


def parse_state(value: str) -> TaskState:
    """The :class:`TaskState` of a state string; :attr:`TaskState.UNKNOWN` if not known."""
    try:
        return TaskState(value.strip().upper())
    except ValueError:
        logger.warning("mixpanel: unknown task state %r, treated as UNKNOWN", value[:40])
        return TaskState.UNKNOWN


def parse_create(payload: Any, kind: TaskKind) -> CreatedTask:
    """The task a create call answered with (``task_id`` or ``tracking_id``, object or list)."""
    results = _results(payload)
    tracking_id = None
    for key in ("task_id", "tracking_id", "id"):
        if key in results:
            tracking_id = tracking_id_str(results[key])
            break
    if tracking_id is None:
        raise ResponseShapeError("create response holds no usable task_id or tracking_id")
    raw_state = results.get("status")
    return CreatedTask(
        tracking_id=tracking_id,
        kind=kind,
        state=parse_state(raw_state) if isinstance(raw_state, str) and raw_state else None,
        compliance_type=_compliance_type(results.get("compliance_type")),
        distinct_id_count=_count(results.get("distinct_id_count")),
    )


def parse_status(payload: Any) -> TaskStatus:
    """The status of a task (``results.status`` plus optional ``result`` link and echoes)."""
    results = _results(payload)
    raw_state = results.get("status")
    if not isinstance(raw_state, str) or not raw_state.strip():
        raise ResponseShapeError("status response holds no task state")
    link = results.get("result")
    distinct_ids = _id_list(results.get("distinct_ids"))
    count = _count(results.get("distinct_id_count"))
    if count is None and distinct_ids is not None:
        count = len(distinct_ids)
    project_id = results.get("project_id")
    date_requested = results.get("date_requested")
    return TaskStatus(
        state=parse_state(raw_state),
        raw_state=raw_state,
        tracking_id=tracking_id_str(results.get("tracking_id", results.get("task_id"))),
        result_link=SecretStr(link.strip()) if isinstance(link, str) and link.strip() else None,
        distinct_ids=distinct_ids,
        distinct_id_count=count,
        compliance_type=_compliance_type(results.get("compliance_type")),
        project_id=tracking_id_str(project_id),
        date_requested=date_requested if isinstance(date_requested, str) else None,
    )


#: Longest error text kept from a body that is not JSON.
MAX_PLAIN_ERROR = 200
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _plain_text(body: bytes) -> str | None:
    """What a body that is not JSON says, in one short line: the title of an HTML page (a
    proxy's or load balancer's error page), else the text with its whitespace folded."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    if text.startswith("<"):
        title = _TITLE.search(text)
        inner = title.group(1) if title else _TAG.sub(" ", text)
        folded = " ".join(inner.split())
        text = f"HTML page: {folded}" if folded else "HTML page"
    else:
        text = " ".join(text.split())
    if len(text) > MAX_PLAIN_ERROR:
        text = text[: MAX_PLAIN_ERROR - 1] + "…"
    return text


def parse_error(body: bytes) -> ErrorBody:
    """What an error response said, from ``{"status":"error","error":...}`` or plain text.

    ``error`` may be a string, or an object such as the 409 shape
    ``{"conflicting_distinct_ids": [...], "conflicting_task_ids": [...]}``.
    """
    try:
        payload = parse_json(body)
    except ResponseShapeError:
        return ErrorBody(text=_plain_text(body))
    if isinstance(payload, str):
        return ErrorBody(text=payload or None)
    if not isinstance(payload, Mapping):
        return ErrorBody()
    error: Any = payload.get("error", payload.get("detail", payload.get("message")))
    if isinstance(error, str):
        return ErrorBody(text=error or None)
    if isinstance(error, Mapping):
        text: str | None = None
        for key in ("message", "detail", "error"):
            value = error.get(key)
            if isinstance(value, str) and value:
                text = value
                break
        task_ids = _id_list(error.get("conflicting_task_ids")) or ()
        return ErrorBody(
            text=text,
            conflicting_distinct_ids=_id_list(error.get("conflicting_distinct_ids")) or (),
            conflicting_task_ids=task_ids,
        )
    return ErrorBody()
