"""`flask --app wsgi flow show`: the phone tree, drawn from the declared flow (`ivr.callflow.draw`);
`flow check [--calls]`: the flow is valid, and which calls in flight are in states it does not have."""
from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from ivr.callflow import draw
from ivr.callflow.machine import WAITING, Machine
from ivr.config import ROOT, Settings
from models.calls import CallState, active_calls_outside
from models.clock import utcnow

README = ROOT / "README.md"
BEGIN, END = "<!-- flow show: begin -->", "<!-- flow show: end -->"
BLOCK = re.compile(re.escape(BEGIN) + r"\n```text\n(.*?)```\n" + re.escape(END), re.S)

flow = AppGroup("flow", help="The phone tree as declared in ivr/callflow/flow.py.")


def readme_tree(readme: str) -> str | None:
    """Return the tree drawn in the README between the flow-show markers, or None without them."""
    found = BLOCK.search(readme)
    return found.group(1) if found else None


def with_tree(readme: str, tree: str) -> str:
    """Return the README with the tree between the flow-show markers replaced."""
    if readme_tree(readme) is None:
        raise ValueError(f"the README has no {BEGIN} … {END} block around a ```text fence")
    return BLOCK.sub(lambda _: f"{BEGIN}\n```text\n{tree}```\n{END}", readme, count=1)


@flow.command("show")
@click.option("--format", "fmt", type=click.Choice(sorted(draw.FORMATS)), default="text", show_default=True,
              help="text: an indented tree to read; mermaid: a flowchart TD; dot: a Graphviz digraph")
@click.option("--write-readme", is_flag=True, help="write the text tree into README.md's flow-show block")
def show(fmt: str, write_readme: bool) -> None:
    """Print the phone tree: menus and their keys, entries, actions and their outcomes, transfers."""
    machine = current_app.extensions["machine"]
    texts = current_app.extensions["catalogue"].texts
    if write_readme:
        path = Path(README)
        try:
            path.write_text(with_tree(path.read_text(encoding="utf-8"), draw.text(machine, texts)), encoding="utf-8")
        except ValueError as err:
            click.echo(f"{path}: {err}", err=True)
            sys.exit(1)
        click.echo(f"{path}: the tree is up to date")
        return
    click.echo(draw.FORMATS[fmt](machine, texts), nl=False)


@flow.command("check")
@click.option("--calls", "with_calls", is_flag=True,
              help="also list the calls in flight saved in a state this flow does not have; exit 1 if one "
                   "would start again")
def check(with_calls: bool) -> None:
    """Say that the flow is valid (the app refuses to start otherwise); with --calls, list the active
    calls (no end, a webhook within reports.unended_after_minutes) whose saved state this flow does
    not have, and what their next webhook does: resume in the renamed state, or start again."""
    machine: Machine = current_app.extensions["machine"]
    settings: Settings = current_app.extensions["settings"]
    waiting = sum(isinstance(st, WAITING) for st in machine.states.values())
    click.echo(f"the flow is valid: {len(machine.states)} states ({waiting} that wait for the caller), "
               f"{len(machine.renamed)} renamed by a release; every prompt it says is in {settings.catalogue.name}")
    if not with_calls:
        return
    since = utcnow() - timedelta(minutes=settings.unended_after_minutes)
    try:
        with current_app.extensions["read_sessions"]() as s:
            found = active_calls_outside(s, machine.states, active_since=since)
    except SQLAlchemyError as err:
        cause = type(getattr(err, "orig", None) or err).__name__
        click.echo(f"the calls could not be read ({cause}): is the database migrated (init-db) and reachable?",
                   err=True)
        sys.exit(2)
    if not found:
        click.echo("no call in flight is in a state this flow does not have")
        return
    restarted = 0
    rows = [("call", "state", "started", "last webhook", "hotline", "next webhook")]
    for call in found:
        live = machine.live(call.state)
        restarted += live is None
        rows.append((call.call_sid, call.state, _local(call.started_at, settings), _local(call.updated_at, settings),
                     _hotline(call, settings), f"resumes in {live} (renamed)" if live else "starts again (main menu)"))
    click.echo(f"{len(found)} calls in flight are in states this flow does not have: "
               f"{len(found) - restarted} resume where they were, {restarted} start again")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if restarted:
        sys.exit(1)


def _local(moment: datetime | None, settings: Settings) -> str:
    """A moment in the hotline's time zone, to the second."""
    return "-" if moment is None else moment.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S")


def _hotline(call: CallState, settings: Settings) -> str:
    """The call's hotline: as its data says, else by the number dialled."""
    named = (call.data or {}).get("hotline")
    if isinstance(named, str) and named:
        return named
    return (settings.hotlines.get(call.to_number) or settings.hotlines[settings.default_hotline]).name
