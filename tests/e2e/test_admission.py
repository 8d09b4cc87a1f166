"""Admission: the real API server refuses what can never work, naming the field.

Every case in tests/admission_cases.py is sent with real kubectl; the message
must name the offending field. Then the immutability of what was asked.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.admission_cases import CASES, Case, dsr, manifest_of
from tests.conftest import Kube

pytestmark = pytest.mark.e2e


def test_there_are_at_least_twenty_invalid_manifests() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_naming_the_field(
    kube: Kube, namespace: str, case: Case
) -> None:
    manifest = manifest_of(case)
    if manifest["kind"] != "ClusterMixpanelProject":
        manifest["metadata"]["namespace"] = namespace
    else:
        manifest["metadata"]["name"] = f"bad-{namespace}"
    result = kube.run("create", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0, f"{case.id} was admitted"
    message = result.stderr
    assert "is invalid" in message, message
    for expected in case.expect:
        assert expected in message, f"{case.id}: {expected!r} not in {message!r}"


def _accepted(kube: Kube, namespace: str, **spec: object) -> str:
    manifest = dsr(**spec)
    manifest["metadata"] = {"name": "asked", "namespace": namespace}
    kube.apply(manifest)
    return "asked"


def _patch(kube: Kube, namespace: str, patch: object, kind: str = "merge"):  # type: ignore[no-untyped-def]
    return kube.run(
        "patch", "dsr", "asked", "-n", namespace, f"--type={kind}", "-p", json.dumps(patch),
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "patch", "field"),
    [
        ({}, {"spec": {"distinctIds": ["u-1", "u-2"]}}, "spec.distinctIds"),
        ({}, {"spec": {"distinctIds": ["someone-else"]}}, "spec.distinctIds"),
        ({}, {"spec": {"type": "Retrieval"}}, "spec.type"),
        ({}, {"spec": {"projectRef": {"name": "other"}}}, "spec.projectRef"),
        ({}, {"spec": {"complianceType": "CCPA"}}, "spec.complianceType"),
        # An optional field that was absent may not be added later ...
        ({}, {"spec": {"receivedAt": "2026-01-01T00:00:00Z"}}, "spec.receivedAt"),
        # ... nor removed once set.
        ({"receivedAt": "2026-01-01T00:00:00Z"}, {"spec": {"receivedAt": None}}, "spec.receivedAt"),
        (
            {"type": "Retrieval", "complianceType": "CCPA"},
            {"spec": {"disclosureType": "Sources"}},
            "spec.disclosureType",
        ),
        (
            {},
            {
                "spec": {
                    "distinctIds": None,
                    "distinctIdsFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                }
            },
            "spec.distinctIds",
        ),
        ({}, {"spec": {"dryRun": True}}, "spec.dryRun"),
    ],
    ids=[
        "add-id", "replace-ids", "type", "project", "compliance", "add-receivedAt",
        "remove-receivedAt", "add-disclosureType", "switch-id-source", "dryRun-on",
    ],
)  # fmt: skip
def test_what_was_asked_cannot_be_edited(
    kube: Kube, namespace: str, spec: dict[str, object], patch: object, field: str
) -> None:
    _accepted(kube, namespace, **spec)
    before = kube.get("dsr", "asked", namespace)["spec"]
    result = _patch(kube, namespace, patch)
    assert result.returncode != 0, "edit was admitted"
    assert (field in result.stderr and "immutable" in result.stderr) or (
        field == "spec.dryRun" and "never switched on" in result.stderr
    ), result.stderr
    assert kube.get("dsr", "asked", namespace)["spec"] == before


def test_fields_meant_to_change_can_change(kube: Kube, namespace: str) -> None:
    _accepted(kube, namespace, dryRun=True)
    assert _patch(kube, namespace, {"spec": {"ttlSecondsAfterFinished": 3600}}).returncode == 0
    assert _patch(kube, namespace, {"spec": {"dryRun": False}}).returncode == 0
    spec = kube.get("dsr", "asked", namespace)["spec"]
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["dryRun"] is False
    # Labels and annotations (metadata) are never part of what was asked.
    kube.run("label", "dsr", "asked", "-n", namespace, "ticket=PRIV-1")


def test_kubectl_edit_of_ids_is_refused(kube: Kube, namespace: str) -> None:
    """The same edit as `kubectl edit` makes: a full replace of the object."""
    _accepted(kube, namespace)
    current = kube.get("dsr", "asked", namespace)
    current["spec"]["distinctIds"] = ["u-1", "u-9"]
    result = kube.run("replace", "-f", "-", input=json.dumps(current), check=False)
    assert result.returncode != 0
    assert "spec.distinctIds is immutable" in result.stderr
