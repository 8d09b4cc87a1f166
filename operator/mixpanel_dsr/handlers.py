"""kopf handlers: the edge where Kubernetes events enter the engine.

The handlers only hand objects to the :class:`~mixpanel_dsr.engine.Engine`;
all state is written by the engine to status (kopf's own bookkeeping lives in
annotations under mixpaneldsr.io, and its return values are never used, so a
structural schema prunes nothing).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mixpanel_dsr.api import GROUP, VERSION
from mixpanel_dsr.engine import Engine
from mixpanel_dsr.kube import Kube
from mixpanel_dsr.settings import Settings

registry = kopf.OperatorRegistry()
log = logging.getLogger(__name__)

DSR = (GROUP, VERSION, "datasubjectrequests")
PROJECT = (GROUP, VERSION, "mixpanelprojects")
CLUSTER_PROJECT = (GROUP, VERSION, "clustermixpanelprojects")
FINALIZER = f"{GROUP}/cancel-tasks"


def _engine(memo: kopf.Memo) -> Engine:
    engine: Engine = memo["engine"]
    return engine


def _body(body: kopf.Body) -> dict[str, Any]:
    return dict(body)


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials as the kubernetes client: in-cluster, or the kubeconfig."""
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 600
    operator_settings: Settings = memo["settings"]
    engine = Engine(operator_settings, Kube(events_namespace=operator_settings.operator_namespace))
    engine.start()
    memo["engine"] = engine


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _engine(memo).stop()


# ---------------------------------------------------------------------- projects


@kopf.on.resume(*PROJECT, registry=registry)
@kopf.on.create(*PROJECT, registry=registry)
@kopf.on.update(*PROJECT, field="spec", registry=registry)
@kopf.on.resume(*CLUSTER_PROJECT, registry=registry)
@kopf.on.create(*CLUSTER_PROJECT, registry=registry)
@kopf.on.update(*CLUSTER_PROJECT, field="spec", registry=registry)
async def project_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _engine(memo).upsert_project(_body(body))


@kopf.on.delete(*PROJECT, optional=True, registry=registry)
@kopf.on.delete(*CLUSTER_PROJECT, optional=True, registry=registry)
async def project_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _engine(memo).remove_project(_body(body))


# ---------------------------------------------------------------------- requests


@kopf.on.resume(*DSR, registry=registry)
@kopf.on.create(*DSR, registry=registry)
@kopf.on.update(*DSR, field="spec", registry=registry)
async def request_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _engine(memo).upsert_request(_body(body))


@kopf.on.delete(*DSR, registry=registry)
async def request_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Runs behind the finalizer: cancel what can still be cancelled, then let go."""
    await _engine(memo).finalize(_body(body))
