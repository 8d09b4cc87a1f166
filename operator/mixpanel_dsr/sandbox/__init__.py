"""A Mixpanel GDPR API simulator ("sandbox"): a real HTTP server, one port per region.

It is what a new user tries without a Mixpanel account and what tests, benchmarks and demos talk
to. See docs/sandbox.md. In-process use::

    sandbox = await start_sandbox(config)
    sandbox.base_urls[Region.EU]  # "http://127.0.0.1:PORT/api/app"
    await sandbox.stop()
"""

from mixpanel_dsr.sandbox.config import (
    FaultConfig,
    LifecycleConfig,
    LimitsConfig,
    OAuthTokenConfig,
    ProjectConfig,
    ResponsesConfig,
    SandboxConfig,
    default_config,
    load_config,
)
from mixpanel_dsr.sandbox.server import RunningSandbox, start_sandbox
from mixpanel_dsr.sandbox.state import SandboxState

__all__ = [
    "FaultConfig",
    "LifecycleConfig",
    "LimitsConfig",
    "OAuthTokenConfig",
    "ProjectConfig",
    "ResponsesConfig",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxState",
    "default_config",
    "load_config",
    "start_sandbox",
]
