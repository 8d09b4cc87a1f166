"""The pure parts of ``kubectl dsr``: ids, manifests, durations, tables. No I/O here.

Error messages name where a bad id is (``line 7``, ``row 12``, ``--id number 2``),
never the id itself: ids are personal data and error output ends up in tickets and logs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from pydantic import ValidationError

from mixpanel_dsr.api import API_VERSION, GROUP
from mixpanel_dsr.api.models import (
    DNS_SUBDOMAIN,
    MAX_ID_LENGTH,
    DataSubjectRequestSpec,
    Phase,
    RequestType,
)
from mixpanel_dsr.deadlines import deadline as statutory_deadline
from mixpanel_dsr.planning import InvalidIdsError, parse_id_list

#: Past either limit, ``new`` puts the ids in a Secret (``NAME-ids``) instead of the request.
SECRET_OVER_IDS = 1000
SECRET_OVER_BYTES = 100_000
IDS_KEY = "ids"
RETRY_ANNOTATION = f"{GROUP}/retry"
MANAGED_BY = "kubectl-dsr"
FINISHED = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.CANCELLED.value})
PHASE_ORDER = [p.value for p in Phase]


class PluginError(Exception):
    """An expected failure: shown as ``error: <message>``, exit code 1."""


# --------------------------------------------------------------------------- distinct ids


def check_id(where: str, value: str) -> str:
    """One id, stripped as the operator strips it, checked by parse_id_list's rules."""
    value = value.strip()
    if not value:
        raise PluginError(f"{where}: blank distinct id")
    if len(value) > MAX_ID_LENGTH:
        raise PluginError(f"{where}: distinct id longer than {MAX_ID_LENGTH} characters")
    if "\n" in value or "\r" in value:
        raise PluginError(f"{where}: distinct id holds a line break")
    return value


def ids_from_args(values: Sequence[str]) -> list[str]:
    """Ids given with ``--id``, in order (repeats kept: see :func:`distinct_ids`)."""
    return [check_id(f"--id number {n}", v) for n, v in enumerate(values, 1)]


def ids_from_text(text: str) -> list[str]:
    """An ids file: one id per line (blank lines skipped), or a JSON array of strings.

    As the operator reads an ids Secret: a leading byte order mark is dropped, and lines end
    at \n (or \r\n) only, never at U+2028, U+0085 or other characters str.splitlines() breaks
    at (one listed id must never become several)."""
    text = text.removeprefix("\ufeff")
    if text.strip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PluginError(f"line {err.lineno}: not a valid JSON array") from None
        if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
            raise PluginError("the JSON array must hold only strings")
        return [check_id(f"array index {n}", v) for n, v in enumerate(data)]
    return [
        check_id(f"line {n}", line) for n, line in enumerate(text.split("\n"), 1) if line.strip()
    ]


