"""A TCP proxy on loopback that can be told to stall: a partition whose calls HANG, not fail.

Put between one operator replica and kube-apiserver (its kubeconfig's server is the
proxy; TLS passes through untouched, the API server's certificate names 127.0.0.1).
``stall()`` keeps every connection open and accepts new ones, but forwards nothing in
either direction, so the replica's Lease renewals and watches wait for an answer that
never comes, as across a network partition that drops packets; ``resume()`` forwards
again (what was held is sent on).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_HOST = "127.0.0.1"


class StallingProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream`` (host, port) until told to stall."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server((_HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0

    @property
    def address(self) -> str:
        return f"https://{_HOST}:{self.port}"

    def __enter__(self) -> StallingProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                # Stalled: hold what came in, send nothing, keep both ends open.
                while not self._flowing.wait(0.1):
                    if self._closed.is_set():
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
