"""One worker per project: load the ledger, then cancels before creates before polls.

Every Mixpanel call for a project goes through its one client, whose request budget is
shared by creates, status checks and cancels (design invariant 3); the worker makes them
one at a time, always choosing the most urgent. What to do with an answer is decided by
:mod:`mixpanel_dsr.ledger` (pure); this module only carries it out. A failure here
touches this project's requests only (invariant 6).

Writes per Mixpanel task, whatever the number of requests it serves (invariant 7): the
MixpanelTask object before the create call, its status right after, and one status write
per change of Mixpanel state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import uuid
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException

from mixpanel_dsr import metrics
from mixpanel_dsr.api.models import (
    ClusterMixpanelProjectSpec,
    LocalObjectReference,
    MixpanelTask,
    MixpanelTaskSpec,
    MixpanelTaskStatus,
    NotificationEvent,
    ProjectReference,
    TaskMember,
    TaskPhase,
)
from mixpanel_dsr.engine.ports import MixpanelPort
from mixpanel_dsr.engine.project_status import write_project_status
from mixpanel_dsr.engine.registry import Engine
from mixpanel_dsr.engine.state import LiveTask, Project, Request, project_label
from mixpanel_dsr.kube import SecretProblem
from mixpanel_dsr.labels import selects
from mixpanel_dsr.ledger import (
    CreateOutcome,
    CreateResult,
    NewTask,
    PendingSlice,
    Slice,
    Waiting,
    after_cancel,
    after_create,
    after_poll,
    cancellable,
    conflict_ranges,
    first_check_delay,
    needs_cancel,
    next_interval,
    plan,
    with_conditions,
)
from mixpanel_dsr.mixpanel.client import MixpanelClient
from mixpanel_dsr.mixpanel.errors import (
    AmbiguousCreateError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    MixpanelError,
    NotCancellableError,
)
from mixpanel_dsr.mixpanel.types import StatusCallbacks, TaskState
from mixpanel_dsr.planning import keyed_digest
from mixpanel_dsr.progress import Blocker
from mixpanel_dsr.settings import parse_duration, url_allowed

log = logging.getLogger(__name__)

#: How long an OAuth token read from its Secret is reused before reading it again.
TOKEN_CACHE_SECONDS = 5.0
#: A project's status (queue counts) is refreshed at least this often.
STATUS_WRITE_SECONDS = 5.0
#: Request status writes in flight at once (the Kubernetes client has 8 threads).
FLUSH_CONCURRENCY = 8
#: Longest a finished retrieval waits for its request (after a restart) to store its link.
EXPORT_WAIT_MAX = 3600.0
#: The start of a task's message while its status checks fail.
CHECKS_FAIL = "status checks fail"
#: How often finished tasks are checked against --task-retention.
RETENTION_CHECK_SECONDS = 600.0
#: Orphan look-ups wait for kopf's listing to go quiet, but at most this many graces.
ORPHAN_GRACE_CAP = 10


async def run_worker(engine: Engine, project: Project) -> None:
    """The project's loop: wakes on changes or when work is due; never dies of one error."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(project.wake.wait(), timeout=engine.settings.tick)
        project.wake.clear()
        try:
            await step(engine, project)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("project %s: step failed", project_label(project.key))
            await asyncio.sleep(engine.settings.retry_interval)


async def step(engine: Engine, project: Project) -> None:
    """Everything that is due for the project now, most urgent first."""
    if project.spec is None:
        if not project.looked_up or engine.clock() >= project.next_verify:
            await _look_up(engine, project)
        if project.spec is None:
            await flush(engine, project, everything=True)
            return
    if engine.clock() >= project.next_verify:
        await verify(engine, project)
        project.dirty |= project.members
    if engine.clock() >= project.next_status_write or project.wake.is_set():
        project.next_status_write = engine.clock() + STATUS_WRITE_SECONDS
        await write_project_status(engine, project)
    if not project.ledger_loaded:
        await load_ledger(engine, project)
        if not project.ledger_loaded:
            return
    await save_tasks(engine, project)
    while True:
        # New requests are read before anything is written or sent: their first status says
        # Queued (not Pending), and their ids can go in the next create.
        await resolve(engine, project)
        if not (project.ready and await act(engine, project)):
            break
        # Status writes fill the wait for the next Mixpanel slot, never delay the call.
        await flush(engine, project, within=_next_slot_in(project))
    if not project.ready:
        # A call just found the project unusable (token refused, Secret gone): the project
        # says why before its requests point at it.
        await write_project_status(engine, project)
    await flush(engine, project, until_woken=True)
    if engine.clock() >= project.next_retention:
        project.next_retention = engine.clock() + RETENTION_CHECK_SECONDS
        await retire_tasks(engine, project)


