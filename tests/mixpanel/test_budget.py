"""Request budget: spacing, penalties, deadlines, registry."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from mixpanel_dsr.mixpanel.budget import (
    DEFAULT_INTERVAL,
    BudgetDeadlineError,
    BudgetRegistry,
    RequestBudget,
)
from tests.mixpanel.fakes import VirtualTime


def test_default_interval_is_below_one_request_per_second() -> None:
    assert DEFAULT_INTERVAL > 1.0
    assert RequestBudget().interval == DEFAULT_INTERVAL


async def test_first_acquire_is_immediate_then_spaced() -> None:
    clock = VirtualTime(1000.0)
    budget = RequestBudget(1.2, clock=clock, sleep=clock.sleep)
    assert await budget.acquire() == 0.0
    assert await budget.acquire() == pytest.approx(1.2)
    assert await budget.acquire() == pytest.approx(1.2)
    assert clock.sleeps == [pytest.approx(1.2), pytest.approx(1.2)]


async def test_idle_time_is_not_banked() -> None:
    clock = VirtualTime(1000.0)
    budget = RequestBudget(1.0, clock=clock, sleep=clock.sleep)
    await budget.acquire()
    clock.now += 10
    assert await budget.acquire() == 0.0
    assert await budget.acquire() == pytest.approx(1.0)  # no burst after idling


async def test_zero_interval_never_waits() -> None:
    clock = VirtualTime(1000.0)
    budget = RequestBudget(0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert await budget.acquire() == 0.0
    assert clock.sleeps == []


async def test_penalize_pushes_next_slot_out() -> None:
    clock = VirtualTime(1000.0)
    budget = RequestBudget(1.0, clock=clock, sleep=clock.sleep)
    await budget.acquire()
    budget.penalize(5.0)
    assert budget.next_slot_in() == pytest.approx(5.0)
    assert await budget.acquire() == pytest.approx(5.0)
    assert await budget.acquire() == pytest.approx(1.0)


async def test_shorter_penalty_does_not_shorten_a_longer_one() -> None:
    clock = VirtualTime(1000.0)
    budget = RequestBudget(0, clock=clock, sleep=clock.sleep)
    budget.penalize(10)
    budget.penalize(2)
    assert budget.next_slot_in() == pytest.approx(10)


async def test_deadline_refuses_without_reserving() -> None:
    clock = VirtualTime(1000.0)
    budget = RequestBudget(1.0, clock=clock, sleep=clock.sleep)
    await budget.acquire()
    budget.penalize(30)
    with pytest.raises(BudgetDeadlineError) as info:
        await budget.acquire(max_wait=10)
    assert info.value.wait == pytest.approx(30)
    assert clock.sleeps == []
    assert budget.next_slot_in() == pytest.approx(30)  # nothing reserved by the refusal


def test_negative_interval_rejected() -> None:
    with pytest.raises(ValueError, match="interval"):
        RequestBudget(-1)


async def test_concurrent_callers_are_spaced() -> None:
    """Real clock: many concurrent acquirers get slots at least `interval` apart. A slot is
    read where the budget hands it out (when a caller then wakes up depends on how busy the
    machine is, which is not the budget's doing)."""
    slots: list[float] = []

    async def sleep(seconds: float) -> None:
        slots.append(time.monotonic() + seconds)
        await asyncio.sleep(seconds)

    budget = RequestBudget(0.03, sleep=sleep)

    async def one() -> None:
        asked = time.monotonic()
        slept = len(slots)
        await budget.acquire()
        if len(slots) == slept:  # given a slot at once, without sleeping
            slots.append(asked)

    await asyncio.gather(*(one() for _ in range(6)))
    slots.sort()
    assert len(slots) == 6
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(g >= 0.03 * 0.9 for g in gaps), gaps


async def test_penalty_while_waiting_delays_a_reserved_slot() -> None:
    """A caller asleep on an earlier slot must not go before a cool-down that began meanwhile."""
    budget = RequestBudget(0.05)
    await budget.acquire()
    start = time.monotonic()
    waiter = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0.01)
    budget.penalize(0.2)
    await waiter
    assert time.monotonic() - start >= 0.2 * 0.9


async def test_cancelled_waiter_does_not_break_budget() -> None:
    budget = RequestBudget(0.05)
    await budget.acquire()
    waiter = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(budget.acquire(), timeout=1)


def test_registry_shares_per_token_and_updates_interval() -> None:
    reg = BudgetRegistry(default_interval=2.0)
    a = reg.get("tok-a")
    assert a is reg.get("tok-a")
    assert a.interval == 2.0
    assert reg.get("tok-b") is not a
    assert reg.get("tok-a", interval=3.0) is a
    assert a.interval == 3.0
    assert len(reg) == 2
    reg.forget("tok-a")
    assert reg.get("tok-a") is not a
    reg.clear()
    assert len(reg) == 0
