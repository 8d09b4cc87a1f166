"""Build Go commands from pinned Go modules in this repository, once per machine.

Two modules use it:

* ``controlplane/``: kube-apiserver, kubectl and etcd (:func:`ensure_binaries`);
* ``gotools/``: helm and a small kstatus command the chart and GitOps tests run
  (:func:`ensure_tools`).

A :class:`GoBuild` names a module, the commands to build from it, the versions
it pins and the files that decide the output. The binaries land in
``$MIXPANEL_DSR_CACHE/<name>/<versions>_<digest of those files>``: a change of
go.mod, go.sum or the module's own sources makes a new folder, and a file lock
makes concurrent first builds wait for one.
"""

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_REPO = Path(__file__).resolve().parents[3]

#: The Go module that pins the control plane (``controlplane/`` at the repository's top).
MODULE_DIR = Path(os.environ.get("MIXPANEL_DSR_CONTROLPLANE_MODULE", _REPO / "controlplane"))
COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "./cmd/etcd",
}

#: The Go module that pins the developer tools (``gotools/``): helm and kstatus.
TOOLS_MODULE_DIR = Path(os.environ.get("MIXPANEL_DSR_GOTOOLS_MODULE", _REPO / "gotools"))
TOOLS_COMMANDS = {
    "helm": "helm.sh/helm/v3/cmd/helm",
    "kstatus": "./cmd/kstatus",
}


