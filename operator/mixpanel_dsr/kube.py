"""Kubernetes I/O: the few API calls the engine makes, each run off the event loop.

kopf delivers the objects; this module reads Secrets and projects, writes
status, owned Secrets and Events. Nothing here logs a Secret's value.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

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


class Kube:
    """Async wrappers over the synchronous kubernetes client."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self._api)
        self.custom = client.CustomObjectsApi(self._api)
        self.admission = client.AdmissionregistrationV1Api(self._api)
        # The engine's calls have threads of their own, so that they never queue in front
        # of the leader's Lease renewals (which use the loop's default executor).
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kube")

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ the installation key

    async def installation_key(self, namespace: str, name: str) -> bytes:
        """The key that digests of ids are made with: read from its Secret, created (random,
        32 bytes) on first start. Never logged."""
        try:
            secret = await self._run(self.core.read_namespaced_secret, name, namespace)
            return base64.b64decode((secret.data or {})["key"])
        except ApiException as err:
            if err.status != 404:
                raise
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=namespace,
                labels={"app.kubernetes.io/managed-by": FIELD_MANAGER},
            ),
            type="Opaque",
            data={"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        )
        try:
            await self._run(self.core.create_namespaced_secret, namespace, body)
        except ApiException as err:
            if err.status != 409:  # another replica made it first: read theirs
                raise
        secret = await self._run(self.core.read_namespaced_secret, name, namespace)
        return base64.b64decode((secret.data or {})["key"])

    # ------------------------------------------------------------------ Secrets

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of one key of a Secret; :class:`SecretProblem` if unreadable."""
        try:
            secret = await self._run(self.core.read_namespaced_secret, name, namespace)
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
        data = secret.data or {}
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
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=meta["namespace"],
                labels=labels,
                owner_references=[
                    client.V1OwnerReference(
                        api_version=API_VERSION,
                        kind="DataSubjectRequest",
                        name=meta["name"],
                        uid=meta["uid"],
                        controller=True,
                        block_owner_deletion=True,
                    )
                ],
            ),
            type="Opaque",
            string_data=data,
        )
        try:
            await self._run(self.core.create_namespaced_secret, meta["namespace"], body)
        except ApiException as err:
            if err.status != 409:
                raise
            patch = {"stringData": data}
            await self._run(self.core.patch_namespaced_secret, name, meta["namespace"], patch)

    async def delete_secret(self, namespace: str, name: str) -> None:
        try:
            await self._run(self.core.delete_namespaced_secret, name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise

    # ------------------------------------------------------------------ custom objects

    async def get_project(
        self, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            if kind == "ClusterMixpanelProject":
                obj = await self._run(
                    self.custom.get_cluster_custom_object, GROUP, VERSION, PLURALS[kind], name
                )
            else:
                obj = await self._run(
                    self.custom.get_namespaced_custom_object,
                    GROUP, VERSION, namespace, PLURALS[kind], name,
                )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def patch_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> bool:
        """Merge-patch ``status``; False when the object is gone."""
        body = {"status": status}
        try:
            if namespace is None:
                await self._run(
                    self.custom.patch_cluster_custom_object_status,
                    GROUP, VERSION, PLURALS[kind], name, body,
                )  # fmt: skip
            else:
                await self._run(
                    self.custom.patch_namespaced_custom_object_status,
                    GROUP, VERSION, namespace, PLURALS[kind], name, body,
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
            await self._run(self.admission.read_validating_admission_policy_binding, name)
        except ApiException as err:
            if err.status in (403, 404):
                return False
            raise
        return True

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels; None when it does not exist."""
        try:
            ns = await self._run(self.core.read_namespace, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(ns.metadata.labels or {})

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self._run(
                self.custom.get_namespaced_custom_object,
                GROUP, VERSION, namespace, PLURALS["DataSubjectRequest"], name,
            )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    # ------------------------------------------------------------------ the ledger

    async def list_tasks(self, namespace: str, kind: str, project: str) -> list[dict[str, Any]]:
        """Every MixpanelTask of one project (one LIST, whatever their number)."""
        selector = f"{PROJECT_KIND_LABEL}={kind},{PROJECT_NAME_LABEL}={project}"
        found = await self._run(
            self.custom.list_namespaced_custom_object,
            GROUP, VERSION, namespace, PLURALS["MixpanelTask"], label_selector=selector,
        )  # fmt: skip
        return cast(list[dict[str, Any]], found.get("items", []))

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
        made = await self._run(
            self.custom.create_namespaced_custom_object,
            GROUP, VERSION, namespace, PLURALS["MixpanelTask"], body,
        )  # fmt: skip
        return cast(dict[str, Any], made)

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
            await self._run(
                self.custom.create_namespaced_custom_object,
                GROUP, VERSION, namespace, PLURALS["DataSubjectRequestReceipt"], body,
            )  # fmt: skip
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
        page: dict[str, Any] = {"limit": 500}
        if continue_token:
            page["_continue"] = continue_token
        plural = PLURALS["DataSubjectRequestReceipt"]
        if namespace is None:
            found = await self._run(
                self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **page
            )
        else:
            found = await self._run(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                **page,
            )  # fmt: skip
        return list(found.get("items", [])), str(
            (found.get("metadata") or {}).get("continue") or ""
        )

    async def delete_receipt(self, namespace: str, name: str) -> None:
        await self._delete("DataSubjectRequestReceipt", namespace, name)

    async def delete_task(self, namespace: str, name: str) -> None:
        await self._delete("MixpanelTask", namespace, name)

    async def delete_request(self, namespace: str, name: str) -> None:
        await self._delete("DataSubjectRequest", namespace, name)

    async def _delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete one of the group's namespaced objects; gone already is fine."""
        try:
            await self._run(
                self.custom.delete_namespaced_custom_object,
                GROUP, VERSION, namespace, PLURALS[kind], name,
            )  # fmt: skip
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
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion", API_VERSION),
                kind=obj.get("kind"),
                name=meta["name"],
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=FIELD_MANAGER),
            reporting_component=FIELD_MANAGER,
            reporting_instance=FIELD_MANAGER,
        )
        try:
            await self._run(self.core.create_namespaced_event, namespace, body)
        except ApiException as err:
            log.warning(
                "could not record Event %s on %s: HTTP %s", reason, meta["name"], err.status
            )
