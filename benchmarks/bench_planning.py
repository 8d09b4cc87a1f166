"""Pure planning cost: pack N one-id requests and tally their status, against copying the ids.

.venv/bin/python -m benchmarks.bench_planning [N]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tests.unit.test_ledger import make_task

from mixpanel_dsr.ledger import Policy, Slice, Task, cover
from mixpanel_dsr.planning import Pending, Range, pack


def best_of(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    items = [Pending(f"ns/r{i}", Range(0, 1), (f"id-{i}",)) for i in range(n)]
    task: Task = make_task(1, "Submitted", [("r", 0, 1, 1)], trackingId="t")
    slices = [Slice(task, 0)]

    baseline = best_of(lambda: [list(p.ids) for p in items])
    packing = best_of(lambda: pack(items, 2000))
    tallying = best_of(lambda: [cover(1, slices, Policy()) for _ in range(n)])
    print(f"{n} one-id requests")
    print(f"  baseline (copy ids)      {baseline * 1e3:8.1f} ms   1.0x")
    print(f"  pack into 2000-id tasks  {packing * 1e3:8.1f} ms  {packing / baseline:5.1f}x")
    print(f"  derive every status      {tallying * 1e3:8.1f} ms  {tallying / baseline:5.1f}x")


if __name__ == "__main__":
    main()