async def flush(
    engine: Engine,
    project: Project,
    *,
    everything: bool = False,
    within: float | None = None,
    until_woken: bool = False,
) -> None:
    """Write the status of every request whose view may have changed (only those), several
    at once. A create that serves 2,000 requests is followed by 2,000 status writes (seconds
    of work), and neither the next create nor newly delivered requests should wait for them:
    with ``within`` the writes stop after that many seconds, with ``until_woken`` once a new
    event woke the worker (at least one batch is always written); the rest stay dirty."""
    keys = sorted(set(project.members) if everything else project.dirty)
    project.dirty = set()
    deadline = None if within is None else engine.clock() + within

    async def one(key: str) -> None:
        request = engine.requests.get(key)
        if request is None:
            return
        try:
            await engine.commit(project, request)
        except Exception as err:  # the API server is away or slow: written on a later pass
            log.warning("request %s: status write failed: %s", key, _kube_brief(err))
            project.dirty.add(key)

    for start in range(0, len(keys), FLUSH_CONCURRENCY):
        if start and (
            (deadline is not None and engine.clock() >= deadline)
            or (until_woken and project.wake.is_set())
        ):
            project.dirty.update(keys[start:])
            return
        await asyncio.gather(*(one(k) for k in keys[start : start + FLUSH_CONCURRENCY]))


def _next_slot_in(project: Project) -> float:
    """Seconds until the project's next Mixpanel call may go (its request budget)."""
    client = project.client
    return client.budget.next_slot_in() if isinstance(client, MixpanelClient) else 0.0


async def _look_up(engine: Engine, project: Project) -> None:
    kind, namespace, name = project.key
    body = await engine.kube.get_project(kind, namespace, name)
    project.next_verify = engine.clock() + engine.settings.retry_interval
    if body is not None:
        await engine.upsert_project(body)
    project.looked_up = True


# ---------------------------------------------------------------------- the ledger


def tasks_namespace(engine: Engine, project: Project) -> str:
    return project.key[1] or engine.settings.operator_namespace


def _index(engine: Engine, project: Project, task: LiveTask) -> None:
    """Add a task to the project's ledger; the requests it covers see it next flush."""
    project.tasks[task.name] = task
    project.sequence = max(project.sequence, task.spec.sequence)
    if task.status.subject_request_id:
        engine.subjects[task.status.subject_request_id] = (project.key, task.name)
    for n, member in enumerate(task.spec.members):
        project.slices.setdefault(member.uid, []).append(Slice(task, n))
    _touch(engine, project, task)


def _touch(engine: Engine, project: Project, task: LiveTask) -> None:
    """The task changed: the requests it serves derive their status again."""
    for member in task.spec.members:
        key = f"{member.namespace}/{member.name}"
        request = engine.requests.get(key)
        if request is not None and request.uid == member.uid:
            request.coverage = None
            project.dirty.add(key)


async def load_ledger(engine: Engine, project: Project) -> None:
    """Read the project's tasks once; until then nothing is planned (nothing re-sent)."""
    kind, _, name = project.key
    try:
        items = await engine.kube.list_tasks(tasks_namespace(engine, project), kind, name)
    except Exception as err:
        log.warning("project %s: listing its tasks failed: %s", name, _kube_brief(err))
        return
    project.loaded_at = engine.clock()
    now = engine.wall()
    for item in items:
        parsed = MixpanelTask.model_validate(item)
        meta = item["metadata"]
        task = LiveTask(
            name=meta["name"],
            spec=parsed.spec,
            status=parsed.status or MixpanelTaskStatus(),
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
        )
        if task.phase is TaskPhase.CREATING and task.name not in engine.inflight:
            # No answer recorded since the last send: it may or may not have reached
            # Mixpanel. (Before a retry, ``nextAttemptAt`` is cleared in its own write.)
            task.recovered = task.status.next_attempt_at is None
        if not task.phase.terminal and task.status.tracking_id:
            delay = first_check_delay(
                task, now, engine.settings.poll_initial, engine.settings.poll_max
            )
            task.next_check = engine.clock() + delay
            task.interval = engine.settings.poll_initial
        _index(engine, project, task)
    project.ledger_loaded = True
    project.dirty |= project.members
    log.info(
        "project %s: ledger loaded, %d tasks (%d live)",
        project_label(project.key), len(items),
        sum(1 for t in project.tasks.values() if not t.phase.terminal),
    )  # fmt: skip


async def retire_tasks(engine: Engine, project: Project) -> None:
    """Remove tasks finished longer than --task-retention ago whose requests are all finished
    or gone (a live request's coverage never loses a task)."""
    cutoff = engine.wall().timestamp() - engine.settings.task_retention
    for task in list(project.tasks.values()):
        done = task.status.completion_time
        if not task.phase.terminal or done is None or done.timestamp() > cutoff:
            continue
        if not all(
            _settled(engine, project, m.namespace, m.name, m.uid) for m in task.spec.members
        ):
            continue
        try:
            await engine.kube.delete_task(task.namespace, task.name)
        except Exception as err:
            log.warning("task %s: removing it failed: %s", task.name, _kube_brief(err))
            return
        del project.tasks[task.name]
        engine.subjects.pop(task.status.subject_request_id or "", None)
        for member in task.spec.members:
            kept = [s for s in project.slices.get(member.uid, []) if s.task is not task]
            if kept:
                project.slices[member.uid] = kept
            else:
                project.slices.pop(member.uid, None)


def _settled(engine: Engine, project: Project, namespace: str, name: str, uid: str) -> bool:
    if uid in project.gone:
        return True
    finished = engine.finished.get(f"{namespace}/{name}")
    return finished is not None and finished.uid == uid


async def save_tasks(engine: Engine, project: Project) -> None:
    """Write task statuses whose earlier write failed."""
    for task in [t for t in project.tasks.values() if t.unsaved]:
        await _save(engine, task)


