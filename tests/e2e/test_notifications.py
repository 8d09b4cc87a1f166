"""Signed webhook notifications end to end: the real operator tells a local receiver about a
request, through a period where the receiver is down, every message signed, each event
accepted once, none carrying an id, link or token."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mixpanel_dsr.notifications import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import Operator, wait_until

pytestmark = pytest.mark.e2e

SIGNING_SECRET = "whsec-" + uuid.uuid4().hex
TICKET = "privacy.example.com/ticket"


class Receiver:
    """A webhook endpoint that refuses the first ``down`` deliveries (HTTP 503)."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.seen: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    code = 503 if receiver.down > 0 else 200
                    receiver.down -= 1
                    receiver.seen.append((dict(self.headers), body, code))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[dict[str, object]]:
        with self.lock:
            return [json.loads(body) for _, body, code in self.seen if code == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(down=2)
    yield found
    found.close()


def test_every_event_reaches_the_receiver_once_signed_after_it_was_down(
    scenario: Scenario, kube: Kube, receiver: Receiver, operator: Operator
) -> None:
    scenario.secret("hook-signing", {"secret": SIGNING_SECRET})
    scenario.project(
        receipts={"copyLabels": [TICKET]},
        notifications=[
            {
                "name": "tickets",
                "url": receiver.url,
                "signingSecretRef": {"name": "hook-signing", "key": "secret"},
            }
        ],
    )
    ids = [f"dana-{uuid.uuid4().hex[:8]}"]
    received = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = scenario.request_manifest("late-1", ids, receivedAt=received)
    manifest["metadata"]["labels"] = {TICKET: "PRIV-77"}
    kube.apply(manifest)

    def kinds() -> list[str]:
        return sorted(str(e["type"]) for e in receiver.accepted())

    wanted = ["io.mixpaneldsr.request.deadline_passed", "io.mixpaneldsr.request.succeeded"]
    wait_until(lambda: kinds() == wanted, timeout=180, what=f"{wanted} accepted")
    time.sleep(3)  # nothing more arrives for an event already accepted
    assert kinds() == wanted

    with receiver.lock:
        seen = list(receiver.seen)
    now = time.time()
    codes: dict[str, list[int]] = {}
    for headers, body, code in seen:
        assert verify_signature(
            SIGNING_SECRET.encode(), headers[SIGNATURE_HEADER], body, now=now, tolerance=600
        )
        event = json.loads(body)
        assert headers[DELIVERY_HEADER] == event["id"]
        codes.setdefault(event["id"], []).append(code)
        text = body.decode()
        assert ids[0] not in text
        assert SIGNING_SECRET not in text
        assert "https://" not in text  # no export or other link
    # The two refused deliveries were tried again under the same delivery id, and each
    # event was accepted exactly once.
    assert sum(c.count(503) for c in codes.values()) == 2
    assert all(c[-1] == 200 and c.count(200) == 1 for c in codes.values()), codes

    succeeded = next(e for e in receiver.accepted() if e["type"].endswith("succeeded"))
    data = succeeded["data"]
    assert isinstance(data, dict)
    assert data["labels"] == {TICKET: "PRIV-77"}
    assert data["phase"] == "Succeeded"
    assert data["idsDone"] == 1
    receipt = kube.get("dsrr", data["receipt"], scenario.namespace)
    assert receipt["spec"]["request"]["name"] == "late-1"
    assert 'outcome="retried"' in operator.metrics()
