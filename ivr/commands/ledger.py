"""Operator commands: init-db, seed-demo, ledger import, ledger show."""
from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ivr.callflow.calldata import SECRETS
from ivr.commands import demo
from ivr.config import Settings, unchecked_forwarding
from models import services
from models.calls import purge_calls, sweep_secrets
from models.cards import Card, holder_by_id_number
from models.clock import local_today, utcnow
from models.ledger_io import (
    HEADER,
    MEDICAL_HEADER,
    CsvText,
    Imported,
    ImportFileError,
    header_of,
    import_holders,
    load_medical,
    load_rows,
    read_medical_csv,
    rows_from,
    show,
    sniff,
)
from models.medical import MedicalRecord
from models.storage.db import init_db

ledger = AppGroup("ledger", help="Cardholders and cards in the ledger.")
calls = AppGroup("calls", help="The recorded calls.")

def settings() -> Settings:
    """Return the running app's settings."""
    running: Settings = current_app.extensions["settings"]
    return running


def sessions() -> sessionmaker[Session]:
    """Return the running app's session factory."""
    factory: sessionmaker[Session] = current_app.extensions["sessions"]
    return factory


def migrate(*, err: bool = True) -> None:
    """Bring the database to the latest migration; say each migration run in one line (to standard
    error unless told otherwise), and nothing when the database was up to date."""
    for migration in init_db(current_app.extensions["engine"]):
        click.echo(f"migrated {migration.revision}: {migration.doc}", err=err)


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the database schema, or migrate it to the latest (safe to run twice)."""
    migrate(err=False)
    warning = unchecked_forwarding(settings())
    if warning:
        current_app.logger.warning(warning)
    click.echo("database ready")


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Load the demo cardholders of the README, with a year of medical records (skips what is there)."""
    migrate()
    tz = settings().tz
    today = local_today(tz)
    records = [
        dict(id_number=i, name=n, card_number=c, status=st, pin=p, mobile=m, bank="青岛银行",
             applied_on=(today + timedelta(days=d)).isoformat())
        for i, n, c, st, p, m, d in demo.HOLDERS
    ]
    with sessions()() as s, s.begin():
        known = set(s.scalars(select(Card.card_number)))
        fresh = [r for r in rows_from(records) if r.card_number not in known]
        n = load_rows(s, fresh, key=settings().pin_key, now=utcnow(), policy=settings().loss)
        for id_number in dict.fromkeys(h[0] for h in demo.HOLDERS):
            holder = holder_by_id_number(s, id_number)
            assert holder is not None  # loaded just above, or there already
            if s.scalars(select(MedicalRecord.id).where(MedicalRecord.holder_id == holder.id)).first() is None:
                s.add_all(demo.medical_year(holder.id, id_number, today, tz))
    click.echo(f"demo cardholders loaded ({n} new cards)")


@ledger.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(path: Path) -> None:
    """Load a CSV: cardholders (id_number,name,card_number,status,pin,mobile,bank,applied_on) or
    medical account records (id_number,at,kind,amount,institution,balance), told by the header.

    UTF-8 (with or without a byte order mark) or GB18030/GBK, as Excel on Chinese Windows saves
    "CSV (逗号分隔)". Cardholder files of any size are streamed (a progress bar on standard error):
    every line is checked first, then the whole file is merged in one transaction, or nothing is if a
    line is bad. Says what changed, or that nothing did.
    """
    engine = current_app.extensions["engine"]
    try:
        text = sniff(path)
        header = header_of(text)
        if header == MEDICAL_HEADER:
            _import_medical(text)
            return
        if header != HEADER:  # refused before the database is touched
            raise ImportFileError(f"{path}: line 1: the header must be {','.join(HEADER)}")
        migrate()
        done = import_holders(engine, text, key=settings().pin_key, now=utcnow(), policy=settings().loss,
                              progress_to=sys.stderr)
    except ImportFileError as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    click.echo(import_summary(done, path))


def import_summary(done: Imported, path: Path) -> str:
    """Say what an import of cardholders changed, or that it changed nothing."""
    m = done.merged
    if m.nothing:
        return f"nothing changed: {_count(done.rows, 'row')} already as in {path}"
    unchanged = done.rows - m.cards_added - m.cards_changed
    return (f"imported {_count(done.rows, 'row')} from {path}: {_count(m.cards_added, 'card')} added, "
            f"{m.cards_changed} changed, {unchanged} unchanged; {_count(m.holders_added, 'cardholder')} added, "
            f"{m.holders_changed} changed")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _import_medical(text: CsvText) -> None:
    rows = read_medical_csv(text, settings().tz)
    migrate()
    try:
        with sessions()() as s, s.begin():
            n = load_medical(s, rows)
    except ImportFileError as err:  # found while writing: the transaction is rolled back whole
        raise ImportFileError(f"{text.path}: nothing imported.\n{err}") from None
    if n == 0:
        click.echo(f"nothing changed: {_count(len(rows), 'row')} already in the ledger")
    else:
        known = len(rows) - n
        click.echo(f"imported {_count(n, 'row')} from {text.path}"
                   + (f" ({known} already in the ledger)" if known else ""))


@ledger.command("expire")
def expire_command() -> None:
    """Let lapse every verbal loss report past its validity (cron: every few minutes, any host)."""
    total = 0
    while True:  # batch by batch, each its own short transaction
        with sessions()() as s, s.begin():
            n = services.expire_due(s, now=utcnow(), policy=settings().loss)
        total += n
        if n == 0:
            break
    click.echo(f"{total} verbal loss reports lapsed")


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
    """Delete recorded calls older than the retention period (run daily from cron); remove the
    secrets of calls idle for recording.secrets_ttl_minutes (closing those never closed)."""
    keep = settings().retention_days if days is None else days
    ttl = settings().secrets_ttl_minutes
    now = utcnow()
    with sessions()() as s, s.begin():
        n = purge_calls(s, before=now - timedelta(days=keep))
        swept = sweep_secrets(s, secrets=SECRETS, idle_before=now - timedelta(minutes=ttl))
    click.echo(f"purged {n} calls older than {keep} days")
    click.echo(f"removed the secrets of {swept} calls idle for {ttl} minutes")
