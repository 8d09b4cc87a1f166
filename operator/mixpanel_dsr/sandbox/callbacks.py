"""Status callbacks, as the fact sheet describes Mixpanel's (OpenDSR-shaped, opt-in per project).

For a task created with ``status_callback_urls`` in a project whose ``status_callbacks`` is on,
the sandbox POSTs the task's OpenDSR status to each URL when it changes, and again every
``callbacks.redeliver_seconds`` (times ``lifecycle.time_scale``) while the task is known,
at least once: Mixpanel delivers "every 15 minutes, for 90 days". The raw body is signed with
RSA PKCS#1 v1.5 SHA-256 under the sandbox's key, base64 in ``X-OpenDSR-Signature``; the
public key is served at ``GET /_sandbox/callbacks/key`` for the receiver to verify with.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mixpanel_dsr.mixpanel.types import TaskState

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-OpenDSR-Signature"
DOMAIN_HEADER = "X-OpenDSR-Processor-Domain"
PROCESSOR_DOMAIN = "opendsr.mixpanel.com"
#: How often tasks are looked at for a status to deliver (seconds).
SCAN_SECONDS = 0.5

#: Mixpanel state -> OpenDSR request_status (and the extension's status).
OPENDSR_STATUS: dict[TaskState, tuple[str, str]] = {
    TaskState.PENDING: ("pending", "pending"),
    TaskState.STAGING: ("pending", "staging"),
    TaskState.STARTED: ("in_progress", "started"),
    TaskState.SUCCESS: ("completed", "success"),
    TaskState.FAILURE: ("cancelled", "failed"),
    TaskState.REVOKED: ("cancelled", "revoked"),
}


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign(key: rsa.RSAPrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def body_of(subject_request_id: str, tracking_id: str, state: TaskState) -> bytes | None:
    """The OpenDSR status body of a task in ``state``; None for a state that has none."""
    found = OPENDSR_STATUS.get(state)
    if found is None:
        return None
    request_status, detail = found
    return json.dumps(
        {
            "subject_request_id": subject_request_id,
            "request_status": request_status,
            "extensions": {PROCESSOR_DOMAIN: {"status": detail, "tracking_id": tracking_id}},
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class Delivered:
    body: bytes
    at: float
    ok: bool


class CallbackSender:
    """Delivers the callbacks of a sandbox's tasks (one per sandbox, whatever the regions)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.sent: dict[tuple[str, str], Delivered] = {}
        self._http: httpx.AsyncClient | None = None
        self._tls: tuple[bool, str | None] | None = None

    async def _client(self) -> httpx.AsyncClient:
        """An HTTP client for the TLS settings of now (they can change at runtime)."""
        cfg = self.state.config.callbacks
        wanted = (cfg.verify_tls, cfg.ca_file)
        if self._http is None or self._tls != wanted:
            if self._http is not None:
                await self._http.aclose()
            verify: ssl.SSLContext | bool = cfg.verify_tls
            if cfg.verify_tls and cfg.ca_file:
                verify = ssl.create_default_context(cafile=cfg.ca_file)
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), verify=verify)
            self._tls = wanted
        return self._http

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(Exception):
                    await self.deliver_due(await self._client())
                await asyncio.sleep(SCAN_SECONDS)
        finally:
            if self._http is not None:
                await self._http.aclose()

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """Deliver every status that changed or is due again; how many POSTs were made."""
        state = self.state
        now = state.now()
        cfg = state.config.callbacks
        scale = state.config.lifecycle.time_scale
        redeliver, retry = cfg.redeliver_seconds * scale, cfg.retry_seconds * scale
        made = 0
        for task in list(state.tasks.values()):
            if not task.status_callback_urls or not task.subject_request_id:
                continue
            project = state.projects.get(task.project_token)
            if project is None or not project.config.status_callbacks:
                continue
            body = body_of(task.subject_request_id, task.tracking_id, task.state_at(now))
            if body is None:
                continue
            for url in task.status_callback_urls:
                last = self.sent.get((task.tracking_id, url))
                wait = redeliver if last is not None and last.ok else retry
                if last is not None and last.body == body and now - last.at < wait:
                    continue
                code = await self._post(http, url, body)
                state.callback_log.append(
                    {
                        "tracking_id": task.tracking_id,
                        "subject_request_id": task.subject_request_id,
                        "request_status": json.loads(body)["request_status"],
                        "url": url,
                        "http_status": code,
                        "at": now,
                    }
                )
                made += 1
                ok = code is not None and 200 <= code < 300
                self.sent[(task.tracking_id, url)] = Delivered(body, now, ok)
        return made

    async def _post(self, http: httpx.AsyncClient, url: str, body: bytes) -> int | None:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.state.callback_key, body),
            DOMAIN_HEADER: PROCESSOR_DOMAIN,
        }
        try:
            response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as err:
            log.info("callback to %s failed: %s", url, type(err).__name__)
            return None
        return response.status_code
