"""Production-scale figures on the real stack, each beside a naive baseline run at the same time.

One fresh control plane (kube-apiserver + etcd), the Mixpanel sandbox with its default rate
limit (1 accepted request/s per project) and lifecycle time scale ``--time-scale`` (3: a task
is PENDING 15 s, STAGING 15 s, STARTED 30 s, i.e. done in about a minute), and the operator
(the e2e harness's, FAST_FLAGS plus ``--poll-initial``/``--poll-max`` suited to minute-long
tasks), run from a snapshot of the work tree's ``operator/`` and ``crds/`` taken at the start
(``--live``: the tree as it is). Every project has ``requestInterval: 1100ms`` (the product's
default). Workloads:

- (a) N one-id deletions in one project, applied as fast as the API server takes them
  (``kubectl apply`` of v1 Lists of ``--chunk``, ``--parallel`` at once);
- (b) one deletion of ``--ids`` ids from a Secret;
- (c) ``--retrievals`` one-id retrievals in a project whose history lets ``--scan-slots`` of
  them be outstanding at once (the sandbox answers one more with a 429, as Mixpanel's
  outstanding-scan limit); the project's ``maxOutstandingRetrievals`` says the same;
- (d) a restart with the N finished requests of (a) and ``--inflight`` in-flight ones (packed
  by ``--restart-max-ids`` into several tasks): ``kill -9``, one new request applied while
  the operator is down, start again. The sandbox holds every in-flight task PENDING from its
  create until the restart window is over (so the restart alone is measured, not progress),
  then lets them finish. If (a) was not selected, its N requests are run first, unmeasured;
- (e) ``--projects`` projects in the three regions in turn, each with its own token and rate
  budget, ``--per-project`` one-id deletions each, all applied at once.

The operator runs with the product's packing window (``--packing-quiet 10s
--packing-max-wait 120s``), not the test harness's shorter one.

The baseline is what a platform team would otherwise run, a mode of this benchmark and not of
the product: one Mixpanel task per request (a request of more ids than Mixpanel's limit: one
task per 2000 ids), created within the rate limit, each open task polled every
``--baseline-poll`` seconds, in one loop paced at the same request interval (a due poll goes
before a create). It runs in threads beside the operator's workloads, each workload against a
sandbox project of its own (so its own rate budget): (a) on ``--baseline-sample`` requests,
extrapolated linearly to N; (b) and (c) in full (its creates refused by the scan limit are
tried again at the next free call); (d) with ``--baseline-inflight`` open tasks in its state
file, extrapolated linearly to ``--inflight``; (e) on ``--baseline-projects`` projects, one
loop each (every project has its own budget, so one stands for any).

Figures come from the sandbox's call log (creates, polls, 429s, when ids were submitted),
kube-apiserver's ``apiserver_request_total`` (writes per request: the difference over the
workload minus the user's creates of requests, Leases and kube-apiserver's own endpoint
writes) and ``/proc/<pid>`` of the operator (VmRSS, VmHWM, CPU).

    .venv/bin/python -m benchmarks.bench_scale [--workloads a,b,c,d,e] [--n 10000]
        [--ids 100000] [--retrievals 200] [--inflight 1000] [--projects 50] [--keep]
        [--json FILE] [--live]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import CRDS, Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, Sandbox, wait_until, workdir

from benchmarks.chaos_stack import Api, snapshot
from mixpanel_dsr.localcluster import ControlPlane
from mixpanel_dsr.sandbox.config import DEFAULT_SCAN_BUDGET_DAYS
from mixpanel_dsr.settings import parse_duration

#: Mixpanel's id limit per task and rate limit (the sandbox's defaults).
ID_LIMIT = 2000
RATE_PER_S = 1.0
OPERATOR_NS = "mixpanel-dsr-system"
NS = {"a": "scale-a", "b": "scale-b", "c": "scale-c", "d": "scale-d", "e": "scale-e"}
#: The order they run in: (e) before (d), whose restart leaves the process larger.
WORKLOADS = ("a", "b", "c", "e", "d")
REGIONS = ("US", "EU", "IN")
#: A sandbox task's life at time scale 1 (PENDING 5 s, STAGING 5 s, STARTED 10 s).
TASK_SECONDS = 20.0
FINAL = {"Succeeded", "Failed", "Cancelled"}
#: kube-apiserver writes these itself on a timer (no controller-manager runs); never the operator.
APISERVER_OWN = {"leases", "endpoints", "endpointslices"}
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"}
READ_VERBS = {"GET", "LIST", "WATCH"}

#: (group, resource, subresource, verb, code): one apiserver_request_total series.
Series = tuple[str, str, str, str, str]


def log(message: str) -> None:
    print(f"[bench-scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the operator process


def proc_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in values:
            values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """The operator's VmRSS every second (follows the process across restarts)."""

    def __init__(self, operator: Operator) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.operator = operator
        self.samples: list[tuple[float, int, float]] = []  # (time, pid, VmRSS MiB)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            proc = self.operator.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                rss, _ = proc_memory(proc.pid)
            except OSError:
                continue
            self.samples.append((time.time(), proc.pid, rss))

    def peak(self, since: float, until: float) -> float:
        return max((r for t, _, r in self.samples if since <= t <= until), default=0.0)


# ---------------------------------------------------------------------- kube-apiserver


class Cluster(Api):
    """Direct HTTPS reads of kube-apiserver (kubectl costs ~100 ms and its own discovery)."""

    def counters(self) -> Counter[Series]:
        """Every apiserver_request_total series of a resource (any verb), summed over the
        labels left out (version, scope, component, dry_run)."""
        text = self.http.get("/metrics").text
        lines = [line for line in text.splitlines() if line.startswith("apiserver_request_total{")]
        out: Counter[Series] = Counter()
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for sample in family.samples:
                labels = sample.labels
                if sample.name != "apiserver_request_total" or not labels.get("resource"):
                    continue
                key = (
                    labels.get("group", ""),
                    labels["resource"],
                    labels.get("subresource", ""),
                    labels.get("verb", "").upper(),
                    labels.get("code", ""),
                )
                out[key] += int(sample.value)
        return out

    def all_items(self, plural: str, namespace: str, group: bool = True) -> list[dict[str, Any]]:
        """Every object, read in pages of 1000."""
        base = "/apis/mixpaneldsr.io/v1alpha1" if group else "/api/v1"
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"limit": "1000", **({"continue": token} if token else {})}
            response = self.http.get(f"{base}/namespaces/{namespace}/{plural}", params=params)
            response.raise_for_status()
            body = response.json()
            items += body["items"]
            token = body["metadata"].get("continue") or ""
            if not token:
                return items

    def phases(self, namespace: str) -> Counter[str]:
        return Counter(
            (i.get("status") or {}).get("phase") or "(none)"
            for i in self.all_items("datasubjectrequests", namespace)
        )


def writes(window: Counter[Series]) -> Counter[tuple[str, str, str]]:
    """(resource, subresource, verb) of every write in a window but kube-apiserver's own."""
    out: Counter[tuple[str, str, str]] = Counter()
    for (_group, resource, subresource, verb, _code), value in window.items():
        if value and verb in WRITE_VERBS and resource not in APISERVER_OWN:
            out[(resource, subresource, verb)] += value
    return out


def reads(window: Counter[Series]) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for (_group, resource, subresource, verb, _code), value in window.items():
        if value and verb in READ_VERBS and resource not in APISERVER_OWN:
            out[(resource, subresource, verb)] += value
    return out


def settle(cluster: Cluster, quiet: float, limit: float) -> Counter[Series]:
    """The counters once nothing but kube-apiserver's timers wrote for ``quiet`` seconds."""
    start = time.monotonic()
    last = cluster.counters()
    stable_since = time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(min(2.0, quiet))
        now = cluster.counters()
        moved = writes(now) != writes(last)
        last = now
        if moved:
            stable_since = time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
    return last


# ---------------------------------------------------------------------- the sandbox's call log


