"""The operator end to end: real kube-apiserver + etcd, real kubectl, the sandbox as Mixpanel.

Each test builds its own project (a fresh sandbox project token) in its own
namespace, so what the sandbox saw for that token is what this test caused.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import signal
import zipfile

import httpx
import pytest
import yaml

from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, Sandbox, wait_until

pytestmark = pytest.mark.e2e


def finished(
    scenario: Scenario, *names: str, phase: str = "Succeeded", timeout: float = 90
) -> None:
    wait_until(
        lambda: all(scenario.phase(n) == phase for n in names),
        timeout=timeout,
        what=f"{len(names)} requests {phase}",
    )


def every_id_deleted_once(sandbox: Sandbox, token: str, ids: list[str]) -> None:
    seen = sandbox.ids(token)
    assert sorted(seen) == sorted(ids)
    for entry in seen.values():
        assert entry["deletion_tasks"] == 1
        assert entry["deletions_succeeded"] == 1


def test_deletion_goes_from_apply_to_ready(scenario: Scenario, kube: Kube) -> None:
    token = scenario.project()
    scenario.request("erase", ["user-1", "user-2"], receivedAt="2026-11-28T09:00:00Z")
    # What a person types: kubectl wait returns once every id is confirmed done.
    kube.run(
        "wait", "dsr/erase", "-n", scenario.namespace, "--for=condition=Ready", "--timeout=90s",
        timeout=120,
    )  # fmt: skip
    dsr = scenario.dsr("erase")
    status = dsr["status"]
    assert status["phase"] == "Succeeded"
    assert (status["idsTotal"], status["idsDone"], status["progress"]) == (2, 2, "2/2")
    assert status["observedGeneration"] == dsr["metadata"]["generation"]
    assert status["deadline"].startswith("2026-12-28T09:00:00")
    [task] = status["tasks"]
    assert (task["start"], task["end"], task["phase"]) == (0, 2, "Succeeded")
    assert task["trackingId"] == scenario.sandbox.tasks(token)[0]["tracking_id"]
    # The ledger: one MixpanelTask beside the project, what SREs read with kubectl get mpt.
    mpt = kube.get("mpt", task["name"], scenario.namespace)
    assert mpt["spec"]["members"] == [
        {"namespace": scenario.namespace, "name": "erase", "uid": dsr["metadata"]["uid"],
         "start": 0, "end": 2, "attempt": 1},
    ]  # fmt: skip
    assert (mpt["status"]["phase"], mpt["status"]["mixpanelState"]) == ("Succeeded", "SUCCESS")
    assert "user-1" not in json.dumps(mpt)
    row = kube.run("get", "mpt", "-A").stdout
    assert task["name"] in row
    assert task["trackingId"] in row
    every_id_deleted_once(scenario.sandbox, token, ["user-1", "user-2"])
    assert "Succeeded" in scenario.event_reasons("erase")
    assert "Created" in scenario.event_reasons(task["name"])
    ready = scenario.condition("erase", "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert scenario.condition("erase", "Reconciling") is None
    row = kube.run("get", "dsr", "erase", "-n", scenario.namespace).stdout.splitlines()[1]
    assert row.split()[1:5] == ["Deletion", "proj", "Succeeded", "2/2"]
    project = scenario.condition("proj", "Ready", kind="mpp")
    assert project is not None
    assert project["status"] == "True"


def test_retrieval_export_link_goes_to_an_owned_secret(scenario: Scenario, kube: Kube) -> None:
    token = scenario.project(region="EU")
    scenario.request(
        "access",
        ["c0ffee-42"],
        type="Retrieval",
        complianceType="CCPA",
        disclosureType="Categories",
    )
    finished(scenario, "access")
    dsr = scenario.dsr("access")
    secret_name = dsr["status"]["resultSecretRef"]["name"]
    secret = kube.get("secret", secret_name, scenario.namespace)
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("DataSubjectRequest", dsr["metadata"]["uid"])
    link = base64.b64decode(secret["data"]["link"]).decode()
    # The link is personal data: never in status, Events or the operator's log.
    assert link not in json.dumps(dsr)
    assert all(link not in json.dumps(e) for e in scenario.events("access"))
    # It works: the sandbox serves the password-protected export for exactly this person.
    export = httpx.get(link, timeout=10)
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        archive.setpassword(b"s3cret")
        names = archive.namelist()
        assert "categories.json" in names
        assert "c0ffee-42" in archive.read("manifest.json").decode()
    [task] = scenario.sandbox.tasks(token, kind="retrieval")
    assert task["compliance_type"].upper() == "CCPA"
    assert task["disclosure_type"] == "Categories"


def test_three_hundred_one_id_deletions_share_one_task(scenario: Scenario, kube: Kube) -> None:
    token = scenario.project()
    ids = [f"person-{n}" for n in range(300)]
    manifests = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [scenario.request_manifest(f"r-{n}", [i]) for n, i in enumerate(ids)],
    }
    kube.run("apply", "-f", "-", input=yaml.safe_dump(manifests), timeout=300)
    names = [f"r-{n}" for n in range(300)]

    def all_done() -> bool:
        items = json.loads(kube.run("get", "dsr", "-n", scenario.namespace, "-o", "json").stdout)
        phases = [i.get("status", {}).get("phase") for i in items["items"]]
        return len(phases) == 300 and all(p == "Succeeded" for p in phases)

    wait_until(all_done, timeout=180, interval=2, what="300 requests Succeeded")
    [task] = scenario.sandbox.tasks(token, kind="deletion")
    assert task["distinct_id_count"] == 300
    items = json.loads(kube.run("get", "dsr", "-n", scenario.namespace, "-o", "json").stdout)
    by_name = {i["metadata"]["name"]: i for i in items["items"]}
    for n, name in enumerate(names):
        [record] = by_name[name]["status"]["tasks"]
        assert record["trackingId"] == task["tracking_id"]
        assert (record["start"], record["end"]) == (0, 1)
        assert by_name[name]["spec"]["distinctIds"] == [ids[n]]
    [mpt] = json.loads(kube.run("get", "mpt", "-n", scenario.namespace, "-o", "json").stdout)[
        "items"
    ]
    assert (mpt["spec"]["idCount"], len(mpt["spec"]["members"])) == (300, 300)
    every_id_deleted_once(scenario.sandbox, token, ids)
    calls = scenario.sandbox.calls(token)
    assert "429" not in calls["by_status"]
    assert calls["by_operation"].get("create_deletion") == 1


def test_a_4500_id_request_is_split_in_three(scenario: Scenario) -> None:
    token = scenario.project()
    ids = [f"bulk-{n}" for n in range(4500)]
    scenario.secret("bulk-ids", {"ids": "\n".join(ids)})
    scenario.kube.apply(
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": "bulk", "namespace": scenario.namespace},
            "spec": {
                "projectRef": {"name": "proj"},
                "type": "Deletion",
                "distinctIdsFrom": {"secretKeyRef": {"name": "bulk-ids", "key": "ids"}},
            },
        }
    )
    finished(scenario, "bulk", timeout=120)
    records = scenario.dsr("bulk")["status"]["tasks"]
    assert sorted((r["start"], r["end"]) for r in records) == [
        (0, 2000),
        (2000, 4000),
        (4000, 4500),
    ]
    tasks = {t["tracking_id"]: t for t in scenario.sandbox.tasks(token)}
    for record in records:
        sent = tasks[record["trackingId"]]["distinct_ids"]
        assert sent == ids[record["start"] : record["end"]]
    every_id_deleted_once(scenario.sandbox, token, ids)
    assert "429" not in scenario.sandbox.calls(token)["by_status"]


def test_each_region_reaches_only_its_host(scenario: Scenario) -> None:
    eu = scenario.project("eu", region="EU")
    india = scenario.project("india", region="IN")
    scenario.request("eu-erase", ["eu-1"], project="eu")
    scenario.request("in-erase", ["in-1"], project="india")
    finished(scenario, "eu-erase", "in-erase")
    for token, region in ((eu, "EU"), (india, "IN")):
        calls = scenario.sandbox.calls(token)["calls"]
        assert calls
        assert {c["region"] for c in calls} == {region}


def test_project_problems_show_where_they_are_and_others_finish(scenario: Scenario) -> None:
    scenario.project("good")
    scenario.project("no-secret", secret="missing-secret")
    scenario.project("bad-token", oauth="not-the-right-token")
    scenario.project("expired", oauth=None, register=False)
    token, _ = scenario.sandbox.add_project("US", oauth="old", expires_at="2020-01-01T00:00:00Z")
    scenario.secret("stale-gdpr", {"token": "old"})
    scenario.kube.apply(
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "MixpanelProject",
            "metadata": {"name": "stale", "namespace": scenario.namespace},
            "spec": {
                "token": token,
                "credentialsSecretRef": {"name": "stale-gdpr"},
                "tokenExpiresAt": "2020-01-01T00:00:00Z",
            },
        }
    )
    for name, project in [
        ("ok", "good"), ("r-no-secret", "no-secret"), ("r-bad-token", "bad-token"),
        ("r-stale", "stale"), ("r-no-project", "nowhere"),
    ]:  # fmt: skip
        scenario.request(name, [f"{name}-id"], project=project)
    finished(scenario, "ok")
    expected = {
        "r-no-secret": ("ProjectNotReady", "SecretNotFound", "no-secret"),
        "r-bad-token": ("ProjectNotReady", "TokenRejected", "bad-token"),
        "r-stale": ("ProjectNotReady", "TokenExpired", "stale"),
        "r-no-project": ("ProjectNotFound", None, None),
    }
    for name, (reason, project_reason, project) in expected.items():
        stalled = wait_until(
            lambda n=name: scenario.condition(n, "Stalled"), what=f"{name} Stalled"
        )
        assert stalled["reason"] == reason, name
        assert reason in scenario.event_reasons(name)
        assert scenario.phase(name) == "Pending"
        if project:
            ready = scenario.condition(project, "Ready", kind="mpp")
            assert ready is not None
            assert (ready["status"], ready["reason"]) == ("False", project_reason)
            assert project_reason in scenario.event_reasons(project)
    expiring = scenario.condition("stale", "TokenExpiring", kind="mpp")
    assert expiring is not None
    assert (expiring["status"], expiring["reason"]) == ("True", "TokenExpired")
    # Nothing personal or secret in what people read.
    for name in expected:
        text = json.dumps(scenario.dsr(name)) + json.dumps(scenario.events(name))
        assert "not-the-right-token" not in text
    # A project created late is picked up without touching the request.
    scenario.project("nowhere")
    finished(scenario, "r-no-project")


def test_kill_minus_nine_after_mixpanel_accepted_repeats_nothing(
    scenario: Scenario, operator: Operator, kube: Kube
) -> None:
    token = scenario.project()
    sandbox = scenario.sandbox
    ids = [f"k-{n}" for n in range(40)]
    names = [f"k-{n}" for n in range(40)]
    manifests = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [scenario.request_manifest(n, [i]) for n, i in zip(names, ids, strict=True)],
    }
    kube.run("apply", "-f", "-", input=yaml.safe_dump(manifests))
    # Keep Mixpanel's task unfinished while the operator dies mid-flight.
    task = wait_until(lambda: sandbox.tasks(token), what="a task created", interval=0.1)[0]
    sandbox.post(f"/tasks/{task['tracking_id']}/state", {"state": "PENDING", "hold": True})

    def recorded() -> bool:
        items = json.loads(kube.run("get", "dsr", "-n", scenario.namespace, "-o", "json").stdout)
        return all(
            any(t.get("trackingId") for t in i.get("status", {}).get("tasks", []))
            for i in items["items"]
        )

    wait_until(recorded, what="tracking ids in every status")
    operator.kill(signal.SIGKILL)
    operator.start()
    sandbox.post(f"/tasks/{task['tracking_id']}/state", {"state": "SUCCESS", "hold": False})
    finished(scenario, *names, timeout=120)
    every_id_deleted_once(sandbox, token, ids)
    assert sandbox.calls(token)["by_operation"]["create_deletion"] == 1
    for name in names:
        assert scenario.condition(name, "PossibleDuplicate") is None


def test_kill_minus_nine_during_a_create_says_a_duplicate_is_possible(
    scenario: Scenario, operator: Operator
) -> None:
    token = scenario.project()
    sandbox = scenario.sandbox
    wait_until(
        lambda: (c := scenario.condition("proj", "Ready", kind="mpp")) and c["status"] == "True",
        what="project Ready",
    )
    sandbox.post("/faults", {"latency_seconds": 4.0})
    try:
        scenario.request("window", ["w-1", "w-2"])
        wait_until(
            lambda: (
                any(
                    t["phase"] == "Creating"
                    for t in scenario.dsr("window").get("status", {}).get("tasks", [])
                )
                or scenario.kube.run("get", "mpt", "-n", scenario.namespace, "-o", "name").stdout
            ),
            what="the task written before its create call",
            interval=0.1,
        )
        operator.kill(signal.SIGKILL)
    finally:
        sandbox.post("/faults", {"reset": True})
    operator.start()
    finished(scenario, "window")
    duplicate = scenario.condition("window", "PossibleDuplicate")
    assert duplicate is not None
    assert (duplicate["status"], duplicate["reason"]) == ("True", "CreateOutcomeLost")
    assert "PossibleDuplicate" in scenario.event_reasons("window")
    [record] = scenario.dsr("window")["status"]["tasks"]
    mpt = scenario.kube.get("mpt", record["name"], scenario.namespace)
    # The same task was sent again, alone; the ledger says its first answer was lost.
    assert mpt["status"]["ambiguous"] is True
    assert mpt["status"]["lostAnswers"] == 1
    assert mpt["status"]["phase"] == "Succeeded"
    for entry in sandbox.ids(token).values():
        assert 1 <= entry["deletion_tasks"] <= 2
        assert entry["deletions_succeeded"] >= 1


def test_deleting_a_pending_request_cancels_it_and_neighbours_still_finish(
    scenario: Scenario, kube: Kube
) -> None:
    token = scenario.project()
    sandbox = scenario.sandbox
    for name in ("gone", "stay-1", "stay-2"):
        scenario.request(name, [f"{name}-id"])
    task = wait_until(lambda: sandbox.tasks(token), what="packed task")[0]
    sandbox.post(f"/tasks/{task['tracking_id']}/state", {"state": "PENDING", "hold": True})
    assert task["distinct_id_count"] == 3
    kube.run("delete", "dsr", "gone", "-n", scenario.namespace, "--timeout=60s", timeout=90)
    wait_until(
        lambda: sandbox.get(f"/tasks/{task['tracking_id']}")["task"]["state"] == "REVOKED",
        what="the packed task cancelled",
    )
    finished(scenario, "stay-1", "stay-2")
    ids = sandbox.ids(token)
    assert ids["gone-id"]["deletions_succeeded"] == 0
    for stay in ("stay-1-id", "stay-2-id"):
        assert ids[stay]["deletion_tasks"] == 2  # the cancelled one, then the re-packed one
        assert ids[stay]["deletions_succeeded"] == 1
    assert "Requeued" in scenario.event_reasons("stay-1")
    records = scenario.dsr("stay-1")["status"]["tasks"]
    assert [r["phase"] for r in records] == ["Cancelled", "Succeeded"]


def test_rotated_token_is_used_without_a_restart(scenario: Scenario) -> None:
    token = scenario.project(oauth=None)
    scenario.request("before", ["rot-1"])
    finished(scenario, "before")
    # The old token is revoked in Mixpanel: the next call is refused.
    scenario.sandbox.post(
        "/projects", {"token": token, "region": "US", "oauth_tokens": ["rotated-token"]}
    )
    scenario.request("during", ["rot-2"])
    stalled = wait_until(lambda: scenario.condition("during", "Stalled"), what="Stalled")
    assert stalled["reason"] == "ProjectNotReady"
    wait_until(
        lambda: (
            (c := scenario.condition("proj", "Ready", kind="mpp")) and c["reason"] == "TokenExpired"
        ),
        what="project Ready=False TokenExpired",
    )
    # Someone puts the new token in the Secret; no restart.
    scenario.secret("proj-gdpr", {"token": "rotated-token"})
    finished(scenario, "during")
    assert scenario.condition("during", "Stalled") is None


def test_dry_run_plans_and_calls_nothing_until_switched_off(scenario: Scenario, kube: Kube) -> None:
    token = scenario.project(maxIdsPerRequest=2)
    scenario.request("plan", ["p-1", "p-2", "p-3"], dryRun=True)
    planned = wait_until(
        lambda: scenario.dsr("plan").get("status", {}).get("plannedTasks"), what="planned tasks"
    )
    assert planned == 2
    ready = scenario.condition("plan", "Ready")
    assert ready is not None
    assert ready["reason"] == "DryRun"
    assert scenario.sandbox.tasks(token) == []
    kube.run("patch", "dsr", "plan", "-n", scenario.namespace, "--type=merge", "-p",
             '{"spec":{"dryRun":false}}')  # fmt: skip
    finished(scenario, "plan")
    assert len(scenario.sandbox.tasks(token)) == 2


def test_finished_requests_are_removed_after_their_ttl(scenario: Scenario, kube: Kube) -> None:
    scenario.project()
    scenario.request("short-lived", ["ttl-1"], ttlSecondsAfterFinished=1)

    def gone() -> bool:
        result = kube.run("get", "dsr", "short-lived", "-n", scenario.namespace, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    wait_until(gone, timeout=90, what="request deleted after its TTL")


def _metric_succeeded(operator: Operator) -> int | None:
    for line in operator.metrics().splitlines():
        if line.startswith('mixpanel_dsr_requests{phase="Succeeded"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def test_settled_requests_leave_the_watch_and_are_still_served_after_a_restart(
    scenario: Scenario, operator: Operator, kube: Kube
) -> None:
    """Succeeded requests are out of kopf's watch (a field selector on status.phase, so
    memory does not grow with them): after a restart the engine knows them from its own
    listing, counts them, and a TTL set while it was down still removes one."""
    scenario.project()
    scenario.request("settled-a", ["settled-1"])
    scenario.request("settled-b", ["settled-2"])
    finished(scenario, "settled-a", "settled-b")
    ns = scenario.namespace
    # People can select by phase too (the CRD's selectable field).
    listed = kube.run(
        "get", "dsr", "-n", ns, "--field-selector", "status.phase=Succeeded", "-o", "name"
    ).stdout.split()
    assert sorted(listed) == [
        "datasubjectrequest.mixpaneldsr.io/settled-a",
        "datasubjectrequest.mixpaneldsr.io/settled-b",
    ]

    def in_cluster() -> int:
        out = kube.run(
            "get", "dsr", "-A", "--field-selector", "status.phase=Succeeded", "-o", "name"
        ).stdout
        return len(out.split())

    operator.kill(signal.SIGKILL)
    kube.run(
        "patch", "dsr", "settled-b", "-n", ns, "--type=merge",
        "-p", '{"spec":{"ttlSecondsAfterFinished":1}}',
    )  # fmt: skip
    operator.start()

    def gone() -> bool:
        result = kube.run("get", "dsr", "settled-b", "-n", ns, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    wait_until(gone, timeout=90, what="the settled request deleted after its TTL")
    wait_until(
        lambda: _metric_succeeded(operator) == in_cluster(),
        timeout=60,
        what="the Succeeded gauge counting every Succeeded request in the cluster",
    )
    assert scenario.phase("settled-a") == "Succeeded"
    assert "settled requests" in operator.log_tail(400)


def test_metrics_and_logs_hold_counts_not_personal_data(
    scenario: Scenario, operator: Operator
) -> None:
    scenario.project()
    secret_id = "alice@example.com"
    scenario.request("private", [secret_id])
    finished(scenario, "private")
    text = operator.metrics()
    for name in (
        "mixpanel_dsr_requests{",
        "mixpanel_dsr_ids_submitted_total",
        "mixpanel_dsr_mixpanel_requests_total{",
        "mixpanel_dsr_token_expiry_timestamp_seconds",
        "mixpanel_dsr_oldest_unfinished_request_age_seconds",
    ):
        assert name in text
    log = operator.log.read_text()
    assert secret_id not in log
    assert secret_id not in text


def test_a_failing_task_is_retried_then_fails_with_the_reason(scenario: Scenario) -> None:
    token = scenario.project()
    sandbox = scenario.sandbox
    sandbox.post("/settings", {"lifecycle": {"failure_rate": 1.0}})
    try:
        scenario.request("doomed", ["f-1"])
        finished(scenario, "doomed", phase="Failed")
    finally:
        sandbox.post("/settings", {"lifecycle": {"failure_rate": 0.0}})
    status = scenario.dsr("doomed")["status"]
    assert [(t["attempt"], t["phase"]) for t in status["tasks"]] == [
        (1, "Failed"), (2, "Failed"), (3, "Failed"),
    ]  # fmt: skip
    assert status["idsFailed"] == 1
    stalled = scenario.condition("doomed", "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "TaskFailed"
    assert "FAILURE" in stalled["message"]
    assert "Failed" in scenario.event_reasons("doomed")
    assert len(sandbox.tasks(token)) == 3


def test_retrievals_queue_under_the_outstanding_limit(scenario: Scenario) -> None:
    token = scenario.project(maxOutstandingRetrievals=1)
    names = [f"export-{n}" for n in range(3)]
    for name in names:
        scenario.request(name, [f"{name}-id"], type="Retrieval")
    finished(scenario, *names, timeout=120)
    tasks = sorted(scenario.sandbox.tasks(token, kind="retrieval"), key=lambda t: t["created_at"])
    assert len(tasks) == 3
    # Never two outstanding at once: each was created after the previous one finished.
    for earlier, later in itertools.pairwise(tasks):
        assert later["created_at"] >= earlier["finished_at"]
    # One person's data per export, never mixed.
    assert all(t["distinct_id_count"] == 1 for t in tasks)
    assert "429" not in scenario.sandbox.calls(token)["by_status"]


def test_409_sends_the_other_ids_and_never_calls_unsent_ids_erased(scenario: Scenario) -> None:
    """A deletes x; B (x, y) and C (z) are packed; Mixpanel answers 409 naming x and A's task."""
    token = scenario.project()
    sandbox = scenario.sandbox
    sandbox.post(f"/projects/{token}", {"conflict_409": True})
    scenario.request("a", ["id-x"])
    [running] = wait_until(lambda: sandbox.tasks(token), what="A's task")
    sandbox.post(f"/tasks/{running['tracking_id']}/state", {"state": "PENDING", "hold": True})
    items = [
        scenario.request_manifest("b", ["id-x", "id-y"]),
        scenario.request_manifest("c", ["id-z"]),
    ]
    scenario.kube.apply({"apiVersion": "v1", "kind": "List", "items": items})
    finished(scenario, "c")
    calls = sandbox.calls(token)
    assert calls["by_status"].get("409") == 1
    # B's x follows A's running task: B is not done while that task is not.
    assert scenario.phase("b") != "Succeeded"
    b_refs = scenario.dsr("b")["status"]["tasks"]
    assert any(r.get("trackingId") == running["tracking_id"] for r in b_refs)
    assert b_refs[0]["phase"] == "Split"
    sandbox.post(f"/tasks/{running['tracking_id']}/state", {"state": "SUCCESS", "hold": False})
    finished(scenario, "a", "b")
    # Every id is in a task that reached SUCCESS; y and z were really sent.
    seen = sandbox.ids(token)
    for distinct_id in ("id-x", "id-y", "id-z"):
        assert seen[distinct_id]["deletions_succeeded"] >= 1, distinct_id
    assert seen["id-y"]["deletion_tasks"] == 1
    assert seen["id-z"]["deletion_tasks"] == 1
