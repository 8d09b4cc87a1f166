"""Fixtures of the sandbox's own tests. The shared ones live in tests/sandbox_fixtures.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from mixpanel_dsr.sandbox import RunningSandbox, SandboxConfig
from tests.sandbox.helpers import Api
from tests.sandbox_fixtures import SandboxAdmin, fast_config, make_sandbox, sandbox  # noqa: F401


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """Contract tests make several calls back to back: no rate limit unless a test asks for one."""
    return fast_config(rate_limit_per_s=0)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


@pytest.fixture
def api(sandbox: RunningSandbox, client: httpx.AsyncClient) -> Api:  # noqa: F811
    return Api(sandbox, client)


@pytest_asyncio.fixture
async def admin(sandbox: RunningSandbox, client: httpx.AsyncClient) -> SandboxAdmin:  # noqa: F811
    return SandboxAdmin(sandbox, client)
