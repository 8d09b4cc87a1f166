"""The API as users meet it: CRDs install, examples apply, printer columns and short names work.

Runs against the real kube-apiserver and etcd with the pinned kubectl.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import EXAMPLES, Kube

pytestmark = pytest.mark.e2e


def test_crds_are_established_with_names_and_category(kube: Kube) -> None:
    resources = kube.run("api-resources", "--api-group=mixpaneldsr.io", "-o", "wide").stdout
    assert "datasubjectrequests" in resources
    assert "dsr" in resources
    assert "mixpanelprojects" in resources
    assert "mpp" in resources
    assert "clustermixpanelprojects" in resources
    assert "cmpp" in resources
    assert "privacy" in resources
    names = kube.run("api-resources", "--categories=privacy", "-o", "name").stdout.split()
    assert names == [
        "clustermixpanelprojects.mixpaneldsr.io",
        "datasubjectrequests.mixpaneldsr.io",
        "mixpanelprojects.mixpaneldsr.io",
        "mixpaneltasks.mixpaneldsr.io",
    ]


def test_every_example_manifest_applies(kube: Kube) -> None:
    manifests = sorted(p for p in EXAMPLES.rglob("*.yaml") if _is_manifest(p))
    assert len(manifests) >= 8
    for path in manifests:
        kube.run("apply", "-f", str(path))
    dsrs = json.loads(kube.run("get", "dsr", "-n", "privacy", "-o", "json").stdout)["items"]
    assert {d["metadata"]["name"] for d in dsrs} >= {"priv-1234-erase", "priv-1235-access"}
    # Defaults from the schema are applied by the API server.
    erase = kube.get("dsr", "priv-1234-erase", "privacy")
    assert erase["spec"]["dryRun"] is False
    assert erase["spec"]["projectRef"]["kind"] == "MixpanelProject"
    project = kube.get("mpp", "web-us", "privacy")
    assert project["spec"]["maxIdsPerRequest"] == 2000
    assert project["spec"]["requestInterval"] == "1100ms"


def _is_manifest(path) -> bool:  # type: ignore[no-untyped-def]
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return bool(docs) and all("apiVersion" in d and "kind" in d for d in docs)


def test_get_dsr_shows_printer_columns(kube: Kube, namespace: str) -> None:
    kube.apply(
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": "cols", "namespace": namespace},
            "spec": {"projectRef": {"name": "web"}, "type": "Deletion", "distinctIds": ["a", "b"]},
        }
    )
    status = {
        "status": {
            "phase": "InProgress",
            "progress": "1/2",
            "idsTotal": 2,
            "idsDone": 1,
            "deadline": "2026-12-28T09:00:00Z",
        }
    }
    kube.run(
        "patch", "dsr", "cols", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    lines = kube.run("get", "dsr", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "PROJECT", "PHASE", "DONE", "DEADLINE", "AGE"]
    row = lines[1].split()
    assert row[:6] == ["cols", "Deletion", "web", "InProgress", "1/2", "2026-12-28T09:00:00Z"]
    assert "<invalid>" not in lines[1]
    wide = kube.run("get", "dsr", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-2:] == ["COMPLIANCE", "READY"]
    # The same object answers to its short name and to the privacy category, across namespaces.
    assert "cols" in kube.run("get", "privacy", "-A").stdout


def test_get_projects_shows_printer_columns(kube: Kube, namespace: str) -> None:
    kube.apply(
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "MixpanelProject",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"token": "abc", "region": "EU", "credentialsSecretRef": {"name": "s"}},
        }
    )
    lines = kube.run("get", "mpp", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "REGION", "READY", "REASON", "TOKEN", "EXPIRES", "AGE"]
    assert lines[1].split()[:2] == ["p", "EU"]
