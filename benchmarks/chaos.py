"""``make chaos``: requests through kill -9, control plane restarts and a misbehaving Mixpanel.

On a real control plane (kube-apiserver + etcd), the Mixpanel sandbox and the operator
(a snapshot of the work tree, as in ``make kill-run``), the run applies N requests in
batches across three projects in three regions (US, EU, IN), one in ``--retrieval-every``
a Retrieval of two ids and the rest one-id Deletions, while on a seeded schedule:

- the operator gets ``--kills`` ``kill -9`` (each followed by a start): some aimed at a
  create and its one write (``make kill-run``'s three ways: mid-call, at Mixpanel's answer,
  right after it), some at a cancel (requests whose task Mixpanel can still cancel are
  deleted, and the operator dies during the cancel call or once Mixpanel carried it out),
  the others at random moments;
- kube-apiserver is restarted once and etcd once (the same process, data and ports);
- the sandbox answers ~20% of the GDPR calls with a fault: 5xx, a dropped connection
  (nothing done), a lost answer (done, the connection closed before the answer: what a
  timeout after sending looks like), plus bursts of 429.

End state, checked (the command exits non-zero when one fails): every request that was not
deleted is Succeeded (a retrieval with its export link in its Secret), every id of each is
in a SUCCESS task of its kind in the sandbox, no request or MixpanelTask is stuck, ids sent
twice only where a create's answer was lost (a MixpanelTask with lostAnswers >= 1; each is
traced to the kill or the sandbox fault that lost it), the operator never exited unless
killed, its memory did not grow, no engine traceback, and the leak scan of every operator
log, Event, status and Secret found no token, raw distinct id or export link out of place.
Then two replicas hand over (``benchmarks/chaos_handover.py``), and the figures go to
docs/reliability.md (``--write-docs``).

    .venv/bin/python -m benchmarks.chaos [--seed 7] [--n 1000] [--kills 20] [--batch 100]
        [--no-handover] [--write-docs docs/reliability.md] [--keep] [--json out.json]

``run_chaos`` is the core; ``tests/e2e/test_chaos.py`` calls it with small numbers.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import wait_until, workdir

from benchmarks.chaos_docs import figures, render
from benchmarks.chaos_handover import HandoverOutcome, run_handover
from benchmarks.chaos_leaks import LeakScan, Needles, export_links, scan
from benchmarks.chaos_stack import Api, Stack, Trace, dump, latency, log, tracebacks, unanswered
from benchmarks.chaos_watch import Exit, Memory, Watch, WatchedOperator
from benchmarks.kill_run import AIMS, Env, Kill, kill_once
from mixpanel_dsr.api.models import Phase, RequestType, TaskPhase
from mixpanel_dsr.localcluster import Component

NAMESPACE = "chaos"
HANDOVER = "handover"
#: (project, region): one project per region.
PROJECTS = (("cx-us", "US"), ("cx-eu", "EU"), ("cx-in", "IN"))
#: How a kill is aimed at a cancel: a moment after the delete (before or during the slowed
#: cancel call), or after Mixpanel carried it out while the operator was frozen (its answer
#: never read).
CANCEL_AIMS = ("cancel-pending", "cancel-answer")
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}
LIVE_TASK = {TaskPhase.CREATING, TaskPhase.SUBMITTED, TaskPhase.STARTED}
CREATES = ("create_deletion", "create_retrieval")
#: Sandbox faults after which a create's answer is unknown to the operator (a dropped
#: connection, a lost answer, an unreadable 2xx, a gateway's 502 or 504): it records a lost
#: answer and resends the task alone. Other 5xx are answers (nothing created; retried).
AMBIGUOUS_FAULTS = ("drop", "lost_response", "malformed")
AMBIGUOUS_STATUSES = (502, 504)


def ambiguous(call: dict[str, Any]) -> bool:
    fault = call["fault"]
    return fault in AMBIGUOUS_FAULTS or (fault == "error" and call["status"] in AMBIGUOUS_STATUSES)


_HEADER_TIME = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)")
_CONNECTION_ERRORS = (
    "MaxRetryError", "NewConnectionError", "ProtocolError", "RemoteDisconnected",
    "ConnectionRefusedError", "ConnectionResetError", "ReadTimeoutError",
    "ServerDisconnectedError", "ClientConnectorError", "ClientOSError",
    # kube-apiserver's 503 while it starts: its CRD paths come up after /readyz.
    "made before all known HTTP paths have been installed",
)  # fmt: skip


def say(message: str) -> None:
    log(message, "chaos")


@dataclass
class ChaosConfig:
    requests: int = 1000
    kills: int = 20
    seed: int = 7
    batch: int = 100
    max_ids: int = 50
    #: One request in this many is a Retrieval (of two ids).
    retrieval_every: int = 10
    #: Shares of the kills aimed at a create and at a cancel (the rest land at random).
    create_share: float = 0.3
    cancel_share: float = 0.2
    #: Requests deleted per cancel kill (each from another task Mixpanel can still cancel).
    deletes_per_cancel: int = 2
    apiserver_restarts: int = 1
    etcd_restarts: int = 1
    #: Seconds a restarted component stays down.
    down: float = 3.0
    error_rate: float = 0.10
    drop_rate: float = 0.05
    lost_response_rate: float = 0.05
    #: 429 bursts of ``burst_size`` calls, started at seeded moments.
    bursts: int = 8
    burst_size: int = 5
    #: Sandbox latency (s) while a kill is aimed at a create, and at a cancel (shorter: a
    #: task is cancellable only while PENDING or STAGING).
    latency: float = 2.0
    cancel_latency: float = 3.0
    gap: tuple[float, float] = (0.5, 4.0)
    aim_timeout: float = 45.0
    timeout: float = 1500.0
    #: The sandbox's requests per second per project (Mixpanel's is lower; a faster run).
    rate_limit: float = 5.0
    #: The sandbox's PENDING phase in seconds (times its time scale): cancellable this long.
    pending: float = 60.0
    #: Seconds the operator idles after the work, for the memory check.
    idle: float = 20.0

    def kill_config(self) -> Any:
        """The settings ``kill_once`` reads (``make kill-run``'s Config)."""
        from benchmarks.kill_run import Config

        return Config(
            requests=self.requests, kills=self.kills, seed=self.seed, batch=self.batch,
            latency=self.latency, gap=self.gap, aim_timeout=self.aim_timeout,
        )  # fmt: skip


@dataclass
class Restart:
    component: Component
    #: Kill after which it happened, and when (s into the run).
    after_kill: int
    at: float = 0.0
    seconds: float = 0.0
    #: Wall-clock start and end (the operator log's timestamps are wall-clock).
    wall: tuple[float, float] = (0.0, 0.0)


@dataclass
class Duplicate:
    """A MixpanelTask whose create may have reached Mixpanel twice, and why."""

    task: str
    ids: int
    #: Of them, ids Mixpanel holds in two tasks (the create did go through twice).
    sent_twice: int
    lost_answers: int
    create_calls: int
    #: The crash windows or faults that lost its answers.
    causes: list[str]


@dataclass
class ChaosOutcome:
    config: ChaosConfig
    kills: list[Kill] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    bursts: int = 0
    deleted: set[str] = field(default_factory=set)
    phases: Counter[str] = field(default_factory=Counter)
    task_phases: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    stuck_tasks: list[str] = field(default_factory=list)
    uncovered: set[str] = field(default_factory=set)
    sent_twice: set[str] = field(default_factory=set)
    bound_ids: set[str] = field(default_factory=set)
    duplicates: list[Duplicate] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    cancels: Counter[str] = field(default_factory=Counter)
    unplanned_exits: list[Exit] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    leaks: LeakScan = field(default_factory=LeakScan)
    traces: list[Trace] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: str = ""
    handover: HandoverOutcome | None = None
    #: The leak scan again after the two-replica part, with its logs, ids and token.
    handover_leaks: LeakScan | None = None

    @property
    def engine_traces(self) -> list[Trace]:
        """Engine tracebacks, but for those a kill cut short and the API server's absence
        logged while it restarted (reported apart)."""
        return [
            t for t in self.traces if t.engine and not t.kill_artifact and t not in self.api_down
        ]

    @property
    def api_down(self) -> list[Trace]:
        """Tracebacks of a refused or broken connection to kube-apiserver (or its 503 while
        it starts), logged while a control plane component restarted (or within 30 s after
        it was back)."""
        out = []
        for trace in self.traces:
            stamp = _HEADER_TIME.match(trace.header)
            if not stamp or not any(m in trace.exception for m in _CONNECTION_ERRORS):
                continue
            at = datetime.strptime(
                stamp.group(1).replace("T", " "), "%Y-%m-%d %H:%M:%S"
            ).timestamp()
            if any(r.wall[0] - 1 <= at <= r.wall[1] + 30 for r in self.restarts):
                out.append(trace)
        return out

    def failures(self) -> list[str]:
        out = []
        if self.timed_out:
            out.append(f"not every request finished: {self.timed_out}")
        if self.wrong:
            out.append(f"{len(self.wrong)} requests not done right: {self.wrong[:10]}")
        if self.stuck_tasks:
            out.append(f"{len(self.stuck_tasks)} MixpanelTasks stuck: {self.stuck_tasks[:10]}")
        if self.uncovered:
            out.append(f"{len(self.uncovered)} ids in no SUCCESS task")
        if self.sent_twice - self.bound_ids:
            out.append(
                f"{len(self.sent_twice - self.bound_ids)} ids sent twice outside the creates "
                "whose answer was lost"
            )
        if any(not d.causes for d in self.duplicates):
            out.append("a lost answer no kill or fault explains")
        if self.unplanned_exits:
            out.append(f"the operator exited {len(self.unplanned_exits)} times unkilled")
        out += self.memory.failures()
        if self.leaks.leaks:
            out.append(f"{len(self.leaks.leaks)} leaks: {dict(self.leaks.by_kind())}")
        if self.engine_traces:
            out.append(
                f"{len(self.engine_traces)} engine tracebacks: "
                + "; ".join(sorted({t.exception for t in self.engine_traces}))
            )
        if self.handover is not None:
            out += [f"two replicas: {f}" for f in self.handover.failures()]
        if self.handover_leaks is not None and self.handover_leaks.leaks:
            out.append(f"two replicas: {len(self.handover_leaks.leaks)} leaks")
        return out


# ---------------------------------------------------------------------- the requests


def ids_of(i: int, salt: str, config: ChaosConfig) -> list[str]:
    count = 2 if is_retrieval(i, config) else 1
    return [f"person-{i:05d}-{k}-{salt}" for k in range(count)]


def is_retrieval(i: int, config: ChaosConfig) -> bool:
    return i % config.retrieval_every == config.retrieval_every - 1


def name_of(i: int) -> str:
    return f"cx-{i:05d}"


def index_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def apply_batch(
    scenario: Scenario, b: int, config: ChaosConfig, salt: str, *, tries: int = 5
) -> None:
    first, last = b * config.batch, min((b + 1) * config.batch, config.requests)
    items = []
    for i in range(first, last):
        spec: dict[str, Any] = {"receivedAt": "2026-11-30T09:00:00Z"}
        if is_retrieval(i, config):
            spec["type"] = RequestType.RETRIEVAL.value
        project = PROJECTS[i % len(PROJECTS)][0]
        items.append(
            scenario.request_manifest(name_of(i), ids_of(i, salt, config), project, **spec)
        )
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
    for attempt in range(tries):
        result = scenario.kube.run("apply", "-f", "-", input=text, timeout=300, check=False)
        if result.returncode == 0:
            return
        say(f"apply of batch {b} failed (try {attempt + 1}): {result.stderr.strip()[:200]}")
        time.sleep(3)
    raise RuntimeError(f"batch {b} could not be applied")


# ---------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Plan:
    #: Batches applied before each kill.
    before: dict[int, list[int]]
    #: How each kill is aimed.
    aims: dict[int, str]
    #: Control plane restarts, by the kill they follow.
    restarts: dict[int, list[Component]]
    #: Kills before which a 429 burst starts.
    bursts: set[int]


def plan(config: ChaosConfig, rng: random.Random) -> Plan:
    """The seeded schedule (pure): batches, aims, restarts and 429 bursts by kill."""
    batches = math.ceil(config.requests / config.batch)
    before: dict[int, list[int]] = {}
    for b in range(batches):
        before.setdefault(b * config.kills // batches if config.kills else 0, []).append(b)
    kills = list(range(config.kills))
    # A create window needs a batch just applied; a cancel, a task already submitted.
    with_batch = [k for k in kills if k in before]
    n_create = min(len(with_batch), round(config.kills * config.create_share))
    create = sorted(rng.sample(with_batch, n_create))
    rest = [k for k in kills if k not in create and k > 0]
    cancel = sorted(rng.sample(rest, min(len(rest), round(config.kills * config.cancel_share))))
    ways = rng.sample(AIMS, len(AIMS))
    cancel_ways = rng.sample(CANCEL_AIMS, len(CANCEL_AIMS))
    aims = {k: "random" for k in kills}
    aims.update({k: ways[n % len(ways)] for n, k in enumerate(create)})
    aims.update({k: cancel_ways[n % len(cancel_ways)] for n, k in enumerate(cancel)})
    restarts: dict[int, list[Component]] = {}
    wanted = [Component.APISERVER] * config.apiserver_restarts
    wanted += [Component.ETCD] * config.etcd_restarts
    spots = rng.sample(kills[1:-1] or kills, min(len(wanted), max(1, len(kills) - 2)))
    for k, component in zip(sorted(spots), rng.sample(wanted, len(wanted)), strict=False):
        restarts.setdefault(k, []).append(component)
    bursts = set(rng.sample(kills, min(config.bursts, len(kills))))
    return Plan(before, aims, restarts, bursts)


# ---------------------------------------------------------------------- kills at a cancel


def cancellable(env: Env) -> list[dict[str, Any]]:
    """Deletion tasks the operator sees Submitted and the sandbox holds PENDING: a cancel
    sent now is carried out, not refused because the task started meanwhile."""
    pending = env.sandbox.get("/tasks", kind="deletion", state="PENDING")["tasks"]
    tracking = {t["tracking_id"] for t in pending}
    return [
        t
        for t in env.api.items("mixpaneltasks", env.namespace)
        if t["spec"]["type"] == RequestType.DELETION.value
        and (t.get("status") or {}).get("phase") == TaskPhase.SUBMITTED.value
        and t["status"].get("trackingId") in tracking
    ]


def cancel_answered(env: Env, since: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = env.sandbox.get(
        "/calls", operation="cancel_deletion", since=str(since)
    )["calls"]
    return calls


def freeze_at_cancel(env: Env, config: ChaosConfig, since: int) -> bool:
    """Freeze the operator (SIGSTOP) until a cancel call is caught in flight: the slowed
    sandbox carries it out while the operator cannot read the answer. Each probe freezes
    it for ``cancel_latency`` + 1 s; between probes it runs for ``cancel_latency`` - 0.5 s,
    so a cancel sent while it ran is still in the sandbox when the next probe freezes it.
    Once the sandbox answered a cancel (the operator is then frozen): whether it carried it
    out; False after aim_timeout."""
    assert env.operator.proc is not None
    proc = env.operator.proc
    deadline = time.monotonic() + config.aim_timeout
    while time.monotonic() < deadline:
        proc.send_signal(signal.SIGSTOP)
        until = time.monotonic() + config.cancel_latency + 1
        while time.monotonic() < until:
            answered = cancel_answered(env, since)
            if answered:  # its answer is lost with the operator (took it: 200/204)
                return any(c["status"] in (200, 204) for c in answered)
            time.sleep(0.05)
        proc.send_signal(signal.SIGCONT)
        time.sleep(config.cancel_latency - 0.5)
    return False


def last_seq(env: Env, operation: str) -> int:
    calls = env.sandbox.get("/calls", operation=operation)["calls"]
    return max((int(c["seq"]) for c in calls), default=0)


def kill_at_cancel(
    env: Env, kill: Kill, config: ChaosConfig, rng: random.Random, started: float, deleted: set[str]
) -> None:
    """Delete requests whose task Mixpanel can still cancel, then ``kill -9`` during the
    cancel call or after Mixpanel carried it out."""
    deadline = time.monotonic() + config.aim_timeout
    while not (tasks := cancellable(env)) and time.monotonic() < deadline:
        time.sleep(0.1)
    since = last_seq(env, "cancel_deletion")
    with latency(env.sandbox, config.cancel_latency):
        names = []
        for task in rng.sample(tasks, min(len(tasks), config.deletes_per_cancel)):
            member = rng.choice(task["spec"]["members"])["name"]
            if member not in deleted:
                names.append(member)
        if names:
            env.kube.run("delete", "dsr", "-n", env.namespace, "--wait=false", *names)
            deleted.update(names)
        kill.missed = not names
        if kill.aimed == "cancel-answer" and names:
            kill.carried_out = freeze_at_cancel(env, config, since)
        else:
            # Before or during the cancel call: the restarted operator finds the request
            # gone (its orphan lookup) and cancels then.
            time.sleep(rng.uniform(0.3, 0.5 + config.cancel_latency))
        env.operator.kill(signal.SIGKILL)
    kill.at = time.monotonic() - started
    kill.unanswered = unanswered(env.api.items("mixpaneltasks", env.namespace))
    kill.log_end = env.operator.log.stat().st_size
    env.operator.start()
    how = kill.aimed + (", nothing to cancel" if kill.missed else "")
    how += ", Mixpanel took the cancel" if kill.carried_out else ""
    say(f"kill {kill.index + 1}/{config.kills} ({how}; deleted {len(names)} requests)")


# ---------------------------------------------------------------------- the run


def run_chaos(
    env: Env, config: ChaosConfig, restart: Callable[[Component, float], None]
) -> ChaosOutcome:
    """The chaos run on processes that are already running; ``restart`` restarts a control
    plane component (down for the given seconds)."""
    rng = random.Random(config.seed)  # noqa: S311 - a reproducible schedule, not a secret
    salt = f"{rng.getrandbits(24):06x}"
    outcome = ChaosOutcome(config)
    scenario = Scenario(env.kube, env.sandbox, env.namespace)
    operator = env.operator
    assert isinstance(operator, WatchedOperator)
    log_from = operator.log.stat().st_size if operator.log.exists() else 0
    started = time.monotonic()
    env.id_of = lambda name: ids_of(index_of(name), salt, config)[0]
    tokens: dict[str, str] = {}
    for name, region in PROJECTS:
        tokens[name] = scenario.project(
            name, region, maxIdsPerRequest=config.max_ids, maxOutstandingRetrievals=10
        )
        env.sandbox.post(f"/projects/{tokens[name]}", {"rate_limit_per_s": config.rate_limit})
    # No retrieval scan budget; and tasks wait in PENDING long enough (pending_seconds times
    # the time scale) for a deleted request's task to be cancelled rather than refused.
    env.sandbox.post(
        "/settings",
        {"limits": {"scan_budget_days": 0}, "lifecycle": {"pending_seconds": config.pending}},
    )
    for name, _ in PROJECTS:
        env.kube.run(
            "wait", "--for=condition=Ready", "--timeout=120s",
            "-n", env.namespace, f"mixpanelproject/{name}", timeout=150,
        )  # fmt: skip
    env.sandbox.post(
        "/faults",
        {
            "error_rate": config.error_rate, "drop_rate": config.drop_rate,
            "lost_response_rate": config.lost_response_rate, "seed": config.seed,
        },
    )  # fmt: skip
    watch = Watch(operator)
    watch.start()
    schedule = plan(config, rng)
    kill_config = config.kill_config()
    try:
        applied = 0
        for k in range(config.kills):
            for b in schedule.before.get(k, []):
                apply_batch(scenario, b, config, salt)
                applied += 1
            if k in schedule.bursts:
                env.sandbox.post("/faults", {"burst_429": config.burst_size})
                outcome.bursts += 1
            kill = Kill(k, schedule.aims[k], batches=applied)
            if kill.aimed in CANCEL_AIMS:
                kill_at_cancel(env, kill, config, rng, started, outcome.deleted)
            else:
                kill_once(env, kill, kill_config, rng, started)
            outcome.kills.append(kill)
            for component in schedule.restarts.get(k, []):
                at, wall = time.monotonic(), time.time()
                say(f"restarting {component} (down {config.down:.0f} s)")
                restart(component, config.down)
                outcome.restarts.append(
                    Restart(component, k, at - started, time.monotonic() - at, (wall, time.time()))
                )
        for b in sorted(b for k, bs in schedule.before.items() if k >= config.kills for b in bs):
            apply_batch(scenario, b, config, salt)
        operator.ensure_running()
        expected = config.requests - len(outcome.deleted)

        def done() -> bool:
            items = env.api.items("datasubjectrequests", env.namespace)
            outcome.phases = Counter((i.get("status") or {}).get("phase") or "-" for i in items)
            tasks = env.api.items("mixpaneltasks", env.namespace)
            outcome.task_phases = Counter(
                (t.get("status") or {}).get("phase") or "-" for t in tasks
            )
            say(f"requests {dict(outcome.phases)}; tasks {dict(outcome.task_phases)}")
            finished = sum(outcome.phases.get(p.value, 0) for p in TERMINAL)
            # A task without a status yet is Creating.
            live = sum(outcome.task_phases.get(p.value, 0) for p in LIVE_TASK)
            live += outcome.task_phases.get("-", 0)
            return finished == expected == len(items) and live == 0

        try:
            wait_until(done, timeout=config.timeout, interval=5, what="every request finished")
        except AssertionError as err:
            outcome.timed_out = str(err)[:300]
        watch.memory.done_at = time.time()
        time.sleep(config.idle)
    finally:
        watch.stop()
        env.sandbox.post("/faults", {"reset": True})
    outcome.memory = watch.memory
    outcome.unplanned_exits = watch.unplanned
    check(env, outcome, tokens, salt)
    outcome.traces = tracebacks(operator.log, log_from, [k.log_end for k in outcome.kills])
    outcome.seconds = time.monotonic() - started
    return outcome


def check(env: Env, outcome: ChaosOutcome, tokens: dict[str, str], salt: str) -> None:
    """The end state: requests, ids, tasks, duplicates, faults, leaks."""
    config = outcome.config
    items = {i["metadata"]["name"]: i for i in env.api.items("datasubjectrequests", env.namespace)}
    links = export_links(env.kube, [env.namespace])
    for i in range(config.requests):
        name = name_of(i)
        if name in outcome.deleted:
            continue
        status = (items.get(name) or {}).get("status") or {}
        if status.get("phase") != Phase.SUCCEEDED.value:
            outcome.wrong.append(f"{name}: {status.get('phase') or 'missing'}")
        elif is_retrieval(i, config):
            secret = (status.get("resultSecretRef") or {}).get("name")
            if f"{env.namespace}/{secret}" not in links.values():
                outcome.wrong.append(f"{name}: no export link in its Secret")
    tasks = env.api.items("mixpaneltasks", env.namespace)
    outcome.stuck_tasks = sorted(
        t["metadata"]["name"]
        for t in tasks
        if (t.get("status") or {}).get("phase") in {None, *(p.value for p in LIVE_TASK)}
    )
    # The sandbox: every id in a SUCCESS task of its kind; ids in two live-or-done tasks.
    #: Ids of creates whose answer a sandbox fault may have lost, by fault.
    faulted: list[tuple[str, set[str]]] = []
    unread: dict[tuple[str, str], list[str]] = {
        (name, op): [] for name, _ in PROJECTS for op in CREATES
    }
    for p, (name, _region) in enumerate(PROJECTS):
        token = tokens[name]
        done: dict[str, set[str]] = {"deletion": set(), "retrieval": set()}
        holders: Counter[tuple[str, str]] = Counter()
        for task in env.sandbox.tasks(token):
            for distinct_id in set(task["distinct_ids"]):
                if task["state"] != "REVOKED":
                    holders[(task["kind"], distinct_id)] += 1
                if task["state"] == "SUCCESS":
                    done[task["kind"]].add(distinct_id)
        for i in range(p, config.requests, len(PROJECTS)):
            if name_of(i) in outcome.deleted:
                continue
            kind = "retrieval" if is_retrieval(i, config) else "deletion"
            outcome.uncovered |= set(ids_of(i, salt, config)) - done[kind]
        outcome.sent_twice |= {i for (_kind, i), n in holders.items() if n > 1}
        for call in env.sandbox.calls(token)["calls"]:
            outcome.calls[call["operation"]] += 1
            if call["fault"]:
                outcome.faults[call["fault"]] += 1
            if call["operation"] in CREATES and ambiguous(call):
                if call["distinct_ids"]:
                    faulted.append((call["fault"], set(call["distinct_ids"])))
                else:  # refused before the body was read: known by project and kind only
                    unread[(name, call["operation"])].append(
                        call["fault"] + (f" {call['status']}" if call["status"] else "")
                    )
            if call["operation"] == "cancel_deletion":
                outcome.cancels[str(call["status"])] += 1
    for task in tasks:
        status = task.get("status") or {}
        lost = int(status.get("lostAnswers") or 0)
        if lost < 1:
            continue
        name = task["metadata"]["name"]
        ids = {
            i for m in task["spec"]["members"] for i in ids_of(index_of(m["name"]), salt, config)
        }
        outcome.bound_ids |= ids
        causes = [f"kill {k.index + 1} ({k.aimed})" for k in outcome.kills if name in k.unanswered]
        causes += [f"sandbox {fault}" for fault, hit in faulted if ids & hit]
        pool = unread[
            (task["spec"]["projectRef"]["name"], f"create_{task['spec']['type'].lower()}")
        ]
        while len(causes) < lost and pool:
            # A fault whose call carried no ids: one of this project's creates of this kind.
            causes.append(f"sandbox {pool.pop(0)} (a {task['spec']['type'].lower()} create)")
        outcome.duplicates.append(
            Duplicate(
                name, len(ids), len(ids & outcome.sent_twice), lost,
                int(status.get("createCalls") or 0), causes,
            )
        )  # fmt: skip
    needles = Needles(
        tokens={scenario_token(env, n): f"{env.namespace}/{n}-gdpr" for n, _ in PROJECTS},
        ids={i for n in range(config.requests) for i in ids_of(n, salt, config)},
        id_pattern=re.compile(rf"person-\d{{5}}-\d-{salt}"),
        links=links,
    )
    outcome.leaks = scan(env.kube, [env.operator.log], needles)


def scenario_token(env: Env, project: str) -> str:
    """The OAuth token in the project's credentials Secret."""
    secret = env.kube.get("secret", f"{project}-gdpr", env.namespace)
    return base64.b64decode(secret["data"]["token"]).decode()


# ---------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the schedule and faults (7)")
    parser.add_argument("--n", type=int, default=1000, help="requests (1000)")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 of the operator (20)")
    parser.add_argument("--batch", type=int, default=100, help="requests per apply (100)")
    parser.add_argument("--max-ids", type=int, default=50, help="maxIdsPerRequest (50)")
    parser.add_argument(
        "--time-scale", type=float, default=0.5, help="sandbox life cycle scale (0.5: 10 s tasks)"
    )
    parser.add_argument("--timeout", type=float, default=1500, help="seconds for the work to end")
    parser.add_argument("--no-handover", action="store_true", help="skip the two-replica part")
    parser.add_argument("--write-docs", type=Path, help="write the figures here (Markdown)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the logs (always on failure)")
    parser.add_argument(
        "--live", action="store_true", help="run the work tree as it is (default: a snapshot)"
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        requests=args.n, kills=args.kills, seed=args.seed, batch=args.batch,
        max_ids=args.max_ids, timeout=args.timeout,
    )  # fmt: skip
    given = list(sys.argv[1:] if argv is None else argv)
    if "--write-docs" in given:
        del given[given.index("--write-docs") : given.index("--write-docs") + 2]
    command = "make chaos" + (f' CHAOS_ARGS="{" ".join(given)}"' if given else "")
    base = workdir()
    say(f"logs in {base}")
    started = time.monotonic()
    outcome: ChaosOutcome | None = None
    with Stack(base, [NAMESPACE, HANDOVER], time_scale=args.time_scale, live=args.live) as stack:
        operator = WatchedOperator(base, stack.plane.kubeconfig, stack.sandbox.urls, env=stack.env)
        api = Api(stack.plane.kubeconfig)
        env = Env(stack.kube, api, stack.sandbox, operator, NAMESPACE)
        try:
            operator.start()
            outcome = run_chaos(env, config, lambda c, down: stack.plane.restart(c, down=down))
            operator.stop()
            if not args.no_handover:
                say("two replicas")
                outcome.handover = run_handover(
                    stack.plane, stack.sandbox, base, HANDOVER, env=stack.env
                )
                secret = stack.kube.get("secret", "p-gdpr", HANDOVER)
                needles = Needles(
                    tokens={
                        base64.b64decode(secret["data"]["token"]).decode(): f"{HANDOVER}/p-gdpr"
                    },
                    ids={f"ho-id-{n:04d}" for n in range(outcome.handover.requests + 10)},
                    id_pattern=re.compile(r"ho-id-\d{4}"),
                    links={},
                )
                logs = [base / "replica-a.log", base / "replica-b.log"]
                outcome.handover_leaks = scan(stack.kube, logs, needles)
        finally:
            if outcome is None or outcome.failures():
                dump(stack.kube, stack.sandbox, base, NAMESPACE)
            api.close()
            operator.stop()
            if outcome is None:
                print(f"logs kept in {base}")
    assert outcome is not None
    text = render(outcome, command, time.monotonic() - started)
    print(text)
    if args.write_docs:
        args.write_docs.write_text(text)
        say(f"wrote {args.write_docs}")
    if args.json:
        args.json.write_text(json.dumps(figures(outcome), indent=2, default=str))
    failures = outcome.failures()
    if failures or args.keep:
        print(f"logs kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
