"""Statutory deadlines: GDPR one month, CCPA 45 days, from receivedAt or creation."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from mixpanel_dsr.mixpanel.types import ComplianceType

CCPA_DAYS = 45


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` later; the month's last day where it is shorter."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def deadline(compliance: ComplianceType, received: datetime) -> datetime:
    """When the answer is due: GDPR Art. 12(3) one month, CCPA 45 days."""
    if compliance is ComplianceType.CCPA:
        return received + timedelta(days=CCPA_DAYS)
    return add_months(received, 1)


def at_risk(due: datetime, now: datetime, margin: timedelta) -> bool:
    """True when less than ``margin`` is left before ``due`` (or it has passed)."""
    return now >= due - margin
