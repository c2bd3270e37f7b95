"""Core statements compiled once per database and run straight on the driver's cursor.

For the few statements every webhook runs (the call's row, the record of the step). SQLAlchemy
compiles a statement once and caches it, but each execution still pays for the cache look-up,
the execution context, events and the result wrapper: about 0.07 ms a statement on this machine,
against 0.005 ms for the driver alone (bench/run.py; see README "Performance"). Here the
statement is compiled by SQLAlchemy for the engine's dialect, its values pass through the very
bind and result processors of the column types (JSON, UTCDateTime), and it runs on the DBAPI
connection inside the SQLAlchemy transaction the webhook already holds.

What is given up: SQLAlchemy's cursor events do not see these statements. Driver errors are
wrapped as SQLAlchemy wraps them, and a lost connection is invalidated, so the pool never hands
it out again.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement, compiled for one dialect, with its parameters' and columns' processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Iterable[str] | None = None):
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        self.sql = compiled.string
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
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in statement.exported_columns
        ]
        self.dialect = dialect

    def params(self, values: Mapping[str, Any]) -> Any:
        """Return the driver's parameters: bound in order (qmark) or by name (pyformat)."""
        bound = []
        for name, proc, required, fixed in self.binds:
            value = values[name] if required or name in values else fixed
            bound.append((name, proc(value) if proc else value))
        return tuple(v for _, v in bound) if self.positional else dict(bound)

    def run(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """Execute on the connection's driver connection; return the cursor (closed by the caller)."""
        if not conn.in_transaction():
            raise RuntimeError("a prepared statement runs inside the unit of work's transaction only")
        params = self.params(values)
        dbapi = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            cursor.execute(self.sql, params)
        except self.dialect.loaded_dbapi.Error as err:
            cursor.close()
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

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; return the number of rows it changed."""
        cursor = self.run(conn, values)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def first(self, conn: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run a query; return its first row with the columns' types applied, or None."""
        cursor = self.run(conn, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(proc(v) if proc else v for proc, v in zip(self.columns, row))
