"""Operator commands: init-db, seed-demo, ledger import, ledger show."""
from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from ivr.config import Settings
from models.clock import local_today, utcnow
from models.calls import purge_calls
from models.db import init_db
from models.ledger_io import ImportFileError, load_rows, read_csv, rows_from, show

ledger = AppGroup("ledger", help="Cardholders and cards in the ledger.")
calls = AppGroup("calls", help="The recorded calls.")

# Demo cardholders: made-up ID numbers with valid check characters, listed in the README.
DEMO = [
    ("370202198503120025", "张伟", "QD0000000001", "normal", "135790", "13800000001", -700),
    ("370203199005171015", "李娜", "QD0000000002", "pending_activation", "246802", "13800000002", -20),
    ("370211197809300047", "王芳", "QD0000000003", "in_production", "358024", "13800000003", -2),
    ("370202196201011529", "刘洋", "QD0000000004", "verbal_loss", "471836", "13800000004", -900),
    ("370203197311242038", "陈静", "QD0000000005", "formal_loss", "582947", "13800000005", -1200),
    ("370203197311242038", "陈静", "QD0000000015", "in_production", "582947", "13800000005", -1),
    ("370211195508080061", "赵磊", "QD0000000006", "cancelled", "693058", "13800000006", -3000),
    ("37020219860714104X", "周敏", "QD0000000007", "normal", "804169", "13800000007", -400),
]


def settings() -> Settings:
    """Return the running app's settings."""
    return current_app.extensions["settings"]


def sessions():
    """Return the running app's session factory."""
    return current_app.extensions["sessions"]


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the database schema (safe to run twice)."""
    init_db(current_app.extensions["engine"])
    click.echo("database ready")


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Load the demo cardholders of the README (skips what is already there)."""
    init_db(current_app.extensions["engine"])
    today = local_today(settings().tz)
    records = [
        dict(id_number=i, name=n, card_number=c, status=st, pin=p, mobile=m, bank="青岛银行",
             applied_on=(today + timedelta(days=d)).isoformat())
        for i, n, c, st, p, m, d in DEMO
    ]
    with sessions()() as s, s.begin():
        from sqlalchemy import select

        from models.ledger import Card

        known = set(s.scalars(select(Card.card_number)))
        fresh = [r for r in rows_from(records) if r.card_number not in known]
        n = load_rows(s, fresh, key=settings().pin_key, now=utcnow(), policy=settings().loss)
    click.echo(f"demo cardholders loaded ({n} new cards)")


@ledger.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(path: Path) -> None:
    """Load cardholders from a CSV: id_number,name,card_number,status,pin,mobile,bank,applied_on."""
    try:
        rows = read_csv(path)
    except ImportFileError as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    init_db(current_app.extensions["engine"])
    try:
        with sessions()() as s, s.begin():
            n = load_rows(s, rows, key=settings().pin_key, now=utcnow(), policy=settings().loss)
    except ImportFileError as err:  # found while writing: the transaction is rolled back whole
        click.echo(f"{path}: nothing imported.\n{err}", err=True)
        sys.exit(1)
    click.echo(f"imported {n} rows from {path}")


@ledger.command("show")
@click.argument("id_number")
def show_command(id_number: str) -> None:
    """Print a cardholder's cards and their history as JSON."""
    with sessions()() as s, s.begin():
        data = show(s, id_number, now=utcnow(), policy=settings().loss, tz=settings().tz)
    if data is None:
        click.echo("no cardholder with that ID number", err=True)
        sys.exit(1)
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@calls.command("purge")
@click.option("--days", type=click.IntRange(0), help="keep this many days (default: recording.retention_days)")
def purge_command(days: int | None) -> None:
    """Delete recorded calls older than the retention period (run daily from cron)."""
    keep = settings().retention_days if days is None else days
    with sessions()() as s, s.begin():
        n = purge_calls(s, before=utcnow() - timedelta(days=keep))
    click.echo(f"purged {n} calls older than {keep} days")


def init_app(app: Flask) -> None:
    """Register the commands with the app."""
    app.cli.add_command(init_db_command)
    app.cli.add_command(seed_demo_command)
    app.cli.add_command(ledger)
    app.cli.add_command(calls)
    from ivr.agent.cli import agent
    from ivr.sim.cli import sim

    app.cli.add_command(sim)
    app.cli.add_command(agent)
