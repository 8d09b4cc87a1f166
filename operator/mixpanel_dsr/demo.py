"""``make demo``: the whole thing on one machine, no Mixpanel account and no cluster needed.

Starts a real local control plane (etcd + kube-apiserver, CRDs installed), the
Mixpanel sandbox on loopback (one port per region), the operator pointed at
the sandbox, and applies the sample projects and requests from ``examples/``.
Then it shows the requests' progress live (a table redrawn in a terminal,
one line per change otherwise) until they all finish, prints the kubectl line
to keep watching them, and stays up until Ctrl-C, which stops everything.

``--context NAME`` does the same against an existing cluster's kubeconfig
context instead of a local control plane: it installs the CRDs there and runs
the sandbox and the operator on this machine. ``--exit-when-done`` returns
once every sample request has finished (what the tests run).

This module reads the checkout (``examples/``, ``crds/``) and is not part of the wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from mixpanel_dsr.api.models import Phase
from mixpanel_dsr.localcluster.__main__ import publish, wait_for_signal
from mixpanel_dsr.localcluster.build import ensure_binaries
from mixpanel_dsr.localcluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
#: Where the examples' requests and the operator's own objects live.
DEMO_NAMESPACE, OPERATOR_NAMESPACE = "privacy", "mixpanel-dsr-system"
#: What people create (the operator's own kinds follow from these).
USER_KINDS = ("datasubjectrequests", "mixpanelprojects", "clustermixpanelprojects")
FINISHED = {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}
#: ANSI: cursor home, clear the screen.
_CLEAR = "\x1b[H\x1b[2J"


# ---------------------------------------------------------------------- what the table shows


@dataclass(frozen=True)
class Row:
    """One DataSubjectRequest as the demo shows it."""

    request: str  # namespace/name
    phase: Phase
    done: int | None
    total: int | None
    tasks: str
    deadline: datetime | None
    dry_run: bool

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


def row_of(item: Mapping[str, Any]) -> Row:
    """A Row from one DataSubjectRequest as ``kubectl get -o json`` returns it."""
    meta, spec, status = item["metadata"], item["spec"], item.get("status") or {}
    dry_run = bool(spec.get("dryRun"))
    refs = status.get("tasks") or []
    if dry_run:
        tasks = f"dry run: {status.get('plannedTasks', '?')} planned"
    elif refs:
        counts = Counter(str(ref.get("phase", "?")) for ref in refs)
        tasks = f"{len(refs)}: " + ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))
    else:
        tasks = "-"
    deadline = status.get("deadline")
    return Row(
        request=f"{meta['namespace']}/{meta['name']}",
        phase=Phase(status.get("phase") or Phase.PENDING),
        done=status.get("idsDone"),
        total=status.get("idsTotal"),
        tasks=tasks,
        deadline=datetime.fromisoformat(deadline.replace("Z", "+00:00")) if deadline else None,
        dry_run=dry_run,
    )


def all_finished(rows: list[Row]) -> bool:
    """Every request that is carried out (not a dry run) has finished."""
    real = [r for r in rows if not r.dry_run]
    return bool(real) and all(r.finished for r in real)


def _done(row: Row) -> str:
    if row.total is None:
        return "-"
    return f"{row.done or 0}/{row.total}"


def _deadline(row: Row, now: datetime) -> str:
    if row.deadline is None:
        return "-"
    left = row.deadline - now
    when = row.deadline.strftime("%Y-%m-%d")
    return f"{when} (in {left.days}d)" if left.total_seconds() >= 0 else f"{when} (overdue)"


def render_table(rows: list[Row], now: datetime) -> str:
    """The live table: request, phase, done/total ids, tasks, deadline."""
    header = ("REQUEST", "PHASE", "DONE", "TASKS", "DEADLINE")
    cells = [
        (r.request, str(r.phase), _done(r), r.tasks, _deadline(r, now))
        for r in sorted(rows, key=lambda r: r.request)
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    )


def progress_line(row: Row, now: datetime) -> str:
    """One plain line for a request that changed (when stdout is not a terminal)."""
    return (
        f"{now.strftime('%H:%M:%S')} {row.request} {row.phase} done={_done(row)} "
        f"tasks={row.tasks} deadline={_deadline(row, now)}"
    )


# ---------------------------------------------------------------------- processes


@contextmanager
def _child(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_file(
    path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"exited early, see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"{path} did not appear within {timeout:.0f}s")


def start_sandbox(stack: ExitStack, state: Path, time_scale: float) -> dict[str, str]:
    """Run ``mixpanel-sandbox`` on free ports; return its base URL per region."""
    urls_file = state / "sandbox-urls.json"
    urls_file.unlink(missing_ok=True)
    log = state / "sandbox.log"
    proc = stack.enter_context(
        _child(
            [
                sys.executable, "-m", "mixpanel_dsr.sandbox",
                "--port-us", "0", "--port-eu", "0", "--port-in", "0",
                "--time-scale", str(time_scale), "--urls-file", str(urls_file),
            ],
            log,
        )
    )  # fmt: skip
    urls: dict[str, str] = json.loads(_wait_for_file(urls_file, proc, log))
    return urls


def start_operator(
    stack: ExitStack,
    kubeconfig: Path,
    state: Path,
    urls: dict[str, str],
    scope: tuple[str, ...] = ("--all-namespaces",),
) -> bool:
    """Run the operator against the cluster and the sandbox, if this build has it."""
    if importlib.util.find_spec("mixpanel_dsr.cli") is None:
        return False
    region_urls = ",".join(f"{region}={url}" for region, url in sorted(urls.items()))
    stack.enter_context(
        _child(
            [
                sys.executable, "-m", "mixpanel_dsr.cli", "run", *scope,
                "--operator-namespace", OPERATOR_NAMESPACE,
                "--mixpanel-region-urls", region_urls,
                # Demo pace: the sandbox's tasks take seconds, not weeks.
                "--packing-quiet", "3s", "--poll-initial", "2s", "--poll-max", "10s",
                "--retry-interval", "5s", "--metrics-port", "0", "--health-port", "0",
            ],
            state / "operator.log",
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    )  # fmt: skip
    return True


@dataclass(frozen=True)
class Cluster:
    """Where the demo runs: a kubeconfig with one context, and the kubectl to use with it."""

    kubeconfig: Path
    kubectl_path: Path
    description: str

    def kubectl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


def local_cluster(stack: ExitStack, state: Path) -> Cluster:
    """A local control plane for the demo's lifetime, its kubeconfig and kubectl in ``state``."""
    binaries = ensure_binaries()
    plane = stack.enter_context(ControlPlane(binaries))
    kubeconfig, kubectl = publish(plane, state)
    return Cluster(
        kubeconfig,
        kubectl,
        f"Local control plane {binaries.kubernetes_version} at {plane.server}",
    )


