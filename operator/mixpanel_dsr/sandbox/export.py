"""Synthetic export of a finished retrieval, and the HMAC-signed link that serves it.

Mixpanel does not document the export's contents; the sandbox ships, per the disclosure type:
``Data``: ``events.json`` (newline-delimited events) and ``people.json`` (profiles);
``Categories``: ``categories.json`` (column headers only); ``Sources``: ``sources.json``.
Every archive also holds ``manifest.json`` (tracking id, compliance type, ids, time window).
The data is derived from a hash of each distinct id, so the same task always gives the same data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from mixpanel_dsr.mixpanel.types import ComplianceType, DisclosureType
from mixpanel_dsr.sandbox.zipcrypto import build_zip

_EVENT_NAMES = ("Page View", "Sign Up", "Purchase", "Login", "Search")
_CITIES = ("Berlin", "Paris", "Mumbai", "Austin", "Lisbon")
_SOURCES = ("javascript-sdk", "ios-sdk", "android-sdk", "import-api")


def sign(key: bytes, tracking_id: str, expires: int) -> str:
    """HMAC-SHA256 signature of an export link."""
    message = f"{tracking_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key: bytes, tracking_id: str, expires: int, signature: str) -> bool:
    """Whether ``signature`` is the link's signature (constant-time comparison)."""
    return hmac.compare_digest(sign(key, tracking_id, expires), signature)


def export_path(tracking_id: str) -> str:
    return f"/_sandbox/exports/{tracking_id}"


def export_link(origin: str, key: bytes, tracking_id: str, expires: int) -> str:
    """The signed link a finished retrieval reports as its ``result``."""
    query = urlencode({"expires": expires, "signature": sign(key, tracking_id, expires)})
    return f"{origin}{export_path(tracking_id)}?{query}"


def _rng_for(distinct_id: str, salt: str) -> random.Random:
    digest = hashlib.sha256(f"{salt}\x00{distinct_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 - synthetic data


def _events(distinct_id: str, count: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rng = _rng_for(distinct_id, "events")
    span = max((end - start).total_seconds(), 1.0)
    events: list[dict[str, Any]] = []
    for _ in range(count):
        when = start + timedelta(seconds=rng.uniform(0, span))
        events.append(
            {
                "event": rng.choice(_EVENT_NAMES),
                "properties": {
                    "distinct_id": distinct_id,
                    "time": int(when.timestamp()),
                    "$city": rng.choice(_CITIES),
                    "mp_lib": rng.choice(_SOURCES),
                    "$insert_id": f"{rng.getrandbits(64):016x}",
                },
            }
        )
    events.sort(key=lambda event: int(event["properties"]["time"]))
    return events


def _profile(distinct_id: str) -> dict[str, Any]:
    rng = _rng_for(distinct_id, "profile")
    return {
        "$distinct_id": distinct_id,
        "$properties": {
            "$name": f"Sandbox User {rng.randrange(10_000):04d}",
            "$email": f"user{rng.randrange(1_000_000)}@example.invalid",
            "$city": rng.choice(_CITIES),
        },
    }


def _ndjson(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()


def build_export(
    *,
    tracking_id: str,
    distinct_ids: Sequence[str],
    compliance_type: ComplianceType,
    disclosure_type: DisclosureType | None,
    completed_at: float,
    history_days: int,
    events_per_id: int,
    password: bytes | None,
) -> bytes:
    """The export ZIP of one retrieval (a CCPA export covers only the previous year)."""
    end = datetime.fromtimestamp(completed_at, UTC)
    days = min(history_days, 365) if compliance_type is ComplianceType.CCPA else history_days
    start = end - timedelta(days=max(days, 1))
    disclosure = disclosure_type or DisclosureType.DATA
    manifest = {
        "tracking_id": tracking_id,
        "compliance_type": compliance_type.value.lower(),
        "disclosure_type": disclosure.value,
        "distinct_ids": list(distinct_ids),
        "from": start.isoformat(),
        "to": end.isoformat(),
        "generator": "mixpanel-sandbox (synthetic data)",
    }
    members: list[tuple[str, bytes]] = [
        ("manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    ]
    if disclosure is DisclosureType.DATA:
        events = [
            event
            for distinct_id in distinct_ids
            for event in _events(distinct_id, events_per_id, start, end)
        ]
        members.append(("events.json", _ndjson(events)))
        members.append(("people.json", _ndjson([_profile(d) for d in distinct_ids])))
    elif disclosure is DisclosureType.CATEGORIES:
        categories = {
            "events": sorted(_EVENT_NAMES),
            "event_properties": ["$city", "$insert_id", "distinct_id", "mp_lib", "time"],
            "profile_properties": ["$city", "$email", "$name"],
        }
        members.append(("categories.json", json.dumps(categories, indent=2).encode()))
    else:
        members.append(("sources.json", json.dumps({"sources": list(_SOURCES)}, indent=2).encode()))
    salt = random.Random(tracking_id)  # noqa: S311 - reproducible encryption header
    return build_zip(members, password=password, when=end.replace(tzinfo=None), rng=salt)
