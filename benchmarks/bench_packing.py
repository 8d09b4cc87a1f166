"""Mixpanel calls and time for N one-id deletions, packed against one task per request.

Runs the real control plane, the sandbox and the operator (as the e2e tests do),
applies N one-id requests to a project with the default id limit (packed) and N
to a project with maxIdsPerRequest: 1 (the baseline: every request its own
task), waits for all to succeed and prints the figures as ratios.

    .venv/bin/python -m benchmarks.bench_packing [N]
"""

from __future__ import annotations

import json
import sys
import time

import yaml
from tests.conftest import CRDS, Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, Sandbox, wait_until, workdir

from mixpanel_dsr.localcluster import ControlPlane


def run_one(
    scenario: Scenario, kube: Kube, project: str, n: int, **spec: object
) -> tuple[float, dict[str, object]]:
    token = scenario.project(project, **spec)
    items = [
        scenario.request_manifest(f"{project}-{i}", [f"{project}-id-{i}"], project)
        for i in range(n)
    ]
    start = time.monotonic()
    kube.run(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=600,
    )

    def done() -> bool:
        out = json.loads(kube.run("get", "dsr", "-n", scenario.namespace, "-o", "json").stdout)
        mine = [i for i in out["items"] if i["spec"]["projectRef"]["name"] == project]
        return len(mine) == n and all(i.get("status", {}).get("phase") == "Succeeded" for i in mine)

    wait_until(done, timeout=3600, interval=2, what=f"{n} requests of {project}")
    elapsed = time.monotonic() - start
    calls = scenario.sandbox.calls(token)
    return elapsed, {
        "calls": calls["count"],
        "by_operation": calls["by_operation"],
        "429": calls["by_status"].get("429", 0),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    base = workdir()
    with ControlPlane() as plane:
        kube = Kube(plane)
        kube.run("apply", "-f", str(CRDS))
        kube.run("wait", "--for=condition=Established", "crd", "--all")
        kube.run("create", "namespace", "bench")
        kube.run("create", "namespace", "mixpanel-dsr-system")
        sandbox = Sandbox(base, time_scale=0.05)
        sandbox.start()
        operator = Operator(base, plane.kubeconfig, sandbox.urls)
        operator.start()
        try:
            scenario = Scenario(kube, sandbox, "bench")
            baseline_time, baseline = run_one(scenario, kube, "one-per-task", n, maxIdsPerRequest=1)
            packed_time, packed = run_one(scenario, kube, "packed", n)
        finally:
            operator.stop()
            sandbox.stop()
    print(f"{n} one-id deletion requests to Succeeded (sandbox, real kube-apiserver)")
    calls_ratio = int(str(packed["calls"])) / int(str(baseline["calls"]))
    print(
        f"  one task per request (baseline): {baseline['calls']} Mixpanel calls, "
        f"{baseline_time:.1f} s, 1.0x  {baseline}"
    )
    print(
        f"  packed: {packed['calls']} Mixpanel calls, {packed_time:.1f} s, "
        f"calls {calls_ratio:.2f}x, time {packed_time / baseline_time:.2f}x  {packed}"
    )


if __name__ == "__main__":
    main()
