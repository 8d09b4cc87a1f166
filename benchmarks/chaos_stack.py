"""What the kill run and the chaos run share: the stack they run on and how they read it.

- ``Stack``: a real control plane (kube-apiserver + etcd, the CRDs applied), the Mixpanel
  sandbox and a snapshot of the work tree's operator, in one work folder;
- ``Api``: direct reads of kube-apiserver (milliseconds, fast enough to catch a create window);
- ``unanswered``: the MixpanelTasks in a create window;
- ``latency`` and ``lifecycle_time_scale``: the sandbox slowed for a moment;
- ``tracebacks`` and ``regressions``: what the operator log says.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from tests.conftest import CRDS, REPO, Kube
from tests.e2e.operator_harness import Sandbox, workdir

from mixpanel_dsr.localcluster import ControlPlane

GROUP = "/apis/mixpaneldsr.io/v1alpha1"


def log(message: str, who: str = "kill-run") -> None:
    print(f"[{who} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- fast reads


class Api:
    """Reads of kube-apiserver straight over HTTPS with the kubeconfig's client certificate:
    a few milliseconds each (kubectl takes ~100 ms), fast enough to catch a create window."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        with tempfile.TemporaryDirectory(prefix="kill-run-cert-") as folder:
            cert, key = Path(folder) / "client.crt", Path(folder) / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.touch(mode=0o600)
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            context.load_cert_chain(cert, key)
        self.http = httpx.Client(base_url=cluster["server"], verify=context, timeout=60)

    def items(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{GROUP}/namespaces/{namespace}/{plural}")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def close(self) -> None:
        self.http.close()


def unanswered(tasks: list[dict[str, Any]]) -> list[str]:
    """MixpanelTasks in a create window: written, no tracking id, not waiting for a retry
    (what a restarted engine treats as 'sent, answer maybe lost')."""
    out = []
    for task in tasks:
        status = task.get("status") or {}
        if status.get("trackingId") or status.get("nextAttemptAt"):
            continue
        if status.get("phase") in (None, "Creating"):
            out.append(task["metadata"]["name"])
    return sorted(out)


@dataclass
class Trace:
    """One traceback in the operator log."""

    header: str
    exception: str
    engine: bool
    #: Cut short by a kill (no exception line before the process died).
    kill_artifact: bool


@contextmanager
def latency(sandbox: Sandbox, seconds: float) -> Iterator[None]:
    sandbox.post("/faults", {"latency_seconds": seconds})
    try:
        yield
    finally:
        sandbox.post("/faults", {"latency_seconds": 0.0})


@contextmanager
def lifecycle_time_scale(sandbox: Sandbox, scale: float | None) -> Iterator[None]:
    if scale is None:
        yield
        return
    before = sandbox.get("/settings")["settings"]["lifecycle"]["time_scale"]
    sandbox.post("/settings", {"lifecycle": {"time_scale": scale}})
    try:
        yield
    finally:
        sandbox.post("/settings", {"lifecycle": {"time_scale": before}})


# ---------------------------------------------------------------------- the operator log

_TRACE = "Traceback (most recent call last):"
_HEADER = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def tracebacks(path: Path, start: int, ends: list[int]) -> list[Trace]:
    """Every traceback logged after ``start``; one that a kill cut short (the process died
    before its exception line) is a kill artifact."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    lines: list[tuple[int, str]] = []  # (absolute offset of the line's end, text)
    offset = start
    for raw in data.splitlines(keepends=True):
        offset += len(raw)
        lines.append((offset, raw.decode(errors="replace").rstrip("\n")))
    out: list[Trace] = []
    n = 0
    while n < len(lines):
        if lines[n][1].strip() != _TRACE:
            n += 1
            continue
        header = next(
            (text for _, text in reversed(lines[:n]) if _HEADER.match(text)), "(no log line)"
        )
        block = [lines[n][1]]
        m = n + 1
        exception = ""
        while m < len(lines):
            text = lines[m][1]
            if _HEADER.match(text):
                break
            block.append(text)
            chained = text.startswith(("During handling", "The above exception"))
            if text.strip() and not text.startswith((" ", "\t", _TRACE)) and not chained:
                exception = text  # the last unindented line of the (chained) traceback
            m += 1
        cut = any(lines[n][0] <= end <= lines[m - 1][0] for end in ends) and not exception
        engine = "mixpanel_dsr" in header or any("mixpanel_dsr" in t for t in block)
        out.append(Trace(header, exception or "(cut short)", engine, cut))
        n = m
    return out


#: Phases in the order a request goes through them; a move to an earlier one is a regression.
ORDER = ["Pending", "Queued", "Submitted", "InProgress", "Succeeded"]
_MOVE = re.compile(r"request ([^/\s]+)/(\S+): (\w+) -> (\w+) \(")


def regressions(path: Path, start: int, namespace: str) -> Counter[str]:
    """Phase moves backwards (e.g. Submitted -> Pending) the operator logged for the run's
    requests after ``start``, by move; nothing a person should see, reported as a finding."""
    out: Counter[str] = Counter()
    if not path.exists():
        return out
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    for match in _MOVE.finditer(text):
        ns, _name, before, after = match.groups()
        if ns != namespace or before not in ORDER or after not in ORDER:
            continue
        if ORDER.index(after) < ORDER.index(before):
            out[f"{before} -> {after}"] += 1
    return out


# ---------------------------------------------------------------------- the operator's code


IMPORT_CHECK = (
    "import mixpanel_dsr, mixpanel_dsr.cli, mixpanel_dsr.handlers; print(mixpanel_dsr.__file__)"
)


def snapshot(base: Path, tries: int = 10) -> tuple[Path, dict[str, str]]:
    """A copy of the work tree's operator package and CRDs, taken once it imports, so that
    every restart runs the same code while the tree is being edited; (crds, env)."""
    for attempt in range(tries):
        src, crds = base / "src", base / "crds"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(crds, ignore_errors=True)
        shutil.copytree(
            REPO / "operator" / "mixpanel_dsr",
            src / "mixpanel_dsr",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        shutil.copytree(CRDS, crds)
        env = {"PYTHONPATH": str(src)}
        check = subprocess.run(
            [sys.executable, "-c", IMPORT_CHECK],
            env={**os.environ, **env}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check.returncode == 0:
            if not Path(check.stdout.strip()).resolve().is_relative_to(src.resolve()):
                raise SystemExit(f"the operator would import {check.stdout.strip()}, not {src}")
            head = subprocess.run(
                ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                capture_output=True, text=True, check=False,
            ).stdout.strip()  # fmt: skip
            diff = subprocess.run(
                ["git", "-C", str(REPO), "diff", "HEAD", "--", "operator", "crds"],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            (base / "operator.diff").write_text(diff)
            log(
                f"operator code: a snapshot of the work tree ({head}; diff from HEAD in "
                f"{base / 'operator.diff'})"
            )
            return crds, env
        log(f"the work tree's operator does not import yet (try {attempt + 1}/{tries}):")
        log(check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "?")
        time.sleep(15)
    raise SystemExit("the work tree's operator never imported; nothing was run")


def dump(kube: Kube, sandbox: Sandbox, base: Path, namespace: str) -> None:
    """What a failure needs to be understood: the ledger, the requests, the sandbox."""
    for kind in ("mpt", "dsr"):
        out = kube.run("get", kind, "-n", namespace, "-o", "yaml", check=False, timeout=300)
        (base / f"{kind}.yaml").write_text(out.stdout)
    (base / "sandbox-tasks.json").write_text(json.dumps(sandbox.get("/tasks"), indent=1))
    (base / "sandbox-calls.json").write_text(json.dumps(sandbox.get("/calls"), indent=1))


# ---------------------------------------------------------------------- the stack


class Stack:
    """A control plane with the CRDs and ``namespaces``, the sandbox, and the operator's
    code (a snapshot of the work tree unless ``live``), in the work folder ``base``."""

    def __init__(
        self, base: Path, namespaces: list[str], *, time_scale: float, live: bool = False
    ) -> None:
        self.base = base
        self.namespaces = namespaces
        self.crds, self.env = (CRDS, {}) if live else snapshot(base)
        self.plane = ControlPlane()
        self.kube = Kube(self.plane)
        self.sandbox = Sandbox(base, time_scale=time_scale)

    def __enter__(self) -> Stack:
        self.plane.start()
        try:
            self.kube.run("apply", "-f", str(self.crds))
            self.kube.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            for namespace in [*self.namespaces, "mixpanel-dsr-system"]:
                self.kube.run("create", "namespace", namespace)
            self.sandbox.start()
        except BaseException:
            self.plane.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sandbox.stop()
        self.plane.stop()


def new_workdir() -> Path:
    return workdir()
