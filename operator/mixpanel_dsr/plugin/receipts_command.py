"""``kubectl dsr receipts``: list and export the receipts of finished requests, check that they
are the operator's (their seal), and answer "was this id erased, when, by which task?".

Checking seals and ids needs the installation's key (the Secret the operator keeps it in, or a
file an auditor was given); listing does not. No id is printed: the one asked about is shown
as a short hash.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from mixpanel_dsr.plugin.cluster import TIMEOUT, Cluster, api_message
from mixpanel_dsr.plugin.core import PluginError, parse_time
from mixpanel_dsr.receipts import Finding, find_id, verify

RECEIPT_PLURAL = "datasubjectrequestreceipts"
DEFAULT_KEY_SECRET = "mixpanel-dsr-system/mixpanel-dsr-operator-key"  # noqa: S105 - a name
COLUMNS = [
    "namespace", "request", "type", "compliance", "project", "region", "outcome", "reason",
    "receivedAt", "deadline", "completedAt", "deadlineMet", "ids", "idsDone", "tasks",
    "requestedBy", "approvedBy", "labels", "receipt", "parts",
]  # fmt: skip


def _note(message: str) -> None:
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------- pure


def _time(value: object) -> datetime | None:
    return parse_time(str(value)) if value else None


def selected(
    items: Iterable[Mapping[str, Any]],
    *,
    project: str | None = None,
    request: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Mapping[str, Any]]:
    """The receipts (every part) of the requests that match, oldest finished first."""
    out = []
    for item in items:
        spec = item.get("spec") or {}
        completed = _time(spec.get("completedAt"))
        if project and (spec.get("project") or {}).get("name") != project:
            continue
        if request and (spec.get("request") or {}).get("name") != request:
            continue
        if since and (completed is None or completed < since):
            continue
        if until and (completed is None or completed >= until):
            continue
        out.append(item)
    return sorted(out, key=lambda i: (str((i.get("spec") or {}).get("completedAt")), _name(i)))


def _name(item: Mapping[str, Any]) -> str:
    return str((item.get("metadata") or {}).get("name"))


def rows(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per receipt (its parts counted together), for a table, CSV or JSON."""
    merged: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for item in items:
        spec = item.get("spec") or {}
        req = spec.get("request") or {}
        key = (str(req.get("namespace")), str(req.get("uid")), spec.get("retry"))
        tasks = len(spec.get("tasks") or [])
        if key in merged:
            merged[key]["tasks"] += tasks
            if spec.get("part") == 1:
                merged[key]["receipt"] = _name(item)
            continue
        project = spec.get("project") or {}
        labels = spec.get("labels") or {}
        merged[key] = {
            "namespace": req.get("namespace"),
            "request": req.get("name"),
            "type": spec.get("type"),
            "compliance": spec.get("complianceType"),
            "project": project.get("name"),
            "region": project.get("region"),
            "outcome": spec.get("outcome"),
            "reason": spec.get("reason"),
            "receivedAt": spec.get("receivedAt"),
            "deadline": spec.get("deadline"),
            "completedAt": spec.get("completedAt"),
            "deadlineMet": spec.get("deadlineMet"),
            "ids": spec.get("idCount"),
            "idsDone": spec.get("idsDone"),
            "tasks": tasks,
            "requestedBy": spec.get("requestedBy"),
            "approvedBy": spec.get("approvedBy"),
            "labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "receipt": _name(item),
            "parts": spec.get("parts", 1),
        }
    return list(merged.values())


def render(table: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        return json.dumps(table, indent=2) + "\n"
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        return buffer.getvalue()
    shown = ["namespace", "request", "type", "project", "outcome", "completedAt", "deadlineMet",
             "ids", "labels"]  # fmt: skip
    lines = [[c.upper() for c in shown]] + [
        ["" if r[c] is None else str(r[c]) for c in shown] for r in table
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(shown))]
    return "".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def id_label(distinct_id: str) -> str:
    """How an id asked about is shown: a short hash, never the id."""
    return "sha256:" + hashlib.sha256(distinct_id.encode()).hexdigest()[:12]


