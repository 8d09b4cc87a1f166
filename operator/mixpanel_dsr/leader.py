"""Leader election on a coordination.k8s.io/v1 Lease, so that replicas never do the same work.

Several replicas of the operator (a Deployment with ``replicas: 2``, or the
old and new pod of a rolling update) each wait here until they hold the Lease;
only the holder runs kopf and the engine. The holder renews the Lease every
``retry_period``; a replica that has not renewed for ``renew_deadline`` exits
at once (like controller-runtime), well before another may take the Lease
``lease_duration`` after its last observed change. On a clean exit the holder
releases the Lease, so the standby takes over within one ``retry_period``.

The deadline is kept even while a renewal hangs (an API server partitioned away
whose connection stays open): the holder waits for an attempt only until
``renew_deadline`` after the start of its last successful renewal (which is never
later than the renewTime the API server stored), or ``retry_period`` if that is
later, so it has stopped before a standby may take over (``renew_deadline +
retry_period < lease_duration``). Lease calls run on threads of their own.

Expiry is judged on the waiting replica's own monotonic clock from the moment
it last saw the Lease change (as client-go does), never by comparing clocks
of two machines.

Why not kopf's peering: kopf pauses every operator of equal priority (all
replicas of one Deployment share their arguments), and a paused kopf stops
its watch streams but not the engine's workers, which would keep calling
Mixpanel for projects they already know.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def default_identity() -> str:
    """The pod's name when the chart passes it (POD_NAME), else host and process id."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Timing:
    """client-go's defaults: 15 s lease, renew within 10 s, try every 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """Acquire, renew and release one Lease. Methods that call the API run off the loop."""

    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        *,
        timing: Timing | None = None,
        api: client.CoordinationV1Api | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or Timing()
        self._api = api or client.CoordinationV1Api()
        self._clock = clock
        #: (holder, renewTime, resourceVersion) last seen, and when (our clock).
        self._observed: tuple[str | None, Any, str | None] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        #: Lease calls only (an abandoned hanging call holds one thread until it times out).
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lease")

    # ------------------------------------------------------------------ one attempt

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _spec(self, *, acquire: bool, transitions: int) -> client.V1LeaseSpec:
        now = self._now()
        spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.timing.lease_duration)),
            renew_time=now,
            lease_transitions=transitions,
        )
        if acquire:
            spec.acquire_time = now
        return spec

    def _timeout(self) -> tuple[float, float]:
        """Every Lease call gives up well within ``renew_deadline``: a renewal that hangs
        (an API server partitioned away) counts as a failed one."""
        return (2.0, max(1.0, self.timing.renew_deadline / 3))

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        try:
            return self._try_acquire_or_renew()
        except ApiException:
            raise
        except Exception as err:  # timeouts, refused connections
            log.warning("Lease %s/%s: %s", self.namespace, self.name, type(err).__name__)
            return False

    def _try_acquire_or_renew(self) -> bool:
        timeout = self._timeout()
        # Before the call: the renewTime the API server stores is no earlier than this.
        attempt = self._clock()
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=timeout
            )
        except ApiException as err:
            if err.status != 404:
                log.warning("reading Lease %s/%s: HTTP %s", self.namespace, self.name, err.status)
                return False
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(acquire=True, transitions=0),
            )
            try:
                self._api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
            except ApiException as create_err:
                if create_err.status != 409:
                    log.warning("creating Lease: HTTP %s", create_err.status)
                return False
            self._renewed_at = attempt
            return True

        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or None
        version = lease.metadata.resource_version if lease.metadata else None
        observed = (holder, spec.renew_time, version)
        if observed != self._observed:
            self._observed, self._observed_at = observed, self._clock()
        duration = spec.lease_duration_seconds or self.timing.lease_duration
        held_by_other = holder not in (None, self.identity)
        if held_by_other and self._clock() < self._observed_at + duration:
            return False
        transitions = spec.lease_transitions or 0
        lease.spec = self._spec(
            acquire=holder != self.identity,
            transitions=transitions + 1 if holder != self.identity else transitions,
        )
        if holder == self.identity and spec.acquire_time is not None:
            lease.spec.acquire_time = spec.acquire_time
        try:
            # resourceVersion in the body: a concurrent writer makes this fail with 409.
            self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=timeout
            )
        except ApiException as err:
            if err.status != 409:
                log.warning("updating Lease: HTTP %s", err.status)
            return False
        self._renewed_at = attempt
        return True

    def release(self) -> None:
        """Give the Lease up (if held) so that a standby takes over at once."""
        timeout = self._timeout()
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=timeout
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = self._now()
            self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=timeout
            )
            log.info("released leadership (Lease %s/%s)", self.namespace, self.name)
        except ApiException as err:
            log.warning("releasing Lease: HTTP %s", err.status)
        except Exception as err:  # timeouts, refused connections: the Lease expires instead
            log.warning("releasing Lease %s/%s: %s", self.namespace, self.name, type(err).__name__)

    # ------------------------------------------------------------------ loops

    def _jittered(self) -> float:
        return self.timing.retry_period * (1 + 0.2 * random.random())  # noqa: S311 - jitter

    async def acquire(self) -> None:
        """Return once this replica holds the Lease (waiting as a standby until then)."""
        waiting_logged = False
        while not await self._lease_call(self.try_acquire_or_renew):
            if not waiting_logged:
                holder = self._observed[0] if self._observed else None
                log.info(
                    "standing by: Lease %s/%s is held by %s", self.namespace, self.name, holder
                )
                waiting_logged = True
            await asyncio.sleep(self._jittered())
        log.info("became leader (Lease %s/%s as %s)", self.namespace, self.name, self.identity)

    def _left(self) -> float:
        """Seconds until ``renew_deadline`` after the last successful renewal began."""
        return self._renewed_at + self.timing.renew_deadline - self._clock()

    async def _lease_call(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking Lease call on the elector's own threads: the loop's default
        executor may be busy (kopf, DNS lookups), which must not delay a renewal."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _renew_by_deadline(self) -> bool:
        """One attempt, given up (False) at the deadline even if the call still hangs (the
        thread is left to its socket timeout; the caller steps down at once). An attempt
        always gets ``retry_period``, so that a loop that woke up late still tries once: a
        renewal that succeeds proves nobody took over (the write carries resourceVersion)."""
        attempt = asyncio.ensure_future(self._lease_call(self.try_acquire_or_renew))
        window = max(self.timing.retry_period, self._left())
        try:
            result: bool = await asyncio.wait_for(asyncio.shield(attempt), timeout=window)
        except TimeoutError:
            return False
        return result

    async def hold(self) -> None:
        """Renew until another holds the Lease or renewals failed for ``renew_deadline``;
        return at most ``retry_period`` after that deadline (12 s with the defaults, before
        a standby may take over after ``lease_duration``, 15 s), even while a call hangs."""
        while True:
            await asyncio.sleep(min(self.timing.retry_period, max(0.0, self._left())))
            if await self._renew_by_deadline():
                continue
            holder = self._observed[0] if self._observed else None
            if holder not in (None, self.identity):
                log.error(
                    "lost leadership: Lease %s/%s is held by %s", self.namespace, self.name, holder
                )
                return
            if self._left() <= 0:
                log.error(
                    "lost leadership: Lease %s/%s not renewed for %.0fs",
                    self.namespace, self.name, self.timing.renew_deadline,
                )  # fmt: skip
                return
