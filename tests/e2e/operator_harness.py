"""The operator and the Mixpanel sandbox as real processes, for end-to-end tests.

Both run exactly as a user runs them (``dsr-operator run``, ``mixpanel-sandbox``),
against the session's real kube-apiserver; tests drive them with real kubectl
and read the sandbox's inspection endpoints to assert what Mixpanel saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from mixpanel_dsr.localcluster.controlplane import free_port

#: Operator pace for tests: the sandbox's tasks take seconds, not weeks.
FAST_FLAGS = [
    "--packing-quiet", "2s", "--packing-max-wait", "30s",
    "--poll-initial", "1s", "--poll-max", "3s", "--poll-initial", "1s",
    "--retry-interval", "2s", "--tick", "0.5s", "--create-retry-max", "10s", "--orphan-grace", "5s",
]  # fmt: skip


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, what: str = "", interval: float = 0.5
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what or predicate}: {last!r}"
    )


class Sandbox:
    """``mixpanel-sandbox`` on free ports, with its /_sandbox admin API."""

    def __init__(self, workdir: Path, *, time_scale: float = 0.1) -> None:
        self.workdir = workdir
        self.urls_file = workdir / "sandbox-urls.json"
        self.log = workdir / "sandbox.log"
        self.time_scale = time_scale
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, str] = {}

    def start(self) -> None:
        self.urls_file.unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mixpanel_dsr.sandbox",
                    "--port-us", "0", "--port-eu", "0", "--port-in", "0",
                    "--time-scale", str(self.time_scale), "--urls-file", str(self.urls_file),
                ],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(
            lambda: self.urls_file.exists() and self.urls_file.read_text().strip(),
            timeout=30,
            what="sandbox start",
        )
        self.urls = json.loads(self.urls_file.read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    @property
    def admin(self) -> str:
        return self.urls["US"].removesuffix("/api/app") + "/_sandbox"

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.admin}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.admin}{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def add_project(
        self, region: str = "US", *, oauth: str | None = None, expires_at: str | None = None
    ) -> tuple[str, str]:
        """Register a fresh project; return (project token, OAuth token)."""
        token = f"t{uuid.uuid4().hex[:16]}"
        oauth = oauth or f"oauth-{uuid.uuid4().hex[:12]}"
        entry: dict[str, Any] = {"token": oauth}
        if expires_at:
            entry["expires_at"] = expires_at
        self.post(
            "/projects",
            {"token": token, "region": region, "oauth_tokens": [entry], "api_secret": "s3cret"},
        )
        return token, oauth

    def calls(self, token: str, **filters: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/calls", project=token, **filters)
        return result

    def tasks(self, token: str, **filters: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/tasks", project=token, **filters)["tasks"]
        return result

    def ids(self, token: str) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.get("/ids", project=token)["ids"].get(token, {})
        return result


class Operator:
    """``dsr-operator run`` as a child process; can be killed and started again."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        region_urls: dict[str, str],
        extra: list[str] | None = None,
        *,
        scope: list[str] | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.region_urls = region_urls
        self.extra = extra or []
        #: Which namespaces to serve (and the rest of the deployment's flags).
        self.scope = scope or ["--all-namespaces", "--operator-namespace", "mixpanel-dsr-system"]
        self.env = env or {}
        self.log = log or workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        #: The pace flags (another engine's, in the benchmarks).
        self.flags = list(FAST_FLAGS)

    def start(self) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        urls = ",".join(f"{r}={u}" for r, u in sorted(self.region_urls.items()))
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mixpanel_dsr.cli", "run", *self.scope,
                    "--mixpanel-region-urls", urls,
                    "--metrics-port", str(self.metrics_port),
                    "--health-port", str(self.health_port),
                    *self.flags, *self.extra,
                ],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        wait_until(self.healthy, timeout=60, what="operator liveness endpoint")

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.log_tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGTERM)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def log_tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mixpanel-dsr-e2e-"))