async def _save(engine: Engine, task: LiveTask) -> bool:
    task.status = with_conditions(task.status, engine.wall())
    try:
        await engine.kube.patch_status(
            "MixpanelTask", task.namespace, task.name, task.status.to_wire()
        )
    except Exception as err:  # kept in memory and written again before anything else
        log.warning("task %s: status write failed: %s", task.name, _kube_brief(err))
        task.unsaved = True
        return False
    task.unsaved = False
    return True


async def _task_event(
    engine: Engine, task: LiveTask, reason: str, message: str, *, warning: bool = False
) -> None:
    await engine.kube.event(task.ref(), reason, message, warning=warning)


# ---------------------------------------------------------------------- requests' ids


async def resolve(engine: Engine, project: Project) -> None:
    """Read the ids of requests that do not have them yet (throttled when unreadable)."""
    now = engine.clock()
    for key in sorted(project.unresolved):
        request = engine.requests.get(key)
        if request is None:
            project.unresolved.discard(key)
            continue
        if now < request.next_resolve:
            continue
        request.next_resolve = now + engine.settings.retry_interval
        if not await _namespace_selected(engine, project, request):
            project.dirty.add(key)
            continue
        await engine.resolve_ids(request)
        if request.ids is not None:
            project.unresolved.discard(key)
            request.coverage = None
            coverage = engine.coverage_of(project, request)
            if coverage is not None:
                engine.note_waiting(project, request, coverage)
        project.dirty.add(key)


#: The admission policy binding that makes spec.requestedBy and spec.approvedBy trustworthy.
APPROVAL_POLICY = "datasubjectrequest-approval.mixpaneldsr.io"
#: How long a namespace's labels are trusted before they are read again.
NAMESPACE_LABELS_SECONDS = 60.0
_NOT_SELECTED = "NamespaceNotSelected"


async def _namespace_selected(engine: Engine, project: Project, request: Request) -> bool:
    """A ClusterMixpanelProject serves only the namespaces its spec.namespaceSelector selects;
    a request from any other is blocked before its ids are read or anything is sent."""
    if project.key[0] != "ClusterMixpanelProject":
        return True
    spec = project.spec
    assert isinstance(spec, ClusterMixpanelProjectSpec)
    cached = engine.namespace_labels.get(request.namespace)
    if cached is None or engine.clock() - cached[1] >= NAMESPACE_LABELS_SECONDS:
        try:
            labels = await engine.kube.namespace_labels(request.namespace)
        except Exception as err:
            log.warning("namespace %s: reading its labels failed: %s", request.namespace,
                        _kube_brief(err))  # fmt: skip
            return False
        cached = engine.namespace_labels[request.namespace] = (labels, engine.clock())
    if selects(spec.namespace_selector, cached[0] or {}):
        if request.blocker and request.blocker.reason == _NOT_SELECTED:
            request.blocker = None
        return True
    request.blocker = Blocker(
        _NOT_SELECTED,
        f"ClusterMixpanelProject {project.key[2]} does not serve namespace {request.namespace}: "
        "its spec.namespaceSelector does not select it (absent selects none); nothing was sent",
    )
    request.coverage = None
    project.waiting.discard(request.key)
    project.unresolved.add(request.key)
    return False


def _member_ids(engine: Engine, project: Project, task: LiveTask) -> list[list[str]] | None:
    """Each member slice's ids, or None while a member is not known (yet)."""
    result: list[list[str]] = []
    for member in task.spec.members:
        request = engine.requests.get(f"{member.namespace}/{member.name}")
        if request is None or request.uid != member.uid or request.ids is None:
            return None
        result.append(request.ids[member.start : member.end])
    return result


# ---------------------------------------------------------------------- choosing the next call


async def act(engine: Engine, project: Project) -> bool:
    """Carry out the most urgent due action; False when nothing is due."""
    if await _cancel_one(engine, project):
        return True
    if engine.clock() >= project.hold_until and await _create_one(engine, project):
        return True
    return await _poll_one(engine, project)


async def _gone_members(
    engine: Engine, project: Project, task: LiveTask, *, now: bool = False
) -> None:
    """Learn whether members the engine does not hold still exist (after a restart: a
    request deleted while no operator ran). Asked only once kopf has had time to list the
    requests, so that only the few it did not deliver are looked up: ``--orphan-grace`` after
    the ledger was loaded and after kopf last handed in a request not known before (its
    listing of thousands takes a while), but no later than ``ORPHAN_GRACE_CAP`` graces after
    the load (new requests may never stop coming). Before kopf handed in any request, the
    listing has not begun to arrive, whatever the time: only the cap applies."""
    if not now:
        grace = engine.settings.orphan_grace
        since_load = engine.clock() - project.loaded_at
        last = engine.last_new_request
        quiet = 0.0 if last is None else engine.clock() - max(project.loaded_at, last)
        if quiet < grace and since_load < ORPHAN_GRACE_CAP * grace:
            return
    for member in task.spec.members:
        uid = member.uid
        if uid in project.gone or uid in project.alive:
            continue
        key = f"{member.namespace}/{member.name}"
        known = engine.requests.get(key) or engine.finished.get(key)
        if known is not None and known.uid == uid:
            continue
        try:
            body = await engine.kube.get_request(member.namespace, member.name)
        except Exception as err:  # e.g. a namespace this operator may not read: leave it be
            log.warning("task %s: looking up a request failed: %s", task.name, _kube_brief(err))
            project.alive.add(uid)
            continue
        if body is None or body["metadata"]["uid"] != uid:
            project.gone.add(uid)
        else:
            project.alive.add(uid)


