"""``dsr-operator``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import kopf
from prometheus_client import start_http_server

from mixpanel_dsr import __version__
from mixpanel_dsr.callback_server import CallbackServer
from mixpanel_dsr.health import HealthServer
from mixpanel_dsr.metrics import LEADER
from mixpanel_dsr.mixpanel.callbacks import CallbackError, load_public_key
from mixpanel_dsr.mixpanel.types import REGION_BASE_URLS
from mixpanel_dsr.readiness import Role
from mixpanel_dsr.settings import Settings, normalize_url, parse_duration, parse_region_urls

if TYPE_CHECKING:
    from mixpanel_dsr.leader import LeaderElector

_T = TypeVar("_T")


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
        help="serves /healthz (liveness) and /readyz (readiness) (0: off)",
    )  # fmt: skip
    run.add_argument(
        "--peering",
        default=_env("PEERING"),
        help="kopf peering name for several replicas (default: standalone)",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=int(_env("PRIORITY", "0") or 0),
        help="kopf peering priority (env DSR_OPERATOR_PRIORITY)",
    )
    run.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=(_env("LEADER_ELECT", "false") or "").lower() in ("1", "true", "yes"),
        help="run only while holding a Lease, so that replicas never do the same work "
        "(env DSR_OPERATOR_LEADER_ELECT)",
    )
    run.add_argument(
        "--leader-election-id",
        default=_env("LEADER_ELECTION_ID", "mixpanel-dsr-operator"),
        help="name of the Lease (env DSR_OPERATOR_LEADER_ELECTION_ID)",
    )
    run.add_argument(
        "--leader-election-namespace",
        default=_env("LEADER_ELECTION_NAMESPACE"),
        help="namespace of the Lease (default: the operator namespace)",
    )
    run.add_argument(
        "--mixpanel-region-urls",
        default=_env("MIXPANEL_REGION_URLS", ""),
        help="override Mixpanel's hosts: US=URL,EU=URL,IN=URL (the sandbox, a proxy)",
    )
    run.add_argument(
        "--allowed-api-base-url",
        action="append",
        default=[u for u in (_env("ALLOWED_API_BASE_URLS") or "").split(",") if u.strip()],
        metavar="URL",
        help="a base URL projects' spec.apiBaseURL may point to (repeatable; env "
        "DSR_OPERATOR_ALLOWED_API_BASE_URLS, comma-separated). Always allowed: Mixpanel's "
        "three regional hosts and the --mixpanel-region-urls. https only, except loopback",
    )
    run.add_argument(
        "--allowed-webhook-url",
        action="append",
        default=[u for u in (_env("ALLOWED_WEBHOOK_URLS") or "").split(",") if u.strip()],
        metavar="URL",
        help="a URL prefix projects' notification endpoints may use (repeatable; env "
        "DSR_OPERATOR_ALLOWED_WEBHOOK_URLS, comma-separated). None given: any https URL, and "
        "http to loopback; some given: only URLs under them (e.g. an in-cluster http receiver)",
    )
    callbacks = run.add_argument_group(
        "status callbacks", "for projects with spec.statusCallbacks (docs/operations.md)"
    )
    callbacks.add_argument(
        "--callback-url",
        default=_env("CALLBACK_URL"),
        help="the https URL Mixpanel posts status callbacks to (reaching --callback-port)",
    )
    callbacks.add_argument(
        "--callback-port", type=int, default=int(_env("CALLBACK_PORT", "0") or 0),
        help="port of the callback listener (0: off)",
    )  # fmt: skip
    callbacks.add_argument(
        "--callback-key-file",
        default=_env("CALLBACK_KEY_FILE"),
        help="PEM public key or certificate that Mixpanel's callback signatures verify with",
    )
    callbacks.add_argument(
        "--callback-tls-cert", default=_env("CALLBACK_TLS_CERT"),
        help="serve the listener with this certificate (else plain http behind a TLS proxy)",
    )  # fmt: skip
    callbacks.add_argument("--callback-tls-key", default=_env("CALLBACK_TLS_KEY"))
    defaults = Settings()
    durations = {
        "packing-quiet": ("packing_quiet", "send packed deletions after no new ids for this long"),
        "packing-max-wait": ("packing_max_wait", "... or once the oldest waited this long"),
        "poll-initial": ("poll_initial", "first status check after submission"),
        "poll-max": ("poll_max", "longest interval between status checks"),
        "verify-interval": ("verify_interval", "how often a Ready project's token is checked"),
        "retry-interval": ("retry_interval", "how often a failing project is checked again"),
        "create-retry-max": (
            "create_retry_max",
            "longest wait before an unanswered create is sent again",
        ),
        "export-link-ttl": (
            "export_link_ttl",
            "how long Mixpanel's export link is valid after the retrieval finished",
        ),
        "export-link-warning": (
            "export_link_warning",
            "ExportLinkExpiring this long before a retrieval's export link expires",
        ),
        "orphan-grace": (
            "orphan_grace",
            "after a start, wait this long before looking up "
            "requests kopf did not list (deleted while no operator ran)",
        ),
        "task-retention": (
            "task_retention",
            "finished MixpanelTasks are removed this long "
            "after they finished, once their requests are finished or gone",
        ),
        "receipt-retention": (
            "receipt_retention",
            "receipts of finished requests are kept this long after the request finished, "
            "then removed",
        ),
        "callback-poll-interval": (
            "callback_poll_interval",
            "with status callbacks, how often a task is checked when no callback says so",
        ),
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
    run.add_argument(
        "--key-secret",
        default=_env("KEY_SECRET", defaults.key_secret),
        help="Secret in the operator namespace with the key for digests of ids (created if "
        "missing; env DSR_OPERATOR_KEY_SECRET)",
    )
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
        create_retry_max=args.create_retry_max,
        export_link_ttl=args.export_link_ttl,
        export_link_warning=args.export_link_warning,
        key_secret=args.key_secret,
        tick=args.tick,
        orphan_grace=args.orphan_grace,
        task_retention=args.task_retention,
        receipt_retention=args.receipt_retention,
        watched_namespaces=[] if args.all_namespaces else list(args.namespace),
        allowed_webhook_urls=[u.strip() for u in args.allowed_webhook_url],
        callback_url=args.callback_url or None,
        callback_poll_interval=args.callback_poll_interval,
        max_attempts=args.max_attempts,
        deadline_margin=timedelta(days=args.deadline_margin_days),
    )
    if args.callback_url:
        if not args.callback_url.startswith("https://"):
            raise ValueError("--callback-url must be an https URL (Mixpanel calls only those)")
        if not (args.callback_port and args.callback_key_file):
            raise ValueError("--callback-url needs --callback-port and --callback-key-file")
    if bool(args.callback_tls_cert) != bool(args.callback_tls_key):
        raise ValueError("--callback-tls-cert and --callback-tls-key go together")
    if args.mixpanel_region_urls:
        settings.region_urls.update(parse_region_urls(args.mixpanel_region_urls))
    allowed = [*REGION_BASE_URLS.values(), *settings.region_urls.values()]
    allowed += [u.strip() for u in args.allowed_api_base_url]
    for url in allowed:
        normalize_url(url)  # ValueError names the bad one
    settings.allowed_api_urls = list(dict.fromkeys(allowed))
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
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if root.level > logging.DEBUG:
        # kopf logs "Handler 'request_event' succeeded." for every event it hands in, the
        # echo of each status write included (20,000 lines for 10,000 requests); the engine
        # logs what changed. Its warnings and errors still show; --log-level debug shows all.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


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
    health = HealthServer(args.health_port, engine_started=lambda: "engine" in memo)
    listener: CallbackServer | None = None
    if args.callback_port and args.callback_key_file:
        try:
            key = load_public_key(Path(args.callback_key_file).read_bytes())
        except (OSError, CallbackError) as err:
            print(f"dsr-operator: --callback-key-file: {err}", file=sys.stderr)
            return 2
        tls = (args.callback_tls_cert, args.callback_tls_key) if args.callback_tls_cert else None
        listener = CallbackServer(args.callback_port, key, lambda: memo.get("engine"), tls=tls)
    operator = functools.partial(
        kopf.operator,
        registry=registry,
        memo=memo,
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
    )
    if not args.leader_elect:
        LEADER.set(1)
        asyncio.run(_serving_health(health, operator(), listener))
        return 0
    from mixpanel_dsr.leader import LeaderElector, default_identity

    elector = LeaderElector(
        args.leader_election_namespace or args.operator_namespace,
        args.leader_election_id,
        default_identity(),
    )
    return asyncio.run(_serving_health(health, run_as_leader(elector, operator, health), listener))


async def _serving_health(
    health: HealthServer, work: Coroutine[Any, Any, _T], listener: CallbackServer | None = None
) -> _T:
    """Serve /healthz and /readyz (unless --health-port 0), and the status callback listener
    when there is one, for as long as ``work`` runs."""
    if health.port:
        await health.start()
    if listener is not None:
        await listener.start()
    try:
        return await work
    finally:
        if listener is not None:
            await listener.stop()
        await health.stop()


async def run_as_leader(
    elector: LeaderElector,
    operator: Callable[[], Coroutine[Any, Any, None]],
    health: HealthServer,
) -> int:
    """Stand by until the Lease is ours, then run kopf; exit at once if it is lost."""
    LEADER.set(0)
    health.role = Role.STANDING_BY
    await elector.acquire()
    LEADER.set(1)
    health.role = Role.LEADING
    holding = asyncio.create_task(elector.hold())
    running = asyncio.create_task(operator())
    await asyncio.wait({holding, running}, return_when=asyncio.FIRST_COMPLETED)
    if holding.done():
        # Another replica may take over any moment: stop every call now, as a crash
        # would (all state is in the API server), rather than finish gracefully.
        logging.getLogger(__name__).error("leadership lost: exiting")
        logging.shutdown()
        os._exit(1)
    holding.cancel()
    await asyncio.to_thread(elector.release)
    running.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
