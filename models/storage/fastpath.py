"""The one boundary where the hot path leaves SQLAlchemy's public API, and its off switch.

For the few statements every webhook runs (the call's row and the record of the step, the
holder's credentials, the PIN counter), and those of the steps that change the ledger (the holder
and their cards read for update, a card's change and its history row, the outbox, the rating:
`models.ledger_rows`). SQLAlchemy compiles a statement once and caches it, but
each execution still pays for the cache look-up, the execution context, events and the result
wrapper: about 0.07 ms a statement on this machine, against 0.005 ms for the driver alone
(bench/run.py; see README "Performance"). The fast path pays that once, when it prepares the
statement. Nothing else in the code base reads SQLAlchemy's compiler attributes
(`bind_names`, `positiontup`, `escaped_bind_names`) or the driver connection: if a SQLAlchemy
upgrade moves them, this module is the one to mend, and `database.fast_path: false` in
config.yaml runs the very same calling code on plain SQLAlchemy Core meanwhile.

The contract. `prepare(statement, dialect, fast=...)` returns a `Statement`: `first(unit, values)`
(the first row as a tuple, or None), `all(unit, values)` (every row, as tuples) and
`execute(unit, values)` (the rows changed). `unit` is a
Connection or an ORM Session. Fast (`Prepared`) or plain (`Plain`), a statement

- runs the same SQL: the statement as SQLAlchemy compiles it for the engine's dialect (with
  `keys`, an INSERT of just those columns, named like them). Plain Core also takes the names of
  the values given as columns a DML statement sets, so a statement's binds must not be named
  like columns it leaves alone (`models.storage.callrows.EVENT_BINDS`); both paths are run on the
  whole call mix by tests/test_fast_path.py, which compares every answer and every row;
- processes values the same way: through the column types' own bind and result processors
  (JSON, UTCDateTime), so a row reads back exactly as the ORM reads it;
- runs only inside the caller's transaction: a Connection must already be in one (else
  RuntimeError); it never begins, commits or rolls back anything;
- flushes an ORM Session first, as the ORM would before its own query, then runs on the
  session's connection: the caller never flushes by hand (see `models.storage.unit.UnitOfWork
  .runs_on`: the record of a webhook is written through the session the actions used);
- refuses a value it needs and is not given before anything reaches the driver (KeyError on
  the fast path, SQLAlchemy's StatementError on the plain one), never writes NULL for it;
- raises a driver error wrapped as SQLAlchemy's DBAPIError with the parameters hidden (the
  fast path wraps it itself with hide_parameters; the plain one relies on the engine's
  `hide_parameters=True`, which `make_engine` sets);
- invalidates a connection the server dropped, and empties the pool of its idle ones (a restart
  or failover drops them all), the error marked `connection_invalidated` so that the webhook may
  run again on a new connection.

Also here, the other bypasses: SQLite's BEGIN IMMEDIATE at the start of every transaction that
may write (`begin_immediate`; a read-only one begins deferred), on the driver connection, or
with the fast path off through Core; and the driver connection itself for the bulk import
(`driver_of`: PostgreSQL's COPY, which SQLAlchemy has no API for, and SQLite batches of the
temporary staging database outside the ledger's transaction). Whatever runs on it is the
caller's to get right; nothing else may reach for it.

What the fast path gives up: SQLAlchemy's cursor events (`before_cursor_execute` …), its echo
logging and its statement cache statistics never see these statements. Connection events
(connect, begin, checkout) still run: the statements go through a connection SQLAlchemy handed out.

The switch is per engine: `make_engine(url, fast_path=...)` registers it here, and code that has
only a unit of work in hand (`models.pins.check_pin`, `models.cards.credentials_by_key`) finds it
with `database_of(unit)`. An engine nobody registered takes the fast path, config.yaml's default.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable

Processor = Callable[[Any], Any] | None
Unit = Connection | Session  # what a statement runs on: the caller's transaction
Row = tuple[Any, ...]
DEFAULT_FAST = True  # config.yaml database.fast_path

_SWITCHES: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def set_fast_path(engine: Engine, fast: bool) -> None:
    """Choose, for one engine, between the fast path and plain SQLAlchemy Core."""
    _SWITCHES[engine] = fast


def database_of(unit: Unit | Engine) -> tuple[Dialect, bool]:
    """Return the dialect of the database a unit of work (or an engine) is on, and its switch."""
    bind = unit.get_bind() if isinstance(unit, Session) else unit
    return bind.dialect, _SWITCHES.get(bind.engine, DEFAULT_FAST)


def connection(unit: Unit) -> Connection:
    """Return the connection to run on: a session's, flushed first; it must be in a transaction."""
    if isinstance(unit, Session):
        unit.flush()  # as the ORM would before a query of its own
        conn = unit.connection()
    else:
        conn = unit
    if not conn.in_transaction():
        raise RuntimeError("a prepared statement runs inside the unit of work's transaction only")
    return conn


