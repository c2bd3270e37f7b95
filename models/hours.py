"""The hotlines (12333, 12345 …, keyed by the number dialled) and their staffed hours."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from models.calendar import HOLIDAY, RESTDAY, WORKDAY, WorkCalendar

DAY_TYPES = (WORKDAY, RESTDAY, HOLIDAY)
DAY_NAMES = {WORKDAY: "工作日", RESTDAY: "双休日", HOLIDAY: "法定节假日"}


@dataclass(frozen=True, eq=False)
class Hotline:
    """One number callers dial: how it greets them and when agents answer it."""

    number: str
    name: str
    entry: str = "menu"  # menu: the self-service menu; agent_first: straight to an agent unless 1
    agent_first_seconds: int = 5  # agent_first: how long the greeting waits for the 1 (its Gather timeout)
    always: bool = False  # staffed 7×24
    hours: Mapping[str, tuple[tuple[time, time], ...]] = field(default_factory=dict)

    def staffed(self, moment: datetime, calendar: WorkCalendar) -> bool:
        """Tell whether agents answer this hotline at a local moment."""
        if self.always:
            return True
        ranges = self.hours.get(calendar.day_type(moment.date()), ())
        now = moment.time()
        return any(start <= now < end for start, end in ranges)

    @functools.cached_property
    def spoken_hours(self) -> str:
        """The staffed hours as said, worked out once."""
        return self.hours_text()

    def hours_text(self) -> str:
        """Say the staffed hours in Mandarin: 工作日8:30至11:30、13:00至17:30."""
        if self.always:
            return "每天24小时"
        parts = []
        for day_type in DAY_TYPES:
            ranges = self.hours.get(day_type, ())
            if ranges:
                spans = "、".join(f"{a.hour}:{a.minute:02d}至{b.hour}:{b.minute:02d}" for a, b in ranges)
                parts.append(DAY_NAMES[day_type] + spans)
        return "，".join(parts) or "暂不提供"


def _range(text: str) -> tuple[time, time]:
    start, _, end = text.partition("-")
    a, b = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    if not a < b:
        raise ValueError(f"staffed hours {text!r}: the start must come before the end")
    return a, b


def parse_hotlines(cfg: Mapping[str, Any]) -> tuple[dict[str, Hotline], str]:
    """Read `hotlines` from the configuration: the hotlines by number, and the default number."""
    numbers = cfg.get("numbers") or {}
    if not numbers:
        raise ValueError("hotlines.numbers must name at least one hotline")
    out: dict[str, Hotline] = {}
    for number, spec in numbers.items():
        spec = spec or {}
        hours = spec.get("hours", "always")
        if spec.get("entry", "menu") not in ("menu", "agent_first"):
            raise ValueError(f"hotline {number}: entry must be menu or agent_first")
        seconds = int(spec.get("agent_first_seconds", 5))
        if seconds < 1:
            raise ValueError(f"hotline {number}: agent_first_seconds must be at least 1")
        unknown = set(hours) - set(DAY_TYPES) if isinstance(hours, dict) else set()
        if unknown:
            raise ValueError(f"hotline {number}: hours for unknown day types {sorted(unknown)}")
        out[str(number)] = Hotline(
            number=str(number),
            name=str(spec.get("name", number)),
            entry=spec.get("entry", "menu"),
            agent_first_seconds=seconds,
            always=hours == "always",
            hours={k: tuple(_range(r) for r in v or ()) for k, v in hours.items()} if isinstance(hours, dict) else {},
        )
    default = str(cfg.get("default") or next(iter(out)))
    if default not in out:
        raise ValueError(f"hotlines.default {default} is not one of hotlines.numbers")
    return out, default
