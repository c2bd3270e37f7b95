"""`flask --app wsgi calendar check`: how far ahead the official calendar (chinesecalendar + config) is known."""
from __future__ import annotations

import sys
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup

from ivr.config import Settings
from models.clock import local_today

calendar = AppGroup("calendar", help="China's official working days (chinesecalendar + config.yaml calendar).")

AHEAD_DAYS = 60  # "7 working days" and the hotlines' hours look this far ahead, and more


@calendar.command("check")
@click.option("--days", default=AHEAD_DAYS, show_default=True, type=click.IntRange(0),
              help="how many days from today must be known")
def check_command(days: int) -> None:
    """Print up to which date the official calendar is known; exit 1 when the next DAYS days reach
    beyond it (beyond it, working days are guessed: Monday to Friday minus the fixed holidays)."""
    settings: Settings = current_app.extensions["settings"]
    today = local_today(settings.tz)
    known = settings.calendar.known_until()
    click.echo(f"official calendar known until {known.isoformat()} ({(known - today).days} days from {today})")
    needed = today + timedelta(days=days)
    if needed > known:
        years = range(known.year + 1, needed.year + 1)
        schedule = " and ".join(str(y) for y in years)
        click.echo(f"the next {days} days reach {needed.isoformat()}: add the State Council's {schedule} holiday "
                   f"schedule to config.yaml (calendar.holidays and calendar.workdays, YYYY-MM-DD), "
                   f"or upgrade chinesecalendar once it has {schedule}", err=True)
        sys.exit(1)
