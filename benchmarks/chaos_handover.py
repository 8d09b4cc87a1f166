"""Two replicas with leader election: one does the work, the other takes over when it dies.

Two ``dsr-operator run --leader-elect`` processes serve one namespace. Each reaches
kube-apiserver through a ``StallingProxy`` of its own and Mixpanel (the sandbox) under a
host name of its own (``127.0.0.1`` and ``localhost``), so the sandbox's call log says
which replica made each call. While requests keep arriving:

1. **kill**: the leader gets ``kill -9``; the standby takes the Lease once it expired;
2. **partition**: the new leader's proxy stalls: its Lease renewals (and every other API
   call) HANG rather than fail. It must step down by itself at its renew deadline, and the
   other replica (started again after the kill) takes over once the Lease expired.

Checked: each handover's old leader made its last Mixpanel call before the new leader made
its first (the call log, in order, changes hands only at the handovers); no create was sent
by both replicas, except the resend of a create whose answer a kill interrupted (a
MixpanelTask with ``lostAnswers`` >= 1); every request Succeeded. Printed: how long each
handover took, from the kill or the stall to the new leader's first Mixpanel call.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, Sandbox, wait_until

from benchmarks.chaos_proxy import StallingProxy
from benchmarks.chaos_stack import Api, log
from mixpanel_dsr.localcluster import ControlPlane

LEASE = "mixpanel-dsr-operator"
CREATES = ("create_deletion", "create_retrieval")


class Disruption(StrEnum):
    KILL = "kill -9"
    PARTITION = "partition (renewals hang)"


@dataclass
class Replica:
    name: str
    #: The host under which this replica reaches the sandbox (its calls' ``host``).
    host: str
    proxy: StallingProxy
    operator: Operator


@dataclass
class Handover:
    how: Disruption
    old: str
    new: str
    #: Wall-clock times (the sandbox's call log uses the same clock, on this machine).
    disrupted_at: float = 0.0
    lease_moved_at: float = 0.0
    old_exited_at: float | None = None
    old_last_call: float | None = None
    new_first_call: float | None = None
    #: The standby was running when the leader was disrupted (it had not exited by itself).
    standby_alive: bool = True

    @property
    def seconds(self) -> float:
        """From the kill or the stall to the new leader's first Mixpanel call (or the
        Lease's move; infinite if neither came)."""
        end = self.new_first_call or self.lease_moved_at
        return end - self.disrupted_at if end else math.inf

    @property
    def lease_seconds(self) -> float:
        return self.lease_moved_at - self.disrupted_at if self.lease_moved_at else math.inf

    @property
    def gap(self) -> float | None:
        """The new leader's first Mixpanel call after the old one's last (> 0: in order)."""
        if self.old_last_call is None or self.new_first_call is None:
            return None
        return self.new_first_call - self.old_last_call


@dataclass
class HandoverOutcome:
    handovers: list[Handover] = field(default_factory=list)
    #: Replica names in the order of the call log, one entry per run of calls.
    segments: list[str] = field(default_factory=list)
    calls_by_replica: Counter[str] = field(default_factory=Counter)
    creates_by_replica: Counter[str] = field(default_factory=Counter)
    #: Ids sent in creates of both replicas, and those a lost answer explains.
    sent_by_both: set[str] = field(default_factory=set)
    lost_answer_ids: set[str] = field(default_factory=set)
    requests: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    timed_out: str = ""

    @property
    def bound(self) -> float:
        return max((h.seconds for h in self.handovers), default=0.0)

    def failures(self) -> list[str]:
        out = []
        if len(self.handovers) != 2:
            out.append(f"{len(self.handovers)} handovers, not 2")
        for h in self.handovers:
            if not h.standby_alive:
                out.append(f"{h.how}: the standby {h.new} had exited by itself")
            if not h.lease_moved_at:
                out.append(f"{h.how}: the Lease never moved to {h.new}")
            if h.gap is None:
                out.append(f"{h.how}: no Mixpanel call by the old or the new leader")
            elif h.gap <= 0:
                out.append(
                    f"{h.how}: new leader called Mixpanel {-h.gap:.2f} s before the old stopped"
                )
            if h.how is Disruption.PARTITION and h.old_exited_at is None:
                out.append("partition: the old leader never stepped down")
            stepped_down = h.old_exited_at
            if h.how is Disruption.PARTITION and stepped_down and stepped_down >= h.lease_moved_at:
                out.append("partition: the Lease moved before the old leader stepped down")
        if len(self.segments) > len(self.handovers) + 1:
            out.append(f"calls changed hands {len(self.segments) - 1} times: {self.segments}")
        if self.sent_by_both - self.lost_answer_ids:
            out.append(f"{len(self.sent_by_both - self.lost_answer_ids)} ids created by both")
        if self.timed_out or self.phases.get("Succeeded", 0) != self.requests:
            out.append(f"requests not all Succeeded: {dict(self.phases)} {self.timed_out}")
        return out


