"""The submit path's bookkeeping (invariant 1): intent before the create, tracking id after,
and nothing left half-open when something unexpected breaks in between.

Kubernetes and Mixpanel are replaced by in-memory doubles here; the same path
runs against the real ones in tests/e2e/test_operator.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mixpanel_dsr.api.models import (
    DataSubjectRequestSpec,
    DataSubjectRequestStatus,
    MixpanelProjectSpec,
)
from mixpanel_dsr.engine import Engine
from mixpanel_dsr.engine.state import Project, Request
from mixpanel_dsr.engine.worker import submit
from mixpanel_dsr.mixpanel.responses import CreatedTask
from mixpanel_dsr.mixpanel.types import ComplianceType
from mixpanel_dsr.planning import Pending, Range, pack
from mixpanel_dsr.settings import Settings

KEY = ("MixpanelProject", "ns", "proj")


class MemoryKube:
    """Status writes and Events kept in memory; ``fail_for`` makes a status write fail."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        self.fail_for: set[str] = set()

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Any) -> bool:
        if name in self.fail_for:
            raise RuntimeError("API server unavailable")
        self.statuses[name] = status
        return True

    async def event(self, obj: Any, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((obj["metadata"]["name"], reason))


class StubClient:
    def __init__(self, outcome: CreatedTask | BaseException) -> None:
        self.outcome = outcome
        self.creates: list[list[str]] = []

    async def create_deletion(self, ids: list[str], compliance: ComplianceType) -> CreatedTask:
        self.creates.append(list(ids))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def setup(outcome: CreatedTask | BaseException) -> tuple[Engine, MemoryKube, StubClient, Project]:
    kube = MemoryKube()
    engine = Engine(Settings(), kube)  # type: ignore[arg-type]
    client = StubClient(outcome)
    project = Project(
        key=KEY,
        spec=MixpanelProjectSpec.model_validate(
            {"token": "t", "credentialsSecretRef": {"name": "s"}}
        ),
        ready=True,
        looked_up=True,
    )
    project.client = client  # type: ignore[assignment]
    engine.projects[KEY] = project
    for name, ids in (("a", ["x"]), ("b", ["y", "z"])):
        spec = DataSubjectRequestSpec.model_validate(
            {"projectRef": {"name": "proj"}, "type": "Deletion", "distinctIds": ids}
        )
        engine.requests[f"ns/{name}"] = Request(
            key=f"ns/{name}", namespace="ns", name=name, uid=name, generation=1,
            created=datetime.now(UTC), spec=spec, status=DataSubjectRequestStatus(),
            project=KEY, ids=ids,
        )  # fmt: skip
    return engine, kube, client, project


async def run_submit(engine: Engine, project: Project) -> None:
    pending = [
        Pending(r.key, Range(0, len(r.ids or [])), tuple(r.ids or []))
        for r in engine.requests.values()
    ]
    [planned] = pack(pending, 2000)
    await submit(engine, project, planned, ComplianceType.GDPR, {})


def states(engine: Engine) -> dict[str, list[tuple[str, str | None]]]:
    return {
        k: [(str(r.state), r.tracking_id) for r in req.records]
        for k, req in engine.requests.items()
    }


async def test_tracking_id_lands_in_every_member_after_the_intent() -> None:
    engine, kube, client, project = setup(CreatedTask(tracking_id="42", kind="deletion"))
    await run_submit(engine, project)
    assert client.creates == [["x", "y", "z"]]
    assert states(engine) == {"ns/a": [("PENDING", "42")], "ns/b": [("PENDING", "42")]}
    assert project.tasks["42"].members == [("ns/a", 0, 1), ("ns/b", 0, 2)]
    assert kube.statuses["b"]["tasks"][0]["trackingId"] == "42"
    assert ("a", "TaskCreated") in kube.events


async def test_an_unexpected_error_after_sending_leaves_lost_not_submitting() -> None:
    engine, kube, client, project = setup(RuntimeError("connection pool exploded"))
    with pytest.raises(RuntimeError):
        await run_submit(engine, project)
    assert len(client.creates) == 1
    for request in engine.requests.values():
        [record] = request.records
        assert (record.state, record.ambiguous) == ("Lost", True)
    conditions = {c["type"] for c in kube.statuses["a"]["conditions"]}
    assert "PossibleDuplicate" in conditions
    assert not engine.inflight_batches


async def test_a_failed_intent_write_sends_nothing_and_leaves_nothing_open() -> None:
    engine, kube, client, project = setup(CreatedTask(tracking_id="42", kind="deletion"))
    kube.fail_for.add("b")
    with pytest.raises(RuntimeError, match="API server unavailable"):
        await run_submit(engine, project)
    assert client.creates == []
    assert states(engine) == {"ns/a": [], "ns/b": []}
    assert kube.statuses["a"].get("tasks") == []
