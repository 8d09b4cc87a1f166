"""One worker per project: check credentials, pack and submit, poll, cancel.

Every Mixpanel call for a project goes through its one client, whose request
budget is shared by creates, status checks and cancels (design invariant 3).
A failure here touches this project's requests only (invariant 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

from mixpanel_dsr import metrics
from mixpanel_dsr.api.models import TaskRecord
from mixpanel_dsr.engine.registry import Engine, utcnow
from mixpanel_dsr.engine.state import Project, Request, Task, project_label
from mixpanel_dsr.kube import SecretProblem
from mixpanel_dsr.mixpanel.client import MixpanelClient
from mixpanel_dsr.mixpanel.errors import (
    AmbiguousCreateError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    MixpanelError,
    NotCancellableError,
)
from mixpanel_dsr.mixpanel.types import ComplianceType, TaskState
from mixpanel_dsr.planning import Pending, PlannedTask, Range, pack, split
from mixpanel_dsr.progress import Blocker, tally
from mixpanel_dsr.settings import parse_duration

log = logging.getLogger(__name__)

#: How long an OAuth token read from its Secret is reused before reading it again.
TOKEN_CACHE_SECONDS = 5.0
#: A project's status (queue counts) is refreshed at least this often.
STATUS_WRITE_SECONDS = 5.0


async def run_worker(engine: Engine, project: Project) -> None:
    """The project's loop: wakes on changes or every tick, never dies of one error."""
    while True:
        woken = False
        with contextlib.suppress(TimeoutError):
            woken = await asyncio.wait_for(project.wake.wait(), timeout=engine.settings.tick)
        project.wake.clear()
        try:
            await step(engine, project, woken=woken)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("project %s: step failed", project_label(project.key))
            await asyncio.sleep(engine.settings.retry_interval)


async def step(engine: Engine, project: Project, *, woken: bool = True) -> None:
    requests = engine.requests_of(project)
    if project.spec is None:
        if not project.looked_up or engine.clock() >= project.next_verify:
            await _look_up(engine, project)
        if project.spec is None:
            await _commit_all(engine, requests)
            return
    now = engine.clock()
    if now >= project.next_verify:
        await verify(engine, project)
        await _commit_all(engine, requests)
    if woken or now >= project.next_status_write:
        project.next_status_write = now + STATUS_WRITE_SECONDS
        await _write_project_status(engine, project)
    if not project.ready:
        return
    for request in requests:
        if request.ids is None and not request.deleting and now >= request.next_resolve:
            request.next_resolve = now + engine.settings.retry_interval
            async with request.lock:
                await engine.resolve_ids(request)
                if request.ids is not None:
                    request.waiting_since = engine.clock()
                await engine.commit(request)
    await plan_dry_runs(engine, project)
    await poll(engine, project)
    if project.ready and engine.clock() >= project.hold_until:
        await submit_deletions(engine, project)
        await submit_retrievals(engine, project)


async def _commit_all(engine: Engine, requests: list[Request]) -> None:
    for request in requests:
        async with request.lock:
            await engine.commit(request)


async def _look_up(engine: Engine, project: Project) -> None:
    kind, namespace, name = project.key
    body = await engine.kube.get_project(kind, namespace, name)
    project.next_verify = engine.clock() + engine.settings.retry_interval
    if body is not None:
        await engine.upsert_project(body)
    project.looked_up = True


# ---------------------------------------------------------------------- credentials


def client_of(engine: Engine, project: Project) -> MixpanelClient:
    """The project's Mixpanel client; it reads the OAuth token from the Secret when needed."""
    if project.client is not None:
        return project.client
    spec = project.spec
    assert spec is not None
    ref = spec.credentials_secret_ref
    namespace = project.key[1] or engine.settings.operator_namespace

    async def token() -> str:
        cached = project.token_cache
        if cached and engine.clock() - cached[1] < TOKEN_CACHE_SECONDS:
            return cached[0]
        value = await engine.kube.read_secret_key(namespace, ref.name, ref.key)
        project.token_cache = (value.strip(), engine.clock())
        return value.strip()

    project.client = MixpanelClient(
        project_token=spec.token,
        oauth_token=token,
        region=spec.region,
        base_url=spec.api_base_url,
        region_base_urls=engine.settings.region_urls,
        budget_interval=parse_duration(spec.request_interval),
        http=engine.http,
        max_ids_per_request=spec.max_ids_per_request,
    )
    return project.client