async def _cancel_one(engine: Engine, project: Project) -> bool:
    for task in sorted(project.tasks.values(), key=lambda t: t.spec.sequence):
        if task.phase.terminal or task.name in engine.inflight:
            continue
        await _gone_members(engine, project, task)
        if not needs_cancel(task, project.gone):
            continue
        if task.phase is TaskPhase.CREATING:
            if task.recovered or task.status.lost_answers:
                # Its create may have reached Mixpanel: there is no tracking id to cancel.
                task.status = task.status.model_copy(update={"ambiguous": True})
                why = (
                    "a request it was for was deleted before Mixpanel's answer to its create "
                    "was known; Mixpanel may still carry it out (no tracking id to cancel). "
                    "The other requests' ids were queued again"
                )
            else:
                why = (
                    "never created in Mixpanel, and a request it was for was deleted; the "
                    "other requests' ids were queued again"
                )
            await _finish_cancel(engine, project, task, why)
            return True
        if not cancellable(task) or task.cancel_refused:
            continue
        assert task.status.tracking_id is not None
        try:
            client = client_of(engine, project)
            await _warm_token(engine, project)
            await client.cancel_deletion(task.status.tracking_id)
        except NotCancellableError:
            task.cancel_refused = True
            await _task_event(
                engine, task, "NotCancellable",
                f"Mixpanel task {task.status.tracking_id} has already started; it will complete",
                warning=True,
            )  # fmt: skip
            return True
        except (AuthenticationError, SecretProblem) as err:
            _credentials_failed(engine, project, err)
            return False
        except MixpanelError as err:
            log.warning("task %s: cancel failed: %s", task.name, _brief(err))
            project.hold_until = engine.clock() + engine.settings.retry_interval
            return False
        await _finish_cancel(engine, project, task)
        return True
    return False


async def _finish_cancel(
    engine: Engine, project: Project, task: LiveTask, why: str | None = None
) -> None:
    task.status = after_cancel(task, engine.wall(), *([why] if why else []))
    await _save(engine, task)
    _touch(engine, project, task)
    await _task_event(engine, task, "Cancelled", task.status.message or "")
    for member in task.spec.members:
        request = engine.requests.get(f"{member.namespace}/{member.name}")
        if request is not None and request.uid == member.uid:
            await engine.event(
                request, "Requeued",
                f"MixpanelTask {task.name} was cancelled (a request packed with this one was "
                f"deleted); ids {member.start}-{member.end - 1} are submitted again",
            )  # fmt: skip


async def _create_one(engine: Engine, project: Project) -> bool:
    """Send again a task whose create is due, else plan and send a new one."""
    now = engine.wall()
    for task in sorted(project.tasks.values(), key=lambda t: t.spec.sequence):
        if task.phase is not TaskPhase.CREATING or task.name in engine.inflight:
            continue
        due = task.status.next_attempt_at
        if due is not None and due > now:
            continue
        ids = _member_ids(engine, project, task)
        if ids is None:
            continue  # a member is not known yet, or gone (then it is cancelled first)
        if keyed_digest(engine.key, _flat(ids)) != task.spec.ids_digest and task.spec.ids_digest:
            await _finish_cancel(
                engine, project, task,
                "the ids of a request it was for are not those first sent; not sent again",
            )  # fmt: skip
            return True
        await _send(engine, project, task, ids)
        return True
    new = _next_new_task(engine, project)
    if new is None:
        return False
    written = await _write_task(engine, project, new)
    if written is None:
        return False
    ids = _member_ids(engine, project, written)
    assert ids is not None
    await _send(engine, project, written, ids)
    return True


def _flat(ids: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(i for chunk in ids for i in chunk))


def _next_new_task(engine: Engine, project: Project) -> NewTask | None:
    """The next task to make from waiting ids: a full one, a retry, or any once the packing
    window has closed (quiet for ``packing_quiet`` or open for ``packing_max_wait``).

    Called before every Mixpanel call and on every wake-up, i.e. for each request kopf hands
    in during an apply of thousands: a group of deletions that can yield no task yet (window
    open, fewer ids than a full task, no retry) is counted, not planned."""
    assert project.spec is not None
    limit = project.spec.max_ids_per_request
    settings = engine.settings
    now = engine.clock()
    live_retrievals = sum(
        1 for t in project.tasks.values() if not t.is_deletion and not t.phase.terminal
    )
    for deletion in (True, False):
        if not deletion and live_retrievals >= project.spec.max_outstanding_retrievals:
            break
        groups: dict[tuple[object, ...], list[tuple[Request, PendingSlice]]] = {}
        for key in project.waiting:
            request = engine.requests.get(key)
            if request is None or request.is_deletion != deletion or request.ids is None:
                continue
            coverage = engine.coverage_of(project, request)
            if coverage is None:
                continue
            group = (request.compliance, request.spec.disclosure_type)
            for pending in coverage.pending:
                groups.setdefault(group, []).append((request, pending))
        # The group holding the oldest request first (set order is not stable).
        for items in sorted(groups.values(), key=lambda g: min((r.created, r.key) for r, _ in g)):
            waits = [r.waiting_since or now for r, _ in items]
            closed = (
                now - max(waits) >= settings.packing_quiet
                or now - min(waits) >= settings.packing_max_wait
            )
            if (
                deletion
                and not closed
                and sum(len(p.range) for _, p in items) < limit
                and not any(p.retry_of for _, p in items)
            ):
                continue  # nothing this group could send yet
            items.sort(key=lambda item: (item[0].created, item[0].key, item[1].range))
            waiting = [
                Waiting(r.key, p, tuple((r.ids or [])[p.range.start : p.range.end]))
                for r, p in items
            ]
            for new in plan(waiting, limit, deletion=deletion):
                if closed or new.retry_of or len(new.planned.ids) >= limit or not deletion:
                    return new
    return None


