"""The statements every webhook runs on its call's row (`calls`) and record (`call_events`)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

from models.calls import CallEvent, CallState
from models.storage.db import Base
from models.storage.fastpath import Statement, Unit, prepare

CALLS: Table = Base.metadata.tables[CallState.__tablename__]
EVENTS: Table = Base.metadata.tables[CallEvent.__tablename__]
# The columns are declared once, by the models. A new call's row sets every column a row must
# have, and the caller's keyed number when there is one (how the call ended, and its handoff,
# come later); a record sets all but its id.
NEW_CALL_KEYS = (*(c.key for c in CALLS.c if not c.nullable), CALLS.c.from_key.key)
EVENT_KEYS = tuple(c.key for c in EVENTS.c if not c.primary_key)
# The record's values are bound under names of their own, none a column of the call's row: run
# through plain Core, the names of the parameters also choose the columns a statement sets, and on
# PostgreSQL a record's call_sid or turn would reach the UPDATE of the row inside the WITH.
EVENT_BINDS = {k: f"event_{k}" for k in EVENT_KEYS}
# A new call's row written with its first answer (`CallRows.create`): its columns bound as c_….
CREATED_KEYS = (*NEW_CALL_KEYS, CALLS.c.handoff.key)


class CallExists(Exception):
    """A new call's row was there already: a retry of its first webhook (or its twin) got there first."""


