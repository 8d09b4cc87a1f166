"""Mixpanel's status callbacks end to end: the sandbox signs and POSTs them over TLS to the
operator's listener, which checks a task as soon as a callback says it moved and otherwise
leaves it for the safety interval. Polls per task are printed beside a polling-only project
of the same run; a forged callback is refused."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mixpanel_dsr.localcluster import ControlPlane
from mixpanel_dsr.localcluster.controlplane import free_port
from mixpanel_dsr.localcluster.pki import CertificateAuthority
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, Sandbox, wait_until

pytestmark = pytest.mark.e2e

#: Requests per project (one packed task each); the sandbox runs tasks at real pace (20 s).
N = 4


@pytest.fixture
def stack(solo_control_plane: ControlPlane, tmp_path: Path) -> Iterator[tuple[Sandbox, Operator]]:
    sandbox = Sandbox(tmp_path, time_scale=1.0)
    sandbox.start()
    ca = CertificateAuthority()
    cert, key = ca.issue("callbacks", server_hosts=("127.0.0.1",)).write(tmp_path, "listener")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    sandbox.post("/settings", {"callbacks": {"ca_file": str(tmp_path / "ca.crt")}})
    (tmp_path / "mixpanel-callbacks.pem").write_text(
        sandbox.get("/callbacks/key")["public_key_pem"]
    )
    port = free_port()
    solo_control_plane.kubectl("create", "namespace", "mixpanel-dsr-system")
    operator = Operator(
        tmp_path, solo_control_plane.kubeconfig, sandbox.urls,
        extra=[
            "--callback-url", f"https://127.0.0.1:{port}/mixpanel/callbacks",
            "--callback-port", str(port),
            "--callback-key-file", str(tmp_path / "mixpanel-callbacks.pem"),
            "--callback-tls-cert", str(cert), "--callback-tls-key", str(key),
            "--callback-poll-interval", "1h",
        ],
    )  # fmt: skip
    operator.start()
    operator.port = port  # type: ignore[attr-defined]
    yield sandbox, operator
    operator.stop()
    sandbox.stop()


def test_callbacks_have_tasks_checked_when_they_move_and_polls_drop(
    solo_control_plane: ControlPlane, stack: tuple[Sandbox, Operator]
) -> None:
    sandbox, operator = stack
    kube = Kube(solo_control_plane)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", namespace)
    scenario = Scenario(kube, sandbox, namespace)
    tokens = {}
    for name, callbacks in (("with", True), ("without", False)):
        token, oauth = f"t{uuid.uuid4().hex[:16]}", f"oauth-{uuid.uuid4().hex[:12]}"
        sandbox.post(
            "/projects",
            {"token": token, "oauth_tokens": [oauth], "status_callbacks": callbacks},
        )
        scenario.secret(f"{name}-gdpr", {"token": oauth})
        spec = {"statusCallbacks": True} if callbacks else {}
        kube.apply(
            {
                "apiVersion": "mixpaneldsr.io/v1alpha1",
                "kind": "MixpanelProject",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"token": token, "credentialsSecretRef": {"name": f"{name}-gdpr"}, **spec},
            }
        )
        tokens[name] = token
        for i in range(N):
            scenario.request(f"{name}-{i}", [f"{name}-{i}-{uuid.uuid4().hex[:6]}"], project=name)

    def finished() -> bool:
        return all(
            scenario.phase(f"{name}-{i}") == "Succeeded" for name in tokens for i in range(N)
        )

    wait_until(finished, timeout=240, what="every request Succeeded")

    polls, tasks = {}, {}
    for name, token in tokens.items():
        tasks[name] = len(sandbox.tasks(token))
        polls[name] = sandbox.calls(token, operation="deletion_status")["count"] / tasks[name]
    print(
        f"\nstatus polls per task, {N} one-id deletions per project, 20 s Mixpanel tasks: "
        f"callbacks {polls['with']:.1f}, polling only {polls['without']:.1f} "
        f"({polls['with'] / polls['without']:.2f}x)"
    )
    # The task was created with a subject_request_id and the listener's URL; the callbacks
    # Mixpanel sent on its moves (in_progress, completed) had it checked at once.
    (task,) = sandbox.tasks(tokens["with"])
    assert task["subject_request_id"]
    delivered = [
        c for c in sandbox.get("/callbacks")["callbacks"]
        if c["subject_request_id"] == task["subject_request_id"]
    ]  # fmt: skip
    assert {c["request_status"] for c in delivered} >= {"in_progress", "completed"}
    assert all(c["http_status"] == 200 for c in delivered)
    # Only the callbacks' checks: no poll waited for the 1 h safety interval.
    assert polls["with"] <= 3
    assert polls["with"] < polls["without"]
    metrics = operator.metrics()
    assert 'mixpanel_dsr_status_callbacks_total{outcome="checking"}' in metrics

    # A callback signed with any other key is refused, and changes nothing.
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = json.dumps(
        {"subject_request_id": task["subject_request_id"], "request_status": "cancelled"}
    ).encode()
    signature = base64.b64encode(forger.sign(body, padding.PKCS1v15(), hashes.SHA256()))
    port = operator.port  # type: ignore[attr-defined]
    refused = httpx.post(
        f"https://127.0.0.1:{port}/mixpanel/callbacks",
        content=body,
        headers={"X-OpenDSR-Signature": signature.decode()},
        verify=False,  # noqa: S501 - the test's own listener certificate
        timeout=10,
    )
    assert refused.status_code == 401
    assert 'mixpanel_dsr_status_callbacks_total{outcome="refused"} 1.0' in operator.metrics()
