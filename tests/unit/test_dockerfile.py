"""The Dockerfile: hadolint clean, pinned, non-root, nothing written at run time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.dockerfile import DOCKERFILE, REPO, stages

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_passes_with_the_repository_config() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_the_same_pinned_slim_python() -> None:
    args, found = stages()
    assert [s.name for s in found] == ["builder", None]
    assert found[0].base == found[1].base == args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim-\w+", args["PYTHON_IMAGE"])


def test_builder_uses_the_makefile_uv() -> None:
    pinned = re.search(r"^UV_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert pinned
    builder = stages()[1][0]
    assert f"pip install --no-cache-dir uv=={pinned.group(1)}" in builder.all("RUN")


def test_runtime_stage_is_non_root_read_only_friendly_and_runs_the_operator() -> None:
    runtime = stages()[1][1]
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert runtime.exec_form("ENTRYPOINT") == ["dsr-operator", "run"]
    # Only the virtual environment comes over: no uv, pip caches, sources or compilers.
    copies = runtime.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    labels = " ".join(runtime.all("LABEL"))
    for key in ("title", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
