"""/healthz and /readyz of the real operator process against a real API server.

Ready means the API server answers and the replica either works (its engine started) or,
with leader election, stands by. The API server is put behind a TCP relay that the test
opens and closes, so the operator sees it come and go as through a broken network.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane
from mixpanel_dsr.localcluster.controlplane import free_port
from tests.e2e.operator_harness import Operator, wait_until

pytestmark = pytest.mark.e2e


class Relay:
    """A TCP relay from a loopback port to the API server's, switched on and off."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def on(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def off(self) -> None:
        """Stop listening and cut every connection, as a network partition would."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Probed(Operator):
    """The operator process; start() returns as soon as its health port answers at all."""

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.log_tail()}")
        try:
            httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        response = httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=15)
        body: dict[str, Any] = response.json()
        return response.status_code, body


@contextmanager
def running(operator: Probed) -> Iterator[Probed]:
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def _scope(namespace: str) -> list[str]:
    return ["--namespace", namespace, "--operator-namespace", namespace]


def test_the_leader_and_the_standby_are_both_ready(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A rolling update needs the standby ready: it cannot lead before the old pod leaves."""
    election = ["--leader-elect", "--leader-election-id", f"readyz-{namespace}"]

    def replica(name: str) -> Probed:
        return Probed(
            tmp_path, control_plane.kubeconfig, {}, election,
            scope=_scope(namespace), env={"POD_NAME": name}, log=tmp_path / f"{name}.log",
        )  # fmt: skip

    with running(replica("a")) as a:
        leading = wait_until(
            lambda: (found := a.probe("/readyz"))[0] == 200 and found[1]["reason"] == "Leading",
            timeout=60, what="replica a ready and leading",
        )  # fmt: skip
        assert leading
        with running(replica("b")) as b:
            _status, body = wait_until(
                lambda: (found := b.probe("/readyz"))[0] == 200 and found,
                timeout=60, what="replica b ready",
            )  # fmt: skip
            assert body == {
                "ready": True, "reason": "StandingBy",
                "message": "standing by for the leader Lease", "role": "StandingBy",
            }  # fmt: skip
            assert b.probe("/healthz") == (200, {"alive": True, "role": "StandingBy"})
            assert a.probe("/readyz")[1]["role"] == "Leading"
            # The leader leaves cleanly: the standby takes the Lease and is ready as leader.
            a.stop()
            wait_until(
                lambda: b.probe("/readyz")[1]["reason"] == "Leading",
                timeout=60, what="replica b to lead",
            )  # fmt: skip


def test_not_ready_while_the_api_server_cannot_be_reached(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    relay = Relay(int(control_plane.server.rsplit(":", 1)[1]))
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    kubeconfig = tmp_path / "kubeconfig-relay"
    kubeconfig.write_text(yaml.safe_dump(config))
    operator = Probed(tmp_path, kubeconfig, {}, scope=_scope(namespace))
    with running(operator):
        # No API server: the engine cannot start (no installation key), so neither alive
        # nor ready, and the reason says which.
        status, body = operator.probe("/readyz")
        assert (status, body["reason"]) == (503, "APIServerUnreachable"), body
        assert operator.probe("/healthz")[0] == 503
        relay.on()
        wait_until(
            lambda: operator.probe("/readyz") == (200, {
                "ready": True, "reason": "Leading", "message": "working", "role": "Leading",
            }),
            timeout=90, what="ready once the API server answers",
        )  # fmt: skip
        assert operator.probe("/healthz") == (200, {"alive": True, "role": "Leading"})
        # A partition after the start: still alive (a restart would not help), not ready.
        relay.off()
        status, body = wait_until(
            lambda: (found := operator.probe("/readyz"))[0] == 503 and found,
            timeout=30, what="not ready once the API server is cut off",
        )  # fmt: skip
        assert body["reason"] == "APIServerUnreachable"
        assert operator.probe("/healthz")[0] == 200
        relay.on()
        wait_until(lambda: operator.probe("/readyz")[0] == 200, timeout=30, what="ready again")
    relay.off()
