"""The API server as ``kubectl dsr`` reaches it: kubeconfig loading, and kubectl's wording of
refused calls. Shared by every command module."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mixpanel_dsr.api import GROUP, VERSION
from mixpanel_dsr.plugin.core import PluginError

DSR_PLURAL = "datasubjectrequests"
MPT_PLURAL = "mixpaneltasks"
DSR_KIND = f"datasubjectrequest.{GROUP}"
#: Every API call gives up after (connect, read) seconds.
TIMEOUT = (5.0, 30.0)
#: Above this many task references, ``status NAME`` lists the namespace's tasks once
#: instead of reading each.
LIST_TASKS_OVER = 20
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def api_message(err: ApiException) -> str:
    """The API server's own words for a refused call, under a short prefix."""
    message = ""
    try:
        body = json.loads(err.body or "")
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except ValueError:
        pass
    message = message or str(err.reason or "").strip()
    status = err.status or 0
    if status == 404:
        return message if "not found" in message else f"not found: {message}"
    if status == 403:
        return f"forbidden: {message}"
    if status == 401:
        return f"unauthorized: {message or 'the API server refused the credentials'}"
    if status == 409:
        return message if "already exists" in message else f"conflict: {message}"
    if status == 422:
        return f"invalid: {message}"
    if status == 0:
        return f"cannot reach the API server: {message}"
    return f"the API server answered {status}: {message}"


# --------------------------------------------------------------------------- the cluster


def as_object(value: object) -> dict[str, Any]:
    """A JSON object as the custom objects API returns it."""
    return cast(dict[str, Any], value)


def _kubeconfig_present() -> bool:
    paths = os.environ.get("KUBECONFIG", "")
    if any(Path(p).expanduser().exists() for p in paths.split(os.pathsep) if p):
        return True
    return Path("~/.kube/config").expanduser().exists()


class Cluster:
    """The API server, reached as kubectl would: --kubeconfig, $KUBECONFIG or
    ~/.kube/config, with --context; in a pod without a kubeconfig, its service account."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        try:
            if kubeconfig or _kubeconfig_present():
                api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context
                )
                contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig
                )
                chosen = current
                if context:
                    chosen = next((c for c in contexts if c.get("name") == context), current)
                self.namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "")
            else:
                configuration = client.Configuration()
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
                api = client.ApiClient(configuration)
                self.namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except config.ConfigException as err:
            raise PluginError(f"kubeconfig: {err}") from None
        except OSError as err:
            raise PluginError(f"kubeconfig: {err}") from None
        self.namespace = self.namespace or "default"
        self.api = api
        self.custom = client.CustomObjectsApi(api)

    @cached_property
    def core(self) -> client.CoreV1Api:
        """Secrets, for the commands that read or write one. Built on first use: the
        client's CoreV1Api takes about 2 s and 78 MiB to build, which `kubectl dsr get`,
        `status` and `watch` never need."""
        return client.CoreV1Api(self.api)

    # -------------------------------------------------------------- requests

    def get_request(self, namespace: str, name: str) -> dict[str, Any]:
        return as_object(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, DSR_PLURAL, name, _request_timeout=TIMEOUT
            )
        )

    def list_requests(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every request in ``namespace``, or in every namespace when it is None."""
        return self.list_objects(DSR_PLURAL, namespace)

    def list_objects(
        self, plural: str, namespace: str | None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of one of the group's kinds in ``namespace`` (None: in every
        namespace), matching a label ``selector`` if given, read 500 at a time."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": 500, "_request_timeout": TIMEOUT}
            if token:
                kw["_continue"] = token
            if selector:
                kw["label_selector"] = selector
            if namespace is None:
                page = as_object(
                    self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kw)
                )
            else:
                page = as_object(
                    self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, **kw
                    )
                )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def tasks(self, namespace: str, names: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """The MixpanelTasks ``names`` in ``namespace``; None for one gone or unreadable."""
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
        try:
            if len(names) > LIST_TASKS_OVER:
                page = as_object(
                    self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, MPT_PLURAL, _request_timeout=TIMEOUT
                    )
                )
                for item in page.get("items") or []:
                    if item["metadata"]["name"] in found:
                        found[item["metadata"]["name"]] = item
                return found
            for name in names:
                try:
                    found[name] = as_object(
                        self.custom.get_namespaced_custom_object(
                            GROUP, VERSION, namespace, MPT_PLURAL, name, _request_timeout=TIMEOUT
                        )
                    )
                except ApiException as err:
                    if err.status != 404:
                        raise
        except ApiException as err:
            _note(f"warning: cannot read the MixpanelTasks in {namespace}: {api_message(err)}")
        return found
