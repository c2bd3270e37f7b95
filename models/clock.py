"""The one clock of the hotline: every expiry, lockout and date comes from here."""
from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    """Return the current moment as an aware UTC datetime (freezegun pins it in tests)."""
    return datetime.now(UTC)


def local(moment: datetime, tz: ZoneInfo = SHANGHAI) -> datetime:
    """Return an aware moment in the hotline's local time zone."""
    return moment.astimezone(tz)


def local_today(tz: ZoneInfo = SHANGHAI) -> date:
    """Return today's date in the hotline's local time zone."""
    return local(utcnow(), tz).date()
