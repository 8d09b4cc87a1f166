"""``kubectl dsr``'s pure parts: ids, manifests, durations, time, summary; and its command
line without a cluster (printing manifests, usage errors, completion)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from mixpanel_dsr.mixpanel.types import ComplianceType
from mixpanel_dsr.planning import parse_id_list
from mixpanel_dsr.plugin import core, intake, intake_output
from mixpanel_dsr.plugin.commands import api_message, main
from mixpanel_dsr.plugin.core import NewRequest, PluginError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECRET_LOOKING_ID = "alice@example.com"


def request(**kw: Any) -> NewRequest:
    return NewRequest(**{"name": "erase", "project": "web", "type": "Deletion", **kw})


def secret_ids(secret: dict[str, Any]) -> list[str]:
    return parse_id_list(base64.b64decode(secret["data"]["ids"]).decode())


# --------------------------------------------------------------------------- manifests


def test_a_short_list_stays_inline_in_one_request() -> None:
    received = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    [dsr] = core.build_manifests(
        request(namespace="privacy", received_at=received, requested_by="dpo"), ["a", "b"]
    )
    assert dsr == {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "erase", "namespace": "privacy"},
        "spec": {
            "projectRef": {"kind": "MixpanelProject", "name": "web"},
            "type": "Deletion",
            "complianceType": "GDPR",
            "distinctIds": ["a", "b"],
            "receivedAt": "2026-11-28T10:00:00Z",
            "requestedBy": "dpo",
        },
    }


def test_without_a_namespace_the_manifest_has_none_like_kubectl_create() -> None:
    [dsr] = core.build_manifests(request(cluster_project=True), ["a"])
    assert dsr["metadata"] == {"name": "erase"}
    assert dsr["spec"]["projectRef"] == {"kind": "ClusterMixpanelProject", "name": "web"}


@pytest.mark.parametrize(
    ("ids", "in_secret"),
    [
        ([f"u{n}" for n in range(1000)], False),  # exactly 1000 ids: inline
        ([f"u{n}" for n in range(1001)], True),  # one more: a Secret
        (["x" * 250 + f"{n:05d}" for n in range(392)], False),  # 99,960 bytes
        (["x" * 250 + f"{n:05d}" for n in range(393)], True),  # 100,215 bytes
        (["é" * 127 + f"{n}" for n in range(394)], True),  # counted in UTF-8 bytes, not chars
    ],
)
def test_long_lists_go_into_an_ids_secret(ids: list[str], in_secret: bool) -> None:
    assert core.needs_secret(ids) is in_secret
    manifests = core.build_manifests(request(namespace="privacy"), ids)
    if not in_secret:
        [dsr] = manifests
        assert dsr["spec"]["distinctIds"] == ids
        return
    secret, dsr = manifests
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "erase-ids"
    assert secret["metadata"]["namespace"] == "privacy"
    assert dsr["spec"]["distinctIdsFrom"] == {"secretKeyRef": {"name": "erase-ids", "key": "ids"}}
    assert "distinctIds" not in dsr["spec"]
    text = base64.b64decode(secret["data"]["ids"]).decode()
    assert text.splitlines() == ids  # one id per line
    assert secret_ids(secret) == ids  # and the operator reads back exactly these
    document = core.as_document(manifests)
    assert document["kind"] == "List"
    assert [i["kind"] for i in document["items"]] == ["Secret", "DataSubjectRequest"]


def test_a_first_id_that_looks_like_json_is_written_so_it_reads_back_the_same() -> None:
    ids = ["[not-json", *(f"u{n}" for n in range(1500))]
    secret, _ = core.build_manifests(request(), ids)
    assert secret_ids(secret) == ids


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "Bad_Name"}, "not a valid name"),
        ({"name": "x" * 250}, "not a valid name"),
        ({"disclosure": "Data"}, "only for CCPA retrievals"),
        ({"type": "Retrieval", "disclosure": "Data"}, "only for CCPA retrievals"),
        ({"project": "Web Project"}, "spec.projectRef.name"),
        ({"requested_by": "x" * 300}, "spec.requestedBy"),
    ],
)
def test_bad_requests_are_refused_before_any_call(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        core.build_manifests(request(**kw), ["a"])


def test_a_ccpa_retrieval_may_name_what_it_discloses() -> None:
    [dsr] = core.build_manifests(
        request(type="Retrieval", compliance="CCPA", disclosure="Categories"), ["a"]
    )
    assert dsr["spec"]["disclosureType"] == "Categories"


# --------------------------------------------------------------------------- ids


def test_ids_are_stripped_and_deduplicated_in_first_seen_order() -> None:
    raw = core.ids_from_args([" b ", "a", "b"])
    assert core.distinct_ids(raw) == ["b", "a"]


def test_no_ids_at_all_is_an_error() -> None:
    with pytest.raises(PluginError, match="no distinct ids"):
        core.distinct_ids(core.ids_from_text("\n\n"))


@pytest.mark.parametrize(
    ("reader", "message"),
    [
        (lambda: core.ids_from_args(["ok", "  "]), "--id number 2: blank distinct id"),
        (
            lambda: core.ids_from_args(["ok", SECRET_LOOKING_ID * 20]),
            "--id number 2: distinct id longer than 255",
        ),
        (
            lambda: core.ids_from_text(f"a\n\nb\n{SECRET_LOOKING_ID * 20}\n"),
            "line 4: distinct id longer than 255",
        ),
        (lambda: core.ids_from_text('["a", " "]'), "array index 1: blank"),
        (lambda: core.ids_from_text('["a", 3]'), "only strings"),
        (lambda: core.ids_from_text('["a",\n'), "line 2: not a valid JSON array"),
        (lambda: core.ids_from_text(f'["a", "{SECRET_LOOKING_ID}\\nx"]'), "line break"),
    ],
)
def test_bad_ids_are_named_by_place_never_by_value(
    reader: Callable[[], list[str]], message: str
) -> None:
    with pytest.raises(PluginError) as caught:
        reader()
    assert message in str(caught.value)
    assert SECRET_LOOKING_ID not in str(caught.value)


def test_an_ids_file_skips_blank_lines_and_reads_json_arrays() -> None:
    assert core.ids_from_text("a\n\n  b  \r\nc") == ["a", "b", "c"]
    assert core.ids_from_text('["a", "b"]') == ["a", "b"]


CSV = (
    "\ufeffTicket,Distinct ID,Email\n"
    "T-1,u-1,a@example.com\n"
    '"T-2","u,2",b@example.com\n'
    ",,\n"
    "T-3,u-1,c@example.com\n"
)


def test_csv_reads_the_named_column() -> None:
    assert core.ids_from_csv(CSV, "Distinct ID") == ["u-1", "u,2", "u-1"]
    assert core.ids_from_csv(CSV, "distinct id") == ["u-1", "u,2", "u-1"]  # any letter case
    assert core.ids_from_csv(CSV, "Email")[0] == "a@example.com"


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (CSV, "user", "has no column 'user' (it has: Ticket, Distinct ID, Email)"),
        ("", "id", "the CSV file is empty"),
        (f"id,email\nu-1,x\n,{SECRET_LOOKING_ID}\n", "id", "row 3: blank distinct id"),
        (f"email,id\n{SECRET_LOOKING_ID}\n", "id", "row 2: no value in column 'id'"),
        (f"id\nu-1\n\n{SECRET_LOOKING_ID * 20}\n", "id", "row 4: distinct id longer than 255"),
    ],
)
def test_csv_errors_name_the_row(text: str, column: str, message: str) -> None:
    with pytest.raises(PluginError) as caught:
        core.ids_from_csv(text, column)
    assert message in str(caught.value)
    assert SECRET_LOOKING_ID not in str(caught.value)


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90s", 90),
        ("30m", 1800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2d", 172800),
        ("1d12h", 129600),
        ("500ms", 0.5),
        ("1m30s", 90),
    ],
)
def test_durations_are_go_style_with_days(text: str, seconds: float) -> None:
    assert core.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "h", "1h 30m", "-5m", "m5"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        core.parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (timedelta(days=29, hours=23), "in 29d"),
        (timedelta(days=-3, hours=-2), "3d ago"),
        (timedelta(hours=30), "in 30h"),
        (timedelta(hours=50), "in 2d"),
        (timedelta(minutes=12, seconds=59), "in 12m"),
        (timedelta(seconds=-45), "45s ago"),
        (timedelta(milliseconds=300), "now"),
    ],
)
def test_how_far_away(delta: timedelta, shown: str) -> None:
    assert core.how_far(NOW + delta, NOW) == shown


def test_received_at_needs_a_zone_or_is_a_date() -> None:
    assert core.parse_time("2026-11-28T09:00:00Z") == datetime(2026, 11, 28, 9, tzinfo=UTC)
    assert core.parse_time("2026-11-28") == datetime(2026, 11, 28, tzinfo=UTC)
    with pytest.raises(ValueError, match="no time zone"):
        core.parse_time("2026-11-28T09:00:00")


# --------------------------------------------------------------------------- summary


def dsr(
    name: str,
    phase: str | None,
    *,
    project: str = "web",
    risk: str | None = None,
    deadline: str = "2026-12-28T09:00:00Z",
    done: int = 0,
    total: int = 1,
    cluster: bool = False,
) -> dict[str, Any]:
    conditions = []
    if risk:
        conditions.append(
            {"type": "DeadlineAtRisk", "status": "True", "reason": risk, "message": ""}
        )
    else:
        conditions.append(
            {"type": "DeadlineAtRisk", "status": "False", "reason": "OnTrack", "message": ""}
        )
    kind = "ClusterMixpanelProject" if cluster else "MixpanelProject"
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "privacy", "uid": f"uid-{name}"},
        "spec": {"projectRef": {"kind": kind, "name": project}, "type": "Deletion"},
        "status": {
            "phase": phase,
            "idsDone": done,
            "idsTotal": total,
            "deadline": deadline,
            "conditions": conditions,
        },
    }
    return obj


def test_requests_at_risk_come_first_passed_before_near() -> None:
    objs = [
        dsr("calm-late", "Queued", deadline="2027-01-05T00:00:00Z"),
        dsr("near", "InProgress", risk="DeadlineNear", deadline="2026-12-03T00:00:00Z"),
        dsr("calm-early", "Submitted", deadline="2026-12-20T00:00:00Z"),
        dsr("passed", "Queued", risk="DeadlinePassed", deadline="2026-11-20T00:00:00Z"),
        dsr("nearer", "Queued", risk="DeadlineNear", deadline="2026-12-01T00:00:00Z"),
    ]
    ordered = core.order_requests(core.request_row(o) for o in objs)
    assert [r.name for r in ordered] == ["passed", "nearer", "near", "calm-early", "calm-late"]


def test_the_summary_counts_per_project_and_phase_with_risky_projects_first() -> None:
    objs = [
        dsr("a1", "Succeeded", project="app", done=2, total=2),
        dsr("a2", "Succeeded", project="app", done=3, total=3),
        dsr("a3", "Queued", project="app", total=4),
        dsr("w1", "InProgress", project="web", risk="DeadlineNear", done=1, total=5),
        dsr("w2", "Pending", project="web"),
        dsr("c1", "Failed", project="shared", cluster=True),
    ]
    summary = core.summarize(core.request_row(o) for o in objs)
    assert [(s.project, s.phase, s.requests, s.done, s.total, s.at_risk) for s in summary] == [
        ("privacy/web", "Pending", 1, 0, 1, 0),
        ("privacy/web", "InProgress", 1, 1, 5, 1),
        ("privacy/app", "Queued", 1, 0, 4, 0),
        ("privacy/app", "Succeeded", 2, 5, 5, 0),
        ("shared (cluster)", "Failed", 1, 0, 1, 0),
    ]


def test_progress_line() -> None:
    rows = [
        core.request_row(dsr(f"r{n}", phase))
        for n, phase in enumerate(["Succeeded", "Failed", "Queued", "Cancelled", "Succeeded"])
    ]
    assert core.progress_line(rows) == "4/5 finished, 1 failed, 1 cancelled"
    assert core.progress_line(rows[:3]) == "2/3 finished, 1 failed"
    assert core.progress_line(rows[:1], gone=1) == "2/2 finished, 0 failed, 1 deleted"


def test_a_request_in_detail_joins_its_tasks() -> None:
    obj = dsr("erase", "InProgress", done=2000, total=2500)
    obj["status"]["tasks"] = [
        {"name": "web-1", "trackingId": "111", "start": 0, "end": 2000, "phase": "Succeeded"},
        {"name": "web-2", "start": 2000, "end": 2500, "phase": "Creating"},
    ]
    tasks = {
        "web-1": {"status": {"mixpanelState": "SUCCESS", "checkedAt": "2026-11-30T11:00:00Z"}},
        "web-2": None,
    }
    view = core.detail(obj, tasks, "privacy", NOW)
    assert view["deadlineIn"] == "in 27d"
    assert [(t["name"], t["mixpanelState"], t["checkedAt"]) for t in view["tasks"]] == [
        ("web-1", "SUCCESS", "2026-11-30T11:00:00Z"),
        ("web-2", None, None),
    ]
    text = core.render_detail(view)
    assert "Done:        2000/2500" in text
    assert "2026-12-28T09:00:00Z (in 27d)" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("  web-")]
    assert rows == [
        ["web-1", "111", "0-2000", "Succeeded", "SUCCESS", "2026-11-30T11:00:00Z"],
        ["web-2", "<none>", "2000-2500", "Creating", "-", "-"],
    ]


def test_a_request_the_operator_has_not_seen_gets_its_statutory_deadline() -> None:
    obj = {
        "metadata": {"name": "new", "namespace": "p", "creationTimestamp": "2026-11-30T10:00:00Z"},
        "spec": {"projectRef": {"name": "web"}, "type": "Deletion", "complianceType": "CCPA"},
    }
    assert core.request_deadline(obj) == datetime(2027, 1, 14, 10, tzinfo=UTC)


# --------------------------------------------------------------------------- the command line


def test_new_prints_the_manifest_without_touching_a_cluster(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"u{n}" for n in range(1500)) + "\nu0\n")
    argv = ["new", "big", "-n", "privacy", "--project", "web", "--type", "Deletion"]
    assert main([*argv, "--ids-file", str(ids)]) == 0
    out, err = capsys.readouterr()
    document = yaml.safe_load(out)
    assert document["kind"] == "List"
    secret, dsr_ = document["items"]
    assert secret_ids(secret) == [f"u{n}" for n in range(1500)]
    assert dsr_["metadata"] == {"name": "big", "namespace": "privacy"}
    assert "1 repeated ids left out: 1500 distinct ids" in err
    assert main([*argv, "--id", "a", "b", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["distinctIds"] == ["a", "b"]


def test_bad_ids_exit_1_with_an_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["new", "x", "--project", "web", "--type", "Deletion", "--id", "a", " "]
    assert main(argv) == 1
    assert capsys.readouterr().err == "error: --id number 2: blank distinct id\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["new", "x", "--project", "web", "--type", "Erase", "--id", "a"],
        ["new", "x", "--project", "web", "--type", "Deletion"],
        ["new", "x", "--project", "web", "--type", "Deletion", "--id", "a", "--ids-file", "f"],
        ["new", "x", "--project", "web", "--type", "Deletion", "--csv", "f.csv"],
        ["wait", "--timeout", "soon"],
        ["status", "x", "-A"],
        ["completion", "fish"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_api_errors_read_as_kubectl_would_say_them() -> None:
    def refused(status: int, message: str) -> ApiException:
        body = json.dumps({"kind": "Status", "message": message})
        return ApiException(status=status, reason="x", body=body)

    assert (
        api_message(refused(404, 'datasubjectrequests.mixpaneldsr.io "x" not found'))
        == 'datasubjectrequests.mixpaneldsr.io "x" not found'
    )
    assert api_message(refused(404, "the server could not find the requested resource")) == (
        "not found: the server could not find the requested resource"
    )
    assert api_message(refused(403, 'User "bob" cannot get')).startswith("forbidden: User")
    assert api_message(ApiException(status=0, reason="SSLError")).startswith("cannot reach")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_lists_commands_and_flags(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("new", "status", "wait", "retry", "cancel", "--ids-file", "--all-namespaces"):
        assert word in script
    assert '--type) COMPREPLY=($(compgen -W "Deletion Retrieval"' in script
    binary = shutil.which(shell)
    if binary:
        subprocess.run([binary, "-n"], input=script, text=True, check=True)


def test_the_plugin_loads_neither_the_engine_nor_kopf() -> None:
    code = (
        "import sys, mixpanel_dsr.plugin.__main__\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'kopf'"
        " or m.startswith(('mixpanel_dsr.engine', 'mixpanel_dsr.handlers', 'mixpanel_dsr.kube'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ids_files_are_read_as_the_operator_reads_an_ids_secret() -> None:
    """Lines end at \\n only (U+2028 and U+0085 are part of an id), a BOM is dropped, and
    what kubectl dsr writes into a Secret reads back the same through parse_id_list."""
    from mixpanel_dsr.planning import parse_id_list
    from mixpanel_dsr.plugin.core import ids_from_text

    text = "\ufeffkeep\u2028this\r\nnel\x85end\n\nlast\n"
    ids = ids_from_text(text)
    assert ids == ["keep\u2028this", "nel\x85end", "last"]
    assert parse_id_list("\n".join(ids)) == ids
    assert parse_id_list(text) == ids


# --------------------------------------------------------------------------- intake

INTAKE_NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HEADER = "ticket,type,compliance type,distinct ids,received date\n"


def plan_of(text: str, **kw: Any) -> intake.Plan:
    return intake.read_plan(text, intake.Options(**{"project": "web", **kw}), INTAKE_NOW)


def errors_of(text: str, **kw: Any) -> list[str]:
    return [str(e) for e in plan_of(text, **kw).errors]


def header_error(text: str) -> str:
    with pytest.raises(intake.IntakeError) as caught:
        plan_of(text)
    return str(caught.value)


@pytest.mark.parametrize(
    "header",
    [
        "Ticket,Type,Compliance Type,Distinct IDs,Received Date",
        "ticket_id,request_type,compliance,distinct_id,received_at",
        "Issue key,DSR type,Law,Distinct ID(s),Date received",
        "Case ID,Request-Type,Regulation,distinctIds,Received On",
    ],
)
def test_intake_accepts_the_usual_header_names(header: str) -> None:
    plan = plan_of(f"{header}\nPRIV-1,erase,CCPA,u1,2026-11-01\n")
    [request] = plan.requests
    assert (request.ticket, request.type, request.compliance, request.ids) == (
        "PRIV-1", "Deletion", "CCPA", ("u1",),
    )  # fmt: skip


def test_intake_groups_rows_by_ticket_and_splits_cells_at_the_separator() -> None:
    text = HEADER + (
        "PRIV-1,Deletion,GDPR,a1; a2 ;,2026-11-01\n"
        "PRIV-2,Retrieval,CCPA,b1,2026-11-20T10:00:00+01:00\n"
        "\n"
        ",,,,\n"
        "PRIV-1,delete,gdpr,a3;a1,2026-11-01T00:00:00Z\n"  # same ticket, same meaning
        "PRIV-3,erasure,,a2,2026-10-01\n"  # blank compliance: --compliance
    )
    plan = plan_of(text, compliance=ComplianceType.CCPA)
    assert plan.errors == ()
    assert (plan.rows, plan.tickets, plan.repeated_ids, plan.shared_ids) == (4, 3, 1, 1)
    erase, access, other = plan.requests
    assert (erase.name, erase.ids, erase.rows) == ("priv-1-erase", ("a1", "a2", "a3"), (2, 6))
    assert (access.name, access.type, access.compliance) == ("priv-2-access", "Retrieval", "CCPA")
    assert access.received_at == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # kept in UTC
    assert (other.compliance, other.deadline) == ("CCPA", datetime(2026, 11, 15, tzinfo=UTC))
    assert plan_of(HEADER + "T-1,erase,,a|b,2026-11-01\n", separator="|").requests[0].ids == (
        "a", "b",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("PRIV-1,wipe,GDPR,u,2026-11-01", ["row 2, column 'type': not a request type"]),
        ("PRIV-1,,GDPR,u,2026-11-01", ["row 2, column 'type': empty type"]),
        ("PRIV-1,erase,HIPAA,u,2026-11-01", ["row 2, column 'compliance type': not a compliance"]),
        ("PRIV-1,erase,GDPR,u,28/11/2026", ["row 2, column 'received date': not a date"]),
        ("PRIV-1,erase,GDPR,u,2026-11-01T10:00:00", ["row 2, column 'received date': not a date"]),
        ("PRIV-1,erase,GDPR,u,", ["row 2, column 'received date': empty received date"]),
        ("PRIV-1,erase,GDPR,u,2026-12-01", ["row 2, column 'received date': the received date is"]),
        ("PRIV-1,erase,GDPR,,2026-11-01", ["row 2, column 'distinct ids': no distinct ids"]),
        ("PRIV-1,erase,GDPR, ; ,2026-11-01", ["row 2, column 'distinct ids': no distinct ids"]),
        (f"PRIV-1,erase,GDPR,{'x' * 256},2026-11-01",
         ["row 2, column 'distinct ids': id number 1 of the cell: distinct id longer than 255"]),
        ('PRIV-1,erase,GDPR,"a\nb",2026-11-01',
         ["row 2, column 'distinct ids': id number 1 of the cell: distinct id holds a line br"]),
        (",erase,GDPR,u,2026-11-01", ["row 2, column 'ticket': empty ticket"]),
        ("PRIV-1,erase,GDPR,u,v,2026-11-01", ["row 2: 6 cells, the header has 5: quote a cell"]),
        ("PRIV-1,erase,GDPR,u,2026-11-01\nPRIV-1,access,GDPR,v,2026-11-02",
         ["row 3, column 'type': ticket 'PRIV-1' has another type on row 2",
          "row 3, column 'received date': ticket 'PRIV-1' has another received date on row 2"]),
        ("PRIV-1,erase,GDPR,u,2026-11-01\nPRIV-1,erase,CCPA,v,2026-11-01",
         ["row 3, column 'compliance type': ticket 'PRIV-1' has another compliance type on row 2"]),
        ("PRIV 1,erase,GDPR,u,2026-11-01\npriv-1,erase,GDPR,v,2026-11-01",
         ["row 3, column 'ticket': ticket 'priv-1' makes the request name 'priv-1-erase', "
          "as ticket 'PRIV 1' on row 2 does"]),
        ("---,erase,GDPR,u,2026-11-01",
         ["row 2, column 'ticket': ticket '---' makes no valid request name"]),
        ("PRIV-1,erase,GDPR,a;b;c,2026-11-01",
         ["row 2, column 'distinct ids': ticket 'PRIV-1' lists 3 distinct ids, more than 2 "
          "(--max-ids)"]),
    ],
)  # fmt: skip
def test_intake_names_the_row_and_column_of_every_bad_cell(rows: str, expected: list[str]) -> None:
    errors = errors_of(HEADER + rows + "\n", max_ids=2)
    assert len(errors) == len(expected), errors
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), error


def test_intake_refuses_a_whole_ticket_when_one_of_its_rows_is_bad() -> None:
    text = HEADER + (
        "PRIV-1,erase,GDPR,a1,2026-11-01\n"
        "PRIV-2,erase,GDPR,b1,2026-11-01\n"
        "PRIV-1,erase,GDPR,a2,v,2026-11-01\n"  # shifted: never carry out PRIV-1 without it
        ",erase,GDPR,c1,2026-11-01\n"
    )
    plan = plan_of(text)
    assert [r.name for r in plan.requests] == ["priv-2-erase"]
    assert (plan.invalid_tickets, plan.rows_without_ticket, plan.refused_rows) == (1, 1, 3)
    assert plan.refusal == "3 rows refused (1 ticket, 1 row without a ticket)"


def test_intake_checks_project_and_disclosure_per_ticket() -> None:
    header = "ticket,type,compliance,distinct ids,received,project,disclosure type\n"
    text = header + (
        "P-1,access,CCPA,u1,2026-11-01,app-eu,Categories\n"
        "P-2,erase,GDPR,u2,2026-11-01,,Data\n"
        "P-3,erase,GDPR,u3,2026-11-01,Not_A_Name,\n"
        "P-4,access,CCPA,u4,2026-11-01,,Everything\n"
    )
    plan = plan_of(text)
    [good] = plan.requests
    assert (good.project, good.disclosure) == ("app-eu", "Categories")
    errors = [str(e) for e in plan.errors]
    assert (
        errors[0]
        == "row 3, column 'disclosure type': a disclosure type is only for CCPA retrievals"
    )
    assert errors[1].startswith("row 4: ticket 'P-3': spec.projectRef.name:")
    assert errors[2].startswith("row 5, column 'disclosure type': not a disclosure type")
    assert len(errors) == 3
    assert errors_of(HEADER + "P-9,erase,GDPR,u,2026-11-01\n", project=None) == [
        "row 2, column '--project': no project: fill the project column or give --project"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "row 1: no header row: the file is empty"),
        ("ticket,type,received date\n", "row 1: no distinct ids column (accepted: distinct id, "),
        ("ticket,type,ids,distinct id,received\n",
         "row 1, column 'distinct id': a second distinct ids column (the first is 'ids')"),
        ("ticket,type,distinct id,Distinct IDs,received\n",
         "row 1, column 'Distinct IDs': a second distinct ids column (the first is 'distinct id')"),
    ],
)  # fmt: skip
def test_intake_refuses_a_file_without_the_columns_it_needs(text: str, message: str) -> None:
    assert message in header_error(text)


def test_intake_never_quotes_an_id() -> None:
    """Every error and the dry-run summary, for a file whose cells are all shaped like ids."""
    pii = [f"alice-{n}@example.com" for n in range(12)]
    text = HEADER + "\n".join(
        [
            f"PRIV-1,erase,GDPR,{pii[0]};{pii[1]},2026-11-01",
            f"PRIV-2,{pii[2]},GDPR,x,2026-11-01",
            f"PRIV-3,erase,{pii[3]},y,2026-11-01",
            f"PRIV-4,erase,GDPR,z,{pii[4]}",
            f"PRIV-5,erase,GDPR,{pii[5]},{pii[6]},2026-11-01",
            f"PRIV-6,erase,GDPR,{pii[7]} ;{'q' * 300},2026-11-01",
            f"PRIV-1,erase,GDPR,{pii[8]},2026-11-02",
            f"PRIV-7,erase,GDPR,{pii[9]},2026-11-01",
        ]
    )
    plan = plan_of(text, max_ids=5)
    options = intake.Options(project="web", namespace="privacy")
    said = "\n".join(str(e) for e in plan.errors) + intake_output.summary(
        plan, intake_output.build_manifests(plan, options), options, INTAKE_NOW
    )
    assert len(plan.errors) == 6
    assert "PRIV-7" in said
    for value in pii:
        assert value not in said


def test_intake_manifests_keep_ids_in_secrets_only() -> None:
    ids = [f"user-{n}@example.com" for n in range(30)]
    rows = [f"PRIV-{n // 3},erase,GDPR,{i},2026-11-01" for n, i in enumerate(ids)]
    rows.append("Ticket with spaces: ÉTÉ 2026,access,CCPA,solo,2026-11-10")
    ids.append("solo")
    plan = plan_of(HEADER + "\n".join(rows) + "\n")
    assert plan.errors == ()
    for layout in intake.SecretLayout:
        options = intake.Options(project="web", namespace="privacy", batch="nov", layout=layout)
        made = intake_output.build_manifests(plan, options)
        requests = json.dumps(made.requests, default=str)
        assert not [i for i in ids if i in requests]
        read_back: dict[str, list[str]] = {}
        for dsr_ in made.requests:
            ref = dsr_["spec"]["distinctIdsFrom"]["secretKeyRef"]
            [secret] = [s for s in made.secrets if s["metadata"]["name"] == ref["name"]]
            read_back[dsr_["metadata"]["name"]] = parse_id_list(
                base64.b64decode(secret["data"][ref["key"]]).decode()
            )
            assert secret["metadata"]["namespace"] == "privacy"
            assert secret["metadata"]["labels"]["mixpaneldsr.io/intake"] == "nov"
        assert read_back == {r.name: list(r.ids) for r in plan.requests}
        assert len(made.secrets) == (1 if layout is intake.SecretLayout.PER_BATCH else 11)
    first, *_, odd = made.requests
    assert first["metadata"] == {
        "name": "priv-0-erase",
        "namespace": "privacy",
        "labels": {"mixpaneldsr.io/ticket": "PRIV-0", "mixpaneldsr.io/intake": "nov"},
        "annotations": {"mixpaneldsr.io/ticket": "PRIV-0"},
    }
    assert first["spec"] == {
        "projectRef": {"kind": "MixpanelProject", "name": "web"},
        "type": "Deletion",
        "complianceType": "GDPR",
        "distinctIdsFrom": {"secretKeyRef": {"name": "nov-ids", "key": "priv-0-erase"}},
        "receivedAt": "2026-11-01T00:00:00Z",
    }
    # Not a valid label value: the ticket is in the annotation only.
    assert odd["metadata"]["name"] == "ticket-with-spaces-t-2026-access"
    assert "mixpaneldsr.io/ticket" not in odd["metadata"]["labels"]
    assert odd["metadata"]["annotations"] == {
        "mixpaneldsr.io/ticket": "Ticket with spaces: ÉTÉ 2026"
    }


def test_one_secret_for_a_batch_must_fit_in_a_secret() -> None:
    rows = [f"T-{n},erase,GDPR,{n:0>250},2026-11-01" for n in range(4100)]
    plan = plan_of(HEADER + "\n".join(rows))
    assert len(plan.requests) == 4100
    batch = intake.Options(project="web", layout=intake.SecretLayout.PER_BATCH)
    with pytest.raises(PluginError, match="use --secrets per-request"):
        intake_output.build_manifests(plan, batch)
    assert len(intake_output.build_manifests(plan, intake.Options(project="web")).secrets) == 4100


def test_intake_files_keep_plain_secrets_out_of_git() -> None:
    plan = plan_of(HEADER + "PRIV-1,erase,GDPR,u1,2026-11-01\nPRIV-2,erase,GDPR,u2,2026-11-01\n")
    made = intake_output.build_manifests(plan, intake.Options(project="web", namespace="privacy"))
    for fmt, where in [
        (intake_output.SecretFormat.PLAIN, "secrets"),
        (intake_output.SecretFormat.SEALED_SECRETS, "unsealed"),
        (intake_output.SecretFormat.SOPS, "unsealed"),
    ]:
        written = intake_output.files(made, "yaml", fmt)
        assert sorted(written) == [
            "requests/priv-1-erase.yaml",
            "requests/priv-2-erase.yaml",
            f"{where}/.gitignore",
            f"{where}/priv-1-erase-ids.yaml",
            f"{where}/priv-2-erase-ids.yaml",
        ]
        assert written[f"{where}/.gitignore"].splitlines()[-1] == "*"
        for path, text in written.items():
            if path.startswith("requests/"):
                assert not re.search("u1|u2", text)
    sealed = intake_output.next_steps(
        "out dir", "yaml", intake_output.SecretFormat.SEALED_SECRETS, 2
    )
    assert (
        "(set -e; mkdir -p 'out dir'/secrets; for f in 'out dir'/unsealed/*.yaml; do kubeseal "
        '--format yaml < "$f" > \'out dir\'/secrets/"$(basename "$f" .yaml)".yaml; done; '
        "rm -r 'out dir'/unsealed)"
    ) in sealed
    sops = intake_output.next_steps("out", "yaml", intake_output.SecretFormat.SOPS, 2, "age1abc")
    rule = yaml.safe_load(intake_output.sops_rule("age1abc"))["creation_rules"][0]
    assert rule["encrypted_regex"] == "^(data|stringData)$"
    assert rule["age"] == "age1abc"
    assert re.search(rule["path_regex"], "out/unsealed/priv-1-erase-ids.yaml")
    assert re.search(rule["path_regex"], "out/secrets/priv-1-erase-ids.yaml")
    assert not re.search(rule["path_regex"], "out/requests/priv-1-erase.yaml")
    assert 'sops --encrypt "$f" > out/secrets/"$(basename "$f")"' in sops


def test_intake_command_dry_run_and_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    csv_file = tmp_path / "Nov 2026 export.csv"
    csv_file.write_text(
        "Ticket,Type,Distinct IDs,Received,Email\n"
        "PRIV-1,erase,secret-a;secret-b,2026-11-01,someone@example.com\n"
        "PRIV-2,access,secret-c,2026-11-02,\n"
    )
    assert main(["intake", str(csv_file), "--project", "web", "--dry-run", "-n", "p"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [
        "2 rows, 2 tickets: 2 requests with 3 distinct ids",
        "would create in namespace p: 2 secrets, 2 datasubjectrequests (Deletion GDPR 1, "
        "Retrieval GDPR 1)",
    ]
    assert "priv-1-erase-ids/ids" in out
    assert err == "columns not read: Email\n"
    assert "secret-" not in out + err

    assert (
        main(["intake", str(csv_file), "--project", "web", "-o", "yaml", "--secrets", "per-batch"])
        == 0
    )
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Secret", "DataSubjectRequest", "DataSubjectRequest"]
    assert docs[0]["metadata"]["name"] == "nov-2026-export-ids"
    assert main(["intake", str(csv_file), "--project", "web", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List"
    assert [d["kind"] for d in listed["items"]] == ["Secret"] * 2 + ["DataSubjectRequest"] * 2

    out_dir = tmp_path / "git"
    argv = ["intake", str(csv_file), "--project", "web", "--dir", str(out_dir)]
    assert main([*argv, "--secret-format", "sealedsecrets", "-n", "p"]) == 0
    out, err = capsys.readouterr()
    assert "kubeseal --format yaml" in out
    assert (out_dir / "unsealed" / "priv-1-erase-ids.yaml").stat().st_mode & 0o077 == 0
    assert "secret-" not in "".join(p.read_text() for p in (out_dir / "requests").iterdir())
    # A second run does not mix with the first.
    assert main([*argv, "--secret-format", "sops"]) == 1
    assert "files exist already" in capsys.readouterr().err


def test_intake_command_refuses_a_bad_file_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(HEADER + "PRIV-1,erase,GDPR,a,2026-11-01\nPRIV-2,wipe,GDPR,b,2026-11-01\n")
    out_dir = tmp_path / "out"
    argv = ["intake", str(csv_file), "--project", "web", "--dir", str(out_dir)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: {csv_file}: 1 row refused (1 ticket); nothing was written or created "
        "(--skip-invalid leaves them out):",
        "  row 3, column 'type': not a request type: Deletion (or delete, erase, erasure) or "
        "Retrieval (or retrieve, access, export)",
    ]
    assert not out_dir.exists()
    assert main([*argv, "--skip-invalid"]) == 0
    assert "warning: row 3, column 'type'" in capsys.readouterr().err
    assert sorted(p.name for p in (out_dir / "requests").iterdir()) == ["priv-1-erase.yaml"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--secret-format", "sops"],  # needs --dir
        ["--dry-run", "-o", "yaml"],
        ["--dir", "d", "--sops-age", "age1x"],  # only with sops
        ["--batch", "Not Valid"],
        ["--max-ids", "0"],
        ["--secrets", "per-ticket"],
    ],
)
def test_intake_usage_errors_exit_2(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["intake", "f.csv", "--project", "web", *extra])
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_pure_parts_of_intake_load_no_kubernetes_client() -> None:
    code = (
        "import sys, mixpanel_dsr.plugin.intake, mixpanel_dsr.plugin.intake_output\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
