"""The Helm chart: lint and template in both modes, install against a real API server, and
least-privilege RBAC that is still enough to carry a request to Succeeded.

No pods run on the local control plane (no kubelet), so "the operator in the cluster"
is the operator process authenticated as the chart's ServiceAccount, started with the
arguments of the installed Deployment.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane, Tools, ensure_tools
from tests.e2e.chart_helpers import (
    CHART,
    REPO,
    Helm,
    find,
    is_leader,
    operator_as,
    phase,
    sa_identity,
    sandbox,
)
from tests.e2e.operator_harness import wait_until

pytestmark = pytest.mark.e2e

MONITORING = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]
MONITORING += ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
SCOPED = {
    "watch": {
        "allNamespaces": False,
        "namespaces": [
            {"name": "privacy", "secretNames": ["web-us-gdpr-token", "ids"]},
            {"name": "marketing"},
        ],
    },
    "clusterProjectSecretNames": ["shop-in-gdpr-token"],
}


@pytest.fixture(scope="session")
def tools() -> Tools:
    return ensure_tools()


@pytest.fixture(scope="module")
def helm(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tools, tmp_path_factory.mktemp("helm"))


def _rules(role: dict[str, Any]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(apiGroup, resource, verb, resourceNames) for every grant of a Role or ClusterRole."""
    return [
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


# ---------------------------------------------------------------------- lint and template


@pytest.mark.parametrize(
    "values", [{}, SCOPED, {"replicaCount": 2}], ids=["cluster", "scoped", "ha"]
)
def test_helm_lint_strict(helm: Helm, values: dict[str, Any]) -> None:
    result = helm.run("lint", "--strict", str(CHART), values=values)
    assert "0 chart(s) failed" in result.stdout


def test_deployment_is_locked_down(helm: Helm) -> None:
    docs = helm.template()
    (deployment,) = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert "--all-namespaces" in container["args"]
    assert "--operator-namespace=ops" in container["args"]
    assert "--leader-elect" in container["args"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 8080,
        "health": 8081,
    }
    assert pod["serviceAccountName"] == "rel-mixpanel-dsr-operator"
    (sa,) = find(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == pod["serviceAccountName"]
    # Monitoring objects only where the cluster serves their kinds.
    assert not find(docs, "ServiceMonitor")
    assert not find(docs, "PrometheusRule")
    (service,) = find(docs, "Service")
    assert service["spec"]["ports"][0]["port"] == 8080
    (pdb,) = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_status_callbacks_render_a_listener_its_key_and_a_service(helm: Helm) -> None:
    from mixpanel_dsr.mixpanel.callbacks import load_public_key
    from mixpanel_dsr.sandbox.callbacks import new_key, public_pem

    pem = public_pem(new_key())
    url = "https://dsr.example.com/mixpanel/callbacks"
    docs = helm.template({"statusCallbacks": {"url": url, "publicKey": pem}})
    (deployment,) = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert f"--callback-url={url}" in container["args"]
    assert "--callback-port=9443" in container["args"]
    key_file = next(a for a in container["args"] if a.startswith("--callback-key-file="))
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "callbacks-key"]
    assert key_file.split("=", 1)[1].startswith(mount["mountPath"] + "/")
    (config_map,) = [
        c for c in find(docs, "ConfigMap") if c["metadata"]["name"].endswith("-callbacks")
    ]
    load_public_key(config_map["data"]["mixpanel.pem"].encode())  # the PEM arrives intact
    (service,) = [s for s in find(docs, "Service") if s["metadata"]["name"].endswith("-callbacks")]
    assert service["spec"]["ports"][0]["targetPort"] == "callbacks"
    (policy,) = find(docs, "NetworkPolicy")
    assert {"port": "callbacks", "protocol": "TCP"} in [
        port for rule in policy["spec"]["ingress"] for port in rule["ports"]
    ]
    refused = helm.run(
        "template", "rel", str(CHART), values={"statusCallbacks": {"url": url}}, check=False
    )
    assert refused.returncode != 0
    assert "statusCallbacks.publicKey" in refused.stderr
    # Off by default: no listener, no Service, no port.
    (deployment,) = find(helm.template(), "Deployment")
    assert not any(
        "--callback" in a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_crds_are_the_repository_crds_and_can_be_left_out(helm: Helm) -> None:
    rendered = {d["metadata"]["name"]: d for d in find(helm.template(), "CustomResourceDefinition")}
    committed = {
        d["metadata"]["name"]: d
        for path in sorted((REPO / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] == "CustomResourceDefinition"
    }
    assert rendered.keys() == committed.keys()
    # The approval admission policy, kept beside the CRDs, is installed with them.
    docs = helm.template()
    assert find(docs, "ValidatingAdmissionPolicy")
    assert find(docs, "ValidatingAdmissionPolicyBinding")
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        del meta["annotations"], meta["labels"]
        expected = committed[name]
        expected["metadata"].pop("labels", None)
        expected["metadata"].pop("annotations", None)
        assert crd == expected
    assert not find(helm.template({"crds": {"install": False}}), "CustomResourceDefinition")
    no_keep = find(helm.template({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert all("annotations" not in d["metadata"] for d in no_keep)


def test_cluster_mode_rbac(helm: Helm) -> None:
    docs = helm.template()
    roles = {d["metadata"]["name"]: _rules(d) for d in find(docs, "ClusterRole")}
    namespaced = set(roles["rel-mixpanel-dsr-operator-namespaced"])
    cluster = set(roles["rel-mixpanel-dsr-operator-cluster"])
    g = "mixpaneldsr.io"
    assert (g, "datasubjectrequests", "delete", ()) in namespaced
    assert (g, "datasubjectrequests/status", "patch", ()) in namespaced
    # kopf writes nothing on requests or projects (no finalizer, no annotations).
    assert (g, "datasubjectrequests", "patch", ()) not in namespaced
    assert (g, "mixpanelprojects", "patch", ()) not in namespaced
    assert (g, "mixpaneltasks", "create", ()) in namespaced
    assert (g, "mixpaneltasks/status", "patch", ()) in namespaced
    assert (g, "datasubjectrequests/finalizers", "update", ()) in namespaced
    assert ("", "secrets", "get", ()) in namespaced
    assert ("", "events", "create", ()) in namespaced
    assert (g, "clustermixpanelprojects", "watch", ()) in cluster
    # Nothing beyond: no wildcards, no list/watch of Secrets, no workloads.
    for group, resource, verb, _ in namespaced | cluster:
        assert "*" not in (group, resource, verb)
        assert not (resource == "secrets" and verb in ("list", "watch"))
        assert group in ("", g, "apiextensions.k8s.io", "admissionregistration.k8s.io")
    # Of admission policies, only reading whether the approval policy is bound.
    assert {r for r in cluster if r[0] == "admissionregistration.k8s.io"} == {
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "get",
         ("datasubjectrequest-approval.mixpaneldsr.io",)),
    }  # fmt: skip
    (own,) = find(docs, "Role", "rel-mixpanel-dsr-operator-own")
    assert set(_rules(own)) == {
        ("", "events", "create", ()),
        (g, "mixpaneltasks", "list", ()),
        (g, "mixpaneltasks", "create", ()),
        (g, "mixpaneltasks", "delete", ()),
        (g, "mixpaneltasks/status", "patch", ()),
        ("", "secrets", "create", ()),
        ("", "secrets", "get", ("rel-mixpanel-dsr-operator-key",)),
    }
    (self_role,) = find(docs, "Role", "rel-mixpanel-dsr-operator-self")
    assert set(_rules(self_role)) == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", ("rel-mixpanel-dsr-operator",)),
        ("coordination.k8s.io", "leases", "update", ("rel-mixpanel-dsr-operator",)),
    }


def test_namespaced_mode_rbac_names_its_secrets(helm: Helm) -> None:
    docs = helm.template(SCOPED)
    (deployment,) = find(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=privacy" in args
    assert "--namespace=marketing" in args
    assert "--all-namespaces" not in args
    (cluster_role,) = find(docs, "ClusterRole", "rel-mixpanel-dsr-operator-cluster")
    assert not [r for r in _rules(cluster_role) if r[1] == "secrets"]
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in find(docs, "Role")}
    privacy = set(_rules(roles["privacy", "rel-mixpanel-dsr-operator-watch"]))
    assert ("", "secrets", "get", ("web-us-gdpr-token", "ids")) in privacy
    assert ("", "secrets", "get", ()) not in privacy
    marketing = set(_rules(roles["marketing", "rel-mixpanel-dsr-operator-watch"]))
    assert not [r for r in marketing if r[1] == "secrets" and r[2] == "get"]
    own = set(_rules(roles["ops", "rel-mixpanel-dsr-operator-self"]))
    assert ("", "secrets", "get", ("shop-in-gdpr-token",)) in own
    bindings = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in find(docs, "RoleBinding")
    }
    assert set(roles) == bindings


def test_monitoring_objects_with_alerts(helm: Helm) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    docs = helm.template(values, *MONITORING)
    (monitor,) = find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (rule,) = find(docs, "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    job = 'job="rel-mixpanel-dsr-operator-metrics", namespace="ops"'
    assert 'state="passed"' in alerts["MixpanelDSRDeadlinePassed"]["expr"]
    assert 'state="near"' in alerts["MixpanelDSRDeadlineNear"]["expr"]
    token = alerts["MixpanelDSRTokenExpiringSoon"]["expr"]
    assert "mixpanel_dsr_token_expiry_timestamp_seconds" in token
    assert "< 30 * 86400" in token
    assert "> 0" in token
    ready = alerts["MixpanelDSRProjectNotReady"]
    assert ready["expr"] == f"mixpanel_dsr_project_ready{{{job}}} == 0"
    assert ready["for"] == "15m"
    limited = alerts["MixpanelDSRRateLimited"]
    assert limited["expr"] == f"rate(mixpanel_dsr_mixpanel_rate_limited_total{{{job}}}[10m]) > 0"
    assert limited["for"] == "30m"
    assert alerts["MixpanelDSROperatorDown"]["expr"] == f"absent(up{{{job}}} == 1)"
    assert "mixpanel_dsr_leader" in alerts["MixpanelDSRNoLeader"]["expr"]
    # Prometheus' grammar accepts every expression.
    for name, alert in alerts.items():
        try:
            promql_parser.parse(alert["expr"])
        except ValueError as err:
            pytest.fail(f"{name}: {err}")
    # Every metric an alert names is one the operator exports.
    from mixpanel_dsr import metrics

    exported = {
        name for value in vars(metrics).values() for name in getattr(value, "_names", ())
    } | {getattr(v, "_name", "") for v in vars(metrics).values()}
    for alert in alerts.values():
        for word in alert["expr"].replace("(", " ").replace("{", " ").split():
            if word.startswith("mixpanel_dsr_"):
                assert word.removesuffix("_total") in exported, word


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"imag": {}}, "additional properties 'imag' not allowed"),
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "needs leaderElection"),
        ({"watch": {"allNamespaces": False}}, "minItems"),
        ({"watch": {"allNamespaces": False, "namespaces": [{"name": "Bad_Name"}]}}, "pattern"),
    ],
    ids=["typo", "two-without-leader", "scoped-without-namespaces", "bad-namespace"],
)
def test_bad_values_are_refused(helm: Helm, values: dict[str, Any], message: str) -> None:
    result = helm.run("template", "rel", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_two_replicas_share_one_lease(helm: Helm) -> None:
    docs = helm.template({"replicaCount": 2})
    (deployment,) = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args
    assert "--leader-election-id=rel-mixpanel-dsr-operator" in args
    single = find(helm.template({"leaderElection": {"enabled": False}}), "Deployment")[0]
    assert single["spec"]["strategy"] == {"type": "Recreate"}


# ---------------------------------------------------------------------- install


PROMETHEUS_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %(plural)s.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: %(kind)s, plural: %(plural)s, singular: %(singular)s, listKind: %(kind)sList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def _adopt(plane: ControlPlane, release: str, namespace: str, *names: str) -> None:
    """Let a release take over objects applied with kubectl first (README's step 1)."""
    for name in names:
        plane.kubectl("label", "--overwrite", *name.split("/"), "app.kubernetes.io/managed-by=Helm")
        plane.kubectl(
            "annotate", "--overwrite", *name.split("/"),
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )  # fmt: skip


def test_helm_install_creates_every_object(
    tools: Tools, solo_control_plane: ControlPlane, tmp_path: Path
) -> None:
    plane = solo_control_plane
    helm = Helm(tools, tmp_path, plane.kubeconfig)
    ns, release = f"ops-{uuid.uuid4().hex[:6]}", "dsr"
    for kind, plural, singular in [
        ("ServiceMonitor", "servicemonitors", "servicemonitor"),
        ("PrometheusRule", "prometheusrules", "prometheusrule"),
    ]:
        manifest = PROMETHEUS_CRDS % {"kind": kind, "plural": plural, "singular": singular}
        plane.kubectl("apply", "-f", "-", input=manifest)
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com",
    )  # fmt: skip
    crds = [
        f"crd/{p}.mixpaneldsr.io"
        for p in (
            "datasubjectrequests", "mixpanelprojects", "mixpaneltasks",
            "datasubjectrequestreceipts",
        )
    ]  # fmt: skip
    crds.append("crd/clustermixpanelprojects.mixpaneldsr.io")
    policy = "datasubjectrequest-approval.mixpaneldsr.io"
    _adopt(
        plane, release, ns, *crds,
        f"validatingadmissionpolicy/{policy}", f"validatingadmissionpolicybinding/{policy}",
    )  # fmt: skip
    values = {
        "replicaCount": 2,
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    }
    helm.run("install", release, str(CHART), "-n", ns, "--create-namespace", values=values)
    status = json.loads(helm.run("status", release, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    full = f"{release}-mixpanel-dsr-operator"
    for kind, name in [
        ("deployment", full),
        ("serviceaccount", full),
        ("service", f"{full}-metrics"),
        ("networkpolicy", full),
        ("poddisruptionbudget", full),
        ("role", f"{full}-self"),
        ("rolebinding", f"{full}-self"),
        ("role", f"{full}-own"),
        ("rolebinding", f"{full}-own"),
        ("servicemonitor", full),
        ("prometheusrule", full),
    ]:
        plane.kubectl("get", kind, name, "-n", ns)
    for name in (f"{full}-cluster", f"{full}-namespaced"):
        plane.kubectl("get", "clusterrole", name)
        plane.kubectl("get", "clusterrolebinding", name)
    deployment = json.loads(plane.kubectl("get", "deployment", full, "-n", ns, "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    crd = json.loads(plane.kubectl("get", crds[0], "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    # Upgrading renders again against the live cluster; uninstalling keeps the CRDs.
    helm.run("upgrade", release, str(CHART), "-n", ns, values=values)
    helm.run("uninstall", release, "-n", ns)
    plane.kubectl("get", *crds)
    assert plane.kubectl("get", "deployment", full, "-n", ns, check=False).returncode != 0


# ---------------------------------------------------------------------- RBAC, namespace-scoped


class Scoped:
    """A namespace-scoped release: where it runs, what it watches, its identity."""

    def __init__(self, plane: ControlPlane, helm: Helm, suffix: str) -> None:
        self.plane = plane
        self.helm = helm
        # Short: the ServiceAccount's user name is a certificate CN (at most 64 characters).
        self.release = f"r{suffix}"
        self.ops = f"o-{suffix}"
        self.watched = f"w-{suffix}"
        self.unwatched = f"u-{suffix}"
        self.fullname = f"{self.release}-mixpanel-dsr-operator"
        self.sa = f"system:serviceaccount:{self.ops}:{self.fullname}"

    def values(self) -> dict[str, Any]:
        return {
            "crds": {"install": False},
            "watch": {
                "allNamespaces": False,
                "namespaces": [
                    {"name": self.watched, "secretNames": ["web-gdpr", "erase-ids"]},
                ],
            },
            "clusterProjectSecretNames": ["shop-gdpr"],
        }

    def can(self, *args: str) -> bool:
        result = self.plane.kubectl("auth", "can-i", f"--as={self.sa}", *args, check=False)
        return result.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def scoped(
    tools: Tools, solo_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Scoped:
    plane = solo_control_plane
    s = Scoped(
        plane, Helm(tools, tmp_path_factory.mktemp("helm"), plane.kubeconfig), uuid.uuid4().hex[:6]
    )
    for ns in (s.ops, s.watched, s.unwatched):
        plane.kubectl("create", "namespace", ns)
    s.helm.run("install", s.release, str(CHART), "-n", s.ops, values=s.values())
    return s


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _apply(plane: ControlPlane, *docs: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def test_rbac_is_not_too_much(scoped: Scoped) -> None:
    s = scoped
    # Its own kinds, where it should.
    assert s.can("patch", "datasubjectrequests.mixpaneldsr.io", "--subresource=status",
                 "-n", s.watched)  # fmt: skip
    assert s.can("delete", "datasubjectrequests.mixpaneldsr.io", "-n", s.watched)
    assert s.can("create", "mixpaneltasks.mixpaneldsr.io", "-n", s.watched)
    assert s.can("create", "mixpaneltasks.mixpaneldsr.io", "-n", s.ops)
    assert s.can("get", f"secret/{s.fullname}-key", "-n", s.ops)
    assert s.can("get", "secret/web-gdpr", "-n", s.watched)
    assert s.can("get", "secret/shop-gdpr", "-n", s.ops)
    assert s.can("watch", "clustermixpanelprojects.mixpaneldsr.io")
    # Secrets no project names, anywhere; no listing Secrets at all.
    assert not s.can("get", "secret/other", "-n", s.watched)
    assert not s.can("list", "secrets", "-n", s.watched)
    assert not s.can("get", "secret/web-gdpr", "-n", s.unwatched)
    assert not s.can("get", "secret/other", "-n", s.ops)
    assert not s.can("list", "secrets", "-A")
    # Nothing it does not own.
    assert not s.can("delete", "secrets", "-A")
    assert not s.can("delete", "secret/x", "-n", s.unwatched)
    assert not s.can("create", "deployments", "-n", s.watched)
    assert not s.can("patch", "configmaps", "-n", s.watched)
    assert not s.can("create", "pods", "-n", s.ops)
    assert not s.can("patch", "datasubjectrequests.mixpaneldsr.io", "-n", s.unwatched)
    assert not s.can("patch", "datasubjectrequests.mixpaneldsr.io", "-n", s.watched)
    assert not s.can("create", "mixpaneltasks.mixpaneldsr.io", "-n", s.unwatched)
    assert not s.can("delete", "mixpanelprojects.mixpaneldsr.io", "-n", s.watched)
    assert not s.can("delete", "clustermixpanelprojects.mixpaneldsr.io")
    assert not s.can("update", f"lease/not-{s.fullname}", "-n", s.ops)
    assert not s.can("create", "clusterrolebindings")
    assert not s.can("impersonate", "serviceaccounts", "-A")


@pytest.fixture
def sandbox_urls(tmp_path: Path) -> Iterator[dict[str, str]]:
    with sandbox(tmp_path) as urls:
        yield urls


def test_rbac_is_enough_to_carry_requests_to_succeeded(
    scoped: Scoped, sandbox_urls: dict[str, str], tmp_path: Path
) -> None:
    s, plane = scoped, scoped.plane
    w = s.watched
    project = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "MixpanelProject",
        "metadata": {"name": "web", "namespace": w},
        "spec": {
            "token": "demo-token-us",
            "region": "US",
            "credentialsSecretRef": {"name": "web-gdpr"},
        },
    }
    cluster_project = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "ClusterMixpanelProject",
        "metadata": {"name": f"shop-{s.release}"},
        "spec": {
            "token": "demo-token-in",
            "region": "IN",
            "credentialsSecretRef": {"name": "shop-gdpr"},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": w}},
        },
    }
    erase = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "erase", "namespace": w},
        "spec": {
            "projectRef": {"name": "web"},
            "type": "Deletion",
            "distinctIdsFrom": {"secretKeyRef": {"name": "erase-ids", "key": "ids"}},
            "ttlSecondsAfterFinished": 5,
        },
    }
    export = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "export", "namespace": w},
        "spec": {
            "projectRef": {"kind": "ClusterMixpanelProject", "name": f"shop-{s.release}"},
            "type": "Retrieval",
            "distinctIds": ["shopper-1"],
        },
    }
    # A retrieval whose ids span 3 Mixpanel tasks (one id per task): 3 MixpanelTasks beside
    # the project, their links added one by one to the request's export Secret.
    split_project = {
        **project,
        "metadata": {"name": "web-split", "namespace": w},
        "spec": {**project["spec"], "maxIdsPerRequest": 1},
    }
    export_split = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "export-split", "namespace": w},
        "spec": {
            "projectRef": {"name": "web-split"},
            "type": "Retrieval",
            "distinctIds": ["reader-1", "reader-2", "reader-3"],
        },
    }
    _apply(
        plane,
        _secret("web-gdpr", w, {"token": "demo-oauth-us"}),
        _secret("erase-ids", w, {"ids": "u-1\nu-2\n"}),
        _secret("shop-gdpr", s.ops, {"token": "demo-oauth-in"}),
        project,
        cluster_project,
        split_project,
        erase,
        export,
        export_split,
    )
    deployment = json.loads(
        plane.kubectl("get", "deployment", s.fullname, "-n", s.ops, "-o", "json").stdout
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    kubeconfig = sa_identity(plane, s.ops, s.fullname)
    log = tmp_path / "operator.log"
    with operator_as(kubeconfig, args, sandbox_urls, log):
        wait_until(lambda: phase(plane, w, "export") == "Succeeded", 50, "the retrieval")
        # The deletion finished too, and was removed after its TTL.
        wait_until(lambda: phase(plane, w, "erase") == "Succeeded", 20, "the deletion")
        wait_until(
            lambda: plane.kubectl("get", "dsr", "erase", "-n", w, check=False).returncode != 0,
            30,
            "the deletion to finish and expire",
        )
        exported = json.loads(plane.kubectl("get", "dsr", "export", "-n", w, "-o", "json").stdout)
        secret_name = exported["status"]["resultSecretRef"]["name"]
        secret = json.loads(
            plane.kubectl("get", "secret", secret_name, "-n", w, "-o", "json").stdout
        )
        assert secret["metadata"]["ownerReferences"][0]["name"] == "export"
        wait_until(
            lambda: phase(plane, w, "export-split") == "Succeeded", 60, "the 3-task retrieval"
        )
        split = json.loads(
            plane.kubectl("get", "dsr", "export-split", "-n", w, "-o", "json").stdout
        )["status"]
        tasks = json.loads(
            plane.kubectl(
                "get", "mpt", "-n", w, "-l", "mixpaneldsr.io/project=web-split", "-o", "json"
            ).stdout
        )["items"]  # fmt: skip
        links = json.loads(
            plane.kubectl(
                "get", "secret", split["resultSecretRef"]["name"], "-n", w, "-o", "json"
            ).stdout
        )["data"]  # fmt: skip
        lease = json.loads(
            plane.kubectl("get", "lease", s.fullname, "-n", s.ops, "-o", "json").stdout
        )
        assert lease["spec"]["holderIdentity"] == "chart-test-0"
    tracking = {t["trackingId"] for t in split["tasks"]}
    assert len(split["tasks"]) == len(tracking) == 3, split["tasks"]
    assert {t["status"]["trackingId"] for t in tasks} == tracking
    assert {t["status"]["phase"] for t in tasks} == {"Succeeded"}
    # One link-<trackingId> key per task. (Also a bare "link": written when the first task
    # succeeded and was then the request's only one; it holds that part only.)
    assert {k for k in links if k.startswith("link-")} == {f"link-{t}" for t in tracking}
    text = log.read_text()
    for sign in ("403", "Forbidden", "Not enough permissions"):
        assert sign not in text, text[-3000:]
    events = json.loads(plane.kubectl("get", "events", "-n", w, "-o", "json").stdout)["items"]
    assert {e["involvedObject"]["name"] for e in events} >= {"export", "export-split"}


def test_two_replicas_one_works_and_the_other_takes_over(
    scoped: Scoped, sandbox_urls: dict[str, str], tmp_path: Path
) -> None:
    """Two replicas with the chart's arguments: one leads, the standby takes over on exit."""
    s, plane = scoped, scoped.plane
    w = s.watched
    deployment = json.loads(
        plane.kubectl("get", "deployment", s.fullname, "-n", s.ops, "-o", "json").stdout
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    kubeconfig = sa_identity(plane, s.ops, s.fullname)
    _apply(
        plane,
        _secret("web-gdpr", w, {"token": "demo-oauth-us"}),
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "MixpanelProject",
            "metadata": {"name": "web", "namespace": w},
            "spec": {
                "token": "demo-token-us",
                "region": "US",
                "credentialsSecretRef": {"name": "web-gdpr"},
            },
        },
    )

    def request(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": name, "namespace": w},
            "spec": {"projectRef": {"name": "web"}, "type": "Deletion", "distinctIds": [name]},
        }

    with (
        operator_as(kubeconfig, args, sandbox_urls, tmp_path / "a.log", pod="replica-a") as a,
        operator_as(kubeconfig, args, sandbox_urls, tmp_path / "b.log", pod="replica-b") as b,
    ):
        (proc_a, metrics_a), (_, metrics_b) = a, b
        wait_until(lambda: is_leader(metrics_a) is True, 30, "replica a to lead")
        assert is_leader(metrics_b) is False
        _apply(plane, request("ha-1"))
        wait_until(lambda: phase(plane, w, "ha-1") == "Succeeded", 30, "ha-1 by replica a")
        # A clean exit (a rolling update, a drain) hands the Lease over at once.
        proc_a.terminate()
        proc_a.wait(timeout=30)
        wait_until(lambda: is_leader(metrics_b) is True, 15, "replica b to take over")
        _apply(plane, request("ha-2"))
        wait_until(lambda: phase(plane, w, "ha-2") == "Succeeded", 30, "ha-2 by replica b")
        lease = json.loads(
            plane.kubectl("get", "lease", s.fullname, "-n", s.ops, "-o", "json").stdout
        )
        assert lease["spec"]["holderIdentity"] == "replica-b"
    # The standby never touched Mixpanel or the requests while it stood by.
    standby_log = (tmp_path / "b.log").read_text()
    assert "standing by" in standby_log
    before_takeover = standby_log.split("became leader", 1)[0]
    assert "ha-1" not in before_takeover
