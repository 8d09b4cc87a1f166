"""``make bench``, small: every workload of benchmarks/bench_scale.py once, so it never rots.

The same command as ``make bench`` (its own control plane, sandbox and operator), with tens
of requests instead of thousands and tasks of about 4 s. Figures are not asserted (the machine
is shared); what the workloads must show whatever the speed is: every request finished, one
packed create where one is enough, retrievals never past the outstanding-scan limit, nothing
accepted created again after a restart, every baseline run to its end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.bench_scale import main

pytestmark = pytest.mark.e2e


def test_every_workload_runs_small_beside_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    code = main([
        "--workloads", "a,b,c,d,e", "--n", "60", "--ids", "3000",
        "--retrievals", "6", "--scan-slots", "3",
        "--inflight", "20", "--restart-max-ids", "10", "--restart-window", "15",
        "--projects", "6", "--per-project", "5",
        "--time-scale", "0.2", "--poll-initial", "1s", "--poll-max", "3s",
        "--packing-quiet", "3s", "--packing-max-wait", "60s",
        "--baseline-sample", "10", "--baseline-inflight", "4", "--baseline-projects", "2",
        "--baseline-poll", "3", "--timeout", "300", "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    figures = json.loads(out.read_text())
    ours, baseline = figures["operator"], figures["baseline"]
    assert set(ours) == {"a", "b", "c", "d", "e"}

    a = ours["a"]
    assert a["phases"] == {"Succeeded": 60}
    assert a["create_sizes"] == [60]  # one packed create for 60 one-id requests
    assert a["writes_per_request"] > 0

    b = ours["b"]
    assert b["phase"] == "Succeeded"
    assert b["creates"] == 2  # 3000 ids, 2000 a task

    c = ours["c"]
    assert c["phases"] == {"Succeeded": 6}
    assert c["creates"] == 6  # an export holds one person's data: one task each
    assert c["max_outstanding"] <= 3

    d = ours["d"]
    assert d["creates_of_accepted_work"] == 0
    assert d["tracked"] == d["tasks_held"] == 2

    e = ours["e"]
    assert e["creates_per_project"] == 1.0
    assert e["succeeded_seconds"] > 0

    for workload in ("a", "b", "c", "d", "e"):
        assert not baseline[workload]["error"], baseline[workload]
        assert baseline[workload]["figures"], workload
    # The baseline is one task per request.
    assert baseline["a"]["figures"]["creates"] == 10
    assert baseline["c"]["figures"]["creates"] == 6
