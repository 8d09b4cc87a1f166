"""In-memory Kubernetes and Mixpanel for driving the real engine deterministically.

Every call either side makes is one *step*; ``Steps.crash_after`` makes the process "die"
(raise :class:`Crash`, which no engine code catches) right after step k took effect, so a
test can kill the engine after every step of a scenario and restart it from what was
persisted. The same engine code runs against the real API server and the sandbox in
tests/e2e.
"""

from __future__ import annotations

import copy
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from mixpanel_dsr.engine import Engine
from mixpanel_dsr.engine.state import SETTLED, Project
from mixpanel_dsr.engine.worker import step
from mixpanel_dsr.kube import SecretProblem
from mixpanel_dsr.mixpanel.errors import ConflictError, NotCancellableError, NotFoundError
from mixpanel_dsr.mixpanel.responses import CreatedTask, TaskStatus
from mixpanel_dsr.mixpanel.types import ComplianceType, DisclosureType, TaskState
from mixpanel_dsr.settings import Settings


class Crash(BaseException):
    """The process died here."""


@dataclass
class Steps:
    count: int = 0
    crash_after: int | None = None
    log: list[str] = field(default_factory=list)

    def tick(self, what: str) -> None:
        self.count += 1
        self.log.append(what)
        if self.crash_after is not None and self.count >= self.crash_after:
            self.crash_after = None
            raise Crash(f"killed after step {self.count}: {what}")


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.mono - 1000.0)

    def advance(self, seconds: float) -> None:
        self.mono += seconds


def _not_found() -> ApiException:
    return ApiException(status=404, reason="Not Found")