def _kubeconfig_via(plane: ControlPlane, proxy: StallingProxy, path: Path) -> Path:
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = proxy.address
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def lease_holder(api: Api, namespace: str) -> str | None:
    response = api.http.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE}", timeout=5
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    holder: str | None = (response.json().get("spec") or {}).get("holderIdentity")
    return holder


class Feeder:
    """Applies a few one-id deletions every ``every`` seconds until stopped (a thread)."""

    def __init__(self, scenario: Scenario, project: str, every: float, size: int) -> None:
        self.scenario, self.project, self.every, self.size = scenario, project, every, size
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            items = [
                self.scenario.request_manifest(f"ho-{n:04d}", [f"ho-id-{n:04d}"], self.project)
                for n in range(self.count, self.count + self.size)
            ]
            text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
            # A failed apply (the API server slow) is tried again with the same names.
            if self.scenario.kube.run("apply", "-f", "-", input=text, check=False).returncode == 0:
                self.count += self.size


def run_handover(
    plane: ControlPlane,
    sandbox: Sandbox,
    base: Path,
    namespace: str,
    *,
    env: dict[str, str] | None = None,
    settle: float = 8.0,
    timeout: float = 240.0,
) -> HandoverOutcome:
    """Both handovers on a running control plane and sandbox, in ``namespace``."""
    outcome = HandoverOutcome()
    kube = Kube(plane)
    api = Api(plane.kubeconfig)
    scenario = Scenario(kube, sandbox, namespace)
    replicas: dict[str, Replica] = {}
    for name, host in (("replica-a", "127.0.0.1"), ("replica-b", "localhost")):
        proxy = StallingProxy(("127.0.0.1", plane.port))
        proxy.start()
        urls = {r: u.replace("127.0.0.1", host) for r, u in sandbox.urls.items()}
        operator = Operator(
            base, _kubeconfig_via(plane, proxy, base / f"kubeconfig-{name}"), urls,
            scope=[
                "--namespace", namespace, "--operator-namespace", "mixpanel-dsr-system",
                "--leader-elect", "--leader-election-namespace", namespace,
            ],
            env={"POD_NAME": name, **(env or {})}, log=base / f"{name}.log",
        )  # fmt: skip
        replicas[name] = Replica(name, host, proxy, operator)
    feeder: Feeder | None = None
    # Calls of whatever used the sandbox before (the chaos run) are not the replicas'.
    since = max((int(c["seq"]) for c in _calls(sandbox, 0)), default=0)
    try:
        for replica in replicas.values():
            replica.operator.start()
        scenario.project("p", maxIdsPerRequest=6)
        kube.run(
            "wait", "--for=condition=Ready", "--timeout=120s", "-n", namespace,
            "mixpanelproject/p", timeout=150,
        )  # fmt: skip
        feeder = Feeder(scenario, "p", every=1.0, size=3)
        feeder.start()
        for how in (Disruption.KILL, Disruption.PARTITION):
            time.sleep(settle)
            outcome.handovers.append(_disrupt(how, replicas, api, sandbox, namespace, since))
        time.sleep(settle)
        feeder.stop()
        outcome.requests = feeder.count
        feeder = None

        def done() -> bool:
            items = api.items("datasubjectrequests", namespace)
            outcome.phases = Counter((i.get("status") or {}).get("phase") or "-" for i in items)
            return outcome.phases.get("Succeeded", 0) == outcome.requests

        try:
            wait_until(done, timeout=timeout, interval=2, what="every request Succeeded")
        except AssertionError as err:
            outcome.timed_out = str(err)
        _read_calls(outcome, replicas, api, sandbox, namespace, since)
    finally:
        if feeder is not None:
            feeder.stop()
        for replica in replicas.values():
            replica.proxy.resume()
            replica.operator.stop()
            replica.proxy.close()
        api.close()
    return outcome


def _calls(sandbox: Sandbox, since: int) -> list[dict[str, Any]]:
    """The sandbox's calls after sequence number ``since``."""
    calls: list[dict[str, Any]] = sandbox.get("/calls", since=str(since))["calls"]
    return calls


def _of(replicas: dict[str, Replica], call: dict[str, Any]) -> str:
    host = str(call["host"]).rsplit(":", 1)[0]
    return next((r.name for r in replicas.values() if r.host == host), host)


