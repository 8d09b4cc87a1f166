"""Reusable pytest fixtures for the Mixpanel sandbox, for any test directory.

Use from a conftest.py (no copying)::

    from tests.sandbox_fixtures import make_sandbox, sandbox, sandbox_config  # noqa: F401

``sandbox`` is a running sandbox with fast task life cycles (0.3 s per state) and Mixpanel's
1 request/s per project; override the ``sandbox_config`` fixture (e.g. with
``fast_config(rate_limit_per_s=0)``) to change that. ``make_sandbox`` starts more, with any config
and an optional injected clock; all are stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox import RunningSandbox, SandboxConfig, start_sandbox
from mixpanel_dsr.sandbox.config import DEMO_PROJECTS, demo_projects
from mixpanel_dsr.sandbox.state import Clock

#: The demo project of each region: (project token, OAuth token, API secret).
PROJECTS: dict[Region, tuple[str, str, str]] = {
    region: (token, oauth, secret) for token, region, oauth, secret in DEMO_PROJECTS
}

#: Seconds each of PENDING, STAGING and STARTED lasts in ``fast_config``.
FAST_STATE_SECONDS = 0.3

MakeSandbox = Callable[..., Awaitable[RunningSandbox]]


def fast_config(
    *,
    rate_limit_per_s: float = 1.0,
    state_seconds: float = FAST_STATE_SECONDS,
    **sections: Any,
) -> SandboxConfig:
    """Demo projects, ephemeral ports, short states; extra keyword arguments are config sections
    (``limits``, ``responses``, ``lifecycle``, ``exports``, ``faults``, ``projects``) as dicts
    merged over these defaults."""
    data: dict[str, Any] = {
        "projects": demo_projects(),
        "limits": {"rate_limit_per_s": rate_limit_per_s},
        "lifecycle": {
            "pending_seconds": state_seconds,
            "staging_seconds": state_seconds,
            "started_seconds": state_seconds,
        },
        "exports": {"signing_key": "test-signing-key"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return SandboxConfig.model_validate(data)


class FakeClock:
    """An injectable clock (epoch seconds) that only moves when told."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SandboxAdmin:
    """Thin helper over the /_sandbox/ admin endpoints of a running sandbox."""

    def __init__(self, sandbox: RunningSandbox, client: httpx.AsyncClient | None = None) -> None:
        self.url = sandbox.admin_url
        self._client = client or httpx.AsyncClient(timeout=10)

    async def _get(self, path: str, **params: str) -> Any:
        response = await self._client.get(f"{self.url}/{path}", params=params)
        response.raise_for_status()
        return response.json()

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self._client.post(f"{self.url}/{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    async def calls(self, **filters: str) -> Any:
        return await self._get("calls", **filters)

    async def ids(self, project: str | None = None) -> Any:
        return (await self._get("ids", **({"project": project} if project else {})))["ids"]

    async def tasks(self, **filters: str) -> list[dict[str, Any]]:
        return list((await self._get("tasks", **filters))["tasks"])

    async def set_faults(self, **changes: Any) -> Any:
        return (await self._post("faults", changes))["faults"]

    async def force_state(self, tracking_id: str, state: str, *, hold: bool = True) -> Any:
        return (await self._post(f"tasks/{tracking_id}/state", {"state": state, "hold": hold}))[
            "task"
        ]

    async def advance_clock(self, seconds: float) -> Any:
        return await self._post("clock", {"advance_seconds": seconds})

    async def reset(self, *, keep_projects: bool = False) -> Any:
        return await self._post("reset", {"keep_projects": keep_projects})

    async def aclose(self) -> None:
        await self._client.aclose()


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """The config of the ``sandbox`` fixture; override it in a conftest or module."""
    return fast_config()


@pytest_asyncio.fixture
async def make_sandbox() -> AsyncIterator[MakeSandbox]:
    """Factory: ``await make_sandbox(config=None, clock=None)``; stops every sandbox it started."""
    started: list[RunningSandbox] = []

    async def make(
        config: SandboxConfig | None = None, clock: Clock | None = None
    ) -> RunningSandbox:
        running = await start_sandbox(config or fast_config(), clock=clock)
        started.append(running)
        return running

    yield make
    for running in started:
        await running.stop()


@pytest_asyncio.fixture
async def sandbox(sandbox_config: SandboxConfig) -> AsyncIterator[RunningSandbox]:
    """A running sandbox (ephemeral ports on 127.0.0.1) built from ``sandbox_config``."""
    running = await start_sandbox(sandbox_config)
    try:
        yield running
    finally:
        await running.stop()
