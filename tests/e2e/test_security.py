"""Tenants of a shared cluster: where credentials may go, and which namespaces a cluster
project serves. Real kube-apiserver, the session's operator, the sandbox as Mixpanel."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import wait_until

pytestmark = pytest.mark.e2e


class Collector:
    """A server of the tenant's: records every request and its Authorization header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                collector.seen.append((self.path, self.headers.get("Authorization", "")))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "ok", "results": {"status": "PENDING"}}')

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/app"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.close()


def test_a_tenants_api_url_gets_no_secret_and_the_project_says_why(
    scenario: Scenario, kube: Kube, collector: Collector
) -> None:
    """A tenant who may only create MixpanelProjects points one at its own server and at an
    unrelated Secret of the namespace: the Secret's value must never leave."""
    scenario.secret("db-password", {"password": "hunter2-database"})
    scenario.project(
        "exfil", secret="db-password", apiBaseURL=collector.url,
        credentialsSecretRef={"name": "db-password", "key": "password"},
    )  # fmt: skip
    scenario.request("lure", ["victim-1"], project="exfil")

    def verdict() -> dict[str, str] | None:
        ready = scenario.condition("exfil", "Ready", kind="mpp")
        return ready if ready and ready["reason"] != "Verifying" else None

    ready = wait_until(verdict, what="the project's Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "APIBaseURLNotAllowed")
    assert "spec.apiBaseURL" in ready["message"]
    stalled = wait_until(lambda: scenario.condition("lure", "Stalled"), what="request Stalled")
    assert stalled["reason"] == "ProjectNotReady"
    assert "spec.apiBaseURL" in stalled["message"]
    # The operator retries a failing project every 2 s here: give it many chances to leak.
    time.sleep(12)
    assert collector.seen == []
    everything = json.dumps(scenario.dsr("lure")) + json.dumps(scenario.events("exfil"))
    assert "hunter2-database" not in everything
    assert not kube.run("get", "mpt", "-n", scenario.namespace, "-o", "name").stdout.strip()


def test_a_cluster_project_serves_only_the_namespaces_it_selects(
    scenario: Scenario, kube: Kube
) -> None:
    ns = scenario.namespace
    token, oauth = scenario.sandbox.add_project("US")
    name = f"shared-{ns}"
    secret = f"{name}-gdpr"
    scenario.secret(secret, {"token": oauth}, namespace="mixpanel-dsr-system")
    kube.run("label", "namespace", ns, "privacy-team=yes")

    def project(selector: dict[str, object] | None) -> None:
        spec: dict[str, object] = {"token": token, "credentialsSecretRef": {"name": secret}}
        if selector is not None:
            spec["namespaceSelector"] = selector
        kube.apply(
            {
                "apiVersion": "mixpaneldsr.io/v1alpha1",
                "kind": "ClusterMixpanelProject",
                "metadata": {"name": name},
                "spec": spec,
            }
        )

    project(None)  # no selector: serves no namespace
    scenario.request(
        "asks", ["cluster-1"], projectRef={"kind": "ClusterMixpanelProject", "name": name}
    )
    stalled = wait_until(lambda: scenario.condition("asks", "Stalled"), what="request Stalled")
    assert stalled["reason"] == "NamespaceNotSelected"
    assert "namespaceSelector" in stalled["message"]
    assert scenario.phase("asks") == "Pending"
    time.sleep(3)
    assert scenario.sandbox.ids(token) == {}
    # Selecting another team's label changes nothing; selecting this namespace lets it through.
    project({"matchLabels": {"privacy-team": "no"}})
    time.sleep(3)
    assert scenario.sandbox.ids(token) == {}
    project({"matchExpressions": [{"key": "privacy-team", "operator": "In", "values": ["yes"]}]})
    wait_until(lambda: scenario.phase("asks") == "Succeeded", timeout=90, what="Succeeded")
    assert list(scenario.sandbox.ids(token)) == ["cluster-1"]
    assert scenario.condition("asks", "Stalled") is None


def test_a_malformed_selector_is_refused_at_admission(kube: Kube) -> None:
    result = kube.apply(
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "ClusterMixpanelProject",
            "metadata": {"name": "bad-selector"},
            "spec": {
                "token": "t",
                "credentialsSecretRef": {"name": "s"},
                "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            },
        },
        check=False,
    )
    assert result.returncode != 0
    assert "In and NotIn need values" in result.stderr


def _people(kube: Kube, ns: str) -> None:
    """alice and carol may ask; bob may approve (the chart's -requester and -approver)."""
    rbac = "rbac.authorization.k8s.io/v1"
    items: list[dict[str, object]] = []
    verbs = {"requester": ["create", "get", "list", "patch"],
             "approver": ["get", "list", "patch", "approve"]}  # fmt: skip
    for role, allowed in verbs.items():
        rule = {"apiGroups": ["mixpaneldsr.io"], "resources": ["datasubjectrequests"]}
        items.append(
            {
                "apiVersion": rbac,
                "kind": "Role",
                "metadata": {"name": role, "namespace": ns},
                "rules": [{**rule, "verbs": allowed}],
            }
        )
    for role, user in (("requester", "alice"), ("requester", "carol"), ("approver", "bob")):
        items.append(
            {
                "apiVersion": rbac,
                "kind": "RoleBinding",
                "metadata": {"name": f"{role}-{user}", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "User", "name": user}],
            }
        )
    kube.apply({"apiVersion": "v1", "kind": "List", "items": items})


