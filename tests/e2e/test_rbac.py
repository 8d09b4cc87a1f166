"""Least privilege, proven: every Kubernetes API call the operator makes, and no other, is
granted by the chart, in both RBAC modes.

``NEEDED`` is the exact list of calls (read from ``operator/mixpanel_dsr/kube.py``,
``leader.py``, the engine that calls them, and kopf's own watches); ``DENIED`` a sample of
calls the operator never makes. The tests:

- keep ``NEEDED`` honest: every client method that ``kube.py`` and ``leader.py`` use has its
  rows, and every row naming a method is used there (a new call fails until it is listed);
- show that each grant of the rendered chart is justified by a ``NEEDED`` row ("no other");
- install the chart on a real API server in cluster mode (``watch.allNamespaces: true``) and
  in namespace-scoped mode (``watch.namespaces`` with ``secretNames``) and ask
  ``kubectl auth can-i --as=system:serviceaccount:...`` for every needed call (allowed) and
  every sampled unneeded one (denied);
- run the operator as the cluster-mode ServiceAccount through a retrieval that spans three
  Mixpanel tasks (``tests/e2e/test_chart.py`` does the same in namespace-scoped mode).
"""

from __future__ import annotations

import ast
import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane, Tools, ensure_tools
from tests.e2e.chart_helpers import CHART, REPO, Helm, operator_as, phase, sa_identity, sandbox
from tests.e2e.operator_harness import wait_until

pytestmark = pytest.mark.e2e

# ---------------------------------------------------------------------- the table

G = "mixpaneldsr.io"
DSR = f"datasubjectrequests.{G}"
MPP = f"mixpanelprojects.{G}"
CMPP = f"clustermixpanelprojects.{G}"
MPT = f"mixpaneltasks.{G}"
RECEIPT = f"datasubjectrequestreceipts.{G}"
CRD = "customresourcedefinitions.apiextensions.k8s.io"
LEASE = "leases.coordination.k8s.io"
VAPB = "validatingadmissionpolicybindings.admissionregistration.k8s.io"
APPROVAL_BINDING = "datasubjectrequest-approval.mixpaneldsr.io"

# Where a call goes.
#: kopf's watch of a namespaced kind: the whole cluster in cluster mode, each watched
#: namespace in namespace-scoped mode.
WATCH = "watch"
#: A namespace with requests and MixpanelProjects: any namespace in cluster mode (checked in
#: one no value names), the watched one with ``secretNames`` in namespace-scoped mode.
REQUESTS = "requests"
#: The release namespace (``--operator-namespace``).
RELEASE = "release"
#: A cluster-scoped resource, or a non-resource URL.
CLUSTER = "cluster"
#: Every namespace at once (``--all-namespaces``); only in DENIED.
EVERYWHERE = "everywhere"
#: Namespace-scoped mode only: a namespace that is not watched; only in DENIED.
UNWATCHED = "unwatched"
#: The "default" namespace: where Events about cluster-scoped objects live.
DEFAULT = "default"
#: Namespace-scoped mode only: a watched namespace whose ``secretNames`` are empty.
BARE = "bare"

BOTH = ("cluster", "scoped")
CLUSTER_MODE = ("cluster",)
SCOPED_MODE = ("scoped",)


@dataclass(frozen=True)
class Call:
    """One API call: ``kubectl auth can-i VERB RESOURCE[/NAME] [--subresource=SUB]``.

    ``name`` is a placeholder resolved per release (see :meth:`Release.names`); ``method``
    the ``Kube`` method of kube.py that makes it, or the kubernetes-client method leader.py
    calls it with (None for kopf's own calls and admission checks); ``why`` the code path
    that makes it.
    """

    verb: str
    resource: str
    where: str
    name: str | None = None
    sub: str | None = None
    method: str | None = None
    modes: tuple[str, ...] = BOTH
    why: str = ""

    @property
    def group(self) -> str:
        return self.resource.partition(".")[2]

    @property
    def plural(self) -> str:
        base = self.resource.partition(".")[0]
        return f"{base}/{self.sub}" if self.sub else base

    def __str__(self) -> str:
        target = f"{self.resource}/{self.name}" if self.name else self.resource
        sub = f" --subresource={self.sub}" if self.sub else ""
        return f"{self.verb} {target}{sub} ({self.where})"