def context_cluster(context: str, source: Path | None, state: Path) -> Cluster:
    """An existing cluster: ``context`` of the user's kubeconfig, copied alone into ``state``.

    The copy (credentials inlined, mode 0600) pins the context for kubectl and the
    operator alike, whatever the user's current context becomes meanwhile.
    """
    found = shutil.which("kubectl")
    kubectl = Path(found) if found else ensure_binaries().kubectl
    argv = [str(kubectl), "config", "view", "--raw", "--minify", "--flatten", "--context", context]
    if source is not None:
        argv[1:1] = ["--kubeconfig", str(source)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise SystemExit(f"no kubeconfig context {context!r}: {result.stderr.strip()}")
    state.mkdir(parents=True, exist_ok=True)
    kubeconfig = state / "kubeconfig"
    kubeconfig.unlink(missing_ok=True)
    kubeconfig.touch(mode=0o600)
    kubeconfig.write_text(result.stdout)
    return Cluster(kubeconfig, kubectl, f"Cluster of kubeconfig context {context!r}")


def example_objects() -> set[tuple[str, str]]:
    """(kind, namespace/name) of every object the examples create."""
    found = set()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                meta = doc["metadata"]
                found.add((doc["kind"].lower(), f"{meta.get('namespace', '')}/{meta['name']}"))
    return found


def foreign_objects(cluster: Cluster) -> list[str]:
    """Mixpanel DSR objects in the cluster that are not the examples' (a real installation's).

    The demo's operator answers from the sandbox and writes status: on a cluster that holds
    real projects or requests it would answer for them, so the demo refuses such a cluster.
    """
    try:
        cluster.kubectl("get", "crd", "datasubjectrequests.mixpaneldsr.io", timeout=30)
    except RuntimeError:
        return []  # the product is not installed there
    ours = example_objects()
    out = json.loads(cluster.kubectl("get", ",".join(USER_KINDS), "-A", "-o", "json", timeout=60))
    foreign = []
    for item in out["items"]:
        meta = item["metadata"]
        name = f"{meta.get('namespace', '')}/{meta['name']}"
        if (item["kind"].lower(), name) not in ours:
            foreign.append(f"{item['kind']} {name.lstrip('/')}")
    return foreign


def requests(cluster: Cluster) -> list[Row]:
    out = cluster.kubectl("get", "dsr", "-A", "-o", "json", timeout=30)
    return [row_of(item) for item in json.loads(out)["items"]]


def phases(rows: list[Row]) -> dict[str, str]:
    """namespace/name -> phase of every request that is not a dry run."""
    return {r.request: str(r.phase) for r in rows if not r.dry_run}


# ---------------------------------------------------------------------- showing progress


class Display:
    """The live table on a terminal; plain lines, one per change, anywhere else."""

    def __init__(self, out: TextIO, banner: str, *, live: bool) -> None:
        self.out = out
        self.banner = banner
        self.live = live
        self._seen: dict[str, Row] = {}

    def show(self, rows: list[Row], footer: str, *, final: bool = False) -> None:
        """Redraw the table with ``footer`` under it; or write the rows that changed (and
        ``footer`` once, at the end)."""
        now = datetime.now(UTC)
        if self.live:
            self.out.write(f"{_CLEAR}{self.banner}\n\n{render_table(rows, now)}\n\n{footer}\n")
        else:
            for row in sorted(rows, key=lambda r: r.request):
                if self._seen.get(row.request) != row:
                    self.out.write(progress_line(row, now) + "\n")
                self._seen[row.request] = row
            if final:
                self.out.write(footer + "\n")
        self.out.flush()


def follow(cluster: Cluster, display: Display, timeout: float | None, interval: float) -> list[Row]:
    """Show progress until every sample request has finished; the rows at the end."""
    limit = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            rows = requests(cluster)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            display.out.write(f"(kubectl: {exc}; trying again)\n")
            rows = []
        if all_finished(rows):
            return rows
        display.show(rows, "Sample requests on their way; Ctrl-C stops everything.")
        if limit is not None and time.monotonic() > limit:
            raise TimeoutError(f"not finished within {timeout:.0f}s: {phases(rows)}")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixpanel_dsr.demo", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=REPO / ".local")
    parser.add_argument(
        "--context",
        help="run against this context of an existing cluster's kubeconfig instead of "
        "a local control plane (CRDs and the examples are applied there)",
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="with --context: the kubeconfig file (else kubectl's own)"
    )
    parser.add_argument(
        "--time-scale", type=float, default=0.2, help="sandbox task durations x this (faster < 1)"
    )
    parser.add_argument("--exit-when-done", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="with --exit-when-done")
    args = parser.parse_args(argv)
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)

    try:
        return _run(args, state)
    except KeyboardInterrupt:
        print("\nstopped.", flush=True)
        return 0