class CallLog:
    """A project's calls as the sandbox logged them, fetched incrementally."""

    def __init__(self, sandbox: Sandbox, token: str) -> None:
        self.sandbox = sandbox
        self.token = token
        self.calls: list[dict[str, Any]] = []
        self.seq = 0

    def update(self) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = self.sandbox.get(
            "/calls", project=self.token, since=str(self.seq)
        )["calls"]
        if new:
            self.calls += new
            self.seq = max(int(c["seq"]) for c in new)
        return new

    def between(self, since: float, until: float = math.inf) -> list[dict[str, Any]]:
        return [c for c in self.calls if since <= c["at"] <= until]

    def creates(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [
            c
            for c in self.calls
            if c["operation"].startswith("create_") and str(c["status"]).startswith("2")
            and c["at"] >= since
        ]  # fmt: skip

    def polls(self) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["operation"].endswith("_status")]

    def count_429(self, since: float = 0.0) -> int:
        return sum(1 for c in self.calls if c["status"] == 429 and c["at"] >= since)

    def rate_limited(self) -> list[str]:
        """Each 429: the call, and how long after the previous accepted call it came."""
        out = []
        previous: dict[str, Any] | None = None
        for call in sorted(self.calls, key=lambda c: c["seq"]):
            if call["status"] == 429 and previous is not None:
                out.append(
                    f"{call['operation']} {call['at'] - previous['at']:.3f} s after "
                    f"{previous['operation']}"
                )
            elif call["status"] != 429:
                previous = call
        return out

    def submitted_at(self, wanted: set[str]) -> float | None:
        """When the last of ``wanted`` ids was in an accepted create, or None."""
        left = set(wanted)
        for call in sorted(self.creates(), key=lambda c: c["seq"]):
            left -= set(call["distinct_ids"])
            if not left:
                return float(call["at"])
        return None

    def polls_per_open_task_hour(self) -> float:
        """Status calls per task per hour it was open (its create to its last status call)."""
        opened = {c["tracking_id"]: c["at"] for c in self.creates() if c.get("tracking_id")}
        by_task: dict[str, list[float]] = {}
        for call in self.polls():
            tid = call["path"].rstrip("/").rsplit("/", 1)[-1]
            if tid in opened:
                by_task.setdefault(tid, []).append(call["at"])
        hours = sum(max(ats) - opened[t] for t, ats in by_task.items()) / 3600
        polls = sum(len(ats) for ats in by_task.values())
        return polls / hours if hours else 0.0

    def by_operation(self, calls: Iterable[dict[str, Any]] | None = None) -> dict[str, int]:
        return dict(Counter(c["operation"] for c in (self.calls if calls is None else calls)))


# ---------------------------------------------------------------------- the naive baseline


class Naive:
    """One Mixpanel task per request, polled every ``poll_every`` seconds: one loop, one call
    at a time paced at ``interval`` (a due poll goes first, then a create). Its state (open
    tracking ids) is a JSON file, as a cron script would keep it."""

    def __init__(
        self, base_url: str, token: str, oauth: str, *, interval: float, poll_every: float,
        state_file: Path | None = None, kind: str = "deletions",
    ) -> None:  # fmt: skip
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {oauth}"}, timeout=30
        )
        self.token = token
        #: "deletions" or "retrievals" (the path segment data-<kind>).
        self.kind = kind
        self.interval = interval
        self.poll_every = poll_every
        self.state_file = state_file
        self.next_slot = 0.0
        #: (request name, ids) not created yet.
        self.waiting: list[tuple[str, list[str]]] = []
        #: tracking id -> {"name", "ids", "last_poll" (monotonic or None)}.
        self.open: dict[str, dict[str, Any]] = {}
        self.finished: dict[str, str] = {}
        self.calls = 0

    def _pace(self) -> None:
        now = time.monotonic()
        if now < self.next_slot:
            time.sleep(self.next_slot - now)
        self.next_slot = time.monotonic() + self.interval
        self.calls += 1

    def create(self, name: str, ids: list[str]) -> bool:
        self._pace()
        response = self.http.post(
            f"/data-{self.kind}/v3.0/",
            params={"token": self.token},
            json={"distinct_ids": ids, "compliance_type": "GDPR"},
        )
        if response.status_code == 429:
            return False
        response.raise_for_status()
        tracking_id = str(response.json()["results"]["task_id"])
        self.open[tracking_id] = {"name": name, "ids": ids, "last_poll": time.monotonic()}
        self.save()
        return True

    def poll(self, tracking_id: str) -> None:
        self._pace()
        response = self.http.get(
            f"/data-{self.kind}/v3.0/{tracking_id}", params={"token": self.token}
        )
        self.open[tracking_id]["last_poll"] = time.monotonic()
        if response.status_code == 429:
            return
        response.raise_for_status()
        state = response.json()["results"]["status"]
        if state in ("SUCCESS", "FAILURE", "REVOKED", "NOT_FOUND"):
            del self.open[tracking_id]
            self.finished[tracking_id] = state
            self.save()

    def step(self) -> bool:
        """One call if one is due; False when idle."""
        now = time.monotonic()
        due = [
            (t["last_poll"] if t["last_poll"] is not None else -math.inf, tid)
            for tid, t in self.open.items()
            if t["last_poll"] is None or now - t["last_poll"] >= self.poll_every
        ]
        if due:
            self.poll(min(due)[1])
            return True
        if self.waiting:
            name, ids = self.waiting[0]
            if self.create(name, ids):
                self.waiting.pop(0)
            return True
        return False

    def run(self, until: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            if not self.step():
                time.sleep(0.2)

    def save(self) -> None:
        if self.state_file is None:
            return
        self.state_file.write_text(
            json.dumps(
                {
                    "open": {
                        tid: {"name": t["name"], "ids": t["ids"]} for tid, t in self.open.items()
                    },
                    "finished": self.finished,
                }
            )
        )

    def load(self) -> None:
        """After a restart: every open task is polled again (the loop knows no schedule)."""
        assert self.state_file is not None
        data = json.loads(self.state_file.read_text())
        self.open = {tid: {**t, "last_poll": None} for tid, t in data["open"].items()}
        self.finished = dict(data["finished"])

    def close(self) -> None:
        self.http.close()


@dataclass
class BaselineRun:
    """One baseline workload, run in a thread; ``figures`` once done, ``error`` if it broke."""

    workload: str
    thread: threading.Thread | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def naive_for(
    sandbox: Sandbox, args: argparse.Namespace, state: Path | None = None, *,
    region: str = "US", kind: str = "deletions",
) -> tuple[Naive, str]:  # fmt: skip
    token, oauth = sandbox.add_project(region)
    return naive_client(sandbox, args, token, oauth, state, region=region, kind=kind), token


def naive_client(
    sandbox: Sandbox, args: argparse.Namespace, token: str, oauth: str, state: Path | None = None,
    *, region: str = "US", kind: str = "deletions",
) -> Naive:  # fmt: skip
    return Naive(
        sandbox.urls[region], token, oauth, interval=args.interval_s,
        poll_every=args.baseline_poll, state_file=state, kind=kind,
    )  # fmt: skip


def scan_history_days(slots: int) -> int:
    """A project's days of history such that ``slots`` retrievals fit the scan budget at once
    (the sandbox refuses one more with a 429, as Mixpanel's 5-year outstanding-scan limit)."""
    return DEFAULT_SCAN_BUDGET_DAYS // slots


def baseline_retrievals(sandbox: Sandbox, args: argparse.Namespace, out: BaselineRun) -> None:
    """(c): ``--retrievals`` one-id retrievals, one task each, handed in at once; a create
    refused with a 429 (the outstanding-scan limit) is tried again at the next free call."""
    client, token = naive_for(sandbox, args, kind="retrievals")
    sandbox.post(f"/projects/{token}", {"history_days": scan_history_days(args.scan_slots)})
    n = args.retrievals
    client.waiting = [(f"r{i}", [f"base-c-{i:06d}"]) for i in range(n)]
    start = time.time()
    outstanding = 0
    done = lambda: not client.waiting and not client.open  # noqa: E731
    deadline = time.monotonic() + args.timeout
    while not done() and time.monotonic() < deadline:
        outstanding = max(outstanding, len(client.open))
        if not client.step():
            time.sleep(0.2)
    calls = CallLog(sandbox, token)
    calls.update()
    out.figures = {
        "n": n,
        "creates": len(calls.creates()),
        "calls": len(calls.calls),
        "calls_per_request": len(calls.calls) / n,
        "by_operation": calls.by_operation(),
        "429": calls.count_429(),
        "done_seconds": time.time() - start,
        "polls_per_open_task_hour": calls.polls_per_open_task_hour(),
        "max_outstanding": outstanding,
    }
    client.close()


def baseline_projects(sandbox: Sandbox, args: argparse.Namespace, out: BaselineRun) -> None:
    """(e): ``--baseline-projects`` projects (regions in turn), each its own naive loop in a
    thread with ``--per-project`` one-id deletions; every project has its own rate budget, so
    each loop's figures are those of any one of ``--projects``."""
    runs: list[dict[str, Any]] = []
    per = args.per_project

    def one(i: int) -> None:
        region = REGIONS[i % len(REGIONS)]
        client, token = naive_for(sandbox, args, region=region)
        ids = [f"base-e{i}-{k:05d}" for k in range(per)]
        client.waiting = [(f"r{k}", [one_id]) for k, one_id in enumerate(ids)]
        start = time.time()
        client.run(lambda: not client.waiting and not client.open, timeout=args.timeout)
        calls = CallLog(sandbox, token)
        calls.update()
        submitted = calls.submitted_at(set(ids))
        runs.append({
            "region": region,
            "calls": len(calls.calls),
            "429": calls.count_429(),
            "submit_seconds": (submitted or time.time()) - start,
            "done_seconds": time.time() - start,
        })  # fmt: skip
        client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.baseline_projects)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.figures = {
        "projects": len(runs),
        "per_project": per,
        "calls_per_request": sum(r["calls"] for r in runs) / max(1, per * len(runs)),
        "429": sum(r["429"] for r in runs),
        "submit_seconds": max((r["submit_seconds"] for r in runs), default=math.nan),
        "done_seconds": max((r["done_seconds"] for r in runs), default=math.nan),
    }