def _brief(err: Exception) -> str:
    """What a log line may say of a failed status, verify or cancel call: the error's kind and
    HTTP status, never Mixpanel's text (those calls cannot redact ids they do not know)."""
    if isinstance(err, SecretProblem):
        return str(err)  # names a Secret and a key, nothing more
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}" + (f" (HTTP {status})" if status else "")


def _not_ready(engine: Engine, project: Project, reason: str, message: str) -> None:
    was_ready = project.ready
    project.ready = False
    project.problem = Blocker(reason, message)
    project.token_cache = None
    project.next_verify = engine.clock() + engine.settings.retry_interval
    project.wake.set()  # show it in the project's status at once
    if was_ready:
        log.warning("project %s: not ready: %s", project_label(project.key), reason)


def _auth_failure(engine: Engine, project: Project, err: AuthenticationError) -> None:
    spec = project.spec
    expired = bool(spec and spec.token_expires_at and spec.token_expires_at <= datetime.now(UTC))
    if expired:
        _not_ready(engine, project, "TokenExpired", "the GDPR OAuth token has expired "
                   "(spec.tokenExpiresAt); make a new one and update the Secret")  # fmt: skip
    elif project.verified_once:
        _not_ready(engine, project, "TokenExpired", "Mixpanel refused a token it had accepted "
                   f"(HTTP {err.status_code}): expired or revoked; update the Secret")  # fmt: skip
    else:
        _not_ready(engine, project, "TokenRejected", f"Mixpanel refused the OAuth token "
                   f"(HTTP {err.status_code}): check the Secret and the project token")  # fmt: skip


async def verify(engine: Engine, project: Project) -> None:
    """Is the Secret readable and the token accepted? Cheap: one status call, not every loop."""
    spec = project.spec
    assert spec is not None
    namespace = project.key[1] or engine.settings.operator_namespace
    ref = spec.credentials_secret_ref
    try:
        await engine.kube.read_secret_key(namespace, ref.name, ref.key)
    except SecretProblem as err:
        _not_ready(engine, project, err.reason, str(err))
        return
    project.token_cache = None
    try:
        await client_of(engine, project).verify_credentials()
    except AuthenticationError as err:
        _auth_failure(engine, project, err)
        return
    except SecretProblem as err:
        _not_ready(engine, project, err.reason, str(err))
        return
    except MixpanelError as err:
        log.warning(
            "project %s: could not verify the token: %s", project_label(project.key), _brief(err)
        )
        project.next_verify = engine.clock() + engine.settings.retry_interval
        return
    project.ready = True
    project.problem = None
    project.verified_once = True
    project.next_verify = engine.clock() + engine.settings.verify_interval
    project.status = project.status.model_copy(update={"last_verified_time": utcnow()})


async def _write_project_status(engine: Engine, project: Project) -> None:
    from mixpanel_dsr.engine.project_status import write_project_status

    await write_project_status(engine, project)


# ---------------------------------------------------------------------- polling


async def poll(engine: Engine, project: Project) -> None:
    """Check the tasks that are due; fan each answer out to every request it serves."""
    client = client_of(engine, project)
    settings = engine.settings
    for task in sorted(project.tasks.values(), key=lambda t: t.next_check):
        if task.next_check > engine.clock() or not project.ready:
            break
        try:
            if task.kind == "deletion":
                status = await client.deletion_status(task.tracking_id)
            else:
                status = await client.retrieval_status(task.tracking_id)
        except AuthenticationError as err:
            _auth_failure(engine, project, err)
            return
        except (MixpanelError, SecretProblem) as err:
            log.warning("task %s: status check failed: %s", task.tracking_id, _brief(err))
            task.next_check = engine.clock() + task.interval
            continue
        if project.tasks.get(task.tracking_id) is not task:
            continue  # cancelled (and its requests re-queued) while this check was in flight
        state = status.state.value
        changed = state != task.state
        task.state = state
        task.interval = (
            settings.poll_initial
            if changed
            else min(task.interval * settings.poll_factor, settings.poll_max)
        )
        task.next_check = engine.clock() + task.interval
        terminal = status.state.terminal or status.state is TaskState.NOT_FOUND
        message = _state_message(status.state)
        link = status.result_link.get_secret_value() if status.result_link else None
        for key, start, end in list(task.members):
            request = engine.requests.get(key)
            if request is None:
                continue
            async with request.lock:
                _update_records(request, task.tracking_id, start, end, state, message)
                if link and status.state is TaskState.SUCCESS and task.kind == "retrieval":
                    await _store_export(engine, request, task.tracking_id, link)
                await engine.commit(request)
            if terminal:
                outcome = "success" if status.state is TaskState.SUCCESS else "failure"
                metrics.IDS_COMPLETED.labels(task.kind, outcome).inc(end - start)
        if terminal:
            project.tasks.pop(task.tracking_id, None)
            if status.state is not TaskState.SUCCESS:
                log.warning("task %s ended %s", task.tracking_id, state)