async def _write_task(engine: Engine, project: Project, new: NewTask) -> LiveTask | None:
    """Write the MixpanelTask (one write, whatever its number of members)."""
    assert project.spec is not None
    kind, _, project_name = project.key
    first = engine.requests[new.planned.members[0].owner]
    members = []
    for m in new.planned.members:
        request = engine.requests[m.owner]
        members.append(
            TaskMember(
                namespace=request.namespace,
                name=request.name,
                uid=request.uid,
                start=m.range.start,
                end=m.range.end,
                attempt=m.attempt,
            )
        )
    sequence = max(project.sequence + 1, int(engine.wall().timestamp() * 1000))
    spec = MixpanelTaskSpec(
        project_ref=ProjectReference(kind=kind, name=project_name),
        type=first.spec.type,
        compliance_type=first.compliance,
        disclosure_type=first.spec.disclosure_type,
        members=members,
        id_count=len(new.planned.ids),
        ids_digest=keyed_digest(engine.key, new.planned.ids),
        sequence=sequence,
        retry_of=new.retry_of,
    )
    name = f"{project_name[:200]}-{secrets.token_hex(4)}"
    namespace = tasks_namespace(engine, project)
    try:
        created = await engine.kube.create_task(namespace, name, kind, project_name, spec.to_wire())
    except Exception as err:
        # Nothing was sent. If the write did land (a timeout after the API server took it),
        # the task is found at the next start and sent then, as a possible duplicate.
        log.warning("project %s: writing a task failed: %s", project_name, _kube_brief(err))
        project.hold_until = engine.clock() + engine.settings.retry_interval
        return None
    task = LiveTask(
        name=name,
        spec=spec,
        namespace=namespace,
        uid=(created.get("metadata") or {}).get("uid", ""),
    )
    _index(engine, project, task)
    return task


async def _send(engine: Engine, project: Project, task: LiveTask, ids: list[list[str]]) -> None:
    """The create call and its one write; a 409 follower is written before it."""
    client = client_of(engine, project)
    flat = _flat(ids)
    if task.recovered:
        # Found unanswered after a restart: this send may duplicate the lost one.
        task.status = after_create(
            task, CreateOutcome(CreateResult.LOST), engine.wall(), engine.policy,
            next_sequence=0,
        ).status  # fmt: skip
        task.recovered = False
        if task.phase is TaskPhase.LOST:
            await _save(engine, task)
            _touch(engine, project, task)
            await _task_event(engine, task, "Lost", task.status.message or "", warning=True)
            return
    elif task.status.next_attempt_at is not None:
        # A retry: record that this send may happen, so that a crash before its answer is
        # written is seen as a possible duplicate after the restart.
        task.status = task.status.model_copy(update={"next_attempt_at": None})
        if not await _save(engine, task):
            return
    kind = "deletion" if task.is_deletion else "retrieval"
    await _warm_token(engine, project)
    callbacks = None
    if engine.callbacks_enabled(project):
        assert engine.settings.callback_url is not None
        # A fresh id per call: a resent create must not reuse one Mixpanel may hold already.
        callbacks = StatusCallbacks(str(uuid.uuid4()), (engine.settings.callback_url,))
    engine.inflight.add(task.name)
    try:
        outcome = await _call_create(engine, project, client, task, flat, ids, callbacks)
    finally:
        engine.inflight.discard(task.name)
    now = engine.wall()
    decision = after_create(
        task, outcome, now, engine.policy,
        next_sequence=max(project.sequence + 1, int(now.timestamp() * 1000)),
    )  # fmt: skip
    if callbacks is not None and outcome.result is CreateResult.CREATED:
        # Recorded with the tracking id, in the same write.
        decision = dataclasses.replace(
            decision,
            status=decision.status.model_copy(
                update={"subject_request_id": callbacks.subject_request_id}
            ),
        )
        engine.subjects[callbacks.subject_request_id] = (project.key, task.name)
    if decision.follower is not None:
        spec, status = decision.follower
        follower_ids = []
        for n, rng in outcome.conflicts:
            offset = task.spec.members[n].start
            follower_ids += ids[n][rng.start - offset : rng.end - offset]
        spec = spec.model_copy(
            update={"ids_digest": keyed_digest(engine.key, _flat([follower_ids]))}
        )
        await _write_follower(engine, project, spec, status)
    task.status = decision.status
    await _save(engine, task)
    _touch(engine, project, task)
    if task.phase is TaskPhase.SUBMITTED:
        metrics.IDS_SUBMITTED.labels(kind).inc(len(flat))
        task.interval = _poll_pace(engine, project, task)[0]
        task.next_check = engine.clock() + task.interval
        log.info(
            "project %s: %s task %s (Mixpanel %s) holds %d ids for %d requests",
            project_label(project.key), kind, task.name, task.status.tracking_id,
            len(flat), len(task.spec.members),
        )  # fmt: skip
        await _task_event(
            engine, task, "Created" if not task.status.adopted else "Adopted",
            f"Mixpanel {kind} task {task.status.tracking_id}: {len(flat)} ids of "
            f"{len({m.uid for m in task.spec.members})} requests",
        )  # fmt: skip
    elif task.phase.terminal:
        await _task_event(engine, task, task.phase.value, task.status.message or "", warning=True)


