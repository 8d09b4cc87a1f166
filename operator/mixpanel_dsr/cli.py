"""``dsr-operator``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import timedelta

import kopf
from prometheus_client import start_http_server

from mixpanel_dsr import __version__
from mixpanel_dsr.settings import Settings, parse_duration, parse_region_urls


class JsonFormatter(logging.Formatter):
    """One JSON object a line; messages are already free of tokens, links and ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"DSR_OPERATOR_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsr-operator", description="Carry out GDPR/CCPA data subject requests in Mixpanel."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig or cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument(
        "--operator-namespace",
        default=_env("NAMESPACE", "mixpanel-dsr-system"),
        help="where ClusterMixpanelProject Secrets live (env DSR_OPERATOR_NAMESPACE)",
    )
    run.add_argument("--log-format", choices=["text", "json"], default=_env("LOG_FORMAT", "text"))
    run.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    run.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "8080") or 0))
    run.add_argument(
        "--health-port", type=int, default=int(_env("HEALTH_PORT", "8081") or 0),
        help="serves /healthz (0: off)",
    )  # fmt: skip
    run.add_argument(
        "--peering",
        default=_env("PEERING"),
        help="kopf peering name for several replicas (default: standalone)",
    )
    run.add_argument("--priority", type=int, default=0, help="kopf peering priority")
    run.add_argument(
        "--mixpanel-region-urls",
        default=_env("MIXPANEL_REGION_URLS", ""),
        help="override Mixpanel's hosts: US=URL,EU=URL,IN=URL (the sandbox, a proxy)",
    )
    defaults = Settings()
    durations = {
        "packing-quiet": ("packing_quiet", "send packed deletions after no new ids for this long"),
        "packing-max-wait": ("packing_max_wait", "... or once the oldest waited this long"),
        "poll-initial": ("poll_initial", "first status check after submission"),
        "poll-max": ("poll_max", "longest interval between status checks"),
        "verify-interval": ("verify_interval", "how often a Ready project's token is checked"),
        "retry-interval": ("retry_interval", "how often a failing project is checked again"),
        "finalizer-timeout": ("finalizer_timeout", "longest wait to cancel on deletion"),
        "tick": ("tick", "engine wake-up period"),
    }
    for flag, (attr, text) in durations.items():
        env = attr.upper()
        run.add_argument(
            f"--{flag}",
            type=parse_duration,
            default=parse_duration(_env(env) or str(getattr(defaults, attr))),
            help=f"{text} (env DSR_OPERATOR_{env})",
        )
    run.add_argument("--max-attempts", type=int, default=defaults.max_attempts)
    run.add_argument("--deadline-margin-days", type=float, default=defaults.deadline_margin.days)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings(
        operator_namespace=args.operator_namespace,
        packing_quiet=args.packing_quiet,
        packing_max_wait=args.packing_max_wait,
        poll_initial=args.poll_initial,
        poll_max=args.poll_max,
        verify_interval=args.verify_interval,
        retry_interval=args.retry_interval,
        finalizer_timeout=args.finalizer_timeout,
        tick=args.tick,
        max_attempts=args.max_attempts,
        deadline_margin=timedelta(days=args.deadline_margin_days),
    )
    if args.mixpanel_region_urls:
        settings.region_urls.update(parse_region_urls(args.mixpanel_region_urls))
    return settings


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every URL at INFO; keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        settings = settings_from(args)
    except ValueError as err:
        print(f"dsr-operator: {err}", file=sys.stderr)
        return 2
    from mixpanel_dsr.handlers import registry
    from mixpanel_dsr.kube import load_config

    load_config()
    if args.metrics_port:
        start_http_server(args.metrics_port)
    memo = kopf.Memo(settings=settings)
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=memo,
            clusterwide=args.all_namespaces or not args.namespace,
            namespaces=args.namespace,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
