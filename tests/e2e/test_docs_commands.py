"""Docs that work when pasted: the shell commands of README.md, docs/*.md and the chart's NOTES.

Every command in their fenced shell blocks (and the rendered NOTES) either runs
here, against a real kube-apiserver of its own where the operator and the
sandbox carried out the sample requests from examples/, or is in SKIPPED with
the reason it cannot run here. Commands run from a working folder that holds
the checkout's files (as links) and the files a reader would have (FILES). How
each one is made safe (``--dry-run=server`` for writes, ``helm template`` for
installs, short ``--timeout``s) is in tests/doc_commands.py. The placeholders
a reader fills in are filled from PLACEHOLDERS. A new doc command that fits no
rule and is not in SKIPPED fails the test, and so does a SKIPPED entry no doc
holds any more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixpanel_dsr.localcluster import ControlPlane, ensure_tools
from tests.conftest import CRDS, EXAMPLES, REPO, Kube
from tests.doc_commands import DocCommand, Refused, from_markdown, from_notes, plan
from tests.e2e.chart_helpers import CHART, Helm
from tests.e2e.operator_harness import Operator, Sandbox, wait_until

pytestmark = pytest.mark.e2e

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RELEASE, RELEASE_NAMESPACE = "dsr", "mixpanel-dsr-system"

#: Reviewed: the first line of each command the test does not run, and why.
SKIPPED = {
    "make demo   # local control plane + sandbox Mixpanel + sample requests to watch; "
    "Ctrl-C stops it": "runs until Ctrl-C with its own control plane; tests/e2e/test_demo.py "
    "runs it (--exit-when-done)",
    "make test   # ruff, mypy and every test, end-to-end ones against a real kube-apiserver "
    "+ etcd": "the whole suite, which holds this test; CI (.ci/run) runs it",
    "kubectl dsr new priv-1234-erase -n privacy --project web-us --type Deletion \\": "reads a "
    "ticket's CSV the reader has and creates objects; tests/e2e/test_plugin.py runs new --csv "
    "--apply",
    'kubectl-dsr completion zsh > "${fpath[1]}/_kubectl-dsr"                 # zsh': "writes "
    "into zsh's fpath (bash has none); the bash line above runs, tests/unit/test_plugin.py "
    "checks the zsh script",
    "mixpanel-sandbox                      # or: python -m mixpanel_dsr.sandbox": "serves "
    "until Ctrl-C on fixed ports; the session's sandbox is the same command on free ports",
    'docker build -t registry.example.com/mixpanel-dsr-operator:0.1.0 --build-arg REVISION="$('
    'git rev-parse HEAD)" .': "no container engine here; tests/e2e/test_image.py runs the "
    "Dockerfile's build steps and starts the result",
    "docker push registry.example.com/mixpanel-dsr-operator:0.1.0": "no registry here",
    "kubectl rollout status deploy/dsr-mixpanel-dsr-operator -n mixpanel-dsr-system "
    "--timeout=2m": "no kubelet here, so no pod ever runs; tests/e2e/test_chart.py installs the "
    "chart and runs the operator as its ServiceAccount",
    "kubectl logs -n mixpanel-dsr-system deploy/dsr-mixpanel-dsr-operator --tail=100": "no "
    "kubelet here, so no pod and no log; tests/e2e/test_image.py reads the image's log lines",
    "kubectl create secret generic priv-1236-ids -n privacy --from-file=ids=ids-1236.txt "
    "--dry-run=client -o yaml > priv-1236-ids.yaml": "reads the reader's ids file and writes the "
    "Secret into a file for sops",
    "sops --encrypt --age age1yourpublickey --encrypted-regex '^(data|stringData)$' --in-place "
    "priv-1236-ids.yaml": "needs sops and the reader's age key",
    "shred -u ids-1236.txt": "removes the reader's ids file",
    "kubectl create secret generic priv-1236-ids -n privacy --from-file=ids=ids-1236.txt "
    "--dry-run=client -o yaml | kubeseal -o yaml > priv-1236-ids.sealed.yaml": "needs kubeseal, "
    "the Sealed Secrets controller's key and the reader's ids file",
    "kubectl dsr intake tickets.csv -n privacy --project web-us": "shows how a bad file is "
    "refused (exit 1); tests/e2e/test_intake.py refuses bad files against the real cluster",
    "read -rs MIXPANEL_GDPR_TOKEN": "waits for the reader to type the token; the commands "
    "after it run with the variable empty",
}

#: Reviewed: whole families of commands the test does not run, and why.
SKIPPED_PATTERNS = {
    re.compile(r"curl .*127\.0\.0\.1:870[123]|curl .*\$A/|A=http://127\.0\.0\.1:870[123]/"): (
        "calls the sandbox `make sandbox` serves on its fixed ports 8701-8703 (and flips its "
        "faults); tests/sandbox/ makes these calls against a sandbox of its own"
    ),
}


def _skipped(command: DocCommand) -> str | None:
    if command.first_line in SKIPPED:
        return SKIPPED[command.first_line]
    for pattern, reason in SKIPPED_PATTERNS.items():
        if pattern.match(command.first_line):
            return reason
    return None


#: What a reader types in place of a placeholder: the sandbox's demo project, and an id the
#: sample request priv-1234-erase erased.
PLACEHOLDERS = {
    "<the project token>": "demo-token-us",
    "--from-literal=token=...": "--from-literal=token=demo-oauth-us",
    "--check-id 'user-8812'": "--check-id '123'",
}

#: Files a reader has at hand when the docs use them (the CSV as docs/kubectl-dsr.md shows it).
FILES = {
    "ids-1236.txt": "in-user-1\nin-user-2\nin-user-3\n",
    "tickets-2026-11.csv": (
        "Ticket,Request Type,Compliance,Distinct ID(s),Received Date,Requester Email\n"
        "PRIV-1234,erase,GDPR,123,2026-11-28,someone@example.com\n"
        "PRIV-1235,access,CCPA,c0ffee-42,2026-11-27T10:00:00+01:00,other@example.com\n"
        "PRIV-1234,erase,GDPR,user-123@example.com,2026-11-28,someone@example.com\n"
    ),
}


def _markdown_commands() -> list[DocCommand]:
    return [c for path in DOCS for c in from_markdown(path, REPO)]


def _notes(tmp_path: Path, plane: ControlPlane) -> str:
    helm = Helm(ensure_tools(), tmp_path / "helm-home", plane.kubeconfig)
    # The CRDs are installed already (not by helm), which the NOTES do not depend on.
    result = helm.run(
        "install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, "--dry-run=client",
        "--set", "crds.install=false", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout[result.stdout.index("NOTES:") + len("NOTES:") :]


def _fill(text: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


@dataclass(frozen=True)
class Stack:
    plane: ControlPlane
    kube: Kube
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A control plane of its own (the docs' commands read across namespaces), the sandbox and
    the operator, with the examples applied and carried out: the objects the docs name exist."""
    work = tmp_path_factory.mktemp("docs")
    with ControlPlane() as plane:
        kube = Kube(plane)
        kube.run("apply", "-f", str(CRDS))
        kube.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        sandbox = Sandbox(work)
        sandbox.start()
        operator = Operator(work, plane.kubeconfig, sandbox.urls)
        try:
            kube.run("apply", "-f", str(EXAMPLES / "00-namespace.yaml"))
            operator.start()
            kube.run("apply", "-f", str(EXAMPLES))

            def done() -> bool:
                phases = {
                    name: kube.get("dsr", name, "privacy").get("status", {}).get("phase")
                    for name in ("priv-1234-erase", "priv-1235-access", "priv-1236-erase")
                }
                return set(phases.values()) == {"Succeeded"}

            wait_until(done, timeout=120, what=f"the samples Succeeded\n{operator.log_tail()}")
            folder = work / "checkout"
            folder.mkdir()
            for entry in REPO.iterdir():
                if entry.name not in {".git", ".venv", ".tools", ".local"}:
                    (folder / entry.name).symlink_to(entry)
            for name, text in FILES.items():
                (folder / name).write_text(text)
            yield Stack(plane, kube, folder)
        finally:
            operator.stop()
            sandbox.stop()


