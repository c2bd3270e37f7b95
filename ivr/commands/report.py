"""Operator commands: `report calls`, the call report of a period (models.reports has the definitions)."""
from __future__ import annotations

import json
from datetime import date, datetime

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.orm import Session, sessionmaker

from ivr.config import Settings
from models.clock import local_today, utcnow
from models.reports import Period, as_csv, as_table, call_report

report = AppGroup("report", help="Reports of the hotline's calls.")


def day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    """Parse a YYYY-MM-DD option."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date: use YYYY-MM-DD") from None


@report.command("calls")
@click.option("--from", "start", callback=day, metavar="YYYY-MM-DD", help="First day (local time); default today.")
@click.option("--to", "end", callback=day, metavar="YYYY-MM-DD", help="Last day, included; default the first day.")
@click.option("--hotline", default=None, metavar="NAME", help="Only the calls to this hotline (e.g. 12333).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@with_appcontext
def calls_command(start: date | None, end: date | None, hotline: str | None, fmt: str) -> None:
    """Print the call report: containment, transfers, abandonment, agent answers, ratings."""
    settings: Settings = current_app.extensions["settings"]
    sessions: sessionmaker[Session] = current_app.extensions["sessions"]
    first = start or (end if end and end < local_today(settings.tz) else local_today(settings.tz))
    last = end or first
    if last < first:
        raise click.BadParameter(f"--to {last} is before --from {first}")
    names = {h.name for h in settings.hotlines.values()}
    if hotline is not None and hotline not in names:
        raise click.BadParameter(f"no hotline {hotline!r}: the hotlines are {', '.join(sorted(names))}",
                                 param_hint="--hotline")
    now: datetime = utcnow()
    with sessions() as session:
        figures = call_report(session, Period(first, last, settings.tz), hotline=hotline, now=now,
                              **settings.report_scope()).figures()
    if fmt == "json":
        click.echo(json.dumps(figures, ensure_ascii=False))
    elif fmt == "csv":
        click.echo(as_csv(figures), nl=False)
    else:
        click.echo(as_table(figures))
