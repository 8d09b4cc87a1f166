"""What ``kubectl dsr intake`` writes from a :class:`~.intake.Plan`: the Secrets and the
requests, the files for Git (plain, for kubeseal, for sops) with the commands to run on them,
and the dry run's summary. No I/O here."""

from __future__ import annotations

import base64
import json
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml

from mixpanel_dsr.api import API_VERSION
from mixpanel_dsr.plugin.core import IDS_KEY, MANAGED_BY, PluginError, rfc3339, secret_text, table
from mixpanel_dsr.plugin.intake import (
    INTAKE_LABEL,
    LABEL_VALUE,
    SECRET_MAX_BYTES,
    TICKET_KEY,
    Options,
    Plan,
    PlannedRequest,
    SecretLayout,
    plural,
    request_spec,
    secret_key,
    secret_name,
)


class SecretFormat(StrEnum):
    """How Secret files are written for Git: plain (kept out of Git), for kubeseal, for sops."""

    PLAIN = "plain"
    SEALED_SECRETS = "sealedsecrets"
    SOPS = "sops"


def _metadata(name: str, options: Options, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = labels
    return meta


def _ticket_labels(ticket: str) -> dict[str, str]:
    if len(ticket) <= 63 and LABEL_VALUE.fullmatch(ticket):
        return {TICKET_KEY: ticket}
    return {}


def request_manifest(request: PlannedRequest, options: Options) -> dict[str, Any]:
    """The DataSubjectRequest: ids only by reference (``distinctIdsFrom``), the ticket in an
    annotation and, when it is a valid label value, a label."""
    wire = request_spec(request, options)
    meta = _metadata(
        request.name, options, {**_ticket_labels(request.ticket), INTAKE_LABEL: options.batch}
    )
    meta["annotations"] = {TICKET_KEY: request.ticket}
    return {"apiVersion": API_VERSION, "kind": "DataSubjectRequest", "metadata": meta, "spec": wire}


def _secret(
    name: str, data: Mapping[str, str], options: Options, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(
            name,
            options,
            {"app.kubernetes.io/managed-by": MANAGED_BY, INTAKE_LABEL: options.batch, **labels},
        ),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@dataclass(frozen=True)
class Manifests:
    """The Secrets (to create first) and the requests, in the file's ticket order."""

    secrets: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    #: Per request name, the name of the Secret holding its ids.
    secret_of: dict[str, str]


def build_manifests(plan: Plan, options: Options) -> Manifests:
    """Secrets and requests for the plan's good tickets; no id is in any request."""
    requests = [request_manifest(r, options) for r in plan.requests]
    secret_of = {r.name: secret_name(r, options) for r in plan.requests}
    if options.layout is SecretLayout.PER_REQUEST:
        secrets = [
            _secret(
                secret_name(r, options), {IDS_KEY: secret_text(r.ids)}, options,
                _ticket_labels(r.ticket),
            )
            for r in plan.requests
        ]  # fmt: skip
        return Manifests(secrets, requests, secret_of)
    if not plan.requests:
        return Manifests([], [], {})
    data = {r.name: secret_text(r.ids) for r in plan.requests}
    size = sum(len(v.encode()) for v in data.values())
    if size > SECRET_MAX_BYTES:
        raise PluginError(
            f"one Secret for the batch would hold {size} bytes of ids, more than a Secret holds "
            f"({SECRET_MAX_BYTES}): use --secrets per-request, or split the file"
        )
    return Manifests([_secret(f"{options.batch}-ids", data, options, {})], requests, secret_of)


# --------------------------------------------------------------------------- output


def render_stream(docs: Sequence[dict[str, Any]], fmt: str) -> str:
    """YAML documents separated by ``---``, or a JSON ``v1`` List (what ``kubectl apply -f -``
    and ``kubectl create -f -`` take)."""
    if fmt == "json":
        listed = {"apiVersion": "v1", "kind": "List", "items": list(docs)}
        return json.dumps(listed, indent=2, ensure_ascii=False, default=str) + "\n"
    return "---\n".join(
        yaml.safe_dump(d, sort_keys=False, allow_unicode=True, width=1000) for d in docs
    )


def _document(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


#: Subdirectories of ``--dir``: requests (commit), secrets (encrypted or sealed: commit),
#: unsealed (plain Secrets for kubeseal: never commit).
REQUESTS_DIR = "requests"
SECRETS_DIR = "secrets"
UNSEALED_DIR = "unsealed"
IGNORE_ALL = "# Plain Secrets holding distinct ids (personal data): never commit them.\n*\n"


def secret_dir(secret_format: SecretFormat) -> str:
    """Where Secret files go: plain ones stay in ``secrets/``; those to seal or encrypt wait
    in ``unsealed/`` until kubeseal or sops writes them to ``secrets/``."""
    return SECRETS_DIR if secret_format is SecretFormat.PLAIN else UNSEALED_DIR


def files(manifests: Manifests, fmt: str, secret_format: SecretFormat) -> dict[str, str]:
    """``--dir``'s files by relative path: one file per request and per Secret, and a
    ``.gitignore`` that ignores everything in the directory holding plain Secrets."""
    ext = "json" if fmt == "json" else "yaml"
    out = {
        f"{REQUESTS_DIR}/{r['metadata']['name']}.{ext}": _document(r, fmt)
        for r in manifests.requests
    }
    folder = secret_dir(secret_format)
    for secret in manifests.secrets:
        out[f"{folder}/{secret['metadata']['name']}.{ext}"] = _document(secret, fmt)
    if manifests.secrets:
        out[f"{folder}/.gitignore"] = IGNORE_ALL
    return out


def sops_rule(age_recipient: str | None) -> str:
    """A ``.sops.yaml`` creation rule that encrypts only the Secrets' values."""
    recipient = age_recipient or "age1...  # your age public key (or pgp:, kms:, gcp_kms:, ...)"
    return (
        "creation_rules:\n"
        f"  - path_regex: ({UNSEALED_DIR}|{SECRETS_DIR})/[^/]*\\.(yaml|json)$\n"
        "    encrypted_regex: ^(data|stringData)$\n"
        f"    age: {recipient}\n"
    )


def next_steps(
    directory: str,
    fmt: str,
    secret_format: SecretFormat,
    secret_count: int,
    age_recipient: str | None = None,
) -> str:
    """What to run before committing ``directory``: the exact kubeseal or sops command, which
    writes each Secret of ``unsealed/`` to ``secrets/`` and then removes ``unsealed/``."""
    if secret_count == 0:
        return ""
    ext = "json" if fmt == "json" else "yaml"
    quoted = shlex.quote(directory)
    unsealed, secrets = f"{quoted}/{UNSEALED_DIR}", f"{quoted}/{SECRETS_DIR}"
    target = f'{secrets}/"$(basename "$f")"'
    if secret_format is SecretFormat.SEALED_SECRETS:
        target = f'{secrets}/"$(basename "$f" .{ext})".yaml'
        convert = f'kubeseal --format yaml < "$f" > {target}'
        intro = (
            "Seal the Secrets (kubeseal reads the controller's certificate from the cluster, "
            "or add --cert FILE), then delete the plain ones:\n"
        )
    elif secret_format is SecretFormat.SOPS:
        convert = f'sops --encrypt "$f" > {target}'
        intro = (
            "Suggested .sops.yaml creation rule (sops looks for .sops.yaml from the working "
            "directory up: usually the repository root), encrypting only data and stringData:\n"
            + "".join(f"  {line}\n" for line in sops_rule(age_recipient).splitlines())
            + "Encrypt the Secrets, then delete the plain ones:\n"
        )
    else:
        return (
            f"{directory}/{SECRETS_DIR} holds plain Secrets with the distinct ids: it is "
            "git-ignored; apply it with kubectl (Secrets first), never commit it.\n"
        )
    loop = f"for f in {unsealed}/*.{ext}; do {convert}; done"
    return (
        intro
        + f"  (set -e; mkdir -p {secrets}; {loop}; rm -r {unsealed})\n"
        + f"Then commit {directory}/{REQUESTS_DIR} and {directory}/{SECRETS_DIR}"
        + (
            " (Flux decrypts them with spec.decryption.provider: sops on its Kustomization).\n"
            if secret_format is SecretFormat.SOPS
            else ".\n"
        )
    )


def summary(plan: Plan, manifests: Manifests, options: Options, now: datetime) -> str:
    """What ``--dry-run`` prints: counts, and one line per request (names, never ids)."""
    where = f"namespace {options.namespace}" if options.namespace else "the current namespace"
    kinds = Counter(f"{r.type.value} {r.compliance.value}" for r in plan.requests)
    lines = [
        f"{plural(plan.rows, 'row')}, {plural(plan.tickets, 'ticket')}: "
        f"{plural(len(plan.requests), 'request')} with {plural(plan.id_count, 'distinct id')}"
        + (f"; {plan.refusal}" if plan.refused_rows else ""),
        f"would create in {where}: {plural(len(manifests.secrets), 'secret')}, "
        f"{plural(len(manifests.requests), 'datasubjectrequest')} ("
        + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        + ")",
    ]
    rows = [
        [
            r.name, r.ticket, r.type.value, r.compliance.value, r.project, rfc3339(r.received_at),
            rfc3339(r.deadline), len(r.ids),
            f"{manifests.secret_of[r.name]}/{secret_key(r, options)}",
        ]
        for r in plan.requests
    ]  # fmt: skip
    if rows:
        headers = "NAME TICKET TYPE COMPLIANCE PROJECT RECEIVED DEADLINE IDS SECRET/KEY"
        lines.append(table(headers.split(), rows))
    overdue = sum(1 for r in plan.requests if r.deadline <= now)
    if overdue:
        lines.append(f"past their statutory deadline already: {overdue} of these requests")
    return "\n".join(lines) + "\n"