def baseline_many(sandbox: Sandbox, args: argparse.Namespace, out: BaselineRun) -> None:
    """(a): ``--baseline-sample`` one-id requests, handed in at once."""
    client, token = naive_for(sandbox, args)
    sample = args.baseline_sample
    client.waiting = [(f"r{i}", [f"base-a-{i:06d}"]) for i in range(sample)]
    start = time.time()
    client.run(lambda: not client.waiting and not client.open, timeout=args.timeout)
    calls = CallLog(sandbox, token)
    calls.update()
    submitted = calls.submitted_at({f"base-a-{i:06d}" for i in range(sample)})
    out.figures = {
        "sample": sample,
        "creates": len(calls.creates()),
        "calls": len(calls.calls),
        "by_operation": calls.by_operation(),
        "429": calls.count_429(),
        "submit_seconds": (submitted or time.time()) - start,
        "done_seconds": time.time() - start,
        "polls_per_open_task_hour": calls.polls_per_open_task_hour(),
        "finished": len(client.finished),
    }
    client.close()


def baseline_bulk(sandbox: Sandbox, args: argparse.Namespace, out: BaselineRun) -> None:
    """(b): the ids of one request, one task per 2000 ids."""
    client, token = naive_for(sandbox, args)
    ids = [f"base-b-{n:07d}" for n in range(args.ids)]
    client.waiting = [("bulk", ids[at : at + ID_LIMIT]) for at in range(0, len(ids), ID_LIMIT)]
    start = time.time()
    client.run(lambda: not client.waiting and not client.open, timeout=args.timeout)
    calls = CallLog(sandbox, token)
    calls.update()
    submitted = calls.submitted_at(set(ids))
    out.figures = {
        "creates": len(calls.creates()),
        "calls": len(calls.calls),
        "by_operation": calls.by_operation(),
        "429": calls.count_429(),
        "submit_seconds": (submitted or time.time()) - start,
        "done_seconds": time.time() - start,
        "polls_per_open_task_hour": calls.polls_per_open_task_hour(),
    }
    client.close()


def baseline_restart(
    sandbox: Sandbox, args: argparse.Namespace, out: BaselineRun, base: Path
) -> None:
    """(d): ``--baseline-inflight`` open tasks and N finished ones in the loop's state file;
    the loop is stopped, started again from the file, and one new request is handed in."""
    state = base / "baseline-state.json"
    token, oauth = sandbox.add_project("US")
    client = naive_client(sandbox, args, token, oauth, state)
    inflight = args.baseline_inflight
    # Setting up is not measured: the project's rate limit is off while the tasks are made.
    sandbox.post(f"/projects/{token}", {"rate_limit_per_s": 0})
    client.interval = 0.0
    for i in range(inflight):
        assert client.create(f"r{i}", [f"base-d-{i:06d}"])
    client.finished = {f"finished-{i}": "SUCCESS" for i in range(args.n)}
    client.save()
    sandbox.post(f"/projects/{token}", {"rate_limit_per_s": None})
    client.close()
    time.sleep(args.interval_s)
    calls = CallLog(sandbox, token)
    calls.update()
    # The restart.
    t0 = time.time()
    client = naive_client(sandbox, args, token, oauth, state)
    client.load()
    held = set(client.open)
    client.waiting = [("new", ["base-d-new"])]
    client.run(lambda: not client.waiting and not client.open, timeout=args.timeout)
    calls.update()
    after = calls.between(t0)
    first_new = next(
        (c["at"] for c in calls.creates(t0) if "base-d-new" in c["distinct_ids"]), math.nan
    )
    inflight_ids = {f"base-d-{i:06d}" for i in range(inflight)}
    tracked: dict[str, float] = {}
    for call in calls.polls():
        tid = call["path"].rstrip("/").rsplit("/", 1)[-1]
        if call["at"] >= t0 and tid in held:
            tracked.setdefault(tid, call["at"])
    out.figures = {
        "inflight": inflight,
        "first_new_seconds": first_new - t0,
        "tracked_seconds": max(tracked.values(), default=math.nan) - t0,
        "calls_first_minute": len([c for c in after if c["at"] < t0 + 60]),
        "first_minute_by_operation": calls.by_operation(c for c in after if c["at"] < t0 + 60),
        "creates_of_accepted_work": sum(
            1 for c in calls.creates(t0) if inflight_ids & set(c["distinct_ids"])
        ),
        "429_first_minute": sum(1 for c in after if c["status"] == 429 and c["at"] < t0 + 60),
        "done_seconds": time.time() - t0,
    }
    client.close()


def start_baselines(
    sandbox: Sandbox, args: argparse.Namespace, workloads: list[str], base: Path
) -> list[BaselineRun]:
    runs = []
    targets: dict[str, Callable[[BaselineRun], None]] = {
        "a": lambda out: baseline_many(sandbox, args, out),
        "b": lambda out: baseline_bulk(sandbox, args, out),
        "c": lambda out: baseline_retrievals(sandbox, args, out),
        "d": lambda out: baseline_restart(sandbox, args, out, base),
        "e": lambda out: baseline_projects(sandbox, args, out),
    }
    for workload in workloads:
        run = BaselineRun(workload)

        def body(run: BaselineRun = run) -> None:
            try:
                targets[run.workload](run)
            except Exception as err:  # reported in the table, never kills the run
                run.error = f"{type(err).__name__}: {err}"
                log(f"baseline ({run.workload}) failed: {run.error}")
            log(f"baseline ({run.workload}) done")

        run.thread = threading.Thread(target=body, daemon=True, name=f"baseline-{workload}")
        run.thread.start()
        runs.append(run)
    return runs


# ---------------------------------------------------------------------- the operator's workloads


@dataclass
class Ctx:
    args: argparse.Namespace
    kube: Kube
    cluster: Cluster
    sandbox: Sandbox
    operator: Operator
    sampler: Sampler
    plane: ControlPlane
    base: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.operator.proc is not None
        return self.operator.proc.pid

    def scenario(self, workload: str) -> Scenario:
        return Scenario(self.kube, self.sandbox, NS[workload])

    def project(self, workload: str, name: str, **spec: Any) -> str:
        token = self.scenario(workload).project(
            name, requestInterval=self.args.request_interval, **spec
        )
        self.kube.run(
            "wait", "--for=condition=Ready", "--timeout=120s", "-n", NS[workload],
            f"mixpanelproject/{name}", timeout=150,
        )  # fmt: skip
        self.tokens[name] = token
        return token

    def apply(self, items: list[dict[str, Any]]) -> tuple[float, float]:
        """``kubectl apply`` of Lists of ``--chunk``, ``--parallel`` at once; (start, end)."""
        chunk = self.args.chunk
        lists = [items[at : at + chunk] for at in range(0, len(items), chunk)]

        def one(part: list[dict[str, Any]]) -> None:
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": part})
            self.kube.run("apply", "-f", "-", input=body, timeout=1800)

        start = time.time()
        with ThreadPoolExecutor(self.args.parallel) as pool:
            list(pool.map(one, lists))
        return start, time.time()

    def apiserver_cpu(self) -> float:
        procs = self.plane._procs  # kube-apiserver and etcd
        return sum(proc_cpu(p.pid) for _, p in procs if p.poll() is None)

    def metric_phases(self) -> Counter[str]:
        out: Counter[str] = Counter()
        try:
            text = self.operator.metrics()
        except httpx.HTTPError:
            return out
        for line in text.splitlines():
            if line.startswith("mixpanel_dsr_requests{phase="):
                phase = line.split('"')[1]
                out[phase] = int(float(line.rsplit(" ", 1)[1]))
        return out


