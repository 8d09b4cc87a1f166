"""helm, the chart and an operator run as the chart's ServiceAccount, for the chart tests."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from mixpanel_dsr.demo import start_sandbox
from mixpanel_dsr.localcluster import ControlPlane, Tools
from tests.e2e.operator_harness import Operator

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mixpanel-dsr-operator"


class Helm:
    """The pinned helm, with its own config and cache folders, against one control plane."""

    def __init__(self, tools: Tools, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = tools.helm
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def run(
        self, *args: str, values: dict[str, Any] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        extra = ["-f", "-"] if values is not None else []
        return subprocess.run(
            [str(self.binary), *args, *extra],
            input=yaml.safe_dump(values) if values is not None else None,
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=120,
        )

    def template(
        self, values: dict[str, Any] | None = None, *args: str, namespace: str = "ops"
    ) -> list[dict[str, Any]]:
        out = self.run(
            "template", "rel", str(CHART), "--namespace", namespace, *args, values=values or {}
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


@contextmanager
def sandbox(workdir: Path) -> Iterator[dict[str, str]]:
    """``mixpanel-sandbox`` with its demo projects on free ports: region -> base URL."""
    with ExitStack() as stack:
        yield start_sandbox(stack, workdir, time_scale=0.05)


@contextmanager
def operator_as(
    kubeconfig: Path,
    args: list[str],
    urls: dict[str, str],
    log: Path,
    pod: str = "chart-test-0",
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``dsr-operator run ARGS`` with ``kubeconfig``'s identity; yields (process, metrics port)."""
    operator = Operator(log.parent, kubeconfig, urls, scope=args, env={"POD_NAME": pod}, log=log)
    operator.start()
    try:
        assert operator.proc is not None
        yield operator.proc, operator.metrics_port
    finally:
        operator.stop()


def phase(plane: ControlPlane, namespace: str, name: str) -> str | None:
    result = plane.kubectl("get", "dsr", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: str | None = json.loads(result.stdout).get("status", {}).get("phase")
    return found


def sa_identity(plane: ControlPlane, namespace: str, name: str) -> Path:
    """A client-certificate kubeconfig that authenticates as the ServiceAccount would."""
    return plane.mint_identity(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


def is_leader(metrics_port: int) -> bool | None:
    """The replica's mixpanel_dsr_leader gauge (None if it does not answer)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("mixpanel_dsr_leader "):
            return float(line.split()[1]) == 1.0
    return None
