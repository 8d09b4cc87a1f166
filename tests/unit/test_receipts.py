"""Receipts (pure): parts, seals, keyed digests, what is copied, and answering for one id."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from mixpanel_dsr import receipts
from mixpanel_dsr.api.models import (
    DataSubjectRequestSpec,
    DataSubjectRequestStatus,
    MixpanelTaskStatus,
    Phase,
    ReceiptPolicy,
    ReceiptProject,
    RequestIdentity,
    TaskPhase,
    TaskReference,
)

KEY = b"k" * 32
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def finish(
    ids: list[str],
    refs: list[TaskReference],
    *,
    phase: Phase = Phase.SUCCEEDED,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    policy: ReceiptPolicy | None = None,
    completed: datetime = NOW,
) -> receipts.Finish:
    spec = DataSubjectRequestSpec.model_validate(
        {
            "projectRef": {"name": "web"},
            "type": "Deletion",
            "distinctIdsFrom": {"secretKeyRef": {"name": "ids", "key": "ids"}},
        }
    )
    status = DataSubjectRequestStatus(
        phase=phase,
        ids_total=len(ids),
        ids_done=len(ids) if phase is Phase.SUCCEEDED else 0,
        tasks=refs,
        completion_time=completed,
    )
    tasks = {
        r.name: MixpanelTaskStatus(
            phase=r.phase, tracking_id=r.tracking_id, completion_time=completed
        )
        for r in refs
    }
    return receipts.Finish(
        request=RequestIdentity(namespace="privacy", name="priv-1", uid="0123456789abcdef"),
        project=ReceiptProject(kind="MixpanelProject", name="web", token="tok"),
        spec=spec,
        status=status,
        ids=ids,
        tasks=tasks,
        labels=labels or {},
        annotations=annotations or {},
        policy=policy,
        received_at=NOW - timedelta(days=3),
        deadline=NOW + timedelta(days=27),
        issued_at=NOW,
        retention=timedelta(days=365),
    )


def ref(name: str, start: int, end: int, phase: TaskPhase = TaskPhase.SUCCEEDED) -> TaskReference:
    return TaskReference(name=name, tracking_id=f"t-{name}", start=start, end=end, phase=phase)


def wire(parts: list[object]) -> list[dict[str, object]]:
    return [
        {"metadata": {"name": f"r{i}", "namespace": "privacy"}, "spec": p.to_wire()}  # type: ignore[attr-defined]
        for i, p in enumerate(parts)
    ]


def test_each_id_is_answered_by_the_last_task_that_held_it() -> None:
    ids = ["alice", "bob", "carol"]
    # bob's first task failed; a retry task holding bob alone succeeded.
    refs = [ref("a", 0, 3, TaskPhase.FAILED), ref("b", 1, 2)]
    parts = receipts.build(KEY, finish(ids, refs, phase=Phase.FAILED))
    objs = wire(parts)
    assert [(f.task, f.done) for f in receipts.find_id(KEY, objs, "bob")] == [("b", True)]
    assert [(f.task, f.done) for f in receipts.find_id(KEY, objs, "alice")] == [("a", False)]
    assert receipts.find_id(KEY, objs, "dave") == []
    # Nobody without the key can confirm an id.
    assert receipts.find_id(b"other-key", objs, "bob") == []


def test_ids_no_task_held_are_listed_as_unsent() -> None:
    parts = receipts.build(KEY, finish(["a", "b"], [ref("x", 0, 1)], phase=Phase.FAILED))
    found = receipts.find_id(KEY, wire(parts), "b")
    assert [(f.task, f.done) for f in found] == [(None, False)]


def test_a_receipt_holds_no_id_and_its_seal_breaks_on_any_change() -> None:
    ids = [f"person-{i}@example.com" for i in range(50)]
    (part,) = receipts.build(KEY, finish(ids, [ref("a", 0, 50)]))
    spec = part.to_wire()
    assert "person-" not in json.dumps(spec)
    assert receipts.verify(KEY, spec)
    assert not receipts.verify(b"other-key", spec)
    for field, value in [("outcome", "Failed"), ("deadlineMet", False), ("idCount", 49)]:
        forged = copy.deepcopy(spec)
        forged[field] = value
        assert not receipts.verify(KEY, forged), field
    resealed = copy.deepcopy(spec)
    resealed["outcome"] = "Failed"
    resealed["seal"] = receipts.seal_of(b"guessed-key", resealed)
    assert not receipts.verify(KEY, resealed)


def test_deadline_met_only_when_it_succeeded_in_time() -> None:
    (met,) = receipts.build(KEY, finish(["a"], [ref("a", 0, 1)]))
    assert met.deadline_met
    late = NOW + timedelta(days=40)
    (missed,) = receipts.build(KEY, finish(["a"], [ref("a", 0, 1)], completed=late))
    assert not missed.deadline_met
    (failed,) = receipts.build(KEY, finish(["a"], [ref("a", 0, 1)], phase=Phase.FAILED))
    assert not failed.deadline_met


def test_a_long_request_takes_several_parts_that_all_fit_an_object() -> None:
    n = 100_000
    ids = [f"user-{i:06d}" for i in range(n)]
    refs = [ref(f"t{i}", i * 2000, (i + 1) * 2000) for i in range(n // 2000)]
    parts = receipts.build(KEY, finish(ids, refs))
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert {p.parts for p in parts} == {len(parts)}
    assert len(parts) == 2
    assert sum(t.id_count for p in parts for t in p.tasks) == n
    for p in parts:
        assert receipts.verify(KEY, p.to_wire())
        # etcd keeps objects up to 1.5 MiB.
        assert len(json.dumps(p.to_wire())) < 1_000_000
    objs = wire(parts)
    for probe in ("user-000000", "user-054321", "user-099999"):
        assert [f.done for f in receipts.find_id(KEY, objs, probe)] == [True]


def test_only_the_chosen_labels_and_annotations_are_copied() -> None:
    labels = {"privacy.example.com/ticket": "PRIV-1", "team": "growth", "other": "x"}
    annotations = {
        "privacy.example.com/summary": "erase",
        "kubectl.kubernetes.io/last-applied-configuration": '{"distinctIds":["alice"]}',
    }
    policy = ReceiptPolicy(
        copy_labels=["privacy.example.com/", "team"],
        copy_annotations=["privacy.example.com/", "kubectl.kubernetes.io/"],
    )
    (part,) = receipts.build(
        KEY, finish(["a"], [ref("a", 0, 1)], labels=labels, annotations=annotations, policy=policy)
    )
    assert part.labels == {"privacy.example.com/ticket": "PRIV-1", "team": "growth"}
    assert part.annotations == {"privacy.example.com/summary": "erase"}


@pytest.mark.parametrize("retry", [None, "2026-12-01"])
def test_names_are_stable_distinct_per_uid_retry_and_part_and_valid(retry: str | None) -> None:
    long = "x" * 253
    names = {
        receipts.receipt_name(long, uid, retry, part)
        for uid in ("aaaaaaaa-1", "bbbbbbbb-2")
        for part in (1, 2)
    }
    assert len(names) == 4
    assert all(len(n) <= 253 and n[-1].isalnum() for n in names)
    assert receipts.receipt_name("r", "abc", retry, 1) == receipts.receipt_name(
        "r", "abc", retry, 1
    )
    assert receipts.receipt_name("r", "abc", None, 1) != receipts.receipt_name("r", "abc", "x", 1)


async def test_receipts_are_removed_only_after_their_retention() -> None:
    from mixpanel_dsr.engine.receipts import sweep
    from tests.unit.engine_fakes import NS, World

    world = World()
    world.deletion("old", ["a"])
    await world.boot()
    await world.run(900)
    assert len(world.kube.receipts) == 1
    (receipt,) = world.kube.receipts.values()
    until = datetime.fromisoformat(receipt["spec"]["retainUntil"].replace("Z", "+00:00"))
    assert until - world.clock.wall() > timedelta(days=5 * 365)
    assert await sweep(world.kube, until - timedelta(seconds=1), []) == 0
    assert await sweep(world.kube, until, ["elsewhere"]) == 0
    assert await sweep(world.kube, until, [NS]) == 1
    assert world.kube.receipts == {}
