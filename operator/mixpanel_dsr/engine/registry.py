"""The Engine: what kopf hands in, what is written back to status, and Events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from mixpanel_dsr import metrics
from mixpanel_dsr.api.models import (
    DataSubjectRequest,
    DataSubjectRequestStatus,
    MixpanelProject,
    Phase,
)
from mixpanel_dsr.conditions import get_condition
from mixpanel_dsr.deadlines import deadline
from mixpanel_dsr.engine.state import Project, ProjectKey, Request, Task, project_label
from mixpanel_dsr.kube import Kube, SecretProblem
from mixpanel_dsr.planning import InvalidIdsError, ids_digest, parse_id_list
from mixpanel_dsr.progress import IN_FLIGHT, Blocker, compose_status
from mixpanel_dsr.settings import Settings

log = logging.getLogger(__name__)

FINISHED = {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str | None) -> datetime:
    if not value:
        return utcnow()
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def project_key_of(spec_ref_kind: str, namespace: str, name: str) -> ProjectKey:
    if spec_ref_kind == "ClusterMixpanelProject":
        return ("ClusterMixpanelProject", None, name)
    return ("MixpanelProject", namespace, name)


class Engine:
    """Holds every request and project the operator serves and runs one worker per project."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.requests: dict[str, Request] = {}
        self.projects: dict[ProjectKey, Project] = {}
        #: Batches whose create call this process has in flight (others are lost on restart).
        self.inflight_batches: set[str] = set()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            event_hooks={"response": [self._count_response]},
        )
        self._housekeeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="housekeeping")

    async def stop(self) -> None:
        tasks = [p.worker for p in self.projects.values() if p.worker]
        if self._housekeeper:
            tasks.append(self._housekeeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()

    async def _count_response(self, response: httpx.Response) -> None:
        request = response.request
        endpoint = metrics.endpoint_of(request.method, request.url.path)
        metrics.MIXPANEL_CALLS.labels(endpoint, str(response.status_code)).inc()
        if response.status_code == 429:
            token = request.url.params.get("token", "")
            label = next(
                (
                    project_label(p.key)
                    for p in self.projects.values()
                    if p.spec and p.spec.token == token
                ),
                "unknown",
            )
            metrics.MIXPANEL_RATE_LIMITED.labels(label).inc()

    # ------------------------------------------------------------------ projects

    def project(self, key: ProjectKey) -> Project:
        """The project entry for ``key``, created (with its worker) on first use."""
        project = self.projects.get(key)
        if project is None:
            project = self.projects[key] = Project(key=key)
            from mixpanel_dsr.engine.worker import run_worker

            project.worker = asyncio.create_task(
                run_worker(self, project), name=f"project {project_label(key)}"
            )
        return project

    async def upsert_project(self, body: dict[str, Any]) -> None:
        kind = body["kind"]
        meta = body["metadata"]
        key: ProjectKey = (kind, meta.get("namespace"), meta["name"])
        parsed = MixpanelProject.model_validate(body)
        project = self.project(key)
        changed = project.spec != parsed.spec
        project.body = body
        project.spec = parsed.spec
        project.looked_up = True
        if changed:
            project.next_verify = 0.0
            project.client = None
        project.wake.set()

    async def remove_project(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key: ProjectKey = (body["kind"], meta.get("namespace"), meta["name"])
        project = self.projects.get(key)
        if project is None:
            return
        project.body = None
        project.spec = None
        project.ready = False
        project.client = None
        project.wake.set()

    def project_blocker(self, request: Request) -> Blocker | None:
        """Why the request's project keeps it from going on, if it does."""
        project = self.projects.get(request.project)
        if project is None or not project.looked_up:
            return None
        kind, namespace, name = request.project
        if project.spec is None:
            where = f" in namespace {namespace}" if namespace else ""
            return Blocker("ProjectNotFound", f"{kind} {name} not found{where}")
        if not project.ready and project.problem:
            return Blocker("ProjectNotReady", f"{kind} {name}: {project.problem.message}")
        return None

    def requests_of(self, project: Project) -> list[Request]:
        return [r for r in self.requests.values() if r.project == project.key]

    # ------------------------------------------------------------------ requests

    async def upsert_request(self, body: dict[str, Any]) -> None:
        """A request was created, changed, or seen again after a restart."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        parsed = DataSubjectRequest.model_validate(body)
        existing = self.requests.get(key)
        if existing and existing.uid == meta["uid"]:
            async with existing.lock:
                was_dry = existing.spec.dry_run
                existing.spec = parsed.spec
                existing.generation = meta.get("generation")
                if was_dry and not parsed.spec.dry_run:
                    existing.records = [r for r in existing.records if r.state != "Planned"]
                    existing.waiting_since = self.clock()
                await self.commit(existing)
            self.project(existing.project).wake.set()
            return
        status = parsed.status or DataSubjectRequestStatus()
        request = Request(
            key=key,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=meta.get("generation"),
            created=_parse_time(meta.get("creationTimestamp")),
            spec=parsed.spec,
            status=status,
            project=project_key_of(
                parsed.spec.project_ref.kind, meta["namespace"], parsed.spec.project_ref.name
            ),
            records=list(status.tasks or []),
        )
        self.requests[key] = request
        project = self.project(request.project)
        async with request.lock:
            lost = self._recover_lost_creates(request)
            await self.resolve_ids(request)
            if request.ids is not None:
                self._track_tasks(project, request)
                request.waiting_since = self.clock()
            await self.commit(request)
        if lost:
            await self.event(
                request,
                "PossibleDuplicate",
                f"the operator stopped while creating {lost} Mixpanel task(s) for this request; "
                "their ids are submitted again and Mixpanel may hold a duplicate task",
                warning=True,
            )
        project.wake.set()

    def _recover_lost_creates(self, request: Request) -> int:
        """Submitting records of a create no process has in flight: the answer was lost."""
        lost = 0
        for n, record in enumerate(request.records):
            if record.state == "Submitting" and record.batch not in self.inflight_batches:
                request.records[n] = record.but(
                    state="Lost",
                    ambiguous=True,
                    message="the create call's answer was lost; ids re-queued",
                )
                lost += 1
        return lost

    def _track_tasks(self, project: Project, request: Request) -> None:
        """Register the request's in-flight Mixpanel tasks for polling (soon)."""
        now = self.clock()
        for record in request.records:
            if record.tracking_id and record.state in IN_FLIGHT:
                task = project.tasks.get(record.tracking_id)
                if task is None:
                    task = project.tasks[record.tracking_id] = Task(
                        tracking_id=record.tracking_id,
                        kind="deletion" if request.is_deletion else "retrieval",
                        batch=record.batch,
                        members=[],
                        state=str(record.state),
                        next_check=now,
                        interval=self.settings.poll_initial,
                    )
                member = (request.key, record.start, record.end)
                if member not in task.members:
                    task.members.append(member)

    async def resolve_ids(self, request: Request) -> None:
        """The request's distinct ids, inline or from its Secret; a blocker if unreadable."""
        if request.ids is not None:
            return
        spec = request.spec
        if spec.distinct_ids is not None:
            ids = list(dict.fromkeys(spec.distinct_ids))
        else:
            assert spec.distinct_ids_from is not None
            ref = spec.distinct_ids_from.secret_key_ref
            try:
                text = await self.kube.read_secret_key(request.namespace, ref.name, ref.key)
                ids = parse_id_list(text)
            except SecretProblem as err:
                request.blocker = Blocker(f"Ids{err.reason}", f"distinctIdsFrom: {err}")
                return
            except InvalidIdsError as err:
                request.blocker = Blocker("InvalidIds", f"Secret {ref.name} key {ref.key}: {err}")
                return
        digest = ids_digest(ids)
        if request.status.ids_digest and request.status.ids_digest != digest:
            request.blocker = Blocker(
                "IdsChanged",
                "the distinct ids differ from those first read (the Secret changed after the "
                "request was accepted); create a new request instead",
            )
            return
        request.ids = ids
        request.status = request.status.model_copy(update={"ids_digest": digest})
        if request.blocker and request.blocker.reason.startswith(("Ids", "InvalidIds")):
            request.blocker = None

    def forget(self, key: str) -> None:
        request = self.requests.pop(key, None)
        if request is None:
            return
        project = self.projects.get(request.project)
        if project:
            for task in list(project.tasks.values()):
                task.members = [m for m in task.members if m[0] != key]
                if not task.members:
                    project.tasks.pop(task.tracking_id, None)

    # ------------------------------------------------------------------ status

    def deadline_of(self, request: Request) -> datetime:
        return deadline(request.compliance, request.received)

    async def commit(self, request: Request) -> None:
        """Recompute the request's status and write it if it changed; Events on transitions.

        Callers hold ``request.lock``.
        """
        before = request.status
        total = len(request.ids) if request.ids is not None else (before.ids_total or 0)
        after = compose_status(
            before,
            generation=request.generation,
            total=total,
            records=request.records,
            max_attempts=self.settings.max_attempts,
            dry_run=request.spec.dry_run,
            deadline=self.deadline_of(request),
            now=utcnow(),
            at_risk_margin=self.settings.deadline_margin,
            blocker=request.blocker or self.project_blocker(request),
        )
        after = after.model_copy(update={"ids_digest": before.ids_digest})
        if after.to_wire() == before.to_wire():
            return
        request.status = after
        written = await self.kube.patch_status(
            "DataSubjectRequest", request.namespace, request.name, after.to_wire()
        )
        if not written:
            return
        await self._announce(request, before, after)

    async def _announce(
        self, request: Request, before: DataSubjectRequestStatus, after: DataSubjectRequestStatus
    ) -> None:
        if after.phase != before.phase and after.phase is not None:
            ready = get_condition(after.conditions, "Ready")
            message = ready.message if ready else after.phase.value
            warning = after.phase in (Phase.FAILED, Phase.CANCELLED)
            await self.event(request, after.phase.value, message, warning=warning)
            log.info(
                "request %s: %s -> %s (%s ids)",
                request.key, before.phase, after.phase.value, after.ids_total,
            )  # fmt: skip
        stalled_before = get_condition(before.conditions, "Stalled")
        stalled = get_condition(after.conditions, "Stalled")
        if stalled and (not stalled_before or stalled_before.reason != stalled.reason):
            await self.event(request, stalled.reason, stalled.message, warning=True)
        risk_before = get_condition(before.conditions, "DeadlineAtRisk")
        risk = get_condition(after.conditions, "DeadlineAtRisk")
        if (
            risk
            and risk.status == "True"
            and (not risk_before or risk_before.reason != risk.reason)
        ):
            await self.event(request, risk.reason, risk.message, warning=True)

    async def event(
        self, request: Request, reason: str, message: str, *, warning: bool = False
    ) -> None:
        await self.kube.event(request.ref(), reason, message, warning=warning)

    # ------------------------------------------------------------------ deletion

    async def finalize(self, body: dict[str, Any]) -> None:
        """A request is being deleted: cancel what can still be cancelled, within a bound."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        request = self.requests.get(key)
        if request is None or request.uid != meta["uid"]:
            return
        request.deleting = True
        from mixpanel_dsr.engine.worker import cancel_request

        try:
            await asyncio.wait_for(
                cancel_request(self, request), timeout=self.settings.finalizer_timeout
            )
        except TimeoutError:
            await self.event(
                request,
                "FinalizerTimedOut",
                "could not cancel the Mixpanel tasks within "
                f"{self.settings.finalizer_timeout:.0f}s; released without cancelling "
                "(Mixpanel may still carry them out)",
                warning=True,
            )
        finally:
            self.forget(key)

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        while True:
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(max(self.settings.tick, 5.0))

    async def _refresh(self) -> None:
        """Metrics, deadline conditions that move with time, and TTL removal."""
        now = utcnow()
        phases: dict[str, int] = {p.value: 0 for p in Phase}
        risk = {"near": 0, "passed": 0}
        oldest = 0.0
        for request in list(self.requests.values()):
            phase = request.status.phase or Phase.PENDING
            phases[phase.value] += 1
            if phase not in FINISHED:
                oldest = max(oldest, (now - request.received).total_seconds())
                due = self.deadline_of(request)
                if now >= due:
                    risk["passed"] += 1
                elif now >= due - self.settings.deadline_margin:
                    risk["near"] += 1
                async with request.lock:
                    await self.commit(request)
            await self._expire(request, now)
        for phase_name, count in phases.items():
            metrics.REQUESTS.labels(phase_name).set(count)
        for state, count in risk.items():
            metrics.REQUESTS_AT_RISK.labels(state).set(count)
        metrics.OLDEST_PENDING.set(oldest)

    async def _expire(self, request: Request, now: datetime) -> None:
        ttl = request.spec.ttl_seconds_after_finished
        done = request.status.completion_time
        if ttl is None or done is None or request.status.phase not in FINISHED:
            return
        if (now - done).total_seconds() < ttl:
            return
        log.info("request %s: ttlSecondsAfterFinished passed, deleting it", request.key)
        if request.status.result_secret_ref:
            await self.kube.delete_secret(request.namespace, request.status.result_secret_ref.name)
        await self.kube.delete_request(request.namespace, request.name)
