"""The small interfaces the engine carries out its decisions through.

:class:`mixpanel_dsr.kube.Kube` and :class:`mixpanel_dsr.mixpanel.client.MixpanelClient`
are the real ones; the crash tests run the engine against in-memory ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mixpanel_dsr.mixpanel.responses import CreatedTask, TaskStatus
from mixpanel_dsr.mixpanel.types import ComplianceType, DisclosureType, StatusCallbacks


class KubePort(Protocol):
    async def read_secret_key(self, namespace: str, name: str, key: str) -> str: ...

    async def put_owned_secret(
        self, owner: dict[str, Any], name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None: ...

    async def delete_secret(self, namespace: str, name: str) -> None: ...

    async def get_project(
        self, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None: ...

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def namespace_labels(self, name: str) -> dict[str, str] | None: ...

    async def policy_bound(self, name: str) -> bool: ...

    async def patch_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> bool: ...

    async def list_tasks(self, namespace: str, kind: str, project: str) -> list[dict[str, Any]]: ...

    async def create_task(
        self, namespace: str, name: str, kind: str, project: str, spec: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def delete_task(self, namespace: str, name: str) -> None: ...

    async def delete_request(self, namespace: str, name: str) -> None: ...

    async def create_receipt(
        self, namespace: str, name: str, labels: dict[str, str], spec: dict[str, Any]
    ) -> bool: ...

    async def list_receipts(
        self, namespace: str | None, continue_token: str | None = None
    ) -> tuple[list[Any], str]: ...

    async def list_requests(
        self, namespace: str | None, field_selector: str, continue_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    async def delete_receipt(self, namespace: str, name: str) -> None: ...

    async def event(
        self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None: ...


class MixpanelPort(Protocol):
    async def create_deletion(
        self,
        distinct_ids: Sequence[str],
        compliance_type: ComplianceType | str = ...,
        *,
        callbacks: StatusCallbacks | None = ...,
    ) -> CreatedTask: ...

    async def create_retrieval(
        self,
        distinct_ids: Sequence[str],
        compliance_type: ComplianceType | str = ...,
        disclosure_type: DisclosureType | str | None = ...,
        *,
        callbacks: StatusCallbacks | None = ...,
    ) -> CreatedTask: ...

    async def deletion_status(self, tracking_id: str) -> TaskStatus: ...

    async def retrieval_status(self, tracking_id: str) -> TaskStatus: ...

    async def cancel_deletion(self, tracking_id: str) -> None: ...

    async def verify_credentials(self) -> None: ...
