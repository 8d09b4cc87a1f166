"""Retry policy: backoff bounds, jitter, Retry-After parsing (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from mixpanel_dsr.mixpanel.retry import RetryPolicy, parse_retry_after


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - jitter, not cryptography


def test_backoff_cap_grows_exponentially_and_is_capped() -> None:
    p = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=10.0)
    assert [p.backoff_cap(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert p.backoff_cap(10_000) == 10.0


def test_backoff_is_full_jitter_within_cap() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = seeded(1)
    samples = [p.backoff(4, rng) for _ in range(2000)]
    assert all(0.0 <= s <= 8.0 for s in samples)
    assert min(samples) < 1.0  # full jitter reaches down to ~0
    assert max(samples) > 7.0


def test_backoff_deterministic_with_seed() -> None:
    p = RetryPolicy()
    assert p.backoff(3, seeded(5)) == p.backoff(3, seeded(5))


def test_delay_after_rate_limit() -> None:
    p = RetryPolicy(rate_limit_delay=5.0, base_delay=1.0)
    assert p.delay_after_rate_limit(1, 12.5) == 12.5
    assert p.delay_after_rate_limit(1, -3) == 0.0
    d = p.delay_after_rate_limit(1, None, seeded(0))
    assert 5.0 <= d <= 6.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": -1},
        {"multiplier": 0.5},
        {"deadline": 0},
        {"rate_limit_delay": -1},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_defaults() -> None:
    p = RetryPolicy()
    assert p.max_attempts >= 2
    assert p.deadline is not None
    assert p.ambiguous_create_statuses == frozenset({502, 504})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), (" 1.5 ", 1.5), ("0", 0.0), ("-4", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_retry_after_nan_and_inf() -> None:
    assert parse_retry_after("nan") is None
    assert parse_retry_after("inf") is None