def _run(args: argparse.Namespace, state: Path) -> int:
    with ExitStack() as stack:
        scope: tuple[str, ...] = ("--all-namespaces",)
        if args.context:
            cluster = context_cluster(args.context, args.kubeconfig, state)
            foreign = foreign_objects(cluster)
            if foreign:
                shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
                print(
                    f"context {args.context!r} holds Mixpanel DSR objects that are not the "
                    f"examples' ({shown}). The demo's operator answers from a sandbox and "
                    f"must not touch them: run it against a scratch cluster (e.g. kind).",
                    file=sys.stderr,
                )
                return 2
            # Only the examples' namespace (cluster projects are watched in any case).
            scope = ("--namespace", DEMO_NAMESPACE)
        else:
            cluster = local_cluster(stack, state)
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        urls = start_sandbox(stack, state, args.time_scale)
        has_operator = start_operator(stack, cluster.kubeconfig, state, urls, scope)
        for path in sorted(EXAMPLES.glob("*.yaml")):
            cluster.kubectl("apply", "-f", str(path))
        banner = (
            f"{cluster.description}; Mixpanel sandbox at {urls.get('US')} (US), "
            f"{urls.get('EU')} (EU), {urls.get('IN')} (IN); logs in {state}/.\n"
            f"Sample projects and requests from examples/ are applied."
        )
        watch = (
            f"Watch them yourself in another shell:\n"
            f"  export KUBECONFIG={cluster.kubeconfig} PATH={cluster.kubectl_path.parent}:$PATH\n"
            f"  kubectl get dsr -A -w\n"
            f"  kubectl describe dsr -n privacy priv-1234-erase"
        )
        live = sys.stdout.isatty()
        print(banner, flush=True)
        if not has_operator:
            print(
                "This build has no reconciler yet: requests stay Pending (the API, admission "
                "and the sandbox are live).",
                flush=True,
            )
            if not args.exit_when_done:
                wait_for_signal()
            return 0
        display = Display(sys.stdout, banner, live=live)
        try:
            rows = follow(cluster, display, args.timeout if args.exit_when_done else None, 1.0)
        except TimeoutError as exc:
            print(exc, file=sys.stderr)
            return 1
        ok = all(r.phase is Phase.SUCCEEDED for r in rows if not r.dry_run)
        verdict = (
            "All sample requests Succeeded."
            if ok
            else "Sample requests finished, not all Succeeded."
        )
        display.show(rows, f"{verdict}\n{watch}", final=True)
        if args.context:
            print(
                f"The CRDs and examples stay in context {args.context!r}; "
                f"remove the examples with: kubectl delete -f examples/",
                flush=True,
            )
        if args.exit_when_done:
            print(json.dumps(phases(rows), indent=2), flush=True)
            return 0 if ok else 1
        print("Ctrl-C stops everything.", flush=True)
        wait_for_signal()
        return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
