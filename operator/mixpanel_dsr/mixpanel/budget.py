"""The request budget: at most one request per ``interval`` seconds per project token.

Mixpanel allows about 1 request/s for the GDPR APIs (whether per project or per OAuth token is
not documented; the budget is per project token, which is at least as strict when one token
serves one project). Every request the process makes for a project (creates, status checks,
cancels, and each retry) first takes a slot from that project's budget, so the interval is a
floor between any two requests for the project.

Slots are reserved in order of arrival: :meth:`RequestBudget.acquire` reserves the next free
slot without awaiting (atomic under asyncio), then sleeps until it. Nothing in it is bound to
an event loop, so one budget may serve several loops (tests) as long as they do not overlap.

A caller woken late (a busy event loop) pushes the next free slot to an interval after it
really woke, so a late call and the one after it are still ``interval`` apart.

After a 429 the client calls :meth:`RequestBudget.penalize`: no slot is handed out before the
cool-down ends, also to callers that had already reserved an earlier slot and are still asleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger("mixpanel_dsr.mixpanel.budget")

#: Default seconds between two requests for one project: a 10% margin under Mixpanel's
#: 1 request/s (benchmarks/README.md: a 100,000-id erasure in 1.08 times the floor).
DEFAULT_INTERVAL = 1.1

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class BudgetDeadlineError(Exception):
    """The next free slot is further away than the caller may wait (no slot was reserved)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"next request slot is {wait:.2f}s away, after the deadline")
        self.wait = wait


class RequestBudget:
    """Spaces requests at least ``interval`` seconds apart; asyncio-safe.

    ``interval`` 0 disables spacing (tests, or a proxy that does its own limiting); penalties
    from :meth:`penalize` still apply. ``clock`` (monotonic seconds) and ``sleep`` are
    injectable for deterministic tests.
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._interval = 0.0
        self.interval = interval
        self._next_free = float("-inf")
        self._blocked_until = float("-inf")

    @property
    def interval(self) -> float:
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        if value < 0:
            raise ValueError("interval must be >= 0")
        self._interval = float(value)

    @property
    def blocked_until(self) -> float:
        """Clock time before which no slot is handed out (after a 429); -inf when none."""
        return self._blocked_until

    def next_slot_in(self) -> float:
        """Seconds until a request made now could be sent (0 when it could go at once)."""
        now = self._clock()
        return max(0.0, self._next_free - now, self._blocked_until - now)

    async def acquire(self, max_wait: float | None = None) -> float:
        """Wait for this caller's slot; returns the seconds waited.

        When the next free slot is more than ``max_wait`` seconds away (counted from the call),
        :class:`BudgetDeadlineError` is raised at once and no slot is reserved.
        If a penalty arrives while waiting, the caller waits for a new slot after it.
        """
        start = self._clock()
        deadline = None if max_wait is None else start + max(0.0, max_wait)
        while True:
            now = self._clock()
            slot = max(now, self._next_free, self._blocked_until)
            if deadline is not None and slot > deadline:
                raise BudgetDeadlineError(slot - now)
            self._next_free = slot + self._interval
            if slot > now:
                await self._sleep(slot - now)
            if self._blocked_until <= slot:
                woke = self._clock()
                # A busy event loop can wake this caller late: the next slot counts from
                # when it really goes, so that two calls never reach Mixpanel closer
                # together than the interval.
                self._next_free = max(self._next_free, woke + self._interval)
                return woke - start
            # A 429 cool-down began while we slept: our slot is void; queue again after it.

    def penalize(self, delay: float) -> None:
        """Hand out no slot for ``delay`` seconds from now (e.g. after a 429)."""
        until = self._clock() + max(0.0, delay)
        if until > self._blocked_until:
            self._blocked_until = until
            self._next_free = max(self._next_free, until)
            logger.info("mixpanel budget: cooling down for %.1fs after a rate limit", delay)


class BudgetRegistry:
    """One :class:`RequestBudget` per project token, shared by every client of the process.

    Budgets are kept for the life of the registry (a handful of projects), so the spacing holds
    even between clients that are created per reconcile and thrown away.
    """

    def __init__(self, default_interval: float = DEFAULT_INTERVAL) -> None:
        self.default_interval = default_interval
        self._budgets: dict[str, RequestBudget] = {}

    def get(self, project_token: str, interval: float | None = None) -> RequestBudget:
        """The budget for ``project_token``, created on first use.

        A given ``interval`` (the project's configured budget) updates an existing budget, so a
        changed setting applies to every client of that project.
        """
        budget = self._budgets.get(project_token)
        if budget is None:
            budget = RequestBudget(self.default_interval if interval is None else interval)
            self._budgets[project_token] = budget
        elif interval is not None and interval != budget.interval:
            budget.interval = interval
        return budget

    def forget(self, project_token: str) -> None:
        """Drop a project's budget (the project was deleted)."""
        self._budgets.pop(project_token, None)

    def clear(self) -> None:
        self._budgets.clear()

    def __len__(self) -> int:
        return len(self._budgets)


#: The process-wide registry the client uses when it is given no budget.
default_registry = BudgetRegistry()