def driver_of(conn: Connection) -> Any:
    """Return the DB-API connection under a SQLAlchemy one, for the bulk import's COPY and batches."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    return raw


READ_ONLY = "hotline_read_only"  # execution option of a unit of work that only reads (models.storage.db)


def begin_immediate(fast: bool) -> Callable[[Connection], None]:
    """Return SQLite's "begin" event handler: BEGIN IMMEDIATE, which takes the write lock at once.

    A connection with the READ_ONLY execution option begins a plain (deferred) transaction
    instead: it reads a snapshot and takes no lock, so a console page or a login's look-up never
    holds up a webhook. Fast: on the driver connection (every webhook begins one). Plain:
    SQLAlchemy's own recipe for pysqlite, `exec_driver_sql`, through the execution machinery and
    its events.
    """
    def begin(conn: Connection) -> str:
        return "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"

    def on_driver(conn: Connection) -> None:
        conn.connection.driver_connection.execute(begin(conn))  # type: ignore[union-attr]

    def through_core(conn: Connection) -> None:
        conn.exec_driver_sql(begin(conn))

    return on_driver if fast else through_core


class Statement(Protocol):
    """A statement prepared for one database: what the calling code sees, fast path or not."""

    def first(self, unit: Unit, values: Mapping[str, Any]) -> Row | None:
        """Run a query (or a statement with RETURNING); return its first row, or None."""

    def execute(self, unit: Unit, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; return the number of rows it changed."""

    def all(self, unit: Unit, values: Mapping[str, Any]) -> list[Row]:
        """Run a query; return every row, in order."""


def prepare(statement: Executable, dialect: Dialect, *, fast: bool, keys: Iterable[str] | None = None) -> Statement:
    """Prepare a Core statement for a database: on the driver's cursor (fast), or plain Core.

    keys: the columns an INSERT without values sets (its binds are named like them).
    """
    return Prepared(statement, dialect, keys) if fast else Plain(statement, dialect, keys)