def describe(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no receipt holds this id\n"
    out = []
    for f in findings:
        what = "done" if f.done else "NOT done"
        task = f"task {f.task} (tracking id {f.tracking_id}, {f.task_phase}" + (
            f", at {f.completed_at})" if f.completed_at else ")"
        )
        where = task if f.task else "no task held it (never sent)"
        out.append(
            f"{what}: request {f.namespace}/{f.request} ({f.outcome}), {where}; receipt {f.receipt}"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- I/O


def list_receipts(cluster: Cluster, namespace: str | None, selector: str | None) -> list[Any]:
    return cluster.list_objects(RECEIPT_PLURAL, namespace, selector)


def read_key(cluster: Cluster | None, key_file: str | None, key_secret: str) -> bytes:
    """The installation's key: raw bytes from a file (or its base64), else from the Secret."""
    if key_file:
        data = Path(key_file).read_bytes()
        text = data.strip()
        try:
            decoded = base64.b64decode(text, validate=True)
            if len(decoded) >= 16:
                return decoded
        except (binascii.Error, ValueError):
            pass
        return data
    assert cluster is not None
    namespace, _, name = key_secret.rpartition("/")
    try:
        secret = cluster.core.read_namespaced_secret(
            name, namespace or cluster.namespace, _request_timeout=TIMEOUT
        )
    except ApiException as err:
        raise PluginError(
            f"the installation's key (Secret {key_secret}): {api_message(err)}; an auditor "
            "without access to it can be given the key as a file (--key-file)"
        ) from None
    value = (secret.data or {}).get("key")
    if not value:
        raise PluginError(f"Secret {key_secret} has no key 'key'")
    return base64.b64decode(value)


def cmd_receipts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cluster = Cluster(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    namespace = (
        None if args.all_namespaces else (getattr(args, "namespace", None) or cluster.namespace)
    )
    items = selected(
        list_receipts(cluster, namespace, args.selector),
        project=args.project,
        request=args.request,
        since=args.since,
        until=args.until,
    )
    if args.check_id is None and not args.verify:
        sys.stdout.write(render(rows(items), args.output or "table"))
        return 0
    key = read_key(cluster, args.key_file, args.key_secret)
    status = 0
    if args.verify:
        bad = [_name(i) for i in items if not verify(key, i.get("spec") or {})]
        for name in bad:
            print(f"NOT the operator's or altered: receipt {name}")
        print(f"{len(items) - len(bad)} of {len(items)} receipts verified")
        status = 1 if bad else 0
    if args.check_id is not None:
        trusted = [i for i in items if verify(key, i.get("spec") or {})]
        if len(trusted) < len(items):
            _note(f"warning: {len(items) - len(trusted)} receipts do not verify; not used")
        findings = find_id(key, trusted, args.check_id)
        if args.output == "json":
            print(json.dumps({"id": id_label(args.check_id),
                              "findings": [asdict(f) for f in findings]}, indent=2))  # fmt: skip
        else:
            sys.stdout.write(f"id {id_label(args.check_id)}\n" + describe(findings))
        if not any(f.done for f in findings):
            status = 1
    return status


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(subs: Any, connection_flags: Any) -> None:
    """Register ``receipts`` on the plugin's subcommands."""
    cmd: argparse.ArgumentParser = subs.add_parser(
        "receipts",
        help="list or export receipts; check their seals; was an id erased?",
        description="List the receipts of finished requests (one per outcome, immutable, kept "
        "after the request is deleted) as a table, CSV or JSON, filtered by project, request, "
        "ticket labels (-l) or completion time. --verify checks each receipt's seal with the "
        "installation's key; --check-id answers whether an id was erased (or exported), when "
        "and by which Mixpanel task (exit 0 when it was, 1 when not). The id is never printed.",
    )
    connection_flags(cmd, sub=True)
    cmd.add_argument("-A", "--all-namespaces", action="store_true")
    cmd.add_argument("-l", "--selector", help="label selector, e.g. privacy.example.com/ticket=X")
    cmd.add_argument("--project", help="only receipts of this project")
    cmd.add_argument("--request", help="only receipts of this request (name)")
    cmd.add_argument("--since", type=_time_arg, metavar="TIME", help="completed at or after")
    cmd.add_argument("--until", type=_time_arg, metavar="TIME", help="completed before")
    cmd.add_argument("-o", "--output", choices=["table", "csv", "json"])
    cmd.add_argument("--verify", action="store_true", help="check every receipt's seal")
    cmd.add_argument("--check-id", metavar="ID", help="was this distinct id erased/exported?")
    cmd.add_argument(
        "--key-secret", default=DEFAULT_KEY_SECRET, metavar="[NAMESPACE/]NAME",
        help="Secret holding the installation's key (default %(default)s)",
    )  # fmt: skip
    cmd.add_argument(
        "--key-file", metavar="PATH", help="the installation's key as a file (raw or base64)"
    )
    cmd.set_defaults(func=cmd_receipts, command_parser=cmd)
