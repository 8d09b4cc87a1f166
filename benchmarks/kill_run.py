"""One-id deletions through seeded ``kill -9`` of the operator: nothing lost, duplicates bounded.

Runs a real control plane (kube-apiserver + etcd), the Mixpanel sandbox and the
operator (the e2e harness's ``Operator``, with its FAST_FLAGS), creates projects
with a small ``maxIdsPerRequest`` (so N one-id requests make about N/limit packed
creates), then applies the requests in batches while killing the operator with
SIGKILL and starting it again, on a seeded schedule:

- after a batch, some kills are aimed at a create and its one write: the sandbox
  answers every GDPR call ``--latency`` seconds late for a moment, and the kill lands
  while a MixpanelTask without a tracking id waits for its create's answer
  ("mid-call": the sandbox then creates nothing), or after the operator was frozen
  in that call (SIGSTOP) and the sandbox's call log shows the create carried out
  ("answer": Mixpanel holds the task, the answer is never read), or the instant the
  call log shows a new create ("after-answer": a race with the status write);
- the others land a random time after the previous restart.

Each kill records whether it fell in a create window: a MixpanelTask without a
tracking id (and not waiting for a retry) existed when the process died, i.e. a
create's answer may be lost. At the end every request must be Succeeded, and from
the sandbox (``/_sandbox/tasks``, ``/_sandbox/ids``) and the MixpanelTask objects:

- ids lost (requested ids in no SUCCESS deletion task) must be 0;
- ids sent twice (ids in more than one deletion task) must be at most the bound,
  the ids of the MixpanelTasks whose ``status.lostAnswers`` >= 1 (the creates whose
  answer a kill interrupted), and each of them must be one of those ids;
- the operator log (from this run) must hold no engine traceback other than one
  cut short by a kill.

    .venv/bin/python -m benchmarks.kill_run [--requests 1000] [--kills 20] [--seed 7]
        [--projects 1] [--max-ids 50] [--batch 100] [--time-scale 0.25] [--keep] [--live]

The operator runs from a snapshot of the work tree's operator package and CRDs taken at
the start (``--live``: the tree as it is at each restart).

Exits non-zero when an invariant fails. ``run_kills`` is the core; the e2e test
``tests/e2e/test_kill_run.py`` calls it with small numbers on the session's processes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, Sandbox, wait_until, workdir

from benchmarks.chaos_stack import (
    Api,
    Stack,
    Trace,
    dump,
    latency,
    lifecycle_time_scale,
    regressions,
    tracebacks,
    unanswered,
)

NAMESPACE = "kill-run"


def log(message: str) -> None:
    print(f"[kill-run {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the run


@dataclass
class Config:
    requests: int = 1000
    kills: int = 20
    seed: int = 7
    projects: int = 1
    max_ids: int = 50
    batch: int = 100
    #: Share of the kills aimed at a create window (only kills right after a batch can be).
    aimed_share: float = 0.4
    #: Sandbox latency (s) while a kill is aimed at a create window.
    latency: float = 2.0
    #: A random kill lands this many seconds (uniform) after the previous restart.
    gap: tuple[float, float] = (0.5, 4.0)
    #: Longest wait for a create to aim at before killing anyway.
    aim_timeout: float = 45.0
    #: Seconds for every request to be Succeeded after the last kill.
    timeout: float = 900.0
    #: If set, the sandbox's lifecycle time scale during the run (restored afterwards).
    time_scale: float | None = None


@dataclass
class Kill:
    index: int
    #: "random", or how it was aimed at a create (see AIMS).
    aimed: str
    at: float = 0.0
    #: MixpanelTasks without a tracking id when the process died.
    unanswered: list[str] = field(default_factory=list)
    #: "answer": the sandbox carried the create out while the operator was frozen.
    carried_out: bool = False
    #: The aimed create never came within aim_timeout: killed anyway.
    missed: bool = False
    batches: int = 0
    #: Size of the operator log when the process died.
    log_end: int = 0
    #: Every unanswered task was already unanswered at the previous kill (not resent yet).
    left_over: bool = False

    @property
    def in_window(self) -> bool:
        return bool(self.unanswered)


@dataclass
class Outcome:
    config: Config
    namespace: str
    kills: list[Kill] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)
    not_succeeded: list[str] = field(default_factory=list)
    creates: int = 0
    #: Create calls by HTTP status (a 429 creates nothing and is tried again).
    create_statuses: Counter[str] = field(default_factory=Counter)
    mixpanel_tasks: int = 0
    sandbox_tasks: int = 0
    sent_twice: set[str] = field(default_factory=set)
    #: Ids of the MixpanelTasks whose lostAnswers >= 1.
    bound_ids: set[str] = field(default_factory=set)
    lost_answer_tasks: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    possible_duplicates: int = 0
    traces: list[Trace] = field(default_factory=list)
    #: Request phase moves backwards in the operator log, by move (reported, not checked).
    regressions: Counter[str] = field(default_factory=Counter)
    apply_to_succeeded: float = 0.0
    seconds: float = 0.0
    workdir: Path | None = None
    timed_out: str = ""

    @property
    def in_window(self) -> int:
        return sum(1 for k in self.kills if k.in_window)

    @property
    def outside_bound(self) -> set[str]:
        return self.sent_twice - self.bound_ids

    @property
    def engine_traces(self) -> list[Trace]:
        return [t for t in self.traces if t.engine and not t.kill_artifact]

    def failures(self) -> list[str]:
        out = []
        if self.timed_out or self.not_succeeded:
            out.append(
                f"{len(self.not_succeeded)} requests not Succeeded ({dict(self.phases)})"
                + (f": {self.timed_out}" if self.timed_out else "")
            )
        if self.lost:
            out.append(f"{len(self.lost)} ids lost (no SUCCESS task): {sorted(self.lost)[:10]}")
        if len(self.sent_twice) > len(self.bound_ids):
            out.append(f"{len(self.sent_twice)} ids sent twice > bound {len(self.bound_ids)}")
        if self.outside_bound:
            out.append(
                f"{len(self.outside_bound)} ids sent twice outside the interrupted creates: "
                f"{sorted(self.outside_bound)[:10]}"
            )
        if self.engine_traces:
            out.append(
                f"{len(self.engine_traces)} engine tracebacks: "
                + "; ".join(sorted({t.exception for t in self.engine_traces}))
            )
        return out


@dataclass
class Env:
    """What a run acts on: the control plane (kubectl and direct reads), the sandbox and
    the operator process, and the namespace of the run's projects and requests."""

    kube: Kube
    api: Api
    sandbox: Sandbox
    operator: Operator
    namespace: str
    #: The (first) distinct id of a request, by its name.
    id_of: Callable[[str], str] = field(default=lambda name: request_id(int(name.rsplit("-")[-1])))


