"""``python -m mixpanel_dsr.localcluster``: build, or run a local control plane until Ctrl-C.

python -m mixpanel_dsr.localcluster build   # build the pinned binaries (once per machine)
python -m mixpanel_dsr.localcluster tools   # build helm and kstatus from gotools/ (ditto)
python -m mixpanel_dsr.localcluster run     # etcd + kube-apiserver, CRDs installed
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from mixpanel_dsr.localcluster.build import ensure_binaries, ensure_tools
from mixpanel_dsr.localcluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[3]


def wait_for_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def publish(plane: ControlPlane, state_dir: Path) -> tuple[Path, Path]:
    """Copy the admin kubeconfig and link kubectl into ``state_dir`` for people to use."""
    state_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = state_dir / "kubeconfig"
    kubeconfig.write_bytes(plane.kubeconfig.read_bytes())
    kubeconfig.chmod(0o600)
    bin_dir = state_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.unlink(missing_ok=True)
    kubectl.symlink_to(plane.binaries.kubectl)
    return kubeconfig, kubectl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixpanel_dsr.localcluster")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build kube-apiserver, kubectl and etcd (cached per machine)")
    sub.add_parser("tools", help="build helm and kstatus from gotools/ (cached per machine)")
    run = sub.add_parser("run", help="run etcd + kube-apiserver until Ctrl-C")
    run.add_argument("--state-dir", type=Path, default=REPO / ".local", help="kubeconfig goes here")
    run.add_argument("--no-crds", action="store_true", help="do not install the CRDs")
    args = parser.parse_args(argv)

    if args.command == "tools":
        tools = ensure_tools()
        print(tools.helm)
        print(tools.kstatus)
        return 0
    binaries = ensure_binaries()
    if args.command == "build":
        for path in (binaries.kube_apiserver, binaries.etcd, binaries.kubectl):
            print(path)
        return 0

    with ControlPlane(binaries) as plane:
        if not args.no_crds:
            plane.kubectl("apply", "-f", str(REPO / "crds"))
        kubeconfig, kubectl = publish(plane, args.state_dir)
        print(
            f"kube-apiserver {binaries.kubernetes_version} is up at {plane.server} "
            f"(etcd {binaries.etcd_version}; RBAC, client certificates).\n"
            f"In another shell:\n"
            f"  export KUBECONFIG={kubeconfig} PATH={kubectl.parent}:$PATH\n"
            f"  kubectl get crds\n"
            f"Ctrl-C stops it and removes its data.",
            flush=True,
        )
        wait_for_signal()
        print("stopping ...", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
