"""Prometheus metrics: prefix ``mixpanel_dsr_``, units in names, ``_total`` counters,
no per-request labels (projects are few; requests are many and personal)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
