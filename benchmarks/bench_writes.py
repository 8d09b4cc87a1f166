"""Kubernetes API writes per request over its life, read from kube-apiserver's own counters.

For each engine measured (the current work tree, and by default a baseline git
revision) this starts a fresh control plane (real kube-apiserver + etcd), the
Mixpanel sandbox and the operator, creates one project, then:

1. snapshots ``apiserver_request_total`` (``kubectl get --raw /metrics``);
2. applies N one-id deletion DataSubjectRequests (``kubectl apply`` of v1 Lists);
3. waits until every request is Succeeded and the writes have settled;
4. snapshots again, and reads the audit log of the same window.

Writes are the counters whose verb is POST, PUT, PATCH, DELETE, DELETECOLLECTION
or APPLY (any response code), broken down by (resource, subresource, verb). The
user's own writes are the N creates of datasubjectrequests. Leases and
kube-apiserver's own writes (it renews its identity Lease and re-posts the
``kubernetes`` Service's endpoints every 10 s; there is no controller-manager)
are counted apart; which writes are its own comes from an audit log of writes
(metadata level) that a wrapper of kube-apiserver turns on. "Operator writes
per request" is everything else divided by N, given without and with Events.
The operator runs under its own client-certificate user, so the same audit log
cross-checks the attribution by user.

Another engine is run from a ``git worktree`` of its revision with
``PYTHONPATH=<worktree>/operator`` (same venv), the CRDs of that revision and
the operator flags of that revision's e2e harness. The sandbox is the current
one for both, so Mixpanel behaves the same.

    .venv/bin/python -m benchmarks.bench_writes [N] [--engine-ref GITREF]
        [--no-baseline | --baseline-only] [--time-scale S] [--keep] [--json FILE]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import REPO, Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import FAST_FLAGS, Operator, Sandbox, wait_until, workdir

from mixpanel_dsr.localcluster import Binaries, ControlPlane, ensure_binaries

DEFAULT_BASELINE = "8f63f54"
NAMESPACE = "bench"
PROJECT = "writes"
OPERATOR_USER = "mixpanel-dsr-operator"
#: Who kube-apiserver's own loopback writes come from (bootstrap, its identity Lease, the
#: endpoints of the ``kubernetes`` Service, refused on loopback, every 10 s).
APISERVER_USER = "system:apiserver"
#: What kube-apiserver writes by itself on a timer; ignored when waiting for quiet.
APISERVER_PERIODIC = {"leases", "endpoints", "endpointslices"}

#: apiserver_request_total's verbs that change something (CleanVerb's names; APPLY is
#: a server-side-apply PATCH). Lowercase RBAC spellings are accepted too.
WRITE_VERBS = {
    "POST": "POST", "CREATE": "POST",
    "PUT": "PUT", "UPDATE": "PUT",
    "PATCH": "PATCH",
    "DELETE": "DELETE",
    "DELETECOLLECTION": "DELETECOLLECTION",
    "APPLY": "APPLY",
}  # fmt: skip

#: Audit verbs (RBAC names) as the metric spells them.
AUDIT_VERBS = {
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETECOLLECTION",
}

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": list(AUDIT_VERBS)},
        {"level": "None"},
    ],
}

#: (group, resource, subresource, verb, code): one apiserver_request_total series, summed
#: over the labels left out (version, scope, component, dry_run).
Series = tuple[str, str, str, str, str]
#: (resource, subresource, verb): one row of the breakdown.
Row = tuple[str, str, str]


def log(message: str) -> None:
    print(f"[bench-writes {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- reading the counters


def write_counters(plane: ControlPlane) -> Counter[Series]:
    """Every write series of apiserver_request_total, as kube-apiserver reports it now."""
    text = plane.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    lines = [line for line in text.splitlines() if line.startswith("apiserver_request_total{")]
    counts: Counter[Series] = Counter()
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            verb = WRITE_VERBS.get(labels.get("verb", "").upper())
            if verb is None:
                continue
            key = (
                labels.get("group", ""),
                labels.get("resource", ""),
                labels.get("subresource", ""),
                verb,
                labels.get("code", ""),
            )
            counts[key] += int(sample.value)
    return counts


def is_lease(series: Series) -> bool:
    return series[1] == "leases"


def is_user_apply(series: Series) -> bool:
    """kubectl apply's creates of the requests (the operator never creates one)."""
    group, resource, subresource, verb, _code = series
    return (
        group == "mixpaneldsr.io"
        and resource == "datasubjectrequests"
        and not subresource
        and verb == "POST"
    )