def one_id_requests(scenario: Scenario, prefix: str, n: int, project: str) -> list[dict[str, Any]]:
    return [
        scenario.request_manifest(f"{prefix}-{i:06d}", [f"{prefix}-id-{i:06d}"], project)
        for i in range(n)
    ]


def run_many(ctx: Ctx) -> dict[str, Any]:
    """(a): N one-id deletions in one project, applied as fast as the API server takes them."""
    args = ctx.args
    n: int = args.n
    started = time.time()
    token = ctx.project("a", "many")
    calls = CallLog(ctx.sandbox, token)
    time.sleep(10)
    idle_rss, _ = proc_memory(ctx.pid)
    log(f"(a) idle operator (one project Ready, no request): VmRSS {idle_rss:.0f} MiB")
    before = settle(ctx.cluster, quiet=3.0, limit=60.0)
    cpu0, api_cpu0 = proc_cpu(ctx.pid), ctx.apiserver_cpu()
    items = one_id_requests(ctx.scenario("a"), "a", n, "many")
    wanted = {f"a-id-{i:06d}" for i in range(n)}
    log(f"(a) applying {n} requests, Lists of {args.chunk}, {args.parallel} at once")
    first_apply, last_apply = ctx.apply(items)
    log(f"(a) applied in {last_apply - first_apply:.1f} s ({n / (last_apply - first_apply):.0f}/s)")
    submitted: float | None = None
    progress: list[tuple[float, int, float]] = []  # (seconds since the first apply, Succeeded, RSS)

    def done() -> bool:
        nonlocal submitted
        ctx.operator.healthy()
        calls.update()
        if submitted is None:
            submitted = calls.submitted_at(wanted)
        phases = ctx.metric_phases()
        rss, hwm = proc_memory(ctx.pid)
        progress.append((time.time() - first_apply, phases.get("Succeeded", 0), rss))
        log(
            f"(a) {time.time() - first_apply:.0f} s: creates {len(calls.creates())}, all submitted "
            f"{'yes' if submitted else 'no'}; operator phases "
            f"{dict(sorted((k, v) for k, v in phases.items() if v))}; VmRSS {rss:.0f} MiB "
            f"(peak {hwm:.0f})"
        )
        return phases.get("Succeeded", 0) >= n

    wait_until(done, timeout=args.timeout, interval=10, what=f"(a) {n} requests Succeeded")
    all_done = time.time()
    cpu1, api_cpu1 = proc_cpu(ctx.pid), ctx.apiserver_cpu()
    phases = ctx.cluster.phases(NS["a"])
    after = settle(ctx.cluster, quiet=10.0, limit=120.0)
    calls.update()
    window = after - before
    all_writes = writes(window)
    user = all_writes.pop(("datasubjectrequests", "", "POST"), 0)
    events = sum(v for (r, _, _), v in all_writes.items() if r == "events")
    operator_writes = sum(all_writes.values()) - events
    rss, hwm = proc_memory(ctx.pid)
    creates = len(calls.creates())
    needed = math.ceil(n / ID_LIMIT)
    return {
        "n": n,
        "apply_seconds": last_apply - first_apply,
        "apply_per_second": n / (last_apply - first_apply),
        "creates": creates,
        "create_sizes": [c["distinct_id_count"] for c in calls.creates()],
        "creates_ratio": creates / needed,
        "submit_seconds": (submitted - last_apply) if submitted else math.nan,
        "first_apply_to_submitted": (submitted - first_apply) if submitted else math.nan,
        "submit_ratio": ((submitted - last_apply) / (needed / RATE_PER_S))
        if submitted
        else math.nan,
        "succeeded_seconds": all_done - first_apply,
        "429": calls.count_429(),
        "429_gaps": calls.rate_limited(),
        "calls": len(calls.calls),
        "calls_per_request": len(calls.calls) / n,
        "by_operation": calls.by_operation(),
        "polls_per_open_task_hour": calls.polls_per_open_task_hour(),
        "user_creates": user,
        "writes_per_request": operator_writes / n,
        "status_writes_per_request": all_writes.get(("datasubjectrequests", "status", "PATCH"), 0)
        / n,
        "receipts_per_request": sum(
            v for (r, _, verb), v in all_writes.items() if r.endswith("receipts") and verb == "POST"
        )
        / n,
        "writes_per_request_with_events": (operator_writes + events) / n,
        "writes": {
            f"{r}{'/' + s if s else ''} {v}": c for (r, s, v), c in all_writes.most_common()
        },
        "idle_rss": idle_rss,
        "kib_per_request": (hwm - idle_rss) * 1024 / n,
        "peak_rss": hwm,
        "rss_after": rss,
        "cpu_seconds": cpu1 - cpu0,
        "cpu_per_1000": (cpu1 - cpu0) / n * 1000,
        "apiserver_etcd_cpu_seconds": api_cpu1 - api_cpu0,
        "phases": dict(phases),
        "progress": progress,
        "seconds": time.time() - started,
    }


def run_bulk(ctx: Ctx) -> dict[str, Any]:
    """(b): one deletion of ``--ids`` ids from a Secret."""
    args = ctx.args
    started = time.time()
    token = ctx.project("b", "bulk")
    calls = CallLog(ctx.sandbox, token)
    ids = [f"b{n:07d}" for n in range(args.ids)]
    text = "\n".join(ids) + "\n"
    scenario = ctx.scenario("b")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bulk-ids", "namespace": NS["b"]},
        "stringData": {"ids": text},
    }
    # Too large for client-side apply's last-applied annotation: server-side apply.
    ctx.kube.run("apply", "--server-side", "-f", "-", input=json.dumps(secret), timeout=120)
    before = settle(ctx.cluster, quiet=3.0, limit=60.0)
    cpu0 = proc_cpu(ctx.pid)
    manifest = scenario.request_manifest("bulk", [], "bulk")
    del manifest["spec"]["distinctIds"]
    manifest["spec"]["distinctIdsFrom"] = {"secretKeyRef": {"name": "bulk-ids", "key": "ids"}}
    ctx.kube.apply(manifest)
    applied = time.time()
    wanted = set(ids)
    submitted: float | None = None

    def done() -> bool:
        nonlocal submitted
        ctx.operator.healthy()
        calls.update()
        if submitted is None:
            submitted = calls.submitted_at(wanted)
        phase = (ctx.cluster.http.get(
            f"/apis/mixpaneldsr.io/v1alpha1/namespaces/{NS['b']}/datasubjectrequests/bulk"
        ).json().get("status") or {}).get("phase")  # fmt: skip
        log(
            f"(b) {time.time() - applied:.0f} s: creates {len(calls.creates())}, phase {phase}, "
            f"VmRSS {proc_memory(ctx.pid)[0]:.0f} MiB"
        )
        return phase in FINAL

    wait_until(done, timeout=args.timeout, interval=5, what="(b) the request finished")
    finished = time.time()
    cpu1 = proc_cpu(ctx.pid)
    phase = ctx.kube.get("dsr", "bulk", NS["b"]).get("status", {}).get("phase")
    after = settle(ctx.cluster, quiet=10.0, limit=120.0)
    calls.update()
    window = writes(after - before)
    window.pop(("datasubjectrequests", "", "POST"), None)
    creates = len(calls.creates())
    needed = math.ceil(args.ids / ID_LIMIT)
    _, hwm = proc_memory(ctx.pid)
    return {
        "ids": args.ids,
        "phase": phase,
        "creates": creates,
        "creates_ratio": creates / needed,
        "submit_seconds": (submitted - applied) if submitted else math.nan,
        "submit_ratio": ((submitted - applied) / (needed / RATE_PER_S)) if submitted else math.nan,
        "succeeded_seconds": finished - applied,
        "429": calls.count_429(),
        "429_gaps": calls.rate_limited(),
        "calls": len(calls.calls),
        "by_operation": calls.by_operation(),
        "polls_per_open_task_hour": calls.polls_per_open_task_hour(),
        "writes": {f"{r}{'/' + s if s else ''} {v}": c for (r, s, v), c in window.most_common()},
        "operator_writes": sum(window.values()),
        "cpu_seconds": cpu1 - cpu0,
        "peak_rss": hwm,
        "seconds": time.time() - started,
    }


