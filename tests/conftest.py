"""Fixtures: an app on a fresh SQLite file, a frozen clock, a ledger helper and callers."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine, make_url, select
from sqlalchemy.pool import NullPool

from ivr import create_app
from ivr.sim.phone import ClientTransport, Phone
from models.storage.db import create_schema
from models.cards import Card, CardEvent, holder_by_id_number
from models.ledger_io import load_rows, rows_from
from models.clock import utcnow

TOKEN = "test-auth-token"
PIN_KEY = "test-pin-key"
# Made-up ID numbers with valid check characters (never a real person's).
ALICE = "370202198503120025"
BOB = "370203199005171015"
XENA = "37020219860714104X"
NOBODY = "370211197809300047"  # valid, but in no ledger unless a test adds it
PIN = "135790"
# Monday 30 November 2026, 10:00 in Qingdao: a working day.
MONDAY_10AM = "2026-11-30 02:00:00"


@pytest.fixture
def clock():
    """Pin time to a working Monday morning; tests move it with clock.move_to / tick."""
    with freeze_time(MONDAY_10AM) as frozen:
        yield frozen


# TEST_DATABASE_URL=postgresql+psycopg://user@host:port/db runs the suite on PostgreSQL: each test
# gets a database of its own, made on that server and dropped afterwards. Unset: SQLite files.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
ON_POSTGRES = bool(TEST_DATABASE_URL and TEST_DATABASE_URL.startswith("postgresql"))


@contextmanager
def fresh_database(tmp_path: Path, name: str = "ledger") -> Iterator[str]:
    """Yield the URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path / name}.db"
        return
    url = make_url(TEST_DATABASE_URL)
    db = f"t_{name}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
    try:
        yield url.set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def database_url(tmp_path):
    """An empty database for one test."""
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture
def app(database_url, monkeypatch, clock):
    """Build the app on a fresh database with test secrets."""
    for name in ("DATABASE_URL", "IVR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", PIN_KEY)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
    app = create_app({"database_url": database_url})
    app.config["TESTING"] = True
    create_schema(app.extensions["engine"])
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner for the app's commands."""
    return app.test_cli_runner()


class Ledger:
    """Puts cardholders in the ledger and reads cards back, as a test sees them."""

    def __init__(self, app):
        self.app = app
        self.sessions = app.extensions["sessions"]
        self.settings = app.extensions["settings"]

    def add(self, id_number: str, status: str = "normal", pin: str = PIN, card: str | None = None,
            applied_on: date | None = date(2024, 3, 1), name: str = "测试") -> None:
        """Add a holder (or a card to one) through the importer's own code."""
        record = dict(id_number=id_number, name=name, card_number=card or f"QD{id_number[-10:]}",
                      status=status, pin=pin, mobile="13800000001", bank="青岛银行",
                      applied_on=applied_on.isoformat() if applied_on else "")
        with self.sessions() as s, s.begin():
            load_rows(s, rows_from([record]), key=self.settings.pin_key, now=utcnow(), policy=self.settings.loss)

    def card(self, card_number: str) -> Card:
        """Return a card by number (detached, with its history loaded)."""
        with self.sessions() as s:
            card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
            card.events  # noqa: B018  (load the history before the session closes)
            return card

    def history(self, card_number: str) -> list[tuple[Any, ...]]:
        """Return (before, after, channel, call_sid) for each history row, oldest first."""
        with self.sessions() as s:
            card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
            rows = s.scalars(select(CardEvent).where(CardEvent.card_id == card.id).order_by(CardEvent.id))
            return [(e.status_before, e.status_after, e.channel, e.call_sid) for e in rows]

    def holder(self, id_number: str):
        """Return a cardholder by ID number."""
        with self.sessions() as s:
            return holder_by_id_number(s, id_number)


@pytest.fixture
def ledger(app):
    """The ledger helper."""
    return Ledger(app)


@pytest.fixture
def call(app):
    """Return a factory of simulated calls against the app in-process."""

    def make(**kw: Any) -> Phone:
        kw.setdefault("base_url", "http://127.0.0.1:8000")
        return Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"], **kw)

    return make


def card_of(id_number: str) -> str:
    """Return the card number the ledger helper gives an ID number's first card."""
    return f"QD{id_number[-10:]}"