class Plain:
    """One statement run through SQLAlchemy Core's public API: the fast path switched off."""

    def __init__(self, statement: Executable, dialect: Dialect, keys: Iterable[str] | None = None):
        self.statement = statement
        self.dialect = dialect
        self.keys = tuple(keys) if keys is not None else None

    def _values(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        # With keys, exactly those columns (the INSERT the fast path compiles), each one required.
        return {k: values[k] for k in self.keys} if self.keys is not None else values

    def run(self, unit: Unit, values: Mapping[str, Any]) -> CursorResult[Any]:
        """Execute through Core; return the result (closed by the caller)."""
        conn = connection(unit)
        try:
            return conn.execute(self.statement, self._values(values))
        except DBAPIError as err:
            if err.connection_invalidated:
                # SQLAlchemy has thrown this connection away; the pool's idle ones go too, as on
                # the fast path (SQLAlchemy's own, by their age, would keep those made this instant).
                conn.engine.pool.dispose()
            raise

    def first(self, unit: Unit, values: Mapping[str, Any]) -> Row | None:
        """Run a query; return its first row with the columns' types applied, or None."""
        row = self.run(unit, values).first()
        return None if row is None else tuple(row)

    def all(self, unit: Unit, values: Mapping[str, Any]) -> list[Row]:
        """Run a query; return every row with the columns' types applied."""
        return [tuple(row) for row in self.run(unit, values).all()]

    def execute(self, unit: Unit, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; return the number of rows it changed."""
        result = self.run(unit, values)
        try:
            return int(result.rowcount)
        finally:
            result.close()


class Prepared:
    """One statement, compiled for one dialect, with its parameters' and columns' processors,
    run on the driver's cursor (the fast path)."""

    def __init__(self, statement: Executable, dialect: Dialect, keys: Iterable[str] | None = None):
        compiled: Any = cast(ClauseElement, statement).compile(
            dialect=dialect, column_keys=list(keys) if keys is not None else None)
        self.sql: str = compiled.string
        self.positional = bool(compiled.positional)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names: Sequence[str] = list(compiled.positiontup or ()) if self.positional else list(by_name)
        # (name, processor, whether the caller must give it, the value the statement holds, e.g. a LIMIT's)
        self.binds: list[tuple[str, Processor, bool, Any]] = [
            (name, b.type.dialect_impl(dialect).bind_processor(dialect), b.required, b.value)
            for name, b in ((name, by_name[name]) for name in names)
        ]
        if getattr(compiled, "escaped_bind_names", None):
            raise ValueError(f"bind names that need escaping: {compiled.escaped_bind_names}")
        # The columns it returns: a SELECT's, or an INSERT/UPDATE's RETURNING.
        self.columns: list[Processor] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in getattr(statement, "exported_columns", ())
        ]
        self.dialect = dialect
        # PostgreSQL: one cursor per driver connection, reused (psycopg holds a result client-side,
        # whole, until the next execute): making and closing one cost more than some statements.
        # SQLite's are made for each statement and closed after it, which also ends its reads.
        self.reuse = dialect.name == "postgresql"

    def params(self, values: Mapping[str, Any]) -> Any:
        """Return the driver's parameters: bound in order (qmark) or by name (pyformat)."""
        bound = []
        for name, proc, required, fixed in self.binds:
            value = values[name] if required or name in values else fixed
            bound.append((name, proc(value) if proc else value))
        return tuple(v for _, v in bound) if self.positional else dict(bound)

    def run(self, unit: Unit, values: Mapping[str, Any]) -> Any:
        """Execute on the unit's driver connection; return the cursor (closed by the caller)."""
        conn = connection(unit)
        params = self.params(values)
        fairy = conn.connection
        dbapi = fairy.dbapi_connection
        if dbapi is None:
            raise RuntimeError("the connection has no driver connection (invalidated)")
        cursor = _cursor_of(fairy.info, dbapi) if self.reuse else dbapi.cursor()
        try:
            cursor.execute(self.sql, params)
        except self.dialect.loaded_dbapi.Error as err:
            self.done(cursor)
            dropped = self.dialect.is_disconnect(err, dbapi, cursor)
            if dropped:
                # As SQLAlchemy does on a lost connection: this one is thrown away, and the pool's
                # idle ones too (a restart or failover dropped them all), so a retry gets a new one.
                conn.invalidate(err)
                conn.engine.pool.dispose()
            # Wrapped as SQLAlchemy wraps its own: `connection_invalidated` tells a dropped connection.
            raise DBAPIError.instance(self.sql, None, err, self.dialect.loaded_dbapi.Error, hide_parameters=True,
                                      connection_invalidated=dropped, dialect=self.dialect) from err
        return cursor

    def done(self, cursor: Any) -> None:
        """Let go of a cursor after its statement: closed, unless it is the connection's kept one."""
        if not self.reuse:
            cursor.close()

    def execute(self, unit: Unit, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; return the number of rows it changed."""
        cursor = self.run(unit, values)
        try:
            return int(cursor.rowcount)
        finally:
            self.done(cursor)

    def first(self, unit: Unit, values: Mapping[str, Any]) -> Row | None:
        """Run a query; return its first row with the columns' types applied, or None."""
        cursor = self.run(unit, values)
        try:
            row = cursor.fetchone()
        finally:
            self.done(cursor)
        if row is None:
            return None
        return tuple(proc(v) if proc else v for proc, v in zip(self.columns, row, strict=False))

    def all(self, unit: Unit, values: Mapping[str, Any]) -> list[Row]:
        """Run a query; return every row with the columns' types applied."""
        cursor = self.run(unit, values)
        try:
            rows = cursor.fetchall()
        finally:
            self.done(cursor)
        columns = self.columns
        return [tuple(proc(v) if proc else v for proc, v in zip(columns, row, strict=False)) for row in rows]


KEPT_CURSOR = "hotline_cursor"  # the pooled connection's info: (driver connection, its cursor)


def _cursor_of(info: dict[Any, Any], dbapi: Any) -> Any:
    """Return the cursor kept for a driver connection, made on first use (again after a reconnect:
    SQLAlchemy empties the info of a connection it replaces, and the pair must match anyway)."""
    kept = info.get(KEPT_CURSOR)
    if kept is None or kept[0] is not dbapi or kept[1].closed:
        kept = info[KEPT_CURSOR] = (dbapi, dbapi.cursor())
    return kept[1]
