"""Build kube-apiserver, kubectl and etcd from the pinned Go module, once per machine."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: The Go module that pins the control plane (``controlplane/`` at the repository's top).
MODULE_DIR = Path(
    os.environ.get(
        "MIXPANEL_DSR_CONTROLPLANE_MODULE",
        Path(__file__).resolve().parents[3] / "controlplane",
    )
)
COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "./cmd/etcd",
}


@dataclass(frozen=True)
class Binaries:
    """Paths of the built control-plane commands."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    kubernetes_version: str
    etcd_version: str


def cache_root() -> Path:
    """Where built binaries live: $MIXPANEL_DSR_CACHE, else the XDG cache directory."""
    if env := os.environ.get("MIXPANEL_DSR_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mixpanel-dsr-operator"


def pinned_versions(module_dir: Path = MODULE_DIR) -> tuple[str, str]:
    """(kubernetes version, etcd version) as go.mod requires them."""
    text = (module_dir / "go.mod").read_text()
    k8s = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", text, re.M)
    etcd = re.search(r"^\s*go\.etcd\.io/etcd/server/v3 (v\S+)", text, re.M)
    if not k8s or not etcd:
        raise RuntimeError(f"{module_dir}/go.mod does not pin k8s.io/kubernetes and etcd server")
    return k8s.group(1), etcd.group(1)


def cache_key(module_dir: Path = MODULE_DIR) -> str:
    """Versions plus a digest of everything that decides the build's output."""
    k8s, etcd = pinned_versions(module_dir)
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "cmd/etcd/main.go"):
        digest.update((module_dir / name).read_bytes())
    return f"k8s-{k8s}_etcd-{etcd}_{digest.hexdigest()[:12]}"


def _ldflags(k8s_version: str) -> str:
    major, minor = k8s_version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return " ".join(
        [
            "-s -w",
            f"-X {pkg}.gitVersion={k8s_version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    )


def ensure_binaries(*, log: bool = True) -> Binaries:
    """The cached binaries, building them first if this machine has none for these versions.

    Concurrent callers (two test sessions, ``make cluster`` beside the tests)
    wait on a lock file and then find the finished build.
    """
    k8s, etcd = pinned_versions()
    target = cache_root() / "controlplane" / cache_key()
    binaries = Binaries(
        kube_apiserver=target / "kube-apiserver",
        etcd=target / "etcd",
        kubectl=target / "kubectl",
        kubernetes_version=k8s,
        etcd_version=etcd,
    )
    if target.is_dir():
        return binaries
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return binaries
        _build(target, k8s, log=log)
    return binaries


def _build(target: Path, k8s_version: str, *, log: bool) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go toolchain is needed to build the control plane: install go")
    if log:
        print(
            f"building kube-apiserver, kubectl and etcd ({k8s_version}) from the Go module "
            f"proxy into {target}; once per machine, about 5 minutes on 2 cores ...",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
        subprocess.run(
            [
                go, "build", "-trimpath", "-ldflags", _ldflags(k8s_version),
                "-o", str(staging) + "/", *COMMANDS.values(),
            ],
            cwd=MODULE_DIR,
            env=env,
            check=True,
        )  # fmt: skip
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if log:
        print(f"built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
