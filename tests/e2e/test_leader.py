"""Leader election on a Lease against the real API server: one holder, fast hand-over;
and two real operator replicas handing over when the leader is killed or partitioned."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from benchmarks.chaos_handover import Disruption, report, run_handover
from benchmarks.chaos_proxy import StallingProxy
from benchmarks.chaos_stack import Stack
from kubernetes import client, config

from mixpanel_dsr.leader import LeaderElector, Timing
from mixpanel_dsr.localcluster import ControlPlane

pytestmark = pytest.mark.e2e

FAST = Timing(lease_duration=3, renew_deadline=2, retry_period=0.3)


def _api(plane: ControlPlane) -> client.CoordinationV1Api:
    api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
    return client.CoordinationV1Api(api_client)


def _elector(plane: ControlPlane, namespace: str, identity: str) -> LeaderElector:
    return LeaderElector(namespace, "dsr-leader", identity, timing=FAST, api=_api(plane))


def test_only_one_holds_and_release_hands_over_at_once(
    control_plane: ControlPlane, namespace: str
) -> None:
    a, b = (_elector(control_plane, namespace, name) for name in ("pod-a", "pod-b"))
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.try_acquire_or_renew()  # renewing is fine
    lease = _api(control_plane).read_namespaced_lease("dsr-leader", namespace)
    assert lease.spec.holder_identity == "pod-a"
    a.release()
    assert b.try_acquire_or_renew()
    lease = _api(control_plane).read_namespaced_lease("dsr-leader", namespace)
    assert lease.spec.holder_identity == "pod-b"
    assert lease.spec.lease_transitions == 1
    assert not a.try_acquire_or_renew()


def test_a_standby_takes_over_an_expired_lease_and_the_old_holder_steps_down(
    control_plane: ControlPlane, namespace: str
) -> None:
    a, b = (_elector(control_plane, namespace, name) for name in ("pod-a", "pod-b"))

    async def scenario() -> float:
        await a.acquire()
        # a stops renewing (a frozen or partitioned pod); b waits out the lease.
        started = time.monotonic()
        await asyncio.wait_for(b.acquire(), timeout=15)
        took = time.monotonic() - started
        # a wakes up: its next renewal sees b and gives up at once.
        await asyncio.wait_for(a.hold(), timeout=5)
        return took

    took = asyncio.run(scenario())
    assert FAST.lease_duration - 0.5 <= took < FAST.lease_duration + 5


def test_a_holder_whose_renewals_hang_steps_down_at_its_renew_deadline(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Partitioned from the API server with the connection open (nothing answers, nothing
    fails), the holder still steps down by renew_deadline (+ one retry_period) after its
    last renewal began, before a standby may take the Lease."""
    timing = Timing(lease_duration=6, renew_deadline=3, retry_period=0.5)
    with StallingProxy(("127.0.0.1", control_plane.port)) as proxy:
        path = tmp_path / "kubeconfig"
        path.write_text(
            control_plane.kubeconfig.read_text().replace(control_plane.server, proxy.address)
        )
        api_client = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        a = LeaderElector(
            namespace,
            "dsr-leader",
            "pod-a",
            timing=timing,
            api=client.CoordinationV1Api(api_client),
        )
        b = LeaderElector(namespace, "dsr-leader", "pod-b", timing=timing, api=_api(control_plane))

        async def scenario() -> tuple[float, float]:
            await a.acquire()
            proxy.stall()
            stalled = time.monotonic()
            await asyncio.wait_for(a.hold(), timeout=30)
            stepped_down = time.monotonic() - stalled
            await asyncio.wait_for(b.acquire(), timeout=30)
            return stepped_down, time.monotonic() - stalled

        stepped_down, taken_over = asyncio.run(scenario())
    print(f"stepped down {stepped_down:.1f} s, taken over {taken_over:.1f} s after the stall")
    assert stepped_down <= timing.renew_deadline + timing.retry_period + 0.5
    assert stepped_down < taken_over


@pytest.mark.timeout(600)
def test_two_replicas_hand_over_in_order_when_the_leader_is_killed_or_partitioned(
    tmp_path: Path,
) -> None:
    namespace = "handover"
    # Tasks take 10 s: the leader keeps polling Mixpanel when it is disrupted.
    with Stack(tmp_path, [namespace], time_scale=0.5, live=True) as stack:
        outcome = run_handover(stack.plane, stack.sandbox, tmp_path, namespace)
    print(report(outcome))
    assert not outcome.failures(), report(outcome)
    kill, partition = outcome.handovers
    assert (kill.how, partition.how) == (Disruption.KILL, Disruption.PARTITION)
    assert kill.old != partition.old  # the new leader of the kill is the one partitioned
    for handover in outcome.handovers:
        assert handover.gap is not None
        assert handover.gap > 0, report(outcome)
    # The partitioned leader stepped down by itself, before the Lease moved.
    assert partition.old_exited_at is not None
    assert partition.old_exited_at < partition.lease_moved_at
    assert outcome.creates_by_replica[kill.old] > 0
    assert outcome.creates_by_replica[kill.new] > 0
    assert outcome.sent_by_both <= outcome.lost_answer_ids
