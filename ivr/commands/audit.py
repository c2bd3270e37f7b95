"""`flask --app wsgi audit export`: the audit trail of a period of local days as CSV, for Excel.

Rows oldest first, read a batch at a time (memory stays flat whatever the period); UTF-8 with a
byte order mark, so that Excel on Chinese Windows opens it as UTF-8 (as the console's report CSV).
The holder is shown by the masked ID number, the card by its last four digits, as on the console's
audit page; the detail was masked when written.
"""
from __future__ import annotations

import csv
import io
import sys
from datetime import date

import click
from flask import current_app
from flask.cli import AppGroup

from models.agents import AuditFilter, audit_rows
from models.identity import mask_id
from models.reports import Period

audit = AppGroup("audit", help="The console's audit trail.")
COLUMNS = ("at", "agent", "action", "action_label", "holder", "card", "call_sid", "address", "detail")


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        click.echo(f"audit export: {option} {value!r} is not a date: use YYYY-MM-DD", err=True)
        sys.exit(2)


@audit.command("export")
@click.option("--from", "start", required=True, metavar="YYYY-MM-DD", help="First day (local time).")
@click.option("--to", "end", required=True, metavar="YYYY-MM-DD", help="Last day, included.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of standard output.")
def export(start: str, end: str, output: str | None) -> None:
    """Write the audit rows of the days from --from to --to (both included, local time) as CSV."""
    first, last = _day("--from", start), _day("--to", end)
    if last < first:
        click.echo(f"audit export: --to {last} is before --from {first}", err=True)
        sys.exit(2)
    settings, catalogue = current_app.extensions["settings"], current_app.extensions["catalogue"]
    period = Period(first, last, settings.tz)
    where = AuditFilter(since=period.since, until=period.until)
    binary = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115  (closed below, stdout kept)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="", write_through=True)
    count = 0
    try:
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        with current_app.extensions["read_sessions"]() as s:
            for row in audit_rows(s, where, newest_first=False):
                e = row.event
                writer.writerow((e.at.astimezone(settings.tz).isoformat(timespec="seconds"), e.agent, e.action,
                                 catalogue.label("audit", e.action), mask_id(row.id_number) if row.id_number else "",
                                 row.card_number[-4:] if row.card_number else "", e.call_sid or "", e.address,
                                 e.detail))
                count += 1
        text.flush()
    finally:
        if output:
            text.close()
        else:
            text.detach()  # standard output stays open
    if output:
        click.echo(f"{count} audit rows from {first} to {last} written to {output}", err=True)