def rows(counts: Counter[Series], keep: Callable[[Series], bool]) -> Counter[Row]:
    out: Counter[Row] = Counter()
    for series, value in counts.items():
        if value and keep(series):
            out[(series[1], series[2], series[3])] += value
    return out


def failed(counts: Counter[Series]) -> Counter[Row]:
    """Writes that the API server refused (any non-2xx code), by row."""
    return rows(counts, lambda s: not s[4].startswith("2"))


# ---------------------------------------------------------------------- the audit log


def audit_binaries(folder: Path) -> tuple[Binaries, Path]:
    """The control-plane binaries with kube-apiserver wrapped to write an audit log of writes."""
    binaries = ensure_binaries()
    policy = folder / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit_log = folder / "audit.log"
    wrapper = folder / "kube-apiserver"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec {shlex.quote(str(binaries.kube_apiserver))} "$@" '
        f"--audit-policy-file={shlex.quote(str(policy))} "
        f"--audit-log-path={shlex.quote(str(audit_log))} "
        "--audit-log-format=json --audit-log-mode=blocking --audit-log-maxsize=0\n"
    )
    wrapper.chmod(0o755)
    return dataclasses.replace(binaries, kube_apiserver=wrapper), audit_log


def audit_writes(audit_log: Path, since_bytes: int) -> Counter[tuple[str, str, str, str]]:
    """(user, resource, subresource, verb) of each write logged after ``since_bytes``."""
    out: Counter[tuple[str, str, str, str]] = Counter()
    if not audit_log.exists():
        return out
    with open(audit_log, "rb") as f:
        f.seek(since_bytes)
        for raw in f:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("stage") != "ResponseComplete":
                continue
            verb = AUDIT_VERBS.get(entry.get("verb", ""))
            ref = entry.get("objectRef") or {}
            if verb is None or not ref:
                continue
            user = entry.get("user", {}).get("username", "?")
            out[(user, ref.get("resource", ""), ref.get("subresource", ""), verb)] += 1
    return out


# ---------------------------------------------------------------------- one engine


@dataclass
class Engine:
    """Which operator code runs: the installed work tree (``source`` None) or a worktree."""

    label: str
    root: Path
    source: Path | None = None

    @property
    def crds(self) -> Path:
        return self.root / "crds"

    def env(self) -> dict[str, str]:
        if self.source is None:
            return {}
        path = os.environ.get("PYTHONPATH")
        return {"PYTHONPATH": os.pathsep.join([str(self.source), *([path] if path else [])])}

    def flags(self) -> list[str]:
        """The operator flags of this revision's e2e harness (FAST_FLAGS), else ours."""
        harness = self.root / "tests" / "e2e" / "operator_harness.py"
        if self.source is None or not harness.exists():
            return list(FAST_FLAGS)
        for node in ast.parse(harness.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "FAST_FLAGS" for t in node.targets
            ):
                value = ast.literal_eval(node.value)
                if isinstance(value, list):
                    return [str(v) for v in value]
        return list(FAST_FLAGS)

    def check_import(self) -> str:
        """Where the operator process will import mixpanel_dsr from (must be this engine's);
        stops the command before any run when this engine's handlers do not import."""
        code = "import mixpanel_dsr, mixpanel_dsr.handlers; print(mixpanel_dsr.__file__)"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            raise SystemExit(f"{self.label}: the operator does not import:\n{proc.stderr}")
        out = proc.stdout.strip()
        expected = (self.source or REPO / "operator").resolve()
        if not Path(out).resolve().is_relative_to(expected):
            raise SystemExit(f"{self.label}: mixpanel_dsr imports from {out}, not {expected}")
        return out


class EngineOperator(Operator):
    """The harness's Operator, launched with an engine's flags and PYTHONPATH."""

    def __init__(self, engine: Engine, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, env=engine.env(), **kwargs)
        self.flags = engine.flags()


