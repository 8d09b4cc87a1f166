"""``mixpanel-sandbox`` / ``python -m mixpanel_dsr.sandbox``: run the Mixpanel simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import yaml
from pydantic import SecretStr, ValidationError

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox.config import (
    OAuthTokenConfig,
    ProjectConfig,
    SandboxConfig,
    default_config,
    dump_config,
    load_config,
)
from mixpanel_dsr.sandbox.server import RunningSandbox, start_sandbox


def _parse_project(spec: str) -> ProjectConfig:
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not all(parts):
        raise argparse.ArgumentTypeError("expected TOKEN:REGION:OAUTH_TOKEN[:API_SECRET]")
    token, region, oauth = parts[:3]
    try:
        return ProjectConfig(
            token=token,
            region=Region(region.upper()),
            oauth_tokens=[OAuthTokenConfig(token=SecretStr(oauth))],
            api_secret=SecretStr(parts[3]) if len(parts) == 4 else None,
        )
    except (ValueError, ValidationError) as err:
        raise argparse.ArgumentTypeError(f"invalid --project: {err}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixpanel-sandbox",
        description="Simulator of Mixpanel's GDPR/CCPA API (v3.0), one port per region.",
    )
    parser.add_argument("--config", type=Path, help="YAML or JSON config file (docs/sandbox.md)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    for region in Region:
        parser.add_argument(
            f"--port-{region.value.lower()}",
            type=int,
            metavar="PORT",
            help=f"port of the {region.value} region (0 = any free port)",
        )
    parser.add_argument(
        "--project",
        action="append",
        type=_parse_project,
        default=[],
        metavar="TOKEN:REGION:OAUTH[:API_SECRET]",
        help="add a project (repeatable); without --config it replaces the demo projects",
    )
    parser.add_argument("--time-scale", type=float, help="multiplier of every state duration")
    parser.add_argument("--failure-rate", type=float, help="probability a task ends FAILURE")
    parser.add_argument(
        "--rate-limit", type=float, help="accepted requests per second per project (0 = off)"
    )
    parser.add_argument("--seed", type=int, help="seed of the life cycle and fault RNGs")
    parser.add_argument("--tracking-id-style", choices=["decimal", "uuid"])
    parser.add_argument("--create-shape", choices=["task_id", "list"])
    parser.add_argument("--create-status", type=int, choices=[200, 201])
    parser.add_argument(
        "--conflict-409", action="store_true", help="refuse deletions of ids already being deleted"
    )
    parser.add_argument("--urls-file", type=Path, help="also write the base URLs JSON line here")
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective config (YAML) and exit"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The effective config: file (or the default with demo projects), then flags on top."""
    if args.config is not None:
        config = load_config(args.config)
        projects = [*config.projects, *args.project]
    else:
        config = default_config()
        projects = list(args.project) or config.projects
    data = config.model_dump()
    data["projects"] = projects
    if args.host is not None:
        data["host"] = args.host
    for region in Region:
        port = getattr(args, f"port_{region.value.lower()}")
        if port is not None:
            data["ports"][region] = port
    lifecycle, limits, responses = data["lifecycle"], data["limits"], data["responses"]
    if args.time_scale is not None:
        lifecycle["time_scale"] = args.time_scale
    if args.failure_rate is not None:
        lifecycle["failure_rate"] = args.failure_rate
    if args.seed is not None:
        lifecycle["seed"] = args.seed
        data["faults"]["seed"] = args.seed
    if args.rate_limit is not None:
        limits["rate_limit_per_s"] = args.rate_limit
    if args.conflict_409:
        limits["conflict_409"] = True
    if args.tracking_id_style is not None:
        responses["tracking_id_style"] = args.tracking_id_style
    if args.create_shape is not None:
        responses["create_shape"] = args.create_shape
    if args.create_status is not None:
        responses["create_status"] = args.create_status
    return SandboxConfig.model_validate(data)


def _describe(sandbox: RunningSandbox) -> str:
    lines = ["mixpanel-sandbox is listening (Mixpanel GDPR API v3.0 simulator):"]
    for region, url in sandbox.base_urls.items():
        lines.append(f"  {region.value}  {url}")
    lines.append(f"  admin  {sandbox.admin_url}/  (calls, ids, tasks, faults, reset; every port)")
    lines.append("Projects (token, region):")
    for project in sandbox.state.projects.values():
        lines.append(f"  {project.token}  {project.region.value}")
    lines.append(
        "Point a MixpanelProject's API base URL override at the base URL of its region; "
        "demo OAuth tokens are listed in docs/sandbox.md."
    )
    return "\n".join(lines)


async def serve(config: SandboxConfig, urls_file: Path | None = None) -> None:
    """Run until SIGINT or SIGTERM."""
    sandbox = await start_sandbox(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        line = sandbox.urls_json()
        print(line, flush=True)
        if urls_file is not None:
            await asyncio.to_thread(urls_file.write_text, line + "\n", encoding="utf-8")
        print(_describe(sandbox), file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except ValidationError as err:
        # Without the inputs: they may hold OAuth tokens or secrets.
        errors = err.errors(include_input=False, include_url=False)
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        print(f"mixpanel-sandbox: invalid configuration: {text}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"mixpanel-sandbox: invalid configuration: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.print_config:
        print(yaml.safe_dump(dump_config(config), sort_keys=False), end="")
        return
    asyncio.run(serve(config, args.urls_file))


if __name__ == "__main__":
    main()
