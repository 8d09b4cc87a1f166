"""What the engine holds in memory: requests, projects and their ledger of tasks.

Everything here is rebuilt from the API server after a restart: requests from kopf's
listing, tasks from one LIST of MixpanelTask objects per project.
"""

from __future__ import annotations

import asyncio
from dataclasses import InitVar, dataclass, field
from datetime import datetime
from typing import Any

from mixpanel_dsr.api import API_VERSION
from mixpanel_dsr.api.models import (
    DataSubjectRequestSpec,
    DataSubjectRequestStatus,
    MixpanelProjectSpec,
    MixpanelProjectStatus,
    Phase,
    RequestType,
)
from mixpanel_dsr.ledger import Coverage, Slice, Task
from mixpanel_dsr.mixpanel.client import MixpanelClient
from mixpanel_dsr.mixpanel.types import ComplianceType
from mixpanel_dsr.progress import Blocker

ProjectKey = tuple[str, str | None, str]
FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
#: Finished for good: nothing a person does brings them back (a Failed request can be retried).
#: They are kept out of kopf's watch (a field selector on status.phase) and read by a listing.
SETTLED = frozenset({Phase.SUCCEEDED, Phase.CANCELLED})
#: The watch's field selector: every request but the settled ones.
UNSETTLED_SELECTOR = ",".join(f"status.phase!={p.value}" for p in sorted(SETTLED))


def project_label(key: ProjectKey) -> str:
    _, namespace, name = key
    return f"{namespace}/{name}" if namespace else f"cluster/{name}"


@dataclass
class Request:
    """A DataSubjectRequest that is not finished, as the engine knows it."""

    key: str
    namespace: str
    name: str
    uid: str
    generation: int | None
    created: datetime
    spec: DataSubjectRequestSpec
    initial_status: InitVar[DataSubjectRequestStatus]
    project: ProjectKey
    ids: list[str] | None = None
    blocker: Blocker | None = None
    #: Derived from the ledger; None when a task that covers the request changed.
    coverage: Coverage | None = None
    #: Monotonic time since when ids have been waiting to be submitted.
    waiting_since: float | None = None
    #: Monotonic time before which an unreadable ids Secret is not read again.
    next_resolve: float = 0.0
    #: The value of the annotation mixpaneldsr.io/retry as last seen.
    retry_token: str | None = None
    #: The request's labels and (small) annotations, for its receipt to copy from.
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: The status as last written (or about to be), as its JSON: a live request's status
    #: model with its conditions and task references takes some 5 KiB of objects, its JSON
    #: under 1 KiB, and 10,000 requests can be live at once. Read through :attr:`status`.
    _status_json: str = field(default="", init=False, repr=False)
    #: The phase of that status, kept apart: the housekeeping pass reads it for every
    #: request on every tick.
    phase: Phase | None = field(default=None, init=False)

    def __post_init__(self, initial_status: DataSubjectRequestStatus) -> None:
        self.status = initial_status

    @property
    def status(self) -> DataSubjectRequestStatus:
        """A fresh model of the status (change it by assigning a new one)."""
        return DataSubjectRequestStatus.model_validate_json(self._status_json)

    @status.setter
    def status(self, value: DataSubjectRequestStatus) -> None:
        self._status_json = value.model_dump_json(by_alias=True, exclude_none=True)
        self.phase = value.phase

    @property
    def is_deletion(self) -> bool:
        return self.spec.type is RequestType.DELETION

    @property
    def compliance(self) -> ComplianceType:
        return self.spec.compliance_type

    @property
    def received(self) -> datetime:
        return self.spec.received_at or self.created

    def ref(self) -> dict[str, Any]:
        """The object reference Events and owned Secrets need."""
        return {
            "apiVersion": API_VERSION,
            "kind": "DataSubjectRequest",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


@dataclass(slots=True)
class Finished:
    """A finished request: all the engine keeps of it (for TTL, export links and metrics);
    small, as there may be tens of thousands."""

    namespace: str
    name: str
    uid: str
    phase: Phase
    completion_time: datetime | None
    ttl: int | None
    result_secret: str | None
    #: The retry annotation's value as last honoured (a new one brings a Failed request back).
    retried: str | None = None


@dataclass
class LiveTask(Task):
    """A ledger task with what the engine needs to drive it."""

    namespace: str = ""
    uid: str = ""
    #: Monotonic time of the next status check, and the current interval.
    next_check: float = 0.0
    interval: float = 0.0
    #: Found at start-up in Creating with no answer recorded: its create may have been sent.
    recovered: bool = False
    #: Mixpanel refused to cancel it (already started): do not ask again.
    cancel_refused: bool = False
    #: Its status differs from what the API server holds (a write failed): write it again.
    unsaved: bool = False
    #: Monotonic time a finished retrieval began waiting for its request to store its link.
    export_wait_since: float | None = None

    def ref(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "MixpanelTask",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


@dataclass
class Project:
    """A MixpanelProject or ClusterMixpanelProject as the engine knows it."""

    key: ProjectKey
    body: dict[str, Any] | None = None
    spec: MixpanelProjectSpec | None = None
    status: MixpanelProjectStatus = field(default_factory=MixpanelProjectStatus)
    ready: bool = False
    problem: Blocker | None = None
    #: Monotonic time of the next credentials check (0: check now).
    next_verify: float = 0.0
    #: Monotonic time of the next status write when nothing woke the worker.
    next_status_write: float = 0.0
    verified_once: bool = False
    #: True once the API server was asked whether the project exists.
    looked_up: bool = False
    #: Monotonic time before which no create is attempted (after a transient failure).
    hold_until: float = 0.0
    client: MixpanelClient | None = None
    #: The OAuth token as last read from the Secret, and when (monotonic).
    token_cache: tuple[str, float] | None = None
    #: The ledger: every MixpanelTask of the project, by name, once loaded.
    tasks: dict[str, LiveTask] = field(default_factory=dict)
    ledger_loaded: bool = False
    #: Monotonic time the ledger was loaded, and of the next retention check.
    loaded_at: float = 0.0
    next_retention: float = 0.0
    #: Request uid -> its slices in the project's tasks.
    slices: dict[str, list[Slice]] = field(default_factory=dict)
    #: Highest task sequence written so far.
    sequence: int = 0
    #: Requests (keys) of this project: all, those whose ids wait, those whose status
    #: may need writing, and those whose ids are not read yet.
    members: set[str] = field(default_factory=set)
    waiting: set[str] = field(default_factory=set)
    dirty: set[str] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)
    #: Request uids known to be deleted, and uids confirmed to exist.
    gone: set[str] = field(default_factory=set)
    alive: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None

    @property
    def namespace_of_tasks(self) -> str | None:
        return self.key[1]
