"""The operator's run-time settings (flags and environment of ``dsr-operator run``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from mixpanel_dsr.mixpanel.types import REGION_BASE_URLS, Region

# Go's time.ParseDuration units (what the CRDs' duration fields admit), and d for flags.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h|d)")
_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 0.001, "s": 1, "m": 60, "h": 3600,
    "d": 86400,
}  # fmt: skip


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``1500ms``, ``30s``, ``6h``, ``1h30m``, ``1500000us`` (Go's
    grammar, as the CRDs admit it; ``d`` too, for flags) or a plain number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 6h)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an absolute http(s) URL; ValueError if it is none, or
    plain http to anything but loopback (a token must not cross a network in clear)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"a base URL has no credentials, query or fragment: {url!r}")
    if scheme == "http" and not _is_loopback(host):
        raise ValueError(f"plain http is allowed only to loopback addresses: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port, parts.path.rstrip("/")


def url_allowed(url: str, allowed: list[str]) -> bool:
    """Whether ``url`` is one of the ``allowed`` base URLs or under one (same scheme, host and
    port; path equal or below, on a segment boundary)."""
    try:
        scheme, host, port, path = normalize_url(url)
    except ValueError:
        return False
    for entry in allowed:
        e_scheme, e_host, e_port, e_path = normalize_url(entry)
        if (scheme, host, port) != (e_scheme, e_host, e_port):
            continue
        if path == e_path or path.startswith(e_path + "/"):
            return True
    return False


def parse_region_urls(text: str) -> dict[Region, str]:
    """``US=http://…,EU=http://…`` into a region -> base URL map."""
    urls: dict[Region, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        region, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"expected REGION=URL, got {item!r}")
        name = region.strip().upper()
        if name not in Region.__members__:
            raise ValueError(f"unknown region {region!r} in {item!r}: use US, EU or IN")
        urls[Region(name)] = url.strip()
    return urls


@dataclass
class Settings:
    """Everything the engine may be tuned by; defaults suit production."""

    #: Namespace the operator runs in: where ClusterMixpanelProject Secrets live.
    operator_namespace: str = "mixpanel-dsr-system"
    #: Base URL per region; the sandbox or a proxy may replace Mixpanel's hosts.
    region_urls: dict[Region, str] = field(default_factory=lambda: dict(REGION_BASE_URLS))
    #: Where a project's spec.apiBaseURL may point (the installer's choice, never a tenant's):
    #: these base URLs and anything under them. The region URLs are always allowed.
    allowed_api_urls: list[str] = field(default_factory=lambda: list(REGION_BASE_URLS.values()))
    #: Deletions wait this long without new ids arriving before they are packed and sent.
    packing_quiet: float = 10.0
    #: ... but never longer than this after the first waiting id.
    packing_max_wait: float = 120.0
    #: First status check this long after submission; then backing off by ``poll_factor``.
    poll_initial: float = 60.0
    poll_max: float = 6 * 3600.0
    poll_factor: float = 2.0
    #: A failed slice is submitted this many times in all before the request fails.
    max_attempts: int = 3
    #: DeadlineAtRisk when less than this is left before the statutory deadline.
    deadline_margin: timedelta = timedelta(days=7)
    #: How often a Ready project's token is checked with Mixpanel.
    verify_interval: float = 6 * 3600.0
    #: How often a project that is not Ready is checked again (Secret fixed, token rotated).
    retry_interval: float = 30.0
    #: TokenExpiring when the OAuth token expires within this.
    token_warning: timedelta = timedelta(days=30)
    #: How long Mixpanel's export link stays valid after the retrieval finished (14 days).
    export_link_ttl: float = 14 * 86400.0
    #: ExportLinkExpiring turns True this long before the export link expires.
    export_link_warning: float = 3 * 86400.0
    #: Longest wait before a create that was not answered (or was refused for now) is tried
    #: again; the wait doubles from ``retry_interval`` up to this.
    create_retry_max: float = 3600.0
    #: Secret (in the operator's namespace) holding the installation's key for digests of
    #: ids; created on first start.
    key_secret: str = "mixpanel-dsr-operator-key"  # noqa: S105 - a Secret's name
    #: After a start, how long kopf is given to list the requests before a task's
    #: requests it did not deliver are looked up (deleted while no operator ran?).
    orphan_grace: float = 30.0
    #: Finished MixpanelTasks are removed this long after they finished, once every request
    #: they served is finished or gone.
    task_retention: float = 90 * 86400.0
    #: Receipts of finished requests are kept this long after the request finished (six
    #: years: limitation periods for claims run up to six years in much of Europe).
    receipt_retention: float = 6 * 365 * 86400.0
    #: Webhook URL prefixes projects' notifications may use (empty: any https URL, and
    #: http to loopback).
    allowed_webhook_urls: list[str] = field(default_factory=list)
    #: Where Mixpanel posts status callbacks for projects with statusCallbacks (the public
    #: https URL of the callback listener); None: callbacks are not asked for.
    callback_url: str | None = None
    #: With callbacks, a task is checked at least this often (callbacks say when sooner).
    callback_poll_interval: float = 24 * 3600.0
    #: The namespaces the operator watches; empty: every namespace.
    watched_namespaces: list[str] = field(default_factory=list)
    #: Engine wake-up period.
    tick: float = 1.0
