"""``kubectl dsr intake`` reading its file: a CSV export of data subject requests, checked row
by row and grouped by ticket into a :class:`Plan` of one request per ticket, each checked by
the API's model with its ids by reference (``distinctIdsFrom``), never inline. No I/O here:
:mod:`.intake_output` makes the objects and files, :mod:`.intake_command` runs the command.

Errors name the row (as a spreadsheet counts them: the header is row 1) and the column as the
file spells it; they never quote a cell other than a ticket, because a shifted column may put
an id in any cell, and ids are personal data.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from mixpanel_dsr.api import GROUP
from mixpanel_dsr.api.models import DNS_SUBDOMAIN, DataSubjectRequestSpec, RequestType
from mixpanel_dsr.deadlines import deadline as statutory_deadline
from mixpanel_dsr.mixpanel.types import ComplianceType, DisclosureType
from mixpanel_dsr.plugin.core import (
    IDS_KEY,
    PluginError,
    check_id,
    describe_invalid,
    parse_time,
    secret_text,
)

#: Label (when the ticket is a valid label value) and annotation (always) holding the ticket.
TICKET_KEY = f"{GROUP}/ticket"
#: Label on every object of one intake run: ``kubectl get dsr,secret -l mixpaneldsr.io/intake=B``.
INTAKE_LABEL = f"{GROUP}/intake"
#: A Secret holds at most 1 MiB of data; this leaves room for its metadata.
SECRET_MAX_BYTES = 1_000_000
DEFAULT_MAX_IDS = 1000
#: What a request name ends with, per type (as in examples/: priv-1234-erase, priv-1235-access).
NAME_SUFFIX = {RequestType.DELETION: "erase", RequestType.RETRIEVAL: "access"}
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_NAME = 253 - len("-ids")


class Column(StrEnum):
    """A column intake reads; the value is how errors and docs call it."""

    TICKET = "ticket"
    TYPE = "type"
    COMPLIANCE = "compliance type"
    IDS = "distinct ids"
    RECEIVED = "received date"
    PROJECT = "project"
    DISCLOSURE = "disclosure type"


#: Accepted header names, compared after :func:`header_key` (case, spaces, ``_``, ``-``
#: and ``(s)`` do not matter).
HEADERS: dict[Column, frozenset[str]] = {
    Column.TICKET: frozenset(
        {"ticket", "ticket id", "ticket number", "ticket key", "issue key", "case", "case id"}
    ),
    Column.TYPE: frozenset({"type", "request type", "dsr type"}),
    Column.COMPLIANCE: frozenset({"compliance type", "compliance", "law", "regulation"}),
    Column.IDS: frozenset({"distinct id", "distinct ids", "distinctid", "distinctids", "ids"}),
    Column.RECEIVED: frozenset(
        {"received", "received at", "received date", "received on", "date received"}
    ),
    Column.PROJECT: frozenset({"project", "mixpanel project"}),
    Column.DISCLOSURE: frozenset({"disclosure", "disclosure type"}),
}
REQUIRED = (Column.TICKET, Column.TYPE, Column.IDS, Column.RECEIVED)

TYPE_WORDS: dict[str, RequestType] = {
    **dict.fromkeys(("deletion", "delete", "erasure", "erase"), RequestType.DELETION),
    **dict.fromkeys(("retrieval", "retrieve", "access", "export"), RequestType.RETRIEVAL),
}


class SecretLayout(StrEnum):
    """Where the ids go: a Secret per request, or one Secret for the run, a key per request."""

    PER_REQUEST = "per-request"
    PER_BATCH = "per-batch"


def header_key(text: str) -> str:
    """``Distinct ID(s)`` → ``distinct ids``; ``received_at`` → ``received at``."""
    folded = text.strip().casefold().replace("(s)", "s")
    return " ".join(re.split(r"[\s_\-]+", folded)).strip()


@dataclass(frozen=True)
class RowError:
    """A problem in the file: ``row`` counts as a spreadsheet does (the header is row 1)."""

    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = (
            f"row {self.row}" if self.column is None else f"row {self.row}, column {self.column!r}"
        )
        return f"{where}: {self.message}"


class IntakeError(PluginError):
    """The file cannot be used at all, or (without --skip-invalid) some rows are bad: a
    headline, then one line per problem (the first ``shown``)."""

    def __init__(self, errors: Sequence[RowError], headline: str = "", shown: int = 50) -> None:
        self.errors = list(errors)
        lines = [headline] if headline else []
        indent = "  " if headline else ""
        lines += [f"{indent}{e}" for e in self.errors[:shown]]
        if len(self.errors) > shown:
            lines.append(f"{indent}... and {len(self.errors) - shown} more")
        super().__init__("\n".join(lines))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Options:
    """What the command line says about every request of the file."""

    project: str | None = None
    cluster_project: bool = False
    namespace: str | None = None
    compliance: ComplianceType = ComplianceType.GDPR
    separator: str = ";"
    max_ids: int = DEFAULT_MAX_IDS
    batch: str = "intake"
    layout: SecretLayout = SecretLayout.PER_REQUEST


@dataclass(frozen=True)
class PlannedRequest:
    """One ticket's request, as read from its rows."""

    name: str
    ticket: str
    type: RequestType
    compliance: ComplianceType
    disclosure: DisclosureType | None
    received_at: datetime
    project: str
    ids: tuple[str, ...]
    rows: tuple[int, ...]

    @property
    def deadline(self) -> datetime:
        return statutory_deadline(self.compliance, self.received_at)