def _state_message(state: TaskState) -> str | None:
    if state is TaskState.FAILURE:
        return "Mixpanel reported FAILURE for the task"
    if state is TaskState.NOT_FOUND:
        return "Mixpanel no longer knows the task (NOT_FOUND)"
    if state is TaskState.REVOKED:
        return "the task was cancelled in Mixpanel"
    return None


def _update_records(
    request: Request, tracking_id: str, start: int, end: int, state: str, message: str | None
) -> None:
    now = utcnow()
    for n, record in enumerate(request.records):
        if (
            record.tracking_id == tracking_id
            and (record.start, record.end) == (start, end)
            and record.state != "Superseded"
        ):
            update: dict[str, object] = {"state": state, "checked_at": now}
            if message:
                update["message"] = message
            request.records[n] = record.but(**update)


async def _store_export(engine: Engine, request: Request, tracking_id: str, link: str) -> None:
    """The export link is personal data: into a Secret owned by the request, never status."""
    name = f"{request.name}-export"[:253]
    # One key per Mixpanel task (a request over the id limit has several exports), and
    # `link` for the usual single one.
    tasks = {r.tracking_id for r in request.records if r.tracking_id}
    data = {f"link-{tracking_id}": link}
    if len(tasks) == 1:
        data["link"] = link
    await engine.kube.put_owned_secret(
        request.ref(),
        name,
        data,
        labels={"app.kubernetes.io/managed-by": "mixpanel-dsr-operator"},
    )
    from mixpanel_dsr.api.models import LocalObjectReference

    if request.status.result_secret_ref is None:
        request.status = request.status.model_copy(
            update={"result_secret_ref": LocalObjectReference(name=name)}
        )
        await engine.event(
            request, "ExportReady", f"the export link is in Secret {name} (valid 14 days)"
        )


# ---------------------------------------------------------------------- submitting


async def plan_dry_runs(engine: Engine, project: Project) -> None:
    """Show a dry-run request the tasks it would make (alone; packing happens at run time)."""
    assert project.spec is not None
    limit = project.spec.max_ids_per_request
    for request in engine.requests_of(project):
        if not request.spec.dry_run or request.ids is None or request.records:
            continue
        whole = Pending(request.key, Range(0, len(request.ids)), tuple(request.ids))
        async with request.lock:
            request.records = [
                TaskRecord(
                    batch=f"plan-{n}",
                    start=task.members[0].range.start,
                    end=task.members[0].range.end,
                    state="Planned",
                    task_ids=len(task.ids),
                )
                for n, task in enumerate(split(whole, limit))
            ]
            await engine.commit(request)


def _pending(engine: Engine, request: Request) -> list[tuple[Pending, int]]:
    assert request.ids is not None
    t = tally(len(request.ids), request.records, engine.settings.max_attempts)
    return [
        (Pending(request.key, rng, tuple(request.ids[rng.start : rng.end])), attempt)
        for rng, attempt in t.pending
    ]


def _eligible(engine: Engine, project: Project, deletion: bool) -> list[Request]:
    found = [
        r
        for r in engine.requests_of(project)
        if r.is_deletion == deletion
        and r.ids is not None
        and not r.deleting
        and not r.spec.dry_run
        and r.blocker is None
    ]
    return sorted(found, key=lambda r: (r.created, r.key))


async def submit_deletions(engine: Engine, project: Project) -> None:
    """Pack waiting deletions per compliance type; send full tasks at once and the rest once
    the packing window has closed (quiet period passed, or the oldest waited long enough)."""
    assert project.spec is not None
    limit = project.spec.max_ids_per_request
    settings = engine.settings
    now = engine.clock()
    for compliance in ComplianceType:
        requests = [r for r in _eligible(engine, project, True) if r.compliance is compliance]
        items: list[tuple[Pending, int]] = []
        waits: list[float] = []
        for request in requests:
            pending = _pending(engine, request)
            if pending:
                items += pending
                waits.append(request.waiting_since or now)
        if not items:
            continue
        window_closed = (
            now - max(waits) >= settings.packing_quiet
            or now - min(waits) >= settings.packing_max_wait
        )
        planned = pack([p for p, _ in items], limit)
        if not window_closed:
            planned = [t for t in planned if len(t.ids) >= limit]
        attempts = {(p.owner, p.range): a for p, a in items}
        for task in planned:
            if not project.ready or engine.clock() < project.hold_until:
                return
            await submit(engine, project, task, compliance, attempts)