NEEDED: list[Call] = [
    # --- kopf: the watches behind handlers.py's @kopf.on.event handlers (an initial LIST,
    # then WATCH), cluster-wide with --all-namespaces, else per --namespace.
    Call("list", DSR, WATCH, why="kopf: @kopf.on.event(datasubjectrequests) -> request_event"),
    Call("watch", DSR, WATCH, why="kopf: @kopf.on.event(datasubjectrequests) -> request_event"),
    Call("list", MPP, WATCH, why="kopf: @kopf.on.event(mixpanelprojects) -> project_event"),
    Call("watch", MPP, WATCH, why="kopf: @kopf.on.event(mixpanelprojects) -> project_event"),
    Call("list", CMPP, CLUSTER, why="kopf: @kopf.on.event(clustermixpanelprojects), both modes"),
    Call("watch", CMPP, CLUSTER, why="kopf: @kopf.on.event(clustermixpanelprojects), both modes"),
    # kopf's resource_observer: CRDs installed or removed while it runs.
    Call("list", CRD, CLUSTER, why="kopf: resource_observer"),
    Call("watch", CRD, CLUSTER, why="kopf: resource_observer"),
    # kopf's namespace_observer, only when not clusterwide (cli.py: --namespace).
    Call("list", "namespaces", CLUSTER, modes=SCOPED_MODE, why="kopf: namespace_observer"),
    Call("watch", "namespaces", CLUSTER, modes=SCOPED_MODE, why="kopf: namespace_observer"),
    # kopf's scan of the served API groups (granted to every authenticated user by
    # Kubernetes' system:discovery, not by the chart).
    Call("get", "/api", CLUSTER, why="kopf: scanning.scan_resources"),
    Call("get", "/api/v1", CLUSTER, why="kopf: scanning.scan_resources"),
    Call("get", "/apis", CLUSTER, why="kopf: scanning.scan_resources"),
    Call("get", f"/apis/{G}/v1alpha1", CLUSTER, why="kopf: scanning.scan_resources"),
    # --- the engine, through kube.py
    Call("get", DSR, REQUESTS, method="get_request",
         why="Kube.get_request <- worker._gone_members: a request a live task names that kopf "
             "did not list (deleted while no operator ran?)"),
    Call("list", DSR, WATCH, method="list_requests",
         why="Kube.list_requests <- Engine.list_settled: the settled requests kopf's "
             "field-selected watch leaves out; handlers._selectable_phase probes it"),
    Call("delete", DSR, REQUESTS, method="delete_request",
         why="Kube.delete_request <- Engine._expire: ttlSecondsAfterFinished"),
    Call("patch", DSR, REQUESTS, sub="status", method="patch_status",
         why="Kube.patch_status <- Engine.commit: phase, conditions, counts, status.tasks"),
    Call("update", DSR, REQUESTS, sub="finalizers",
         why="admission, not a call: Kube.put_owned_secret sets blockOwnerDeletion on the "
             "export Secret, which OwnerReferencesPermissionEnforcement only allows to who may "
             "update the owner's finalizers"),
    Call("get", MPP, REQUESTS, method="get_project",
         why="Kube.get_project <- worker._look_up: a project a request names, before kopf "
             "delivered it"),
    Call("patch", MPP, REQUESTS, sub="status", method="patch_status",
         why="Kube.patch_status <- project_status.write_project_status: Ready, queue and "
             "outstanding counts"),
    Call("get", CMPP, CLUSTER, method="get_project",
         why="Kube.get_project <- worker._look_up, for the cluster kind"),
    Call("patch", CMPP, CLUSTER, sub="status", method="patch_status",
         why="Kube.patch_status <- project_status.write_project_status, for the cluster kind"),
    Call("get", "namespaces", CLUSTER, name="{namespace}", method="namespace_labels",
         why="Kube.namespace_labels <- worker._namespace_selected: a ClusterMixpanelProject's "
             "spec.namespaceSelector against the requesting namespace"),
    Call("get", VAPB, CLUSTER, name="{approval}",
         method="policy_bound",
         why="Kube.policy_bound <- worker: approvals count only while the policy is bound"),
    # The ledger: MixpanelTasks beside their project (MixpanelProject: its namespace;
    # ClusterMixpanelProject: the release namespace, worker.tasks_namespace).
    *[
        call
        for where in (REQUESTS, RELEASE)
        for call in (
            Call("list", MPT, where, method="list_tasks",
                 why="Kube.list_tasks <- worker.load_ledger: one LIST by label per project"),
            Call("create", MPT, where, method="create_task",
                 why="Kube.create_task <- worker._write_task and the 409 follower"),
            Call("delete", MPT, where, method="delete_task",
                 why="Kube.delete_task <- worker.retire_tasks: --task-retention"),
            Call("patch", MPT, where, sub="status", method="patch_status",
                 why="Kube.patch_status <- worker._save: phase, tracking id, Mixpanel state"),
        )
    ],
    # Receipts: one per finished request, beside it, never changed; removed after retention.
    Call("create", RECEIPT, REQUESTS, method="create_receipt",
         why="Kube.create_receipt <- engine.receipts.issue, before a request's final status"),
    Call("delete", RECEIPT, REQUESTS, method="delete_receipt",
         why="Kube.delete_receipt <- engine.receipts.sweep: --receipt-retention"),
    Call("list", RECEIPT, WATCH, method="list_receipts",
         why="Kube.list_receipts <- engine.receipts.sweep, hourly: all namespaces at once "
         "with --all-namespaces, else each watched one"),
    # Secrets: read by name only, never listed.
    Call("get", "secrets", REQUESTS, name="{token}", method="read_secret_key",
         why="Kube.read_secret_key <- worker.verify, worker.client_of: credentialsSecretRef"),
    Call("get", "secrets", REQUESTS, name="{ids}", method="read_secret_key",
         why="Kube.read_secret_key <- Engine.resolve_ids: distinctIdsFrom"),
    Call("get", "secrets", RELEASE, name="{cluster_token}", method="read_secret_key",
         why="Kube.read_secret_key: a ClusterMixpanelProject's credentialsSecretRef"),
    Call("get", "secrets", RELEASE, name="{key}", method="installation_key",
         why="Kube.installation_key <- handlers.startup: --key-secret"),
    Call("create", "secrets", RELEASE, method="installation_key",
         why="Kube.installation_key on the first start"),
    Call("create", "secrets", REQUESTS, method="put_owned_secret",
         why="Kube.put_owned_secret <- worker._store_export: <request>-export"),
    Call("patch", "secrets", REQUESTS, name="{export}", method="put_owned_secret",
         why="Kube.put_owned_secret on 409: the links of a retrieval's later tasks"),
    Call("delete", "secrets", REQUESTS, name="{export}", method="delete_secret",
         why="Kube.delete_secret <- Engine._expire: ttlSecondsAfterFinished"),
    # Events. kopf posts its own (WARNING and above: a handler that raised) in the object's
    # namespace; on a cluster-scoped object in its connection's default namespace, which
    # kopf.login_via_client (handlers.login) leaves unset: "default" (kopf/_cogs/clients/
    # events.py): the DEFAULT row below.
    Call("create", "events", REQUESTS, method="event",
         why="Kube.event on requests, MixpanelProjects and their tasks; kopf's warnings"),
    Call("create", "events", RELEASE, method="event",
         why="Kube.event on a ClusterMixpanelProject's tasks"),
    Call("create", "events", DEFAULT, method="event",
         why="Kube.event on a ClusterMixpanelProject itself: an Event about a cluster-scoped "
             "object must be in \"default\" (also where kopf posts its warnings on it)"),
    # --- leader.py, with --leader-elect (the chart's default)
    Call("create", LEASE, RELEASE, method="create_namespaced_lease",
         why="LeaderElector._try_acquire_or_renew: the first replica makes the Lease"),
    Call("get", LEASE, RELEASE, name="{lease}", method="read_namespaced_lease",
         why="LeaderElector._try_acquire_or_renew, release"),
    Call("update", LEASE, RELEASE, name="{lease}", method="replace_namespaced_lease",
         why="LeaderElector._try_acquire_or_renew (renew, take over), release"),
]  # fmt: skip

