"""The leak scan of a chaos run: secrets and personal data where they must never be.

Scanned: every line of every operator log of the run, every Event of the cluster
(``kubectl get events -A -o json``), the ``status`` of every object of every
mixpaneldsr.io kind, and the data of every Secret. Looked for: each OAuth token the
run used (anywhere but its own credentials Secret), each raw distinct id the run used
(anywhere but the logs' and objects' statuses: the operator writes ids nowhere
readable), and each export link (anywhere but the Secret of its request).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tests.conftest import Kube


class Needle(StrEnum):
    TOKEN = "OAuth token"  # noqa: S105 - what is looked for, not a token
    DISTINCT_ID = "raw distinct id"
    EXPORT_LINK = "export link"


@dataclass(frozen=True)
class Leak:
    needle: Needle
    where: str


@dataclass
class Needles:
    #: OAuth token -> the Secret ("namespace/name") that may hold it.
    tokens: dict[str, str]
    #: Every distinct id the run used, and a pattern that finds each of them.
    ids: set[str]
    id_pattern: re.Pattern[str]
    #: Export link -> the Secret that may hold it.
    links: dict[str, str] = field(default_factory=dict)


@dataclass
class LeakScan:
    #: What was read, by source ("operator log lines", "Events", ...).
    scanned: Counter[str] = field(default_factory=Counter)
    #: How many distinct values were looked for, by kind.
    looked_for: Counter[str] = field(default_factory=Counter)
    leaks: list[Leak] = field(default_factory=list)

    def by_kind(self) -> Counter[str]:
        return Counter(leak.needle.value for leak in self.leaks)


def _alternation(values: list[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


class Scanner:
    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self._tokens = _alternation(list(needles.tokens))
        # A link is found by its signature (a log may shorten or re-quote the rest).
        self._signatures = {_signature(link): link for link in needles.links}
        self._links = _alternation([s for s in self._signatures if s])

    def scan(self, text: str, where: str, *, owner: str | None = None) -> list[Leak]:
        """Leaks in ``text``; ``owner`` is the Secret the text comes from, if any."""
        out = []
        if self._tokens:
            for match in self._tokens.finditer(text):
                if self.needles.tokens[match.group()] != owner:
                    out.append(Leak(Needle.TOKEN, where))
        if owner is None:
            for match in self.needles.id_pattern.finditer(text):
                if match.group() in self.needles.ids:
                    out.append(Leak(Needle.DISTINCT_ID, where))
        if self._links:
            for match in self._links.finditer(text):
                if self.needles.links[self._signatures[match.group()]] != owner:
                    out.append(Leak(Needle.EXPORT_LINK, where))
        return out


def _signature(link: str) -> str:
    found = re.search(r"signature=([^&\s\"']+)", link)
    return found.group(1) if found else link


def export_links(kube: Kube, namespaces: list[str]) -> dict[str, str]:
    """Every export link in the request-owned Secrets: link -> "namespace/name"."""
    links: dict[str, str] = {}
    for secret in _items(kube, "secrets", namespaces):
        owners = secret["metadata"].get("ownerReferences") or []
        if not any(o.get("kind") == "DataSubjectRequest" for o in owners):
            continue
        where = f"{secret['metadata']['namespace']}/{secret['metadata']['name']}"
        for key, value in (secret.get("data") or {}).items():
            if key.startswith("link"):
                links[base64.b64decode(value).decode(errors="replace")] = where
    return links


def _items(kube: Kube, kind: str, namespaces: list[str] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for args in [["-n", n] for n in namespaces] if namespaces else [["-A"]]:
        result = kube.run("get", kind, *args, "-o", "json", timeout=300)
        out += json.loads(result.stdout)["items"]
    return out


def scan(kube: Kube, logs: list[Path], needles: Needles) -> LeakScan:
    out = LeakScan()
    out.looked_for.update(
        {
            Needle.TOKEN.value: len(needles.tokens),
            Needle.DISTINCT_ID.value: len(needles.ids),
            Needle.EXPORT_LINK.value: len(needles.links),
        }
    )
    scanner = Scanner(needles)
    for path in logs:
        if not path.exists():
            continue
        with open(path, errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                out.scanned["operator log lines"] += 1
                out.leaks += scanner.scan(line, f"{path.name}:{number}")
    for event in _items(kube, "events"):
        out.scanned["Events"] += 1
        where = f"Event {event['metadata']['namespace']}/{event['metadata']['name']}"
        out.leaks += scanner.scan(json.dumps(event), where)
    kinds = kube.run("api-resources", "--api-group=mixpaneldsr.io", "-o", "name").stdout.split()
    for kind in kinds:
        for obj in _items(kube, kind):
            out.scanned["object statuses"] += 1
            meta = obj["metadata"]
            where = f"{kind} {meta.get('namespace', '')}/{meta['name']} status"
            out.leaks += scanner.scan(json.dumps(obj.get("status") or {}), where)
    for secret in _items(kube, "secrets"):
        out.scanned["Secrets"] += 1
        meta = secret["metadata"]
        name = f"{meta['namespace']}/{meta['name']}"
        for key, value in (secret.get("data") or {}).items():
            text = base64.b64decode(value).decode(errors="replace")
            out.leaks += scanner.scan(text, f"Secret {name} key {key}", owner=name)
    return out