class CallRows:
    """The statements every webhook runs on its call's row and record, prepared for one database.

    Each webhook reads and locks its call's row, then saves it together with the record of the
    step, inside the webhook's transaction, through `models.storage.fastpath` (on the driver's
    cursor, or with `fast=False` on plain SQLAlchemy Core). On PostgreSQL the save and the record
    are one statement (a data-modifying WITH), one round trip fewer per webhook; SQLite,
    in-process, runs the two. Values are plain dicts keyed like the columns; the row's new turn is
    `next_turn` (the record's `turn` is the turn it answers).

    Every method takes the unit of work: the webhook's Connection, or the ORM Session its actions
    used, which the boundary flushes first, so the ledger changes of a step are written before
    its record (`models.storage.unit.UnitOfWork.runs_on`).
    """

    def __init__(self, dialect: Dialect, *, fast: bool):
        self.fast = fast
        by_sid = CALLS.c.call_sid == bindparam("sid")
        save: dict[str, Any] = {"state": bindparam("state"), "turn": bindparam("next_turn"), "data": bindparam("data"),
                "updated_at": bindparam("updated_at")}
        saves = {
            False: update(CALLS).where(by_sid).values(**save),
            True: update(CALLS).where(by_sid).values(**save, handoff=bindparam("handoff")),
        }
        ending = update(CALLS).where(by_sid).values(
            end_reason=bindparam("end_reason"), ended_at=bindparam("ended_at"), data=bindparam("data"),
            duration_s=bindparam("duration_s"))
        # Explicit binds, not column keys: the keys would reach the UPDATE inside the WITH too.
        record = insert(EVENTS).values({k: bindparam(b) for k, b in EVENT_BINDS.items()}).inline()  # no RETURNING

        def prepared(statement: Any, keys: tuple[str, ...] | None = None) -> Statement:
            return prepare(statement, dialect, fast=fast, keys=keys)

        self.together = dialect.name == "postgresql"
        self._record = prepared(record)
        if self.together:
            self._save = {k: prepared(record.add_cte(u.cte("saved"))) for k, u in saves.items()}
            self._end = prepared(record.add_cte(ending.cte("ended")))
        else:
            self._save = {k: prepared(u) for k, u in saves.items()}
            self._end = prepared(ending)
        creates = {handoff: _insert_new(dialect.name).values(
            {k: bindparam(f"c_{k}") for k in CREATED_KEYS if handoff or k != CALLS.c.handoff.key})
            for handoff in (False, True)}
        if self.together:  # the row and the record in one statement: the record inserted from the row made
            self._creates: dict[bool, Statement] = {}
            for handoff, create in creates.items():
                made = create.returning(CALLS.c.call_sid).cte("made")
                self._creates[handoff] = prepared(insert(EVENTS).add_cte(made).from_select(
                    list(EVENT_KEYS), select(*(bindparam(b, type_=EVENTS.c[k].type) for k, b in EVENT_BINDS.items()))
                    .select_from(made)).returning(EVENTS.c.id))
        else:
            self._creates = {handoff: prepared(create) for handoff, create in creates.items()}
        self._load = prepared(select(CALLS.c.state, CALLS.c.turn, CALLS.c.data).where(by_sid).with_for_update())
        self._create = prepared(_insert_new(dialect.name).returning(CALLS.c.state, CALLS.c.turn, CALLS.c.data),
                                NEW_CALL_KEYS)
        self._answered = prepared(
            select(EVENTS.c.twiml).where(EVENTS.c.call_sid == bindparam("sid"), EVENTS.c.turn == bindparam("turn"),
                                         EVENTS.c.kind == bindparam("kind")).limit(1))
        self._closing = prepared(select(CALLS.c.state, CALLS.c.turn, CALLS.c.data, CALLS.c.handoff, CALLS.c.ended_at)
                                 .where(by_sid).with_for_update())

    def load(self, unit: Unit, sid: str) -> tuple[str, int, dict[str, Any] | None] | None:
        """Return the call's (state, turn, data), its row locked until the webhook commits; None if new."""
        return self._load.first(unit, {"sid": sid})

    def load_or_create(self, unit: Unit, sid: str,
                       new: Callable[[], dict[str, Any]]) -> tuple[str, int, dict[str, Any] | None]:
        """Return the call's (state, turn, data), locked; a new call's row (`new()`) is inserted first.

        The row is locked until the webhook commits (a row this transaction inserted is as good as
        locked: nobody else sees it, and a simultaneous insert waits for it). A first webhook
        inserts its row with its answer instead (`create`).
        """
        row = self._load.first(unit, {"sid": sid})
        if row is None:
            # Inserted here, or (None back) by a simultaneous first webhook: then wait for its row.
            row = self._create.first(unit, new()) or self._load.first(unit, {"sid": sid})
        return row  # type: ignore[return-value]

    def create(self, unit: Unit, values: dict[str, Any], event: dict[str, Any]) -> None:
        """Insert a new call's row with its first answer already in it (`values`: the columns of
        NEW_CALL_KEYS, state, turn and data as the first webhook left them, and handoff when it put
        the caller through) and record the webhook: one statement on PostgreSQL, so a first webhook
        runs one statement where the insert, then the save, ran two. Raises CallExists, and writes
        nothing, when the row is there already; the webhook then runs again as any later one would
        (`ivr.voice.turns`): it waits for the row, reads it and answers what was answered."""
        statement = self._creates[CALLS.c.handoff.key in values]
        bound = {f"c_{k}": v for k, v in values.items()}
        recorded = {b: event[k] for k, b in EVENT_BINDS.items()}
        if self.together:
            if statement.first(unit, bound | recorded) is None:
                raise CallExists(values["call_sid"])
            return
        if statement.execute(unit, bound) != 1:
            raise CallExists(values["call_sid"])
        self._record.execute(unit, recorded)

    def save(self, unit: Unit, values: dict[str, Any], event: dict[str, Any]) -> None:
        """Save the call's state, next_turn and data (and handoff, when given), and record the webhook."""
        self._write(self._save["handoff" in values], unit, values, event)

    def end(self, unit: Unit, values: dict[str, Any], event: dict[str, Any]) -> None:
        """Close the call's row (why and when it ended, its duration, the data it keeps); record the webhook."""
        self._write(self._end, unit, values, event)

    def record(self, unit: Unit, event: dict[str, Any]) -> None:
        """Record a webhook that changes nothing of the call's row (the agent's whisper)."""
        self._record.execute(unit, {b: event[k] for k, b in EVENT_BINDS.items()})

    def _write(self, statement: Statement, unit: Unit, values: dict[str, Any], event: dict[str, Any]) -> None:
        recorded = {b: event[k] for k, b in EVENT_BINDS.items()}
        if self.together:
            statement.execute(unit, recorded | values)
        else:
            statement.execute(unit, values)
            self._record.execute(unit, recorded)

    def answered(self, unit: Unit, sid: str, turn: int, kind: str) -> str | None:
        """Return the TwiML already answered to this webhook, if it was (a retry), else None."""
        row = self._answered.first(unit, {"sid": sid, "turn": turn, "kind": kind})
        return None if row is None else row[0]

    def load_ending(self, unit: Unit, sid: str) -> tuple[str, int, dict[str, Any] | None, Any] | None:
        """Return the call's (state, turn, data, handoff), locked, to close its record."""
        row = self._closing.first(unit, {"sid": sid})
        return None if row is None else row[:4]

    def load_closing(self, unit: Unit, sid: str) -> tuple[str, int, dict[str, Any] | None, Any, Any] | None:
        """Return the call's (state, turn, data, handoff, ended_at), locked, for its status callback.

        A call whose `ended_at` is empty has had no status callback recorded (`end` sets both in
        one statement), so only a call with one needs the look for a retry (`answered`)."""
        return self._closing.first(unit, {"sid": sid})


def _insert_new(dialect: str) -> Any:
    insert_: Any = {"postgresql": pg_insert, "sqlite": sqlite_insert}[dialect]
    return insert_(CALLS).on_conflict_do_nothing(index_elements=["call_sid"])
