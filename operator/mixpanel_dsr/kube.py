"""Kubernetes I/O: the few API calls the engine makes, each run off the event loop.

kopf delivers the objects; this module reads Secrets and projects, writes
status, owned Secrets and Events. Nothing here logs a Secret's value.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote, urlencode

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mixpanel_dsr.api import API_VERSION, GROUP, VERSION

log = logging.getLogger(__name__)

PLURALS = {
    "DataSubjectRequest": "datasubjectrequests",
    "MixpanelProject": "mixpanelprojects",
    "ClusterMixpanelProject": "clustermixpanelprojects",
    "MixpanelTask": "mixpaneltasks",
    "DataSubjectRequestReceipt": "datasubjectrequestreceipts",
}
FIELD_MANAGER = "mixpanel-dsr-operator"
#: Every call gives up after this long: (connect, read) seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
#: Labels that tie a MixpanelTask to its project.
PROJECT_KIND_LABEL = f"{GROUP}/project-kind"
PROJECT_NAME_LABEL = f"{GROUP}/project"


class SecretProblem(Exception):
    """A Secret or its key cannot be read; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_config() -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


CORE = "/api/v1"
OURS = f"/apis/{GROUP}/{VERSION}"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
MERGE_PATCH = "application/merge-patch+json"


def _path(*parts: str) -> str:
    return "/".join(quote(part, safe="") if i else part for i, part in enumerate(parts))


def _custom_path(kind: str, namespace: str | None, name: str = "") -> str:
    """The path of one of the group's objects (or, without a name, of its collection)."""
    parts = [OURS] + (["namespaces", namespace] if namespace else []) + [PLURALS[kind]]
    return _path(*parts, *([name] if name else []))


