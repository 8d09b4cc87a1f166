"""The sandbox's HTTP surface (aiohttp): Mixpanel's GDPR API v3.0 plus the /_sandbox/ admin routes.

One application per region (one port each); all share one ``SandboxState``. A request's region is
its port's, unless the Host header names a Mixpanel API host (mixpanel.com, eu.mixpanel.com,
in.mixpanel.com), which wins.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from mixpanel_dsr.mixpanel.types import Region, TaskState
from mixpanel_dsr.sandbox import callbacks
from mixpanel_dsr.sandbox.config import (
    CallbacksConfig,
    ExportsConfig,
    LifecycleConfig,
    LimitsConfig,
    ProjectConfig,
    ResponsesConfig,
)
from mixpanel_dsr.sandbox.faults import FaultKind
from mixpanel_dsr.sandbox.state import Operation, SandboxError, SandboxState, TaskKind

log = logging.getLogger("mixpanel_dsr.sandbox")

STATE = web.AppKey("state", SandboxState)
REGION = web.AppKey("region", Region)
#: Base URLs of every region, filled in once all ports are bound (shown by GET /_sandbox/).
URLS = web.AppKey("urls", dict[str, str])
#: What the call log will record of the current request.
_CALL = web.RequestKey("sandbox_call", dict[str, Any])

#: Host names that select a region regardless of the port.
MIXPANEL_HOSTS: dict[str, Region] = {
    "mixpanel.com": Region.US,
    "eu.mixpanel.com": Region.EU,
    "in.mixpanel.com": Region.IN,
}

API_PREFIX = "/api/app"
_BASES: dict[TaskKind, str] = {
    TaskKind.DELETION: f"{API_PREFIX}/data-deletions/v3.0",
    TaskKind.RETRIEVAL: f"{API_PREFIX}/data-retrievals/v3.0",
}
_MALFORMED_BODY = "<html><body><h1>Service temporarily unavailable</h1></body></html>"

_NOT_JSON = object()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, error: str | dict[str, Any]) -> web.Response:
    return _json({"status": "error", "error": error}, status=status)


def region_of(request: web.Request) -> Region:
    host = (request.headers.get("Host") or "").strip().lower()
    if not host.startswith("["):
        host = host.split(":", 1)[0]
    return MIXPANEL_HOSTS.get(host.rstrip("."), request.app[REGION])


def operation_of(method: str, path: str) -> Operation:
    """Which GDPR API operation a method and path ask for (trailing slash or not)."""
    path = path.rstrip("/")
    for kind, base in _BASES.items():
        if path == base:
            if method == "POST":
                return (
                    Operation.CREATE_DELETION
                    if kind is TaskKind.DELETION
                    else Operation.CREATE_RETRIEVAL
                )
        elif path.startswith(base + "/") and "/" not in path[len(base) + 1 :]:
            if method == "GET":
                return (
                    Operation.DELETION_STATUS
                    if kind is TaskKind.DELETION
                    else Operation.RETRIEVAL_STATUS
                )
        else:
            continue
        if method == "DELETE" and kind is TaskKind.DELETION:
            return Operation.CANCEL_DELETION
        return Operation.UNKNOWN
    return Operation.UNKNOWN


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


# --- the GDPR API -------------------------------------------------------------------------------


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fault injection, error envelope and call log for everything under /api/."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    state = request.app[STATE]
    call: dict[str, Any] = {
        "region": region_of(request),
        "host": request.host,
        "method": request.method,
        "path": request.path,
        "operation": operation_of(request.method, request.path),
        "project_token": request.query.get("token"),
    }
    request[_CALL] = call
    status_call = call["operation"] in _STATUS_OPERATIONS
    decision = state.decide_faults(call["project_token"], status_call=status_call)
    if decision.latency > 0:
        await asyncio.sleep(decision.latency)
    fault = decision.kind
    response: web.StreamResponse
    if decision.kind is FaultKind.BURST_429:
        response = _error(429, "rate limit exceeded")
    elif decision.kind is FaultKind.ERROR:
        assert decision.status is not None
        response = _error(decision.status, "internal server error")
    elif decision.kind is FaultKind.MALFORMED:
        response = web.Response(text=_MALFORMED_BODY, content_type="text/html")
    elif decision.kind is FaultKind.FORBIDDEN:
        response = _error(403, "Forbidden: this user has no access to the project's GDPR API")
    elif decision.kind is FaultKind.HTML_ERROR:
        assert decision.status is not None
        response = web.Response(
            status=decision.status, text=_html_page(decision.status), content_type="text/html"
        )
    elif decision.kind is FaultKind.ERROR_BODY:
        response = _error(200, "Internal error while processing the request; please retry")
    elif decision.kind is FaultKind.DROP:
        _record(state, call, 0, fault=decision.kind)
        _drop_connection(request)
        return web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except SandboxError as err:
            call["error"] = err.error if isinstance(err.error, str) else json.dumps(err.error)
            response = _json(err.body(), status=err.status)
            fault = err.fault or fault
        except web.HTTPException as exc:  # no such route or method
            call["error"] = exc.reason
            response = _error(exc.status, exc.reason)
        if decision.kind is FaultKind.UNKNOWN_STATE:
            assert decision.state is not None
            changed = _with_state(response, decision.state)
            fault = None if changed is None else fault
            response = changed or response
        elif decision.kind is FaultKind.EMPTY_BODY:
            response = web.Response(status=response.status, body=b"")
    _record(state, call, response.status, fault=fault)
    if decision.kind is FaultKind.LOST_RESPONSE:
        _drop_connection(request)
    elif decision.kind is FaultKind.TIMEOUT:
        # Done, and answered only after the client has given up waiting.
        await asyncio.sleep(decision.hold)
    return response


_STATUS_OPERATIONS = frozenset({Operation.DELETION_STATUS, Operation.RETRIEVAL_STATUS})


def _html_page(status: int) -> str:
    """What a reverse proxy in front of Mixpanel answers when it cannot reach it."""
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
    title = f"{status} {reason.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def _with_state(response: web.StreamResponse, state: str) -> web.Response | None:
    """A status answer with ``results.status`` replaced; None when it is not one (an error)."""
    if response.status != 200 or not isinstance(response, web.Response):
        return None
    body = response.body
    try:
        payload = json.loads(body if isinstance(body, bytes) else b"")
    except ValueError:
        return None
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, dict) or "status" not in results:
        return None
    results["status"] = state
    return _json(payload)


def _record(
    state: SandboxState, call: dict[str, Any], status: int, *, fault: FaultKind | None
) -> None:
    record = state.record_call(status=status, fault=fault.value if fault else None, **call)
    log.info(
        "%s %s region=%s status=%d ids=%d%s",
        record.operation.value,
        record.tracking_id or "-",
        record.region.value,
        status,
        len(record.distinct_ids),
        f" fault={record.fault}" if record.fault else "",
    )


def _admit(request: web.Request) -> Any:
    state = request.app[STATE]
    return state.admit(
        request[_CALL]["region"], request.query.get("token"), request.headers.get("Authorization")
    )


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _create_handler(kind: TaskKind) -> Handler:
    async def create(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = _NOT_JSON
        if isinstance(body, dict) and isinstance(body.get("distinct_ids"), list):
            # Logged as sent, even when the call is refused below.
            request[_CALL]["distinct_ids"] = [str(i) for i in body["distinct_ids"]]
        project, oauth = _admit(request)
        if body is _NOT_JSON:
            raise SandboxError(400, "request body must be JSON")
        task = state.create(project, oauth, kind, body)
        request[_CALL]["tracking_id"] = task.tracking_id
        return _json(state.create_response(task), status=state.config.responses.create_status)

    return create


def _status_handler(kind: TaskKind) -> Handler:
    async def status(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        project, _ = _admit(request)
        tracking_id = request.match_info["tracking_id"]
        request[_CALL]["tracking_id"] = tracking_id
        code, body = state.status(project, kind, tracking_id, _origin(request))
        return _json(body, status=code)

    return status


async def cancel_deletion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    project, _ = _admit(request)
    tracking_id = request.match_info.get("tracking_id")
    if tracking_id is None:  # one page shows the id in the body instead of the path
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise SandboxError(400, "request body must be JSON") from None
        found = body.get("tracking_id") or body.get("task_id") if isinstance(body, dict) else None
        if not isinstance(found, str) or not found:
            raise SandboxError(400, "tracking_id is required")
        tracking_id = found
    request[_CALL]["tracking_id"] = tracking_id
    return web.Response(status=state.cancel(project, tracking_id))


# --- exports ------------------------------------------------------------------------------------


async def download_export(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    tracking_id = request.match_info["tracking_id"]
    call: dict[str, Any] = {
        "region": region_of(request),
        "host": request.host,
        "method": request.method,
        "path": request.path,
        "operation": Operation.EXPORT_DOWNLOAD,
        "tracking_id": tracking_id,
    }
    try:
        task = state.open_export(
            tracking_id, request.query.get("expires"), request.query.get("signature")
        )
    except SandboxError as err:
        _record(state, {**call, "error": str(err.error)}, err.status, fault=None)
        return _json(err.body(), status=err.status)
    data = state.export_bytes(task)
    call.update(project_token=task.project_token, distinct_ids=list(task.distinct_ids))
    _record(state, call, 200, fault=None)
    return web.Response(
        body=data,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="export-{tracking_id}.zip"'},
    )


# --- admin --------------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SandboxError(400, "request body must be JSON") from None
    if not isinstance(body, dict):
        raise SandboxError(400, "request body must be a JSON object")
    return body


def _validation_error(err: ValidationError) -> SandboxError:
    # Never echo inputs: they may hold OAuth tokens or secrets.
    errors = err.errors(include_input=False, include_url=False, include_context=False)
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return SandboxError(400, text)


@web.middleware
async def admin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except SandboxError as err:
        return _json(err.body(), status=err.status)
    except ValidationError as err:
        return _json(_validation_error(err).body(), status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


async def healthz(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok"})


async def index(request: web.Request) -> web.StreamResponse:
    return _json(
        {
            "status": "ok",
            "region": request.app[REGION].value,
            "base_urls": request.app[URLS],
            "admin": [
                "GET /_sandbox/healthz",
                "GET /_sandbox/calls",
                "GET /_sandbox/ids",
                "GET /_sandbox/tasks",
                "GET /_sandbox/tasks/{tracking_id}",
                "POST /_sandbox/tasks/{tracking_id}/state",
                "GET|POST /_sandbox/projects",
                "GET|POST /_sandbox/projects/{token}",
                "GET|POST /_sandbox/faults",
                "GET|POST /_sandbox/settings",
                "GET|POST /_sandbox/clock",
                "POST /_sandbox/reset",
                "GET /_sandbox/exports/{tracking_id}?expires=..&signature=..",
            ],
        }
    )


async def list_calls(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    query = request.query
    try:
        since = int(query.get("since", "0"))
    except ValueError:
        raise SandboxError(400, "since must be an integer") from None
    calls = [
        c
        for c in state.calls
        if c.seq > since
        and ("project" not in query or c.project_token == query["project"])
        and ("operation" not in query or c.operation.value == query["operation"])
        and ("status" not in query or str(c.status) == query["status"])
    ]
    by_status = Counter(str(c.status) for c in calls)
    by_operation = Counter(c.operation.value for c in calls)
    return _json(
        {
            "count": len(calls),
            "by_status": dict(sorted(by_status.items())),
            "by_operation": dict(sorted(by_operation.items())),
            "calls": [c.to_json() for c in calls],
        }
    )


async def ids(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return _json({"ids": state.ids_report(request.query.get("project"))})


async def list_tasks(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    query = request.query
    views = [
        state.task_view(t)
        for t in state.tasks.values()
        if ("project" not in query or t.project_token == query["project"])
        and ("kind" not in query or t.kind.value == query["kind"])
    ]
    if "state" in query:
        views = [v for v in views if v["state"] == query["state"].upper()]
    return _json({"count": len(views), "tasks": views})


def _task_or_404(state: SandboxState, tracking_id: str) -> Any:
    task = state.tasks.get(tracking_id)
    if task is None:
        raise SandboxError(404, "task not found")
    return task


async def get_task(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return _json({"task": state.task_view(_task_or_404(state, request.match_info["tracking_id"]))})


async def force_task_state(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    tracking_id = request.match_info["tracking_id"]
    _task_or_404(state, tracking_id)
    body = await _json_body(request)
    raw_state = body.get("state")
    if not isinstance(raw_state, str) or raw_state.upper() not in TaskState.__members__:
        raise SandboxError(400, f"state must be one of {', '.join(TaskState)}")
    hold = body.get("hold", True)
    if not isinstance(hold, bool):
        raise SandboxError(400, "hold must be a boolean")
    task = state.force_state(tracking_id, TaskState(raw_state.upper()), hold=hold)
    return _json({"task": state.task_view(task)})


async def list_projects(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return _json({"projects": [state.project_view(p) for p in state.projects.values()]})


async def add_project(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    config = ProjectConfig.model_validate(await _json_body(request))
    project, created = state.add_project(config)
    return _json({"project": state.project_view(project)}, status=201 if created else 200)


def _project_or_404(state: SandboxState, token: str) -> Any:
    project = state.projects.get(token)
    if project is None:
        raise SandboxError(404, "project not found")
    return project


async def get_project(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    project = _project_or_404(state, request.match_info["token"])
    return _json({"project": state.project_view(project)})


async def update_project(request: web.Request) -> web.StreamResponse:
    """Merge the given fields into a registered project, e.g. ``{"conflict_409": true}``."""
    state = request.app[STATE]
    token = request.match_info["token"]
    _project_or_404(state, token)
    project = state.update_project(token, await _json_body(request))
    return _json({"project": state.project_view(project)})


async def get_faults(request: web.Request) -> web.StreamResponse:
    return _json({"faults": request.app[STATE].faults.snapshot()})


async def set_faults(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await _json_body(request)
    if body.pop("reset", False):
        state.faults.configure(state.config.faults)
    state.faults.update(body)
    return _json({"faults": state.faults.snapshot()})


_SETTINGS_SECTIONS: dict[
    str, type[LimitsConfig | ResponsesConfig | LifecycleConfig | ExportsConfig | CallbacksConfig]
]
_SETTINGS_SECTIONS = {
    "limits": LimitsConfig,
    "responses": ResponsesConfig,
    "lifecycle": LifecycleConfig,
    "exports": ExportsConfig,
    "callbacks": CallbacksConfig,
}


def _settings_view(state: SandboxState) -> dict[str, Any]:
    data = state.config.model_dump(mode="json", include=set(_SETTINGS_SECTIONS))
    data["exports"].pop("signing_key", None)
    return data


async def get_settings(request: web.Request) -> web.StreamResponse:
    return _json({"settings": _settings_view(request.app[STATE])})


async def set_settings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await _json_body(request)
    unknown = set(body) - set(_SETTINGS_SECTIONS)
    if unknown:
        raise SandboxError(400, f"unknown settings sections: {sorted(unknown)}")
    updates: dict[str, Any] = {}
    for name, changes in body.items():
        if not isinstance(changes, dict):
            raise SandboxError(400, f"{name} must be an object")
        if name == "exports" and "signing_key" in changes:
            raise SandboxError(400, "exports.signing_key cannot change at runtime")
        current = getattr(state.config, name)
        updates[name] = _SETTINGS_SECTIONS[name].model_validate({**current.model_dump(), **changes})
    state.config = state.config.model_copy(update=updates)
    return _json({"settings": _settings_view(state)})


def _clock_view(state: SandboxState) -> dict[str, Any]:
    return {"now": state.now(), "offset_seconds": state.clock_offset}


async def get_clock(request: web.Request) -> web.StreamResponse:
    return _json(_clock_view(request.app[STATE]))


async def advance_clock(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    seconds = (await _json_body(request)).get("advance_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise SandboxError(400, "advance_seconds must be a non-negative number")
    state.advance(float(seconds))
    return _json(_clock_view(state))


async def callback_key(request: web.Request) -> web.StreamResponse:
    """The public key status callbacks are signed with (PEM)."""
    return _json({"public_key_pem": callbacks.public_pem(request.app[STATE].callback_key)})


async def list_callbacks(request: web.Request) -> web.StreamResponse:
    """Every status callback POSTed, oldest first."""
    return _json({"callbacks": request.app[STATE].callback_log})


async def reset(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    keep = (await _json_body(request)).get("keep_projects", False)
    state.reset(keep_projects=bool(keep))
    return _json({"status": "ok"})


def build_app(state: SandboxState, region: Region, urls: dict[str, str]) -> web.Application:
    """The application of one region's port."""
    app = web.Application(
        middlewares=[api_middleware, admin_middleware], client_max_size=16 * 1024 * 1024
    )
    app[STATE] = state
    app[REGION] = region
    app[URLS] = urls
    router = app.router
    for kind, base in _BASES.items():
        create, status = _create_handler(kind), _status_handler(kind)
        for suffix in ("", "/"):
            item = base + "/{tracking_id}" + suffix
            router.add_post(base + suffix, create)
            router.add_get(item, status)
            if kind is TaskKind.DELETION:
                router.add_delete(item, cancel_deletion)
                router.add_delete(base + suffix, cancel_deletion)
    router.add_get("/_sandbox/exports/{tracking_id}", download_export)
    router.add_get("/_sandbox", index)
    router.add_get("/_sandbox/", index)
    router.add_get("/_sandbox/healthz", healthz)
    router.add_get("/_sandbox/calls", list_calls)
    router.add_get("/_sandbox/ids", ids)
    router.add_get("/_sandbox/tasks", list_tasks)
    router.add_get("/_sandbox/tasks/{tracking_id}", get_task)
    router.add_post("/_sandbox/tasks/{tracking_id}/state", force_task_state)
    router.add_get("/_sandbox/projects", list_projects)
    router.add_post("/_sandbox/projects", add_project)
    router.add_get("/_sandbox/projects/{token}", get_project)
    router.add_post("/_sandbox/projects/{token}", update_project)
    router.add_get("/_sandbox/faults", get_faults)
    router.add_post("/_sandbox/faults", set_faults)
    router.add_get("/_sandbox/settings", get_settings)
    router.add_post("/_sandbox/settings", set_settings)
    router.add_get("/_sandbox/clock", get_clock)
    router.add_post("/_sandbox/clock", advance_clock)
    router.add_get("/_sandbox/callbacks", list_callbacks)
    router.add_get("/_sandbox/callbacks/key", callback_key)
    router.add_post("/_sandbox/reset", reset)
    return app
