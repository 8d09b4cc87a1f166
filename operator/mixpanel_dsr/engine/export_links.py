"""Export links of finished retrievals: the ``ExportLinkExpiring`` condition and its Events
as the link's validity runs out (``--export-link-warning`` before ``--export-link-ttl``).

Finished requests are otherwise forgotten (see :class:`.state.Finished`); for each one with
an export Secret this reads the request once per process (one GET) and the completion times
of its tasks from the project's ledger, then writes the condition only when it moves: to
``LinkValid`` once, ``LinkExpiresSoon`` and ``LinkExpired`` with a Warning Event each.
Decisions are :mod:`mixpanel_dsr.export_link`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mixpanel_dsr import metrics
from mixpanel_dsr.api import API_VERSION
from mixpanel_dsr.api.models import Condition, DataSubjectRequest, TaskPhase
from mixpanel_dsr.conditions import get_condition
from mixpanel_dsr.engine.ports import KubePort
from mixpanel_dsr.engine.state import Finished, Project, ProjectKey
from mixpanel_dsr.export_link import (
    EVENT_REASONS,
    EXPORT_LINK_EXPIRING,
    LinkState,
    link_condition,
    link_expiry,
    link_state,
)

log = logging.getLogger(__name__)

#: The ``state`` label of ``mixpanel_dsr_export_links``.
METRIC_STATES = {
    LinkState.VALID: "valid",
    LinkState.EXPIRES_SOON: "expires_soon",
    LinkState.EXPIRED: "expired",
}


@dataclass
class Watched:
    """A finished retrieval's export link, as last read and written."""

    uid: str
    secret: str
    generation: int | None
    conditions: list[Condition]
    project: ProjectKey
    #: Names of the Succeeded tasks that gave it export links.
    tasks: list[str]
    completion_time: datetime | None
    state: LinkState | None
    expires_at: datetime | None = None


def _state_of(conditions: list[Condition]) -> LinkState | None:
    found = get_condition(conditions, EXPORT_LINK_EXPIRING)
    known = {state.value for state in LinkState}
    return LinkState(found.reason) if found and found.reason in known else None


class ExportLinks:
    """The finished retrievals whose export links are watched, by request key."""

    def __init__(self, ttl: float, warning: float) -> None:
        self.ttl = timedelta(seconds=ttl)
        self.warning = timedelta(seconds=warning)
        self.watched: dict[str, Watched] = {}

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget requests no longer finished (deleted, or revived by a retry); count the
        links by state for ``mixpanel_dsr_export_links``."""
        keep = set(keys)
        for key in [k for k in self.watched if k not in keep]:
            del self.watched[key]
        for state in LinkState:
            count = sum(1 for w in self.watched.values() if w.state is state)
            metrics.EXPORT_LINKS.labels(METRIC_STATES[state]).set(count)

    async def check(
        self,
        kube: KubePort,
        projects: Mapping[ProjectKey, Project],
        key: str,
        done: Finished,
        now: datetime,
    ) -> None:
        """Bring one finished request's condition up to date; errors wait for the next pass."""
        if done.result_secret is None:
            return
        try:
            await self._check(kube, projects, key, done, now)
        except Exception as err:  # the next housekeeping pass tries again
            log.warning("request %s: export link check failed: %s", key, type(err).__name__)

    async def _check(
        self,
        kube: KubePort,
        projects: Mapping[ProjectKey, Project],
        key: str,
        done: Finished,
        now: datetime,
    ) -> None:
        watched = self.watched.get(key)
        if watched is None or watched.uid != done.uid:
            watched = await self._read(kube, done)
            if watched is None:
                return
            self.watched[key] = watched
        if watched.expires_at is None:
            watched.expires_at = self._expiry(watched, projects)
            if watched.expires_at is None:
                return
        if link_state(watched.expires_at, now, self.warning) is watched.state:
            return
        conditions, announce = link_condition(
            watched.conditions, secret=watched.secret, expires_at=watched.expires_at,
            now=now, warning=self.warning, generation=watched.generation,
        )  # fmt: skip
        wire = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
        written = await kube.patch_status(
            "DataSubjectRequest", done.namespace, done.name, {"conditions": wire}
        )
        if not written:
            del self.watched[key]  # gone
            return
        watched.conditions = conditions
        watched.state = _state_of(conditions)
        if announce is not None:
            message = get_condition(conditions, EXPORT_LINK_EXPIRING)
            ref = {
                "apiVersion": API_VERSION,
                "kind": "DataSubjectRequest",
                "metadata": {"name": done.name, "namespace": done.namespace, "uid": done.uid},
            }
            await kube.event(
                ref, EVENT_REASONS[announce], message.message if message else "", warning=True
            )
            log.info("request %s: export link %s", key, announce.value)

    async def _read(self, kube: KubePort, done: Finished) -> Watched | None:
        body = await kube.get_request(done.namespace, done.name)
        if body is None or body["metadata"].get("uid") != done.uid:
            return None
        request = DataSubjectRequest.model_validate(body)
        status = request.status
        if status is None or status.result_secret_ref is None:
            return None
        ref = request.spec.project_ref
        project: ProjectKey = (
            ("ClusterMixpanelProject", None, ref.name)
            if ref.kind == "ClusterMixpanelProject"
            else ("MixpanelProject", done.namespace, ref.name)
        )
        conditions = list(status.conditions or [])
        return Watched(
            uid=done.uid,
            secret=status.result_secret_ref.name,
            generation=body["metadata"].get("generation"),
            conditions=conditions,
            project=project,
            tasks=[t.name for t in status.tasks or [] if t.phase is TaskPhase.SUCCEEDED],
            completion_time=status.completion_time,
            state=_state_of(conditions),
        )

    def _expiry(self, watched: Watched, projects: Mapping[ProjectKey, Project]) -> datetime | None:
        """From the tasks' completion times in the ledger; the request's completion time when
        its project or tasks are gone. None while the ledger is still loading."""
        project = projects.get(watched.project)
        completions: list[datetime | None] = []
        if project is not None and project.spec is not None:
            if not project.ledger_loaded:
                return None
            completions = [
                project.tasks[name].status.completion_time
                for name in watched.tasks
                if name in project.tasks
            ]
        return link_expiry(completions, watched.completion_time, self.ttl)