async def submit_retrievals(engine: Engine, project: Project) -> None:
    """One request per task (never mixed), under the outstanding-retrieval limit."""
    assert project.spec is not None
    outstanding = sum(1 for t in project.tasks.values() if t.kind == "retrieval")
    slots = project.spec.max_outstanding_retrievals - outstanding
    for request in _eligible(engine, project, False):
        for pending, attempt in _pending(engine, request):
            for task in split(pending, project.spec.max_ids_per_request):
                if slots <= 0 or not project.ready or engine.clock() < project.hold_until:
                    return
                await submit(
                    engine,
                    project,
                    task,
                    request.compliance,
                    {(pending.owner, pending.range): attempt},
                )
                slots -= 1


def _attempt_for(attempts: dict[tuple[str, Range], int], owner: str, rng: Range) -> int:
    for (key, pending), attempt in attempts.items():
        if key == owner and pending.start <= rng.start and rng.end <= pending.end:
            return attempt
    return 1


async def submit(
    engine: Engine,
    project: Project,
    planned: PlannedTask,
    compliance: ComplianceType,
    attempts: dict[tuple[str, Range], int],
) -> None:
    """Record the intent in every member's status, call Mixpanel, record the tracking id."""
    client = client_of(engine, project)
    batch = uuid.uuid4().hex[:16]
    engine.inflight_batches.add(batch)
    members: list[tuple[Request, Range]] = []
    sent = False
    try:
        for member in planned.members:
            request = engine.requests.get(member.owner)
            if request is None or request.deleting or request.ids is None:
                continue
            async with request.lock:
                request.records.append(
                    TaskRecord(
                        batch=batch,
                        start=member.range.start,
                        end=member.range.end,
                        state="Submitting",
                        attempt=_attempt_for(attempts, member.owner, member.range),
                    )
                )
                await engine.commit(request)
            members.append((request, member.range))
        if not members:
            return
        ids = list(
            dict.fromkeys(
                i for request, rng in members for i in (request.ids or [])[rng.start : rng.end]
            )
        )
        first = members[0][0]
        kind = "deletion" if first.is_deletion else "retrieval"
        outcome: dict[str, object]
        tracking_id: str | None = None
        sent = True
        try:
            if first.is_deletion:
                created = await client.create_deletion(ids, compliance)
            else:
                created = await client.create_retrieval(ids, compliance, first.spec.disclosure_type)
            tracking_id = created.tracking_id
            outcome = {"state": TaskState.PENDING, "tracking_id": tracking_id}
        except AmbiguousCreateError:
            outcome = {
                "state": "Lost",
                "ambiguous": True,
                "message": "the create call's answer was lost (timeout or dropped connection "
                "after sending); ids re-queued",
            }
        except ConflictError as err:
            if len(err.conflicting_task_ids) == 1:
                tracking_id = str(err.conflicting_task_ids[0])
                outcome = {
                    "state": TaskState.PENDING,
                    "tracking_id": tracking_id,
                    "message": "Mixpanel already had a running deletion for these ids; "
                    "following it",
                }
            else:
                outcome = {
                    "state": TaskState.FAILURE,
                    "message": f"Mixpanel refused: ids already being deleted by "
                    f"{len(err.conflicting_task_ids)} other tasks (HTTP 409)",
                }
        except InvalidRequestError as err:
            outcome = {"state": TaskState.FAILURE, "message": f"Mixpanel refused the task: {err}"}
        except AuthenticationError as err:
            _auth_failure(engine, project, err)
            outcome = {}
        except (MixpanelError, SecretProblem) as err:
            log.warning(
                "project %s: create failed, nothing was created: %s",
                project_label(project.key), err,
            )  # fmt: skip
            project.hold_until = engine.clock() + engine.settings.retry_interval
            outcome = {}
        now = utcnow()
        if tracking_id:
            metrics.IDS_SUBMITTED.labels(kind).inc(len(ids))
            task = project.tasks.get(tracking_id) or Task(
                tracking_id=tracking_id,
                kind=kind,
                batch=batch,
                members=[],
                state=TaskState.PENDING.value,
                next_check=engine.clock() + engine.settings.poll_initial,
                interval=engine.settings.poll_initial,
            )
            project.tasks[tracking_id] = task
            task.members += [(r.key, rng.start, rng.end) for r, rng in members]
            log.info(
                "project %s: %s task %s created with %d ids for %d requests",
                project_label(project.key), kind, tracking_id, len(ids), len(members),
            )  # fmt: skip
        for request, rng in members:
            async with request.lock:
                for n, record in enumerate(request.records):
                    if record.batch == batch and (record.start, record.end) == (rng.start, rng.end):
                        if outcome:
                            request.records[n] = record.but(
                                **outcome, submitted_at=now, task_ids=len(ids)
                            )
                        else:  # certainly not created: forget the intent, the ids wait again
                            del request.records[n]
                        break
                await engine.commit(request)
            if tracking_id:
                others = len(members) - 1
                await engine.event(
                    request,
                    "TaskCreated",
                    f"ids {rng.start}-{rng.end - 1} are in Mixpanel {kind} task {tracking_id}"
                    + (f" with {others} other requests" if others else ""),
                )
            elif outcome.get("ambiguous"):
                await engine.event(
                    request,
                    "PossibleDuplicate",
                    "the answer to a create call was lost; the ids are submitted again and "
                    "Mixpanel may hold a duplicate task",
                    warning=True,
                )
    finally:
        engine.inflight_batches.discard(batch)
        await _settle(engine, planned, batch, sent=sent)


