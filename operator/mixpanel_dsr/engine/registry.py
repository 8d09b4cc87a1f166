"""The Engine: what kopf hands in, request status derived from the ledger, and Events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx

from mixpanel_dsr import memory, metrics
from mixpanel_dsr.api import GROUP
from mixpanel_dsr.api.models import (
    NEVER_COPIED,
    ApprovalRecord,
    ClusterMixpanelProject,
    DataSubjectRequest,
    DataSubjectRequestStatus,
    MixpanelProject,
    NotificationEvent,
    Phase,
    RetryRecord,
    TaskPhase,
)
from mixpanel_dsr.conditions import get_condition
from mixpanel_dsr.deadlines import deadline
from mixpanel_dsr.engine.export_links import ExportLinks
from mixpanel_dsr.engine.outbox import Outbox
from mixpanel_dsr.engine.ports import KubePort
from mixpanel_dsr.engine.receipts import issue as issue_receipt
from mixpanel_dsr.engine.receipts import sweep as sweep_receipts
from mixpanel_dsr.engine.state import (
    FINISHED,
    SETTLED,
    Finished,
    Project,
    ProjectKey,
    Request,
    project_label,
)
from mixpanel_dsr.kube import SecretProblem
from mixpanel_dsr.ledger import Coverage, Policy, Waiting, cover, plan
from mixpanel_dsr.mixpanel.callbacks import Callback, RequestStatus
from mixpanel_dsr.notifications import build as build_notification
from mixpanel_dsr.planning import InvalidIdsError, keyed_digest, parse_id_list
from mixpanel_dsr.progress import AWAITING_APPROVAL, Blocker, compose_status
from mixpanel_dsr.receipts import copied, receipt_name
from mixpanel_dsr.settings import Settings

log = logging.getLogger(__name__)

#: A new value of this annotation retries a Failed request's failed ids (kubectl dsr retry).
RETRY_ANNOTATION = f"{GROUP}/retry"

Worker = Callable[["Engine", Project], Coroutine[Any, Any, None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str | None) -> datetime:
    if not value:
        return utcnow()
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def finished_of(body: dict[str, Any]) -> Finished:
    """What the engine keeps of a finished request, read straight from the object (a listing
    of tens of thousands is not worth a model validation each)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    completed = status.get("completionTime")
    secret = (status.get("resultSecretRef") or {}).get("name")
    return Finished(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        phase=Phase(status["phase"]),
        completion_time=_parse_time(completed) if completed else None,
        ttl=spec.get("ttlSecondsAfterFinished"),
        result_secret=secret,
        retried=(status.get("lastRetry") or {}).get("token"),
    )


def project_key_of(spec_ref_kind: str, namespace: str, name: str) -> ProjectKey:
    if spec_ref_kind == "ClusterMixpanelProject":
        return ("ClusterMixpanelProject", None, name)
    return ("MixpanelProject", namespace, name)


#: The task phases a status callback's request_status agrees with (no check needed).
CALLBACK_PHASES: dict[RequestStatus, frozenset[TaskPhase]] = {
    RequestStatus.PENDING: frozenset({TaskPhase.SUBMITTED}),
    RequestStatus.IN_PROGRESS: frozenset({TaskPhase.STARTED}),
    RequestStatus.COMPLETED: frozenset({TaskPhase.SUCCEEDED}),
    RequestStatus.CANCELLED: frozenset({TaskPhase.FAILED, TaskPhase.REVOKED}),
}
#: Annotations longer than this are not kept in memory (nor copied into receipts).
MAX_KEPT_ANNOTATION = 1024
#: How often receipts past their retention are looked for.
RECEIPT_SWEEP_SECONDS = 3600.0
#: How often the settled requests are listed again (kopf's watch does not deliver them):
#: a settled request deleted by hand, or a TTL changed on one, is seen within this.
SETTLED_RELIST_SECONDS = 600.0
#: Reads of a request that left the watch before it is left as it is.
OUT_OF_WATCH_READS = 4
#: Requests retired since memory was last given back that make it worth doing again.
GIVE_BACK_AFTER = 500
GIVE_BACK_EVERY = 30.0