def _run_all(
    commands: list[DocCommand], stack: Stack, tmp_path: Path
) -> tuple[list[str], list[str]]:
    """(what failed, what ran) for every command not in SKIPPED, in the docs' order."""
    plane = stack.plane
    tools = ensure_tools()
    path = os.pathsep.join(
        [
            str(plane.binaries.kubectl.parent),
            str(Path(sys.executable).parent),
            str(tools.helm.parent),
            os.environ["PATH"],
        ]
    )
    home = tmp_path / "helm-home"
    env = {
        **os.environ,
        "PATH": path,
        "KUBECONFIG": str(plane.kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    failures, ran = [], []
    for command in commands:
        if _skipped(command):
            continue
        try:
            script = plan(DocCommand(command.source, _fill(command.text)))
        except Refused as exc:
            failures.append(
                f"{command.source}: not run ({exc}) and not in SKIPPED:\n{command.text}"
            )
            continue
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", script],
            cwd=stack.workdir, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        ran.append(command.source)
        exists = re.search(r"\bcreate\b", script) and "already exists" in result.stderr
        if result.returncode != 0 and not exists:
            failures.append(
                f"{command.source}: exit {result.returncode}\n$ {script}\n"
                f"{result.stdout[-1500:]}{result.stderr[-1500:]}"
            )
    return failures, ran


def test_every_doc_command_is_run_or_skipped_for_a_reviewed_reason() -> None:
    commands = _markdown_commands()
    first_lines = {c.first_line for c in commands}
    assert not set(SKIPPED) - first_lines, "SKIPPED names commands no doc holds any more"
    for pattern in SKIPPED_PATTERNS:
        assert any(pattern.match(line) for line in first_lines), f"{pattern} skips nothing"
    unplanned = []
    for command in commands:
        if _skipped(command):
            continue
        try:
            plan(DocCommand(command.source, _fill(command.text)))
        except Refused as exc:
            unplanned.append(f"{command.source}: {exc}: {command.first_line}")
    assert unplanned == []
    # The docs the issue asks for hold commands at all.
    sources = {c.source.split(":")[0] for c in commands}
    for page in ("docs/install.md", "docs/tokens.md", "docs/troubleshooting.md"):
        assert page in sources


def test_the_docs_commands_run_against_the_real_control_plane(stack: Stack, tmp_path: Path) -> None:
    failures, ran = _run_all(_markdown_commands(), stack, tmp_path)
    assert failures == [], "\n\n".join(failures)
    assert len(ran) >= 10


def test_the_chart_notes_commands_run_against_the_real_control_plane(
    stack: Stack, tmp_path: Path
) -> None:
    notes = _notes(tmp_path, stack.plane)
    commands = from_notes(notes, "charts/mixpanel-dsr-operator/templates/NOTES.txt (rendered)")
    assert len(commands) >= 5, notes
    # The Lease the chart's leader holds; no pods run on this control plane.
    for lease in re.findall(r"kubectl get lease (\S+) -n (\S+)", notes):
        stack.kube.run("create", "namespace", lease[1], check=False)
        stack.kube.apply(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": lease[0], "namespace": lease[1]},
                "spec": {"holderIdentity": "dsr-operator-0"},
            }
        )
    failures, ran = _run_all(commands, stack, tmp_path)
    assert failures == [], "\n\n".join(failures)
    assert len(ran) == len(commands)