async def _write_follower(
    engine: Engine, project: Project, spec: MixpanelTaskSpec, status: MixpanelTaskStatus
) -> None:
    kind, _, project_name = project.key
    namespace = tasks_namespace(engine, project)
    name = f"{project_name[:200]}-{secrets.token_hex(4)}"
    try:
        created = await engine.kube.create_task(namespace, name, kind, project_name, spec.to_wire())
    except Exception as err:
        # The conflicting ids go back with the rest; the next create tells the same again.
        log.warning("project %s: writing a 409 follower failed: %s", project_name, _kube_brief(err))
        return
    follower = LiveTask(
        name=name, spec=spec, status=status, namespace=namespace,
        uid=(created.get("metadata") or {}).get("uid", ""),
        next_check=engine.clock() + engine.settings.poll_initial,
        interval=engine.settings.poll_initial,
    )  # fmt: skip
    _index(engine, project, follower)
    await _save(engine, follower)


async def _call_create(
    engine: Engine,
    project: Project,
    client: MixpanelPort,
    task: LiveTask,
    flat: list[str],
    ids: list[list[str]],
    callbacks: StatusCallbacks | None = None,
) -> CreateOutcome:
    try:
        if task.is_deletion and callbacks is None:
            created = await client.create_deletion(flat, task.spec.compliance_type)
        elif task.is_deletion:
            created = await client.create_deletion(
                flat, task.spec.compliance_type, callbacks=callbacks
            )
        elif callbacks is None:
            created = await client.create_retrieval(
                flat, task.spec.compliance_type, task.spec.disclosure_type
            )
        else:
            created = await client.create_retrieval(
                flat, task.spec.compliance_type, task.spec.disclosure_type, callbacks=callbacks
            )
    except AmbiguousCreateError:
        return CreateOutcome(CreateResult.LOST)
    except ConflictError as err:
        conflicts = conflict_ranges(task.spec.members, ids, set(err.conflicting_distinct_ids))
        return CreateOutcome(
            CreateResult.CONFLICT,
            conflicts=conflicts,
            conflicting_tasks=tuple(str(t) for t in err.conflicting_task_ids),
        )
    except InvalidRequestError as err:
        return CreateOutcome(CreateResult.REFUSED, message=f"Mixpanel refused the task: {err}")
    except (AuthenticationError, SecretProblem) as err:
        _credentials_failed(engine, project, err)
        return CreateOutcome(CreateResult.NOT_CREATED, message="the OAuth token could not be used")
    except MixpanelError as err:
        log.warning(
            "project %s: create failed, nothing was created: %s",
            project_label(project.key), _brief(err),
        )  # fmt: skip
        project.hold_until = engine.clock() + engine.settings.retry_interval
        return CreateOutcome(CreateResult.NOT_CREATED, message=f"not created: {_brief(err)}")
    return CreateOutcome(CreateResult.CREATED, tracking_id=created.tracking_id)


# ---------------------------------------------------------------------- polling


async def _poll_one(engine: Engine, project: Project) -> bool:
    now = engine.clock()
    due = [
        t for t in project.tasks.values()
        if not t.phase.terminal and t.status.tracking_id and t.next_check <= now
    ]  # fmt: skip
    if not due:
        return False
    task = min(due, key=lambda t: t.next_check)
    client = client_of(engine, project)
    assert task.status.tracking_id is not None
    await _warm_token(engine, project)
    try:
        if task.is_deletion:
            answer = await client.deletion_status(task.status.tracking_id)
        else:
            answer = await client.retrieval_status(task.status.tracking_id)
    except (AuthenticationError, SecretProblem) as err:
        _credentials_failed(engine, project, err)
        return False
    except MixpanelError as err:
        # Backs off as if nothing changed, and says so on the task (once, not per failure).
        initial, factor, longest = _poll_pace(engine, project, task)
        task.interval = next_interval(
            task.interval or initial, False, initial, max(factor, 2.0), longest
        )  # fmt: skip
        task.next_check = engine.clock() + task.interval
        log.warning(
            "task %s: status check failed: %s; again in %.0fs", task.name, _brief(err),
            task.interval,
        )  # fmt: skip
        if not (task.status.message or "").startswith(CHECKS_FAIL):
            task.status = task.status.model_copy(
                update={"message": f"{CHECKS_FAIL} ({_brief(err)}); asked again, less often"}
            )
            await _save(engine, task)
        return True
    state = answer.state
    before = task.phase
    changed = state is not task.status.mixpanel_state
    initial, factor, longest = _poll_pace(engine, project, task)
    task.interval = next_interval(
        task.interval or initial, changed, initial, factor, longest
    )  # fmt: skip
    task.next_check = engine.clock() + task.interval
    if state is TaskState.REVOKED:
        # Our own cancel, its answer lost in a crash, or one made outside the operator?
        await _gone_members(engine, project, task, now=True)
    new = after_poll(task, state, engine.wall(), ours_to_cancel=needs_cancel(task, project.gone))
    if (task.status.message or "").startswith(CHECKS_FAIL):
        # Checks work again: the message that said they failed goes.
        base = new or task.status
        if (base.message or "").startswith(CHECKS_FAIL):
            new = base.model_copy(update={"message": None})
    if new is None:
        return True
    link = answer.result_link.get_secret_value() if answer.result_link else None
    stored = True
    if link and state is TaskState.SUCCESS and not task.is_deletion:
        stored = await _store_export(engine, project, task, link)
    if not stored:
        # Not recorded done with its link nowhere: asked again once the request is here.
        task.next_check = engine.clock() + engine.settings.retry_interval
        return True
    task.status = new
    await _save(engine, task)
    if task.phase is not before:
        _touch(engine, project, task)
        if task.phase.terminal:
            outcome = "success" if task.phase is TaskPhase.SUCCEEDED else "failure"
            metrics.IDS_COMPLETED.labels("deletion" if task.is_deletion else "retrieval",
                                         outcome).inc(task.spec.id_count)  # fmt: skip
            if project.spec is not None:
                metrics.observe_task_duration(
                    deletion=task.is_deletion, region=project.spec.region, phase=task.phase,
                    submitted_at=new.submitted_at, completion_time=new.completion_time,
                )  # fmt: skip
            if task.phase is not TaskPhase.SUCCEEDED:
                await _task_event(engine, task, task.phase.value, new.message or "", warning=True)
    return True


