"""``kubectl dsr``'s pure parts: ids, manifests, durations, time, summary; and its command
line without a cluster (printing manifests, usage errors, completion)."""

from __future__ import annotations

import base64
import json
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

from mixpanel_dsr.planning import parse_id_list
from mixpanel_dsr.plugin import core
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