def request_id(i: int) -> str:
    return f"kr-id-{i:05d}"


def request_name(i: int) -> str:
    return f"kr-{i:05d}"


#: How a kill is aimed at a create and its one write, the sandbox slowed by ``latency``:
#: "mid-call" kills during the create call, before the sandbox carried it out (it then reads
#: a dropped connection and creates nothing); "answer" freezes the operator (SIGSTOP) during
#: the call and kills it once the sandbox's call log shows the create carried out (Mixpanel
#: holds the task, its answer is never read); "after-answer" kills the moment the call log
#: shows a new create (a race with the status write right after the answer).
AIMS = ("mid-call", "answer", "after-answer")


def schedule(config: Config, rng: random.Random) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Which batches are applied before each kill, and how each kill is aimed."""
    batches = math.ceil(config.requests / config.batch)
    before: dict[int, list[int]] = {}
    for b in range(batches):
        before.setdefault(b * config.kills // batches if config.kills else 0, []).append(b)
    candidates = sorted(k for k in before if k < config.kills)
    n_aimed = min(len(candidates), max(1, round(config.kills * config.aimed_share)))
    # Every way of aiming comes up once there are as many aimed kills.
    ways = rng.sample(AIMS, len(AIMS))
    aimed = {k: ways[n % len(ways)] for n, k in enumerate(sorted(rng.sample(candidates, n_aimed)))}
    return before, {k: aimed.get(k, "random") for k in range(config.kills)}


def last_create_seq(sandbox: Sandbox) -> int:
    calls = sandbox.get("/calls", operation="create_deletion")["calls"]
    return max((int(c["seq"]) for c in calls), default=0)


def aim(env: Env, kill: Kill, config: Config, rng: random.Random, known: set[str]) -> bool:
    """Wait for a create to kill in (the sandbox slowed); False when none came in time."""
    deadline = time.monotonic() + config.aim_timeout
    since = last_create_seq(env.sandbox)

    def creates(ids: set[str] | None = None) -> bool:
        calls = env.sandbox.get("/calls", operation="create_deletion", since=str(since))["calls"]
        return any(ids is None or ids & set(c["distinct_ids"]) for c in calls)

    if kill.aimed == "after-answer":
        while time.monotonic() < deadline:
            if creates():
                return True
            time.sleep(0.01)
        return False
    while True:
        tasks = env.api.items("mixpaneltasks", env.namespace)
        targets = [t for t in tasks if t["metadata"]["name"] in set(unanswered(tasks)) - known]
        if targets:
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    # A task is written; its create is on its way (after the client's request budget, at
    # most a second) or inside the slowed call.
    if kill.aimed == "mid-call":
        time.sleep(rng.uniform(0.0, 0.8 * config.latency))
        return True
    ids = {env.id_of(m["name"]) for t in targets for m in t["spec"]["members"]}
    time.sleep(rng.uniform(0.55, 0.75) * config.latency)
    assert env.operator.proc is not None
    env.operator.proc.send_signal(signal.SIGSTOP)
    until = time.monotonic() + config.latency + 5
    while time.monotonic() < until:
        if creates(ids):
            kill.carried_out = True
            break
        time.sleep(0.02)
    return True


def kill_once(env: Env, kill: Kill, config: Config, rng: random.Random, started: float) -> None:
    """One ``kill -9`` of the operator as ``kill.aimed`` says, then start it again."""
    if kill.aimed == "random":
        time.sleep(rng.uniform(*config.gap))
    else:
        known = set(unanswered(env.api.items("mixpaneltasks", env.namespace)))
        with latency(env.sandbox, config.latency):
            kill.missed = not aim(env, kill, config, rng, known)
            env.operator.kill(signal.SIGKILL)
    if env.operator.proc is not None and env.operator.proc.poll() is None:
        env.operator.kill(signal.SIGKILL)
    kill.at = time.monotonic() - started
    # The process is dead: the ledger is exactly what it left.
    kill.unanswered = unanswered(env.api.items("mixpaneltasks", env.namespace))
    kill.log_end = env.operator.log.stat().st_size
    env.operator.start()
    how = kill.aimed + (", missed" if kill.missed else "")
    how += ", Mixpanel took the create" if kill.carried_out else ""
    where = f"in a create window ({', '.join(kill.unanswered)})" if kill.in_window else "no create"
    log(f"kill {kill.index + 1}/{config.kills} ({how}) at {kill.at:.1f} s: {where}")


def apply_batch(env: Env, scenario: Scenario, projects: list[str], b: int, config: Config) -> None:
    first, last = b * config.batch, min((b + 1) * config.batch, config.requests)
    items = [
        scenario.request_manifest(request_name(i), [request_id(i)], projects[i % len(projects)])
        for i in range(first, last)
    ]
    env.kube.run(
        "apply", "-f", "-", timeout=300,
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}),
    )  # fmt: skip


def phases(env: Env) -> tuple[Counter[str], list[dict[str, Any]]]:
    items = env.api.items("datasubjectrequests", env.namespace)
    return Counter((i.get("status") or {}).get("phase") or "(none)" for i in items), items


def run_kills(env: Env, config: Config) -> Outcome:
    """The kill run on processes that are already running: projects, batches, kills, checks."""
    rng = random.Random(config.seed)  # noqa: S311 - a reproducible schedule, not a secret
    outcome = Outcome(config, env.namespace)
    scenario = Scenario(env.kube, env.sandbox, env.namespace)
    log_from = env.operator.log.stat().st_size if env.operator.log.exists() else 0
    started = time.monotonic()
    with lifecycle_time_scale(env.sandbox, config.time_scale):
        names = [f"kill-{p}" for p in range(config.projects)]
        tokens = {name: scenario.project(name, maxIdsPerRequest=config.max_ids) for name in names}
        for name in names:
            env.kube.run(
                "wait", "--for=condition=Ready", "--timeout=120s",
                "-n", env.namespace, f"mixpanelproject/{name}", timeout=150,
            )  # fmt: skip
        before, aimed = schedule(config, rng)
        applied = 0
        apply_start = time.monotonic()
        for k in range(config.kills):
            for b in before.get(k, []):
                apply_batch(env, scenario, names, b, config)
                applied += 1
            kill = Kill(k, aimed[k], batches=applied)
            kill_once(env, kill, config, rng, started)
            previous = set(outcome.kills[-1].unanswered) if outcome.kills else set()
            kill.left_over = kill.in_window and set(kill.unanswered) <= previous
            outcome.kills.append(kill)
        for b in sorted(b for k, bs in before.items() if k >= config.kills for b in bs):
            apply_batch(env, scenario, names, b, config)
        env.operator.ensure_running()

        def done() -> bool:
            env.operator.healthy()
            seen, _ = phases(env)
            log(f"phases: {dict(sorted(seen.items()))}")
            if seen.get("Failed") or seen.get("Cancelled"):
                return True
            return seen.get("Succeeded", 0) == config.requests

        try:
            wait_until(done, timeout=config.timeout, interval=3, what="every request Succeeded")
        except AssertionError as err:
            outcome.timed_out = str(err)
        outcome.apply_to_succeeded = time.monotonic() - apply_start
        outcome.phases, items = phases(env)
        outcome.not_succeeded = sorted(
            i["metadata"]["name"]
            for i in items
            if (i.get("status") or {}).get("phase") != "Succeeded"
        )
        if len(items) < config.requests:
            outcome.not_succeeded.append(f"({config.requests - len(items)} never created)")
        outcome.possible_duplicates = sum(
            1
            for i in items
            for c in (i.get("status") or {}).get("conditions") or []
            if c["type"] == "PossibleDuplicate" and c["status"] == "True"
        )
    measure(env, outcome, tokens)
    outcome.traces = tracebacks(env.operator.log, log_from, [k.log_end for k in outcome.kills])
    outcome.regressions = regressions(env.operator.log, log_from, env.namespace)
    outcome.seconds = time.monotonic() - started
    return outcome


def measure(env: Env, outcome: Outcome, tokens: dict[str, str]) -> None:
    """Lost, sent twice and the bound, from the sandbox and the MixpanelTask objects."""
    config = outcome.config
    name_to_id = {request_name(i): request_id(i) for i in range(config.requests)}
    for p, token in enumerate(tokens.values()):
        wanted = {request_id(i) for i in range(config.requests) if i % config.projects == p}
        tasks = env.sandbox.tasks(token, kind="deletion")
        outcome.sandbox_tasks += len(tasks)
        holders: Counter[str] = Counter()
        succeeded: set[str] = set()
        for task in tasks:
            for distinct_id in set(task["distinct_ids"]):
                holders[distinct_id] += 1
                if task["state"] == "SUCCESS":
                    succeeded.add(distinct_id)
        ids = env.sandbox.ids(token)
        for distinct_id, entry in ids.items():
            if entry["deletion_tasks"] != holders[distinct_id]:
                log(f"note: /ids and /tasks disagree on {distinct_id}: {entry} vs {holders}")
        outcome.lost |= {i for i in wanted if i not in succeeded}
        outcome.sent_twice |= {i for i, n in holders.items() if n > 1}
        calls = env.sandbox.calls(token, operation="create_deletion")
        outcome.creates += int(calls["count"])
        outcome.create_statuses.update(calls["by_status"])
    mpts = env.api.items("mixpaneltasks", env.namespace)
    outcome.mixpanel_tasks = len(mpts)
    for mpt in mpts:
        if ((mpt.get("status") or {}).get("lostAnswers") or 0) >= 1:
            outcome.lost_answer_tasks.append(mpt["metadata"]["name"])
            for member in mpt["spec"]["members"]:
                # One-id requests: member [0, 1) of request kr-N is id kr-id-N.
                outcome.bound_ids.add(name_to_id.get(member["name"], member["name"]))


# ---------------------------------------------------------------------- the report


def report(outcome: Outcome) -> str:
    c = outcome.config
    kills = outcome.kills
    aimed = Counter(k.aimed for k in kills)
    aimed_in = sum(1 for k in kills if k.aimed != "random" and k.in_window)
    random_in = sum(1 for k in kills if k.aimed == "random" and k.in_window)
    missed = sum(1 for k in kills if k.missed)
    took = sum(1 for k in kills if k.carried_out)
    left_over = sum(1 for k in kills if k.left_over)
    succeeded = outcome.phases.get("Succeeded", 0)
    rows = [
        ("requests", f"{c.requests}", f"Succeeded {succeeded}; phases {dict(outcome.phases)}"),
        ("kills (kill -9)", f"{len(kills)}", f"aimed {dict(aimed)}"),
        (
            "kills in a create window",
            f"{outcome.in_window}",
            f"aimed ones {aimed_in} (Mixpanel took the create in {took}), random ones "
            f"{random_in}, aimed but no create came {missed}; on a task left unanswered by "
            f"the kill before {left_over}",
        ),
        (
            "creates",
            f"{outcome.creates}",
            f"create calls (by status {dict(sorted(outcome.create_statuses.items()))}); "
            f"{outcome.mixpanel_tasks} MixpanelTasks, "
            f"{outcome.sandbox_tasks} sandbox deletion tasks",
        ),
        ("ids sent twice", f"{len(outcome.sent_twice)}", "ids in more than one deletion task"),
        (
            "bound",
            f"{len(outcome.bound_ids)}",
            f"ids of the {len(outcome.lost_answer_tasks)} MixpanelTasks with lostAnswers >= 1",
        ),
        ("ids sent twice outside the bound", f"{len(outcome.outside_bound)}", ""),
        ("ids lost", f"{len(outcome.lost)}", "requested ids in no SUCCESS task"),
        ("PossibleDuplicate requests", f"{outcome.possible_duplicates}", ""),
        (
            "time",
            f"{outcome.seconds:.0f} s",
            f"first apply to all Succeeded {outcome.apply_to_succeeded:.0f} s",
        ),
        (
            "request phases gone backwards",
            f"{sum(outcome.regressions.values())}",
            f"{dict(outcome.regressions.most_common())} (operator log; reported, not checked)",
        ),
        (
            "operator tracebacks",
            f"{len(outcome.traces)}",
            f"engine {sum(t.engine for t in outcome.traces)}, "
            f"kill artifacts {sum(t.kill_artifact for t in outcome.traces)}",
        ),
    ]
    lines = [
        f"\nkill run: {c.requests} one-id deletions, {c.projects} project(s) with "
        f"maxIdsPerRequest {c.max_ids}, batches of {c.batch}, seed {c.seed} "
        f"(real kube-apiserver, sandbox Mixpanel)\n"
    ]
    lines += [f"  {label:34}{value:>8}   {note}" for label, value, note in rows]
    lines.append(
        "\n  kill  at (s)  aimed          batches  in a create window (MixpanelTasks unanswered)"
    )
    for k in kills:
        where = ", ".join(k.unanswered) if k.in_window else "-"
        where += " (Mixpanel took the create)" if k.carried_out else ""
        where += " (left by the kill before)" if k.left_over else ""
        lines.append(
            f"  {k.index + 1:4}  {k.at:6.1f}  {k.aimed + ('*' if k.missed else ''):14} "
            f"{k.batches:7}  {where}"
        )
    if missed:
        lines.append("  (* aimed, but no create came in time: killed anyway)")
    if outcome.lost_answer_tasks:
        lines.append(
            f"\n  MixpanelTasks with lostAnswers >= 1: {', '.join(outcome.lost_answer_tasks)}"
        )
    for trace in outcome.traces:
        kind = "kill artifact" if trace.kill_artifact else ("engine" if trace.engine else "other")
        lines.append(f"  traceback ({kind}): {trace.header[:160]} -> {trace.exception[:200]}")
    failures = outcome.failures()
    lines.append("")
    lines += [f"FAIL: {f}" for f in failures] or ["OK: every invariant holds"]
    return "\n".join(lines)


# ---------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kill_run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="one-id requests (1000)")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 of the operator (20)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the kill schedule (7)")
    parser.add_argument("--projects", type=int, default=1, help="projects (1)")
    parser.add_argument("--max-ids", type=int, default=50, help="maxIdsPerRequest (50)")
    parser.add_argument("--batch", type=int, default=100, help="requests per apply (100)")
    parser.add_argument(
        "--aimed-share", type=float, default=0.4, help="share of kills aimed at a create (0.4)"
    )
    parser.add_argument("--latency", type=float, default=2.0, help="sandbox latency when aiming")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.25,
        help="sandbox lifecycle time scale (0.25: a task takes 5 s)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds to all Succeeded")
    parser.add_argument("--keep", action="store_true", help="keep the logs (always on failure)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the work tree's operator as it is at each restart (default: a snapshot "
        "taken at the start, so that edits made meanwhile do not change the code under test)",
    )
    args = parser.parse_args(argv)
    config = Config(
        requests=args.requests, kills=args.kills, seed=args.seed, projects=args.projects,
        max_ids=args.max_ids, batch=args.batch, aimed_share=args.aimed_share,
        latency=args.latency, timeout=args.timeout,
    )  # fmt: skip
    base = workdir()
    log(f"logs in {base}")
    started = time.monotonic()
    outcome: Outcome | None = None
    with Stack(base, [NAMESPACE], time_scale=args.time_scale, live=args.live) as stack:
        kube, sandbox = stack.kube, stack.sandbox
        operator = Operator(base, stack.plane.kubeconfig, sandbox.urls, env=stack.env)
        api = Api(stack.plane.kubeconfig)
        try:
            operator.start()
            outcome = run_kills(Env(kube, api, sandbox, operator, NAMESPACE), config)
        finally:
            if outcome is None or outcome.failures():
                dump(kube, sandbox, base, NAMESPACE)
            api.close()
            operator.stop()
            if outcome is None:
                print(f"logs kept in {base}")
    assert outcome is not None
    print(report(outcome))
    elapsed = time.monotonic() - started
    print(f"\n(sandbox time scale {args.time_scale}; whole command {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures(outcome), indent=2))
    failures = outcome.failures()
    if failures or args.keep:
        print(f"logs kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failures else 0


def figures(outcome: Outcome) -> dict[str, Any]:
    return {
        "requests": outcome.config.requests,
        "succeeded": outcome.phases.get("Succeeded", 0),
        "kills": len(outcome.kills),
        "kills_in_create_window": outcome.in_window,
        "creates": outcome.creates,
        "creates_by_status": dict(outcome.create_statuses),
        "mixpanel_tasks": outcome.mixpanel_tasks,
        "sandbox_tasks": outcome.sandbox_tasks,
        "ids_sent_twice": len(outcome.sent_twice),
        "bound": len(outcome.bound_ids),
        "ids_lost": len(outcome.lost),
        "possible_duplicates": outcome.possible_duplicates,
        "phase_regressions": dict(outcome.regressions),
        "seconds": outcome.seconds,
        "kills_detail": [
            {
                "at": k.at,
                "aimed": k.aimed,
                "missed": k.missed,
                "carried_out": k.carried_out,
                "unanswered": k.unanswered,
            }
            for k in outcome.kills
        ],
        "failures": outcome.failures(),
    }


if __name__ == "__main__":
    sys.exit(main())