def ids_from_csv(text: str, column: str) -> list[str]:
    """The ``column`` of a CSV file with a header row; rows count as in a spreadsheet (the
    header is row 1). Wholly blank rows are skipped; a blank cell in the column is an error."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    row = 1
    try:
        header = next(reader, None)
        if header is None:
            raise PluginError("the CSV file is empty")
        names = [h.strip() for h in header]
        if column not in names:
            folded = [n.casefold() for n in names]
            if column.casefold() not in folded:
                raise PluginError(
                    f"the CSV header has no column {column!r} (it has: {', '.join(names)})"
                )
            index = folded.index(column.casefold())
        else:
            index = names.index(column)
        ids: list[str] = []
        for row, record in enumerate(reader, 2):
            if not any(cell.strip() for cell in record):
                continue
            if index >= len(record):
                raise PluginError(f"row {row}: no value in column {column!r}")
            ids.append(check_id(f"row {row}", record[index]))
    except csv.Error as err:
        raise PluginError(f"row {row + 1}: not valid CSV ({err})") from None
    return ids


def distinct_ids(ids: Iterable[str]) -> list[str]:
    """The ids without repeats, in first-seen order (the order the operator slices by)."""
    unique = list(dict.fromkeys(ids))
    if not unique:
        raise PluginError("no distinct ids given")
    return unique


def id_bytes(ids: Iterable[str]) -> int:
    return sum(len(i.encode()) for i in ids)


def needs_secret(ids: Sequence[str]) -> bool:
    """More than 1000 ids or 100,000 bytes go into a Secret, not the request itself."""
    return len(ids) > SECRET_OVER_IDS or id_bytes(ids) > SECRET_OVER_BYTES


def secret_text(ids: Sequence[str]) -> str:
    """The Secret value, one id per line, that the operator's parse_id_list reads back as
    exactly ``ids`` (a JSON array in the odd case where the first id starts with ``[``)."""
    wanted = list(ids)
    problem = "the ids cannot be written so that the operator reads them back the same"
    for text in ("\n".join(wanted) + "\n", json.dumps(wanted, ensure_ascii=False)):
        try:
            if parse_id_list(text) == wanted:
                return text
        except InvalidIdsError as err:
            problem = str(err)
    raise PluginError(problem)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class NewRequest:
    """What ``kubectl dsr new`` was asked to write."""

    name: str
    project: str
    type: str
    namespace: str | None = None
    cluster_project: bool = False
    compliance: str = "GDPR"
    disclosure: str | None = None
    received_at: datetime | None = None
    requested_by: str | None = None

    @property
    def secret_name(self) -> str:
        return f"{self.name}-ids"


def describe_invalid(err: ValidationError) -> str:
    """pydantic's complaints by field, without the offending input (it may be an id)."""
    return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


def build_manifests(req: NewRequest, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The DataSubjectRequest, preceded by its ids Secret when the list is long."""
    if len(req.name) > 253 - len("-ids") or not re.fullmatch(DNS_SUBDOMAIN, req.name):
        raise PluginError(
            f"{req.name!r} is not a valid name: lower-case letters, digits, '-' and '.', "
            "at most 249 characters"
        )
    if req.disclosure and (req.type != RequestType.RETRIEVAL or req.compliance != "CCPA"):
        raise PluginError(
            "--disclosure is only for CCPA retrievals (--type Retrieval --compliance CCPA)"
        )
    use_secret = needs_secret(ids)
    spec: dict[str, Any] = {
        "projectRef": {
            "kind": "ClusterMixpanelProject" if req.cluster_project else "MixpanelProject",
            "name": req.project,
        },
        "type": req.type,
        "complianceType": req.compliance,
    }
    if req.disclosure:
        spec["disclosureType"] = req.disclosure
    if use_secret:
        spec["distinctIdsFrom"] = {"secretKeyRef": {"name": req.secret_name, "key": IDS_KEY}}
    else:
        spec["distinctIds"] = list(ids)
    if req.received_at:
        spec["receivedAt"] = req.received_at.astimezone(UTC)
    if req.requested_by:
        spec["requestedBy"] = req.requested_by
    try:
        wire = DataSubjectRequestSpec.model_validate(spec).to_wire()
    except ValidationError as err:
        raise PluginError(describe_invalid(err)) from None
    wire.pop("dryRun", None)
    request = {
        "apiVersion": API_VERSION,
        "kind": "DataSubjectRequest",
        "metadata": _metadata(req.name, req.namespace),
        "spec": wire,
    }
    if not use_secret:
        return [request]
    secret_meta = _metadata(req.secret_name, req.namespace)
    secret_meta["labels"] = {"app.kubernetes.io/managed-by": MANAGED_BY}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": secret_meta,
        "type": "Opaque",
        "data": {IDS_KEY: base64.b64encode(secret_text(ids).encode()).decode()},
    }
    return [secret, request]


def as_document(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One object as is, several as a v1 List (what ``kubectl apply -f`` takes)."""
    if len(manifests) == 1:
        return manifests[0]
    return {"apiVersion": "v1", "kind": "List", "items": list(manifests)}


def render(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time with a zone (``2026-11-28T09:00:00Z``), or a date
    (midnight UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return moment.replace(tzinfo=UTC)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return moment


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- time


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """A Go duration (``90s``, ``30m``, ``1h30m``, ``1.5h``) that may also use days (``2d``)."""
    value = text.strip()
    if value == "0":
        return timedelta(0)
    total, pos = 0.0, 0
    for part in _DURATION_PART.finditer(value):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if pos == 0 or pos != len(value):
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 30m, 1h30m, 2d)")
    return timedelta(seconds=total)


def duration_arg(text: str) -> timedelta:
    """:func:`parse_duration` for argparse (a usage error, exit code 2)."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def span(seconds: float) -> str:
    """A short length of time: ``45s``, ``12m``, ``30h`` (under two days), ``29d``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 48 * 3600:
        return f"{whole // 3600}h"
    return f"{whole // 86400}d"


def how_far(moment: datetime, now: datetime) -> str:
    """How far away ``moment`` is: ``in 29d``, ``3d ago``, ``now``."""
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(-seconds)} ago"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- reading requests


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            found: Mapping[str, Any] = cond
            return found
    return None


def project_label(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a MixpanelProject, ``name (cluster)`` of a cluster project."""
    ref = (obj.get("spec") or {}).get("projectRef") or {}
    name = ref.get("name", "?")
    if ref.get("kind") == "ClusterMixpanelProject":
        return f"{name} (cluster)"
    return f"{obj['metadata'].get('namespace', '')}/{name}"


def request_deadline(obj: Mapping[str, Any]) -> datetime | None:
    """status.deadline, or (before the operator saw the request) the statutory one."""
    status = obj.get("status") or {}
    found = _time(status.get("deadline"))
    if found:
        return found
    try:
        spec = DataSubjectRequestSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        return None
    received = spec.received_at or _time(obj["metadata"].get("creationTimestamp"))
    if received is None:
        return None
    return statutory_deadline(spec.compliance_type, received)


@dataclass(frozen=True)
class RequestRow:
    """One request as the summary and ``wait`` see it."""

    namespace: str
    name: str
    project: str
    type: str
    phase: str
    done: int
    total: int
    failed: int
    deadline: datetime | None
    #: The DeadlineAtRisk reason while it is True (DeadlineNear, DeadlinePassed), else None.
    risk: str | None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


def request_row(obj: Mapping[str, Any]) -> RequestRow:
    status = obj.get("status") or {}
    risk = condition(obj, "DeadlineAtRisk")
    return RequestRow(
        namespace=obj["metadata"].get("namespace", ""),
        name=obj["metadata"]["name"],
        project=project_label(obj),
        type=(obj.get("spec") or {}).get("type", ""),
        phase=status.get("phase") or "",
        done=int(status.get("idsDone") or 0),
        total=int(status.get("idsTotal") or 0),
        failed=int(status.get("idsFailed") or 0),
        deadline=request_deadline(obj),
        risk=str(risk.get("reason")) if risk and risk.get("status") == "True" else None,
    )


_FAR = datetime.max.replace(tzinfo=UTC)


def order_requests(rows: Iterable[RequestRow]) -> list[RequestRow]:
    """At risk first (deadline passed, then near), each group by deadline, then the rest."""

    def key(row: RequestRow) -> tuple[int, datetime, str, str]:
        rank = 2 if row.risk is None else (0 if row.risk == "DeadlinePassed" else 1)
        return rank, row.deadline or _FAR, row.namespace, row.name

    return sorted(rows, key=key)


@dataclass(frozen=True)
class SummaryRow:
    project: str
    phase: str
    requests: int
    done: int
    total: int
    at_risk: int


def _phase_rank(phase: str) -> int:
    return PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER)


def summarize(rows: Iterable[RequestRow]) -> list[SummaryRow]:
    """Counts per project and phase: projects with requests at risk first, then by name;
    phases in the order a request goes through them."""
    groups: dict[tuple[str, str], list[RequestRow]] = {}
    for row in rows:
        groups.setdefault((row.project, row.phase), []).append(row)
    risky = {project for (project, _), members in groups.items() if any(m.risk for m in members)}
    result = [
        SummaryRow(
            project=project,
            phase=phase or "<none>",
            requests=len(members),
            done=sum(m.done for m in members),
            total=sum(m.total for m in members),
            at_risk=sum(1 for m in members if m.risk),
        )
        for (project, phase), members in groups.items()
    ]
    return sorted(result, key=lambda r: (r.project not in risky, r.project, _phase_rank(r.phase)))


def progress_line(rows: Sequence[RequestRow], gone: int = 0) -> str:
    """``12/40 finished, 3 failed`` (and cancelled or deleted ones when there are)."""
    finished = sum(1 for r in rows if r.finished) + gone
    failed = sum(1 for r in rows if r.phase == Phase.FAILED)
    cancelled = sum(1 for r in rows if r.phase == Phase.CANCELLED)
    line = f"{finished}/{len(rows) + gone} finished, {failed} failed"
    if cancelled:
        line += f", {cancelled} cancelled"
    if gone:
        line += f", {gone} deleted"
    return line


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns as kubectl prints them: upper-case headers, three spaces apart."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *cells]
    )


# --------------------------------------------------------------------------- one request


def task_namespace(obj: Mapping[str, Any], operator_namespace: str) -> str:
    """Where a request's MixpanelTasks are: beside its project."""
    ref = (obj.get("spec") or {}).get("projectRef") or {}
    if ref.get("kind") == "ClusterMixpanelProject":
        return operator_namespace
    return str(obj["metadata"].get("namespace", ""))


def detail(
    obj: Mapping[str, Any],
    tasks: Mapping[str, Mapping[str, Any] | None],
    task_ns: str,
    now: datetime,
) -> dict[str, Any]:
    """What ``status NAME`` shows: the request's progress and, per task reference, what the
    MixpanelTask (``tasks`` by name; None when unreadable or gone) says."""
    row = request_row(obj)
    status = obj.get("status") or {}
    refs = []
    for ref in status.get("tasks") or []:
        mpt_status = (tasks.get(ref.get("name", "")) or {}).get("status") or {}
        refs.append(
            {
                "name": ref.get("name"),
                "namespace": task_ns,
                "trackingId": ref.get("trackingId"),
                "start": ref.get("start"),
                "end": ref.get("end"),
                "attempt": ref.get("attempt", 1),
                "phase": ref.get("phase"),
                "mixpanelState": mpt_status.get("mixpanelState"),
                "checkedAt": mpt_status.get("checkedAt"),
                "submittedAt": ref.get("submittedAt"),
                "message": ref.get("message"),
            }
        )
    spec = obj.get("spec") or {}
    view: dict[str, Any] = {
        "name": row.name,
        "namespace": row.namespace,
        "project": spec.get("projectRef"),
        "type": spec.get("type"),
        "complianceType": spec.get("complianceType", "GDPR"),
        "phase": row.phase or None,
        "idsDone": row.done,
        "idsTotal": row.total,
        "idsFailed": row.failed,
        "deadline": rfc3339(row.deadline) if row.deadline else None,
        "deadlineIn": how_far(row.deadline, now) if row.deadline else None,
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
        "tasks": refs,
    }
    if status.get("lastRetry"):
        view["lastRetry"] = status["lastRetry"]
    return view


def render_detail(view: Mapping[str, Any], wide: bool = False) -> str:
    project = view.get("project") or {}
    lines = [
        f"Name:        {view['name']}",
        f"Namespace:   {view['namespace']}",
        f"Project:     {project.get('kind', 'MixpanelProject')}/{project.get('name', '?')}",
        f"Type:        {view['type']} ({view['complianceType']})",
        f"Phase:       {view['phase'] or '<none>'}",
        f"Done:        {view['idsDone']}/{view['idsTotal']}"
        + (f" ({view['idsFailed']} failed)" if view["idsFailed"] else ""),
        f"Deadline:    {view['deadline']} ({view['deadlineIn']})"
        if view["deadline"]
        else "Deadline:    <unknown>",
    ]
    if view.get("lastRetry"):
        lines.append(f"Last retry:  {view['lastRetry'].get('token')}")
    if view["conditions"]:
        lines.append("Conditions:")
        rows = [
            [c["type"], c["status"], c["reason"], c.get("message") or ""]
            for c in view["conditions"]
        ]
        lines += [
            "  " + line
            for line in table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows).splitlines()
        ]
    if view["tasks"]:
        lines.append("Tasks:")
        headers = ["MIXPANELTASK", "TRACKING ID", "SLICE", "PHASE", "MIXPANEL", "CHECKED"]
        if wide:
            headers += ["ATTEMPT", "SUBMITTED", "MESSAGE"]
        rows = []
        for t in view["tasks"]:
            row = [
                t["name"],
                t["trackingId"] or "<none>",
                f"{t['start']}-{t['end']}",
                t["phase"],
                t["mixpanelState"] or "-",
                t["checkedAt"] or "-",
            ]
            if wide:
                row += [t["attempt"], t["submittedAt"] or "-", t["message"] or ""]
            rows.append(row)
        lines += ["  " + line for line in table(headers, rows).splitlines()]
    else:
        lines.append("Tasks:       <none>")
    return "\n".join(lines)


# --------------------------------------------------------------------------- completion


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    flags: list[str] = []
    choices: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        flags += [o for o in action.option_strings if o.startswith("--")]
        if action.option_strings and action.choices:
            for option in action.option_strings:
                choices[option] = [str(c) for c in action.choices]
    return flags, choices


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A static bash completion for ``kubectl-dsr`` (zsh through bashcompinit): the
    subcommands, their flags, the flags' choices, and request names from kubectl."""
    commands = _commands(parser)
    top_flags, _ = _flags(parser)
    cases = []
    choice_cases: dict[str, list[str]] = {}
    for name, sub in commands.items():
        flags, choices = _flags(sub)
        cases.append(f'    {name}) opts="{" ".join(sorted(set(flags)))}" ;;')
        for option, values in choices.items():
            choice_cases.setdefault(option, values)
    choice_lines = [
        f'    {option}) COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")); return ;;'
        for option, values in sorted(choice_cases.items())
    ]
    names = " ".join(commands)
    script = f"""# {shell} completion for kubectl-dsr (kubectl dsr), from `kubectl dsr completion`
_kubectl_dsr() {{
  local cur prev cmd opts w
  cur="${{COMP_WORDS[COMP_CWORD]}}"
  prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  cmd=""
  for w in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
    case "$w" in {"|".join(commands)}) cmd="$w"; break ;; esac
  done
  case "$prev" in
{chr(10).join(choice_lines)}
    --kubeconfig|--ids-file|--csv|--dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  case "$cmd" in
    "") COMPREPLY=($(compgen -W "{names} {" ".join(top_flags)}" -- "$cur")); return ;;
{chr(10).join(cases)}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    case "$cmd" in
      status|wait|retry|cancel)
        COMPREPLY=($(compgen -W "$(kubectl get datasubjectrequests.mixpaneldsr.io \\
          -o custom-columns=:metadata.name --no-headers 2>/dev/null)" -- "$cur")) ;;
    esac
  fi
}}
complete -o default -F _kubectl_dsr kubectl-dsr
"""
    if shell == "zsh":
        script = "#compdef kubectl-dsr\nautoload -U +X bashcompinit && bashcompinit\n" + script
    return script
