"""Capture real DataSubjectRequest and MixpanelProject objects in every state, for the
GitOps health tests (Argo CD Lua, kstatus) in tests/fixtures/status/.

    .venv/bin/python -m tests.capture_status            # writes tests/fixtures/status/*.json

Runs a local control plane, two Mixpanel sandboxes (one whose tasks always fail, serving
the IN region) and the operator, applies one object per state and saves each the first
time it is seen in that state. Objects are stored as the API server returned them, less
managedFields.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from mixpanel_dsr.demo import _child, _wait_for_file, start_sandbox
from mixpanel_dsr.localcluster import ControlPlane
from mixpanel_dsr.localcluster.controlplane import free_port

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "status"
NS = "gitops"
API = "mixpaneldsr.io/v1alpha1"


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


def _project(name: str, token: str, region: str, secret: str) -> dict[str, Any]:
    spec = {"token": token, "region": region, "credentialsSecretRef": {"name": secret}}
    return {"apiVersion": API, "kind": "MixpanelProject", "metadata": {"name": name}, "spec": spec}


def _dsr(name: str, project: str, **spec: Any) -> dict[str, Any]:
    body = {"projectRef": {"name": project}, "type": "Deletion", **spec}
    body.setdefault("distinctIds", [f"{name}-1", f"{name}-2"])
    return {
        "apiVersion": API,
        "kind": "DataSubjectRequest",
        "metadata": {"name": name},
        "spec": body,
    }


MANIFESTS = [
    _secret("us-gdpr", {"token": "demo-oauth-us"}),
    _secret("in-gdpr", {"token": "demo-oauth-in"}),
    _secret("wrong-gdpr", {"token": "not-the-token"}),
    _project("web", "demo-token-us", "US", "us-gdpr"),
    _project("flaky", "demo-token-in", "IN", "in-gdpr"),
    _project("rejected", "demo-token-eu", "EU", "wrong-gdpr"),
    _dsr("erase", "web", receivedAt="2026-11-01T09:00:00Z"),
    _dsr("plan", "web", dryRun=True),
    _dsr("doomed", "flaky"),
    _dsr(
        "no-ids",
        "web",
        distinctIds=None,
        distinctIdsFrom={"secretKeyRef": {"name": "missing", "key": "ids"}},
    ),
]


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].pop("managedFields", None)
    return obj


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}


#: file stem -> (kind, name, predicate on the object)
WANTED: dict[str, tuple[str, str, Callable[[dict[str, Any]], bool]]] = {
    "dsr-queued": ("dsr", "erase", lambda o: o.get("status", {}).get("phase") == "Queued"),
    "dsr-in-progress": (
        "dsr",
        "erase",
        lambda o: o.get("status", {}).get("phase") in ("Submitted", "InProgress"),
    ),
    "dsr-succeeded": ("dsr", "erase", lambda o: o.get("status", {}).get("phase") == "Succeeded"),
    "dsr-dry-run": ("dsr", "plan", lambda o: "Ready" in _conditions(o)),
    "dsr-failed": ("dsr", "doomed", lambda o: o.get("status", {}).get("phase") == "Failed"),
    "dsr-stalled": ("dsr", "no-ids", lambda o: _conditions(o).get("Stalled") == "True"),
    "mpp-ready": ("mpp", "web", lambda o: _conditions(o).get("Ready") == "True"),
    "mpp-stalled": ("mpp", "rejected", lambda o: _conditions(o).get("Stalled") == "True"),
}


def capture(out: Path, timeout: float = 120) -> list[Path]:
    written: list[Path] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        plane = stack.enter_context(ControlPlane())
        plane.kubectl("apply", "-f", str(REPO / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        urls = start_sandbox(stack, state, time_scale=0.2)
        failing_urls = state / "failing-urls.json"
        failing = stack.enter_context(
            _child(
                [
                    sys.executable, "-m", "mixpanel_dsr.sandbox", "--port-us", "0",
                    "--port-eu", "0", "--port-in", "0", "--failure-rate", "1",
                    "--urls-file", str(failing_urls), "--time-scale", "0.05",
                ],
                state / "failing.log",
            )
        )  # fmt: skip
        urls["IN"] = json.loads(_wait_for_file(failing_urls, failing, state / "failing.log"))["IN"]
        region_urls = ",".join(f"{r}={u}" for r, u in sorted(urls.items()))
        plane.kubectl("create", "namespace", NS)
        stack.enter_context(
            _child(
                [
                    sys.executable, "-m", "mixpanel_dsr.cli", "run", "--namespace", NS,
                    "--operator-namespace", NS,
                    "--mixpanel-region-urls", region_urls, "--max-attempts", "1",
                    "--packing-quiet", "3s", "--poll-initial", "1s", "--poll-max", "2s",
                    "--retry-interval", "2s", "--tick", "0.5s",
                    "--metrics-port", str(free_port()), "--health-port", "0",
                ],
                state / "operator.log",
                env=plane.env(),
            )
        )  # fmt: skip
        docs = list(MANIFESTS)
        for doc in docs:
            doc["metadata"]["namespace"] = NS
            doc["spec"] = {k: v for k, v in doc.get("spec", {}).items() if v is not None}
            if not doc["spec"]:
                del doc["spec"]
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        pending = dict(WANTED)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for stem, (kind, name, wanted) in list(pending.items()):
                result = plane.kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
                if result.returncode == 0 and wanted(obj := json.loads(result.stdout)):
                    path = out / f"{stem}.json"
                    path.write_text(json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")
                    written.append(path)
                    del pending[stem]
            time.sleep(0.2)
        if pending:
            log = (state / "operator.log").read_text()[-3000:]
            raise RuntimeError(f"never saw {sorted(pending)}; operator log:\n{log}")
        # A spec change the operator has not seen yet: the API server's answer to the edit.
        patched = plane.kubectl(
            "patch", "dsr", "erase", "-n", NS, "--type=merge",
            "-p", '{"spec": {"ttlSecondsAfterFinished": 86400}}', "-o", "json",
        ).stdout  # fmt: skip
        path = out / "dsr-generation-not-observed.json"
        path.write_text(json.dumps(_clean(json.loads(patched)), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.capture_status", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in capture(args.out):
        print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
