"""``make demo``: the whole thing on one machine, no Mixpanel account and no cluster needed.

Starts a real local control plane (etcd + kube-apiserver, CRDs installed), the
Mixpanel sandbox on loopback (one port per region), the operator pointed at
the sandbox, and applies the sample projects and requests from ``examples/``.
Then it waits: watch the requests finish with the kubectl line it prints;
Ctrl-C stops everything. ``--exit-when-done`` returns once every sample
request has finished instead (what the tests run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mixpanel_dsr.localcluster.__main__ import publish, wait_for_signal
from mixpanel_dsr.localcluster.build import ensure_binaries
from mixpanel_dsr.localcluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
FINISHED = {"Succeeded", "Failed", "Cancelled"}


@contextmanager
def _child(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_file(
    path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"exited early, see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"{path} did not appear within {timeout:.0f}s")


def start_sandbox(stack: ExitStack, state: Path, time_scale: float) -> dict[str, str]:
    """Run ``mixpanel-sandbox`` on free ports; return its base URL per region."""
    urls_file = state / "sandbox-urls.json"
    urls_file.unlink(missing_ok=True)
    log = state / "sandbox.log"
    proc = stack.enter_context(
        _child(
            [
                sys.executable, "-m", "mixpanel_dsr.sandbox",
                "--port-us", "0", "--port-eu", "0", "--port-in", "0",
                "--time-scale", str(time_scale), "--urls-file", str(urls_file),
            ],
            log,
        )
    )  # fmt: skip
    urls: dict[str, str] = json.loads(_wait_for_file(urls_file, proc, log))
    return urls


def start_operator(
    stack: ExitStack, plane: ControlPlane, state: Path, urls: dict[str, str]
) -> bool:
    """Run the operator against the control plane and the sandbox, if this build has it."""
    if importlib.util.find_spec("mixpanel_dsr.cli") is None:
        return False
    region_urls = ",".join(f"{region}={url}" for region, url in sorted(urls.items()))
    stack.enter_context(
        _child(
            [
                sys.executable, "-m", "mixpanel_dsr.cli", "run", "--all-namespaces",
                "--operator-namespace", "mixpanel-dsr-system",
                "--mixpanel-region-urls", region_urls,
                # Demo pace: the sandbox's tasks take seconds, not weeks.
                "--packing-quiet", "3s", "--poll-initial", "2s", "--poll-max", "10s",
                "--retry-interval", "5s", "--metrics-port", "0", "--health-port", "0",
            ],
            state / "operator.log",
            env=plane.env(),
        )
    )  # fmt: skip
    return True


def phases(plane: ControlPlane) -> dict[str, str]:
    """namespace/name -> phase of every DataSubjectRequest that is not a dry run."""
    out = plane.kubectl("get", "dsr", "-A", "-o", "json").stdout
    return {
        f"{d['metadata']['namespace']}/{d['metadata']['name']}": d.get("status", {}).get(
            "phase", "Pending"
        )
        for d in json.loads(out)["items"]
        if not d["spec"].get("dryRun")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixpanel_dsr.demo", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=REPO / ".local")
    parser.add_argument(
        "--time-scale", type=float, default=0.2, help="sandbox task durations x this (faster < 1)"
    )
    parser.add_argument("--exit-when-done", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="with --exit-when-done")
    args = parser.parse_args(argv)
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)

    binaries = ensure_binaries()
    with ExitStack() as stack:
        plane = stack.enter_context(ControlPlane(binaries))
        plane.kubectl("apply", "-f", str(REPO / "crds"))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"
        )  # fmt: skip
        kubeconfig, kubectl = publish(plane, state)
        urls = start_sandbox(stack, state, args.time_scale)
        has_operator = start_operator(stack, plane, state, urls)
        for path in sorted(EXAMPLES.glob("*.yaml")):
            plane.kubectl("apply", "-f", str(path))
        print(
            f"Local control plane {binaries.kubernetes_version} at {plane.server}; "
            f"Mixpanel sandbox at {urls.get('US')} (US), {urls.get('EU')} (EU), "
            f"{urls.get('IN')} (IN); logs in {state}/.\n"
            f"Sample projects and requests from examples/ are applied. Watch them:\n"
            f"  export KUBECONFIG={kubeconfig} PATH={kubectl.parent}:$PATH\n"
            f"  kubectl get dsr -A -w\n"
            f"  kubectl describe dsr -n privacy priv-1234-erase",
            flush=True,
        )
        if not has_operator:
            print(
                "This build has no reconciler yet: requests stay Pending (the API, admission "
                "and the sandbox are live).",
                flush=True,
            )
        if not args.exit_when_done:
            print("Ctrl-C stops everything and removes its data.", flush=True)
            wait_for_signal()
            return 0
        if not has_operator:
            return 0
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            current = phases(plane)
            if current and all(p in FINISHED for p in current.values()):
                print(json.dumps(current, indent=2))
                return 0 if all(p == "Succeeded" for p in current.values()) else 1
            time.sleep(2)
        print(f"not finished within {args.timeout:.0f}s: {phases(plane)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