async def _settle(engine: Engine, planned: PlannedTask, batch: str, *, sent: bool) -> None:
    """Intents of ``batch`` still open after an unexpected error: forgotten when the create
    was never sent, else ``Lost`` (its outcome is unknown, so the ids go again)."""
    for owner in {m.owner for m in planned.members}:
        request = engine.requests.get(owner)
        if request is None:
            continue
        open_ = [r for r in request.records if r.batch == batch and r.state == "Submitting"]
        if not open_:
            continue
        async with request.lock:
            if sent:
                request.records = [
                    r.but(state="Lost", ambiguous=True, message="the create call failed "
                          "unexpectedly; its outcome is unknown, ids re-queued")
                    if r in open_ else r
                    for r in request.records
                ]  # fmt: skip
            else:
                request.records = [r for r in request.records if r not in open_]
            try:
                await engine.commit(request)
            except Exception:
                log.exception("request %s: could not write its status", request.key)


# ---------------------------------------------------------------------- cancelling


async def cancel_request(engine: Engine, request: Request) -> None:
    """Cancel the request's still-cancellable deletions; re-queue its packed neighbours."""
    project = engine.projects.get(request.project)
    while any(  # noqa: ASYNC110 - creates of other requests' batches finish on their own
        r.state == "Submitting" and r.batch in engine.inflight_batches for r in request.records
    ):
        await asyncio.sleep(0.2)
    if request.status.result_secret_ref:
        await engine.kube.delete_secret(request.namespace, request.status.result_secret_ref.name)
    if project is None or project.spec is None or not request.is_deletion:
        return
    tracking_ids = {
        r.tracking_id
        for r in request.records
        if r.tracking_id and r.state in (TaskState.PENDING, TaskState.STAGING)
    }
    client = client_of(engine, project)
    for tracking_id in sorted(tracking_ids):
        while True:
            try:
                await client.cancel_deletion(tracking_id)
                break
            except NotCancellableError:
                await engine.event(
                    request,
                    "NotCancellable",
                    f"Mixpanel task {tracking_id} has already started; it will complete",
                    warning=True,
                )
                tracking_id = ""
                break
            except (MixpanelError, SecretProblem) as err:
                log.warning("task %s: cancel failed, retrying: %s", tracking_id, _brief(err))
                await asyncio.sleep(engine.settings.retry_interval)
        if not tracking_id:
            continue
        task = project.tasks.pop(tracking_id, None)
        await engine.event(request, "Cancelled", f"Mixpanel task {tracking_id} cancelled")
        for key, start, end in task.members if task else []:
            neighbour = engine.requests.get(key)
            if neighbour is None or key == request.key:
                continue
            async with neighbour.lock:
                _update_records(
                    neighbour, tracking_id, start, end, "Superseded",
                    f"the packed task was cancelled with deleted request {request.name}; "
                    "ids re-queued",
                )  # fmt: skip
                neighbour.waiting_since = engine.clock()
                await engine.commit(neighbour)
            await engine.event(
                neighbour,
                "Requeued",
                f"Mixpanel task {tracking_id} was cancelled with deleted request "
                f"{request.name}; ids {start}-{end - 1} are submitted again",
            )
        project.wake.set()
