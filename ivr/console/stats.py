"""Call ratings counted for the console: today, and each of the last 7 days."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.agents import RATINGS, CallRating

KINDS = tuple(RATINGS.values())


def rating_summary(session: Session, *, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """Count ratings by local day for the last 7 days (today included)."""
    today = now.astimezone(tz).date()
    first = today - timedelta(days=6)
    since = datetime.combine(first, time.min, tzinfo=tz)
    rows = session.execute(select(CallRating.rating, CallRating.at).where(CallRating.at >= since)).all()
    by_day: dict[Any, Counter[str]] = {first + timedelta(days=i): Counter() for i in range(7)}
    for rating, at in rows:
        day = at.astimezone(tz).date()
        if day in by_day:
            by_day[day][rating] += 1
    week: Counter[str] = sum(by_day.values(), Counter())
    days = [(day, {k: counts[k] for k in KINDS}) for day, counts in by_day.items()]
    return {
        "today": {k: by_day[today][k] for k in KINDS},
        "week": {k: week[k] for k in KINDS},
        "days": days,
        "max": max([sum(c.values()) for _, c in days] + [1]),
        "kinds": KINDS,
    }