DENIED: list[Call] = [
    # Its own kinds: nothing beyond what the engine writes.
    Call("update", MPT, REQUESTS, why="a MixpanelTask's spec is written once"),
    Call("patch", MPT, REQUESTS, why="a MixpanelTask's spec is written once"),
    Call("patch", MPT, RELEASE, why="a MixpanelTask's spec is written once"),
    Call("get", MPT, REQUESTS, why="tasks are only listed, by label"),
    Call("update", MPT, REQUESTS, sub="status", why="status is merge-patched, never replaced"),
    Call("create", DSR, REQUESTS, why="people ask; the operator never does"),
    Call("patch", DSR, REQUESTS, why="a request's spec and metadata are the requester's"),
    Call("update", DSR, REQUESTS, why="a request's spec and metadata are the requester's"),
    Call("update", DSR, REQUESTS, sub="status", why="status is merge-patched, never replaced"),
    Call("approve", DSR, REQUESTS, why="the operator must not approve its own erasures"),
    Call("create", MPP, REQUESTS, why="projects are the installer's"),
    Call("patch", MPP, REQUESTS, why="projects are the installer's"),
    Call("delete", MPP, REQUESTS, why="projects are the installer's"),
    Call("patch", CMPP, CLUSTER, why="projects are the installer's"),
    Call("delete", CMPP, CLUSTER, why="projects are the installer's"),
    Call("patch", CRD, CLUSTER, why="kopf only watches CRDs"),
    Call("delete", CRD, CLUSTER, why="kopf only watches CRDs"),
    Call("delete", VAPB, CLUSTER, name="{approval}",
         why="it must not unbind the policy that checks approvals"),
    Call("list", VAPB, CLUSTER, why="only its one binding is read"),
    # Secrets: never listed or watched; read only by name where a project or request names it.
    Call("list", "secrets", REQUESTS, why="never listed"),
    Call("watch", "secrets", REQUESTS, why="never watched"),
    Call("list", "secrets", EVERYWHERE, why="never listed"),
    Call("watch", "secrets", RELEASE, why="never watched"),
    Call("get", "secrets", REQUESTS, name="unnamed", modes=SCOPED_MODE,
         why="a Secret no secretNames entry names"),
    Call("get", "secrets", BARE, name="{token}", modes=SCOPED_MODE,
         why="secretNames are per namespace"),
    Call("get", "secrets", RELEASE, name="unnamed", modes=SCOPED_MODE,
         why="only the key and clusterProjectSecretNames in the release namespace"),
    Call("delete", "secrets", RELEASE, name="{key}", modes=SCOPED_MODE,
         why="the installation key is never deleted"),
    Call("get", "secrets", UNWATCHED, name="{token}", modes=SCOPED_MODE,
         why="not a watched namespace"),
    Call("create", "secrets", UNWATCHED, modes=SCOPED_MODE, why="not a watched namespace"),
    # Not a watched namespace (namespace-scoped mode).
    Call("list", DSR, EVERYWHERE, modes=SCOPED_MODE, why="only the watched namespaces"),
    Call("patch", DSR, UNWATCHED, sub="status", modes=SCOPED_MODE, why="not watched"),
    Call("create", MPT, UNWATCHED, modes=SCOPED_MODE, why="not watched"),
    Call("create", "events", UNWATCHED, modes=SCOPED_MODE, why="not watched"),
    # Namespaces: read one's labels, nothing more.
    Call("patch", "namespaces", CLUSTER, name="{namespace}", why="only read"),
    Call("create", "namespaces", CLUSTER, why="only read"),
    Call("delete", "namespaces", CLUSTER, name="{namespace}", why="only read"),
    Call("list", "namespaces", CLUSTER, modes=CLUSTER_MODE, why="kopf lists them only "
         "when namespace-scoped"),
    # Leases: only its own, never deleted or listed.
    Call("delete", LEASE, RELEASE, name="{lease}", why="released by update, never deleted"),
    Call("update", LEASE, RELEASE, name="another", why="only its own Lease"),
    Call("get", LEASE, RELEASE, name="another", why="only its own Lease"),
    Call("list", LEASE, RELEASE, why="only its own Lease, by name"),
    # Workloads, configuration, identities, RBAC: none.
    Call("create", "pods", RELEASE, why="no workloads"),
    Call("create", "deployments.apps", REQUESTS, why="no workloads"),
    Call("patch", "deployments.apps", RELEASE, why="not even its own Deployment"),
    Call("patch", "configmaps", REQUESTS, why="no configuration"),
    Call("get", "nodes", CLUSTER, why="nothing of the cluster's"),
    Call("create", "serviceaccounts", RELEASE, sub="token", why="no tokens minted"),
    Call("impersonate", "serviceaccounts", EVERYWHERE, why="no impersonation"),
    Call("impersonate", "users", CLUSTER, why="no impersonation"),
    Call("impersonate", "groups", CLUSTER, why="no impersonation"),
    Call("escalate", "roles.rbac.authorization.k8s.io", REQUESTS, why="no RBAC"),
    Call("bind", "clusterroles.rbac.authorization.k8s.io", CLUSTER, why="no RBAC"),
    Call("create", "clusterrolebindings.rbac.authorization.k8s.io", CLUSTER, why="no RBAC"),
    Call("create", "rolebindings.rbac.authorization.k8s.io", RELEASE, why="no RBAC"),
    Call("patch", "clusterroles.rbac.authorization.k8s.io", CLUSTER, why="no RBAC"),
    Call("delete", "events", REQUESTS, why="Events are only posted"),
]  # fmt: skip