def _metadata_maps(meta: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A request's labels and its small annotations (kubectl's copy of the manifest,
    which can hold thousands of inline ids, is left out)."""
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if len(v) <= MAX_KEPT_ANNOTATION and k not in NEVER_COPIED
    }
    return dict(meta.get("labels") or {}), annotations


def _carried(status: DataSubjectRequestStatus) -> Coverage:
    """What the status last written says, while the ledger cannot say more."""
    total, done, failed = status.ids_total or 0, status.ids_done or 0, status.ids_failed or 0
    return Coverage(
        total=total,
        done=done,
        failed=failed,
        in_flight=max(total - done - failed, 0) if status.tasks else 0,
        references=list(status.tasks or []),
    )


class Engine:
    """Holds the requests and projects the operator serves; one worker per project drives
    them (see :mod:`.worker`). The engine is the only writer of their status and of the
    MixpanelTask ledger."""

    def __init__(
        self,
        settings: Settings,
        kube: KubePort,
        *,
        worker: Worker | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.wall = wall
        self.policy = Policy(
            max_attempts=settings.max_attempts,
            retry_base=settings.retry_interval,
            retry_max=max(settings.retry_interval, settings.create_retry_max),
        )
        self.requests: dict[str, Request] = {}
        self.finished: dict[str, Finished] = {}
        self.projects: dict[ProjectKey, Project] = {}
        #: Tasks whose create call this process has in flight.
        self.inflight: set[str] = set()
        #: The installation's key for digests of ids (set at start-up).
        self.key: bytes = b""
        #: Monotonic time kopf last handed in a request this process did not know (after a
        #: start: how far its listing has come; orphan look-ups wait for it to go quiet).
        #: None until the first: parsing a listing of 11,000 requests can take longer than
        #: the grace, and nothing delivered yet is not a quiet listing.
        self.last_new_request: float | None = None
        #: Namespace -> (its labels or None when gone, monotonic time read).
        self.namespace_labels: dict[str, tuple[dict[str, str] | None, float]] = {}
        #: Whether the settled requests (Succeeded, Cancelled) have been listed once: kopf's
        #: watch leaves them out (``watch_settled`` False), so until then the engine does not
        #: know them. Monotonic time of the last listing.
        self.settled_listed_at: float | None = None
        #: Whether kopf's watch delivers settled requests too (no field selector: an API
        #: server without selectable fields on DataSubjectRequest); then no listing is needed.
        self.watch_settled = True
        #: Requests retired since memory was last given back to the operating system.
        self.retired_since_give_back = 0
        self.gave_back_at = float("-inf")
        self._worker = worker
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            follow_redirects=False,
            event_hooks={"response": [self._count_response]},
        )
        self._housekeeper: asyncio.Task[None] | None = None
        #: subject_request_id -> (project, MixpanelTask name), for status callbacks.
        self.subjects: dict[str, tuple[ProjectKey, str]] = {}
        self.outbox = Outbox(
            kube, allowed_urls=settings.allowed_webhook_urls, clock=clock, wall=wall
        )
        self._postman: asyncio.Task[None] | None = None
        self.export_links = ExportLinks(settings.export_link_ttl, settings.export_link_warning)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="housekeeping")
        self._postman = asyncio.create_task(self.outbox.run(), name="notifications")

    async def stop(self) -> None:
        tasks = [p.worker for p in self.projects.values() if p.worker]
        if self._housekeeper:
            tasks.append(self._housekeeper)
        if self._postman:
            tasks.append(self._postman)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()
        await self.outbox.aclose()

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
            if self._worker is not None:
                project.worker = asyncio.create_task(
                    self._worker(self, project), name=f"project {project_label(key)}"
                )
        return project

    async def upsert_project(self, body: dict[str, Any]) -> None:
        kind = body["kind"]
        meta = body["metadata"]
        key: ProjectKey = (kind, meta.get("namespace"), meta["name"])
        model = ClusterMixpanelProject if kind == "ClusterMixpanelProject" else MixpanelProject
        parsed = model.model_validate(body)
        project = self.project(key)
        changed = project.spec != parsed.spec
        project.body = body
        project.spec = parsed.spec
        project.looked_up = True
        if changed:
            project.next_verify = 0.0
            project.client = None
            if kind == "ClusterMixpanelProject":
                # Which namespaces it serves may have changed: check each request again.
                project.unresolved |= project.members
                for member in project.members:
                    if member in self.requests:
                        self.requests[member].next_resolve = 0.0
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
        project.dirty |= project.members
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

    def approval_blocker(self, request: Request) -> Blocker | None:
        """Four-eyes approval: where the project requires it, nothing is sent for the request
        until someone other than its requester approved it."""
        project = self.projects.get(request.project)
        policy = project.spec.approval if project and project.spec else None
        if policy is None or request.spec.type not in policy.required_for:
            return None
        name = request.name
        if not request.spec.requested_by:
            return Blocker(
                "RequesterUnknown",
                f"project {request.project[2]} requires approval, and approval needs "
                "spec.requestedBy (your user name, checked at admission); create the request "
                "again with it",
            )
        if not request.spec.approved_by:
            return Blocker(
                AWAITING_APPROVAL,
                f"requested by {request.spec.requested_by}; someone else who may approve sets "
                f"spec.approvedBy to their own user name: kubectl patch dsr {name} -n "
                f"{request.namespace} --type=merge -p "
                '\'{"spec":{"approvedBy":"<your user name>"}}\'',
                transient=True,
            )
        return None

    def requests_of(self, project: Project) -> list[Request]:
        return [self.requests[k] for k in project.members if k in self.requests]

    # ------------------------------------------------------------------ requests

    async def upsert_request(self, body: dict[str, Any]) -> None:
        """A request was created, changed, or seen again after a restart (or our own
        status write came back): cheap when nothing the engine uses changed."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        generation = meta.get("generation")
        retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
        existing = self.requests.get(key)
        known = existing or self.finished.get(key)
        if known is None or known.uid != meta["uid"]:
            self.last_new_request = self.clock()
        if existing and existing.uid == meta["uid"]:
            existing.labels, existing.annotations = _metadata_maps(meta)
            if retry != existing.retry_token:
                existing.retry_token = retry
                project = self.project(existing.project)
                project.dirty.add(key)
                project.wake.set()
            if existing.generation == generation:
                return
            parsed = DataSubjectRequest.model_validate(body)
            existing.spec = parsed.spec
            existing.generation = generation
            existing.waiting_since = self.clock()
            project = self.project(existing.project)
            project.dirty.add(key)
            project.wake.set()
            return
        done = self.finished.get(key)
        revive = False
        if done and done.uid == meta["uid"]:
            done.ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
            if not (retry and retry != done.retried and done.phase is Phase.FAILED):
                return
            del self.finished[key]  # a person asked to retry its failed ids
            revive = True
        parsed = DataSubjectRequest.model_validate(body)
        status = parsed.status or DataSubjectRequestStatus()
        retried = status.last_retry.token if status.last_retry else None
        retry_asked = bool(retry) and retry != retried and status.phase is Phase.FAILED
        if (
            status.phase in FINISHED
            and status.observed_generation == generation
            and not retry_asked
            and not revive
        ):
            # Finished requests cost nothing: no ids read, no tally, no status write.
            self.finished[key] = finished_of(body)
            return
        request = Request(
            key=key,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=generation,
            created=_parse_time(meta.get("creationTimestamp")),
            spec=parsed.spec,
            initial_status=status,
            project=project_key_of(
                parsed.spec.project_ref.kind, meta["namespace"], parsed.spec.project_ref.name
            ),
            waiting_since=self.clock(),
            retry_token=retry,
        )
        request.labels, request.annotations = _metadata_maps(meta)
        self.requests[key] = request
        project = self.project(request.project)
        project.members.add(key)
        project.unresolved.add(key)
        project.dirty.add(key)
        project.wake.set()

    async def request_out_of_watch(self, body: dict[str, Any]) -> None:
        """kopf's watch, field-selected on status.phase, dropped a request: either it was
        deleted, or it settled (Succeeded or Cancelled). The event cannot tell: the API
        server sends the object as it was before, while it still matched. The common case
        is the engine's own settling write, known without a call; otherwise the request is
        read again to decide."""
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        key = f"{namespace}/{name}"
        live = self.requests.get(key)
        if live is not None and live.uid == uid and live.phase in SETTLED:
            return  # this engine's settling write: the request is retired right after it
        done = self.finished.get(key)
        if done is not None and done.uid == uid and done.phase in SETTLED:
            return  # retired already
        fresh: dict[str, Any] | None = None
        for attempt in range(OUT_OF_WATCH_READS):
            try:
                fresh = await self.kube.get_request(namespace, name)
                break
            except Exception as err:
                if attempt + 1 == OUT_OF_WATCH_READS:
                    # Unknown: keep it as it is rather than cancel a request that may well
                    # exist; a status write that finds it gone forgets it then.
                    log.warning(
                        "request %s left the watch and cannot be read (%s): kept as it is",
                        key, type(err).__name__,
                    )  # fmt: skip
                    return
                await asyncio.sleep(2.0**attempt)
        if fresh is None or fresh["metadata"].get("uid") != uid:
            self.request_deleted(body)
            return
        phase = (fresh.get("status") or {}).get("phase")
        if phase in {p.value for p in SETTLED}:
            if live is not None and live.uid == uid:
                self._forget_live(live)
            self.finished[key] = finished_of(fresh)
        else:
            await self.upsert_request(fresh)

    def _forget_live(self, request: Request) -> None:
        """Another writer settled a request this engine held live (another replica)."""
        self.requests.pop(request.key, None)
        project = self.projects.get(request.project)
        if project is not None:
            for members in (project.members, project.waiting, project.dirty, project.unresolved):
                members.discard(request.key)

    async def list_settled(self) -> None:
        """List the settled requests (kopf's watch leaves them out) into ``finished``: at
        start, and every ``SETTLED_RELIST_SECONDS`` to notice those deleted by hand and TTL
        changes. A page of 500 at a time; what was finished before the listing and is not in
        it is gone."""
        started = self.clock()
        before = {k for k, f in self.finished.items() if f.phase in SETTLED}
        seen: set[str] = set()
        scopes: list[str | None] = list(self.settings.watched_namespaces) or [None]
        for namespace in scopes:
            for phase in sorted(SETTLED):
                token: str | None = None
                while True:
                    items, token = await self.kube.list_requests(
                        namespace, f"status.phase={phase.value}", token
                    )
                    for item in items:
                        meta = item["metadata"]
                        key = f"{meta['namespace']}/{meta['name']}"
                        live = self.requests.get(key)
                        if live is not None and live.uid == meta["uid"]:
                            continue
                        self.finished[key] = finished_of(item)
                        seen.add(key)
                    del items
                    if not token:
                        break
        for key in before - seen:
            self.finished.pop(key, None)
        self.settled_listed_at = started
        log.info(
            "listed %d settled requests in %.1fs (%d no longer there)",
            len(seen), self.clock() - started, len(before - seen),
        )  # fmt: skip

    def request_deleted(self, body: dict[str, Any]) -> None:
        """The request is gone: its live tasks are cancelled where Mixpanel still allows."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        self.finished.pop(key, None)
        request = self.requests.get(key)
        if request is None or request.uid != meta["uid"]:
            return
        del self.requests[key]
        project = self.projects.get(request.project)
        if project is None:
            return
        for members in (project.members, project.waiting, project.dirty, project.unresolved):
            members.discard(key)
        project.gone.add(request.uid)
        project.wake.set()

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
        digest = keyed_digest(self.key, ids)
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

    # ------------------------------------------------------------------ status

    def coverage_of(self, project: Project, request: Request) -> Coverage | None:
        """Where the request's ids stand, derived from the project's ledger (cached)."""
        if request.ids is None or not project.ledger_loaded:
            return None
        if request.coverage is None:
            retried = request.status.last_retry
            request.coverage = cover(
                len(request.ids),
                project.slices.get(request.uid, []),
                self.policy,
                retried_at=retried.at if retried else None,
            )
        return request.coverage

    def note_waiting(self, project: Project, request: Request, coverage: Coverage) -> None:
        """Whether the request's ids wait to be packed: read, not all sent, and held back by
        nothing (its own blocker, approval, a dry run). Noted when its ids are read, so that
        they can go in the next create before its first status is written."""
        waits = (
            request.ids is not None
            and bool(coverage.pending)
            and not request.spec.dry_run
            and request.blocker is None
            and self.approval_blocker(request) is None
        )
        if waits:
            if request.key not in project.waiting:
                request.waiting_since = self.clock()
            project.waiting.add(request.key)
        else:
            project.waiting.discard(request.key)

    def deadline_of(self, request: Request) -> datetime:
        return deadline(request.compliance, request.received)

    def planned_tasks(self, project: Project, request: Request, coverage: Coverage) -> int:
        """For a dry run: how many tasks the request would take on its own."""
        if project.spec is None or request.ids is None:
            return 0
        ids = request.ids
        waiting = [Waiting(request.key, p, tuple(ids[p.range.start : p.range.end])) for p in
                   coverage.pending]  # fmt: skip
        return len(plan(waiting, project.spec.max_ids_per_request, deletion=request.is_deletion))

    async def commit(self, project: Project, request: Request) -> None:
        """Recompute the request's status and write it if what a person sees changed."""
        before = request.status
        retrying = self._take_retry(request)
        coverage = self.coverage_of(project, request)
        if coverage is None:
            # Not derived yet (ids not read, ledger not loaded: just after a start). Write
            # only what is new: a first status, or why the request is blocked.
            if before.phase is not None and not (request.blocker or self.project_blocker(request)):
                return
            coverage = _carried(before)
        dry_run = request.spec.dry_run
        approval = self.approval_blocker(request)
        blocker = request.blocker or self.project_blocker(request) or approval
        after = compose_status(
            before,
            generation=request.generation,
            coverage=coverage,
            dry_run=dry_run,
            planned_tasks=self.planned_tasks(project, request, coverage) if dry_run else None,
            deadline=self.deadline_of(request),
            now=self.wall(),
            at_risk_margin=self.settings.deadline_margin,
            blocker=blocker,
        )
        after = after.model_copy(
            update={
                "ids_digest": before.ids_digest,
                "approval": self._approval_record(request),
                "last_retry": request.status.last_retry,
            }
        )
        self.note_waiting(project, request, coverage)
        if after.to_wire() == before.to_wire():
            return
        if after.phase in FINISHED and before.phase not in FINISHED and not dry_run:
            # The receipt first: once the finished status is written the request is
            # forgotten. ReceiptWriteFailed leaves the status unwritten for a later pass.
            await issue_receipt(
                self.kube, self.key, project, request, after,
                deadline=self.deadline_of(request), now=self.wall(),
                retention=self.settings.receipt_retention,
            )  # fmt: skip
        request.status = after
        if retrying:
            await self.event(
                request, "Retrying",
                f"retry {retrying} asked (annotation {RETRY_ANNOTATION}): failed ids are "
                "sent again",
            )  # fmt: skip
        written = await self.kube.patch_status(
            "DataSubjectRequest", request.namespace, request.name, after.to_wire()
        )
        if not written:
            # Gone (404): deleted while the engine held it; its live tasks are cancelled.
            self.request_deleted(request.ref())
            return
        await self._announce(request, before, after)
        if after.phase in FINISHED:
            self._retire(project, request)

    def _take_retry(self, request: Request) -> str | None:
        """A new value of the retry annotation: failed ids before now are sent again."""
        token = request.retry_token
        last = request.status.last_retry
        if not token or (last is not None and last.token == token):
            return None
        request.status = request.status.model_copy(
            update={"last_retry": RetryRecord(token=token[:256], at=self.wall())}
        )
        request.coverage = None
        return token

    def _approval_record(self, request: Request) -> ApprovalRecord | None:
        spec, before = request.spec, request.status.approval
        if not spec.requested_by and not spec.approved_by:
            return before
        approved_at = before.approved_at if before else None
        if spec.approved_by and approved_at is None:
            approved_at = self.wall()
        return ApprovalRecord(
            requested_by=spec.requested_by, approved_by=spec.approved_by, approved_at=approved_at
        )

    def _retire(self, project: Project, request: Request) -> None:
        """A finished request leaves the working set: nothing more is read or tallied."""
        self.requests.pop(request.key, None)
        for members in (project.members, project.waiting, project.unresolved):
            members.discard(request.key)
        status = request.status
        self.finished[request.key] = Finished(
            namespace=request.namespace,
            name=request.name,
            uid=request.uid,
            phase=status.phase or Phase.SUCCEEDED,
            completion_time=status.completion_time,
            ttl=request.spec.ttl_seconds_after_finished,
            result_secret=status.result_secret_ref.name if status.result_secret_ref else None,
            retried=status.last_retry.token if status.last_retry else None,
        )
        project.alive.add(request.uid)
        self.retired_since_give_back += 1

    async def _announce(
        self, request: Request, before: DataSubjectRequestStatus, after: DataSubjectRequestStatus
    ) -> None:
        if (
            after.approval
            and after.approval.approved_by
            and not (before.approval and before.approval.approved_by)
        ):
            await self.event(
                request, "Approved",
                f"approved by {after.approval.approved_by} (requested by "
                f"{after.approval.requested_by})",
            )  # fmt: skip
        if after.phase != before.phase and after.phase is not None:
            ready = get_condition(after.conditions, "Ready")
            message = ready.message if ready else after.phase.value
            if after.phase is Phase.AWAITING_APPROVAL:
                await self.event(request, AWAITING_APPROVAL, message)
                self.notify(
                    request, NotificationEvent.AWAITING_APPROVAL, occasion=str(request.generation)
                )
            if after.phase in FINISHED:
                warning = after.phase is not Phase.SUCCEEDED
                await self.event(request, after.phase.value, message, warning=warning)
                if after.phase is not Phase.CANCELLED:
                    retry = after.last_retry.token if after.last_retry else None
                    self.notify(
                        request, NotificationEvent(after.phase.value), occasion=retry or "",
                        receipt=receipt_name(request.name, request.uid, retry, 1),
                    )  # fmt: skip
            log.info(
                "request %s: %s -> %s (%s ids)",
                request.key, before.phase, after.phase.value, after.ids_total,
            )  # fmt: skip
        stalled_before = get_condition(before.conditions, "Stalled")
        stalled = get_condition(after.conditions, "Stalled")
        if (
            stalled
            and (not stalled_before or stalled_before.reason != stalled.reason)
            and after.phase not in FINISHED
        ):
            await self.event(request, stalled.reason, stalled.message, warning=True)
        risk_before = get_condition(before.conditions, "DeadlineAtRisk")
        risk = get_condition(after.conditions, "DeadlineAtRisk")
        if (
            risk
            and risk.status == "True"
            and (not risk_before or risk_before.reason != risk.reason)
        ):
            await self.event(request, risk.reason, risk.message, warning=True)
            if risk.reason in (NotificationEvent.DEADLINE_NEAR, NotificationEvent.DEADLINE_PASSED):
                self.notify(
                    request, NotificationEvent(risk.reason),
                    occasion=self.deadline_of(request).isoformat(),
                )  # fmt: skip
        dup_before = get_condition(before.conditions, "PossibleDuplicate")
        dup = get_condition(after.conditions, "PossibleDuplicate")
        if dup and not dup_before:
            await self.event(request, "PossibleDuplicate", dup.message, warning=True)

    async def event(
        self, request: Request, reason: str, message: str, *, warning: bool = False
    ) -> None:
        await self.kube.event(request.ref(), reason, message, warning=warning)

    def callbacks_enabled(self, project: Project) -> bool:
        """Whether this project's tasks are created with status callbacks."""
        spec = project.spec
        return bool(self.settings.callback_url and spec and spec.status_callbacks)

    def on_callback(self, callback: Callback) -> str:
        """A verified status callback: check its task now if it says the task moved. The
        outcome, for metrics: checking, unchanged or unknown."""
        found = self.subjects.get(callback.subject_request_id)
        project = self.projects.get(found[0]) if found else None
        task = project.tasks.get(found[1]) if project and found else None
        if project is None or task is None:
            return "unknown"
        if task.phase.terminal or task.phase in CALLBACK_PHASES[callback.status]:
            return "unchanged"
        task.next_check = min(task.next_check, self.clock())
        project.wake.set()
        return "checking"

    def notify(
        self,
        request: Request,
        kind: NotificationEvent,
        *,
        occasion: str,
        receipt: str | None = None,
        export_secret: str | None = None,
    ) -> None:
        """Queue a webhook notification about the request for its project's endpoints."""
        project = self.projects.get(request.project)
        if project is None or project.spec is None or not project.spec.notifications:
            return
        status, spec = request.status, project.spec
        ready = get_condition(status.conditions, "Ready")
        policy = spec.receipts
        data = {
            "request": {"namespace": request.namespace, "name": request.name, "uid": request.uid},
            "project": {
                "kind": request.spec.project_ref.kind,
                "name": request.spec.project_ref.name,
                "region": spec.region.value,
            },
            "type": request.spec.type.value,
            "complianceType": request.spec.compliance_type.value,
            "phase": status.phase.value if status.phase else None,
            "reason": ready.reason if ready else None,
            "message": ready.message if ready else None,
            "receivedAt": request.received.isoformat(),
            "deadline": self.deadline_of(request).isoformat(),
            "completedAt": status.completion_time.isoformat() if status.completion_time else None,
            "idsTotal": status.ids_total,
            "idsDone": status.ids_done,
            "idsFailed": status.ids_failed,
            "labels": copied(request.labels, policy.copy_labels) if policy else None,
            "receipt": receipt,
            "exportSecret": export_secret,
        }
        notification = build_notification(
            kind, occasion=occasion, namespace=request.namespace, name=request.name,
            uid=request.uid, time=self.wall(),
            data={k: v for k, v in data.items() if v is not None},
        )  # fmt: skip
        self.outbox.add(
            project, notification,
            secret_namespace=request.project[1] or self.settings.operator_namespace,
            request=request.ref(),
        )  # fmt: skip

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        next_sweep = self.clock() + 60.0
        while True:
            try:
                listed = self.settled_listed_at
                if not self.watch_settled and (
                    listed is None or self.clock() - listed >= SETTLED_RELIST_SECONDS
                ):
                    await self.list_settled()
                await self.refresh()
                if self._give_back_due():
                    # A burst has finished: its memory goes back to the system, not kept at
                    # the peak until a restart.
                    self.retired_since_give_back = 0
                    self.gave_back_at = self.clock()
                    memory.give_back()
                if self.clock() >= next_sweep:
                    next_sweep = self.clock() + RECEIPT_SWEEP_SECONDS
                    await sweep_receipts(self.kube, self.wall(), self.settings.watched_namespaces)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(max(self.settings.tick, 5.0))

    def _give_back_due(self) -> bool:
        """After many requests retired, or the last of a burst; at most every
        ``GIVE_BACK_EVERY`` seconds (a full collection of a large heap takes a while)."""
        retired = self.retired_since_give_back
        if not retired or self.clock() - self.gave_back_at < GIVE_BACK_EVERY:
            return False
        return retired >= GIVE_BACK_AFTER or not self.requests

    async def refresh(self) -> None:
        """Metrics, deadline conditions that move with time, and TTL removal."""
        now = self.wall()
        phases: dict[str, int] = {p.value: 0 for p in Phase}
        risk = {"near": 0, "passed": 0}
        oldest = 0.0
        for request in list(self.requests.values()):
            phase = request.phase or Phase.PENDING
            phases[phase.value] += 1
            oldest = max(oldest, (now - request.received).total_seconds())
            due = self.deadline_of(request)
            if now >= due:
                risk["passed"] += 1
            elif now >= due - self.settings.deadline_margin:
                risk["near"] += 1
                project = self.projects.get(request.project)
                if project is not None:
                    project.dirty.add(request.key)  # DeadlineAtRisk moves with time
        self.export_links.keep_only(self.finished)
        for key, done in list(self.finished.items()):
            phases[done.phase.value] += 1
            await self._expire(key, done, now)
            if key in self.finished:
                await self.export_links.check(self.kube, self.projects, key, done, now)
        for phase_name, count in phases.items():
            metrics.REQUESTS.labels(phase_name).set(count)
        for state, count in risk.items():
            metrics.REQUESTS_AT_RISK.labels(state).set(count)
        metrics.OLDEST_PENDING.set(oldest)

    async def _expire(self, key: str, done: Finished, now: datetime) -> None:
        if done.ttl is None or done.completion_time is None:
            return
        if (now - done.completion_time).total_seconds() < done.ttl:
            return
        log.info("request %s: ttlSecondsAfterFinished passed, deleting it", key)
        if done.result_secret:
            await self.kube.delete_secret(done.namespace, done.result_secret)
        await self.kube.delete_request(done.namespace, done.name)
        self.finished.pop(key, None)
