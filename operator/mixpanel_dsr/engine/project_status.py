"""A project's status: Ready, token expiry, queue and outstanding counts."""

from __future__ import annotations

from mixpanel_dsr import metrics
from mixpanel_dsr.api.models import Condition
from mixpanel_dsr.conditions import get_condition, remove_condition, set_condition
from mixpanel_dsr.engine.registry import Engine
from mixpanel_dsr.engine.state import Project, project_label


async def write_project_status(engine: Engine, project: Project) -> None:
    if project.spec is None or project.body is None:
        return
    now = engine.wall()
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
    live = [t for t in project.tasks.values() if not t.phase.terminal]
    metrics.OUTSTANDING_TASKS.labels(label).set(len(live))

    failing = engine.outbox.failures(project.key)
    if failing:
        put(
            "NotificationsFailing", True, "WebhookFailing",
            "; ".join(f"endpoint {name}: {why}" for name, why in sorted(failing.items())),
        )  # fmt: skip
    else:
        conds = remove_condition(conds, "NotificationsFailing")

    queued = 0
    for key in project.waiting:
        request = engine.requests.get(key)
        coverage = request.coverage if request else None
        if coverage is not None:
            queued += coverage.pending_ids
    metrics.QUEUED_IDS.labels(label).set(queued)
    after = before.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conds,
            "token_expires_at": expires,
            "queued_ids": queued,
            "outstanding_tasks": len(live),
            "outstanding_retrievals": sum(1 for t in live if not t.is_deletion),
            "notifications_pending": engine.outbox.pending(project.key) if failing else None,
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
