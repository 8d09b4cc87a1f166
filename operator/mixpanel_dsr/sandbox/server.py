"""Start and stop the sandbox: one aiohttp site per region, all sharing one state."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox.app import API_PREFIX, build_app
from mixpanel_dsr.sandbox.callbacks import CallbackSender
from mixpanel_dsr.sandbox.config import SandboxConfig, demo_projects
from mixpanel_dsr.sandbox.state import Clock, SandboxState


def _url_host(host: str) -> str:
    """The host to put in URLs for a bind address (wildcards become loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - only mapping a wildcard to loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@dataclass
class RunningSandbox:
    """A started sandbox. ``base_urls`` are what a client uses as Mixpanel's ``/api/app`` base."""

    config: SandboxConfig
    state: SandboxState
    #: Per region: ``http://HOST:PORT`` (admin routes live under ``{origin}/_sandbox/``).
    origins: dict[Region, str]
    #: Per region: ``http://HOST:PORT/api/app``, the counterpart of ``REGION_BASE_URLS``.
    base_urls: dict[Region, str]
    ports: dict[Region, int]
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)
    _callbacks: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def admin_url(self) -> str:
        """``http://HOST:PORT/_sandbox`` on the US port (every port serves the admin routes)."""
        return f"{self.origins[Region.US]}/_sandbox"

    def urls_json(self) -> str:
        """One JSON line: ``{"US": "http://127.0.0.1:PORT/api/app", "EU": ..., "IN": ...}``."""
        return json.dumps({region.value: url for region, url in self.base_urls.items()})

    async def stop(self) -> None:
        if self._callbacks is not None:
            self._callbacks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._callbacks
            self._callbacks = None
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> RunningSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def start_sandbox(
    config: SandboxConfig | None = None,
    *,
    clock: Clock | None = None,
    signing_key: bytes | None = None,
) -> RunningSandbox:
    """Start the sandbox in the running event loop and return once every port listens.

    Without ``config``: ephemeral ports on 127.0.0.1 and one demo project per region.
    ``clock`` (epoch seconds) replaces ``time.time`` for the task life cycle, rate limit and links.
    """
    if config is None:
        config = SandboxConfig(projects=demo_projects())
    state = (
        SandboxState(config, clock=clock, signing_key=signing_key)
        if clock is not None
        else SandboxState(config, signing_key=signing_key)
    )
    urls: dict[str, str] = {}
    sandbox = RunningSandbox(config=config, state=state, origins={}, base_urls={}, ports={})
    try:
        for region in Region:
            runner = web.AppRunner(
                build_app(state, region, urls),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=1.0,
            )
            await runner.setup()
            sandbox._runners.append(runner)
            site = web.TCPSite(runner, config.host, config.ports[region])
            await site.start()
            port = int(runner.addresses[0][1])
            origin = f"http://{_url_host(config.host)}:{port}"
            sandbox.ports[region] = port
            sandbox.origins[region] = origin
            sandbox.base_urls[region] = origin + API_PREFIX
    except BaseException:
        await sandbox.stop()
        raise
    urls.update({region.value: url for region, url in sandbox.base_urls.items()})
    sandbox._callbacks = asyncio.create_task(CallbackSender(state).run(), name="callbacks")
    return sandbox
