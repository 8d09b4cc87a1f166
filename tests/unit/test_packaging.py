"""The runtime wheel holds the operator, kubectl dsr and the sandbox, and needs nothing undeclared.

The wheel is built with the Makefile's uv exactly as the Dockerfile builds it. Its
files are read as shipped: the local control plane and the demo (which build
from, and read, a checkout) are not in it, and every module it ships imports
only the standard library, itself and the distributions its own METADATA
requires. Then it is installed as a user installs it (``pip install``
semantics: resolved from its declared requirements, pinned to the lock's
versions) into a fresh virtual environment, where every shipped module imports
and the three commands answer ``--help``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.dockerfile import REPO

UV = REPO / ".tools" / "bin" / "uv"
COMMANDS = ("dsr-operator", "kubectl-dsr", "mixpanel-sandbox")


def _uv(*args: str, cwd: Path = REPO, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    result = subprocess.run(
        [str(UV), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _uv("build", "--wheel", "--out-dir", str(out), str(REPO))
    (found,) = out.glob("mixpanel_dsr_operator-*.whl")
    return found


def _modules(wheel: Path) -> dict[str, str]:
    """Dotted module name -> source, for every .py file the wheel ships."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name.removesuffix(".py").removesuffix("/__init__").replace("/", "."): archive.read(
                name
            ).decode()
            for name in archive.namelist()
            if name.endswith(".py")
        }


def _requires(wheel: Path) -> set[str]:
    """Normalised names of the distributions the wheel requires outside any extra."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    names = set()
    for line in lines:
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            requirement = line.removeprefix("Requires-Dist:").strip()
            names.add(_normalise(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]))
    return names


def _dev_extra() -> set[str]:
    """Normalised names of the packages the dev extra lists."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        _normalise(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
        for requirement in project["optional-dependencies"]["dev"]
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level_imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - {"__future__"}


def test_the_wheel_ships_the_operator_plugin_and_sandbox_but_not_the_dev_tools(
    wheel: Path,
) -> None:
    modules = _modules(wheel)
    for shipped in (
        "mixpanel_dsr.cli",
        "mixpanel_dsr.engine.worker",
        "mixpanel_dsr.plugin.commands",
        "mixpanel_dsr.sandbox.__main__",
    ):
        assert shipped in modules
    assert not [m for m in modules if m.startswith(("mixpanel_dsr.localcluster", "tests"))]
    assert "mixpanel_dsr.demo" not in modules
    # The sources the wheel leaves out still exist: the split is a choice, not a loss.
    assert (REPO / "operator" / "mixpanel_dsr" / "localcluster" / "pki.py").is_file()


def test_every_import_the_wheel_makes_is_a_declared_runtime_requirement(wheel: Path) -> None:
    requires = _requires(wheel)
    assert {"kopf", "kubernetes", "httpx", "pydantic", "pyyaml"} <= requires
    providers = importlib.metadata.packages_distributions()
    undeclared: dict[str, set[str]] = {}
    for module, source in _modules(wheel).items():
        for name in _top_level_imports(source):
            if name in sys.stdlib_module_names or name == "mixpanel_dsr":
                continue
            distributions = {_normalise(d) for d in providers.get(name, [name])}
            if not distributions & requires:
                undeclared.setdefault(module, set()).add(name)
    assert undeclared == {}


def test_installed_alone_every_module_imports_and_every_command_answers_help(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _uv("venv", "--python", os.path.realpath(sys.executable), str(venv))
    python = venv / "bin" / "python"
    pins = tmp_path / "pins.txt"
    _uv(
        "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
        "--format", "requirements.txt", "--output-file", str(pins),
    )  # fmt: skip
    # Resolved from the wheel's own requirements (what pip install does), held at the lock's pins.
    _uv("pip", "install", "--python", str(python), "--constraint", str(pins), str(wheel))
    installed = _uv("pip", "list", "--python", str(python), "--format", "freeze")
    names = {_normalise(line.split("==")[0]) for line in installed.splitlines() if "==" in line}
    locked = {
        _normalise(line.split("==")[0]) for line in pins.read_text().splitlines() if "==" in line
    }
    # Only the lock's runtime packages, and none of what only the dev extra brings.
    assert names - {"mixpanel-dsr-operator"} <= locked
    dev_only = _dev_extra() - locked
    assert {"pytest", "mypy", "ruff", "deptry"} <= dev_only
    assert not names & dev_only

    shipped = sorted(m for m in _modules(wheel) if not m.endswith("__main__"))
    import_all = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    imports = subprocess.run(
        [str(python), "-c", import_all, *shipped],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert imports.returncode == 0, imports.stderr
    for command in COMMANDS:
        result = subprocess.run(
            [str(venv / "bin" / command), "--help"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command} --help:\n{result.stdout}{result.stderr}"
        assert "usage:" in result.stdout.lower()
