"""Engine, sessions and schema creation for the ledger and the call records."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import DateTime, create_engine, event, exc, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from models.storage import fastpath


class UTCDateTime(TypeDecorator[datetime]):
    """Store aware datetimes as naive UTC and hand them back aware, on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use models.clock.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class Base(DeclarativeBase):
    """Declarative base of every table."""


def make_engine(url: str, *, fast_path: bool = fastpath.DEFAULT_FAST) -> Engine:
    """Create the engine; SQLite serialises writers so several workers stay correct.

    fast_path: whether the hot statements run on the driver's cursor or through plain SQLAlchemy
    Core (config.yaml `database.fast_path`; `models.storage.fastpath` keeps it with the engine).
    """
    if url.startswith("sqlite"):
        # 3 s: well inside Twilio's 15 s webhook timeout, leaving time for the apology path.
        engine = create_engine(url, connect_args={"timeout": 3}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Take transactions out of pysqlite's hands: it would begin them only before a
            # write, leaving earlier reads of the same unit of work outside the transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        # Each unit of work holds the write lock from its first read: a call's webhooks, a PIN
        # counter and a card change by two workers at once are serialised, never lost. One that
        # only reads (make_read_sessionmaker) takes no lock.
        event.listen(engine, "begin", fastpath.begin_immediate(fast_path))
    else:
        # hide_parameters: an error message must never carry an ID number or a phone number.
        engine = create_engine(url, hide_parameters=True)
        ping_when_idle(engine)
    fastpath.set_fast_path(engine, fast_path)
    return engine


IDLE_PING_SECONDS = 5.0


def ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use when it has sat idle a while (SQLAlchemy's own recipe).

    Not `pool_pre_ping`, which pings before every use: a round trip on every webhook (~0.13 ms of
    CPU a step, bench/run.py). A connection in steady use is not pinged; one the server dropped
    while busy fails its webhook's first statement, which is then run again on a new connection
    (`ivr.voice.turns`). A dead idle connection is replaced here, before anyone uses it.
    """
    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            # The pool throws this connection away and checks out another (up to three tries).
            raise exc.DisconnectionError("an idle connection was dropped by the server") from err


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory every unit of work uses."""
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory of units of work that only read (console pages, a login's look-up).

    On SQLite they begin a plain deferred transaction, never the write lock (the engine's BEGIN
    IMMEDIATE would hold up every webhook for as long as the unit lasts); on PostgreSQL nothing
    changes. An ORM change made in one is refused before it is flushed.
    """
    reader = engine.execution_options(**{fastpath.READ_ONLY: True})
    fastpath.set_fast_path(reader, fastpath.database_of(engine)[1])
    factory = sessionmaker(reader, expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_writes)
    return factory


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    raise RuntimeError("a read-only unit of work cannot write: use the sessions of make_sessionmaker")


def all_models() -> None:
    """Import every model module, so the metadata knows every table."""
    from models import agents, callbacks, calls, cards, medical, pins  # noqa: F401
    from models.notifications import outbox  # noqa: F401


def create_schema(engine: Engine) -> None:
    """Create the tables straight from the models, marked as the latest migration (fast, for tests
    and throwaway databases; a test proves the migrations build the very same schema)."""
    all_models()
    with engine.begin() as connection, quieted("alembic"):
        from alembic import command  # imported quietly too: it announces its plugins

        Base.metadata.create_all(connection)
        command.stamp(alembic_config(connection), "head")


def alembic_config(connection: Any = None) -> Any:
    """Return the Alembic configuration of migrations/, bound to a connection if given."""
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


class Migration(NamedTuple):
    """A migration init_db ran: its revision and its message (what it does)."""

    revision: str
    doc: str


@contextmanager
def quieted(name: str) -> Iterator[None]:
    """Keep a logger's INFO lines out of the log while the block runs (warnings and errors still
    show): Alembic's while init_db runs (it returns the migrations that ran, and its caller says so),
    the app's one line a webhook where the simulator shows the call itself."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def init_db(engine: Engine) -> list[Migration]:
    """Bring the database to the latest migration (safe to run twice, or on every host at once);
    return the migrations run, oldest first (none: it was up to date)."""
    applied: list[Migration] = []
    with engine.begin() as connection, quieted("alembic"):
        from alembic import command  # imported quietly too: it announces its plugins

        if connection.dialect.name == "postgresql":
            # One host migrates at a time; the others wait, then find nothing to do.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(12333)")
        tables = set(inspect(connection).get_table_names())
        if "cardholders" in tables and "alembic_version" not in tables:
            raise RuntimeError("this database has the hotline's tables but no migration history; "
                               "back it up, then stamp it with `alembic -c migrations/alembic.ini -x url=... "
                               "stamp REVISION` naming the revision its schema matches")
        cfg = alembic_config(connection)
        cfg.attributes["applied"] = applied  # migrations/env.py notes each migration run in it
        command.upgrade(cfg, "head")
    return applied
