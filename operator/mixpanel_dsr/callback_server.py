"""The listener for Mixpanel's status callbacks (``--callback-port``), for projects with
``spec.statusCallbacks``.

Mixpanel POSTs a task's OpenDSR status to ``--callback-url`` (https: behind an Ingress, or
served here directly with ``--callback-tls-cert``/``--callback-tls-key``). A callback whose
signature does not verify with ``--callback-key-file`` is refused (401) and counted; a good
one has its task checked at once when it says the task moved. Nothing else happens on a
callback: the status check that follows decides. A replica standing by answers 503, and
Mixpanel delivers again later.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from mixpanel_dsr import metrics
from mixpanel_dsr.mixpanel.callbacks import MAX_BODY, SIGNATURE_HEADER, CallbackError, parse, verify

if TYPE_CHECKING:
    from mixpanel_dsr.engine import Engine

log = logging.getLogger(__name__)


class CallbackServer:
    def __init__(
        self,
        port: int,
        key: rsa.RSAPublicKey,
        engine: Callable[[], Engine | None],
        *,
        tls: tuple[str, str] | None = None,
        host: str = "0.0.0.0",  # noqa: S104 - reached through a Service/Ingress
    ) -> None:
        self.port = port
        self.key = key
        self.engine = engine
        self.tls = tls
        self.host = host
        self._runner: web.AppRunner | None = None

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            metrics.CALLBACKS.labels("refused").inc()
            return web.json_response({"error": "body too large"}, status=413)
        try:
            verify(self.key, body, request.headers.get(SIGNATURE_HEADER))
        except CallbackError as err:
            metrics.CALLBACKS.labels("refused").inc()
            log.warning("status callback refused: %s", err)
            return web.json_response({"error": str(err)}, status=401)
        try:
            callback = parse(body)
        except CallbackError as err:
            metrics.CALLBACKS.labels("refused").inc()
            log.warning("status callback refused: %s", err)
            return web.json_response({"error": str(err)}, status=400)
        engine = self.engine()
        if engine is None:
            metrics.CALLBACKS.labels("standby").inc()
            return web.json_response({"error": "standing by"}, status=503)
        outcome = engine.on_callback(callback)
        metrics.CALLBACKS.labels(outcome).inc()
        log.debug("status callback (%s): %s", callback.status.value, outcome)
        return web.json_response({"outcome": outcome})

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/", self.receive)
        app.router.add_post("/mixpanel/callbacks", self.receive)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        context = None
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        await site.start()
        log.info("status callbacks: listening on port %d (%s)", self.port,
                 "https" if context else "http behind a TLS-terminating proxy")  # fmt: skip

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