@dataclass(frozen=True)
class Plan:
    """What a file asks for: the good tickets' requests and every problem found."""

    requests: tuple[PlannedRequest, ...]
    errors: tuple[RowError, ...]
    rows: int
    tickets: int
    ignored_columns: tuple[str, ...] = ()
    rows_without_ticket: int = 0
    repeated_ids: int = 0
    shared_ids: int = 0

    @property
    def invalid_tickets(self) -> int:
        return self.tickets - len(self.requests)

    @property
    def refused_rows(self) -> int:
        return self.rows - sum(len(r.rows) for r in self.requests)

    @property
    def refusal(self) -> str:
        """``7 rows refused (5 tickets, 1 row without a ticket)``."""
        parts = [plural(self.invalid_tickets, "ticket")]
        if self.rows_without_ticket:
            parts.append(f"{plural(self.rows_without_ticket, 'row')} without a ticket")
        return f"{plural(self.refused_rows, 'row')} refused ({', '.join(parts)})"

    @property
    def id_count(self) -> int:
        return sum(len(r.ids) for r in self.requests)


# --------------------------------------------------------------------------- reading


@dataclass
class _Row:
    number: int
    ticket: str | None = None
    type: RequestType | None = None
    compliance: ComplianceType | None = None
    disclosure: DisclosureType | None = None
    received_at: datetime | None = None
    project: str | None = None
    ids: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _columns(header: Sequence[str]) -> tuple[dict[Column, int], list[str]]:
    """Which cell holds each known column; the header's other columns (ignored)."""
    found: dict[Column, int] = {}
    ignored: list[str] = []
    errors: list[RowError] = []
    for index, text in enumerate(header):
        key = header_key(text)
        column = next((c for c, names in HEADERS.items() if key in names), None)
        if column is None:
            if text.strip():
                ignored.append(text.strip())
            continue
        if column in found:
            first = header[found[column]].strip()
            errors.append(
                RowError(
                    1, text.strip(), f"a second {column.value} column (the first is {first!r})"
                )
            )
            continue
        found[column] = index
    for column in REQUIRED:
        if column not in found:
            accepted = ", ".join(sorted(HEADERS[column]))
            errors.append(RowError(1, None, f"no {column.value} column (accepted: {accepted})"))
    if errors:
        raise IntakeError(errors)
    return found, ignored


