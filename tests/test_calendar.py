"""China's official working days: chinesecalendar data, config extension and the stated fallback.

The 2026 dates below were checked against chinesecalendar 1.11.0 (State Council schedule for
2026): Mid-Autumn Fri 25 Sep - Sun 27 Sep; National Day Thu 1 Oct - Wed 7 Oct; make-up working
days Sun 20 Sep and Sat 10 Oct (and Sat 14 Feb, Sat 28 Feb, Sat 9 May).
"""
from __future__ import annotations

import logging
from datetime import date

import pytest

from ivr.config import load_settings
from models.calendar import WorkCalendar


@pytest.fixture
def cal():
    return WorkCalendar()


@pytest.mark.parametrize(
    "day",
    [date(2026, 9, 25), date(2026, 9, 26), date(2026, 9, 27)]  # Mid-Autumn
    + [date(2026, 10, d) for d in range(1, 8)],  # National Day, weekdays included
)
def test_the_2026_mid_autumn_and_national_day_days_are_not_working_days(cal, day):
    assert cal.is_workday(day) is False


@pytest.mark.parametrize(
    "day",
    [date(2026, 10, 10), date(2026, 2, 14), date(2026, 2, 28), date(2026, 5, 9)],
)
def test_a_make_up_saturday_of_2026_is_a_working_day(cal, day):
    assert day.weekday() == 5
    assert cal.is_workday(day) is True


def test_a_make_up_sunday_of_2026_is_a_working_day(cal):
    assert date(2026, 9, 20).weekday() == 6
    assert cal.is_workday(date(2026, 9, 20)) is True


@pytest.mark.parametrize(
    "day, expected",
    [
        (date(2026, 9, 24), True),  # Thursday before Mid-Autumn
        (date(2026, 9, 28), True),  # Monday between the two holidays
        (date(2026, 10, 8), True),  # first day back
        (date(2026, 10, 11), False),  # ordinary Sunday after the make-up Saturday
        (date(2026, 11, 30), True),  # ordinary Monday
        (date(2026, 12, 5), False),  # ordinary Saturday
    ],
)
def test_ordinary_2026_days_follow_the_official_data(cal, day, expected):
    assert cal.is_workday(day) is expected


def test_seven_working_days_from_28_september_2026_skip_the_golden_week(cal):
    # 29, 30 Sep; 8, 9, 10 (make-up Saturday), 12, 13 Oct.
    assert cal.add_workdays(date(2026, 9, 28), 7) == date(2026, 10, 13)


def test_the_day_of_acceptance_is_not_counted(cal):
    assert cal.add_workdays(date(2026, 11, 30), 1) == date(2026, 12, 1)
    assert cal.add_workdays(date(2026, 11, 30), 0) == date(2026, 11, 30)


def test_counting_from_a_holiday_starts_on_the_next_working_day(cal):
    assert cal.add_workdays(date(2026, 10, 1), 1) == date(2026, 10, 8)


def test_counting_from_a_friday_skips_the_weekend(cal):
    assert cal.add_workdays(date(2026, 12, 4), 1) == date(2026, 12, 7)


@pytest.mark.parametrize(
    "day, expected",
    [
        (date(2027, 1, 1), False),  # Friday, New Year (fixed date)
        (date(2027, 10, 1), False),  # Friday, National Day (fixed date)
        (date(2027, 5, 3), True),  # Monday; the fallback cannot know the real holiday
        (date(2027, 1, 4), True),  # Monday
        (date(2027, 1, 2), False),  # Saturday
        (date(2027, 1, 3), False),  # Sunday
        (date(2027, 2, 8), True),  # Monday in the Spring Festival: lunar, unknown to the fallback
        (date(2031, 7, 1), True),  # far future Tuesday
        (date(2003, 1, 1), False),  # before chinesecalendar's data
    ],
)
def test_years_without_data_use_the_fallback_and_never_raise(cal, day, expected):
    assert cal.is_workday(day) is expected


def test_counting_across_into_2027_uses_the_fallback(cal):
    # 29, 30, 31 Dec 2026; 1 Jan 2027 is a fixed holiday; weekend; 4, 5, 6, 7 Jan.
    assert cal.add_workdays(date(2026, 12, 28), 7) == date(2027, 1, 7)


