"""Vocabulary of Mixpanel's GDPR/CCPA API, shared by the client, the sandbox and the CRD models.

Every value here comes from ../shared/mixpanel-gdpr-api.md (the fact sheet).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Region(StrEnum):
    """A project's data residency region; calls must go to that region's host."""

    US = "US"
    EU = "EU"
    IN = "IN"


#: Base URL of the GDPR API per region (fact sheet, "Hosts").
REGION_BASE_URLS: dict[Region, str] = {
    Region.US: "https://mixpanel.com/api/app",
    Region.EU: "https://eu.mixpanel.com/api/app",
    Region.IN: "https://in.mixpanel.com/api/app",
}


class ComplianceType(StrEnum):
    """Which law a request is made under; Mixpanel's default is GDPR."""

    GDPR = "GDPR"
    CCPA = "CCPA"


class DisclosureType(StrEnum):
    """What a CCPA retrieval discloses; Mixpanel's default is Data."""

    DATA = "Data"
    CATEGORIES = "Categories"
    SOURCES = "Sources"


class TaskState(StrEnum):
    """A Mixpanel task's state as its status endpoint reports it."""

    PENDING = "PENDING"
    STAGING = "STAGING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    NOT_FOUND = "NOT_FOUND"
    UNKNOWN = "UNKNOWN"

    @property
    def cancellable(self) -> bool:
        """Mixpanel accepts a cancel only before the task has started."""
        return self in (TaskState.PENDING, TaskState.STAGING)

    @property
    def terminal(self) -> bool:
        """No further change will come from Mixpanel for this task."""
        return self in (TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED)


#: Most distinct ids Mixpanel accepts in one create call (a project may have a lower limit).
MAX_IDS_PER_REQUEST = 2000


@dataclass(frozen=True)
class StatusCallbacks:
    """What a create call carries for a project with status callbacks (fact sheet: v3.0,
    ``subject_request_id`` a lower-case UUIDv4 unique in the project, up to 5 HTTPS URLs)."""

    subject_request_id: str
    urls: tuple[str, ...]