def _disrupt(
    how: Disruption,
    replicas: dict[str, Replica],
    api: Api,
    sandbox: Sandbox,
    namespace: str,
    since: int,
) -> Handover:
    old = wait_until(lambda: lease_holder(api, namespace), timeout=60, what="a leader")
    [new] = [name for name in replicas if name != old]
    handover = Handover(how, old, new)
    standby = replicas[new].operator.proc
    handover.standby_alive = standby is not None and standby.poll() is None
    leader = replicas[old]
    assert leader.operator.proc is not None
    proc = leader.operator.proc
    handover.disrupted_at = time.time()
    if how is Disruption.KILL:
        leader.operator.kill(signal.SIGKILL)
        handover.old_exited_at = time.time()
    else:
        leader.proxy.stall()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if handover.old_exited_at is None and proc.poll() is not None:
            handover.old_exited_at = time.time()
        if not handover.lease_moved_at and lease_holder(api, namespace) == new:
            handover.lease_moved_at = time.time()
        firsts = [
            c["at"]
            for c in _calls(sandbox, since)
            if c["at"] >= handover.disrupted_at and _of(replicas, c) == new
        ]
        if firsts and handover.lease_moved_at:
            handover.new_first_call = min(firsts)
            break
        time.sleep(0.1)
    calls = _calls(sandbox, since)
    olds = [c["at"] for c in calls if _of(replicas, c) == old]
    handover.old_last_call = max(olds) if olds else None
    if handover.new_first_call is None:
        news = [
            c["at"] for c in calls if _of(replicas, c) == new and c["at"] >= handover.disrupted_at
        ]
        handover.new_first_call = min(news) if news else None
    log(
        f"{how}: {old} -> {new}: Lease moved after "
        f"{handover.lease_seconds:.1f} s, first Mixpanel call of "
        f"{new} after {handover.seconds:.1f} s"
        + (f", {old} stepped down after {handover.old_exited_at - handover.disrupted_at:.1f} s"
           if handover.old_exited_at and how is Disruption.PARTITION else ""),
        "handover",
    )  # fmt: skip
    # The old leader comes back as the standby (its partition healed).
    if proc.poll() is None:
        proc.wait(timeout=60)
    leader.proxy.resume()
    leader.operator.start()
    return handover


def _read_calls(
    outcome: HandoverOutcome,
    replicas: dict[str, Replica],
    api: Api,
    sandbox: Sandbox,
    namespace: str,
    since: int,
) -> None:
    created: dict[str, set[str]] = {name: set() for name in replicas}
    for call in sorted(_calls(sandbox, since), key=lambda c: int(c["seq"])):
        who = _of(replicas, call)
        outcome.calls_by_replica[who] += 1
        if not outcome.segments or outcome.segments[-1] != who:
            outcome.segments.append(who)
        if call["operation"] in CREATES and call["status"] in (200, 201):
            outcome.creates_by_replica[who] += 1
            created.setdefault(who, set()).update(call["distinct_ids"])
    a, b = (created[name] for name in replicas)
    outcome.sent_by_both = a & b
    for task in api.items("mixpaneltasks", namespace):
        if ((task.get("status") or {}).get("lostAnswers") or 0) >= 1:
            for member in task["spec"]["members"]:
                outcome.lost_answer_ids.add(member["name"].replace("ho-", "ho-id-", 1))


def report(outcome: HandoverOutcome) -> str:
    lines = [
        "\ntwo replicas (leader election), each with its own path to kube-apiserver:\n",
        f"  {'handover':38}{'Lease moved':>12}{'old stopped':>13}{'new 1st call':>14}"
        f"{'old last -> new 1st':>21}",
    ]
    for h in outcome.handovers:
        stopped = f"{h.old_exited_at - h.disrupted_at:.1f} s" if h.old_exited_at else "-"
        gap = f"{h.gap:.1f} s" if h.gap is not None else "-"
        lines.append(
            f"  {h.how + ' of ' + h.old:38}{h.lease_seconds:>10.1f} s"
            f"{stopped:>13}{h.seconds:>12.1f} s{gap:>21}"
        )
    lines += [
        f"\n  handover bound: {outcome.bound:.1f} s (disruption to the new leader's first call)",
        f"  calls by replica {dict(outcome.calls_by_replica)}, creates "
        f"{dict(outcome.creates_by_replica)}; the call log changes hands "
        f"{max(0, len(outcome.segments) - 1)} times ({' -> '.join(outcome.segments)})",
        f"  ids created by both replicas: {len(outcome.sent_by_both)} (explained by lost "
        f"answers: {len(outcome.sent_by_both & outcome.lost_answer_ids)})",
        f"  requests {outcome.requests}: {dict(outcome.phases)}",
    ]
    failures = outcome.failures()
    lines += [f"FAIL: {f}" for f in failures] or ["OK: one leader at a time, in order"]
    return "\n".join(lines)
