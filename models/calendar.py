"""China's official working days: chinesecalendar, extended from config, with a stated fallback.

chinesecalendar knows the State Council schedules for 2004-2026 and raises for other years.
For any day, in order: a date listed in config (`calendar.workdays` / `calendar.holidays`) wins;
then chinesecalendar where it has data; otherwise the fallback: Monday to Friday are working
days except the fixed-date statutory holidays in `calendar.fallback_holidays` (MM-DD). The
fallback cannot know the lunar holidays or make-up working weekends, so operators add each new
year's published schedule to config.yaml; a warning is logged once per year that needs it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, timedelta

import chinese_calendar

log = logging.getLogger(__name__)

WORKDAY, RESTDAY, HOLIDAY = "workday", "restday", "holiday"
DEFAULT_FALLBACK_HOLIDAYS = ("01-01", "05-01", "05-02", "10-01", "10-02", "10-03")


class WorkCalendar:
    """Tells working days on China's official calendar."""

    def __init__(
        self,
        holidays: Iterable[date] = (),
        workdays: Iterable[date] = (),
        fallback_holidays: Iterable[str] = DEFAULT_FALLBACK_HOLIDAYS,
    ):
        self.holidays = set(holidays)
        self.workdays = set(workdays)
        overlap = self.holidays & self.workdays
        if overlap:
            raise ValueError(f"dates both holiday and working day: {', '.join(sorted(d.isoformat() for d in overlap))}")
        self.fallback_holidays = set(fallback_holidays)
        self._warned: set[int] = set()

    def is_workday(self, day: date) -> bool:
        """Tell whether the day is an official working day."""
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            return self._fallback(day)

    def day_type(self, day: date) -> str:
        """Return workday, holiday (statutory, or listed in config) or restday (a weekend off)."""
        if self.is_workday(day):
            return WORKDAY
        if day in self.holidays:
            return HOLIDAY
        try:
            on_holiday, name = chinese_calendar.get_holiday_detail(day)
            return HOLIDAY if on_holiday and name else RESTDAY
        except NotImplementedError:
            return HOLIDAY if day.strftime("%m-%d") in self.fallback_holidays else RESTDAY

    def _fallback(self, day: date) -> bool:
        if day.year not in self._warned and not self._configured(day.year):
            self._warned.add(day.year)
            log.warning(
                "no official calendar for %s: using weekdays minus fixed holidays; "
                "add the year's schedule to config.yaml calendar", day.year
            )
        return day.weekday() < 5 and day.strftime("%m-%d") not in self.fallback_holidays

    def known_until(self) -> date:
        """Return the last day the official schedule is known for: the end of chinesecalendar's
        last year, or of the last year after it with dates in config (each year in turn); beyond
        it the fallback counts."""
        year = max(chinese_calendar.holidays).year
        while self._configured(year + 1):
            year += 1
        return date(year, 12, 31)

    def _configured(self, year: int) -> bool:
        return any(d.year == year for d in self.holidays | self.workdays)

    def add_workdays(self, start: date, count: int) -> date:
        """Return the count-th working day after start; the start day itself is not counted."""
        day = start
        left = count
        while left > 0:
            day += timedelta(days=1)
            if self.is_workday(day):
                left -= 1
        return day