def cache_root() -> Path:
    """Where built binaries live: $MIXPANEL_DSR_CACHE, else the XDG cache directory."""
    if env := os.environ.get("MIXPANEL_DSR_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mixpanel-dsr-operator"


def required_version(module_dir: Path, module: str) -> str:
    """The version of ``module`` that ``module_dir/go.mod`` requires."""
    text = (module_dir / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.M)
    if not found:
        raise RuntimeError(f"{module_dir}/go.mod does not require {module}")
    return found.group(1)


# ---------------------------------------------------------------------- the generic builder


@dataclass(frozen=True)
class GoBuild:
    """What to build from one pinned Go module, and how to name the cached result."""

    #: Cache sub-folder, e.g. ``controlplane``.
    name: str
    module_dir: Path
    #: Binary name -> package to build (``./cmd/x`` for the module's own commands).
    commands: dict[str, str]
    #: (label, module path) pairs; the required versions go into the cache key.
    pins: tuple[tuple[str, str], ...]
    #: Files (relative to ``module_dir``) whose bytes decide the output, besides go.mod/go.sum.
    sources: tuple[str, ...] = ()
    #: ``-ldflags`` from the pinned versions (label -> version).
    ldflags: Callable[[dict[str, str]], str] = field(default=lambda _versions: "-s -w")
    #: Shown before a cold build: how long it takes.
    expected: str = "a few minutes"

    def versions(self) -> dict[str, str]:
        return {label: required_version(self.module_dir, mod) for label, mod in self.pins}

    def key(self) -> str:
        """Versions plus a digest of everything that decides the build's output."""
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum", *self.sources):
            digest.update((self.module_dir / name).read_bytes())
        labels = "_".join(f"{label}-{version}" for label, version in self.versions().items())
        return f"{labels}_{digest.hexdigest()[:12]}"

    def target(self) -> Path:
        return cache_root() / self.name / self.key()

    def ensure(self, *, log: bool = True) -> Path:
        """The folder holding the built commands, building them first if this machine has none.

        Concurrent callers (two test sessions, ``make cluster`` beside the tests)
        wait on a lock file and then find the finished build.
        """
        target = self.target()
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if target.is_dir():
                return target
            self._build(target, log=log)
        return target

    def _build(self, target: Path, *, log: bool) -> None:
        go = shutil.which("go")
        if go is None:
            raise RuntimeError(f"the Go toolchain is needed to build {self.name}: install go")
        versions = self.versions()
        if log:
            names = ", ".join(self.commands)
            pinned = ", ".join(f"{label} {version}" for label, version in versions.items())
            print(
                f"building {names} ({pinned}) from the Go module proxy into {target}; "
                f"once per machine, {self.expected} ...",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
            subprocess.run(
                [
                    go, "build", "-trimpath", "-ldflags", self.ldflags(versions),
                    "-o", str(staging) + "/", *self.commands.values(),
                ],
                cwd=self.module_dir,
                env=env,
                check=True,
            )  # fmt: skip
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if log:
            print(f"built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the control plane


@dataclass(frozen=True)
class Binaries:
    """Paths of the built control-plane commands."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    kubernetes_version: str
    etcd_version: str


def _controlplane_ldflags(versions: dict[str, str]) -> str:
    k8s_version = versions["k8s"]
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


def controlplane_build(module_dir: Path = MODULE_DIR) -> GoBuild:
    return GoBuild(
        name="controlplane",
        module_dir=module_dir,
        commands=COMMANDS,
        pins=(("k8s", "k8s.io/kubernetes"), ("etcd", "go.etcd.io/etcd/server/v3")),
        sources=("cmd/etcd/main.go",),
        ldflags=_controlplane_ldflags,
        expected="about 5 minutes on 2 cores",
    )


def pinned_versions(module_dir: Path = MODULE_DIR) -> tuple[str, str]:
    """(kubernetes version, etcd version) as go.mod requires them."""
    versions = controlplane_build(module_dir).versions()
    return versions["k8s"], versions["etcd"]


def cache_key(module_dir: Path = MODULE_DIR) -> str:
    """Versions plus a digest of everything that decides the build's output."""
    return controlplane_build(module_dir).key()


def ensure_binaries(*, log: bool = True) -> Binaries:
    """The cached control-plane binaries, building them first if this machine has none."""
    build = controlplane_build()
    versions = build.versions()
    target = build.ensure(log=log)
    return Binaries(
        kube_apiserver=target / "kube-apiserver",
        etcd=target / "etcd",
        kubectl=target / "kubectl",
        kubernetes_version=versions["k8s"],
        etcd_version=versions["etcd"],
    )


# ---------------------------------------------------------------------- helm and kstatus


@dataclass(frozen=True)
class Tools:
    """Paths of the built developer tools."""

    helm: Path
    kstatus: Path
    helm_version: str
    cli_utils_version: str


def _tools_ldflags(versions: dict[str, str]) -> str:
    # What helm's own Makefile stamps in: its version, and the Kubernetes version
    # of its client-go (1.N for v0.N) as the default for .Capabilities and lint.
    minor = versions["client-go"].lstrip("v").split(".")[1]
    helm = "helm.sh/helm/v3"
    flags = ["-s -w", f"-X {helm}/internal/version.version={versions['helm']}"]
    flags.append(f"-X {helm}/internal/version.gitTreeState=clean")
    for pkg in (f"{helm}/pkg/lint/rules", f"{helm}/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def tools_build(module_dir: Path = TOOLS_MODULE_DIR) -> GoBuild:
    return GoBuild(
        name="gotools",
        module_dir=module_dir,
        commands=TOOLS_COMMANDS,
        pins=(
            ("helm", "helm.sh/helm/v3"),
            ("cli-utils", "sigs.k8s.io/cli-utils"),
            ("client-go", "k8s.io/client-go"),
        ),
        sources=("cmd/kstatus/main.go",),
        ldflags=_tools_ldflags,
        expected="about 2 minutes on 2 cores",
    )


def ensure_tools(*, log: bool = True) -> Tools:
    """The cached helm and kstatus, building them first if this machine has none."""
    build = tools_build()
    versions = build.versions()
    target = build.ensure(log=log)
    return Tools(
        helm=target / "helm",
        kstatus=target / "kstatus",
        helm_version=versions["helm"],
        cli_utils_version=versions["cli-utils"],
    )