def run_restart(ctx: Ctx) -> dict[str, Any]:
    """(d): kill -9 with N finished and ``--inflight`` in-flight requests; start again."""
    args = ctx.args
    started = time.time()
    if "a" not in ctx.results:
        log(f"(d) first {args.n} finished requests (workload (a), not measured)")
        token = ctx.project("a", "many")
        ctx.apply(one_id_requests(ctx.scenario("a"), "a", args.n, "many"))
        wait_until(
            lambda: ctx.metric_phases().get("Succeeded", 0) >= args.n,
            timeout=args.timeout, interval=10, what="(d) the finished requests",
        )  # fmt: skip
    token = ctx.project("d", "restart", maxIdsPerRequest=args.restart_max_ids)
    calls = CallLog(ctx.sandbox, token)
    logs = {name: CallLog(ctx.sandbox, t) for name, t in ctx.tokens.items()}
    n: int = args.inflight
    inflight_ids = {f"d-id-{i:06d}" for i in range(n)}
    ctx.apply(one_id_requests(ctx.scenario("d"), "d", n, "restart"))

    held: dict[str, str] = {}

    def in_flight() -> bool:
        calls.update()
        # Mixpanel keeps the in-flight tasks PENDING (as a task of days would be) until the
        # restart window is over: the restart alone is measured, not progress.
        for call in calls.creates():
            if call["tracking_id"] not in held:
                held[call["tracking_id"]] = "PENDING"
                ctx.sandbox.post(
                    f"/tasks/{call['tracking_id']}/state", {"state": "PENDING", "hold": True}
                )
        if calls.submitted_at(inflight_ids) is None:
            return False
        phases = ctx.cluster.phases(NS["d"])
        tasks = ctx.cluster.items("mixpaneltasks", NS["d"])
        tracked = all((t.get("status") or {}).get("trackingId") for t in tasks)
        log(f"(d) in flight: {dict(phases)}; {len(tasks)} tasks, all tracked: {tracked}")
        return tracked and phases.get("Submitted", 0) + phases.get("InProgress", 0) == n

    wait_until(in_flight, timeout=args.timeout, interval=3, what="(d) the in-flight requests")
    settle(ctx.cluster, quiet=3.0, limit=60.0)
    rss_before, _ = proc_memory(ctx.pid)
    ctx.operator.kill(signal.SIGKILL)
    # The ledger as the kill left it: every in-flight task Submitted, Mixpanel PENDING.
    ledger = Counter(
        ((t.get("status") or {}).get("phase"), (t.get("status") or {}).get("mixpanelState"))
        for t in ctx.cluster.items("mixpaneltasks", NS["d"])
    )
    log(f"(d) killed; ledger (phase, Mixpanel state): {dict(ledger)}")
    ctx.scenario("d").request("d-new", ["d-id-new"], "restart")
    for one in logs.values():
        one.update()
    before = ctx.cluster.counters()
    t0 = time.time()
    ctx.operator.start()
    healthy = time.time()
    log(f"(d) operator started again, healthy after {healthy - t0:.1f} s; {len(held)} tasks held")
    first_new = math.nan
    tracked: dict[str, float] = {}
    window = args.restart_window
    while time.time() < t0 + window:
        calls.update()
        for call in calls.creates(t0):
            if "d-id-new" in call["distinct_ids"] and math.isnan(first_new):
                first_new = call["at"]
        for call in calls.polls():
            tid = call["path"].rstrip("/").rsplit("/", 1)[-1]
            if call["at"] >= t0 and tid in held:
                tracked.setdefault(tid, call["at"])
        time.sleep(1.0)
    after = ctx.cluster.counters()
    rss, hwm = proc_memory(ctx.pid)
    for one in logs.values():
        one.update()
    minute = {name: one.between(t0, t0 + window) for name, one in logs.items()}
    for tid, state in held.items():
        ctx.sandbox.post(f"/tasks/{tid}/state", {"state": state, "hold": False})
    diff = after - before
    restart_writes, restart_reads = writes(diff), reads(diff)
    restart_writes_total = sum(restart_writes.values())

    def finished() -> bool:
        ctx.operator.healthy()
        phases = ctx.cluster.phases(NS["d"])
        log(f"(d) after the window: {dict(phases)}")
        return phases.get("Succeeded", 0) == n + 1

    wait_until(finished, timeout=args.timeout, interval=5, what="(d) in-flight requests Succeeded")
    calls.update()
    resent = sum(1 for c in calls.creates(t0) if inflight_ids & set(c["distinct_ids"]))
    return {
        "finished": args.n,
        "inflight": n,
        "tasks_held": len(held),
        "healthy_seconds": healthy - t0,
        "first_new_seconds": first_new - t0,
        "tracked_seconds": (max(tracked.values()) - t0) if len(tracked) == len(held) else math.nan,
        "tracked": len(tracked),
        "creates_of_accepted_work": resent,
        "429": calls.count_429(t0),
        "429_gaps": calls.rate_limited(),
        "calls_first_minute": sum(len(c) for c in minute.values()),
        "first_minute_by_project": {
            name: dict(Counter(f"{c['operation']} {c['status']}" for c in cs))
            for name, cs in minute.items()
            if cs
        },
        "429_first_minute": sum(1 for cs in minute.values() for c in cs if c["status"] == 429),
        "writes": {
            f"{r}{'/' + s if s else ''} {v}": c for (r, s, v), c in restart_writes.most_common()
        },
        "writes_total": restart_writes_total,
        "reads": {
            f"{r}{'/' + s if s else ''} {v}": c for (r, s, v), c in restart_reads.most_common()
        },
        "reads_total": sum(restart_reads.values()),
        "window_seconds": window,
        "rss_before_kill": rss_before,
        "rss_after_restart": rss,
        "peak_rss_after_restart": hwm,
        "all_succeeded_seconds": time.time() - t0,
        "seconds": time.time() - started,
    }


