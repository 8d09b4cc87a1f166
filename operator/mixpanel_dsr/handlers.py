"""kopf handlers: the edge where Kubernetes events enter the engine.

The handlers only hand objects to the :class:`~mixpanel_dsr.engine.Engine`;
all state is written by the engine: request and project status, and the
MixpanelTask ledger. kopf writes nothing on the objects.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from mixpanel_dsr.api import GROUP, VERSION
from mixpanel_dsr.engine import Engine
from mixpanel_dsr.engine.state import UNSETTLED_SELECTOR
from mixpanel_dsr.engine.worker import run_worker
from mixpanel_dsr.kube import Kube
from mixpanel_dsr.settings import Settings

registry = kopf.OperatorRegistry()
KEY_ATTEMPTS = 10
KEY_RETRY_SECONDS = 3.0
log = logging.getLogger(__name__)

DSR = (GROUP, VERSION, "datasubjectrequests")
PROJECT = (GROUP, VERSION, "mixpanelprojects")
CLUSTER_PROJECT = (GROUP, VERSION, "clustermixpanelprojects")


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
    # Only event handlers: kopf keeps no finalizer, progress or copy of the spec on the
    # objects (a copy of 5,000 inline ids would pass the annotation limit); the ledger
    # of MixpanelTask objects is what survives a restart.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 600
    operator_settings: Settings = memo["settings"]
    kube = Kube()
    engine = Engine(operator_settings, kube, worker=run_worker)
    engine.key = await _installation_key(kube, operator_settings)
    if await _selectable_phase(kube, operator_settings):
        # Settled requests (Succeeded, Cancelled) stay out of the watch: kopf would parse
        # and remember every one, tens of thousands after a year, for nothing; the engine
        # lists them itself (TTL, export links, metrics).
        settings.watching.field_selectors[DSR] = UNSETTLED_SELECTOR
        engine.watch_settled = False
    engine.start()
    memo["engine"] = engine


async def _installation_key(kube: Kube, settings: Settings) -> bytes:
    """The key for digests of ids; the operator does not start without it."""
    where = f"Secret {settings.operator_namespace}/{settings.key_secret}"
    for attempt in range(1, KEY_ATTEMPTS + 1):
        try:
            return await kube.installation_key(settings.operator_namespace, settings.key_secret)
        except Exception as err:
            reason = f"HTTP {err.status}" if isinstance(err, ApiException) else type(err).__name__
            log.error(
                "cannot read or create the installation key %s (%s; does the namespace exist, "
                "may the operator get and create it?), try %d of %d",
                where, reason, attempt, KEY_ATTEMPTS,
            )  # fmt: skip
            await asyncio.sleep(KEY_RETRY_SECONDS)
    raise kopf.PermanentError(f"no installation key: {where} cannot be read or created")


async def _selectable_phase(kube: Kube, settings: Settings) -> bool:
    """Whether the API server can select requests by status.phase (Kubernetes >= 1.32 with
    this release's CRDs); if not, every request stays in the watch, as before."""
    namespace = settings.watched_namespaces[0] if settings.watched_namespaces else None
    try:
        await kube.list_requests(namespace, UNSETTLED_SELECTOR, limit=1)
    except ApiException as err:
        if err.status != 400:
            raise
        log.warning(
            "the API server cannot select DataSubjectRequests by status.phase (HTTP 400: "
            "Kubernetes older than 1.32, or CRDs older than this release): finished requests "
            "stay in the watch, and the operator's memory grows with them"
        )
        return False
    return True


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _engine(memo).stop()


@kopf.on.event(*PROJECT, registry=registry)
@kopf.on.event(*CLUSTER_PROJECT, registry=registry)
async def project_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    body = dict(event["object"])
    if event["type"] == "DELETED":
        await _engine(memo).remove_project(body)
    else:
        await _engine(memo).upsert_project(body)


@kopf.on.event(*DSR, registry=registry)
async def request_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Created, changed, listed after a restart, or deleted (the engine cancels its live
    deletions; a request deleted while the operator was down is found through the ledger)."""
    body = dict(event["object"])
    engine = _engine(memo)
    if event["type"] != "DELETED":
        await engine.upsert_request(body)
    elif not engine.watch_settled:
        await engine.request_out_of_watch(body)  # deleted, or settled: the engine finds out
    else:
        engine.request_deleted(body)