def test_four_eyes_an_erasure_waits_for_someone_else_to_approve_it(
    scenario: Scenario, kube: Kube
) -> None:
    ns = scenario.namespace
    token = scenario.project(approval={})
    _people(kube, ns)
    manifest = scenario.request_manifest("erase-alice", ["approval-1"], requestedBy="alice")
    # Naming someone else as the requester is refused at admission.
    forged = {**manifest, "spec": {**manifest["spec"], "requestedBy": "bob"}}
    refused = kube.run("create", "-f", "-", "--as=alice", input=json.dumps(forged), check=False)
    assert refused.returncode != 0
    assert "spec.requestedBy must be your own user name (alice)" in refused.stderr
    kube.run("create", "-f", "-", "--as=alice", input=json.dumps(manifest))
    wait_until(lambda: scenario.phase("erase-alice") == "AwaitingApproval", what="AwaitingApproval")
    ready = scenario.condition("erase-alice", "Ready")
    assert ready is not None
    assert ready["reason"] == "AwaitingApproval"
    assert "requested by alice" in ready["message"]
    assert "AwaitingApproval" in scenario.event_reasons("erase-alice")
    # A retrieval needs no approval here (spec.approval.requiredFor defaults to Deletion).
    scenario.request("export", ["approval-2"], type="Retrieval")
    wait_until(lambda: scenario.phase("export") == "Succeeded", what="the retrieval")
    time.sleep(3)
    assert "approval-1" not in scenario.sandbox.ids(token)  # nothing sent while unapproved

    def approve(user: str, as_user: str) -> str:
        patch = json.dumps({"spec": {"approvedBy": user}})
        args = ["patch", "dsr", "erase-alice", "-n", ns, "--type=merge", "-p", patch]
        result = kube.run(*args, f"--as={as_user}", check=False)
        return "" if result.returncode == 0 else result.stderr

    assert "another person than spec.requestedBy" in approve("alice", "alice")
    assert "may not approve" in approve("carol", "carol")
    assert "your own user name (bob)" in approve("alice", "bob")
    assert approve("bob", "bob") == ""
    wait_until(lambda: scenario.phase("erase-alice") == "Succeeded", what="approved erasure")
    approval = scenario.dsr("erase-alice")["status"]["approval"]
    assert (approval["requestedBy"], approval["approvedBy"]) == ("alice", "bob")
    assert approval["approvedAt"]
    approved = [e for e in scenario.events("erase-alice") if e["reason"] == "Approved"]
    assert approved
    assert "approved by bob (requested by alice)" in approved[0]["message"]
    # Once given, an approval cannot be taken back or handed to someone else.
    dave = '{"spec":{"approvedBy":"dave"}}'
    edited = kube.run(
        "patch", "dsr", "erase-alice", "-n", ns, "--type=merge", "-p", dave, check=False
    )
    assert edited.returncode != 0
    assert "spec.approvedBy cannot be changed" in edited.stderr


def test_without_a_requester_an_erasure_needing_approval_stalls(scenario: Scenario) -> None:
    token = scenario.project(approval={"requiredFor": ["Deletion", "Retrieval"]})
    scenario.request("anonymous", ["approval-3"])
    stalled = wait_until(lambda: scenario.condition("anonymous", "Stalled"), what="Stalled")
    assert stalled["reason"] == "RequesterUnknown"
    assert "spec.requestedBy" in stalled["message"]
    assert scenario.sandbox.ids(token) == {}