# ---------------------------------------------------------------------- the table is the code

#: The kubernetes-client attributes through which leader.py calls the API.
CLIENT_ATTRIBUTES = {"leader.py": ("_api",)}
#: The private helpers through which every call of kube.py's Kube goes.
KUBE_SENDERS = {"_call", "_page", "_delete"}


def _client_methods() -> dict[str, set[str]]:
    """Every public Kube method of kube.py that calls the API (through its private senders),
    and every client method leader.py uses."""
    found: dict[str, set[str]] = {}
    kube = ast.parse((REPO / "operator" / "mixpanel_dsr" / "kube.py").read_text())
    [cls] = [n for n in kube.body if isinstance(n, ast.ClassDef) and n.name == "Kube"]
    for fn in cls.body:
        if not isinstance(fn, ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr in KUBE_SENDERS
            ):
                found.setdefault(fn.name, set()).add("kube.py")
    for module, attributes in CLIENT_ATTRIBUTES.items():
        path = REPO / "operator" / "mixpanel_dsr" / module
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
                and node.value.attr in attributes
            ):
                found.setdefault(node.attr, set()).add(module)
    return found


def test_the_table_lists_every_call_kube_and_leader_make() -> None:
    used = _client_methods()
    listed = {call.method for call in NEEDED if call.method}
    assert used, "no client call found: did kube.py or leader.py move?"
    assert not set(used) - listed, f"calls missing from NEEDED: {sorted(set(used) - listed)}"
    assert not listed - set(used), (
        f"NEEDED names calls no longer made: {sorted(listed - set(used))}"
    )
    # And the custom-object calls name the kinds the table says they do.
    kube = (REPO / "operator" / "mixpanel_dsr" / "kube.py").read_text()
    for call in NEEDED:
        if call.method and call.group == G:
            assert f'"{call.resource.partition(".")[0]}"' in kube, call


