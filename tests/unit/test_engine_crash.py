"""The engine killed after every step of a packed submit, a cancel and a poll, then started
again from what the API server held: invariants 1, 7 and 8 for every crash point.

The engine is the real one; Kubernetes and Mixpanel are the in-memory doubles of
tests/unit/engine_fakes.py, so every run is deterministic and each step can be the last.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from mixpanel_dsr import receipts
from mixpanel_dsr.engine.worker import FLUSH_CONCURRENCY
from mixpanel_dsr.mixpanel.types import TaskState
from tests.unit.engine_fakes import NS, Crash, World

KEY = b"installation-key"

N_REQUESTS = 12


def build(world: World, n: int = N_REQUESTS) -> dict[str, list[str]]:
    asked = {}
    for i in range(n):
        ids = [f"person-{i}"] if i % 3 else [f"person-{i}", f"person-{i}-alt"]
        world.deletion(f"r{i}", ids)
        asked[f"r{i}"] = ids
    return asked


async def run_to_the_end(world: World, crash_after: int | None) -> None:
    world.steps.crash_after = crash_after
    await world.boot()
    for _ in range(5):
        try:
            await world.run(900)
            return
        except Crash:
            await world.boot()  # a new process, from what was persisted


ORDER = ["Pending", "Queued", "Submitted", "InProgress", "Succeeded"]


def never_backwards(world: World) -> None:
    """Restarts do not show a request going back (e.g. Submitted -> Pending)."""
    for name, phases in world.kube.phases.items():
        ranks = [ORDER.index(p) for p in phases]
        assert ranks == sorted(ranks), (name, phases)


def check_invariants(world: World, asked: dict[str, list[str]]) -> None:
    succeeded = world.mixpanel.succeeded_ids()
    for name, ids in asked.items():
        assert world.kube.phase(NS, name) == "Succeeded", name
        status = world.kube.requests[(NS, name)]["status"]
        assert status["idsDone"] == len(ids)
        # Invariant 8: done only where a task holding the id reached SUCCESS.
        assert set(ids) <= succeeded
        check_receipt(world, name, ids)


def check_receipt(world: World, name: str, ids: list[str]) -> None:
    """A finished request has exactly one receipt per outcome, sealed with the installation's
    key, and it says which Mixpanel task erased each of its ids."""
    mine = [r for r in world.kube.receipts.values() if r["spec"]["request"]["name"] == name]
    outcomes = [r["spec"]["outcome"] for r in mine]
    assert outcomes.count("Succeeded") == 1, (name, outcomes)
    assert all(receipts.verify(KEY, r["spec"]) for r in mine), name
    final = next(r for r in mine if r["spec"]["outcome"] == "Succeeded")
    assert final["spec"]["idCount"] == len(ids)
    for distinct_id in ids:
        found = receipts.find_id(KEY, [final], distinct_id)
        assert [f.done for f in found] == [True], (name, found)
        task = world.kube.tasks[(NS, found[0].task)]
        assert task["status"]["phase"] == "Succeeded"
        assert found[0].tracking_id == task["status"]["trackingId"]
        assert distinct_id in world.mixpanel.tasks[task["status"]["trackingId"]].ids
    assert "person-" not in repr(mine)


async def count_steps() -> int:
    world = World()
    build(world)
    await run_to_the_end(world, None)
    return world.steps.count


async def test_packed_deletions_finish_in_one_task_without_a_crash() -> None:
    world = World()
    asked = build(world)
    await run_to_the_end(world, None)
    check_invariants(world, asked)
    assert len(world.mixpanel.creates) == 1
    assert world.ids_sent_more_than_once() == 0
    [task] = world.kube.tasks.values()
    assert task["status"]["phase"] == "Succeeded"
    assert len(task["spec"]["members"]) == N_REQUESTS
    # The ledger never holds a raw id.
    assert "person-" not in repr(task)


async def test_a_kill_after_any_step_loses_nothing_and_resends_at_most_one_create() -> None:
    total = await count_steps()
    assert total > 20
    for k in range(1, total + 1):
        world = World()
        asked = build(world)
        await run_to_the_end(world, k)
        check_invariants(world, asked)
        never_backwards(world)
        crashed_on = world.steps.log[k - 1] if k <= len(world.steps.log) else ""
        dupes = world.ids_sent_more_than_once()
        if crashed_on.startswith("mixpanel create"):
            # The kill fell between the create and its one write: that create's ids only.
            assert dupes <= len(world.mixpanel.creates[0]), (k, crashed_on)
        else:
            assert dupes == 0, (k, crashed_on, world.mixpanel.creates)


async def test_a_request_deleted_while_the_operator_is_down_cancels_its_task() -> None:
    world = World()
    asked = build(world, 4)
    await world.boot()
    await world.run(4, until_finished=False)  # packed and created, not finished
    assert len(world.mixpanel.creates) == 1
    world.steps.crash_after = world.steps.count + 1
    with pytest.raises(Crash):
        await world.run(30)
    world.mixpanel.held.add("mp-1")  # Mixpanel has not started it yet
    world.kube.remove_request(NS, "r1")  # deleted while no operator runs
    del asked["r1"]
    await world.boot()
    await world.run(900)
    check_invariants(world, asked)
    first = world.mixpanel.tasks["mp-1"]
    assert first.state.value == "REVOKED"
    # The others were sent again without the deleted request's ids.
    assert "person-1" not in world.mixpanel.creates[1]
    assert len(world.mixpanel.creates) == 2


async def test_after_a_restart_requests_kopf_lists_slowly_are_not_looked_up_one_by_one() -> None:
    """Orphan look-ups wait until kopf's listing went quiet for --orphan-grace, not only
    --orphan-grace after the ledger's load: a listing of thousands that takes longer than
    the grace would otherwise cost one GET per member it had not delivered yet."""
    world = World()
    asked = build(world, 30)
    await world.boot()
    await world.run(4, until_finished=False)
    assert len(world.mixpanel.creates) == 1
    world.steps.crash_after = world.steps.count + 1
    with pytest.raises(Crash):
        await world.run(30)
    world.mixpanel.held.add("mp-1")  # still live while the listing goes on
    await world.boot()  # kopf lists half the requests now, the rest one at a time
    assert len(world.late) == 15
    mark = len(world.steps.log)
    await world.run(25, until_finished=False)  # longer than the listing plus the grace
    assert not world.late
    looked_up = [s for s in world.steps.log[mark:] if s.startswith("get request")]
    assert looked_up == []
    world.mixpanel.held.discard("mp-1")
    await world.run(900)
    check_invariants(world, asked)
    assert len(world.mixpanel.creates) == 1


async def test_after_a_restart_nothing_is_looked_up_while_kopf_has_listed_nothing_yet() -> None:
    """A listing of 11,000 requests can take longer than --orphan-grace to arrive at all
    (kopf parses it first): nothing delivered yet is not a quiet listing."""
    world = World()
    asked = build(world, 30)
    await world.boot()
    await world.run(4, until_finished=False)
    world.steps.crash_after = world.steps.count + 1
    with pytest.raises(Crash):
        await world.run(30)
    world.mixpanel.held.add("mp-1")
    await world.boot(listed=0)
    listing, world.late = world.late, []  # kopf is still reading its LIST
    mark = len(world.steps.log)
    await world.run(12, until_finished=False)  # longer than the grace (5 s)
    world.late = listing
    await world.run(25, until_finished=False)
    assert not world.late
    looked_up = [s for s in world.steps.log[mark:] if s.startswith("get request")]
    assert looked_up == []
    world.mixpanel.held.discard("mp-1")
    await world.run(900)
    check_invariants(world, asked)


async def test_a_kill_at_every_step_of_a_cancel_still_cancels_and_finishes_the_rest() -> None:
    async def scenario(crash_after: int | None) -> tuple[World, dict[str, list[str]], int]:
        world = World()
        asked = build(world, 4)
        await world.boot()
        await world.run(4, until_finished=False)
        start = world.steps.count
        body = world.kube.remove_request(NS, "r2")
        del asked["r2"]
        assert world.engine is not None
        world.engine.request_deleted(body)
        world.steps.crash_after = None if crash_after is None else start + crash_after
        try:
            await world.run(900)
        except Crash:
            await world.boot()
            await world.run(900)
        return world, asked, world.steps.count - start

    _, _, total = await scenario(None)
    for k in range(1, total + 1):
        world, asked, _ = await scenario(k)
        check_invariants(world, asked)
        assert world.mixpanel.tasks["mp-1"].state.value == "REVOKED", k
        assert all("person-2" not in ids for ids in world.mixpanel.creates[1:]), k


async def test_several_packed_tasks_a_kill_anywhere_resends_at_most_the_interrupted_one() -> None:
    def fresh() -> tuple[World, dict[str, list[str]]]:
        world = World(limit=5)
        return world, build(world)

    world, asked = fresh()
    await run_to_the_end(world, None)
    assert len(world.mixpanel.creates) == 4  # 16 ids in tasks of at most 5
    total = world.steps.count
    for k in range(1, total + 1):
        world, asked = fresh()
        await run_to_the_end(world, k)
        check_invariants(world, asked)
        crashed_on = world.steps.log[k - 1] if k <= len(world.steps.log) else ""
        dupes = world.ids_sent_more_than_once()
        allowed = 5 if crashed_on.startswith("mixpanel create") else 0
        assert dupes <= allowed, (k, crashed_on)


async def test_creates_do_not_wait_for_the_status_writes_of_the_requests_they_serve() -> None:
    """Between two creates only one batch of request status writes goes out (the writes fill
    the wait for the next budget slot, which the in-memory Mixpanel does not have); the rest
    follow once nothing is due. The first create goes before any request status write."""
    world = World(limit=10)
    asked = build(world, 40)
    await run_to_the_end(world, None)
    check_invariants(world, asked)
    log = world.steps.log
    creates = [n for n, s in enumerate(log) if s.startswith("mixpanel create")]
    assert len(creates) >= 5  # 53 ids in tasks of at most 10
    first_full = [n for n in creates if "(10 ids)" in log[n]]
    assert len(first_full) >= 4
    writes_before = [s for s in log[: creates[0]] if s.startswith("patch DataSubjectRequest")]
    assert writes_before == []
    for a, b in itertools.pairwise(first_full):
        between = [s for s in log[a:b] if s.startswith("patch DataSubjectRequest")]
        assert len(between) <= FLUSH_CONCURRENCY, (log[a], len(between))


async def test_409_only_the_named_ids_follow_the_running_task() -> None:
    """A deletes x; B (x, y) and C (z) are packed; Mixpanel answers 409 naming x."""
    world = World(conflicts=True)
    running = world.mixpanel.start(["x"])  # request A's task, already in Mixpanel
    world.deletion("b", ["x", "y"])
    world.deletion("c", ["z"])
    await world.boot()
    await world.run(900)
    assert world.kube.phase(NS, "b") == "Succeeded"
    assert world.kube.phase(NS, "c") == "Succeeded"
    # y and z were really sent (invariant 8), x followed A's task instead of a duplicate.
    assert world.mixpanel.refused == [("x", "y", "z")]
    assert world.mixpanel.creates == [("y", "z")]
    assert {"x", "y", "z"} <= world.mixpanel.succeeded_ids()
    phases = sorted(t["status"]["phase"] for t in world.kube.tasks.values())
    assert phases == ["Split", "Succeeded", "Succeeded"]
    follower = next(t for t in world.kube.tasks.values() if t["status"].get("adopted"))
    assert follower["status"]["trackingId"] == running
    assert follower["spec"]["members"] == [{**follower["spec"]["members"][0], "start": 0, "end": 1}]


async def test_one_bad_id_in_a_packed_task_fails_only_its_own_request() -> None:
    world = World(bad=["person-5"])
    asked = build(world)
    await world.boot()
    await world.run(1500)
    for name in asked:
        expected = "Failed" if name == "r5" else "Succeeded"
        assert world.kube.phase(NS, name) == expected, name
    failed = world.kube.requests[(NS, "r5")]["status"]
    stalled = next(c for c in failed["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "TaskFailed"
    assert "FAILURE" in stalled["message"]
    # Bisection: log2(12) rounds of halves, then the lone request's retries; no more.
    assert len(world.mixpanel.creates) <= 1 + 2 * 4 + FAST_ATTEMPTS


FAST_ATTEMPTS = 3


async def test_a_lost_answer_resends_the_same_task_alone_and_says_so() -> None:
    world = World()
    asked = build(world, 3)
    await world.boot()
    # The create reaches Mixpanel, the answer never comes back (the process dies with it).
    world.steps.crash_after = None
    original = world.mixpanel._create

    lost = {"done": False}

    def lose_once(kind: str, ids: object) -> object:
        created = original(kind, ids)  # type: ignore[arg-type]
        if not lost["done"]:
            lost["done"] = True
            from mixpanel_dsr.mixpanel.errors import AmbiguousCreateError

            raise AmbiguousCreateError("timeout after sending", reason="timeout")
        return created

    world.mixpanel._create = lose_once  # type: ignore[method-assign,assignment]
    await world.run(4, until_finished=False)
    assert len(world.mixpanel.creates) == 1
    world.deletion("late", ["person-late"])  # arrives while the first task is unanswered
    await world.deliver(world.kube.requests[(NS, "late")])
    asked["late"] = ["person-late"]
    await world.run(900)
    check_invariants(world, asked)
    first, second = world.mixpanel.creates[:2]
    assert first == second  # the same task, same ids, alone: never re-packed with new work
    [task] = [t for t in world.kube.tasks.values() if t["status"].get("ambiguous")]
    assert task["status"]["lostAnswers"] == 1
    conditions = world.kube.requests[(NS, "r0")]["status"]["conditions"]
    assert any(c["type"] == "PossibleDuplicate" for c in conditions)


async def test_finished_tasks_are_removed_after_retention_only_when_their_requests_are_done() -> (
    None
):
    world = World(limit=2)
    asked = build(world, 4)  # r0 has two ids: tasks (r0, r0-alt), (r1, r2), (r3)
    await world.boot()
    await world.run(900)
    check_invariants(world, asked)
    assert len(world.kube.tasks) == 3
    assert world.engine is not None
    retention = world.engine.settings.task_retention
    # A new request arrives and stays unfinished; its task must stay whatever its age.
    world.mixpanel.held.add("mp-4")
    await world.deliver(world.deletion("late", ["person-late"]))
    await world.run(30, until_finished=False)
    world.clock.advance(retention + 1)
    world.project().next_retention = 0.0
    await world.run(2, until_finished=False)
    left = [t["spec"]["members"][0]["name"] for t in world.kube.tasks.values()]
    assert left == ["late"]
    assert world.kube.phase(NS, "late") == "Submitted"


async def test_a_retry_annotation_sends_a_failed_requests_failed_ids_again() -> None:
    world = World(bad=["person-1"])
    asked = build(world, 3)
    await world.boot()
    await world.run(900)
    assert world.kube.phase(NS, "r1") == "Failed"
    creates = len(world.mixpanel.creates)
    # Mixpanel has fixed whatever made the id fail; a person asks to retry.
    world.mixpanel.bad.clear()
    body = world.kube.requests[(NS, "r1")]
    body["metadata"]["annotations"] = {"mixpaneldsr.io/retry": "2026-12-01T10:00:00Z"}
    await world.deliver(body)
    await world.run(900)
    check_invariants(world, asked)
    status = world.kube.requests[(NS, "r1")]["status"]
    assert status["lastRetry"]["token"] == "2026-12-01T10:00:00Z"
    assert world.mixpanel.creates[creates:] == [("person-1",)]
    assert ("r1", "Retrying") in [(n, r) for n, r, _ in world.kube.events]
    # Both outcomes keep their receipt: the failure before the retry, and the success.
    kept = {
        r["spec"]["outcome"]: r for r in world.kube.receipts.values()
        if r["spec"]["request"]["name"] == "r1"
    }  # fmt: skip
    assert sorted(kept) == ["Failed", "Succeeded"]
    assert kept["Succeeded"]["spec"]["retry"] == "2026-12-01T10:00:00Z"
    failed = receipts.find_id(KEY, [kept["Failed"]], "person-1")
    assert [(f.done, f.task_phase) for f in failed] == [(False, "Failed")]
    # The same value again changes nothing.
    await world.deliver(world.kube.requests[(NS, "r1")])
    await world.run(30, until_finished=False)
    assert len(world.mixpanel.creates) == creates + 1


async def test_a_kill_at_every_step_of_a_retry_still_sends_the_failed_ids_once() -> None:
    """The retry's steps (its status write, the Retrying Event, the task, the create, its
    write, the polls): killed after each, the request still ends Succeeded, and the failed id
    is sent again once, twice only when the kill fell between that create and its write."""

    async def scenario(
        crash_after: int | None,
    ) -> tuple[World, dict[str, list[str]], int, int]:
        world = World(bad=["person-1"])
        asked = build(world, 3)
        await world.boot()
        await world.run(900)
        assert world.kube.phase(NS, "r1") == "Failed"
        before = len(world.mixpanel.creates)
        world.mixpanel.bad.clear()
        body = world.kube.requests[(NS, "r1")]
        body["metadata"]["annotations"] = {"mixpaneldsr.io/retry": "2026-12-01T10:00:00Z"}
        start = world.steps.count
        world.steps.crash_after = None if crash_after is None else start + crash_after
        try:
            await world.deliver(body)
            await world.run(900)
        except Crash:
            await world.boot()
            await world.run(900)
        return world, asked, before, start

    world, _, _, start = await scenario(None)
    total = world.steps.count - start
    assert total > 5
    for k in range(1, total + 1):
        world, asked, before, start = await scenario(k)
        check_invariants(world, asked)
        resent = world.mixpanel.creates[before:]
        crashed_on = world.steps.log[start + k - 1]
        assert all(ids == ("person-1",) for ids in resent), (k, resent)
        allowed = 2 if crashed_on.startswith("mixpanel create") else 1
        assert 1 <= len(resent) <= allowed, (k, crashed_on, resent)


async def test_failing_status_checks_back_off_and_say_so_on_the_task_until_they_work() -> None:
    """Mixpanel answers status checks with errors for a while (5xx after the client's own
    retries): the engine asks less and less often, the task's message says why once (one
    write, not one per failure), and it goes when the checks work again."""
    from mixpanel_dsr.mixpanel.errors import TransientError

    world = World()
    asked = build(world, 3)
    engine = await world.boot()
    engine.settings = dataclasses.replace(engine.settings, poll_max=300.0)
    real = world.mixpanel.deletion_status
    failed: list[float] = []

    async def failing(tracking_id: str) -> object:
        failed.append(world.clock.monotonic())
        raise TransientError("deletion_status: HTTP 503", status_code=503)

    world.mixpanel.deletion_status = failing  # type: ignore[method-assign]
    await world.run(30, until_finished=False)
    (task,) = world.kube.tasks.values()
    assert task["status"]["phase"] == "Submitted"
    writes = world.kube.writes
    await world.run(900, until_finished=False)
    gaps = [b - a for a, b in itertools.pairwise(failed)]
    # Doubling up to --poll-max (300 s here): about 10 checks in 15 minutes, not 900.
    assert len(failed) <= 12, gaps
    assert gaps[-1] >= 8 * gaps[0], gaps
    message = world.kube.tasks[next(iter(world.kube.tasks))]["status"]["message"]
    assert message.startswith("status checks fail (")
    assert "503" in message
    assert world.kube.writes - writes <= 2  # the message, once (and the project's status)
    world.mixpanel.deletion_status = real  # type: ignore[method-assign]
    await world.run(900)
    check_invariants(world, asked)
    (task,) = world.kube.tasks.values()
    assert "message" not in task["status"] or not task["status"]["message"].startswith(
        "status checks fail"
    )


async def test_a_retrieval_found_finished_before_its_request_is_listed_keeps_its_link() -> None:
    """After a restart the first status check of a retrieval can come before kopf hands its
    request in: the task is not recorded done with its link nowhere; it is asked again and
    the link lands in the request's Secret (found by make chaos: 1-10 of 100 lost)."""
    world = World()
    world.kube.add_request(
        NS, "export-1",
        {"projectRef": {"name": "proj"}, "type": "Retrieval", "distinctIds": ["person-x"]},
    )  # fmt: skip
    await world.boot()
    for _ in range(120):
        await world.run(1, until_finished=False)
        if any(t.state is TaskState.STARTED for t in world.mixpanel.tasks.values()):
            break
    (tracking_id,) = world.mixpanel.tasks
    assert world.mixpanel.tasks[tracking_id].state is TaskState.STARTED
    # A new process; kopf has listed nothing yet when the task's next check says SUCCESS.
    await world.boot(listed=0)
    listing, world.late = world.late, []
    await world.run(20, until_finished=False)
    assert world.mixpanel.tasks[tracking_id].state is TaskState.SUCCESS
    (task,) = world.kube.tasks.values()
    assert task["status"]["phase"] != "Succeeded"  # not done while its link has no home
    world.late = listing
    await world.run(300)
    status = world.kube.requests[(NS, "export-1")]["status"]
    assert status["phase"] == "Succeeded"
    secret = world.kube.secrets[(NS, status["resultSecretRef"]["name"])]
    assert secret["link"].startswith(f"https://export.example/{tracking_id}")
