"""Fixtures of the Mixpanel client tests; the simulator's come from tests/sandbox_fixtures."""

from __future__ import annotations

import pytest

from mixpanel_dsr.sandbox import SandboxConfig
from tests.sandbox_fixtures import fast_config, make_sandbox, sandbox  # noqa: F401


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """Functional client tests make calls back to back: the sandbox enforces no rate limit unless a
    test starts its own with ``make_sandbox`` (the client's budget is shrunk to match)."""
    return fast_config(rate_limit_per_s=0)
