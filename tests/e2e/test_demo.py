"""The README's run command: `make demo` takes the sample requests to Succeeded.

Runs the same module `make demo` runs, with --exit-when-done instead of
waiting for Ctrl-C: its own control plane, the sandbox and the operator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_samples_to_succeeded(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "mixpanel_dsr.demo", "--exit-when-done",
            "--timeout", "180", "--state-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr + _log(tmp_path)
    assert "kubectl get dsr -A -w" in result.stdout
    phases = json.loads(result.stdout[result.stdout.index("{") :])
    assert phases == {
        "privacy/priv-1234-erase": "Succeeded",
        "privacy/priv-1235-access": "Succeeded",
        "privacy/priv-1236-erase": "Succeeded",
    }


def _log(state: Path) -> str:
    log = state / "operator.log"
    return log.read_text()[-3000:] if log.exists() else ""
