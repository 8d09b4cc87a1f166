"""Session-wide sandbox and operator processes for the end-to-end tests."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixpanel_dsr.localcluster import ControlPlane
from tests.conftest import Kube
from tests.e2e.operator_harness import Operator, Sandbox, workdir


@pytest.fixture(scope="session")
def e2e_dir() -> Iterator[Path]:
    path = workdir()
    yield path
    if os.environ.get("DSR_E2E_KEEP"):
        print(f"\ne2e logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_server(e2e_dir: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(e2e_dir)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="session")
def operator_process(
    control_plane: ControlPlane, sandbox_server: Sandbox, e2e_dir: Path, kube: Kube
) -> Iterator[Operator]:
    kube.run("create", "namespace", "mixpanel-dsr-system", check=False)
    operator = Operator(e2e_dir, control_plane.kubeconfig, sandbox_server.urls)
    operator.start()
    yield operator
    operator.stop()


@pytest.fixture
def operator(operator_process: Operator) -> Operator:
    """The session's operator, started again if a test killed it."""
    operator_process.ensure_running()
    return operator_process


class Scenario:
    """Builds projects and requests in one test namespace with real kubectl."""

    def __init__(self, kube: Kube, sandbox: Sandbox, namespace: str) -> None:
        self.kube = kube
        self.sandbox = sandbox
        self.namespace = namespace

    def secret(self, name: str, data: dict[str, str], namespace: str | None = None) -> None:
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace or self.namespace},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
        )

    def project(
        self,
        name: str = "proj",
        region: str = "US",
        *,
        oauth: str | None = None,
        secret: str | None = None,
        register: bool = True,
        **spec: Any,
    ) -> str:
        """A MixpanelProject (and, unless secret is given, its Secret); returns its token."""
        token, accepted = self.sandbox.add_project(region) if register else ("unregistered", "x")
        secret_name = secret or f"{name}-gdpr"
        if secret is None:
            self.secret(secret_name, {"token": oauth or accepted})
        self.kube.apply(
            {
                "apiVersion": "mixpaneldsr.io/v1alpha1",
                "kind": "MixpanelProject",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "token": token,
                    "region": region,
                    "credentialsSecretRef": {"name": secret_name},
                    **spec,
                },
            }
        )
        return token

    def request_manifest(
        self, name: str, ids: list[str], project: str = "proj", **spec: Any
    ) -> dict[str, Any]:
        return {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "projectRef": {"name": project},
                "type": "Deletion",
                "distinctIds": ids,
                **spec,
            },
        }

    def request(self, name: str, ids: list[str], project: str = "proj", **spec: Any) -> None:
        self.kube.apply(self.request_manifest(name, ids, project, **spec))

    def dsr(self, name: str) -> dict[str, Any]:
        return self.kube.get("dsr", name, self.namespace)

    def phase(self, name: str) -> str | None:
        phase: str | None = self.dsr(name).get("status", {}).get("phase")
        return phase

    def condition(self, name: str, type_: str, kind: str = "dsr") -> dict[str, Any] | None:
        obj = self.kube.get(kind, name, self.namespace)
        for cond in obj.get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                result: dict[str, Any] = cond
                return result
        return None

    def events(self, name: str) -> list[dict[str, Any]]:
        import json

        out = self.kube.run(
            "get", "events", "-n", self.namespace,
            "--field-selector", f"involvedObject.name={name}", "-o", "json",
        ).stdout  # fmt: skip
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def event_reasons(self, name: str) -> set[str]:
        return {e["reason"] for e in self.events(name)}


@pytest.fixture
def scenario(kube: Kube, sandbox_server: Sandbox, namespace: str, operator: Operator) -> Scenario:
    return Scenario(kube, sandbox_server, namespace)
