"""A project's status: Ready, token expiry, queue and outstanding counts."""

from __future__ import annotations

from datetime import UTC, datetime

from mixpanel_dsr import metrics
from mixpanel_dsr.api.models import Condition
from mixpanel_dsr.conditions import get_condition, remove_condition, set_condition
from mixpanel_dsr.engine.registry import Engine
from mixpanel_dsr.engine.state import Project, project_label
from mixpanel_dsr.progress import tally


async def write_project_status(engine: Engine, project: Project) -> None:
    if project.spec is None or project.body is None:
        return
    now = datetime.now(UTC)
    generation = project.body["metadata"].get("generation")
    label = project_label(project.key)
    before = project.status
    conds: list[Condition] = list(before.conditions or [])

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, generation=generation, now=now)

    if project.ready:
        put("Ready", True, "TokenAccepted", "the Secret is readable and Mixpanel accepts the token")
        conds = remove_condition(conds, "Stalled")
    elif project.problem:
        put("Ready", False, project.problem.reason, project.problem.message)
        put("Stalled", True, project.problem.reason, project.problem.message)
    else:
        put("Ready", False, "Verifying", "checking the token with Mixpanel")
    if not project.ready and not project.problem:
        put("Reconciling", True, "Verifying", "checking the token with Mixpanel")
    else:
        conds = remove_condition(conds, "Reconciling")

    expires = project.spec.token_expires_at
    if expires is None and project.problem and project.problem.reason == "TokenExpired":
        expires = before.token_expires_at or now
    if expires is not None:
        left = expires - now
        if left.total_seconds() <= 0:
            put(
                "TokenExpiring",
                True,
                "TokenExpired",
                f"the OAuth token expired at {expires:%Y-%m-%d}",
            )
        elif left <= engine.settings.token_warning:
            put(
                "TokenExpiring", True, "TokenExpiresSoon",
                f"the OAuth token expires in {left.days} days ({expires:%Y-%m-%d}); make a new one",
            )  # fmt: skip
        else:
            put("TokenExpiring", False, "TokenValid", f"the OAuth token expires {expires:%Y-%m-%d}")
    metrics.TOKEN_EXPIRY.labels(label).set(expires.timestamp() if expires else 0)
    metrics.PROJECT_READY.labels(label).set(1 if project.ready else 0)
    metrics.OUTSTANDING_TASKS.labels(label).set(len(project.tasks))

    queued = 0
    for request in engine.requests_of(project):
        if request.ids is not None:
            queued += tally(
                len(request.ids), request.records, engine.settings.max_attempts
            ).pending_ids
    after = before.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conds,
            "token_expires_at": expires,
            "queued_ids": queued,
            "outstanding_tasks": len(project.tasks),
            "outstanding_retrievals": sum(
                1 for t in project.tasks.values() if t.kind == "retrieval"
            ),
        }
    )
    if after.to_wire() == before.to_wire():
        return
    project.status = after
    kind, namespace, name = project.key
    await engine.kube.patch_status(kind, namespace, name, after.to_wire())
    ready_before = get_condition(before.conditions, "Ready")
    ready = get_condition(after.conditions, "Ready")
    if ready and (not ready_before or ready_before.reason != ready.reason):
        await engine.kube.event(
            project.body, ready.reason, ready.message, warning=not project.ready
        )
