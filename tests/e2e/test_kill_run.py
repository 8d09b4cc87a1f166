"""The kill run, small: one-id deletions through seeded ``kill -9`` of the session's operator.

The same code as ``make kill-run`` (benchmarks/kill_run.py), with 150 requests and 5
kills (3 aimed at a create and its one write: during the call, at Mixpanel's answer,
and right after it) on the session's control plane, sandbox and operator, in a
namespace and a sandbox project of its own.
"""

from __future__ import annotations

import pytest
from benchmarks.kill_run import AIMS, Api, Config, Env, report, run_kills

from mixpanel_dsr.localcluster import ControlPlane
from tests.conftest import Kube
from tests.e2e.operator_harness import Operator, Sandbox

pytestmark = pytest.mark.e2e


def test_kill_minus_nine_loses_nothing_and_resends_only_interrupted_creates(
    control_plane: ControlPlane,
    kube: Kube,
    sandbox_server: Sandbox,
    operator: Operator,
    namespace: str,
) -> None:
    config = Config(
        requests=150, kills=5, seed=7, max_ids=25, batch=30, aimed_share=0.6,
        # Tasks last 4 s (the session sandbox's own scale is restored afterwards).
        time_scale=0.2, timeout=120,
    )  # fmt: skip
    api = Api(control_plane.kubeconfig)
    try:
        outcome = run_kills(Env(kube, api, sandbox_server, operator, namespace), config)
    finally:
        api.close()
        operator.ensure_running()
    print(report(outcome))
    assert not outcome.failures(), report(outcome)
    assert outcome.phases == {"Succeeded": 150}
    assert not outcome.lost
    assert len(outcome.sent_twice) <= len(outcome.bound_ids)
    assert outcome.sent_twice <= outcome.bound_ids
    assert len(outcome.kills) == 5
    assert {k.aimed for k in outcome.kills} >= set(AIMS)
    # The kill frozen at Mixpanel's answer always leaves a create unanswered.
    assert any(k.in_window for k in outcome.kills if k.aimed == "answer")
    # Every request of an interrupted create says a duplicate is possible (one id each).
    assert outcome.possible_duplicates == len(outcome.bound_ids)
