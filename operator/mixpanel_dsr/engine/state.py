"""In-memory mirrors of requests, projects and Mixpanel tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mixpanel_dsr.api.models import (
    DataSubjectRequestSpec,
    DataSubjectRequestStatus,
    MixpanelProjectSpec,
    MixpanelProjectStatus,
    RequestType,
    TaskRecord,
)
from mixpanel_dsr.mixpanel.client import MixpanelClient
from mixpanel_dsr.mixpanel.types import ComplianceType
from mixpanel_dsr.progress import Blocker

ProjectKey = tuple[str, str | None, str]


def project_label(key: ProjectKey) -> str:
    _, namespace, name = key
    return f"{namespace}/{name}" if namespace else f"cluster/{name}"


@dataclass
class Request:
    """A DataSubjectRequest as the engine knows it."""

    key: str
    namespace: str
    name: str
    uid: str
    generation: int | None
    created: datetime
    spec: DataSubjectRequestSpec
    status: DataSubjectRequestStatus
    project: ProjectKey
    records: list[TaskRecord] = field(default_factory=list)
    ids: list[str] | None = None
    blocker: Blocker | None = None
    deleting: bool = False
    #: Monotonic time since when ids have been waiting to be submitted.
    waiting_since: float | None = None
    #: Monotonic time before which an unreadable ids Secret is not read again.
    next_resolve: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


@dataclass
class Task:
    """One Mixpanel task and the request slices it serves."""

    tracking_id: str
    kind: str  # "deletion" | "retrieval"
    batch: str
    members: list[tuple[str, int, int]]
    state: str
    next_check: float
    interval: float


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
    tasks: dict[str, Task] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
