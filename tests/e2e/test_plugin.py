"""``kubectl dsr`` end to end: the installed ``kubectl-dsr`` executable, run as a user runs
it, against the real kube-apiserver and the session's operator and Mixpanel sandbox."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import wait_until

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
KUBECTL_DSR = BIN / "kubectl-dsr"


class Plugin:
    """``kubectl-dsr ... --kubeconfig K`` with no KUBECONFIG in the environment."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def on_a_terminal(self, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run with a terminal as stdin, on which ``answer`` is typed."""
        typed, terminal = pty.openpty()
        try:
            os.write(typed, f"{answer}\n".encode())
            return self(*args, stdin=terminal)
        finally:
            os.close(typed)
            os.close(terminal)

    def __call__(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        timeout: float = 60,
        stdin: int = subprocess.DEVNULL,  # not a terminal: cancel must be told --yes
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(KUBECTL_DSR), *args, "--kubeconfig", str(kubeconfig or self.plane.kubeconfig)],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def plugin(control_plane: ControlPlane) -> Plugin:
    return Plugin(control_plane)


def exists(kube: Kube, kind: str, name: str, namespace: str) -> bool:
    return kube.run("get", kind, name, "-n", namespace, check=False).returncode == 0


def test_new_wait_and_status_of_a_short_and_a_long_request(
    scenario: Scenario, kube: Kube, plugin: Plugin, control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = scenario.namespace
    scenario.project()
    new = ["-n", ns, "--project", "proj", "--type", "Deletion"]
    # Without --apply it only prints the manifest.
    printed = plugin("new", "small", *new, "--id", "s-1", "s-2", "s-3")
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["spec"]["distinctIds"] == ["s-1", "s-2", "s-3"]
    assert not exists(kube, "dsr", "small", ns)

    made = plugin("new", "small", *new, "--id", "s-1", "s-2", "s-3", "--apply")
    assert made.returncode == 0, made.stderr
    assert made.stdout == "datasubjectrequest.mixpaneldsr.io/small created\n"
    assert "statutory deadline" in made.stderr

    ids = [f"big-{n}" for n in range(1500)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    made = plugin("new", "big", *new, "--ids-file", str(ids_file), "--apply")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [
        "secret/big-ids created",
        "datasubjectrequest.mixpaneldsr.io/big created",
    ]
    big = kube.get("dsr", "big", ns)
    assert big["spec"]["distinctIdsFrom"] == {"secretKeyRef": {"name": "big-ids", "key": "ids"}}
    secret = kube.get("secret", "big-ids", ns)
    assert base64.b64decode(secret["data"]["ids"]).decode().splitlines() == ids
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("DataSubjectRequest", big["metadata"]["uid"])

    waited = plugin("wait", "small", "big", "-n", ns, "--timeout", "2m", timeout=150)
    assert waited.returncode == 0, waited.stderr
    assert waited.stderr.splitlines()[-1] == "2/2 finished, 0 failed"
    assert "datasubjectrequest.mixpaneldsr.io/big Succeeded" in waited.stdout

    summary = plugin("status", "-n", ns)
    assert summary.returncode == 0, summary.stderr
    header, *rows = summary.stdout.splitlines()
    assert header.split() == ["PROJECT", "PHASE", "REQUESTS", "IDS", "DONE", "AT", "RISK"]
    assert [r.split() for r in rows] == [[f"{ns}/proj", "Succeeded", "2", "1503/1503", "0"]]

    [ref] = kube.get("dsr", "small", ns)["status"]["tasks"]
    detail = plugin("status", "small", "-n", ns)
    assert detail.returncode == 0, detail.stderr
    assert "Phase:       Succeeded" in detail.stdout
    assert "Done:        3/3" in detail.stdout
    task_row = next(line.split() for line in detail.stdout.splitlines() if ref["name"] in line)
    assert task_row[:5] == [ref["name"], ref["trackingId"], "0-3", "Succeeded", "SUCCESS"]

    view = json.loads(plugin("status", "big", "-n", ns, "-o", "json").stdout)
    assert (view["phase"], view["idsDone"], view["idsTotal"]) == ("Succeeded", 1500, 1500)
    assert view["deadlineIn"].startswith("in ")
    for task in view["tasks"]:
        assert task["mixpanelState"] == "SUCCESS"
        assert task["checkedAt"]

    # What a person types: kubectl finds the plugin on PATH.
    env = {**plugin.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    via_kubectl = subprocess.run(
        [str(control_plane.binaries.kubectl), "dsr", "status", "small", "-n", ns,
         "--kubeconfig", str(control_plane.kubeconfig)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert ref["trackingId"] in via_kubectl.stdout

    # A finished request is not cancelled.
    skipped = plugin("cancel", "small", "-n", ns, "--yes")
    assert skipped.returncode == 0, skipped.stderr
    assert "small is already Succeeded: skipped" in skipped.stderr
    assert exists(kube, "dsr", "small", ns)


def test_cancel_deletes_a_pending_request_only_when_told(
    scenario: Scenario, kube: Kube, plugin: Plugin, control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = scenario.namespace
    scenario.project("stuck", secret="missing-secret")  # never Ready: its requests stay Pending
    made = plugin(
        "new", "pend", "-n", ns, "--project", "stuck", "--type", "Deletion", "--id", "p-1",
        "--received-at", "2026-01-05T09:00:00Z", "--apply",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    wait_until(lambda: scenario.phase("pend") == "Pending", timeout=30, what="pend Pending")
    wait_until(
        lambda: (scenario.condition("pend", "DeadlineAtRisk") or {}).get("status") == "True",
        timeout=30,
        what="pend DeadlineAtRisk",
    )

    # Requests at risk of missing their deadline are listed first.
    summary = plugin("status", "-n", ns).stdout.splitlines()
    assert summary[0] == "AT RISK (1)"
    assert summary[2].split() == [
        ns, "pend", f"{ns}/stuck", "Deletion", "Pending", "0/1", summary[2].split()[6], "ago",
        "DeadlinePassed",
    ]  # fmt: skip
    assert summary[-1].split() == [f"{ns}/stuck", "Pending", "1", "0/1", "1"]

    timed_out = plugin("wait", "pend", "-n", ns, "--timeout", "1s")
    assert timed_out.returncode == 2
    assert "error: timed out after 1s: 0/1 finished, 0 failed" in timed_out.stderr

    not_failed = plugin("retry", "pend", "-n", ns)
    assert not_failed.returncode == 1
    assert "only a Failed request can be retried" in not_failed.stderr

    refused = plugin("cancel", "pend", "-n", ns)  # stdin is not a terminal
    assert refused.returncode == 1
    assert refused.stderr == "error: refusing to cancel without --yes: stdin is not a terminal\n"
    assert exists(kube, "dsr", "pend", ns)

    declined = plugin.on_a_terminal("n", "cancel", "pend", "-n", ns)
    assert declined.returncode == 1
    assert "Cancel 1 unfinished request(s) in namespace" in declined.stderr
    assert "error: not confirmed: nothing cancelled" in declined.stderr
    assert exists(kube, "dsr", "pend", ns)

    missing = plugin("cancel", "ghost", "-n", ns, "--yes")
    assert missing.returncode == 1
    assert "not found" in missing.stderr

    cancelled = plugin("cancel", "pend", "-n", ns, "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "'pend' deleted (was Pending)" in cancelled.stdout
    assert not exists(kube, "dsr", "pend", ns)

    # A server-side dry run goes through admission and stores nothing, Secret included.
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(f"d-{n}" for n in range(1200)))
    dry = plugin(
        "new", "dry", "-n", ns, "--project", "stuck", "--type", "Deletion",
        "--ids-file", str(ids_file), "--dry-run-server",
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "datasubjectrequest.mixpaneldsr.io/dry created (server dry run)" in dry.stdout
    assert not exists(kube, "secret", "dry-ids", ns)
    assert not exists(kube, "dsr", "dry", ns)

    # A request the API server refuses takes its new ids Secret with it.
    imposter = plugin(
        "new", "imposter", "-n", ns, "--project", "stuck", "--type", "Deletion",
        "--ids-file", str(ids_file), "--requested-by", "someone-else", "--apply",
    )  # fmt: skip
    assert imposter.returncode == 1
    assert imposter.stderr.startswith("error: forbidden: ")
    assert "spec.requestedBy must be your own user name" in imposter.stderr
    assert not exists(kube, "secret", "imposter-ids", ns)
    assert not exists(kube, "dsr", "imposter", ns)

    # Expected API errors are one line, no traceback.
    ghost = plugin("status", "ghost", "-n", ns)
    assert ghost.returncode == 1
    assert ghost.stderr == f'error: datasubjectrequests.{"mixpaneldsr.io"} "ghost" not found\n'
    stranger = control_plane.mint_identity("plugin-stranger")
    forbidden = plugin("status", "-n", ns, kubeconfig=stranger)
    assert forbidden.returncode == 1
    assert forbidden.stderr.startswith("error: forbidden: ")
    assert len(forbidden.stderr.splitlines()) == 1


def test_wait_exits_1_when_a_request_fails(scenario: Scenario, kube: Kube, plugin: Plugin) -> None:
    ns = scenario.namespace
    scenario.project()
    sandbox = scenario.sandbox
    sandbox.post("/settings", {"lifecycle": {"failure_rate": 1.0}})
    try:
        made = plugin(
            "new", "doomed", "-n", ns, "--project", "proj", "--type", "Deletion",
            "--id", "f-1", "--apply",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        waited = plugin("wait", "-n", ns, "--timeout", "90s", timeout=120)
    finally:
        sandbox.post("/settings", {"lifecycle": {"failure_rate": 0.0}})
    assert waited.returncode == 1, waited.stderr
    assert waited.stderr.splitlines()[-1] == "1/1 finished, 1 failed"
    assert waited.stdout.startswith("datasubjectrequest.mixpaneldsr.io/doomed Failed: TaskFailed")

    view = json.loads(plugin("status", "doomed", "-n", ns, "-o", "json").stdout)
    assert [(t["attempt"], t["phase"]) for t in view["tasks"]] == [
        (1, "Failed"), (2, "Failed"), (3, "Failed"),
    ]  # fmt: skip
    assert {t["mixpanelState"] for t in view["tasks"]} == {"FAILURE"}

    # retry only sets the annotation (whether the operator honours it is its own test).
    retried = plugin("retry", "doomed", "-n", ns)
    assert retried.returncode == 0, retried.stderr
    value = kube.get("dsr", "doomed", ns)["metadata"]["annotations"]["mixpaneldsr.io/retry"]
    assert value.endswith("Z")
    assert f"mixpaneldsr.io/retry={value}" in retried.stdout
