"""The SRE pack: the Grafana dashboard the chart ships, the alerts' runbooks, the readiness
probe, and a check that every PromQL expression in the dashboard and the alerts parses and
names only metrics the running operator exports."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest

from mixpanel_dsr.localcluster import Tools, ensure_tools
from tests.e2e.chart_helpers import CHART, REPO, Helm, find
from tests.e2e.operator_harness import Operator, wait_until

pytestmark = pytest.mark.e2e

DASHBOARD = CHART / "files" / "dashboards" / "mixpanel-dsr-operator.json"
RUNBOOKS = REPO / "docs" / "runbooks"
MONITORING = [
    "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
]  # fmt: skip
#: Grafana's variables, replaced by values of the same kind before parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d",
    "$namespace": "ops", "$job": "rel-mixpanel-dsr-operator-metrics", "$project": ".*",
}  # fmt: skip
#: Metrics the dashboard and alerts must show.
COVERED = {
    "mixpanel_dsr_requests", "mixpanel_dsr_requests_deadline_at_risk",
    "mixpanel_dsr_ids_submitted_total", "mixpanel_dsr_ids_completed_total",
    "mixpanel_dsr_mixpanel_requests_total", "mixpanel_dsr_mixpanel_rate_limited_total",
    "mixpanel_dsr_oldest_unfinished_request_age_seconds",
    "mixpanel_dsr_token_expiry_timestamp_seconds", "mixpanel_dsr_project_ready",
    "mixpanel_dsr_outstanding_tasks", "mixpanel_dsr_queued_ids",
    "mixpanel_dsr_task_duration_seconds_bucket", "mixpanel_dsr_task_duration_seconds_count",
    "mixpanel_dsr_export_links", "mixpanel_dsr_leader", "up",
}  # fmt: skip
#: Series Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up"}


@pytest.fixture(scope="module")
def tools() -> Tools:
    return ensure_tools()


@pytest.fixture(scope="module")
def helm(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tools, tmp_path_factory.mktemp("helm"))


def _alerts(helm: Helm, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    docs = helm.template(
        {"metrics": {"prometheusRule": {"enabled": True}}, **(values or {})}, *MONITORING
    )
    (rule,) = find(docs, "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def _dashboard_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*[a-zA-Z_]\w*\)", query)
            assert inner, f"variable {var['name']}: {query}"
            found[f"variable {var['name']}"] = inner.group(1)
    return found


def _substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def _selectors(node: Any) -> list[Any]:
    """The vector selectors of a parsed expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    children: list[Any] = []
    if isinstance(node, promql_parser.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, promql_parser.AggregateExpr):
        children = [node.expr, node.param]
    elif isinstance(node, promql_parser.Call):
        children = list(node.args)
    elif isinstance(
        node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)
    ):
        children = [node.expr]
    return [s for child in children if child is not None for s in _selectors(child)]


def _parse(where: str, expr: str) -> list[Any]:
    try:
        parsed = promql_parser.parse(expr)
    except ValueError as err:
        pytest.fail(f"{where}: {err}\n{expr}")
    selectors = _selectors(parsed)
    assert selectors, f"{where} names no metric: {expr}"
    return selectors


def _exported(operator: Operator) -> set[str]:
    """Sample names the operator's /metrics can carry, from its # TYPE lines (a labelled
    metric shows its family before its first sample)."""
    suffixes = {
        "counter": ("_total", "_created"), "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"), "info": ("_info",),
    }  # fmt: skip
    names: set[str] = set()
    for line in operator.metrics().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + suffix for suffix in suffixes.get(kind, ("",))}
    return names


def test_every_promql_expression_parses_and_names_metrics_the_operator_exports(
    helm: Helm, operator: Operator
) -> None:
    wait_until(lambda: "mixpanel_dsr_export_links" in operator.metrics(), 30, "metrics")
    exported = _exported(operator) | PROMETHEUS_SERIES
    expressions = {f"alert {n}": a["expr"] for n, a in _alerts(helm).items()}
    expressions |= {where: _substitute(e) for where, e in _dashboard_expressions().items()}
    used: set[str] = set()
    for where, expr in expressions.items():
        for selector in _parse(where, expr):
            assert selector.name in exported, f"{where} names {selector.name}: {expr}"
            used.add(selector.name)
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            # Scoped to one installation, as the alerts select it.
            if where.startswith(("alert", "panel")):
                assert matchers.get("namespace") == "ops", f"{where}: {expr}"
                assert matchers.get("job") == "rel-mixpanel-dsr-operator-metrics", where
    # What issue 13 asks the pack to show: throughput, queue and outstanding tasks per
    # project, 429s, deadlines at risk, token expiry, task durations (and the rest).
    assert COVERED - used == set()


def test_every_alert_has_a_runbook(helm: Helm) -> None:
    base = "https://runbooks.example.com/dsr"
    alerts = _alerts(helm, {"metrics": {"prometheusRule": {
        "enabled": True, "runbookBaseURL": base + "/",
    }}})  # fmt: skip
    index = (RUNBOOKS / "README.md").read_text()
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(alerts), "one runbook page per alert, no other"
    for name, alert in alerts.items():
        assert alert["annotations"]["runbook_url"] == f"{base}/{name}.md"
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n")
        for section in ("## Symptom", "## Cause", "## What to check", "## What to do"):
            assert section in text, f"{name}: {section}"
        assert "```sh\nkubectl " in text, f"{name}: no kubectl command to check with"
        assert f"[{name}.md]({name}.md)" in index
        assert alert["labels"]["severity"] in index.split(f"`{name}`", 1)[1].split("\n")[0]
    default = _alerts(helm)["MixpanelDSRNoLeader"]["annotations"]["runbook_url"]
    assert default.endswith("/docs/runbooks/MixpanelDSRNoLeader.md")


def test_the_dashboard_ships_as_a_configmap_for_the_grafana_sidecar(helm: Helm) -> None:
    assert not find(helm.template(), "ConfigMap")
    values = {
        "grafanaDashboard": {
            "enabled": True, "namespace": "monitoring",
            "annotations": {"grafana_folder": "Privacy"},
        }
    }  # fmt: skip
    (configmap,) = find(helm.template(values), "ConfigMap")
    meta = configmap["metadata"]
    assert meta["name"] == "rel-mixpanel-dsr-operator-dashboard"
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["annotations"] == {"grafana_folder": "Privacy"}
    (content,) = configmap["data"].values()
    dashboard = json.loads(content)
    assert dashboard == json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mixpanel-dsr-operator"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "ids sent",
        "queued ids per project",
        "outstanding mixpanel tasks per project",
        "429",
        "deadline",
        "token expires",
        "task duration",
        "export links",
    ):
        assert topic in titles, topic  # fmt: skip
    release_ns = find(helm.template({"grafanaDashboard": {"enabled": True}}), "ConfigMap")[0]
    assert release_ns["metadata"]["namespace"] == "ops"
    result = helm.run(
        "template", "rel", str(CHART), values={"grafanaDashboard": {"enable": True}}, check=False
    )
    assert result.returncode != 0
    assert "additional properties 'enable' not allowed" in result.stderr


def test_the_deployment_probes_liveness_and_readiness(helm: Helm) -> None:
    (deployment,) = find(helm.template(), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