class Kube:
    """Async wrappers over the kubernetes client's ApiClient: plain REST calls with JSON
    bodies. The client's typed API classes are not used: building their request
    validators costs about 90 MiB (CoreV1Api alone 78), the larger part of the operator's
    memory at rest (benchmarks/README.md)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api = api_client or client.ApiClient()
        # The engine's calls have threads of their own, so that they never queue in front
        # of the leader's Lease renewals (which use the loop's default executor).
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kube")

    def _call_sync(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if query:
            path = f"{path}?{urlencode(query)}"
        _, url, headers, _, _ = self._api.param_serialize(
            method, path, header_params=headers, auth_settings=["BearerToken"]
        )
        response = self._api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
        )
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(
                http_resp=response, body=data.decode("utf-8", "replace"), data=None
            )
        return cast(dict[str, Any], json.loads(data)) if data else {}

    async def _call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: self._call_sync(method, path, query, body, content_type)
        )

    # ------------------------------------------------------------------ the installation key

    async def installation_key(self, namespace: str, name: str) -> bytes:
        """The key that digests of ids are made with: read from its Secret, created (random,
        32 bytes) on first start. Never logged."""
        path = _path(CORE, "namespaces", namespace, "secrets", name)
        try:
            secret = await self._call("GET", path)
            return base64.b64decode((secret.get("data") or {})["key"])
        except ApiException as err:
            if err.status != 404:
                raise
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            },
            "type": "Opaque",
            "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        }
        try:
            await self._call("POST", _path(CORE, "namespaces", namespace, "secrets"), body=body)
        except ApiException as err:
            if err.status != 409:  # another replica made it first: read theirs
                raise
        secret = await self._call("GET", path)
        return base64.b64decode((secret.get("data") or {})["key"])

    # ------------------------------------------------------------------ Secrets

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of one key of a Secret; :class:`SecretProblem` if unreadable."""
        try:
            secret = await self._call("GET", _path(CORE, "namespaces", namespace, "secrets", name))
        except ApiException as err:
            if err.status == 404:
                raise SecretProblem(
                    "SecretNotFound", f"Secret {namespace}/{name} not found"
                ) from None
            if err.status == 403:
                raise SecretProblem(
                    "SecretForbidden", f"the operator may not read Secret {namespace}/{name}"
                ) from None
            raise SecretProblem(
                "SecretUnreadable", f"reading Secret {namespace}/{name}: HTTP {err.status}"
            ) from None
        data = secret.get("data") or {}
        if key not in data:
            raise SecretProblem(
                "SecretKeyNotFound", f"Secret {namespace}/{name} has no key {key!r}"
            )
        try:
            return base64.b64decode(data[key]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise SecretProblem(
                "SecretKeyNotText", f"key {key!r} of Secret {namespace}/{name} is not UTF-8 text"
            ) from None

    async def put_owned_secret(
        self, owner: dict[str, Any], name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None:
        """Create a Secret owned by ``owner`` (its namespace, an ownerReference), or add
        ``data`` to it when it exists."""
        meta = owner["metadata"]
        namespace = meta["namespace"]
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "DataSubjectRequest",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "type": "Opaque",
            "stringData": data,
        }
        try:
            await self._call("POST", _path(CORE, "namespaces", namespace, "secrets"), body=body)
        except ApiException as err:
            if err.status != 409:
                raise
            await self._call(
                "PATCH", _path(CORE, "namespaces", namespace, "secrets", name),
                body={"stringData": data}, content_type=MERGE_PATCH,
            )  # fmt: skip

    async def delete_secret(self, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", _path(CORE, "namespaces", namespace, "secrets", name))
        except ApiException as err:
            if err.status != 404:
                raise

    # ------------------------------------------------------------------ custom objects

    async def get_project(
        self, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        scope = None if kind == "ClusterMixpanelProject" else namespace
        try:
            return await self._call("GET", _custom_path(kind, scope, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def patch_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> bool:
        """Merge-patch ``status``; False when the object is gone."""
        try:
            await self._call(
                "PATCH", _custom_path(kind, namespace, name) + "/status",
                body={"status": status}, content_type=MERGE_PATCH,
            )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    async def policy_bound(self, name: str) -> bool:
        """Whether the ValidatingAdmissionPolicyBinding ``name`` exists (it enforces who may
        set requestedBy and approvedBy)."""
        try:
            await self._call("GET", _path(ADMISSION, "validatingadmissionpolicybindings", name))
        except ApiException as err:
            if err.status in (403, 404):
                return False
            raise
        return True

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels; None when it does not exist."""
        try:
            ns = await self._call("GET", _path(CORE, "namespaces", name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict((ns.get("metadata") or {}).get("labels") or {})

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", _custom_path("DataSubjectRequest", namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def list_requests(
        self,
        namespace: str | None,
        field_selector: str,
        continue_token: str | None = None,
        *,
        limit: int = 500,
    ) -> tuple[list[dict[str, Any]], str]:
        """One page (500) of the requests of a namespace (None: of every namespace) that
        ``field_selector`` picks, and the token of the next page ("" after the last)."""
        return await self._page(
            "DataSubjectRequest", namespace, continue_token, field_selector, limit
        )

    async def _page(
        self,
        kind: str,
        namespace: str | None,
        continue_token: str | None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> tuple[list[dict[str, Any]], str]:
        query: dict[str, Any] = {"limit": limit}
        if continue_token:
            query["continue"] = continue_token
        if field_selector:
            query["fieldSelector"] = field_selector
        found = await self._call("GET", _custom_path(kind, namespace), query)
        return list(found.get("items") or []), str(
            (found.get("metadata") or {}).get("continue") or ""
        )

    # ------------------------------------------------------------------ the ledger

    async def list_tasks(self, namespace: str, kind: str, project: str) -> list[dict[str, Any]]:
        """Every MixpanelTask of one project (one LIST, whatever their number)."""
        selector = f"{PROJECT_KIND_LABEL}={kind},{PROJECT_NAME_LABEL}={project}"
        found = await self._call(
            "GET", _custom_path("MixpanelTask", namespace), {"labelSelector": selector}
        )
        return cast(list[dict[str, Any]], found.get("items") or [])

    async def create_task(
        self, namespace: str, name: str, kind: str, project: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """Write a MixpanelTask (its spec; status is written separately); the object made."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "MixpanelTask",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    PROJECT_KIND_LABEL: kind,
                    PROJECT_NAME_LABEL: project,
                    "app.kubernetes.io/managed-by": FIELD_MANAGER,
                },
            },
            "spec": spec,
        }
        return await self._call("POST", _custom_path("MixpanelTask", namespace), body=body)

    # ------------------------------------------------------------------ receipts

    async def create_receipt(
        self, namespace: str, name: str, labels: dict[str, str], spec: dict[str, Any]
    ) -> bool:
        """Write a receipt; False when one of that name exists already (written before a
        restart: receipts are never replaced)."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "DataSubjectRequestReceipt",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {**labels, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            },
            "spec": spec,
        }
        try:
            await self._call(
                "POST", _custom_path("DataSubjectRequestReceipt", namespace), body=body
            )
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    async def list_receipts(
        self, namespace: str | None, continue_token: str | None = None
    ) -> tuple[list[Any], str]:
        """One page (500) of the receipts of a namespace (None: of every namespace), and the
        token of the next page ("" after the last)."""
        return await self._page("DataSubjectRequestReceipt", namespace, continue_token)

    async def delete_receipt(self, namespace: str, name: str) -> None:
        await self._delete("DataSubjectRequestReceipt", namespace, name)

    async def delete_task(self, namespace: str, name: str) -> None:
        await self._delete("MixpanelTask", namespace, name)

    async def delete_request(self, namespace: str, name: str) -> None:
        await self._delete("DataSubjectRequest", namespace, name)

    async def _delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete one of the group's namespaced objects; gone already is fine."""
        try:
            await self._call("DELETE", _custom_path(kind, namespace, name))
        except ApiException as err:
            if err.status != 404:
                raise

    # ------------------------------------------------------------------ Events

    async def event(
        self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Record a core/v1 Event about ``obj``. Failures are logged, never raised."""
        meta = obj["metadata"]
        # An Event about a cluster-scoped object (a ClusterMixpanelProject) must live in
        # "default", as client-go puts it; the API server refuses any other with 422.
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {
            "apiVersion": obj.get("apiVersion", API_VERSION),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v is not None},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
        }
        try:
            await self._call("POST", _path(CORE, "namespaces", namespace, "events"), body=body)
        except ApiException as err:
            log.warning(
                "could not record Event %s on %s: HTTP %s", reason, meta["name"], err.status
            )