# ---------------------------------------------------------------------- the chart grants no more


@pytest.fixture(scope="session")
def tools() -> Tools:
    return ensure_tools()


def _names(fullname: str, namespace: str) -> dict[str, str]:
    """What the name placeholders of the table stand for, in a release."""
    return {
        "{token}": "web-gdpr",
        "{ids}": "erase-ids",
        "{cluster_token}": "shop-gdpr",
        "{export}": "export-export",
        "{key}": f"{fullname}-key",
        "{lease}": fullname,
        "{namespace}": namespace,
        "{approval}": APPROVAL_BINDING,
    }


def _values(mode: str, watched: str, bare: str) -> dict[str, Any]:
    if mode == "cluster":
        return {"crds": {"install": False}}
    return {
        "crds": {"install": False},
        "watch": {
            "allNamespaces": False,
            "namespaces": [
                {"name": watched, "secretNames": ["web-gdpr", "erase-ids"]},
                {"name": bare},
            ],
        },
        "clusterProjectSecretNames": ["shop-gdpr"],
    }


def _grants(docs: list[dict[str, Any]], namespace: str, sa: str) -> list[tuple[Any, ...]]:
    """(role namespace or None, group, resource, verb, resourceNames) of every rule bound
    to the ServiceAccount ``namespace/sa``."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    grants = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        where = binding["metadata"].get("namespace")  # None: cluster-wide
        role = roles[ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]]
        for rule in role["rules"]:
            for group in rule.get("apiGroups", []):
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.append(
                            (where, group, resource, verb, tuple(rule.get("resourceNames", ())))
                        )
            assert not rule.get("nonResourceURLs"), rule
    return grants


@pytest.mark.parametrize("mode", BOTH)
def test_every_grant_of_the_chart_is_a_call_the_operator_makes(
    tools: Tools, tmp_path: Path, mode: str
) -> None:
    """No other: each rule bound to the chart's ServiceAccount is justified by a NEEDED row
    of its mode, in a namespace where that call goes, for a name that call uses."""
    helm = Helm(tools, tmp_path)
    values = _values(mode, "privacy", "marketing")
    docs = helm.template(values)
    fullname = "rel-mixpanel-dsr-operator"
    names = _names(fullname, "privacy")
    grants = _grants(docs, "ops", fullname)
    assert grants
    watched = {"privacy", "marketing"}
    unjustified = []
    for where, group, resource, verb, resource_names in grants:
        assert "*" not in (group, resource, verb), (where, group, resource, verb)
        scopes = (
            {REQUESTS, WATCH, RELEASE, CLUSTER}
            if where is None
            else {RELEASE}
            if where == "ops"
            else {DEFAULT}
            if where == "default"
            else {REQUESTS, WATCH}
            if where in watched
            else set()
        )
        if not any(
            mode in call.modes
            and call.where in scopes
            and (call.group, call.plural, call.verb) == (group, resource, verb)
            and (not resource_names or names.get(call.name or "", "") in resource_names)
            for call in NEEDED
        ):
            unjustified.append((where or "cluster-wide", group, resource, verb, resource_names))
    assert not unjustified, f"granted but never used: {unjustified}"


# ---------------------------------------------------------------------- installed: can-i


class Release:
    """A release of the chart on the solo control plane, and its ServiceAccount's view."""

    def __init__(self, plane: ControlPlane, helm: Helm, mode: str, suffix: str) -> None:
        self.plane = plane
        self.helm = helm
        self.mode = mode
        # Short: the ServiceAccount's user name is a certificate CN (at most 64 characters).
        self.release = f"{mode[0]}{suffix}"
        self.ops = f"o-{self.release}"
        self.watched = f"w-{self.release}"
        self.bare = f"b-{self.release}"
        self.unwatched = f"u-{self.release}"
        self.fullname = f"{self.release}-mixpanel-dsr-operator"
        self.sa = f"system:serviceaccount:{self.ops}:{self.fullname}"
        self.names = _names(self.fullname, self.watched)

    def install(self) -> None:
        for ns in (self.ops, self.watched, self.bare, self.unwatched):
            self.plane.kubectl("create", "namespace", ns)
        values = _values(self.mode, self.watched, self.bare)
        self.helm.run("install", self.release, str(CHART), "-n", self.ops, values=values)

    def scopes(self, where: str) -> list[list[str]]:
        """kubectl's namespace flags for a ``where`` (several: asked in each)."""
        if where == WATCH:
            if self.mode == "cluster":
                return [["--all-namespaces"]]
            return [["-n", self.watched], ["-n", self.bare]]
        return {
            REQUESTS: [["-n", self.watched]],
            RELEASE: [["-n", self.ops]],
            BARE: [["-n", self.bare]],
            UNWATCHED: [["-n", self.unwatched]],
            DEFAULT: [["-n", "default"]],
            EVERYWHERE: [["--all-namespaces"]],
            CLUSTER: [[]],
        }[where]

    def can(self, call: Call) -> list[tuple[str, bool]]:
        """(the kubectl command, allowed) for each namespace the call goes to."""
        target = call.resource
        if call.name:
            target += "/" + self.names.get(call.name, call.name)
        sub = [f"--subresource={call.sub}"] if call.sub else []
        answers = []
        for flags in self.scopes(call.where):
            args = ["auth", "can-i", call.verb, target, *sub, *flags, f"--as={self.sa}"]
            result = self.plane.kubectl(*args, check=False)
            answer = result.stdout.strip()
            if answer not in ("yes", "no") or "doesn't have a resource type" in result.stderr:
                raise AssertionError(f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}")
            answers.append((" ".join(["kubectl", *args]), answer == "yes"))
        return answers

    def ask(self, calls: list[Call]) -> list[tuple[Call, str, bool]]:
        """Every applicable call, asked in parallel: (call, command, allowed)."""
        applicable = [c for c in calls if self.mode in c.modes]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(self.can, applicable))
        return [(c, cmd, ok) for c, found in zip(applicable, answers, strict=True)
                for cmd, ok in found]  # fmt: skip


