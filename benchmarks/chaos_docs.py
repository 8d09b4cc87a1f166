"""docs/reliability.md, written from a chaos run's outcome (``make chaos`` writes it)."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from tests.conftest import REPO

from benchmarks.chaos_handover import report as handover_report
from benchmarks.chaos_watch import MIB

if TYPE_CHECKING:
    from benchmarks.chaos import ChaosOutcome


def hostile_inputs() -> Counter[str]:
    """The hostile-input corpus (tests/hostile_cases.py) that tests/e2e/test_hostile.py
    applies, by group."""
    from tests import hostile_cases as corpus

    groups = ("REFUSED", "EDITS", "VALID", "STALLED", "DELETED", "MID_FLIGHT")
    return Counter({g.lower(): len(getattr(corpus, g)) for g in groups})


def _commit() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render(outcome: ChaosOutcome, command: str, seconds: float) -> str:
    c = outcome.config
    kills = outcome.kills
    aims = Counter(k.aimed for k in kills)
    retrievals = sum(1 for i in range(c.requests) if i % c.retrieval_every == c.retrieval_every - 1)
    hostile = hostile_inputs()
    failures = outcome.failures()
    mem = outcome.memory
    faults_total = sum(outcome.faults.values())
    calls_total = sum(outcome.calls.values())
    lines = [
        "# Reliability: chaos, two replicas, hostile input",
        "",
        "<!-- Written by `make chaos` (benchmarks/chaos.py); do not edit by hand. -->",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"work tree {_commit()}, {os.cpu_count()} cores, in {seconds:.0f} s: seed {c.seed}, "
        f"{c.requests} requests, {c.kills} kills. Result: "
        + ("**every invariant holds**." if not failures else "**FAILED**: " + "; ".join(failures)),
        "",
        "Every figure below comes from that one command. It is seeded and bounded: `make chaos`",
        "runs seed 7 with 1,000 requests and 20 kills (about 15 minutes on 2 cores);",
        '`make chaos CHAOS_ARGS="--seed 3 --n 2000 --kills 40"` another schedule;',
        '`CHAOS_ARGS="--no-handover --keep"` skips the two replicas and keeps the logs.',
        "",
        "On a real kube-apiserver + etcd, the Mixpanel sandbox and the operator (a snapshot of",
        "the work tree), it applies the requests in batches across three projects (US, EU, IN),",
        "one in ten a two-id Retrieval, the rest one-id Deletions, while on a seeded schedule:",
        "",
        "- the operator gets `kill -9` and a start, some kills aimed at a create and its one",
        "  write (during the call, at Mixpanel's answer with the operator frozen, right after",
        "  it: the ways of `make kill-run`), some at a cancel (requests whose task the sandbox",
        "  holds PENDING are deleted; the kill lands a moment later, before or during the",
        "  cancel call, or once the sandbox carried the cancel out with the operator frozen),",
        "  the rest at random moments;",
        "- kube-apiserver is restarted once and etcd once (the same process, data and ports);",
        "- the sandbox answers ~20% of the GDPR calls with a 5xx, a dropped connection or a",
        "  lost answer, and 429 bursts start at seeded moments. Its tasks last about 40 s, 30",
        "  of them PENDING (cancellable).",
        "",
        "It then waits for every request to finish, checks the invariants below (the command",
        "exits non-zero when one fails, keeping its logs), runs two operator replicas through a",
        "kill and a partition of the leader (`benchmarks/chaos_handover.py`), and writes this",
        "file. `tests/e2e/test_chaos.py` (in `make test`) runs the same code with 120 requests,",
        "5 kills and one API server restart, asserting the same invariants;",
        "`tests/e2e/test_leader.py` runs the two-replica part.",
        "",
        "## Invariants",
        "",
    ]
    checks = [
        ("every request not deleted Succeeded (retrievals: export link in their Secret)",
         not outcome.wrong and not outcome.timed_out),
        ("every id in a SUCCESS task of its kind (asked of the sandbox)", not outcome.uncovered),
        ("no request or MixpanelTask stuck", not outcome.stuck_tasks and not outcome.timed_out),
        ("ids sent twice only from creates whose answer was lost (lostAnswers >= 1)",
         not (outcome.sent_twice - outcome.bound_ids)),
        ("every lost answer traced to a kill or a sandbox fault",
         all(d.causes for d in outcome.duplicates)),
        ("the operator exited only when killed (no crash loop)", not outcome.unplanned_exits),
        ("memory did not grow", not mem.failures()),
        (
            "no token, raw distinct id or export link out of place",
            not outcome.leaks.leaks
            and not (outcome.handover_leaks and outcome.handover_leaks.leaks),
        ),
        ("no engine traceback (other than one a kill cut short)", not outcome.engine_traces),
    ]  # fmt: skip
    if outcome.handover is not None:
        checks.append(
            ("two replicas: one leader at a time, in order", not outcome.handover.failures())
        )
    lines += _table(
        ("invariant", "result"), [(what, "ok" if ok else "**FAIL**") for what, ok in checks]
    )
    in_window = sum(1 for k in kills if k.in_window)
    lines += [
        "",
        "## Kills survived",
        "",
        f"{len(kills)} `kill -9` of the operator, each followed by a start: "
        + ", ".join(f"{n} {aim}" for aim, n in sorted(aims.items()))
        + f". {in_window} fell in a create window (a MixpanelTask written, its create not "
        f"answered); Mixpanel had carried out the call in "
        f"{sum(1 for k in kills if k.carried_out)} of the aimed ones when the operator died; "
        f"{sum(1 for k in kills if k.missed)} aimed kills found nothing to aim at and landed "
        "anyway.",
        "",
    ]
    lines += _table(
        ("kill", "at (s)", "aimed", "batches applied", "MixpanelTasks unanswered when it died"),
        [
            (
                k.index + 1,
                f"{k.at:.1f}",
                k.aimed + (" (Mixpanel took it)" if k.carried_out else ""),
                k.batches,
                ", ".join(k.unanswered) or "-",
            )
            for k in kills
        ],
    )
    lines += [
        "",
        "## Restarts",
        "",
        f"Control plane (same process, data directory and ports; down {c.down:.0f} s each):",
        "",
    ]
    lines += _table(
        ("component", "after kill", "at (s)", "back and ready after (s)"),
        [
            (r.component.value, r.after_kill + 1, f"{r.at:.1f}", f"{r.seconds:.1f}")
            for r in outcome.restarts
        ],
    )
    lines += [
        "",
        f"Operator: {len(kills)} starts after the kills; {len(outcome.unplanned_exits)} exits "
        f"nobody caused. Its log holds {len(outcome.traces)} tracebacks: "
        f"{sum(t.kill_artifact for t in outcome.traces)} cut short by a kill, "
        f"{len(outcome.api_down)} of a refused or broken connection to kube-apiserver (or its "
        "503 while starting) while the control plane restarted (a worker step that failed and "
        "was tried again), "
        f"{len(outcome.engine_traces)} others.",
        "",
        "## Faults injected (sandbox call log)",
        "",
        f"Rates asked: 5xx {c.error_rate:.0%}, dropped connection {c.drop_rate:.0%}, lost answer "
        f"(carried out, connection closed before the answer: a timeout after sending) "
        f"{c.lost_response_rate:.0%}; {outcome.bursts} bursts of {c.burst_size} 429s. Injected: "
        f"{faults_total} faults in {calls_total} GDPR calls "
        f"({faults_total / max(1, calls_total):.0%}).",
        "",
    ]
    lines += _table(("fault", "calls"), sorted(outcome.faults.items()))
    by_operation = ", ".join(f"{k} {v}" for k, v in sorted(outcome.calls.items()))
    cancels = ", ".join(f"{k}: {v}" for k, v in sorted(outcome.cancels.items())) or "none"
    lines += ["", f"Calls by operation: {by_operation}; cancel answers by status: {cancels}."]
    lines += [
        "",
        "## Inputs tried",
        "",
        f"- chaos run: {c.requests} requests across three projects (US, EU, IN): "
        f"{c.requests - retrievals} one-id Deletions and {retrievals} two-id Retrievals; "
        f"{len(outcome.deleted)} deleted while in flight (the cancel kills);",
        f"- hostile-input corpus (`tests/hostile_cases.py`, applied by "
        f"`tests/e2e/test_hostile.py` in `make test`): {sum(hostile.values())} cases ("
        + ", ".join(f"{g} {n}" for g, n in hostile.items())
        + ").",
        "",
        "## Duplicates and the crash windows that caused them",
        "",
        f"Ids Mixpanel holds in two tasks (not revoked): {len(outcome.sent_twice)}; the bound, "
        f"ids of the {len(outcome.duplicates)} MixpanelTasks with lostAnswers >= 1: "
        f"{len(outcome.bound_ids)}; sent twice outside it: "
        f"{len(outcome.sent_twice - outcome.bound_ids)}.",
        "",
    ]
    lines += _table(
        (
            "MixpanelTask",
            "ids",
            "ids sent twice",
            "lostAnswers",
            "createCalls",
            "unanswered at (kills) / answer lost by (sandbox faults)",
        ),
        [
            (
                d.task,
                d.ids,
                d.sent_twice,
                d.lost_answers,
                d.create_calls,
                "; ".join(d.causes) or "**?**",
            )
            for d in outcome.duplicates
        ],
    )
    scanned = outcome.leaks.scanned
    lines += [
        "",
        "## Leaks found",
        "",
        f"{len(outcome.leaks.leaks)} ("
        + (", ".join(f"{k} {n}" for k, n in outcome.leaks.by_kind().items()) or "none")
        + "). Scanned: "
        + ", ".join(f"{n} {what}" for what, n in scanned.items())
        + "; for "
        + ", ".join(f"{n} {what}s" for what, n in outcome.leaks.looked_for.items())
        + ". Tokens may be only in their credentials Secret, links only in their request's Secret.",
    ]
    lines += [f"- {leak.needle.value} in {leak.where}" for leak in outcome.leaks.leaks[:20]]
    if outcome.handover_leaks is not None:
        extra = outcome.handover_leaks
        lines += [
            "",
            f"After the two-replica part, again with both replicas' logs "
            f"({extra.scanned['operator log lines']} lines), its "
            f"{extra.looked_for['raw distinct id']} ids and its token: "
            f"{len(extra.leaks)} leaks.",
        ]
        lines += [f"- {leak.needle.value} in {leak.where}" for leak in extra.leaks[:20]]
    lines += [
        "",
        "## Memory",
        "",
        f"Operator resident memory, sampled every second across the run ({len(mem.samples)} "
        f"samples, {len(mem.incarnations())} processes): start {mem.start / MIB:.0f} MiB, "
        f"peak {mem.peak / MIB:.0f} MiB, when the work ended {mem.at_done / MIB:.0f} MiB, "
        f"end (after {c.idle:.0f} s idle) {mem.end / MIB:.0f} MiB; median peak of a process "
        f"{mem.median_peak / MIB:.0f} MiB. Growth fails the run: the idle end above the end of "
        "the work by 20% + 8 MiB, or above twice the median peak.",
        "",
        "## Two replicas: the handover bound",
        "",
    ]
    if outcome.handover is None:
        lines.append("Not run (`--no-handover`).")
    else:
        lines += [
            f"Handover bound: **{outcome.handover.bound:.1f} s** from the disruption to the new "
            "leader's first Mixpanel call (Lease: 15 s duration, 10 s renew deadline, 2 s retry).",
            "",
            "```",
            handover_report(outcome.handover).strip("\n"),
            "```",
        ]
    lines += [
        "",
        f"Run time: {outcome.seconds:.0f} s for the chaos part, {seconds:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


def figures(outcome: ChaosOutcome) -> dict[str, Any]:
    c = outcome.config
    return {
        "seed": c.seed,
        "requests": c.requests,
        "kills": [
            {"at": k.at, "aimed": k.aimed, "unanswered": k.unanswered, "carried_out": k.carried_out}
            for k in outcome.kills
        ],
        "restarts": [(r.component.value, r.after_kill, r.seconds) for r in outcome.restarts],
        "faults": dict(outcome.faults),
        "bursts": outcome.bursts,
        "deleted": len(outcome.deleted),
        "phases": dict(outcome.phases),
        "sent_twice": len(outcome.sent_twice),
        "bound": len(outcome.bound_ids),
        "duplicates": [vars(d) for d in outcome.duplicates],
        "leaks": [(leak.needle.value, leak.where) for leak in outcome.leaks.leaks],
        "memory_mib": {
            "start": outcome.memory.start / MIB,
            "peak": outcome.memory.peak / MIB,
            "end": outcome.memory.end / MIB,
        },
        "handover_bound": outcome.handover.bound if outcome.handover else None,
        "failures": outcome.failures(),
    }
