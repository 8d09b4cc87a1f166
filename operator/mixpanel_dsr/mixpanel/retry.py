"""Retry policy: exponential backoff with full jitter, bounded by attempts and a deadline (pure).

What is retried is decided by the client (errors with ``retryable`` set: 5xx, 408, 429,
network errors, unreadable bodies; never an ambiguous create); this module says how long to
wait and when to stop.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How a client call retries.

    Attributes:
        max_attempts: most HTTP requests one call makes (1 = never retry).
        base_delay: backoff cap before the first retry, in seconds; doubles (``multiplier``)
            per retry up to ``max_delay``; the actual delay is uniform in [0, cap] (full jitter).
        deadline: seconds a call may take, budget waits included; None = no deadline. A retry
            whose delay would end after the deadline is not made (checked between attempts: one
            attempt in flight may still run up to the client's HTTP timeout past it).
        rate_limit_delay: least delay after a 429 without ``Retry-After``; the project's budget
            is also paused this long, so other callers back off too.
        max_retry_after: longest ``Retry-After`` honoured within a call; a longer one ends the
            call with the 429 (its ``retry_after`` tells the caller when to come back).
        ambiguous_create_statuses: 5xx statuses that make a create ambiguous rather than
            retryable: a gateway answering 502/504 may have lost the upstream's reply after the
            upstream acted. Any other 5xx is read as "Mixpanel answered: not created".
        max_timeouts: most attempts of one call that may end in a read timeout. Each one holds
            the project's next calls (its cancels too) for the whole HTTP read timeout, so a
            Mixpanel that stopped answering costs two of them per call, not the whole deadline;
            the caller (a poll, a cancel, a token check) asks again at its own pace.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    deadline: float | None = 120.0
    rate_limit_delay: float = 5.0
    max_retry_after: float = 300.0
    ambiguous_create_statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 504}))
    max_timeouts: int = 2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_timeouts < 1:
            raise ValueError("max_timeouts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.rate_limit_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be > 0 or None")

    def backoff_cap(self, retry: int) -> float:
        """Upper bound of the delay before retry number ``retry`` (1 = first retry)."""
        exponent = max(0, retry - 1)
        # Avoid float overflow for absurd retry counts.
        if self.multiplier > 1 and exponent > math.log(1e12, self.multiplier):
            return self.max_delay
        return float(min(self.max_delay, self.base_delay * self.multiplier**exponent))

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry number ``retry``: uniform in [0, backoff_cap]."""
        cap = self.backoff_cap(retry)
        return (rng or _rng).uniform(0.0, cap)

    def delay_after_rate_limit(
        self, retry: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Delay after a 429: ``Retry-After`` if sent, else at least ``rate_limit_delay``."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return self.rate_limit_delay + self.backoff(retry, rng)


_rng = random.Random()  # noqa: S311 - jitter, not cryptography


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); None if unusable.

    A date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
