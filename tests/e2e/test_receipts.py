"""Receipts end to end: the real operator, kube-apiserver and sandbox, and ``kubectl dsr
receipts`` as an auditor runs it. A receipt outlives its request's TTL, cannot be changed,
holds no id, and answers for an erased id and a never-seen one."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import wait_until
from tests.e2e.test_plugin import Plugin
from tests.e2e.test_plugin import plugin as plugin  # the fixture

pytestmark = pytest.mark.e2e

TICKET = "privacy.example.com/ticket"


def receipts_of(kube: Kube, namespace: str) -> list[dict[str, object]]:
    out = kube.run("get", "dsrr", "-n", namespace, "-o", "json").stdout
    items: list[dict[str, object]] = json.loads(out)["items"]
    return items


def test_a_receipt_outlives_its_request_and_answers_for_each_id(
    scenario: Scenario, kube: Kube, plugin: Plugin
) -> None:
    ns = scenario.namespace
    token = scenario.project(receipts={"copyLabels": ["privacy.example.com/"]})
    erased = [f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"]
    manifest = scenario.request_manifest("erase-1", erased, ttlSecondsAfterFinished=1)
    manifest["metadata"]["labels"] = {TICKET: "PRIV-9", "unrelated": "x"}
    kube.apply(manifest)

    # The request finishes, then deletes itself (TTL); its receipt stays.
    wait_until(lambda: receipts_of(kube, ns), timeout=120, what="a receipt")
    wait_until(
        lambda: kube.run("get", "dsr", "erase-1", "-n", ns, check=False).returncode != 0,
        timeout=60, what="the request deleted by its TTL",
    )  # fmt: skip
    (receipt,) = receipts_of(kube, ns)
    spec = receipt["spec"]
    assert isinstance(spec, dict)
    assert spec["outcome"] == "Succeeded"
    assert spec["request"]["name"] == "erase-1"
    assert spec["idCount"] == 2
    assert spec["idsDone"] == 2
    assert spec["deadlineMet"] is True
    assert spec["labels"] == {TICKET: "PRIV-9"}
    assert receipt["metadata"]["labels"][TICKET] == "PRIV-9"
    (task,) = spec["tasks"]
    (mixpanel_task,) = scenario.sandbox.tasks(token)
    assert task["trackingId"] == mixpanel_task["tracking_id"]
    assert task["phase"] == "Succeeded"
    assert task["completedAt"]
    text = json.dumps(receipt)
    assert not any(i in text for i in erased)

    # Immutable: even a cluster admin's change is refused at admission.
    changed = kube.run(
        "patch", "dsrr", receipt["metadata"]["name"], "-n", ns, "--type", "merge",
        "-p", '{"spec":{"outcome":"Failed"}}', check=False,
    )  # fmt: skip
    assert changed.returncode != 0
    assert "a receipt is immutable" in changed.stderr

    # The auditor's view: a CSV with the ticket, the seal checked, each id answered.
    listed = plugin("receipts", "-n", ns, "-o", "csv", "-l", f"{TICKET}=PRIV-9")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.strip().splitlines()
    assert "deadlineMet" in header
    assert "erase-1" in row
    assert f"{TICKET}=PRIV-9" in row
    verified = plugin("receipts", "-n", ns, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 of 1 receipts verified" in verified.stdout
    for distinct_id in erased:
        found = plugin("receipts", "-n", ns, "--check-id", distinct_id)
        assert found.returncode == 0, found.stdout + found.stderr
        assert f"done: request {ns}/erase-1 (Succeeded)" in found.stdout
        assert mixpanel_task["tracking_id"] in found.stdout
        assert distinct_id not in found.stdout + found.stderr
    never = plugin("receipts", "-n", ns, "--check-id", "never-seen-" + uuid.uuid4().hex)
    assert never.returncode == 1
    assert "no receipt holds this id" in never.stdout


def test_a_receipt_not_sealed_by_the_operator_does_not_verify(
    scenario: Scenario, kube: Kube, plugin: Plugin
) -> None:
    ns = scenario.namespace
    scenario.project()
    scenario.request("real", [f"carol-{uuid.uuid4().hex[:8]}"])
    wait_until(lambda: receipts_of(kube, ns), timeout=120, what="a receipt")
    (real,) = receipts_of(kube, ns)
    forged = json.loads(json.dumps(real))
    forged["metadata"] = {"name": "forged", "namespace": ns}
    forged["spec"]["request"]["name"] = "never-asked"
    kube.apply(forged)
    verified = plugin("receipts", "-n", ns, "--verify")
    assert verified.returncode == 1
    assert "NOT the operator's or altered: receipt forged" in verified.stdout
    assert "1 of 2 receipts verified" in verified.stdout