def _read_row(
    number: int,
    record: Sequence[str],
    columns: Mapping[Column, int],
    header: Sequence[str],
    options: Options,
    now: datetime,
) -> _Row:
    row = _Row(number)

    def cell(column: Column) -> str:
        index = columns.get(column)
        if index is None or index >= len(record):
            return ""
        return record[index].strip()

    def fail(column: Column | None, message: str) -> None:
        name = None
        if column is not None:
            name = (
                header[columns[column]].strip() if column in columns else f"--{column.name.lower()}"
            )
        row.errors.append(RowError(number, name, message))

    if len(record) > len(header):
        fail(
            None,
            f"{len(record)} cells, the header has {len(header)}: quote a cell that holds a comma",
        )
        # Its ticket is refused whole (never carried out without this row's ids); the ticket
        # is not quoted, as the cell may hold something else.
        row.ticket = cell(Column.TICKET) or None
        return row

    ticket = cell(Column.TICKET)
    if not ticket:
        fail(Column.TICKET, "empty ticket")
    elif "\n" in ticket or "\r" in ticket:
        fail(Column.TICKET, "the ticket holds a line break")
    else:
        row.ticket = ticket

    kind = cell(Column.TYPE)
    row.type = TYPE_WORDS.get(kind.casefold())
    if row.type is None:
        fail(
            Column.TYPE,
            "empty type"
            if not kind
            else "not a request type: Deletion (or delete, erase, erasure) "
            "or Retrieval (or retrieve, access, export)",
        )

    law = cell(Column.COMPLIANCE)
    if not law:
        row.compliance = options.compliance
    else:
        row.compliance = next(
            (c for c in ComplianceType if c.value.casefold() == law.casefold()), None
        )
        if row.compliance is None:
            fail(Column.COMPLIANCE, "not a compliance type: GDPR or CCPA")

    disclosure = cell(Column.DISCLOSURE)
    if disclosure:
        row.disclosure = next(
            (d for d in DisclosureType if d.value.casefold() == disclosure.casefold()), None
        )
        if row.disclosure is None:
            fail(Column.DISCLOSURE, "not a disclosure type: Data, Categories or Sources")

    received = cell(Column.RECEIVED)
    if not received:
        fail(Column.RECEIVED, "empty received date")
    else:
        try:
            row.received_at = parse_time(received).astimezone(UTC)
        except ValueError:
            fail(
                Column.RECEIVED,
                "not a date (2026-11-28, midnight UTC) or a time with a zone "
                "(2026-11-28T09:00:00Z, 2026-11-28T10:00:00+01:00)",
            )
        else:
            if row.received_at > now:
                row.received_at = None
                fail(Column.RECEIVED, "the received date is in the future")

    project = cell(Column.PROJECT) or options.project
    if not project:
        fail(Column.PROJECT, "no project: fill the project column or give --project")
    else:
        row.project = project

    ids = cell(Column.IDS)
    pieces = [p for p in ids.split(options.separator) if p.strip()] if ids else []
    if not pieces:
        fail(Column.IDS, "no distinct ids")
    for n, piece in enumerate(pieces, 1):
        try:
            row.ids.append(check_id(f"id number {n} of the cell", piece))
        except PluginError as err:
            fail(Column.IDS, str(err))
    return row


