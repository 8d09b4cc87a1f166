"""Settled requests (Succeeded, Cancelled) are kept out of kopf's watch by a field selector on
status.phase; the engine lists them itself. What it keeps of them must still serve TTL
removal, metrics and the ledger's clean-up, after a restart as before it.

The engine is the real one; Kubernetes and Mixpanel are the in-memory doubles of
tests/unit/engine_fakes.py (whose boot() hands kopf's share in and lists the rest).
"""

from __future__ import annotations

import copy

import pytest

from mixpanel_dsr import memory
from mixpanel_dsr.api.models import Phase
from mixpanel_dsr.engine.registry import SETTLED_RELIST_SECONDS, finished_of
from mixpanel_dsr.engine.state import UNSETTLED_SELECTOR
from tests.unit.engine_fakes import NS, World


async def finish(world: World, *names: str) -> None:
    for name in names:
        world.deletion(name, [f"person-{name}"])
    await world.boot()
    await world.run(900)
    for name in names:
        assert world.kube.phase(NS, name) == "Succeeded", name


async def test_the_watch_selector_names_every_settled_phase_and_no_other() -> None:
    world = World()
    await finish(world, "done")
    world.deletion("waiting", ["person-waiting"])
    failed = world.deletion("failed", ["person-failed"])
    failed["status"] = {"phase": "Failed"}
    listed, _ = await world.kube.list_requests(None, UNSETTLED_SELECTOR)
    assert sorted(b["metadata"]["name"] for b in listed) == ["failed", "waiting"]
    assert UNSETTLED_SELECTOR == "status.phase!=Cancelled,status.phase!=Succeeded"


async def test_after_a_restart_settled_requests_are_known_from_the_listing_alone() -> None:
    world = World()
    await finish(world, "a", "b", "c")
    engine = await world.boot()  # kopf hands in nothing settled
    assert sorted(engine.finished) == [f"{NS}/a", f"{NS}/b", f"{NS}/c"]
    assert not engine.requests
    assert all(f.phase is Phase.SUCCEEDED for f in engine.finished.values())


async def test_a_ttl_set_while_the_operator_was_down_removes_the_request_after_restart() -> None:
    world = World()
    await finish(world, "keep", "expire")
    world.kube.requests[(NS, "expire")]["spec"]["ttlSecondsAfterFinished"] = 1
    engine = await world.boot()
    world.clock.advance(5)
    await engine.refresh()
    assert (NS, "expire") not in world.kube.requests
    assert (NS, "keep") in world.kube.requests
    assert f"{NS}/expire" not in engine.finished


async def test_a_settled_request_deleted_by_hand_is_forgotten_at_the_next_listing() -> None:
    world = World()
    await finish(world, "a", "b")
    engine = await world.boot()
    world.kube.remove_request(NS, "a")  # no event reaches the engine: it is not watched
    assert f"{NS}/a" in engine.finished
    engine.settled_listed_at = world.clock.monotonic() - SETTLED_RELIST_SECONDS
    await engine.list_settled()
    assert sorted(engine.finished) == [f"{NS}/b"]


async def test_leaving_the_watch_is_told_apart_from_a_deletion() -> None:
    """The API server's DELETED event for an object leaving a field selector carries the
    object as it was before (still matching): InProgress, whether it settled or was deleted."""
    world = World()
    await finish(world, "a", "b")
    engine = await world.boot()
    engine.finished.clear()  # as if another replica had settled both
    for name in ("a", "b"):
        body = copy.deepcopy(world.kube.requests[(NS, name)])
        body["status"]["phase"] = "InProgress"
        if name == "b":
            world.kube.remove_request(NS, "b")
        await engine.request_out_of_watch(body)
    assert list(engine.finished) == [f"{NS}/a"]
    assert engine.finished[f"{NS}/a"] == finished_of(world.kube.requests[(NS, "a")])


async def test_the_engines_own_settling_write_needs_no_read() -> None:
    world = World()
    await finish(world, "a")
    engine = await world.boot()
    body = copy.deepcopy(world.kube.requests[(NS, "a")])
    world.kube.remove_request(NS, "a")  # a read would now say "deleted"
    await engine.request_out_of_watch(body)
    assert f"{NS}/a" in engine.finished  # known settled: not read, not dropped


async def test_settled_requests_are_listed_in_pages() -> None:
    world = World()
    for i in range(1203):
        body = world.deletion(f"old-{i:04d}", [f"person-{i}"])
        body["status"] = {"phase": "Succeeded" if i % 3 else "Cancelled"}
    engine = await world.boot()
    assert len(engine.finished) == 1203
    assert sum(f.phase is Phase.CANCELLED for f in engine.finished.values()) == 401


async def test_memory_is_given_back_after_a_burst_not_after_every_request() -> None:
    world = World()
    await finish(world, "a", "b")
    engine = world.engine
    assert engine is not None
    assert engine.retired_since_give_back == 2
    assert engine._give_back_due()  # the working set is empty: the burst is over
    engine.gave_back_at = world.clock.monotonic()
    assert not engine._give_back_due()  # not twice within GIVE_BACK_EVERY
    world.clock.advance(31)
    world.deletion("live", ["person-live"])
    await world.deliver(world.kube.requests[(NS, "live")])
    assert not engine._give_back_due()  # requests still live, and only 2 retired
    engine.retired_since_give_back = 500
    assert engine._give_back_due()


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(memory._TRIM is None, reason="no glibc malloc_trim here")
def test_give_back_returns_the_pages_of_a_fragmented_heap() -> None:
    """Freed objects leave their pages with the allocator (a few survivors pin the heap's
    top); give_back() returns them to the system."""
    blocks = [bytes(4000) for _ in range(30_000)]  # ~115 MiB, from glibc's heap
    keep = blocks[::200]
    del blocks
    held = _rss_mib()
    assert memory.give_back()
    assert _rss_mib() < held - 50, (held, _rss_mib())
    assert len(keep) == 150
