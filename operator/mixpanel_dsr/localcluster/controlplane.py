"""Start and stop etcd + kube-apiserver on loopback, with RBAC and client-certificate users."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from mixpanel_dsr.localcluster.build import Binaries, ensure_binaries
from mixpanel_dsr.localcluster.pki import CertificateAuthority, service_account_key

_HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Component(StrEnum):
    """A process of the control plane (also the name of its log, ``<name>.log``)."""

    ETCD = "etcd"
    APISERVER = "kube-apiserver"


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message holds the tail of its log."""


class ControlPlane:
    """etcd and kube-apiserver as child processes, with a kubeconfig for an admin.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Everything
    lives in a temporary folder that :meth:`stop` removes.
    """

    def __init__(self, binaries: Binaries | None = None, *, workdir: Path | None = None) -> None:
        self.binaries = binaries or ensure_binaries()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mixpanel-dsr-cp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.server = f"https://{_HOST}:{self.port}"
        self._ca = CertificateAuthority()
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        #: The command line of each component, to start the same process again.
        self._argv: dict[str, list[str]] = {}
        self.kubeconfig = self.workdir / "kubeconfig"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Start etcd, then kube-apiserver; return once the API server is ready."""
        try:
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            self.kubeconfig = self.mint_identity("admin", ("system:masters",), self.kubeconfig)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the API server, then etcd, and remove the working folder."""
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, component: Component, *, down: float = 0.0, timeout: float = 120.0) -> None:
        """Stop one component (SIGTERM, SIGKILL after 15 s), leave it down for ``down``
        seconds, and start the same process again: same data directory, ports and
        certificates, so clients keep their kubeconfig. Returns once the API server is ready."""
        name = component.value
        index = next(i for i, (n, _) in enumerate(self._procs) if n == name)
        proc = self._procs[index][1]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        time.sleep(down)
        self._procs[index] = (name, self._popen(name, self._argv[name]))
        self._wait_ready(timeout)

    def pid(self, component: Component) -> int:
        """The process id of a running component."""
        return next(p.pid for n, p in self._procs if n == component.value)

    # ------------------------------------------------------------------ identities

    def mint_identity(
        self, user: str, groups: tuple[str, ...] = (), path: Path | None = None
    ) -> Path:
        """Write a kubeconfig for a client-certificate user in ``groups``; return its path.

        For a service account use ``system:serviceaccount:NS:NAME`` with groups
        ``system:serviceaccounts`` and ``system:serviceaccounts:NS``.
        """
        pair = self._ca.issue(user, organizations=groups)
        safe = "".join(c if c.isalnum() else "-" for c in user)
        path = path or self.workdir / f"kubeconfig-{safe}"

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self._ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(pair.cert),
                        "client-key-data": b64(pair.key),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # ------------------------------------------------------------------ kubectl

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane."""
        return subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ internals

    def _spawn(self, name: str, argv: list[str]) -> None:
        self._argv[name] = argv
        self._procs.append((name, self._popen(name, argv)))

    def _popen(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return proc

    def _start_etcd(self) -> str:
        client, peer = f"http://{_HOST}:{free_port()}", f"http://{_HOST}:{free_port()}"
        self._spawn(
            Component.ETCD,
            [
                str(self.binaries.etcd),
                "--name=local",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        return client

    def _start_apiserver(self, etcd_url: str) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        (pki / "ca.crt").write_bytes(self._ca.cert_pem)
        cert, key = self._ca.issue(
            "kube-apiserver", server_hosts=(_HOST, "localhost", "10.0.0.1")
        ).write(pki, "apiserver")
        sa_key = pki / "sa.key"
        sa_key.write_bytes(service_account_key())
        self._spawn(
            Component.APISERVER,
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={_HOST}",
                f"--advertise-address={_HOST}",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a component's log (etcd or kube-apiserver)."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _get(self, path: str) -> Any:
        context = ssl.create_default_context(cadata=self._ca.cert_pem.decode())
        admin = self._ca.issue("readiness-probe", organizations=("system:masters",))
        certs = self.workdir / "pki"
        cert, key = admin.write(certs, "probe")
        context.load_cert_chain(cert, key)
        with urllib.request.urlopen(f"{self.server}{path}", context=context, timeout=5) as resp:  # noqa: S310
            return resp.read()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self._get("/readyz")
                self._get("/api/v1/namespaces/default")
                return
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
            time.sleep(0.5)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout:.0f}s ({last_error}):\n"
            f"{self.log_tail('kube-apiserver')}"
        )

    def env(self) -> dict[str, str]:
        """The environment for a child process that should talk to this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