class MemoryKube:
    """The objects the engine reads and writes, kept across "restarts" of the engine."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}
        self.tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.projects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.receipts: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0
        #: Every phase each request's status showed, in order.
        self.phases: dict[str, list[str]] = {}

    # -- what a user does
    def add_request(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uuid.uuid4().hex,
                "generation": 1,
                "creationTimestamp": "2026-11-30T12:00:00Z",
            },
            "spec": spec,
        }
        self.requests[(namespace, name)] = body
        return body

    def remove_request(self, namespace: str, name: str) -> dict[str, Any]:
        return self.requests.pop((namespace, name))

    def phase(self, namespace: str, name: str) -> str | None:
        phase: str | None = self.requests[(namespace, name)].get("status", {}).get("phase")
        return phase

    # -- the engine's calls
    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        self.steps.tick(f"read secret {name}")
        data = self.secrets.get((namespace, name))
        if data is None:
            raise SecretProblem("SecretNotFound", f"Secret {namespace}/{name} not found")
        if key not in data:
            raise SecretProblem("SecretKeyNotFound", f"no key {key!r}")
        return data[key]

    async def put_owned_secret(
        self, owner: dict[str, Any], name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None:
        self.writes += 1
        self.secrets.setdefault((owner["metadata"]["namespace"], name), {}).update(data)
        self.steps.tick(f"put secret {name}")

    async def delete_secret(self, namespace: str, name: str) -> None:
        self.secrets.pop((namespace, name), None)
        self.steps.tick(f"delete secret {name}")

    async def get_project(
        self, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        self.steps.tick(f"get project {name}")
        return copy.deepcopy(self.projects.get((kind, namespace, name)))

    async def policy_bound(self, name: str) -> bool:
        self.steps.tick(f"get policy binding {name}")
        return True

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        self.steps.tick(f"get namespace {name}")
        return {"kubernetes.io/metadata.name": name}

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.steps.tick(f"get request {name}")
        return copy.deepcopy(self.requests.get((namespace, name)))

    async def patch_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> bool:
        self.writes += 1
        found = self._patch_status(kind, namespace, name, status)
        self.steps.tick(f"patch {kind} {name} status")
        return found

    def _patch_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> bool:
        if kind == "DataSubjectRequest":
            store = self.requests
        elif kind == "MixpanelTask":
            store = self.tasks
        else:
            for key, body in self.projects.items():
                if key[0] == kind and key[2] == name:
                    body["status"] = copy.deepcopy(status)
                    return True
            return False
        assert namespace is not None
        body = store.get((namespace, name))
        if body is None:
            return False
        body["status"] = copy.deepcopy(status)
        if kind == "DataSubjectRequest" and status.get("phase"):
            seen = self.phases.setdefault(name, [])
            if not seen or seen[-1] != status["phase"]:
                seen.append(status["phase"])
        return True

    async def list_tasks(self, namespace: str, kind: str, project: str) -> list[dict[str, Any]]:
        self.steps.tick(f"list tasks {project}")
        return [
            copy.deepcopy(t)
            for (ns, _), t in self.tasks.items()
            if ns == namespace and t["spec"]["projectRef"]["name"] == project
        ]

    async def create_task(
        self, namespace: str, name: str, kind: str, project: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes += 1
        assert (namespace, name) not in self.tasks
        body = {
            "metadata": {"name": name, "namespace": namespace, "uid": uuid.uuid4().hex},
            "spec": copy.deepcopy(spec),
        }
        self.tasks[(namespace, name)] = body
        self.steps.tick(f"create task {name}")
        return copy.deepcopy(body)

    async def delete_task(self, namespace: str, name: str) -> None:
        self.tasks.pop((namespace, name), None)
        self.steps.tick(f"delete task {name}")

    async def delete_request(self, namespace: str, name: str) -> None:
        self.requests.pop((namespace, name), None)
        self.steps.tick(f"delete request {name}")

    async def create_receipt(
        self, namespace: str, name: str, labels: dict[str, str], spec: dict[str, Any]
    ) -> bool:
        if (namespace, name) in self.receipts:
            self.steps.tick(f"receipt {name} exists")
            return False
        self.writes += 1
        self.receipts[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": copy.deepcopy(spec),
        }
        self.steps.tick(f"create receipt {name}")
        return True

    async def list_receipts(
        self, namespace: str | None, continue_token: str | None = None
    ) -> tuple[list[Any], str]:
        found = [r for (ns, _), r in self.receipts.items() if namespace in (None, ns)]
        return copy.deepcopy(found), ""

    async def delete_receipt(self, namespace: str, name: str) -> None:
        self.receipts.pop((namespace, name), None)

    async def list_requests(
        self,
        namespace: str | None,
        field_selector: str,
        continue_token: str | None = None,
        *,
        limit: int = 500,
    ) -> tuple[list[dict[str, Any]], str]:
        """The API server's field selection on status.phase ("=" and "!=", joined by ","),
        in pages of ``limit``. A read: not a step a kill is aimed after."""
        rules = [
            (path.rstrip("!"), value, path.endswith("!"))
            for path, value in (part.split("=", 1) for part in field_selector.split(","))
        ]
        found = []
        for (ns, _), body in sorted(self.requests.items()):
            phase = (body.get("status") or {}).get("phase", "")
            if namespace not in (None, ns):
                continue
            if all((phase != value) == negated for _, value, negated in rules):
                found.append(body)
        start = int(continue_token or 0)
        page = found[start : start + limit]
        following = start + limit if start + limit < len(found) else 0
        return copy.deepcopy(page), str(following or "")

    async def event(
        self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events.append((obj["metadata"]["name"], reason, message))
        self.steps.tick(f"event {reason}")


@dataclass
class FakeTask:
    tracking_id: str
    kind: str
    ids: tuple[str, ...]
    state: TaskState = TaskState.PENDING


class MemoryMixpanel:
    """Mixpanel as the fact sheet describes it: each status check moves a task one state on
    (PENDING, STAGING, STARTED, then SUCCESS, or FAILURE when it holds a bad id)."""

    def __init__(self, steps: Steps, *, bad: Sequence[str] = (), conflicts: bool = False) -> None:
        self.steps = steps
        self.bad = set(bad)
        self.conflicts = conflicts
        self.tasks: dict[str, FakeTask] = {}
        #: Tasks that stay where they are (Mixpanel takes days; a test decides when).
        self.held: set[str] = set()
        #: Every accepted create's ids, in order.
        self.creates: list[tuple[str, ...]] = []
        self.refused: list[tuple[str, ...]] = []
        self._ids = itertools.count(1)
        #: Runs at every call, while it is "in flight" (kopf events arrive meanwhile).
        self.during_call: Callable[[], Awaitable[None]] | None = None

    async def _in_flight(self) -> None:
        if self.during_call is not None:
            await self.during_call()

    def _create(self, kind: str, ids: Sequence[str]) -> CreatedTask:
        if self.conflicts and kind == "deletion":
            running = [
                t for t in self.tasks.values()
                if t.kind == "deletion" and t.state in
                (TaskState.PENDING, TaskState.STAGING, TaskState.STARTED)
            ]  # fmt: skip
            hit = sorted({i for t in running for i in t.ids} & set(ids))
            if hit:
                self.refused.append(tuple(ids))
                self.steps.tick(f"mixpanel create refused {kind} ({len(ids)} ids)")
                raise ConflictError(
                    "409",
                    conflicting_distinct_ids=hit,
                    conflicting_task_ids=[t.tracking_id for t in running if set(t.ids) & set(hit)],
                )
        tracking_id = f"mp-{next(self._ids)}"
        self.tasks[tracking_id] = FakeTask(tracking_id, kind, tuple(ids))
        self.creates.append(tuple(ids))
        self.steps.tick(f"mixpanel create {kind} ({len(ids)} ids)")
        return CreatedTask(tracking_id=tracking_id, kind=kind)  # type: ignore[arg-type]

    def start(self, ids: Sequence[str]) -> str:
        """A deletion someone else created (for 409 scenarios)."""
        tracking_id = f"mp-{next(self._ids)}"
        self.tasks[tracking_id] = FakeTask(tracking_id, "deletion", tuple(ids))
        return tracking_id

    async def create_deletion(
        self, distinct_ids: Sequence[str], compliance_type: ComplianceType | str = "GDPR"
    ) -> CreatedTask:
        await self._in_flight()
        return self._create("deletion", distinct_ids)

    async def create_retrieval(
        self,
        distinct_ids: Sequence[str],
        compliance_type: ComplianceType | str = "GDPR",
        disclosure_type: DisclosureType | str | None = None,
    ) -> CreatedTask:
        await self._in_flight()
        return self._create("retrieval", distinct_ids)

    def _status(self, tracking_id: str) -> TaskStatus:
        task = self.tasks.get(tracking_id)
        self.steps.tick(f"mixpanel status {tracking_id}")
        if task is None:
            raise NotFoundError("no such task", status_code=404)
        order = [TaskState.PENDING, TaskState.STAGING, TaskState.STARTED]
        if task.state in order and tracking_id not in self.held:
            n = order.index(task.state)
            if n + 1 < len(order):
                task.state = order[n + 1]
            else:
                task.state = TaskState.FAILURE if self.bad & set(task.ids) else TaskState.SUCCESS
        link = None
        if task.kind == "retrieval" and task.state is TaskState.SUCCESS:
            link = SecretStr(f"https://export.example/{tracking_id}?signature=x")
        return TaskStatus(
            state=task.state, raw_state=task.state.value, tracking_id=tracking_id, result_link=link
        )

    async def deletion_status(self, tracking_id: str) -> TaskStatus:
        await self._in_flight()
        return self._status(tracking_id)

    async def retrieval_status(self, tracking_id: str) -> TaskStatus:
        await self._in_flight()
        return self._status(tracking_id)

    async def cancel_deletion(self, tracking_id: str) -> None:
        task = self.tasks[tracking_id]
        if task.state not in (TaskState.PENDING, TaskState.STAGING):
            self.steps.tick(f"mixpanel cancel refused {tracking_id}")
            raise NotCancellableError("started", status_code=405)
        task.state = TaskState.REVOKED
        self.steps.tick(f"mixpanel cancel {tracking_id}")

    async def verify_credentials(self) -> None:
        self.steps.tick("mixpanel verify")

    def succeeded_ids(self) -> set[str]:
        return {i for t in self.tasks.values() if t.state is TaskState.SUCCESS for i in t.ids}


NS = "team"
PROJECT = ("MixpanelProject", NS, "proj")

FAST = Settings(
    packing_quiet=2.0,
    packing_max_wait=10.0,
    poll_initial=1.0,
    poll_max=3.0,
    poll_factor=2.0,
    retry_interval=2.0,
    create_retry_max=8.0,
    tick=1.0,
    orphan_grace=5.0,
)


class World:
    """The API server's objects and Mixpanel, which outlive any one engine process."""

    def __init__(self, *, bad: Sequence[str] = (), conflicts: bool = False, limit: int = 2000):
        random.seed(0)  # polling jitter: the same steps in every run
        self.steps = Steps()
        self.clock = Clock()
        self.kube = MemoryKube(self.steps)
        self.mixpanel = MemoryMixpanel(self.steps, bad=bad, conflicts=conflicts)
        self.kube.secrets[(NS, "gdpr")] = {"token": "oauth"}
        self.kube.projects[PROJECT] = {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "MixpanelProject",
            "metadata": {"name": "proj", "namespace": NS, "generation": 1, "uid": "p"},
            "spec": {
                "token": "tok",
                "credentialsSecretRef": {"name": "gdpr"},
                "maxIdsPerRequest": limit,
            },
        }
        self.engine: Engine | None = None
        self.restarts = 0
        #: Requests kopf has not listed yet after the last restart.
        self.late: list[dict[str, Any]] = []

    def deletion(self, name: str, ids: list[str], **spec: Any) -> dict[str, Any]:
        return self.kube.add_request(
            NS,
            name,
            {"projectRef": {"name": "proj"}, "type": "Deletion", "distinctIds": ids, **spec},
        )

    async def boot(self, *, listed: int | None = None) -> Engine:
        """A new operator process: kopf lists the projects and requests, as on a restart.
        Some requests arrive only while the engine's first Mixpanel calls are in flight
        (after a restart half of them, or all but ``listed``)."""
        engine = Engine(FAST, self.kube, clock=self.clock.monotonic, wall=self.clock.wall)
        engine.key = b"installation-key"
        self.engine = engine
        self.restarts += 1
        for body in self.kube.projects.values():
            await engine.upsert_project(copy.deepcopy(body))
        # As handlers.py sets it up: kopf's watch leaves settled requests out (a field
        # selector on status.phase); the engine lists those itself.
        engine.watch_settled = False
        await engine.list_settled()
        bodies = [
            b
            for b in self.kube.requests.values()
            if (b.get("status") or {}).get("phase") not in {p.value for p in SETTLED}
        ]
        self.late = bodies[len(bodies) // 2 :] if self.restarts > 1 else []
        if listed is not None:
            self.late = bodies[listed:]
        for body in bodies[: len(bodies) - len(self.late)]:
            await engine.upsert_request(copy.deepcopy(body))
        self.mixpanel.during_call = self.deliver_late
        project = engine.projects[PROJECT]
        project.client = self.mixpanel  # type: ignore[assignment]
        return engine

    async def deliver_late(self) -> None:
        """kopf lists one more request (after a restart, while the engine already works)."""
        if self.late and self.engine is not None:
            body = self.late.pop(0)
            if (body["metadata"]["namespace"], body["metadata"]["name"]) in self.kube.requests:
                await self.engine.upsert_request(copy.deepcopy(body))

    def project(self) -> Project:
        assert self.engine is not None
        return self.engine.projects[PROJECT]

    async def deliver(self, body: dict[str, Any]) -> None:
        """kopf hands a new or changed object to the running engine."""
        assert self.engine is not None
        await self.engine.upsert_request(copy.deepcopy(body))
        self.project().client = self.mixpanel  # type: ignore[assignment]

    async def run(self, seconds: float = 600.0, *, until_finished: bool = True) -> None:
        """Step the engine second by second (crashes propagate)."""
        assert self.engine is not None
        for _ in range(int(seconds)):
            project = self.project()
            project.client = self.mixpanel  # type: ignore[assignment]
            await self.deliver_late()
            project.wake.clear()  # as run_worker does before each step
            await step(self.engine, project)
            self.clock.advance(1.0)
            if until_finished and self.all_finished():
                return

    def all_finished(self) -> bool:
        return all(
            body.get("status", {}).get("phase") in ("Succeeded", "Failed", "Cancelled")
            for body in self.kube.requests.values()
        )

    def ids_sent_more_than_once(self) -> int:
        seen: dict[str, int] = {}
        for ids in self.mixpanel.creates:
            for i in ids:
                seen[i] = seen.get(i, 0) + 1
        return sum(1 for n in seen.values() if n > 1)
