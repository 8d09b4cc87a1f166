"""Fixtures shared by every test folder.

The end-to-end fixtures start a real etcd + kube-apiserver once per session
(binaries built from the pinned Go module on first use, see
mixpanel_dsr.localcluster) and always tear it down.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"


class Kube:
    """kubectl against the session's control plane, as a user would type it."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def run(self, *args: str, input: str | None = None, check: bool = True, **kw: Any):  # type: ignore[no-untyped-def]
        return self.plane.kubectl(*args, input=input, check=check, **kw)

    def apply(self, manifest: dict[str, Any] | str, *, check: bool = True):  # type: ignore[no-untyped-def]
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        result: dict[str, Any] = json.loads(self.run(*args).stdout)
        return result


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        plane.kubectl("apply", "-f", str(CRDS))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/datasubjectrequests.mixpaneldsr.io",
            "crd/mixpanelprojects.mixpaneldsr.io",
            "crd/clustermixpanelprojects.mixpaneldsr.io",
            "crd/mixpaneltasks.mixpaneldsr.io",
            "crd/datasubjectrequestreceipts.mixpaneldsr.io",
        )  # fmt: skip
        yield plane


@pytest.fixture(scope="session")
def solo_control_plane() -> Iterator[ControlPlane]:
    """A second control plane, with the CRDs, where no session-wide operator runs.

    For tests that run an operator of their own (the image, the chart's RBAC): on the
    shared one a cluster-wide operator would also act on their objects (and theirs on
    every other test's ClusterMixpanelProjects). Started only when a test asks for it.
    """
    with ControlPlane() as plane:
        plane.kubectl("apply", "-f", str(CRDS))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"
        )  # fmt: skip
        yield plane


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    return Kube(control_plane)


@pytest.fixture
def namespace(kube: Kube) -> str:
    """A fresh namespace per test (the local control plane has no namespace controller,
    so it is left behind when the session ends with the rest of etcd)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    return name
