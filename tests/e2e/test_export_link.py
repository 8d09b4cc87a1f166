"""ExportLinkExpiring on a real stack: a retrieval's export link, the operator's warning
before it expires and its word once it has, checked against the sandbox's own signed link.

Its own control plane, sandbox and operator: the link validity is shortened on both sides
(sandbox ``exports.link_ttl_seconds``, operator ``--export-link-ttl``) so that the 14 days
pass in about a minute.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mixpanel_dsr.localcluster import ControlPlane
from tests.conftest import CRDS
from tests.e2e.operator_harness import Operator, Sandbox, wait_until

pytestmark = pytest.mark.e2e

LINK_TTL = 90  # seconds, on both sides
WARNING = 60
NAMESPACE = "exports"


class ShortLinkSandbox(Sandbox):
    """The sandbox with export links valid ``LINK_TTL`` seconds."""

    def start(self) -> None:
        config = self.workdir / "sandbox.yaml"
        config.write_text(
            yaml.safe_dump({"projects": [], "exports": {"link_ttl_seconds": LINK_TTL}})
        )
        self.urls_file.unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mixpanel_dsr.sandbox", "--config", str(config),
                    "--port-us", "0", "--port-eu", "0", "--port-in", "0",
                    "--time-scale", str(self.time_scale), "--urls-file", str(self.urls_file),
                ],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(
            lambda: self.urls_file.exists() and self.urls_file.read_text().strip(),
            timeout=30, what="sandbox start",
        )  # fmt: skip
        self.urls = json.loads(self.urls_file.read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Sandbox]]:
    workdir = tmp_path_factory.mktemp("export-link")
    sandbox = ShortLinkSandbox(workdir, time_scale=0.05)
    with ControlPlane() as plane:
        plane.kubectl("apply", "-f", str(CRDS))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/datasubjectrequests.mixpaneldsr.io", "crd/mixpaneltasks.mixpaneldsr.io",
            "crd/mixpanelprojects.mixpaneldsr.io",
        )  # fmt: skip
        plane.kubectl("create", "namespace", NAMESPACE)
        sandbox.start()
        try:
            yield plane, sandbox
        finally:
            sandbox.stop()


def _apply(plane: ControlPlane, *docs: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        plane.kubectl("get", *args, "-n", NAMESPACE, "-o", "json").stdout
    )
    return found


def _link_condition(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    conditions = _get(plane, "dsr", name).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "ExportLinkExpiring"), None)


def _events(plane: ControlPlane, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _get(
        plane, "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return found


def test_a_retrieval_is_warned_before_its_link_expires_and_told_when_it_has(
    stack: tuple[ControlPlane, Sandbox], tmp_path: Path
) -> None:
    plane, sandbox = stack
    token, oauth = sandbox.add_project("EU")
    secret = {"token": base64.b64encode(oauth.encode()).decode()}
    _apply(
        plane,
        {"apiVersion": "v1", "kind": "Secret", "data": secret,
         "metadata": {"name": "eu-gdpr", "namespace": NAMESPACE}},
        {"apiVersion": "mixpaneldsr.io/v1alpha1", "kind": "MixpanelProject",
         "metadata": {"name": "eu", "namespace": NAMESPACE},
         "spec": {"token": token, "region": "EU", "credentialsSecretRef": {"name": "eu-gdpr"}}},
        {"apiVersion": "mixpaneldsr.io/v1alpha1", "kind": "DataSubjectRequest",
         "metadata": {"name": "export-me", "namespace": NAMESPACE},
         "spec": {"projectRef": {"name": "eu"}, "type": "Retrieval",
                  "distinctIds": ["person-1"]}},
    )  # fmt: skip
    flags = ["--export-link-ttl", f"{LINK_TTL}s", "--export-link-warning", f"{WARNING}s"]
    operator = Operator(
        tmp_path, plane.kubeconfig, sandbox.urls, flags,
        scope=["--namespace", NAMESPACE, "--operator-namespace", NAMESPACE],
    )  # fmt: skip
    operator.start()
    try:
        wait_until(
            lambda: _get(plane, "dsr", "export-me").get("status", {}).get("phase")
            == "Succeeded",
            timeout=120, what="the retrieval to succeed",
        )  # fmt: skip
        # The retrieval's Mixpanel task went into the duration histogram of its region.
        count = 'mixpanel_dsr_task_duration_seconds_count{outcome="succeeded",region="EU",'
        assert f'{count}type="retrieval"}} 1.0' in operator.metrics()
        data = _get(plane, "secret", "export-me-export")["data"]
        link = base64.b64decode(data["link"]).decode()
        seen: list[str] = []

        def reached(reason: str) -> dict[str, Any] | None:
            cond = _link_condition(plane, "export-me")
            if cond and (not seen or seen[-1] != cond["reason"]):
                seen.append(cond["reason"])
            return cond if cond and cond["reason"] == reason else None

        soon = wait_until(lambda: reached("LinkExpiresSoon"), timeout=120, what="the warning")
        assert soon["status"] == "True"
        assert "Secret export-me-export" in soon["message"]
        # Mixpanel's (the sandbox's) link still works when the warning comes.
        assert httpx.get(link, timeout=10).status_code == 200
        # A restart does not warn again: the condition already says so.
        operator.stop()
        operator.start()
        expired = wait_until(lambda: reached("LinkExpired"), timeout=150, what="the expiry")
        assert expired["status"] == "True"
        # The operator says expired only once Mixpanel's link no longer works.
        assert httpx.get(link, timeout=10).status_code == 410
        assert seen[-2:] == ["LinkExpiresSoon", "LinkExpired"]
        assert set(seen) <= {"LinkValid", "LinkExpiresSoon", "LinkExpired"}
        reasons = [e["reason"] for e in _events(plane, "export-me") if e["type"] == "Warning"]
        assert reasons.count("ExportLinkExpiring") == 1, reasons
        assert reasons.count("ExportLinkExpired") == 1, reasons
        texts = json.dumps(_events(plane, "export-me")) + json.dumps(
            _get(plane, "dsr", "export-me")
        )
        assert link not in texts
        assert "/_sandbox/exports/" not in texts
        wait_until(
            lambda: 'mixpanel_dsr_export_links{state="expired"} 1.0' in operator.metrics(),
            timeout=30, what="the expired link counted",
        )  # fmt: skip
        assert 'mixpanel_dsr_export_links{state="expires_soon"} 0.0' in operator.metrics()
        # The request stays Succeeded: an expired link does not undo what Mixpanel did.
        assert _get(plane, "dsr", "export-me")["status"]["phase"] == "Succeeded"
    finally:
        operator.stop()