def _records(text: str) -> Iterable[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    number = 0
    try:
        for number, record in enumerate(reader, 1):
            yield number, record
    except csv.Error as err:
        raise IntakeError([RowError(number + 1, None, f"not valid CSV ({err})")]) from None


_FIELDS = (
    ("type", Column.TYPE),
    ("compliance", Column.COMPLIANCE),
    ("disclosure", Column.DISCLOSURE),
    ("received_at", Column.RECEIVED),
    ("project", Column.PROJECT),
)


def read_plan(text: str, options: Options, now: datetime) -> Plan:
    """Every row read and checked, rows grouped by ticket, one request per good ticket.

    A ticket is refused whole when any of its rows is bad or its rows disagree on type,
    compliance type, disclosure type, received date or project. Raises :class:`IntakeError`
    when the file itself cannot be read (no header, a required column missing, not CSV)."""
    records = iter(_records(text))
    first = next(records, None)
    if first is None or not any(c.strip() for c in first[1]):
        raise IntakeError([RowError(1, None, "no header row: the file is empty")])
    header = first[1]
    columns, ignored = _columns(header)

    def name_of(column: Column) -> str | None:
        return header[columns[column]].strip() if column in columns else None

    rows: list[_Row] = []
    for number, record in records:
        if not any(c.strip() for c in record):
            continue
        rows.append(_read_row(number, record, columns, header, options, now))

    errors: list[RowError] = []
    by_ticket: dict[str, list[_Row]] = {}
    for row in rows:
        errors += row.errors
        if row.ticket is not None:
            by_ticket.setdefault(row.ticket, []).append(row)

    requests: list[PlannedRequest] = []
    names: dict[str, tuple[str, int]] = {}
    repeated = 0
    id_tickets: Counter[str] = Counter()
    for ticket, members in by_ticket.items():
        head = members[0]
        bad = any(m.errors for m in members)
        for member in members[1:]:
            for attr, column in _FIELDS:
                mine, theirs = getattr(member, attr), getattr(head, attr)
                if mine is not None and theirs is not None and mine != theirs:
                    bad = True
                    errors.append(
                        RowError(
                            member.number,
                            name_of(column) or f"--{column.name.lower()}",
                            f"ticket {ticket!r} has another {column.value} on row {head.number}",
                        )
                    )
        if bad:
            continue
        problems: list[RowError] = []
        listed = [i for m in members for i in m.ids]
        ids = tuple(dict.fromkeys(listed))
        # A row without errors has all of these.
        assert head.type is not None and head.compliance is not None  # noqa: PT018
        assert head.received_at is not None and head.project is not None  # noqa: PT018
        if len(ids) > options.max_ids:
            problems.append(
                RowError(
                    head.number,
                    name_of(Column.IDS),
                    f"ticket {ticket!r} lists {len(ids)} distinct ids, more than "
                    f"{options.max_ids} (--max-ids)",
                )
            )
        name = _request_name(ticket, head.type)
        if name is None:
            problems.append(
                RowError(
                    head.number,
                    name_of(Column.TICKET),
                    f"ticket {ticket!r} makes no valid request name: it needs a letter or digit "
                    f"and at most {_MAX_NAME - 7} characters",
                )
            )
        elif name in names:
            other, at = names[name]
            problems.append(
                RowError(
                    head.number,
                    name_of(Column.TICKET),
                    f"ticket {ticket!r} makes the request name {name!r}, as ticket {other!r} "
                    f"on row {at} does",
                )
            )
        if head.disclosure and (
            head.type is not RequestType.RETRIEVAL or head.compliance is not ComplianceType.CCPA
        ):
            problems.append(
                RowError(
                    head.number,
                    name_of(Column.DISCLOSURE),
                    "a disclosure type is only for CCPA retrievals",
                )
            )
        if not problems:
            try:
                text = secret_text(ids)
            except PluginError as err:
                problems.append(RowError(head.number, name_of(Column.IDS), str(err)))
            else:
                if len(text.encode()) > SECRET_MAX_BYTES:
                    problems.append(
                        RowError(
                            head.number,
                            name_of(Column.IDS),
                            f"ticket {ticket!r}'s ids take more than a Secret holds "
                            f"({SECRET_MAX_BYTES} bytes)",
                        )
                    )
        if name is not None and name not in names:
            names[name] = (ticket, head.number)
        if problems:
            errors += problems
            continue
        assert name is not None
        planned = PlannedRequest(
            name=name,
            ticket=ticket,
            type=head.type,
            compliance=head.compliance,
            disclosure=head.disclosure,
            received_at=head.received_at,
            project=head.project,
            ids=ids,
            rows=tuple(m.number for m in members),
        )
        try:
            request_spec(planned, options)
        except PluginError as err:
            errors.append(RowError(head.number, None, f"ticket {ticket!r}: {err}"))
            continue
        repeated += len(listed) - len(ids)
        id_tickets.update(ids)
        requests.append(planned)
    errors.sort(key=lambda e: e.row)
    return Plan(
        requests=tuple(requests),
        errors=tuple(errors),
        rows=len(rows),
        tickets=len(by_ticket),
        ignored_columns=tuple(ignored),
        rows_without_ticket=sum(1 for r in rows if r.ticket is None),
        repeated_ids=repeated,
        shared_ids=sum(1 for n in id_tickets.values() if n > 1),
    )


def _request_name(ticket: str, kind: RequestType) -> str | None:
    """``PRIV-1234`` and Deletion → ``priv-1234-erase``."""
    slug = re.sub(r"[^a-z0-9]+", "-", ticket.casefold()).strip("-")
    name = f"{slug}-{NAME_SUFFIX[kind]}"
    if not slug or len(name) > _MAX_NAME or not re.fullmatch(DNS_SUBDOMAIN, name):
        return None
    return name


def batch_name(text: str) -> str:
    """A file name (``requests 2026-11.csv``) as a batch name (``requests-2026-11``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")[:63].strip("-")
    return slug or "intake"


# --------------------------------------------------------------------------- the request


def secret_name(request: PlannedRequest, options: Options) -> str:
    if options.layout is SecretLayout.PER_BATCH:
        return f"{options.batch}-ids"
    return f"{request.name}-ids"


def secret_key(request: PlannedRequest, options: Options) -> str:
    return request.name if options.layout is SecretLayout.PER_BATCH else IDS_KEY


def request_spec(request: PlannedRequest, options: Options) -> dict[str, Any]:
    """The request's spec as the API server stores it, checked by the API's own model: ids
    only by reference (``distinctIdsFrom``)."""
    spec: dict[str, Any] = {
        "projectRef": {
            "kind": "ClusterMixpanelProject" if options.cluster_project else "MixpanelProject",
            "name": request.project,
        },
        "type": request.type.value,
        "complianceType": request.compliance.value,
        "distinctIdsFrom": {
            "secretKeyRef": {
                "name": secret_name(request, options),
                "key": secret_key(request, options),
            }
        },
        "receivedAt": request.received_at,
    }
    if request.disclosure:
        spec["disclosureType"] = request.disclosure.value
    try:
        wire = DataSubjectRequestSpec.model_validate(spec).to_wire()
    except ValidationError as err:
        raise PluginError(describe_invalid(err)) from None
    wire.pop("dryRun", None)
    return wire


def notes(plan: Plan) -> list[str]:
    """Remarks for stderr (counts only)."""
    out = []
    if plan.ignored_columns:
        out.append(f"columns not read: {', '.join(plan.ignored_columns)}")
    if plan.repeated_ids:
        out.append(f"{plan.repeated_ids} ids listed twice for the same ticket were left out")
    if plan.shared_ids:
        out.append(f"{plan.shared_ids} distinct ids appear in more than one ticket")
    return out