def test_the_fallback_holidays_are_the_ones_given():
    cal = WorkCalendar(fallback_holidays=["01-04"])
    assert cal.is_workday(date(2027, 1, 1)) is True
    assert cal.is_workday(date(2027, 1, 4)) is False


def test_the_fallback_holidays_never_touch_years_with_data():
    cal = WorkCalendar(fallback_holidays=["11-30"])
    assert cal.is_workday(date(2026, 11, 30)) is True


@pytest.mark.parametrize(
    "holidays, workdays, day, expected",
    [
        pytest.param([date(2026, 12, 1)], [], date(2026, 12, 1), False, id="holiday over data"),
        pytest.param([], [date(2026, 10, 3)], date(2026, 10, 3), True, id="workday over data"),
        pytest.param([date(2027, 2, 8)], [], date(2027, 2, 8), False, id="holiday over fallback"),
        pytest.param([], [date(2027, 2, 20)], date(2027, 2, 20), True, id="workday over fallback"),
        pytest.param([], [date(2027, 1, 1)], date(2027, 1, 1), True, id="workday over fixed holiday"),
    ],
)
def test_config_dates_override_both_the_data_and_the_fallback(holidays, workdays, day, expected):
    cal = WorkCalendar(holidays=holidays, workdays=workdays)
    assert cal.is_workday(day) is expected


def test_config_dates_take_part_in_counting_working_days():
    cal = WorkCalendar(holidays=[date(2027, 1, 4)], workdays=[date(2027, 1, 2)])
    # 31 Dec; 2 Jan (make-up Saturday); 5 Jan (4 Jan a holiday).
    assert cal.add_workdays(date(2026, 12, 30), 3) == date(2027, 1, 5)


def test_a_date_both_holiday_and_workday_is_refused():
    with pytest.raises(ValueError, match="both holiday and working day"):
        WorkCalendar(holidays=[date(2027, 2, 8)], workdays=[date(2027, 2, 8)])


@pytest.fixture
def settings_env(monkeypatch):
    for name in ("DATABASE_URL", "IVR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t")
    monkeypatch.setenv("IVR_PIN_KEY", "k")


def test_config_yaml_calendar_dates_reach_the_calendar(tmp_path, settings_env):
    s = load_settings(tmp_path, {"calendar": {"holidays": ["2027-02-08", date(2027, 2, 9)],
                                              "workdays": ["2027-02-20"]}})
    assert s.calendar.is_workday(date(2027, 2, 8)) is False
    assert s.calendar.is_workday(date(2027, 2, 9)) is False
    assert s.calendar.is_workday(date(2027, 2, 20)) is True


def test_config_yaml_listing_a_date_as_both_is_refused_at_start_up(tmp_path, settings_env):
    with pytest.raises(ValueError):
        load_settings(tmp_path, {"calendar": {"holidays": ["2027-02-08"], "workdays": ["2027-02-08"]}})


def fallback_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "models.calendar"]


def test_the_fallback_warns_once_per_year(cal, caplog):
    caplog.set_level(logging.WARNING, logger="models.calendar")
    for d in range(1, 29):
        cal.is_workday(date(2027, 2, d))
    cal.add_workdays(date(2027, 3, 1), 20)
    assert len(fallback_warnings(caplog)) == 1
    assert "2027" in fallback_warnings(caplog)[0].getMessage()
    cal.is_workday(date(2028, 1, 3))
    cal.is_workday(date(2028, 6, 1))
    assert len(fallback_warnings(caplog)) == 2
    assert "2028" in fallback_warnings(caplog)[1].getMessage()


def test_years_with_data_never_warn(cal, caplog):
    caplog.set_level(logging.WARNING, logger="models.calendar")
    cal.add_workdays(date(2026, 1, 1), 200)
    assert fallback_warnings(caplog) == []


def test_a_year_with_a_configured_schedule_does_not_warn(caplog):
    caplog.set_level(logging.WARNING, logger="models.calendar")
    cal = WorkCalendar(holidays=[date(2027, 2, 8)])
    cal.is_workday(date(2027, 3, 1))
    assert fallback_warnings(caplog) == []