def run_retrievals(ctx: Ctx) -> dict[str, Any]:
    """(c): ``--retrievals`` one-id retrievals in one project whose history lets
    ``--scan-slots`` retrievals be outstanding at once (``maxOutstandingRetrievals`` says the
    same to the operator); applied at once, wait for all Succeeded."""
    args = ctx.args
    n: int = args.retrievals
    slots: int = args.scan_slots
    started = time.time()
    history = scan_history_days(slots)
    token = ctx.project("c", "exports", maxOutstandingRetrievals=slots)
    ctx.sandbox.post(f"/projects/{token}", {"history_days": history})
    calls = CallLog(ctx.sandbox, token)
    cpu0 = proc_cpu(ctx.pid)
    items = [
        ctx.scenario("c").request_manifest(
            f"c-{i:05d}", [f"c-id-{i:05d}"], "exports", type="Retrieval"
        )
        for i in range(n)
    ]
    first_apply, last_apply = ctx.apply(items)
    most = 0

    def done() -> bool:
        nonlocal most
        ctx.operator.healthy()
        calls.update()
        scan = ctx.sandbox.get(f"/projects/{token}")["project"].get("outstanding_scan_days", 0)
        most = max(most, scan // history if history else 0)
        phases = ctx.cluster.phases(NS["c"])
        log(
            f"(c) {time.time() - first_apply:.0f} s: creates {len(calls.creates())}, "
            f"outstanding {scan // history if history else 0}, 429s {calls.count_429()}; "
            f"{dict(phases)}"
        )
        return phases.get("Succeeded", 0) + phases.get("Failed", 0) >= n

    wait_until(done, timeout=args.timeout, interval=5, what=f"(c) {n} retrievals finished")
    finished = time.time()
    cpu1 = proc_cpu(ctx.pid)
    calls.update()
    task_seconds = TASK_SECONDS * args.time_scale
    floor = math.ceil(n / slots) * task_seconds
    return {
        "n": n,
        "slots": slots,
        "history_days": history,
        "phases": dict(ctx.cluster.phases(NS["c"])),
        "creates": len(calls.creates()),
        "calls": len(calls.calls),
        "calls_per_request": len(calls.calls) / n,
        "by_operation": calls.by_operation(),
        "429": calls.count_429(),
        "429_gaps": calls.rate_limited(),
        "polls_per_open_task_hour": calls.polls_per_open_task_hour(),
        "max_outstanding": most,
        "succeeded_seconds": finished - first_apply,
        "floor_seconds": floor,
        "time_ratio": (finished - first_apply) / floor,
        "apply_seconds": last_apply - first_apply,
        "cpu_seconds": cpu1 - cpu0,
        "seconds": time.time() - started,
    }


def run_projects(ctx: Ctx) -> dict[str, Any]:
    """(e): ``--projects`` projects in the three regions in turn, each with its own token and
    rate budget, ``--per-project`` one-id deletions each, all applied at once."""
    args = ctx.args
    started = time.time()
    count, per = args.projects, args.per_project
    scenario = ctx.scenario("e")
    rss0, _ = proc_memory(ctx.pid)
    tokens: dict[str, str] = {}
    t0 = time.time()
    for i in range(count):
        name = f"p{i:02d}"
        tokens[name] = scenario.project(
            name, REGIONS[i % len(REGIONS)], requestInterval=args.request_interval
        )
    ctx.kube.run(
        "wait", "--for=condition=Ready", "--timeout=600s", "-n", NS["e"],
        "mixpanelproject", "--all", timeout=650,
    )  # fmt: skip
    ready_seconds = time.time() - t0
    idle_from, cpu_idle0 = time.time(), proc_cpu(ctx.pid)
    time.sleep(20)
    rss_idle, _ = proc_memory(ctx.pid)
    cpu_idle1 = proc_cpu(ctx.pid)
    idle_seconds = time.time() - idle_from
    log(f"(e) {count} projects Ready after {ready_seconds:.0f} s; VmRSS {rss_idle:.0f} MiB")
    logs = {name: CallLog(ctx.sandbox, token) for name, token in tokens.items()}
    for one in logs.values():
        one.update()
    before = settle(ctx.cluster, quiet=3.0, limit=60.0)
    mark = time.time()
    cpu0 = proc_cpu(ctx.pid)
    items = [
        scenario.request_manifest(f"e-{name}-{k:05d}", [f"e-{name}-id-{k:05d}"], name)
        for name in tokens
        for k in range(per)
    ]
    first_apply, last_apply = ctx.apply(items)
    total = count * per

    def done() -> bool:
        ctx.operator.healthy()
        phases = ctx.cluster.phases(NS["e"])
        rss, _ = proc_memory(ctx.pid)
        log(f"(e) {time.time() - first_apply:.0f} s: {dict(phases)}; VmRSS {rss:.0f} MiB")
        return phases.get("Succeeded", 0) >= total

    wait_until(done, timeout=args.timeout, interval=10, what=f"(e) {total} requests Succeeded")
    finished = time.time()
    cpu1 = proc_cpu(ctx.pid)
    after = settle(ctx.cluster, quiet=10.0, limit=120.0)
    all_writes = writes(after - before)
    all_writes.pop(("datasubjectrequests", "", "POST"), None)
    events = sum(v for (r, _, _), v in all_writes.items() if r == "events")
    submitted: list[float] = []
    creates = rate_limited = 0
    gaps: list[float] = []
    per_second: Counter[int] = Counter()
    for name, one in logs.items():
        one.update()
        window = one.between(mark)
        wanted = {f"e-{name}-id-{k:05d}" for k in range(per)}
        at = one.submitted_at(wanted)
        submitted.append(at - last_apply if at else math.nan)
        creates += len(one.creates(mark))
        rate_limited += one.count_429(mark)
        ats = sorted(c["at"] for c in window if c["status"] != 429)
        gaps += [b - a for a, b in itertools.pairwise(ats)]
        per_second.update(int(a) for a in ats)
    calls = sum(len(one.between(mark)) for one in logs.values())
    _, hwm = proc_memory(ctx.pid)
    return {
        "projects": count,
        "per_project": per,
        "regions": {r: sum(1 for i in range(count) if REGIONS[i % 3] == r) for r in REGIONS},
        "ready_seconds": ready_seconds,
        "rss_before_projects": rss0,
        "rss_idle": rss_idle,
        "kib_per_project": (rss_idle - rss0) * 1024 / count,
        "idle_cpu_share": (cpu_idle1 - cpu_idle0) / idle_seconds,
        "creates": creates,
        "creates_per_project": creates / count,
        "calls": calls,
        "calls_per_request": calls / total,
        "429": rate_limited,
        "min_gap": min(gaps, default=math.nan),
        "peak_calls_per_second": max(per_second.values(), default=0),
        "submit_seconds": max(submitted),
        "submit_seconds_median": sorted(submitted)[len(submitted) // 2],
        "succeeded_seconds": finished - first_apply,
        "apply_seconds": last_apply - first_apply,
        "writes_per_request": (sum(all_writes.values()) - events) / total,
        "cpu_per_1000": (cpu1 - cpu0) / total * 1000,
        "peak_rss": hwm,
        "seconds": time.time() - started,
    }


# ---------------------------------------------------------------------- the report


def num(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def verdict(value: Any, limit: float | None) -> str:
    if limit is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "met" if value <= limit else "MISSED"


def report(ctx: Ctx, baselines: dict[str, BaselineRun], elapsed: float) -> str:
    """One table: each figure, the operator's value, the baseline's, the target."""
    args = ctx.args
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []

    def row(label: str, ours: str, base: str = "", target: str = "", ok: str = "") -> None:
        rows.append((label, ours, base, target, ok))

    def figures(workload: str) -> dict[str, Any]:
        run = baselines.get(workload)
        return run.figures if run is not None and run.figures else {}

    n = args.n
    if "a" in ctx.results:
        a, bf = ctx.results["a"], figures("a")
        x = n / bf["sample"] if bf else math.nan
        needed = math.ceil(n / ID_LIMIT)
        base_submit = bf["submit_seconds"] * x if bf else math.nan
        rows.append((f"(a) {n} one-id deletions in one project ({a['seconds']:.0f} s)",))
        row("Mixpanel creates / ceil(ids / 2000)", num(a["creates_ratio"]),
            f"{num(n / needed, '{:.0f}')} *" if bf else "-", "<= 1.01",
            verdict(a["creates_ratio"], 1.01))  # fmt: skip
        row("last apply -> every id submitted, / (creates needed / rate)",
            f"{num(a['submit_ratio'])} ({num(a['submit_seconds'], '{:.1f}')} s)",
            f"{num(base_submit / needed, '{:.0f}')} ({num(base_submit / 3600, '{:.1f}')} h) *",
            "<= 1.10", verdict(a["submit_ratio"], 1.10))  # fmt: skip
        row("429 answers", str(a["429"]), str(bf.get("429", "-")), "0", verdict(a["429"], 0))
        row("Kubernetes API writes per request, no Events", num(a["writes_per_request"]),
            "n/a", "<= 4", verdict(a["writes_per_request"], 4))  # fmt: skip
        row("  request status writes (one per phase shown)", num(a["status_writes_per_request"]))
        row("  receipts", num(a["receipts_per_request"]))
        row("  the rest (tasks, projects)", num(
            a["writes_per_request"] - a["status_writes_per_request"] - a["receipts_per_request"],
            "{:.3f}"))  # fmt: skip
        row("  with Events", num(a["writes_per_request_with_events"]), "n/a")
        row("Mixpanel calls per request", num(a["calls_per_request"], "{:.4f}"),
            f"{num(bf['calls'] / bf['sample'])} *" if bf else "-")  # fmt: skip
        row("status polls per open task per hour", num(a["polls_per_open_task_hour"], "{:.0f}"),
            num(bf.get("polls_per_open_task_hour"), "{:.0f}"))  # fmt: skip
        row("first apply -> all Succeeded", f"{a['succeeded_seconds']:.0f} s",
            f"{bf['done_seconds'] * x / 3600:.1f} h *" if bf else "-")  # fmt: skip
        row("apply (kubectl, requests/s)", num(a["apply_per_second"], "{:.0f}"))
        row("operator peak RSS (VmHWM)", f"{a['peak_rss']:.0f} MiB", "", "<= 200 MiB",
            verdict(a["peak_rss"], 200))  # fmt: skip
        row("operator idle RSS, no requests", f"{a['idle_rss']:.0f} MiB", "", "<= 100 MiB",
            verdict(a["idle_rss"], 100))  # fmt: skip
        row("  RSS growth per request", f"{a['kib_per_request']:.1f} KiB")
        row("  RSS once all finished", f"{a['rss_after']:.0f} MiB")
        row("operator CPU s per 1,000 requests", num(a["cpu_per_1000"], "{:.1f}"))
        row("kube-apiserver + etcd CPU s per 1,000 requests",
            num(a["apiserver_etcd_cpu_seconds"] / n * 1000, "{:.1f}"))  # fmt: skip
        notes.append(
            f"(a) ids per create: {a['create_sizes']}; every id submitted "
            f"{num(a['first_apply_to_submitted'], '{:.0f}')} s after the first apply, "
            f"{num(a['submit_seconds'], '{:.0f}')} s after the last (apply took "
            f"{a['apply_seconds']:.0f} s)"
        )
        if bf:
            notes.append(
                f"* (a) baseline run on {bf['sample']} requests, extrapolated linearly to {n} "
                f"(x{x:g}): {bf['creates']} creates, {bf['calls']} calls {bf['by_operation']}, "
                f"every id submitted after {bf['submit_seconds']:.0f} s, all done after "
                f"{bf['done_seconds']:.0f} s"
            )
    if "b" in ctx.results:
        r, bf = ctx.results["b"], figures("b")
        needed = math.ceil(r["ids"] / ID_LIMIT)
        rows.append((f"(b) one deletion of {r['ids']} ids from a Secret ({r['seconds']:.0f} s)",))
        row("Mixpanel creates / ceil(ids / 2000)", num(r["creates_ratio"]),
            num(bf["creates"] / needed) if bf else "-", "<= 1.01",
            verdict(r["creates_ratio"], 1.01))  # fmt: skip
        row("apply -> every id submitted, / (creates needed / rate)",
            f"{num(r['submit_ratio'])} ({num(r['submit_seconds'], '{:.1f}')} s)",
            f"{num(bf['submit_seconds'] / needed)} ({bf['submit_seconds']:.1f} s)" if bf else "-",
            "<= 1.10", verdict(r["submit_ratio"], 1.10))  # fmt: skip
        row("429 answers", str(r["429"]), str(bf.get("429", "-")), "0", verdict(r["429"], 0))
        row("Mixpanel calls", str(r["calls"]), str(bf.get("calls", "-")))
        row("status polls per open task per hour", num(r["polls_per_open_task_hour"], "{:.0f}"),
            num(bf.get("polls_per_open_task_hour"), "{:.0f}"))  # fmt: skip
        row("apply -> Succeeded", f"{r['succeeded_seconds']:.0f} s ({r['phase']})",
            f"{bf['done_seconds']:.0f} s" if bf else "-")  # fmt: skip
        row("Kubernetes API writes (the user's aside)", str(r["operator_writes"]), "n/a")
        row("operator CPU s", num(r["cpu_seconds"], "{:.1f}"))
    if "d" in ctx.results:
        d, bf = ctx.results["d"], figures("d")
        x = d["inflight"] / bf["inflight"] if bf else math.nan
        w = f"{d['window_seconds']:.0f} s"
        rows.append((
            f"(d) restart: {d['finished']} finished, {d['inflight']} in flight in "
            f"{d['tasks_held']} tasks, 1 new request ({d['seconds']:.0f} s)",
        ))  # fmt: skip
        row("start -> first new request submitted", f"{num(d['first_new_seconds'], '{:.1f}')} s",
            f"{num(bf['first_new_seconds'] * x, '{:.0f}')} s *" if bf else "-")  # fmt: skip
        row("start -> every in-flight task polled again",
            f"{num(d['tracked_seconds'], '{:.1f}')} s ({d['tracked']}/{d['tasks_held']})",
            f"{num(bf['tracked_seconds'] * x, '{:.0f}')} s *" if bf else "-",
            "<= 30 s", verdict(d["tracked_seconds"], 30))  # fmt: skip
        row("creates for accepted work", str(d["creates_of_accepted_work"]),
            str(bf.get("creates_of_accepted_work", "-")), "0",
            verdict(d["creates_of_accepted_work"], 0))  # fmt: skip
        row(f"Mixpanel calls in the first {w} (all projects)", str(d["calls_first_minute"]),
            str(bf.get("calls_first_minute", "-")))  # fmt: skip
        row(
            f"429 answers in the first {w}",
            str(d["429_first_minute"]),
            str(bf.get("429_first_minute", "-")),
            "0",
            verdict(d["429_first_minute"], 0),
        )
        row("429 answers, start -> all Succeeded", str(d["429"]), "", "0", verdict(d["429"], 0))
        row(f"Kubernetes API writes in the first {w}", str(d["writes_total"]), "n/a")
        request_gets = d["reads"].get("datasubjectrequests GET", 0)
        row(f"Kubernetes API reads in the first {w}",
            f"{d['reads_total']} ({request_gets} GET dsr)", "n/a")  # fmt: skip
        row("start -> liveness endpoint answers", f"{d['healthy_seconds']:.1f} s")
        row("operator RSS before the kill / after the restart",
            f"{d['rss_before_kill']:.0f} / {d['rss_after_restart']:.0f} MiB")  # fmt: skip
        row("start -> in-flight and new requests Succeeded", f"{d['all_succeeded_seconds']:.0f} s")
        if bf:
            notes.append(
                f"* (d) baseline: {bf['inflight']} open tasks in the loop's state file (and {n} "
                f"finished), extrapolated linearly to {d['inflight']} (x{x:g}); it polls every "
                f"open task before it creates; first {w}: {bf['first_minute_by_operation']}"
            )
    if "c" in ctx.results:
        c, bf = ctx.results["c"], figures("c")
        rows.append((
            f"(c) {c['n']} one-id retrievals, {c['slots']} may be outstanding "
            f"(history {c['history_days']} days) ({c['seconds']:.0f} s)",
        ))  # fmt: skip
        row("Mixpanel creates / requests", num(c["creates"] / c["n"]),
            num(bf["creates"] / bf["n"]) if bf else "-")  # fmt: skip
        row("Mixpanel calls per request", num(c["calls_per_request"]),
            num(bf.get("calls_per_request")))  # fmt: skip
        row("status polls per open task per hour", num(c["polls_per_open_task_hour"], "{:.0f}"),
            num(bf.get("polls_per_open_task_hour"), "{:.0f}"))  # fmt: skip
        row("429 answers", str(c["429"]), str(bf.get("429", "-")), "0", verdict(c["429"], 0))
        row("most retrievals outstanding at once", str(c["max_outstanding"]),
            str(bf.get("max_outstanding", "-")), f"<= {c['slots']}",
            verdict(c["max_outstanding"], c["slots"]))  # fmt: skip
        row("first apply -> all finished, / (rounds x task time)",
            f"{num(c['time_ratio'])} ({c['succeeded_seconds']:.0f} s)",
            f"{num(bf['done_seconds'] / c['floor_seconds'])} ({bf['done_seconds']:.0f} s)"
            if bf else "-")  # fmt: skip
        row("operator CPU s", num(c["cpu_seconds"], "{:.1f}"))
        notes.append(
            f"(c) floor: ceil({c['n']} / {c['slots']}) rounds of a "
            f"{TASK_SECONDS * args.time_scale:.0f}-s task = {c['floor_seconds']:.0f} s; "
            f"phases {c['phases']}"
        )
    if "e" in ctx.results:
        e, bf = ctx.results["e"], figures("e")
        total = e["projects"] * e["per_project"]
        rows.append((
            f"(e) {e['projects']} projects {e['regions']}, {e['per_project']} one-id deletions "
            f"each ({e['seconds']:.0f} s)",
        ))  # fmt: skip
        row("projects applied -> all Ready", f"{e['ready_seconds']:.0f} s")
        row("operator RSS per project, idle", f"{e['kib_per_project']:.0f} KiB")
        row("operator CPU share, all projects idle", f"{e['idle_cpu_share']:.3f}")
        row("Mixpanel creates per project", num(e["creates_per_project"]), f"{e['per_project']} *")
        row("Mixpanel calls per request", num(e["calls_per_request"], "{:.3f}"),
            num(bf.get("calls_per_request")))  # fmt: skip
        row("429 answers", str(e["429"]), str(bf.get("429", "-")), "0", verdict(e["429"], 0))
        row("shortest gap between one project's calls", f"{num(e['min_gap'], '{:.2f}')} s",
            "", f">= {args.interval_s:g} s")  # fmt: skip
        row("most Mixpanel calls in one second, all projects",
            str(e["peak_calls_per_second"]))  # fmt: skip
        row("last apply -> every id submitted (slowest project)",
            f"{num(e['submit_seconds'], '{:.1f}')} s",
            f"{num(bf.get('submit_seconds'), '{:.0f}')} s *")  # fmt: skip
        row("first apply -> all Succeeded", f"{e['succeeded_seconds']:.0f} s",
            f"{num(bf.get('done_seconds'), '{:.0f}')} s *")  # fmt: skip
        row("Kubernetes API writes per request, no Events", num(e["writes_per_request"]))
        row("operator CPU s per 1,000 requests", num(e["cpu_per_1000"], "{:.1f}"))
        row("operator peak RSS (VmHWM)", f"{e['peak_rss']:.0f} MiB")
        notes.append(
            f"(e) {total} requests applied in {e['apply_seconds']:.0f} s; median project: every "
            f"id submitted {num(e['submit_seconds_median'], '{:.1f}')} s after the last apply"
        )
        if bf:
            notes.append(
                f"* (e) baseline: {bf['projects']} projects (one naive loop each, in parallel; "
                f"each has its own budget, so any one stands for all {e['projects']}), "
                f"{bf['per_project']} requests each: one create per request"
            )
    for workload in ("a", "b", "c", "d", "e"):
        gaps = ctx.results.get(workload, {}).get("429_gaps")
        if gaps:
            notes.append(f"({workload}) the operator's 429s: {'; '.join(gaps)}")
    for workload, run in baselines.items():
        if run.error:
            notes.append(f"baseline ({workload}) failed: {run.error}")
    width = max(len(r[0]) for r in rows if len(r) > 1) + 2
    lines = [
        "",
        "bench-scale: real kube-apiserver + etcd, sandbox Mixpanel (rate limit "
        f"{RATE_PER_S:g}/s per project; time scale {args.time_scale:g}: a task takes "
        f"~{20 * args.time_scale:.0f} s), requestInterval {args.request_interval}",
        f"operator flags: {' '.join(ctx.operator.flags + ctx.operator.extra)}",
        f"machine: {os.cpu_count()} cores, load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min), "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "baseline: one task per request (per 2000 ids), each open task polled every "
        f"{args.baseline_poll:g} s, one call per {args.interval_s:g} s, a due poll first",
        "",
        f"{'':{width}}{'operator':>22}{'baseline':>24}{'target':>12}",
    ]
    for cells in rows:
        if len(cells) == 1:
            lines.append(cells[0])
            continue
        label, ours, base, target, ok = cells
        lines.append(f"  {label:{width - 2}}{ours:>22}{base:>24}{target:>12}  {ok}")
    lines += ["", *notes]
    for workload in ("a", "b", "c", "d", "e"):
        result = ctx.results.get(workload)
        if result is None:
            continue
        if "writes" in result:
            lines.append(f"({workload}) Kubernetes writes: {result['writes']}")
        if workload == "d":
            lines.append(f"(d) Kubernetes reads: {result['reads']}")
            lines.append(f"(d) Mixpanel calls in the window: {result['first_minute_by_project']}")
        elif "by_operation" in result:
            lines.append(f"({workload}) Mixpanel calls: {result['by_operation']}")
    lines.append(f"\n(whole command: {elapsed:.0f} s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workloads", default="a,b,c,d,e", help="which of a,b,c,d,e (default all)")
    parser.add_argument(
        "--n", type=int, default=10000, help="(a) one-id requests; (d) finished ones"
    )
    parser.add_argument("--ids", type=int, default=100000, help="(b) ids in the Secret")
    parser.add_argument("--retrievals", type=int, default=200, help="(c) one-id retrievals")
    parser.add_argument(
        "--scan-slots", type=int, default=20, help="(c) retrievals the scan budget lets run at once"
    )
    parser.add_argument("--inflight", type=int, default=1000, help="(d) requests in flight")
    parser.add_argument(
        "--restart-max-ids", type=int, default=100, help="(d) maxIdsPerRequest of its project"
    )
    parser.add_argument(
        "--restart-window", type=float, default=60.0, help="(d) seconds measured after the start"
    )
    parser.add_argument("--projects", type=int, default=50, help="(e) projects, regions in turn")
    parser.add_argument(
        "--per-project", type=int, default=100, help="(e) one-id deletions per project"
    )
    parser.add_argument("--chunk", type=int, default=500, help="requests per kubectl apply")
    parser.add_argument("--parallel", type=int, default=3, help="kubectl applies at once")
    parser.add_argument(
        "--time-scale", type=float, default=3.0, help="sandbox lifecycle scale (3: ~60 s a task)"
    )
    parser.add_argument(
        "--request-interval", default="1100ms", help="projects' spec.requestInterval"
    )
    parser.add_argument(
        "--packing-quiet", default="10s", help="operator --packing-quiet (the product's default)"
    )
    parser.add_argument(
        "--packing-max-wait", default="120s", help="operator --packing-max-wait (the default)"
    )
    parser.add_argument("--poll-initial", default="5s", help="operator --poll-initial")
    parser.add_argument("--poll-max", default="20s", help="operator --poll-max")
    parser.add_argument(
        "--baseline-poll",
        type=float,
        default=20.0,
        help="baseline: seconds between polls of a task",
    )
    parser.add_argument(
        "--baseline-sample", type=int, default=200, help="baseline (a): requests run"
    )
    parser.add_argument(
        "--baseline-inflight", type=int, default=100, help="baseline (d): open tasks"
    )
    parser.add_argument(
        "--baseline-projects", type=int, default=3, help="baseline (e): projects run"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds any one wait may take")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument(
        "--live", action="store_true", help="run the work tree as it is, not a snapshot"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.interval_s = parse_duration(args.request_interval)
    workloads = [w for w in WORKLOADS if w in args.workloads.split(",")]
    # A SIGTERM stops the processes this command started (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    base = workdir()
    log(f"logs in {base}")
    crds, env = (CRDS, {}) if args.live else snapshot(base)
    baselines: dict[str, BaselineRun] = {}
    with ControlPlane() as plane:
        kube = Kube(plane)
        kube.run("apply", "-f", str(crds))
        kube.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        for namespace in [OPERATOR_NS, *NS.values()]:
            kube.run("create", "namespace", namespace)
        sandbox = Sandbox(base, time_scale=args.time_scale)
        sandbox.start()
        operator = Operator(
            base, plane.kubeconfig, sandbox.urls, env=env,
            extra=[
                "--poll-initial", args.poll_initial, "--poll-max", args.poll_max,
                "--packing-quiet", args.packing_quiet, "--packing-max-wait", args.packing_max_wait,
            ],
        )  # fmt: skip
        cluster = Cluster(plane.kubeconfig)
        sampler = Sampler(operator)
        ctx = Ctx(args, kube, cluster, sandbox, operator, sampler, plane, base)
        try:
            operator.start()
            sampler.start()
            if not args.no_baseline:
                baselines = {r.workload: r for r in start_baselines(sandbox, args, workloads, base)}
            runners = {
                "a": run_many, "b": run_bulk, "c": run_retrievals, "d": run_restart,
                "e": run_projects,
            }  # fmt: skip
            for workload in workloads:
                log(f"workload ({workload})")
                ctx.results[workload] = runners[workload](ctx)
                log(f"workload ({workload}) done in {ctx.results[workload]['seconds']:.0f} s")
                log(f"({workload}) {json.dumps(ctx.results[workload], default=str)}")
            for run in baselines.values():
                if run.thread is not None and run.thread.is_alive():
                    log(f"waiting for baseline ({run.workload})")
                    run.thread.join(args.timeout)
        finally:
            sampler.stopped.set()
            cluster.close()
            operator.stop()
            sandbox.stop()
    elapsed = time.time() - started
    print(report(ctx, baselines, elapsed))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "operator": ctx.results,
                    "baseline": {
                        w: {"figures": r.figures, "error": r.error} for w, r in baselines.items()
                    },
                    "rss_samples": sampler.samples,
                    "seconds": elapsed,
                },
                indent=1,
                default=str,
            )
        )
    if args.keep:
        print(f"logs kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
