"""Leader election on a Lease against the real API server: one holder, fast hand-over."""

from __future__ import annotations

import asyncio
import time

import pytest
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
