"""Receipts at the edge: written when a request finishes, removed after their retention.

A request's receipt is written *before* the status that shows it finished: the operator
forgets a finished request (it leaves the working set and is not read again after a
restart), so a receipt not written by then would never be. A receipt that exists already
(written before a crash) is left as it is.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from kubernetes.client.exceptions import ApiException

from mixpanel_dsr import metrics
from mixpanel_dsr.api import GROUP
from mixpanel_dsr.api.models import DataSubjectRequestStatus, ReceiptProject, RequestIdentity
from mixpanel_dsr.engine.ports import KubePort
from mixpanel_dsr.engine.state import Project, Request
from mixpanel_dsr.receipts import Finish, build, receipt_name

log = logging.getLogger(__name__)

#: API answers that no retry will change: the request finishes without its receipt, loudly.
PERMANENT = frozenset({400, 403, 404, 422})
#: Longest label value Kubernetes accepts.
MAX_LABEL_VALUE = 63


class ReceiptWriteFailed(Exception):
    """A receipt could not be written for now; the request's final status waits for it."""


def _labels(request: Request, outcome: str, copied: dict[str, str] | None) -> dict[str, str]:
    labels = dict(copied or {})
    if len(request.name) <= MAX_LABEL_VALUE:
        labels[f"{GROUP}/request"] = request.name
    if len(request.spec.project_ref.name) <= MAX_LABEL_VALUE:
        labels[f"{GROUP}/project"] = request.spec.project_ref.name
    labels[f"{GROUP}/outcome"] = outcome
    return labels


async def issue(
    kube: KubePort,
    key: bytes,
    project: Project,
    request: Request,
    after: DataSubjectRequestStatus,
    *,
    deadline: datetime,
    now: datetime,
    retention: float,
) -> bool:
    """Write the receipt of a request that just finished; True when it exists now.

    Raises :class:`ReceiptWriteFailed` when the API server may take it later.
    """
    spec = project.spec
    names = {ref.name for ref in after.tasks or []}
    finish = Finish(
        request=RequestIdentity(namespace=request.namespace, name=request.name, uid=request.uid),
        project=ReceiptProject(
            kind=request.spec.project_ref.kind,
            name=request.spec.project_ref.name,
            region=spec.region if spec else None,
            token=spec.token if spec else None,
        ),
        spec=request.spec,
        status=after,
        ids=request.ids or [],
        tasks={n: t.status for n, t in project.tasks.items() if n in names},
        labels=request.labels,
        annotations=request.annotations,
        policy=spec.receipts if spec else None,
        received_at=request.received,
        deadline=deadline,
        issued_at=now,
        retention=timedelta(seconds=retention),
    )
    retry = after.last_retry.token if after.last_retry else None
    for part in build(key, finish):
        name = receipt_name(request.name, request.uid, retry, part.part)
        labels = _labels(request, part.outcome.value, part.labels)
        try:
            made = await kube.create_receipt(request.namespace, name, labels, part.to_wire())
        except ApiException as err:
            if err.status in PERMANENT:
                log.error(
                    "request %s: receipt %s refused by the API server (HTTP %s); the request "
                    "finishes without it",
                    request.key, name, err.status,
                )  # fmt: skip
                await kube.event(
                    request.ref(),
                    "ReceiptNotWritten",
                    f"receipt {name} was refused by the API server (HTTP {err.status}): may "
                    "the operator create datasubjectrequestreceipts in this namespace?",
                    warning=True,
                )
                metrics.RECEIPTS.labels("refused").inc()
                return False
            raise ReceiptWriteFailed(f"receipt {name}: HTTP {err.status}") from None
        except Exception as err:
            raise ReceiptWriteFailed(f"receipt {name}: {type(err).__name__}") from None
        if made:
            metrics.RECEIPTS.labels("written").inc()
            log.info("request %s: receipt %s written (%d ids)", request.key, name, len(finish.ids))
    return True


async def sweep(kube: KubePort, now: datetime, namespaces: list[str]) -> int:
    """Remove the receipts whose retention passed, in ``namespaces`` (empty: in every
    namespace); how many were removed."""
    removed = 0
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        token: str | None = None
        while True:
            items, token = await kube.list_receipts(namespace, token)
            for item in items:
                meta, spec = item.get("metadata") or {}, item.get("spec") or {}
                until = spec.get("retainUntil")
                if not until:
                    continue
                if datetime.fromisoformat(str(until).replace("Z", "+00:00")) > now:
                    continue
                await kube.delete_receipt(meta["namespace"], meta["name"])
                removed += 1
            if not token:
                break
    if removed:
        log.info("removed %d receipts past their retention", removed)
    return removed
