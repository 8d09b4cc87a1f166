"""The sandbox's state and rules, free of HTTP: projects, tasks, their life cycle, limits, call log.

Everything time-dependent reads an injected clock (epoch seconds), so unit tests advance time by
hand. A task's state is never stored: it is computed from its creation time, the (scaled) state
durations and any cancel or forced state, whenever someone asks.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mixpanel_dsr.mixpanel.types import ComplianceType, DisclosureType, Region, TaskState
from mixpanel_dsr.sandbox import callbacks, export
from mixpanel_dsr.sandbox.config import (
    FaultConfig,
    OAuthTokenConfig,
    ProjectConfig,
    SandboxConfig,
)
from mixpanel_dsr.sandbox.faults import (
    FaultDecision,
    FaultInjector,
    FaultKind,
    TaskDecision,
    TaskFault,
    combine,
    combine_tasks,
)

#: Returns the current time in epoch seconds.
Clock = Callable[[], float]

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_FIRST_PROJECT_ID = 1_000_001
#: States of a "running" deletion: what a new deletion of the same ids conflicts with (409).
RUNNING_STATES = frozenset({TaskState.PENDING, TaskState.STAGING, TaskState.STARTED})


class TaskKind(StrEnum):
    DELETION = "deletion"
    RETRIEVAL = "retrieval"


class Operation(StrEnum):
    """What a call to the sandbox asked for (the ``operation`` of the call log)."""

    CREATE_DELETION = "create_deletion"
    DELETION_STATUS = "deletion_status"
    CANCEL_DELETION = "cancel_deletion"
    CREATE_RETRIEVAL = "create_retrieval"
    RETRIEVAL_STATUS = "retrieval_status"
    EXPORT_DOWNLOAD = "export_download"
    UNKNOWN = "unknown"


class SandboxError(Exception):
    """A refusal, carrying the HTTP status and the ``error`` of Mixpanel's error envelope."""

    def __init__(
        self, status: int, error: str | dict[str, Any], *, fault: FaultKind | None = None
    ) -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error
        #: The fault mode that made this refusal, if one did (shown in the call log).
        self.fault = fault

    def body(self) -> dict[str, Any]:
        return {"status": "error", "error": self.error}


