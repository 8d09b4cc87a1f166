"""Prometheus metrics: prefix ``mixpanel_dsr_``, units in names, ``_total`` counters,
no per-request labels (projects are few; requests are many and personal)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from mixpanel_dsr.api.models import TaskPhase
from mixpanel_dsr.mixpanel.types import Region

REQUESTS = Gauge(
    "mixpanel_dsr_requests", "DataSubjectRequests known to the operator, by phase", ["phase"]
)
REQUESTS_AT_RISK = Gauge(
    "mixpanel_dsr_requests_deadline_at_risk",
    "Unfinished requests whose statutory deadline is near or past",
    ["state"],
)
IDS_SUBMITTED = Counter(
    "mixpanel_dsr_ids_submitted_total", "Distinct ids sent to Mixpanel in create calls", ["type"]
)
IDS_COMPLETED = Counter(
    "mixpanel_dsr_ids_completed_total",
    "Distinct ids whose Mixpanel task finished, by outcome",
    ["type", "outcome"],
)
MIXPANEL_CALLS = Counter(
    "mixpanel_dsr_mixpanel_requests_total",
    "HTTP requests made to Mixpanel's GDPR API, by endpoint and status code",
    ["endpoint", "code"],
)
MIXPANEL_RATE_LIMITED = Counter(
    "mixpanel_dsr_mixpanel_rate_limited_total", "Mixpanel answers with HTTP 429", ["project"]
)
OLDEST_PENDING = Gauge(
    "mixpanel_dsr_oldest_unfinished_request_age_seconds",
    "Age of the oldest request that has not finished (from receivedAt or creation)",
)
TOKEN_EXPIRY = Gauge(
    "mixpanel_dsr_token_expiry_timestamp_seconds",
    "When the project's GDPR OAuth token expires (Unix time); 0 when unknown",
    ["project"],
)
PROJECT_READY = Gauge(
    "mixpanel_dsr_project_ready", "1 when Mixpanel accepts the project's token", ["project"]
)
OUTSTANDING_TASKS = Gauge(
    "mixpanel_dsr_outstanding_tasks", "Mixpanel tasks submitted and not finished", ["project"]
)
QUEUED_IDS = Gauge(
    "mixpanel_dsr_queued_ids",
    "Distinct ids waiting to be sent to Mixpanel (packing window, budget, retrieval slots)",
    ["project"],
)

#: Mixpanel tasks take minutes in the sandbox and up to 30 days in Mixpanel.
TASK_DURATION_BUCKETS = (
    60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0,
    86400.0, 2 * 86400.0, 4 * 86400.0, 7 * 86400.0, 14 * 86400.0, 21 * 86400.0, 30 * 86400.0,
)  # fmt: skip
TASK_DURATION = Histogram(
    "mixpanel_dsr_task_duration_seconds",
    "How long Mixpanel took over a task: from its acceptance (submittedAt) to the status check "
    "that found it finished (completionTime), by type, region and final phase",
    ["type", "region", "outcome"],
    buckets=TASK_DURATION_BUCKETS,
)

EXPORT_LINKS = Gauge(
    "mixpanel_dsr_export_links",
    "Finished retrievals' export links, by state (valid, expires_soon, expired)",
    ["state"],
)

LEADER = Gauge(
    "mixpanel_dsr_leader",
    "1 while this replica does the work (holds the leader Lease, or runs without leader "
    "election); 0 while it stands by",
)


def endpoint_of(method: str, path: str) -> str:
    """A low-cardinality endpoint label from a request: no tracking ids."""
    kind = "retrieval" if "data-retrievals" in path else "deletion"
    if method == "POST":
        return f"create_{kind}"
    if method == "DELETE":
        return f"cancel_{kind}"
    return f"{kind}_status"


def observe_task_duration(
    *,
    deletion: bool,
    region: Region,
    phase: TaskPhase,
    submitted_at: datetime | None,
    completion_time: datetime | None,
) -> None:
    """One finished Mixpanel task in the duration histogram; nothing for a task Mixpanel
    never accepted (no ``submittedAt``) or that has not finished."""
    if submitted_at is None or completion_time is None or not phase.terminal:
        return
    seconds = max((completion_time - submitted_at).total_seconds(), 0.0)
    kind = "deletion" if deletion else "retrieval"
    TASK_DURATION.labels(kind, region.value, phase.value.lower()).observe(seconds)


NOTIFICATIONS = Counter(
    "mixpanel_dsr_notifications_total",
    "Webhook notification attempts, by project, endpoint and outcome (delivered, retried, "
    "dropped after a day of failures, refused: URL not allowed)",
    ["project", "endpoint", "outcome"],
)
RECEIPTS = Counter(
    "mixpanel_dsr_receipts_total",
    "Receipts of finished requests, by outcome (written, refused by the API server)",
    ["outcome"],
)

CALLBACKS = Counter(
    "mixpanel_dsr_status_callbacks_total",
    "Mixpanel status callbacks received, by outcome (checking: the task is checked now; "
    "unchanged: it says what the task shows; unknown: no task has that subject_request_id; "
    "refused: bad signature or body; standby: this replica does not work now)",
    ["outcome"],
)
