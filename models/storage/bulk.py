"""The storage side of `ledger import` at city size: a staging table, COPY or batches, set-based merge.

`models.ledger_io` reads and checks the CSV and hands over checked rows (`StageRow`); the card
rules stay in `models.cards`. This module only moves rows, with bounded memory whatever the
file's size:

1. Stage: every row goes into a temporary table on the server (PostgreSQL: one COPY; SQLite:
   executemany in batches of `STAGE_BATCH`). Card numbers repeated in the file are found there,
   not in a dict of a million entries (`BulkImport.repeats`).
2. Merge, in ONE transaction (`BulkImport.merge`):
   - refuse the file if a card of it belongs to another ID number (`ForeignCards`);
   - holders: update those that differ and insert the new ones (plain data: the last line of an
     ID number names the holder; an empty mobile or PIN keeps the one on file);
   - cards already in the ledger: SQL streams, in chunks, the cards the file or time may have
     changed (another status, or a status time changes, or another bank or application date),
     and `models.cards.import_change` decides for each what happens. Those that change are then
     locked, holder first as every channel does, and decided again from what was locked, so a
     change a channel made meanwhile is built on, never overwritten. Their new state and history
     rows go into two staging tables, then into the ledger with one UPDATE and one INSERT;
   - new cards: `models.cards.import_opening` decides once per status (a new card's first
     state depends on nothing else), and one INSERT ... SELECT per table joins that decision.

On PostgreSQL both phases share one transaction (temporary tables ON COMMIT DROP). On SQLite
the staging writes only the connection's temporary database, so the ledger's write lock
(BEGIN IMMEDIATE) is held only while merging.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Column, Date, Integer, MetaData, String, Table, bindparam, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from models.cards import (
    CHANGED_BY_TIME,
    STATUSES,
    CardState,
    Change,
    History,
    LossPolicy,
    import_change,
    import_opening,
)
from models.storage.db import UTCDateTime
from models.storage.fastpath import driver_of


class StageRow(NamedTuple):
    """One checked line of a cardholder file, as it is staged (keyed hashes made, nothing else)."""

    line: int
    id_number: str
    id_key: str
    name: str
    card_number: str
    status: str
    pin_hash: str | None
    mobile: str | None
    bank: str | None
    applied_on: str | None  # YYYY-MM-DD


class Merged(NamedTuple):
    """What a merge wrote: holders and cards added or changed (a card changes when the file or time
    changes its status, bank or application date; a holder when the file changes its name, mobile or PIN)."""

    holders_added: int = 0
    holders_changed: int = 0
    cards_added: int = 0
    cards_changed: int = 0

    @property
    def nothing(self) -> bool:
        """Tell whether the ledger was left exactly as it was."""
        return not any(self)


class ForeignCards(Exception):
    """Cards of the file that belong to another ID number in the ledger: (line, card_number) each."""

    def __init__(self, cards: list[tuple[int, str]]):
        super().__init__(f"{len(cards)} card numbers belong to another ID number")
        self.cards = cards


STAGE_BATCH = 1000  # rows per executemany on SQLite (5000 would triple the peak memory, for nothing)
DECIDE_BATCH = 500  # cards read, decided and written back at a time (2000: +1 MB peak, no faster)
STAGE_TABLE = """(line integer NOT NULL, id_number text NOT NULL, id_key text NOT NULL, name text NOT NULL,
    card_number text NOT NULL, status text NOT NULL, pin_hash text, mobile text, bank text, applied_on date)"""

# The tables the merge writes what the rules decided into, typed so that datetimes are stored as
# the ORM stores them (UTC) on every database.
_TEMP = MetaData()


def _temp(name: str, *columns: Column[Any]) -> Table:
    return Table(name, _TEMP, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


_MOMENTS = ("at", "loss_reported_at", "loss_expires_at")  # the datetimes of a card's state and history


def _columns(fields: Sequence[str]) -> list[Column[Any]]:
    # In the order of the rules' own tuples (CardState, History), so that those are written as they are.
    return [Column(name, UTCDateTime if name in _MOMENTS else String) for name in fields]


# Cards of the ledger that the file changes, found without a lock (then locked: import_plan).
CHANGING = _temp("import_changing", Column("card_id", Integer, nullable=False), Column("line", Integer, nullable=False))
# Each changed card's new state, as `import_change` decided it (bank, applied_on: the file's, or kept).
DECIDED = _temp("import_decided", Column("card_id", Integer, nullable=False), *_columns(CardState._fields),
                Column("bank", String), Column("applied_on", Date))
# Their history rows; seq orders the rows of one card (a lapse before the file's status).
HISTORY = _temp("import_history", Column("line", Integer, nullable=False), Column("seq", Integer, nullable=False),
                Column("card_id", Integer, nullable=False), *_columns(History._fields))
# What a new card of each status starts with (`import_opening`): `given` is the file's status.
OPENINGS = _temp("import_openings", Column("given", String, primary_key=True), *_columns(CardState._fields),
                 *_columns(History._fields))

TEMP_TABLES = ("import_stage", "import_holders", "import_new", "import_plan",
               *(t.name for t in (CHANGING, DECIDED, HISTORY, OPENINGS)))

# The card's state as the rules read it, and the file's line, for every card read to be decided.
_STATE = ", ".join(f"c.{field}" for field in CardState._fields)
_STATE_COLUMNS = ", ".join(CardState._fields)
_TYPES: dict[str, TypeEngine[Any]] = {"loss_reported_at": UTCDateTime(), "loss_expires_at": UTCDateTime(),
                                      "applied_on": Date()}


def _state_of(row: Row[Any]) -> CardState:
    return CardState._make(getattr(row, field) for field in CardState._fields)


class _Sql:
    """The few places where PostgreSQL and SQLite spell the merge differently."""

    def __init__(self, dialect: str):
        self.pg = dialect == "postgresql"
        self.ne = "IS DISTINCT FROM" if self.pg else "IS NOT"  # null-safe <>; SQLite < 3.39 lacks the former
        # The holder first, then the card: the order every channel takes them in (SQLite: BEGIN
        # IMMEDIATE has locked everything already).
        self.lock = " FOR UPDATE OF h, c" if self.pg else ""
        # A card whose bank or application date the file changes (an empty field keeps the ledger's).
        self.data_changes = (f"(COALESCE(s.bank, c.bank) {self.ne} c.bank"
                             f" OR COALESCE(s.applied_on, c.applied_on) {self.ne} c.applied_on)")

    def temp(self, name: str, body: str) -> str:
        """CREATE a temporary table from a column list '(...)' or 'AS SELECT ...'."""
        drop = "ON COMMIT DROP" if self.pg else ""
        if body.lstrip().startswith("("):
            return f"CREATE TEMP TABLE {name} {body} {drop}"
        return f"CREATE TEMP TABLE {name} {drop} {body}"


@contextmanager
def bulk_import(engine: Engine) -> Iterator[BulkImport]:
    """Open one import: stage, look for repeats, merge; all of it or nothing.

    On PostgreSQL the whole import is one transaction; on SQLite `merge` takes the ledger's write
    lock for the merge only, and the staging tables are dropped at the end whatever happened.
    """
    with engine.connect() as conn:
        job = BulkImport(conn)
        try:
            if job.sql.pg:
                with conn.begin():  # one transaction: staged, checked and merged, or nothing at all
                    yield job
            else:
                yield job
        finally:
            if not job.sql.pg:
                job.drop_sqlite_tables()


class BulkImport:
    """One import of checked rows into the ledger, on one connection (see the module's docstring)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.sql = _Sql(conn.dialect.name)

    def stage(self, rows: Iterable[StageRow]) -> int:
        """Write the rows into import_stage; return how many were staged."""
        raw, sql = driver_of(self.conn), self.sql
        staged = 0
        if sql.pg:
            self.conn.exec_driver_sql(sql.temp("import_stage", STAGE_TABLE))
            with raw.cursor() as cur, cur.copy(f"COPY import_stage ({', '.join(StageRow._fields)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    staged += 1
            self.conn.exec_driver_sql("CREATE INDEX ON import_stage (card_number, line)")
            self.conn.exec_driver_sql("CREATE UNIQUE INDEX ON import_stage (line)")
            self.conn.exec_driver_sql("ANALYZE import_stage")  # autovacuum never analyses temporary tables
            return staged
        # SQLite: outside any transaction of the ledger; each batch is a short one of the temp database.
        raw.execute(sql.temp("import_stage", STAGE_TABLE))
        statement = f"INSERT INTO import_stage VALUES ({', '.join('?' * len(StageRow._fields))})"  # noqa: S608
        it = iter(rows)
        while batch := list(itertools.islice(it, STAGE_BATCH)):
            raw.execute("BEGIN")
            raw.executemany(statement, batch)
            raw.execute("COMMIT")
            staged += len(batch)
        raw.execute("CREATE INDEX temp.import_stage_card ON import_stage (card_number, line)")
        raw.execute("CREATE UNIQUE INDEX temp.import_stage_line ON import_stage (line)")
        raw.execute("CREATE INDEX temp.import_stage_id ON import_stage (id_number)")
        return staged

    def repeats(self) -> list[tuple[int, int]]:
        """Return (line, earlier line) for each card number that repeats an earlier line of the file."""
        # SQLite: on the driver's connection, so that no transaction of the ledger begins.
        execute = self.conn.exec_driver_sql if self.sql.pg else driver_of(self.conn).execute
        found = execute(
            "SELECT line, prev FROM (SELECT line, lag(line) OVER (PARTITION BY card_number ORDER BY line) AS prev"
            " FROM import_stage) d WHERE prev IS NOT NULL ORDER BY line")
        return [(line, prev) for line, prev in found]

    def merge(self, *, now: datetime, policy: LossPolicy, step: Callable[[str], None]) -> Merged:
        """Write the staged rows into the ledger; `step` hears what each part did and how long it took.
        Return how many holders and cards were added and changed.

        Raises ForeignCards (nothing written) if a card of the file belongs to another ID number.
        """
        if self.sql.pg:
            return _Merge(self.conn, self.sql, now=now, policy=policy, step=step).run()
        with self.conn.begin():  # BEGIN IMMEDIATE: the ledger's write lock, for the merge only
            return _Merge(self.conn, self.sql, now=now, policy=policy, step=step).run()

    def drop_sqlite_tables(self) -> None:
        """Roll back what is left open and drop the staging tables (SQLite keeps them per connection)."""
        if self.conn.in_transaction():
            self.conn.rollback()
        raw = driver_of(self.conn)
        if raw.in_transaction:  # a staging batch cut short
            raw.execute("ROLLBACK")
        for table in TEMP_TABLES:
            raw.execute(f"DROP TABLE IF EXISTS temp.{table}")


class _Merge:
    """The merge of one import, inside the caller's transaction."""

    def __init__(self, conn: Connection, sql: _Sql, *, now: datetime, policy: LossPolicy,
                 step: Callable[[str], None]):
        self.conn, self.sql, self.now, self.policy, self.step = conn, sql, now, policy, step

    def run(self) -> Merged:
        started = time.monotonic()
        theirs = self.conn.exec_driver_sql(
            "SELECT s.line, s.card_number FROM import_stage s JOIN cards c ON c.card_number = s.card_number"
            " JOIN cardholders h ON h.id = c.holder_id WHERE h.id_number <> s.id_number ORDER BY s.line").all()
        if theirs:
            raise ForeignCards([(line, number) for line, number in theirs])
        self.step(f"card numbers checked against the ledger ({time.monotonic() - started:.1f} s)")
        if self.sql.pg:
            # The cards to decide are streamed through a cursor: plan for all of its rows, not the first.
            self.conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1")
        holders_changed, holders_added = self.holders()
        cards_changed = self.cards_that_change()
        cards_added = self.new_cards()
        return Merged(holders_added, holders_changed, cards_added, cards_changed)

    def execute(self, statement: str | TextClause, what: str | None = None, **binds: Any) -> int:
        """Run one statement; with `what`, tell the step how many rows it wrote and how long it took."""
        started = time.monotonic()
        clause = text(statement) if isinstance(statement, str) else statement
        clause = clause.bindparams(*[
            bindparam(name, value, type_=UTCDateTime()) if isinstance(value, datetime)
            else bindparam(name, value, expanding=isinstance(value, (list, tuple, frozenset)))
            for name, value in binds.items()])
        result = self.conn.execute(clause)
        if what:
            count = f": {result.rowcount}" if result.rowcount >= 0 and "TEMP TABLE" not in str(statement) else ""
            self.step(f"{what}{count} ({time.monotonic() - started:.1f} s)")
        return result.rowcount

    def stream(self, statement: str, **binds: Any) -> Iterator[Sequence[Row[Any]]]:
        """Yield the rows of a query in chunks of DECIDE_BATCH (a server-side cursor on PostgreSQL)."""
        clause = text(statement).columns(**{k: v for k, v in _TYPES.items() if k in statement})
        clause = clause.bindparams(*[bindparam(name, value, expanding=True) for name, value in binds.items()])
        result = self.conn.execute(clause, execution_options={"yield_per": DECIDE_BATCH})
        yield from result.partitions()

    def write(self, table: Table, rows: list[tuple[Any, ...]]) -> None:
        """Append rows, tuples in the table's column order, to a staging table (PostgreSQL: COPY).

        Each value is stored as SQLAlchemy would store it (a datetime as naive UTC, ...).
        """
        if not rows:
            return
        dialect = self.conn.dialect
        procs = [column.type.bind_processor(dialect) for column in table.columns]
        values = [tuple(v if proc is None else proc(v) for proc, v in zip(procs, row, strict=True)) for row in rows]
        raw = driver_of(self.conn)
        if self.sql.pg:
            names = ", ".join(column.name for column in table.columns)
            with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
        else:
            raw.executemany(f"INSERT INTO {table.name} VALUES ({', '.join('?' * len(procs))})", values)  # noqa: S608

    def holders(self) -> tuple[int, int]:
        """Holders: the last line of each ID number names them; the last mobile and PIN given count.
        Return how many were changed and how many added."""
        sql = self.sql
        self.execute(sql.temp("import_holders", """AS
            SELECT g.id_number, g.id_key, g.first_line, n.name, m.mobile, p.pin_hash
            FROM (SELECT id_number, min(id_key) AS id_key, min(line) AS first_line, max(line) AS last_line,
                         max(CASE WHEN mobile IS NOT NULL THEN line END) AS mobile_line,
                         max(CASE WHEN pin_hash IS NOT NULL THEN line END) AS pin_line
                  FROM import_stage GROUP BY id_number) g
            JOIN import_stage n ON n.line = g.last_line
            LEFT JOIN import_stage m ON m.line = g.mobile_line
            LEFT JOIN import_stage p ON p.line = g.pin_line"""), "cardholders of the file gathered")
        if sql.pg:
            self.execute("ANALYZE import_holders")
        else:
            self.execute("CREATE UNIQUE INDEX temp.import_holders_id ON import_holders (id_number)")
        changed = self.execute(f"""UPDATE cardholders
                SET name = src.name, mobile = COALESCE(src.mobile, cardholders.mobile),
                    pin_hash = COALESCE(src.pin_hash, cardholders.pin_hash)
                FROM import_holders src
                WHERE cardholders.id_number = src.id_number
                  AND (cardholders.name {sql.ne} src.name
                       OR COALESCE(src.mobile, cardholders.mobile) {sql.ne} cardholders.mobile
                       OR COALESCE(src.pin_hash, cardholders.pin_hash) {sql.ne} cardholders.pin_hash)""",  # noqa: S608
                     "cardholders changed")
        added = self.execute("""INSERT INTO cardholders
                 (id_number, id_key, id_last4, name, mobile, pin_hash, created_at)
               SELECT src.id_number, src.id_key, substr(src.id_number, 15, 4), src.name, src.mobile, src.pin_hash, :now
               FROM import_holders src
               WHERE NOT EXISTS (SELECT 1 FROM cardholders h WHERE h.id_number = src.id_number)
               ORDER BY src.first_line
               ON CONFLICT (id_number) DO NOTHING""", "cardholders added", now=self.now)  # one a channel added stands
        return changed, added

    def decide(self, row: Row[Any]) -> list[Change]:
        """What the import does to the card of one row read: the rules' answer, `import_change`."""
        return import_change(_state_of(row), row.given, now=self.now, policy=self.policy)

    def cards_that_change(self) -> int:
        """Cards already in the ledger: decide each that may change, lock those that do, decide
        again from what was locked, then write the decisions. Return how many changed."""
        sql = self.sql
        started, read, changing = time.monotonic(), 0, 0
        CHANGING.create(self.conn)
        candidates = self.stream(f"""
            SELECT c.id AS card_id, s.line, {_STATE}, s.status AS given, {sql.data_changes} AS data_changes
            FROM import_stage s JOIN cards c ON c.card_number = s.card_number
            WHERE s.status <> c.status OR c.status IN :by_time OR {sql.data_changes}""",  # noqa: S608
                                 by_time=sorted(CHANGED_BY_TIME))
        for chunk in candidates:
            read += len(chunk)
            found = [(r.card_id, r.line) for r in chunk if r.data_changes or self.decide(r)]
            changing += len(found)
            self.write(CHANGING, found)
        self.step(f"cards the file or time may change read: {read}, that change: {changing}"
                  f" ({time.monotonic() - started:.1f} s)")
        if sql.pg:
            self.execute("ANALYZE import_changing")
        self.execute(sql.temp("import_plan", f"""AS
            SELECT c.id AS card_id, ch.line, {_STATE}, s.status AS given, {sql.data_changes} AS data_changes,
                   COALESCE(s.bank, c.bank) AS bank, COALESCE(s.applied_on, c.applied_on) AS applied_on
            FROM import_changing ch JOIN cards c ON c.id = ch.card_id JOIN cardholders h ON h.id = c.holder_id
                 JOIN import_stage s ON s.line = ch.line
            ORDER BY h.id, c.id{sql.lock}"""), "cards that change locked")  # noqa: S608

        started, changed, rows = time.monotonic(), 0, 0
        DECIDED.create(self.conn)
        HISTORY.create(self.conn)
        for chunk in self.stream(f"""SELECT card_id, line, {_STATE_COLUMNS}, given, data_changes, bank,
                                            applied_on FROM import_plan"""):  # noqa: S608
            decided: list[tuple[Any, ...]] = []
            history: list[tuple[Any, ...]] = []
            for r in chunk:
                changes = self.decide(r)  # from the state locked: a channel's change of a moment ago counts
                if not changes and not r.data_changes:
                    continue  # the card is now as the file says: left untouched
                state = changes[-1].state if changes else _state_of(r)
                decided.append((r.card_id, *state, r.bank, r.applied_on))
                history += [(r.line, seq, r.card_id, *change.history) for seq, change in enumerate(changes)]
            self.write(DECIDED, decided)
            self.write(HISTORY, history)
            changed, rows = changed + len(decided), rows + len(history)
        self.step(f"cards decided: {changed} change, {rows} history rows ({time.monotonic() - started:.1f} s)")
        self.execute("""UPDATE cards SET status = d.status, status_before_loss = d.status_before_loss,
                   loss_reported_at = d.loss_reported_at, loss_expires_at = d.loss_expires_at,
                   loss_scope = d.loss_scope, bank = d.bank, applied_on = d.applied_on, version = cards.version + 1
               FROM import_decided d WHERE cards.id = d.card_id""", "cards updated")
        self.execute("""INSERT INTO card_events (card_id, at, status_before, status_after, channel, actor, call_sid,
                                         reason)
               SELECT card_id, at, status_before, status_after, channel, actor, call_sid, reason
               FROM import_history ORDER BY line, seq""", "card history rows written")
        return changed

    def new_cards(self) -> int:
        """New cards, in the order of the file, each with the first state and history row of its status;
        return how many."""
        OPENINGS.create(self.conn)
        self.write(OPENINGS, [(status, *change.state, *change.history) for status in STATUSES
                              for change in [import_opening(status, now=self.now, policy=self.policy)]])
        self.execute(self.sql.temp("import_new", """AS SELECT s.line FROM import_stage s
            WHERE NOT EXISTS (SELECT 1 FROM cards c WHERE c.card_number = s.card_number)"""), "new cards found")
        if self.sql.pg:
            self.execute("ANALYZE import_new")
        added = self.execute("""INSERT INTO cards (holder_id, card_number, status, bank, applied_on, status_before_loss,
                                   loss_reported_at, loss_expires_at, loss_scope, version)
                SELECT h.id, s.card_number, o.status, s.bank, s.applied_on, o.status_before_loss,
                       o.loss_reported_at, o.loss_expires_at, o.loss_scope, 1
                FROM import_new n JOIN import_stage s ON s.line = n.line
                     JOIN cardholders h ON h.id_number = s.id_number JOIN import_openings o ON o.given = s.status
                ORDER BY s.line""", "cards added")
        self.execute("""INSERT INTO card_events (card_id, at, status_before, status_after, channel, actor, call_sid,
                                         reason)
               SELECT c.id, o.at, o.status_before, o.status_after, o.channel, o.actor, o.call_sid, o.reason
               FROM import_new n JOIN import_stage s ON s.line = n.line
                    JOIN cards c ON c.card_number = s.card_number JOIN import_openings o ON o.given = s.status
               ORDER BY s.line""", "first history rows")
        return added


def refresh_statistics(engine: Engine) -> None:
    """Let the query planner see the new sizes: after a bulk load, stale statistics (a ledger it
    still thinks empty) make it scan a million rows where an index lookup would do."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "ANALYZE cardholders, cards, card_events")
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
