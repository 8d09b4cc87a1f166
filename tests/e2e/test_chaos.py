"""The chaos run, small: ``make chaos``'s code (benchmarks/chaos.py) with 120 requests.

Three projects (US, EU, IN), Deletions and Retrievals, 5 ``kill -9`` of the operator
(2 aimed at a create and its write, 1 at a cancel, 2 at random), one restart of
kube-apiserver, the sandbox injecting ~20% 5xx, dropped connections and lost answers,
and 429 bursts, on a control plane, sandbox and operator of its own (a restart of the
session's API server would disturb the other tests). The same end-state invariants as
``make chaos``: every request done and correct, every id in a SUCCESS task, nothing stuck,
ids sent twice only where an answer was lost (each traced to its kill or fault), no exit
of the operator that was not a kill, no memory growth, no leak, no engine traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.chaos import CANCEL_AIMS, NAMESPACE, ChaosConfig, run_chaos
from benchmarks.chaos_docs import render
from benchmarks.chaos_stack import Api, Stack
from benchmarks.chaos_watch import WatchedOperator
from benchmarks.kill_run import Env

from mixpanel_dsr.localcluster import Component, ControlPlane

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_chaos_small_every_request_done_nothing_lost_nothing_leaked(tmp_path: Path) -> None:
    config = ChaosConfig(
        requests=120, kills=5, seed=11, batch=24, max_ids=10,
        create_share=0.4, cancel_share=0.2, apiserver_restarts=1, etcd_restarts=0,
        bursts=2, timeout=420, idle=10,
    )  # fmt: skip
    with Stack(tmp_path, [NAMESPACE], time_scale=0.5, live=True) as stack:
        operator = WatchedOperator(tmp_path, stack.plane.kubeconfig, stack.sandbox.urls)
        api = Api(stack.plane.kubeconfig)
        try:
            operator.start()
            env = Env(stack.kube, api, stack.sandbox, operator, NAMESPACE)
            outcome = run_chaos(env, config, lambda c, down: stack.plane.restart(c, down=down))
        finally:
            api.close()
            operator.stop()
    text = render(outcome, "pytest tests/e2e/test_chaos.py", outcome.seconds)
    print(text)
    assert not outcome.failures(), text
    # What the run was asked to do, it did.
    assert len(outcome.kills) == 5
    assert {k.aimed for k in outcome.kills} & set(CANCEL_AIMS)
    assert [r.component for r in outcome.restarts] == [Component.APISERVER]
    assert outcome.bursts == 2
    assert outcome.faults["error"]
    assert outcome.faults["burst_429"]
    # The end state.
    assert outcome.phases == {"Succeeded": 120 - len(outcome.deleted)}
    assert not outcome.wrong
    assert not outcome.uncovered
    assert not outcome.stuck_tasks
    assert outcome.sent_twice <= outcome.bound_ids
    assert all(d.causes for d in outcome.duplicates)
    assert not outcome.unplanned_exits
    assert not outcome.leaks.leaks
    assert outcome.leaks.scanned["operator log lines"] > 0
    assert outcome.leaks.scanned["Events"] > 0
    assert outcome.leaks.looked_for["raw distinct id"] == 120 + 12
    assert not outcome.memory.failures()


def test_the_control_plane_restarts_each_component_with_its_data_and_ports() -> None:
    """What the chaos run relies on: a restart is the same process again, not a new cluster."""
    with ControlPlane() as plane:
        plane.kubectl("create", "namespace", "kept")
        server = plane.server
        for component in (Component.ETCD, Component.APISERVER):
            before = plane.pid(component)
            plane.restart(component, down=1)
            assert plane.pid(component) != before
            assert plane.server == server
            # The same kubeconfig works, and what was written before is still there.
            names = plane.kubectl("get", "namespace", "kept", "-o", "name").stdout.split()
            assert names == ["namespace/kept"]