def _poll_pace(engine: Engine, project: Project, task: LiveTask) -> tuple[float, float, float]:
    """(first interval, factor, longest interval) of the task's status checks: adaptive, or
    a fixed safety net where Mixpanel's callbacks say when to look."""
    settings = engine.settings
    if task.status.subject_request_id and engine.callbacks_enabled(project):
        return settings.callback_poll_interval, 1.0, settings.callback_poll_interval
    return settings.poll_initial, settings.poll_factor, settings.poll_max


async def _store_export(engine: Engine, project: Project, task: LiveTask, link: str) -> bool:
    """The export link is personal data: into a Secret owned by the request, never status.

    False when the request is not known yet (just after a restart, before kopf handed it in,
    or its ids not read yet): nowhere to put the link, so the task is not recorded done and
    the link is fetched again later. True when stored, or when nobody will want it."""
    member = task.spec.members[0]
    key = f"{member.namespace}/{member.name}"
    request = engine.requests.get(key)
    if request is None or request.uid != member.uid or request.ids is None:
        done = engine.finished.get(key)
        if member.uid in project.gone or (done is not None and done.uid == member.uid):
            return True
        since = task.export_wait_since = task.export_wait_since or engine.clock()
        if engine.clock() - since < EXPORT_WAIT_MAX:
            return False
        log.error(
            "task %s: no request %s to give its export link to after %.0fs; the link is "
            "not kept", task.name, key, engine.clock() - since,
        )  # fmt: skip
        return True
    name = f"{request.name}-export"[:253]
    tracking_id = task.status.tracking_id
    data = {f"link-{tracking_id}": link}
    assert project.spec is not None
    if len(request.ids or ()) <= project.spec.max_ids_per_request:
        data["link"] = link  # the request's one export (its ids fit in one task)
    await engine.kube.put_owned_secret(
        request.ref(), name, data, labels={"app.kubernetes.io/managed-by": "mixpanel-dsr-operator"}
    )
    if request.status.result_secret_ref is None:
        request.status = request.status.model_copy(
            update={"result_secret_ref": LocalObjectReference(name=name)}
        )
        await engine.event(
            request, "ExportReady", f"the export link is in Secret {name} (valid 14 days)"
        )
        engine.notify(request, NotificationEvent.EXPORT_READY, occasion=name, export_secret=name)
    return True


# ---------------------------------------------------------------------- credentials


def client_of(engine: Engine, project: Project) -> MixpanelPort:
    """The project's Mixpanel client; it reads the OAuth token from the Secret when needed."""
    if project.client is not None:
        return project.client
    spec = project.spec
    assert spec is not None
    if spec.api_base_url is not None and not url_allowed(
        spec.api_base_url, engine.settings.allowed_api_urls
    ):
        raise SecretProblem("APIBaseURLNotAllowed", "spec.apiBaseURL is not allowed")

    async def token() -> str:
        return await _oauth_token(engine, project)

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


async def _oauth_token(engine: Engine, project: Project, *, fresh_for: float = 0.0) -> str:
    """The OAuth token, read from its Secret unless read less than ``TOKEN_CACHE_SECONDS``
    ago (and still good for ``fresh_for`` more seconds)."""
    cached = project.token_cache
    if cached and engine.clock() + fresh_for - cached[1] < TOKEN_CACHE_SECONDS:
        return cached[0]
    assert project.spec is not None
    ref = project.spec.credentials_secret_ref
    namespace = project.key[1] or engine.settings.operator_namespace
    value = (await engine.kube.read_secret_key(namespace, ref.name, ref.key)).strip()
    project.token_cache = (value, engine.clock())
    return value


