"""Webhook deliveries at the edge: each notification POSTed, signed, to every endpoint of its
project that wants it, tried again with backoff for up to a day while the endpoint fails.

One outbox per process. What a delivery carries and how it is signed is decided by
:mod:`mixpanel_dsr.notifications` (pure). A failing endpoint shows on its project (status
``notificationsPending`` and condition ``NotificationsFailing``) and in metrics; a dropped
notification is a Warning Event on its request. Deliveries live in memory: those still
pending when the process stops are not sent by the next one (receivers deduplicate on the
delivery id, so a resend would be harmless; a lost one is not recovered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from mixpanel_dsr import metrics
from mixpanel_dsr.engine.ports import KubePort
from mixpanel_dsr.engine.state import Project, ProjectKey, project_label
from mixpanel_dsr.kube import SecretProblem
from mixpanel_dsr.notifications import (
    CONTENT_TYPE,
    DELIVERY_HEADER,
    EVENT_HEADER,
    GIVE_UP_AFTER,
    SIGNATURE_HEADER,
    Notification,
    next_delay,
    sign,
    webhook_url_allowed,
)

log = logging.getLogger(__name__)

#: Deliveries attempted at once.
CONCURRENCY = 8
#: Each POST gives up after this long.
POST_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass
class Delivery:
    notification: Notification
    project: ProjectKey
    endpoint: str
    url: str
    #: Namespace, name and key of the signing Secret.
    secret: tuple[str, str, str]
    #: The request it is about (for an Event if it is dropped).
    request: dict[str, Any]
    first_at: float
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None


class Outbox:
    def __init__(
        self,
        kube: KubePort,
        *,
        allowed_urls: list[str],
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.kube = kube
        self.allowed_urls = allowed_urls
        self.clock = clock
        self.wall = wall
        self.http = http or httpx.AsyncClient(timeout=POST_TIMEOUT, follow_redirects=False)
        self.queue: list[Delivery] = []
        #: (delivery id, project, endpoint) already queued or sent by this process.
        self.seen: dict[tuple[str, ProjectKey, str], float] = {}
        #: (project, endpoint) -> why its last attempt failed, while it fails.
        self.failing: dict[tuple[ProjectKey, str], str] = {}
        self.wake = asyncio.Event()

    # ------------------------------------------------------------------ queueing

    def add(
        self,
        project: Project,
        notification: Notification,
        *,
        secret_namespace: str,
        request: dict[str, Any],
    ) -> int:
        """Queue the notification for every endpoint of the project that wants it; how many."""
        spec = project.spec
        if spec is None or not spec.notifications:
            return 0
        now = self.clock()
        queued = 0
        for endpoint in spec.notifications:
            if notification.kind not in endpoint.events:
                continue
            key = (notification.id, project.key, endpoint.name)
            if key in self.seen:
                continue
            self.seen[key] = now
            label = project_label(project.key)
            if not webhook_url_allowed(endpoint.url, self.allowed_urls):
                metrics.NOTIFICATIONS.labels(label, endpoint.name, "refused").inc()
                self.failing[(project.key, endpoint.name)] = (
                    "the URL is not allowed: https, or http only under an --allowed-webhook-url"
                )
                continue
            ref = endpoint.signing_secret_ref
            self.queue.append(
                Delivery(
                    notification=notification,
                    project=project.key,
                    endpoint=endpoint.name,
                    url=endpoint.url,
                    secret=(secret_namespace, ref.name, ref.key),
                    request=request,
                    first_at=now,
                    next_at=now,
                )
            )
            queued += 1
        if queued:
            self.wake.set()
        return queued

    def pending(self, project: ProjectKey) -> int:
        return sum(1 for d in self.queue if d.project == project)

    def failures(self, project: ProjectKey) -> dict[str, str]:
        """Endpoint name -> why it fails, for the project's endpoints that do."""
        return {ep: why for (key, ep), why in self.failing.items() if key == project}

    # ------------------------------------------------------------------ delivering

    async def run(self) -> None:
        while True:
            now = self.clock()
            due = [d for d in self.queue if d.next_at <= now][:CONCURRENCY]
            if due:
                await asyncio.gather(*(self._attempt(d) for d in due))
                continue
            self._forget(now)
            wait = min((d.next_at for d in self.queue), default=now + 5.0) - now
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.05, min(wait, 5.0)))

    def _forget(self, now: float) -> None:
        for key, at in list(self.seen.items()):
            if now - at > 2 * GIVE_UP_AFTER:
                del self.seen[key]

    async def _attempt(self, delivery: Delivery) -> None:
        label = project_label(delivery.project)
        try:
            error = await self._post(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # never let one endpoint stop the others
            error = type(err).__name__
        delivery.attempts += 1
        if error is None:
            self.queue.remove(delivery)
            self.failing.pop((delivery.project, delivery.endpoint), None)
            metrics.NOTIFICATIONS.labels(label, delivery.endpoint, "delivered").inc()
            log.info(
                "project %s: %s notification %s delivered to endpoint %s (attempt %d)",
                label, delivery.notification.kind.value, delivery.notification.id,
                delivery.endpoint, delivery.attempts,
            )  # fmt: skip
            return
        delivery.last_error = error
        self.failing[(delivery.project, delivery.endpoint)] = error
        now = self.clock()
        if now - delivery.first_at >= GIVE_UP_AFTER:
            self.queue.remove(delivery)
            metrics.NOTIFICATIONS.labels(label, delivery.endpoint, "dropped").inc()
            log.error(
                "project %s: endpoint %s did not take notification %s for %d attempts (%s); "
                "dropped", label, delivery.endpoint, delivery.notification.id,
                delivery.attempts, error,
            )  # fmt: skip
            await self.kube.event(
                delivery.request,
                "NotificationDropped",
                f"webhook {delivery.endpoint} did not accept the "
                f"{delivery.notification.kind.value} notification in {delivery.attempts} "
                f"attempts over {GIVE_UP_AFTER / 3600:.0f}h (last: {error}); given up",
                warning=True,
            )
            return
        metrics.NOTIFICATIONS.labels(label, delivery.endpoint, "retried").inc()
        delivery.next_at = now + next_delay(delivery.attempts)
        log.warning(
            "project %s: endpoint %s refused notification %s (%s); again in %.0fs",
            label, delivery.endpoint, delivery.notification.id, error,
            delivery.next_at - now,
        )  # fmt: skip

    async def _post(self, delivery: Delivery) -> str | None:
        """None when the endpoint took it (2xx); else why not, in words safe to show."""
        namespace, name, key = delivery.secret
        try:
            secret = await self.kube.read_secret_key(namespace, name, key)
        except SecretProblem as err:
            return f"signing secret: {err.reason}"
        timestamp = int(self.wall().timestamp())
        body = delivery.notification.body
        headers = {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: sign(secret.encode(), timestamp, body),
            DELIVERY_HEADER: delivery.notification.id,
            EVENT_HEADER: delivery.notification.kind.value,
            "User-Agent": "mixpanel-dsr-operator",
        }
        try:
            response = await self.http.post(delivery.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return "timed out"
        except httpx.HTTPError as err:
            return f"cannot connect ({type(err).__name__})"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def aclose(self) -> None:
        await self.http.aclose()