def _install(
    mode: str, tools: Tools, plane: ControlPlane, factory: pytest.TempPathFactory
) -> Release:
    helm = Helm(tools, factory.mktemp(f"helm-{mode}"), plane.kubeconfig)
    release = Release(plane, helm, mode, uuid.uuid4().hex[:6])
    release.install()
    return release


@pytest.fixture(scope="module")
def cluster_release(
    tools: Tools, solo_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Release:
    """``watch.allNamespaces: true`` (the chart's default)."""
    return _install("cluster", tools, solo_control_plane, tmp_path_factory)


@pytest.fixture(scope="module")
def scoped_release(
    tools: Tools, solo_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Release:
    """``watch.namespaces`` (one with ``secretNames``, one without) and
    ``clusterProjectSecretNames``."""
    return _install("scoped", tools, solo_control_plane, tmp_path_factory)


@pytest.fixture(params=BOTH)
def release(request: pytest.FixtureRequest) -> Release:
    found: Release = request.getfixturevalue(f"{request.param}_release")
    return found


def test_every_call_the_operator_makes_is_allowed(release: Release) -> None:
    refused = [
        f"{cmd}\n    needed by {call.why}" for call, cmd, ok in release.ask(NEEDED) if not ok
    ]
    assert not refused, f"{release.mode} mode refuses:\n" + "\n".join(refused)


def test_calls_the_operator_never_makes_are_denied(release: Release) -> None:
    asked = release.ask(DENIED)
    assert len({call for call, _, _ in asked}) >= 15
    allowed = [f"{cmd}\n    should not: {call.why}" for call, cmd, ok in asked if ok]
    assert not allowed, f"{release.mode} mode allows:\n" + "\n".join(allowed)


# ---------------------------------------------------------------------- installed: a run


@pytest.fixture
def sandbox_urls(tmp_path: Path) -> Iterator[dict[str, str]]:
    with sandbox(tmp_path) as urls:
        yield urls


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(plane.kubectl("get", *args, "-o", "json").stdout)
    return found


def test_cluster_mode_carries_a_multi_link_export_without_a_403(
    cluster_release: Release, sandbox_urls: dict[str, str], tmp_path: Path
) -> None:
    """The operator as the cluster-mode ServiceAccount, with the Deployment's arguments:
    a retrieval of 3 ids through a ClusterMixpanelProject that takes 1 id per task (3
    MixpanelTasks in the release namespace, 3 links in one export Secret) and a deletion
    whose ids are in a Secret, removed after its TTL."""
    r, plane = cluster_release, cluster_release.plane
    ns, shop = r.watched, f"shop-{r.release}"
    docs: list[dict[str, Any]] = [
        _secret("web-gdpr", ns, {"token": "demo-oauth-us"}),
        _secret("erase-ids", ns, {"ids": "c-1\nc-2\n"}),
        _secret("shop-gdpr", r.ops, {"token": "demo-oauth-in"}),
        {
            "apiVersion": f"{G}/v1alpha1",
            "kind": "MixpanelProject",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "token": "demo-token-us",
                "region": "US",
                "credentialsSecretRef": {"name": "web-gdpr"},
            },
        },
        {
            "apiVersion": f"{G}/v1alpha1",
            "kind": "ClusterMixpanelProject",
            "metadata": {"name": shop},
            "spec": {
                "token": "demo-token-in",
                "region": "IN",
                "credentialsSecretRef": {"name": "shop-gdpr"},
                "maxIdsPerRequest": 1,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            },
        },
        {
            "apiVersion": f"{G}/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": "erase", "namespace": ns},
            "spec": {
                "projectRef": {"name": "web"},
                "type": "Deletion",
                "distinctIdsFrom": {"secretKeyRef": {"name": "erase-ids", "key": "ids"}},
                "ttlSecondsAfterFinished": 5,
            },
        },
        {
            "apiVersion": f"{G}/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": "export", "namespace": ns},
            "spec": {
                "projectRef": {"kind": "ClusterMixpanelProject", "name": shop},
                "type": "Retrieval",
                "distinctIds": ["shopper-1", "shopper-2", "shopper-3"],
            },
        },
    ]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    deployment = _get(plane, "deployment", r.fullname, "-n", r.ops)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args
    kubeconfig = sa_identity(plane, r.ops, r.fullname)
    log = tmp_path / "operator.log"
    with operator_as(kubeconfig, args, sandbox_urls, log):
        wait_until(lambda: phase(plane, ns, "export") == "Succeeded", 120, "the retrieval")
        wait_until(
            lambda: plane.kubectl("get", "dsr", "erase", "-n", ns, check=False).returncode != 0,
            60,
            "the deletion to finish and expire",
        )
        exported = _get(plane, "dsr", "export", "-n", ns)
        tasks = _get(plane, "mpt", "-n", r.ops, "-l", f"{G}/project={shop}")["items"]
        assert lease_holder(plane, r) == "chart-test-0"
    status = exported["status"]
    tracking = {t["trackingId"] for t in status["tasks"]}
    assert len(status["tasks"]) == len(tracking) == 3, status["tasks"]
    assert {t["status"]["trackingId"] for t in tasks} == tracking
    assert {t["status"]["phase"] for t in tasks} == {"Succeeded"}
    secret = _get(plane, "secret", status["resultSecretRef"]["name"], "-n", ns)
    links = {k for k in secret["data"] if k.startswith("link-")}
    # One link per task, and no bare "link" (that is for a request whose ids fit one task).
    assert links == {f"link-{t}" for t in tracking}, sorted(secret["data"])
    assert "link" not in secret["data"]
    assert secret["metadata"]["ownerReferences"][0]["name"] == "export"
    text = log.read_text()
    for sign in ("403", "Forbidden", "Not enough permissions"):
        assert sign not in text, text[-3000:]
    # The cluster project's tasks' Events went to the release namespace, the project's own
    # to "default" (an Event about a cluster-scoped object lives there).
    events = _get(plane, "events", "-n", r.ops)["items"]
    recorded = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert recorded >= {(t["metadata"]["name"], "Created") for t in tasks}, recorded
    about_project = [
        e for e in _get(plane, "events", "-n", "default")["items"]
        if e["involvedObject"].get("kind") == "ClusterMixpanelProject"
    ]  # fmt: skip
    assert any(e["reason"] == "TokenAccepted" for e in about_project), about_project
    assert "HTTP 422" not in text


def lease_holder(plane: ControlPlane, r: Release) -> str | None:
    spec = _get(plane, "lease", r.fullname, "-n", r.ops)["spec"]
    holder: str | None = spec.get("holderIdentity")
    return holder
