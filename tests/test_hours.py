"""Staffed hours per hotline, on China's official calendar, and what a closed line does."""
from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from models.agents import CallbackRequest, CallRating
from models.calendar import WorkCalendar
from models.calls import CallEvent
from models.clock import SHANGHAI
from models.hours import parse_hotlines

CONFIG = {
    "default": "+8653212333",
    "numbers": {
        "+8653212333": {"name": "12333", "hours": {"workday": ["08:30-11:30", "13:00-17:30"]}},
        "+8653212345": {"name": "12345", "entry": "agent_first", "hours": "always"},
    },
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    "moment, staffed",
    [
        ("2026-11-30 08:29", False),  # Monday, before the morning shift
        ("2026-11-30 08:30", True),
        ("2026-11-30 11:30", False),  # lunch
        ("2026-11-30 13:00", True),
        ("2026-11-30 17:29", True),
        ("2026-11-30 17:30", False),
        ("2026-12-05 10:00", False),  # Saturday
        ("2026-10-10 10:00", True),  # Saturday, a 调休 make-up working day
        ("2026-10-01 10:00", False),  # National Day, a Thursday
        ("2027-01-01 10:00", False),  # New Year's Day after chinesecalendar's data: the fallback
        ("2027-01-04 10:00", True),  # a Monday in 2027
    ],
)
def test_12333_is_staffed_on_official_working_days_in_its_shifts(moment, staffed):
    hotlines, _ = parse_hotlines(CONFIG)
    assert hotlines["+8653212333"].staffed(at(moment), WorkCalendar()) is staffed


def test_12345_is_staffed_around_the_clock():
    hotlines, _ = parse_hotlines(CONFIG)
    assert all(hotlines["+8653212345"].staffed(at(m), WorkCalendar()) for m in ("2026-10-01 03:00", "2026-12-05 23:59"))


def test_the_hours_are_spoken_from_the_configuration():
    hotlines, _ = parse_hotlines(CONFIG)
    assert hotlines["+8653212333"].hours_text() == "工作日8:30至11:30、13:00至17:30"
    assert hotlines["+8653212345"].hours_text() == "每天24小时"


@pytest.mark.parametrize(
    "numbers, problem",
    [
        ({"+1": {"hours": {"weekday": ["08:00-09:00"]}}}, "unknown day types"),
        ({"+1": {"hours": {"workday": ["09:00-08:00"]}}}, "the start must come before the end"),
        ({"+1": {"entry": "maze"}}, "entry must be menu or agent_first"),
        ({}, "at least one hotline"),
    ],
)
def test_a_bad_hotline_configuration_is_refused_at_start_up(numbers, problem):
    with pytest.raises(ValueError, match=problem):
        parse_hotlines({"numbers": numbers})


def test_a_call_to_an_unknown_number_is_served_as_the_default_hotline(call):
    phone = call(dialled="+861234").dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]


def test_a_call_back_request_keeps_the_number_for_agents_but_not_in_the_call_record(app, call, clock):
    clock.move_to("2026-11-30 12:00:00")  # 20:00 in Qingdao
    phone = call(caller="anonymous").dial().press("0")
    phone.silence().silence().silence().silence().press("1")
    phone.press("13912345678#")
    assert "<say-as interpret-as=\"digits\">139</say-as>，<say-as interpret-as=\"digits\">1234</say-as>" in phone.twiml
    phone.press("1").press("1").record(9)
    assert phone.prompts == ["callback.saved", "rating.ask"]
    phone.press("1")
    with app.extensions["sessions"]() as s:
        cb = s.scalars(select(CallbackRequest)).one()
        recorded = repr([(e.params, e.twiml) for e in s.scalars(select(CallEvent))])
        rating = s.scalars(select(CallRating)).one()
    assert (cb.number, cb.hotline, cb.recording_seconds) == ("+8613912345678", "12333", 9)
    assert cb.recording_url.startswith("https://api.twilio.com/")
    assert cb.context["verified"] is False and cb.context["reason"] == "no_input"
    assert "13912345678" not in recorded
    assert '<say-as interpret-as="digits">***</say-as>' in recorded
    assert (rating.rating, rating.services, rating.agent) == ("satisfied", ["callback"], None)


def test_three_bad_call_back_numbers_end_with_the_rating(call, clock):
    clock.move_to("2026-11-30 12:00:00")
    phone = call(caller="anonymous").dial().press("####").press("1")
    for _ in range(3):
        phone.press("123#")
    assert phone.prompts == ["callback.not_taken", "rating.ask"]
