"""The README's run command: `make demo` shows the sample requests reaching Succeeded.

Runs the same module `make demo` runs, with --exit-when-done instead of
waiting for Ctrl-C: once on a terminal (a pseudo-terminal here) with its own
control plane, where it redraws a live table, and once with --context against
an existing cluster (a real control plane the test starts, reached through a
named context of a kubeconfig whose current context points nowhere), where
stdout is a pipe and it writes one line per change.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

SAMPLES = {
    "privacy/priv-1234-erase": "2/2",
    "privacy/priv-1235-access": "1/1",
    "privacy/priv-1236-erase": "3/3",
}
CLEAR = "\x1b[H\x1b[2J"


def _demo(state: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mixpanel_dsr.demo", "--exit-when-done",
        "--timeout", "180", "--state-dir", str(state), *extra,
    ]  # fmt: skip


def _final_phases(stdout: str) -> dict[str, str]:
    phases: dict[str, str] = json.loads(stdout[stdout.rindex("{\n") :])
    return phases


def _run_on_a_terminal(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run ``argv`` with stdout on a pseudo-terminal; (exit code, what it showed, stderr)."""
    main, child = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child's side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.Popen(argv, stdout=child, stderr=subprocess.PIPE)
    os.close(child)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        os.close(main)
    shown = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return proc.returncode, shown, err.decode(errors="replace")


def test_demo_shows_a_live_table_of_the_samples_reaching_succeeded(tmp_path: Path) -> None:
    code, shown, err = _run_on_a_terminal(_demo(tmp_path), timeout=280)
    assert code == 0, shown + err + _log(tmp_path)
    frames = shown.split(CLEAR)[1:]
    assert frames, f"no table was drawn:\n{shown}"
    header, *rows = frames[-1].split("\n\n")[1].splitlines()
    assert header.split() == ["REQUEST", "PHASE", "DONE", "TASKS", "DEADLINE"]
    table = {row.split()[0]: row.split() for row in rows}
    for request, done in SAMPLES.items():
        assert table[request][1:3] == ["Succeeded", done], frames[-1]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table[request][-3]), frames[-1]
    # The dry run is shown but never sent.
    assert "dry run: 1 planned" in frames[-1]
    assert "All sample requests Succeeded." in frames[-1]
    assert "kubectl get dsr -A -w" in frames[-1]
    assert _final_phases(shown) == dict.fromkeys(SAMPLES, "Succeeded")


@pytest.fixture
def existing_cluster(tmp_path: Path) -> Iterator[tuple[ControlPlane, Path]]:
    """A control plane without the CRDs, and a kubeconfig naming it ``dsr-demo-test``
    beside a current context whose API server does not exist."""
    with ControlPlane() as plane:
        config = yaml.safe_load(plane.kubeconfig.read_text())
        config["contexts"][0]["name"] = "dsr-demo-test"
        config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}})
        config["contexts"].append(
            {"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}
        )
        config["users"].append({"name": "nobody", "user": {"token": "none"}})
        config["current-context"] = "nowhere"
        kubeconfig = tmp_path / "user-kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        kubeconfig.chmod(0o600)
        yield plane, kubeconfig


def test_demo_with_context_runs_against_that_cluster(
    existing_cluster: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    plane, kubeconfig = existing_cluster
    state = tmp_path / "state"
    result = subprocess.run(
        _demo(state, "--context", "dsr-demo-test"),
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr + _log(state)
    assert CLEAR not in result.stdout
    assert "Cluster of kubeconfig context 'dsr-demo-test'" in result.stdout
    # Plain progress: one line per change, the last for each sample Succeeded with every id.
    last = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) > 3 and words[1] in SAMPLES:
            last[words[1]] = words[2:4]
    assert last == {r: ["Succeeded", f"done={done}"] for r, done in SAMPLES.items()}
    assert f"export KUBECONFIG={state / 'kubeconfig'}" in result.stdout
    assert _final_phases(result.stdout) == dict.fromkeys(SAMPLES, "Succeeded")
    # It happened in that cluster: the CRDs it installed, the requests it carried out.
    items = json.loads(plane.kubectl("get", "dsr", "-n", "privacy", "-o", "json").stdout)["items"]
    phases = {
        f"privacy/{i['metadata']['name']}": i["status"]["phase"]
        for i in items
        if not i["spec"].get("dryRun")
    }
    assert phases == dict.fromkeys(SAMPLES, "Succeeded")


def test_demo_with_context_leaves_a_cluster_with_real_requests_alone(
    existing_cluster: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    plane, kubeconfig = existing_cluster
    plane.kubectl("apply", "-f", str(REPO / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    plane.kubectl("create", "namespace", "team-a")
    real = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "priv-9001-erase", "namespace": "team-a"},
        "spec": {"projectRef": {"name": "web"}, "type": "Deletion", "distinctIds": ["u-1"]},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(real))
    result = subprocess.run(
        _demo(tmp_path / "state", "--context", "dsr-demo-test"),
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "DataSubjectRequest team-a/priv-9001-erase" in result.stderr
    # Nothing was applied and no operator ran: the real request has no status.
    assert plane.kubectl("get", "namespace", "privacy", check=False).returncode != 0
    got = json.loads(plane.kubectl("get", "dsr", "-n", "team-a", "-o", "json").stdout)
    assert [i.get("status") for i in got["items"]] == [None]


def test_demo_refuses_a_context_the_kubeconfig_does_not_have(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "user-kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "none"}}],
                "contexts": [{"name": "only", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "only",
            }
        )
    )
    result = subprocess.run(
        _demo(tmp_path / "state", "--context", "no-such-context"),
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no kubeconfig context 'no-such-context'" in result.stderr
    assert not (tmp_path / "state" / "sandbox.log").exists()


def _log(state: Path) -> str:
    log = state / "operator.log"
    return log.read_text()[-3000:] if log.exists() else ""