def token_fingerprint(secret: str) -> str:
    """A short, non-reversible name for a secret (what logs and views show instead of it)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Project:
    config: ProjectConfig
    project_id: int

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def region(self) -> Region:
        return self.config.region


@dataclass
class Task:
    """One Mixpanel task (a deletion or a retrieval) and what decides its life cycle."""

    tracking_id: str
    kind: TaskKind
    project_token: str
    project_id: int
    region: Region
    compliance_type: ComplianceType
    disclosure_type: DisclosureType | None
    distinct_ids: tuple[str, ...]
    created_at: float
    pending_seconds: float
    staging_seconds: float
    started_seconds: float
    #: How the task ends when nobody interferes: SUCCESS or FAILURE (drawn at creation).
    outcome: TaskState
    requesting_user: str
    history_days: int
    subject_request_id: str | None = None
    status_callback_urls: tuple[str, ...] = ()
    revoked_at: float | None = None
    forced_state: TaskState | None = None
    forced_at: float | None = None
    #: From this instant the task reads NOT_FOUND and is not carried out (fault ``vanish``).
    vanishes_at: float | None = None
    #: The task faults drawn at its creation.
    faults: tuple[TaskFault, ...] = ()

    @property
    def finishes_at(self) -> float:
        """When the undisturbed life cycle reaches its outcome."""
        return self.created_at + self.pending_seconds + self.staging_seconds + self.started_seconds

    def state_at(self, now: float) -> TaskState:
        if self.forced_state is not None:
            return self.forced_state
        if self.revoked_at is not None:
            return TaskState.REVOKED
        if self.vanishes_at is not None and now >= self.vanishes_at:
            return TaskState.NOT_FOUND
        elapsed = now - self.created_at
        if elapsed < self.pending_seconds:
            return TaskState.PENDING
        if elapsed < self.pending_seconds + self.staging_seconds:
            return TaskState.STAGING
        if now < self.finishes_at:
            return TaskState.STARTED
        return self.outcome

    def finished_at(self, now: float) -> float | None:
        """When the task reached its terminal state (None while it has not)."""
        if not self.state_at(now).terminal:
            return None
        if self.forced_state is not None:
            return self.forced_at
        if self.revoked_at is not None:
            return self.revoked_at
        return self.finishes_at

    def outstanding_at(self, now: float) -> bool:
        state = self.state_at(now)
        return not state.terminal and state is not TaskState.NOT_FOUND

    def force(self, state: TaskState, now: float, *, hold: bool) -> None:
        """Put the task in ``state``: held there (``hold``) or continuing its life cycle from it."""
        self.forced_state = None
        self.forced_at = None
        self.revoked_at = None
        self.vanishes_at = None
        if hold or state in (TaskState.REVOKED, TaskState.NOT_FOUND, TaskState.UNKNOWN):
            self.forced_state, self.forced_at = state, now
            return
        offsets = {
            TaskState.PENDING: 0.0,
            TaskState.STAGING: self.pending_seconds,
            TaskState.STARTED: self.pending_seconds + self.staging_seconds,
        }
        if state in offsets:
            self.created_at = now - offsets[state]
        else:  # SUCCESS or FAILURE, reached now
            self.outcome = state
            self.created_at = now - (self.finishes_at - self.created_at)


@dataclass
class CallRecord:
    """One GDPR API call (or export download) the sandbox received."""

    seq: int
    at: float
    region: Region
    host: str
    method: str
    path: str
    operation: Operation
    project_token: str | None = None
    distinct_ids: list[str] = field(default_factory=list)
    status: int = 0
    tracking_id: str | None = None
    fault: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": _iso(self.at),
            "at": self.at,
            "region": self.region.value,
            "host": self.host,
            "method": self.method,
            "path": self.path,
            "operation": self.operation.value,
            "project_token": self.project_token,
            "distinct_id_count": len(self.distinct_ids),
            "distinct_ids": self.distinct_ids,
            "status": self.status,
            "tracking_id": self.tracking_id,
            "fault": self.fault,
            "error": self.error,
        }


def _parse_compliance(value: Any) -> ComplianceType:
    if value is None:
        return ComplianceType.GDPR
    if isinstance(value, str) and value.upper() in ComplianceType.__members__:
        return ComplianceType(value.upper())
    raise SandboxError(400, "compliance_type must be one of GDPR, CCPA")


def _parse_disclosure(value: Any) -> DisclosureType:
    if isinstance(value, str):
        for member in DisclosureType:
            if member.value.lower() == value.lower():
                return member
    raise SandboxError(400, "disclosure_type must be one of Data, Categories, Sources")


def _parse_ids(body: dict[str, Any], limit: int) -> list[str]:
    if "distinct_ids" not in body:
        raise SandboxError(400, "distinct_ids is required")
    ids = body["distinct_ids"]
    if not isinstance(ids, list):
        raise SandboxError(400, "distinct_ids must be a list of strings")
    if not ids:
        raise SandboxError(400, "distinct_ids must not be empty")
    if not all(isinstance(i, str) and i for i in ids):
        raise SandboxError(400, "distinct_ids must be non-empty strings")
    if len(ids) > limit:
        raise SandboxError(
            400, f"too many distinct_ids: {len(ids)} given, at most {limit} per request"
        )
    return ids


class SandboxState:
    """Everything the sandbox knows; the HTTP layer only translates to and from it."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Clock = time.time,
        signing_key: bytes | None = None,
    ) -> None:
        self.config = config
        self._initial_config = config
        self._base_clock = clock
        configured = config.exports.signing_key
        self.signing_key = (
            signing_key
            or (configured.get_secret_value().encode() if configured else None)
            or secrets.token_bytes(32)
        )
        self.faults = FaultInjector(config.faults)
        #: Signs status callbacks (RSA); the public half is served to receivers.
        self.callback_key = callbacks.new_key()
        self.reset()

    # --- time -------------------------------------------------------------------------------

    def now(self) -> float:
        return self._base_clock() + self.clock_offset

    def advance(self, seconds: float) -> float:
        """Move the sandbox clock forward (also what POST /_sandbox/clock does)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.clock_offset += seconds
        return self.now()

    # --- registry ---------------------------------------------------------------------------

    def reset(self, *, keep_projects: bool = False) -> None:
        """Back to the start: configured settings and faults, no tasks, calls, rate-limit history
        or clock offset; projects registered at runtime are dropped unless ``keep_projects``."""
        self.config = self._initial_config
        seed = self.config.lifecycle.seed
        self._outcome_rng = random.Random(seed)  # noqa: S311 - simulation
        self._unknown_rng = random.Random(seed + 1)  # noqa: S311
        self._id_rng = random.Random(seed + 2)  # noqa: S311
        self.clock_offset = 0.0
        self.tasks: dict[str, Task] = {}
        self.calls: list[CallRecord] = []
        #: Every status callback POSTed (sandbox/callbacks.py), for tests and the curious.
        self.callback_log: list[dict[str, Any]] = []
        self._last_accepted: dict[str, float] = {}
        self.faults.configure(self.config.faults)
        if not keep_projects:
            self.projects: dict[str, Project] = {}
            self.project_faults: dict[str, FaultInjector] = {}
            for project in self.config.projects:
                self.add_project(project)
        else:
            for kept in self.projects.values():
                self._configure_faults(kept.config)

    def add_project(self, config: ProjectConfig) -> tuple[Project, bool]:
        """Register (or replace) a project; returns it and whether it is new."""
        existing = self.projects.get(config.token)
        project_id = config.project_id
        if project_id is None:
            if existing is not None:
                project_id = existing.project_id
            else:
                used = [p.project_id for p in self.projects.values()]
                project_id = max([_FIRST_PROJECT_ID - 1, *used]) + 1
        project = Project(config=config, project_id=project_id)
        self.projects[config.token] = project
        self._configure_faults(config)
        return project, existing is None

    def _configure_faults(self, config: ProjectConfig) -> None:
        """The project's own fault injector (re-seeded), or none."""
        if config.faults is None:
            self.project_faults.pop(config.token, None)
        else:
            self.project_faults[config.token] = FaultInjector(config.faults)

    def update_project(self, token: str, changes: dict[str, Any]) -> Project:
        """Merge ``changes`` (fields of a project in the config file) into a registered project.

        Raises KeyError for an unknown token, SandboxError (400) for an attempt to change the
        token, and pydantic's ValidationError for invalid values. The project keeps its id, its
        tasks and its rate-limit history; the configured project (restored by a reset) is not
        touched.
        """
        existing = self.projects.get(token)
        if existing is None:
            raise KeyError(token)
        if changes.get("token", token) != token:
            raise SandboxError(400, "a project's token cannot change")
        rest = {k: v for k, v in changes.items() if k != "faults"}
        config = ProjectConfig.model_validate({**existing.config.model_dump(), **rest})
        injector = self.project_faults.get(token)
        if "faults" in changes:
            faults = changes["faults"]
            if faults is None:
                injector = None
            elif not isinstance(faults, dict):
                raise SandboxError(400, "faults must be an object or null")
            elif injector is None or faults.get("reset", False):
                fresh = {k: v for k, v in faults.items() if k != "reset"}
                injector = FaultInjector(FaultConfig.model_validate(fresh))
            else:
                faults = {k: v for k, v in faults.items() if k != "reset"}
                # Merged like POST /_sandbox/faults: re-seeded only when seed is given, a
                # burst (re)started only when burst_429 is.
                injector.update(faults)
        config = config.model_copy(update={"faults": injector.config if injector else None})
        project = Project(config=config, project_id=existing.project_id)
        self.projects[token] = project
        if injector is None:
            self.project_faults.pop(token, None)
        else:
            self.project_faults[token] = injector
        return project

    # --- faults ------------------------------------------------------------------------------

    def decide_faults(self, project_token: str | None, *, status_call: bool) -> FaultDecision:
        """The faults of one GDPR API call: the sandbox-wide ones, then the project's own."""
        decision = self.faults.decide(status_call=status_call)
        own = self.project_faults.get(project_token or "")
        return combine(decision, own.decide(status_call=status_call) if own else None)

    def _decide_task(self, project: Project) -> TaskDecision:
        scale = self.config.lifecycle.time_scale
        own = self.project_faults.get(project.token)
        return combine_tasks(
            self.faults.decide_task(scale), own.decide_task(scale) if own else None
        )

    def _conflict_on_resend(self, project: Project) -> bool:
        own = self.project_faults.get(project.token)
        return self.faults.config.conflict_on_resend or bool(own and own.config.conflict_on_resend)

    # --- admission: project, OAuth token, rate limit ----------------------------------------

    def admit(
        self, region: Region, token: str | None, authorization: str | None
    ) -> tuple[Project, OAuthTokenConfig]:
        """Check who calls for what, then charge the project's request budget.

        Order: Bearer header present (401), ``token`` given (400), project known in this region
        (``responses.unknown_project_status``), Bearer accepted and not expired
        (``responses.invalid_oauth_status``), rate limit (429). Only calls that pass all of it
        count against the rate limit.
        """
        responses = self.config.responses
        scheme, _, bearer = (authorization or "").strip().partition(" ")
        bearer = bearer.strip()
        if scheme.lower() != "bearer" or not bearer:
            raise SandboxError(401, "missing or malformed Authorization header (Bearer token)")
        if not token:
            raise SandboxError(400, "missing required query parameter: token")
        project = self.projects.get(token)
        if project is None or project.region is not region:
            raise SandboxError(responses.unknown_project_status, "project not found for this token")
        now = self.now()
        accepted = next(
            (
                t
                for t in project.config.oauth_tokens
                if secrets.compare_digest(t.token.get_secret_value().encode(), bearer.encode())
            ),
            None,
        )
        if accepted is None:
            raise SandboxError(
                responses.invalid_oauth_status, "OAuth token is not valid for this project"
            )
        if accepted.expires_at is not None:
            expires = accepted.expires_at
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if now >= expires.timestamp():
                raise SandboxError(responses.invalid_oauth_status, "OAuth token has expired")
        self._charge(project, now)
        return project, accepted

    def rate_limit(self, project: Project) -> float:
        override = project.config.rate_limit_per_s
        return self.config.limits.rate_limit_per_s if override is None else override

    def conflict_409(self, project: Project) -> bool:
        """Whether deletions of ids already being deleted in ``project`` are refused with 409."""
        override = project.config.conflict_409
        return self.config.limits.conflict_409 if override is None else override

    def _charge(self, project: Project, now: float) -> None:
        rate = self.rate_limit(project)
        last = self._last_accepted.get(project.token)
        if rate > 0 and last is not None and now - last < 1.0 / rate:
            raise SandboxError(
                429, f"rate limit exceeded: at most {rate:g} requests per second per project"
            )
        self._last_accepted[project.token] = now

    # --- the GDPR API -----------------------------------------------------------------------

    def _new_tracking_id(self) -> str:
        while True:
            if self.config.responses.tracking_id_style == "uuid":
                candidate = str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))
            else:
                candidate = str(self._id_rng.randrange(10**18, 10**19))
            if candidate not in self.tasks:
                return candidate

    def outstanding_scan_days(self, project: Project) -> int:
        now = self.now()
        return sum(
            task.history_days
            for task in self.tasks.values()
            if task.project_token == project.token
            and task.kind is TaskKind.RETRIEVAL
            and task.outstanding_at(now)
        )

    def create(self, project: Project, oauth: OAuthTokenConfig, kind: TaskKind, body: Any) -> Task:
        """Validate a create call's body and start a task (raises SandboxError on refusal)."""
        if not isinstance(body, dict):
            raise SandboxError(400, "request body must be a JSON object")
        ids = _parse_ids(body, project.config.id_limit)
        compliance = _parse_compliance(body.get("compliance_type"))
        disclosure: DisclosureType | None = None
        if body.get("disclosure_type") is not None:
            if kind is TaskKind.DELETION:
                raise SandboxError(400, "disclosure_type is only valid for retrievals")
            if compliance is not ComplianceType.CCPA:
                raise SandboxError(400, "disclosure_type is only valid with compliance_type CCPA")
            disclosure = _parse_disclosure(body["disclosure_type"])
        elif kind is TaskKind.RETRIEVAL and compliance is ComplianceType.CCPA:
            disclosure = DisclosureType.DATA
        subject_request_id, callback_urls = self._parse_callbacks(project, body)
        # One reading of the clock for the checks below and the new task: the conflict check
        # sees every task's state as of this call, and nothing awaits between check and insert.
        now = self.now()
        unique_ids = tuple(dict.fromkeys(ids))
        if kind is TaskKind.RETRIEVAL:
            self._check_scan_budget(project)
        else:
            if self._conflict_on_resend(project):
                self._check_conflicts(project, unique_ids, now, resend=True)
            if self.conflict_409(project):
                self._check_conflicts(project, unique_ids, now)
        lifecycle = self.config.lifecycle
        failed = self._outcome_rng.random() < lifecycle.failure_rate
        drawn = self._decide_task(project)
        task = Task(
            tracking_id=self._new_tracking_id(),
            kind=kind,
            project_token=project.token,
            project_id=project.project_id,
            region=project.region,
            compliance_type=compliance,
            disclosure_type=disclosure,
            distinct_ids=unique_ids,
            created_at=now,
            pending_seconds=lifecycle.pending_seconds * lifecycle.time_scale,
            staging_seconds=lifecycle.staging_seconds * lifecycle.time_scale,
            started_seconds=lifecycle.started_seconds * lifecycle.time_scale + drawn.stuck_seconds,
            outcome=TaskState.FAILURE if failed else TaskState.SUCCESS,
            requesting_user=oauth.requesting_user,
            history_days=project.config.history_days,
            subject_request_id=subject_request_id,
            status_callback_urls=callback_urls,
            vanishes_at=None if drawn.vanish_after is None else now + drawn.vanish_after,
            faults=drawn.faults,
        )
        self.tasks[task.tracking_id] = task
        return task

    def _parse_callbacks(
        self, project: Project, body: dict[str, Any]
    ) -> tuple[str | None, tuple[str, ...]]:
        subject_request_id = body.get("subject_request_id")
        if subject_request_id is not None:
            if not isinstance(subject_request_id, str) or not _UUID4.match(subject_request_id):
                raise SandboxError(400, "subject_request_id must be a lower-case UUIDv4")
            if any(
                t.subject_request_id == subject_request_id and t.project_token == project.token
                for t in self.tasks.values()
            ):
                raise SandboxError(400, "subject_request_id is already used in this project")
        urls = body.get("status_callback_urls")
        if urls is None:
            return subject_request_id, ()
        if (
            not isinstance(urls, list)
            or len(urls) > 5
            or not all(isinstance(u, str) and u.startswith("https://") for u in urls)
        ):
            raise SandboxError(400, "status_callback_urls must be a list of at most 5 HTTPS URLs")
        return subject_request_id, tuple(urls)

    def _check_scan_budget(self, project: Project) -> None:
        budget = self.config.limits.scan_budget_days
        outstanding = self.outstanding_scan_days(project)
        if budget > 0 and outstanding + project.config.history_days > budget:
            raise SandboxError(
                429,
                f"too many outstanding retrievals: {outstanding} days of scans outstanding, "
                f"a new one needs {project.config.history_days}, the limit is {budget}",
            )

    def _check_conflicts(
        self, project: Project, ids: Iterable[str], now: float, *, resend: bool = False
    ) -> None:
        """409 when any of ``ids`` is in a running (PENDING, STAGING, STARTED) deletion of the
        project (with ``resend``: in any earlier deletion of the project, whatever its state):
        the conflicting ids (sorted) and every such task holding one of them (in creation
        order, each once)."""
        wanted = set(ids)
        conflicting_ids: set[str] = set()
        conflicting_tasks: list[str] = []
        for task in self.tasks.values():  # insertion order = creation order
            if (
                task.kind is TaskKind.DELETION
                and task.project_token == project.token
                and (resend or task.state_at(now) in RUNNING_STATES)
            ):
                overlap = wanted.intersection(task.distinct_ids)
                if overlap:
                    conflicting_ids |= overlap
                    conflicting_tasks.append(task.tracking_id)
        if conflicting_ids:
            raise SandboxError(
                409,
                {
                    "conflicting_distinct_ids": sorted(conflicting_ids),
                    "conflicting_task_ids": conflicting_tasks,
                },
                fault=FaultKind.CONFLICT_ON_RESEND if resend else None,
            )

    def create_response(self, task: Task) -> dict[str, Any]:
        if self.config.responses.create_shape == "list":
            results: Any = [
                {
                    "tracking_id": task.tracking_id,
                    "status": TaskState.PENDING.value,
                    "compliance_type": task.compliance_type.value.lower(),
                    "distinct_id_count": len(task.distinct_ids),
                }
            ]
        else:
            results = {"task_id": task.tracking_id}
        return {"status": "ok", "results": results}

    def find(self, project: Project, kind: TaskKind, tracking_id: str) -> Task | None:
        task = self.tasks.get(tracking_id)
        if task is None or task.project_token != project.token or task.kind is not kind:
            return None
        return task

    def status(
        self, project: Project, kind: TaskKind, tracking_id: str, origin: str
    ) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of a status call; ``origin`` prefixes export links."""
        task = self.find(project, kind, tracking_id)
        now = self.now()
        state = task.state_at(now) if task is not None else TaskState.NOT_FOUND
        if task is None or state is TaskState.NOT_FOUND:
            if self.config.responses.not_found_status == 404:
                raise SandboxError(404, "task not found")
            results = {"status": TaskState.NOT_FOUND.value, "result": "", "distinct_ids": []}
            return 200, {"status": "ok", "results": results}
        unknown_rate = self.config.lifecycle.unknown_rate
        if unknown_rate > 0 and self._unknown_rng.random() < unknown_rate:
            state = TaskState.UNKNOWN
        result = ""
        if kind is TaskKind.RETRIEVAL and state is TaskState.SUCCESS:
            result = export.export_link(
                origin, self.signing_key, task.tracking_id, self.export_expiry(task)
            )
        body: dict[str, Any] = {
            "status": state.value,
            "result": result,
            "distinct_ids": list(task.distinct_ids),
        }
        if kind is TaskKind.DELETION:
            body.update(
                tracking_id=task.tracking_id,
                requesting_user=task.requesting_user,
                compliance_type=task.compliance_type.value.lower(),
                project_id=task.project_id,
                date_requested=_iso(task.created_at),
            )
        return 200, {"status": "ok", "results": body}

    def cancel(self, project: Project, tracking_id: str) -> int:
        """Cancel a deletion: 204 when it was still PENDING/STAGING, else SandboxError."""
        task = self.find(project, TaskKind.DELETION, tracking_id)
        now = self.now()
        state = task.state_at(now) if task is not None else TaskState.NOT_FOUND
        if task is None or state is TaskState.NOT_FOUND:
            raise SandboxError(404, "task not found")
        if state is TaskState.REVOKED:
            status = self.config.responses.cancel_revoked_status
            if status == 204:
                return 204
            raise SandboxError(status, "task is already revoked")
        if not state.cancellable:
            raise SandboxError(405, f"task can no longer be cancelled (state {state.value})")
        task.forced_state = None
        task.forced_at = None
        task.revoked_at = now
        return 204

    # --- exports ----------------------------------------------------------------------------

    def export_expiry(self, task: Task) -> int:
        finished = task.finished_at(self.now())
        assert finished is not None
        return int(finished + self.config.exports.link_ttl_seconds)

    def open_export(self, tracking_id: str, expires: str | None, signature: str | None) -> Task:
        """The retrieval a signed link points at (403 bad signature, 410 expired, 404 gone)."""
        try:
            expires_at = int(expires or "")
        except ValueError:
            raise SandboxError(403, "invalid export link") from None
        if not signature or not export.verify(self.signing_key, tracking_id, expires_at, signature):
            raise SandboxError(403, "invalid export link signature")
        if self.now() > expires_at:
            raise SandboxError(410, "export link has expired")
        task = self.tasks.get(tracking_id)
        if (
            task is None
            or task.kind is not TaskKind.RETRIEVAL
            or task.state_at(self.now()) is not TaskState.SUCCESS
        ):
            raise SandboxError(404, "export not found")
        return task

    def export_bytes(self, task: Task) -> bytes:
        project = self.projects.get(task.project_token)
        secret = project.config.api_secret if project is not None else None
        finished = task.finished_at(self.now())
        return export.build_export(
            tracking_id=task.tracking_id,
            distinct_ids=task.distinct_ids,
            compliance_type=task.compliance_type,
            disclosure_type=task.disclosure_type,
            completed_at=finished if finished is not None else self.now(),
            history_days=task.history_days,
            events_per_id=self.config.exports.events_per_id,
            password=secret.get_secret_value().encode() if secret else None,
        )

    # --- inspection and admin ---------------------------------------------------------------

    def record_call(self, **fields: Any) -> CallRecord:
        record = CallRecord(seq=len(self.calls) + 1, at=self.now(), **fields)
        self.calls.append(record)
        return record

    def force_state(self, tracking_id: str, state: TaskState, *, hold: bool = True) -> Task:
        task = self.tasks.get(tracking_id)
        if task is None:
            raise KeyError(tracking_id)
        task.force(state, self.now(), hold=hold)
        return task

    def task_view(self, task: Task) -> dict[str, Any]:
        now = self.now()
        finished = task.finished_at(now)
        return {
            "tracking_id": task.tracking_id,
            "kind": task.kind.value,
            "project_token": task.project_token,
            "project_id": task.project_id,
            "region": task.region.value,
            "state": task.state_at(now).value,
            "compliance_type": task.compliance_type.value,
            "disclosure_type": task.disclosure_type.value if task.disclosure_type else None,
            "distinct_id_count": len(task.distinct_ids),
            "distinct_ids": list(task.distinct_ids),
            "created_at": _iso(task.created_at),
            "finished_at": _iso(finished) if finished is not None else None,
            "planned_outcome": task.outcome.value,
            "forced_state": task.forced_state.value if task.forced_state else None,
            "subject_request_id": task.subject_request_id,
            "faults": [f.value for f in task.faults],
        }

    def ids_report(self, project_token: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Per project token, per distinct id: how many tasks covered it and how they ended."""
        now = self.now()
        report: dict[str, dict[str, dict[str, Any]]] = {}
        for task in self.tasks.values():
            if project_token is not None and task.project_token != project_token:
                continue
            state = task.state_at(now)
            per_id = report.setdefault(task.project_token, {})
            for distinct_id in task.distinct_ids:
                entry = per_id.setdefault(
                    distinct_id,
                    {
                        "deletion_tasks": 0,
                        "deletions_succeeded": 0,
                        "deletion_states": {},
                        "retrieval_tasks": 0,
                        "retrievals_succeeded": 0,
                    },
                )
                if task.kind is TaskKind.DELETION:
                    entry["deletion_tasks"] += 1
                    entry["deletions_succeeded"] += state is TaskState.SUCCESS
                    states = entry["deletion_states"]
                    states[state.value] = states.get(state.value, 0) + 1
                else:
                    entry["retrieval_tasks"] += 1
                    entry["retrievals_succeeded"] += state is TaskState.SUCCESS
        return report

    def project_view(self, project: Project) -> dict[str, Any]:
        cfg = project.config
        return {
            "token": cfg.token,
            "region": cfg.region.value,
            "project_id": project.project_id,
            "name": cfg.name,
            "id_limit": cfg.id_limit,
            "history_days": cfg.history_days,
            "rate_limit_per_s": self.rate_limit(project),
            "conflict_409": self.conflict_409(project),
            "has_api_secret": cfg.api_secret is not None,
            "oauth_tokens": [
                {
                    "fingerprint": token_fingerprint(t.token.get_secret_value()),
                    "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                    "requesting_user": t.requesting_user,
                }
                for t in cfg.oauth_tokens
            ],
            "outstanding_scan_days": self.outstanding_scan_days(project),
            "faults": (
                self.project_faults[cfg.token].snapshot()
                if cfg.token in self.project_faults
                else None
            ),
        }