@contextmanager
def engine_at(ref: str | None, tmp: Path) -> Iterator[Engine]:
    """The work tree's engine (ref None), or a detached git worktree at ``ref``."""
    if ref is None:
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "operator", "crds"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        head = git("rev-parse", "--short", "HEAD")
        yield Engine(f"work tree ({head}{' + changes' if dirty else ''})", REPO)
        return
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = tmp / f"engine-{sha[:12]}"
    git("worktree", "add", "--detach", "--quiet", str(path), sha)
    try:
        yield Engine(f"{ref} ({sha[:7]})", path, path / "operator")
    finally:
        git("worktree", "remove", "--force", str(path))


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class Result:
    engine: str
    n: int
    window: Counter[Series] = field(default_factory=Counter)
    audit: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    apply_seconds: float = 0.0
    succeeded_seconds: float = 0.0
    settle_seconds: float = 0.0
    mixpanel: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> int:
        return sum(v for s, v in self.window.items() if is_user_apply(s))

    @property
    def leases(self) -> int:
        return sum(v for s, v in self.window.items() if is_lease(s))

    def apiserver_rows(self) -> Counter[Row]:
        """kube-apiserver's own writes other than Leases: its audit rows, capped by the
        counters (the audit window holds the metrics window)."""
        logged: Counter[Row] = Counter()
        for (user, *row), value in self.audit.items():
            if user == APISERVER_USER and row[0] != "leases":
                logged[(row[0], row[1], row[2])] += value
        counted = rows(self.window, lambda s: not is_lease(s))
        return logged & counted

    @property
    def apiserver(self) -> int:
        return sum(self.apiserver_rows().values())

    @property
    def total(self) -> int:
        return sum(self.window.values())

    def operator_rows(self) -> Counter[Row]:
        """Every write but the user's applies, Leases and kube-apiserver's own."""
        return rows(self.window, lambda s: not (is_user_apply(s) or is_lease(s))) - (
            self.apiserver_rows()
        )

    @property
    def events(self) -> int:
        return sum(v for row, v in self.operator_rows().items() if row[0] == "events")

    @property
    def operator_with_events(self) -> int:
        return sum(self.operator_rows().values())

    @property
    def operator_without_events(self) -> int:
        return self.operator_with_events - self.events

    @property
    def per_request(self) -> float:
        """The figure: the operator's writes (Events and Leases aside) per request."""
        return self.operator_without_events / self.n

    @property
    def per_request_with_events(self) -> float:
        return self.operator_with_events / self.n

    def audit_by_user(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (user, *_), value in self.audit.items():
            out[user] += value
        return out


def phases(kube: Kube) -> Counter[str]:
    out = kube.run(
        "get", "dsr", "-n", NAMESPACE, "--chunk-size=0",
        "-o", 'jsonpath={range .items[*]}{.status.phase}{"\\n"}{end}', timeout=300,
    ).stdout  # fmt: skip
    return Counter(line.strip() or "(none)" for line in out.splitlines())


def settle(plane: ControlPlane, quiet: float, limit: float) -> tuple[Counter[Series], float]:
    """Counters once only kube-apiserver's timers wrote for ``quiet`` s (at most ``limit``)."""
    start = time.monotonic()
    last = write_counters(plane)
    stable_since = time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(min(2.0, quiet))
        now = write_counters(plane)
        moved = any(v != last.get(s, 0) for s, v in now.items() if s[1] not in APISERVER_PERIODIC)
        last = now
        if moved:
            stable_since = time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
    return last, time.monotonic() - start


def measure(engine: Engine, n: int, args: argparse.Namespace, tmp: Path) -> Result:
    base = workdir()
    log(f"{engine.label}: logs in {base}")
    binaries, audit_log = audit_binaries(base)
    result = Result(engine.label, n)
    with ControlPlane(binaries) as plane:
        kube = Kube(plane)
        kube.run("apply", "-f", str(engine.crds))
        kube.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        kube.run("create", "namespace", NAMESPACE)
        kube.run("create", "namespace", "mixpanel-dsr-system")
        operator_kubeconfig = plane.mint_identity(OPERATOR_USER, ("system:masters",))
        sandbox = Sandbox(base, time_scale=args.time_scale)
        sandbox.start()
        operator = EngineOperator(engine, base, operator_kubeconfig, sandbox.urls)
        try:
            operator.start()
            scenario = Scenario(kube, sandbox, NAMESPACE)
            token = scenario.project(PROJECT)
            kube.run(
                "wait", "--for=condition=Ready", "--timeout=120s",
                "-n", NAMESPACE, f"mixpanelproject/{PROJECT}",
            )  # fmt: skip
            settle(plane, quiet=3.0, limit=60.0)
            # The audit window starts before the first snapshot and ends after the last.
            audit_from = audit_log.stat().st_size if audit_log.exists() else 0
            before = write_counters(plane)
            calls_before = sandbox.calls(token)
            calls_before["by_operation"] = Counter(calls_before.get("by_operation", {}))

            items = [
                scenario.request_manifest(f"req-{i:05d}", [f"id-{i:05d}"], PROJECT)
                for i in range(n)
            ]
            start = time.monotonic()
            for at in range(0, n, args.chunk):
                chunk = {"apiVersion": "v1", "kind": "List", "items": items[at : at + args.chunk]}
                kube.run("apply", "-f", "-", input=yaml.safe_dump(chunk), timeout=900)
            result.apply_seconds = time.monotonic() - start
            log(f"{engine.label}: applied {n} requests in {result.apply_seconds:.1f} s")

            def done() -> bool:
                operator.healthy()  # raises if the operator exited
                seen = phases(kube)
                if seen.get("Failed") or seen.get("Cancelled"):
                    raise SystemExit(f"{engine.label}: requests ended badly: {dict(seen)}")
                log(f"{engine.label}: {dict(sorted(seen.items()))}")
                return seen.get("Succeeded", 0) == n

            wait_until(done, timeout=args.timeout, interval=5, what=f"{n} requests Succeeded")
            result.succeeded_seconds = time.monotonic() - start
            log(f"{engine.label}: all Succeeded after {result.succeeded_seconds:.1f} s")
            after, result.settle_seconds = settle(plane, quiet=args.quiet, limit=120.0)
            result.window = after - before
            result.audit = audit_writes(audit_log, audit_from)
            calls = sandbox.calls(token)
            by_operation = Counter(calls.get("by_operation", {})) - calls_before["by_operation"]
            result.mixpanel = {
                "calls": int(calls["count"]) - int(calls_before["count"]),
                "by_operation": dict(by_operation),
                "429": int(calls.get("by_status", {}).get("429", 0))
                - int(calls_before.get("by_status", {}).get("429", 0)),
            }
        finally:
            operator.stop()
            sandbox.stop()
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return result


# ---------------------------------------------------------------------- the report


def fmt_row(row: Row) -> str:
    resource, subresource, verb = row
    return f"{resource}{'/' + subresource if subresource else ''} {verb}"


def ratio(current: float, baseline: float) -> str:
    if baseline == 0:
        return "   -" if current == 0 else "  new"
    return f"{current / baseline:5.2f}x"


def report(results: list[Result], time_scale: float) -> None:
    n = results[0].n
    print(
        f"\nKubernetes API writes for {n} one-id deletion requests in one project, "
        f"apply -> all Succeeded\n(apiserver_request_total, real kube-apiserver, "
        f"sandbox Mixpanel at time scale {time_scale})\n"
    )
    width = 44
    header = f"{'':{width}}" + "".join(f"{r.engine[:30]:>32}" for r in results)
    if len(results) == 2:
        header += f"{'ratio':>9}"
    print(header)

    def line(label: str, values: list[float], fmt: str) -> None:
        cells = "".join(f"{fmt.format(v):>32}" for v in values)
        tail = f"  {ratio(values[1], values[0])}" if len(values) == 2 else ""
        print(f"{label:{width}}{cells}{tail}")

    figures: list[tuple[str, Callable[[Result], float], str]] = [
        ("operator writes per request, no Events", lambda r: r.per_request, "{:.2f}"),
        ("operator writes per request, with Events", lambda r: r.per_request_with_events, "{:.2f}"),
        ("Events per request", lambda r: r.events / n, "{:.2f}"),
        ("operator writes (total, with Events)", lambda r: r.operator_with_events, "{:.0f}"),
        ("user's applies (creates of requests)", lambda r: r.user, "{:.0f}"),
        ("Lease writes (any writer)", lambda r: r.leases, "{:.0f}"),
        ("kube-apiserver's other own writes", lambda r: r.apiserver, "{:.0f}"),
        ("all writes in the window", lambda r: r.total, "{:.0f}"),
        ("Mixpanel calls", lambda r: r.mixpanel["calls"], "{:.0f}"),
        ("seconds to apply", lambda r: r.apply_seconds, "{:.1f}"),
        ("seconds to all Succeeded", lambda r: r.succeeded_seconds, "{:.1f}"),
    ]  # fmt: skip
    for label, value, fmt in figures:
        line(label, [value(r) for r in results], fmt)

    print("\noperator writes by resource, subresource and verb (per request; total)")
    table = [r.operator_rows() for r in results]
    for row in sorted(set().union(*table), key=lambda k: (-max(t[k] for t in table), k)):
        values = [t[row] for t in table]
        cells = "".join(f"{v / n:>22.3f}{v:>10}" for v in values)
        tail = f"  {ratio(values[1], values[0])}" if len(values) == 2 else ""
        print(f"  {fmt_row(row):{width - 2}}{cells}{tail}")

    for r in results:
        refused = failed(r.window) - r.apiserver_rows()
        if refused:
            listed = ", ".join(f"{fmt_row(k)}: {v}" for k, v in sorted(refused.items()))
            print(f"\n{r.engine}: refused writes (non-2xx, counted above): {listed}")
        users = r.audit_by_user()
        print(
            f"{r.engine}: audit log writes by user: "
            + ", ".join(f"{u} {v}" for u, v in users.most_common())
            + f" (metrics-derived operator writes: {r.operator_with_events})"
        )
        print(f"{r.engine}: Mixpanel calls by operation: {r.mixpanel['by_operation']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_writes", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("n", nargs="?", type=int, default=2000, help="requests (default 2000)")
    parser.add_argument(
        "--engine-ref",
        default=DEFAULT_BASELINE,
        help=f"git revision of the baseline engine (default {DEFAULT_BASELINE}, engine v1)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--no-baseline", action="store_true", help="measure only the work tree's engine"
    )
    only.add_argument(
        "--baseline-only", action="store_true", help="measure only the --engine-ref engine"
    )
    parser.add_argument("--time-scale", type=float, default=0.05, help="sandbox time scale")
    parser.add_argument("--chunk", type=int, default=500, help="requests per kubectl apply")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to all Succeeded")
    parser.add_argument(
        "--quiet", type=float, default=10.0, help="seconds without writes that end a run"
    )
    parser.add_argument("--keep", action="store_true", help="keep each run's logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    refs: list[str | None] = [args.engine_ref, None]
    if args.no_baseline:
        refs = [None]
    elif args.baseline_only:
        refs = [args.engine_ref]
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mixpanel-dsr-bench-") as tmp, ExitStack() as stack:
        engines = [stack.enter_context(engine_at(ref, Path(tmp))) for ref in refs]
        for engine in engines:  # every engine must import before any run starts
            log(f"{engine.label}: mixpanel_dsr from {engine.check_import()}")
        for engine in engines:
            results.append(measure(engine, args.n, args, Path(tmp)))
    report(results, args.time_scale)
    print(f"\n(whole command: {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "engine": r.engine,
                        "n": r.n,
                        "operator_writes_per_request": r.per_request,
                        "operator_writes_per_request_with_events": r.per_request_with_events,
                        "events": r.events,
                        "leases": r.leases,
                        "user_applies": r.user,
                        "rows": {fmt_row(k): v for k, v in sorted(r.operator_rows().items())},
                        "audit_by_user": dict(r.audit_by_user()),
                        "mixpanel": r.mixpanel,
                        "apply_seconds": r.apply_seconds,
                        "succeeded_seconds": r.succeeded_seconds,
                    }
                    for r in results
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
