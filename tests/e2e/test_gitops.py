"""GitOps health of real status objects (tests/fixtures/status/, from tests.capture_status):
the Argo CD Lua checks in docs/gitops.md under a real Lua 5.1, and kstatus.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

from mixpanel_dsr.localcluster import Tools, ensure_tools

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "status"
DOC = REPO / "docs" / "gitops.md"
PREFIX = "resource.customizations.health.mixpaneldsr.io_"

#: fixture -> (Argo CD health, kstatus)
EXPECTED = {
    "dsr-queued": ("Progressing", "InProgress"),
    "dsr-in-progress": ("Progressing", "InProgress"),
    "dsr-succeeded": ("Healthy", "Current"),
    "dsr-generation-not-observed": ("Progressing", "InProgress"),
    "dsr-stalled": ("Degraded", "Failed"),
    "dsr-failed": ("Degraded", "Failed"),
    # kstatus reads Ready False as still in progress.
    "dsr-dry-run": ("Suspended", "InProgress"),
    "mpp-ready": ("Healthy", "Current"),
    "mpp-stalled": ("Degraded", "Failed"),
}


def _fixture(stem: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((FIXTURES / f"{stem}.json").read_text())
    return obj


def argocd_cm() -> dict[str, str]:
    """The data of the argocd-cm snippet in docs/gitops.md, exactly as a user copies it."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    (cm,) = [yaml.safe_load(b) for b in blocks if "name: argocd-cm" in b]
    data: dict[str, str] = cm["data"]
    return data


def _to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check for ``obj``'s kind the way Argo CD does: ``obj`` global, returned table."""
    script = argocd_cm()[PREFIX + obj["kind"]]
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def test_the_fixtures_are_real_captured_objects() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(EXPECTED)
    for stem in EXPECTED:
        obj = _fixture(stem)
        assert obj["apiVersion"] == "mixpaneldsr.io/v1alpha1"
        assert obj["metadata"]["uid"]
        assert "observedGeneration" in obj["status"]


def test_the_doc_snippet_embeds_the_shipped_lua_files() -> None:
    data = argocd_cm()
    shipped = REPO / "docs" / "gitops"
    assert (
        data[PREFIX + "DataSubjectRequest"]
        == (shipped / "health-datasubjectrequest.lua").read_text()
    )
    project = (shipped / "health-mixpanelproject.lua").read_text()
    assert data[PREFIX + "MixpanelProject"] == project
    assert data[PREFIX + "ClusterMixpanelProject"] == project


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_argocd_health(stem: str) -> None:
    status, message = argocd_health(_fixture(stem))
    assert status == EXPECTED[stem][0], message
    assert message
    if status == "Degraded":
        # The reason a person acts on is in the message.
        reasons = {c["reason"] for c in _fixture(stem)["status"]["conditions"]}
        assert any(message.startswith(r) for r in reasons)


def test_argocd_health_of_an_object_the_operator_has_not_seen() -> None:
    obj = _fixture("dsr-succeeded")
    del obj["status"]
    assert argocd_health(obj)[0] == "Progressing"
    project = _fixture("mpp-ready")
    project["kind"] = "ClusterMixpanelProject"
    assert argocd_health(project)[0] == "Healthy"


def test_argocd_health_of_an_erasure_awaiting_approval_is_suspended() -> None:
    obj = _fixture("dsr-queued")
    obj["status"]["phase"] = "AwaitingApproval"
    for condition in obj["status"]["conditions"]:
        if condition["type"] in ("Ready", "Reconciling"):
            condition["reason"] = "AwaitingApproval"
            condition["message"] = "requested by alice; someone else who may approve sets it"
    status, message = argocd_health(obj)
    assert status == "Suspended"
    assert "requested by alice" in message


@pytest.fixture(scope="module")
def tools() -> Tools:
    return ensure_tools()


@pytest.mark.e2e
@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_kstatus(tools: Tools, stem: str) -> None:
    out = subprocess.run(
        [str(tools.kstatus)],
        input=(FIXTURES / f"{stem}.json").read_text(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["status"] == EXPECTED[stem][1], result


@pytest.mark.e2e
def test_a_fresh_capture_still_maps_the_same(tools: Tools, tmp_path: Path) -> None:
    """The committed fixtures are not stale: today's operator yields the same health."""
    from tests.capture_status import capture

    capture(tmp_path)
    for stem, (argocd, kstatus) in EXPECTED.items():
        obj = json.loads((tmp_path / f"{stem}.json").read_text())
        assert argocd_health(obj)[0] == argocd, stem
        out = subprocess.run(
            [str(tools.kstatus)], input=json.dumps(obj), capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(out)["status"] == kstatus, stem
