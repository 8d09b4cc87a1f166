"""Webhook notifications (pure): the CloudEvent, its delivery id, its signature, and when to
try again.

A notification carries what a ticketing tool needs to close the loop (the request, its
project, outcome, deadline, counts, ticket labels and the receipt's name) and never a
distinct id, an export link or a token. Each is signed like this::

    X-DSR-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

so that a receiver can check who sent it and refuse replays, and carries a delivery id
(the CloudEvent ``id``, also in ``X-DSR-Delivery``) that stays the same on every retry and
after a restart, for the receiver to deduplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from mixpanel_dsr.api import API_VERSION, GROUP
from mixpanel_dsr.api.models import NotificationEvent

SIGNATURE_HEADER = "X-DSR-Signature"
DELIVERY_HEADER = "X-DSR-Delivery"
EVENT_HEADER = "X-DSR-Event"
CONTENT_TYPE = "application/cloudevents+json"
#: Waits between attempts (seconds); the last repeats until ``GIVE_UP_AFTER`` has passed.
BACKOFF = (5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
#: A notification not delivered this long after it was first tried is dropped (loudly).
GIVE_UP_AFTER = 24 * 3600.0
#: A receiver should refuse signatures older than this.
SIGNATURE_TOLERANCE = 300.0


def event_type(kind: NotificationEvent) -> str:
    """The CloudEvent type, e.g. ``io.mixpaneldsr.request.succeeded``."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in kind.value).lstrip("_")
    return f"io.{GROUP.split('.')[0]}.request.{snake}"


def delivery_id(uid: str, kind: NotificationEvent, occasion: str) -> str:
    """The same for one event of one request whenever and however often it is sent:
    ``occasion`` tells apart events of the same kind (the retry a Failed follows, the
    deadline a DeadlineNear is about, ...)."""
    return hashlib.sha256(f"{uid}/{kind.value}/{occasion}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Notification:
    """One event about one request, ready to send to every endpoint that wants it."""

    kind: NotificationEvent
    id: str
    body: bytes


def build(
    kind: NotificationEvent,
    *,
    occasion: str,
    namespace: str,
    name: str,
    uid: str,
    time: datetime,
    data: Mapping[str, Any],
) -> Notification:
    """The CloudEvent (JSON, structured mode) for one event."""
    ident = delivery_id(uid, kind, occasion)
    event = {
        "specversion": "1.0",
        "type": event_type(kind),
        "source": f"/apis/{API_VERSION}/namespaces/{namespace}/datasubjectrequests/{name}",
        "subject": name,
        "id": ident,
        "time": time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": dict(data),
    }
    body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    return Notification(kind=kind, id=ident, body=body)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str, body: bytes, now: float, tolerance: float = SIGNATURE_TOLERANCE
) -> bool:
    """What a receiver does: the signature is ours, over this body, and recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def next_delay(attempts: int) -> float:
    """How long to wait after the ``attempts``-th failed attempt."""
    return BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


def _parts(url: str) -> tuple[str, str, int, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host or parts.username or parts.password:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80), parts.path


def webhook_url_allowed(url: str, allowed: list[str]) -> bool:
    """With no ``allowed`` prefixes (--allowed-webhook-url): any https URL, and http only to
    loopback. With some: only URLs under one of them (same scheme, host and port, path
    prefix), which is how an installer allows an in-cluster http receiver or pins the
    endpoints tenants may use."""
    parts = _parts(url)
    if parts is None:
        return False
    scheme, host, port, path = parts
    if not allowed:
        if scheme == "https":
            return True
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    for prefix in allowed:
        wanted = _parts(prefix)
        if wanted and wanted[:3] == (scheme, host, port) and path.startswith(wanted[3]):
            return True
    return False