async def _warm_token(engine: Engine, project: Project) -> None:
    """Read the token before the call takes its budget slot, not after: a Secret read
    between the slot and the send delays the call, and the next one (on time) then reaches
    Mixpanel less than a second after it, a 429. A failure is left to the call to report."""
    if not isinstance(project.client, MixpanelClient) or project.spec is None:
        return
    with contextlib.suppress(Exception):
        await _oauth_token(engine, project, fresh_for=_next_slot_in(project) + 1.0)


def _brief(err: Exception) -> str:
    """What a log line may say of a failed call: the error's kind and HTTP status, never
    Mixpanel's text (which may quote ids)."""
    if isinstance(err, SecretProblem):
        return str(err)  # names a Secret and a key, nothing more
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}" + (f" (HTTP {status})" if status else "")


def _kube_brief(err: Exception) -> str:
    status = getattr(err, "status", None)
    return f"HTTP {status}" if isinstance(err, ApiException) else type(err).__name__


def _not_ready(engine: Engine, project: Project, reason: str, message: str) -> None:
    was_ready = project.ready
    project.ready = False
    project.problem = Blocker(reason, message)
    project.token_cache = None
    project.next_verify = engine.clock() + engine.settings.retry_interval
    project.dirty |= project.members
    project.wake.set()  # show it in the project's status at once
    if was_ready:
        log.warning("project %s: not ready: %s", project_label(project.key), reason)


def _credentials_failed(
    engine: Engine, project: Project, err: AuthenticationError | SecretProblem
) -> None:
    """Any call found the credentials unusable: the token's Secret (or its key) is gone or
    unreadable, or Mixpanel refused the token. The project says so, not only the log."""
    if isinstance(err, SecretProblem):
        _not_ready(engine, project, err.reason, str(err))
        return
    spec = project.spec
    expired = bool(spec and spec.token_expires_at and spec.token_expires_at <= engine.wall())
    if expired:
        _not_ready(engine, project, "TokenExpired", "the GDPR OAuth token has expired "
                   "(spec.tokenExpiresAt); make a new one and update the Secret")  # fmt: skip
    elif err.status_code is None:
        _not_ready(engine, project, "TokenRejected", "the OAuth token in the Secret cannot be "
                   "sent (blank, or characters a header cannot carry): check the Secret; "
                   "Mixpanel was not called")  # fmt: skip
    elif project.verified_once:
        _not_ready(engine, project, "TokenExpired", "Mixpanel refused a token it had accepted "
                   f"(HTTP {err.status_code}): expired or revoked; update the Secret")  # fmt: skip
    else:
        _not_ready(engine, project, "TokenRejected", f"Mixpanel refused the OAuth token "
                   f"(HTTP {err.status_code}): check the Secret and the project token")  # fmt: skip


def _shown(url: str) -> str:
    """A URL as a message may show it: scheme, host, port and path; never a user, password,
    query or fragment (they may hold secrets)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"[:200]


def _url_refused(engine: Engine, project: Project) -> bool:
    """A spec.apiBaseURL outside the operator's allowlist: the project is not Ready, and
    neither its Secret is read nor any call made (its token must not go there)."""
    spec = project.spec
    assert spec is not None
    if spec.api_base_url is None or url_allowed(
        spec.api_base_url, engine.settings.allowed_api_urls
    ):
        return False
    _not_ready(
        engine, project, "APIBaseURLNotAllowed",
        f"spec.apiBaseURL {_shown(spec.api_base_url)} is not one of the Mixpanel API URLs this "
        "operator was installed to allow (--allowed-api-base-url); no credentials were read "
        "or sent. Remove it, or ask the operator's installer to allow it",
    )  # fmt: skip
    project.client = None
    return True


async def verify(engine: Engine, project: Project) -> None:
    """Is the Secret readable and the token accepted? Cheap: one status call, not every loop."""
    spec = project.spec
    assert spec is not None
    if _url_refused(engine, project):
        return
    if spec.approval is not None:
        try:
            bound = await engine.kube.policy_bound(APPROVAL_POLICY)
        except Exception as err:
            log.warning("approval policy binding: %s", _kube_brief(err))
            bound = False
        if not bound:
            _not_ready(
                engine, project, "ApprovalPolicyMissing",
                f"spec.approval is set, but the ValidatingAdmissionPolicyBinding {APPROVAL_POLICY} "
                "(installed with crds/ and the chart) is missing or unreadable: without it "
                "spec.requestedBy and spec.approvedBy cannot be trusted",
            )  # fmt: skip
            return
    namespace = project.key[1] or engine.settings.operator_namespace
    ref = spec.credentials_secret_ref
    try:
        value = await engine.kube.read_secret_key(namespace, ref.name, ref.key)
    except SecretProblem as err:
        _not_ready(engine, project, err.reason, str(err))
        return
    # Fresh from the Secret (rotation needs no restart), and read before the call's slot.
    project.token_cache = (value.strip(), engine.clock())
    try:
        await client_of(engine, project).verify_credentials()
    except (AuthenticationError, SecretProblem) as err:
        _credentials_failed(engine, project, err)
        return
    except MixpanelError as err:
        log.warning(
            "project %s: could not verify the token: %s", project_label(project.key), _brief(err)
        )
        project.next_verify = engine.clock() + engine.settings.retry_interval
        return
    if not project.ready:
        project.dirty |= project.members
    project.ready = True
    project.problem = None
    project.verified_once = True
    project.next_verify = engine.clock() + engine.settings.verify_interval
    project.status = project.status.model_copy(update={"last_verified_time": engine.wall()})
