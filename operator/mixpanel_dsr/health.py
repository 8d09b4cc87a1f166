"""The health server: ``/healthz`` (liveness) and ``/readyz`` (readiness) on ``--health-port``.

One server for the whole life of the process, standing by and leading alike. ``/healthz``
answers 200 once the replica stands by or its engine started (503 before: starting), and as
long as the event loop runs. ``/readyz`` answers 200 or 503 with a JSON body
``{"ready", "reason", "message", "role"}`` decided by :func:`mixpanel_dsr.readiness.readiness`;
the API server check behind it (``GET /version``, allowed to every authenticated user) runs at
most every :data:`API_CHECK_SECONDS`, on a thread of its own, and gives up after a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from kubernetes import client

from mixpanel_dsr.readiness import Role, alive, readiness

#: How long an answer of the API server counts (probes come every 10 s or so).
API_CHECK_SECONDS = 5.0
#: (connect, read) timeout of that check.
API_CHECK_TIMEOUT = (2.0, 3.0)


def _api_server_answers() -> bool:
    try:
        client.VersionApi().get_code(_request_timeout=API_CHECK_TIMEOUT)
    except Exception:  # any failure means: not reachable now
        return False
    return True


class HealthServer:
    """Serves the probes; :attr:`role` is set by the command as leadership changes."""

    def __init__(
        self,
        port: int,
        *,
        engine_started: Callable[[], bool],
        role: Role = Role.LEADING,
        check: Callable[[], bool] = _api_server_answers,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.role = role
        self._engine_started = engine_started
        self._check = check
        self._clock = clock
        self._checked: tuple[float, bool] | None = None
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")
        self._runner: web.AppRunner | None = None

    async def api_server_answers(self) -> bool:
        async with self._lock:
            now = self._clock()
            if self._checked is None or now - self._checked[0] >= API_CHECK_SECONDS:
                answered = await asyncio.get_running_loop().run_in_executor(self._pool, self._check)
                self._checked = (self._clock(), answered)
            return self._checked[1]

    async def _healthz(self, _: web.Request) -> web.Response:
        live = alive(role=self.role, engine_started=self._engine_started())
        body = {"alive": live, "role": self.role.value}
        return web.json_response(body, status=200 if live else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        found = readiness(
            role=self.role,
            api_server_answers=await self.api_server_answers(),
            engine_started=self._engine_started(),
        )
        body = {
            "ready": found.ready,
            "reason": found.reason.value,
            "message": found.message,
            "role": self.role.value,
        }
        return web.json_response(body, status=200 if found.ready else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self.port, reuse_address=True)  # noqa: S104
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._pool.shutdown(wait=False, cancel_futures=True)
