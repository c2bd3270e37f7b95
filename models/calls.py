"""Call state (one row per CallSid) and the record of every webhook a call made."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Prepared


class CallState(Base):
    """Where a call stands in the flow, so any worker on any host can answer its next webhook."""

    __tablename__ = "calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_masked: Mapped[str] = mapped_column(String(32), default="")
    to_number: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[str] = mapped_column(String(48))
    turn: Mapped[int] = mapped_column(Integer, default=0)
    # Counters, the service being done, keyed hashes and prompt values; never a PIN or ID number.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(24))  # hung_up, transferred, completed
    duration_s: Mapped[int | None] = mapped_column(Integer)
    # What the agent sees on transfer: verified, masked ID, services tried, why transferred.
    handoff: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CallEvent(Base):
    """One webhook of a call: its parameters (secrets removed), the TwiML answered, timing."""

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_turn", "call_sid", "turn", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid"))
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # incoming, step, dial, status
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    state_before: Mapped[str | None] = mapped_column(String(48))
    state_after: Mapped[str | None] = mapped_column(String(48))
    # Every state the step passed through, actions included: coverage and replay read it.
    path: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Ledger facts an action read (a card's status, dates, last four digits): replay fixtures.
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    twiml: Mapped[str] = mapped_column(Text, default="")
    elapsed_ms: Mapped[float] = mapped_column(Float, default=0.0)


def purge_calls(session: Session, *, before: datetime) -> int:
    """Delete the calls that started before a moment, with their recorded webhooks; return how many."""
    old = select(CallState.call_sid).where(CallState.started_at < before)
    session.execute(delete(CallEvent).where(CallEvent.call_sid.in_(old)))
    return session.execute(delete(CallState).where(CallState.started_at < before)).rowcount


CALLS, EVENTS = CallState.__table__, CallEvent.__table__
NEW_CALL_KEYS = ("call_sid", "from_masked", "to_number", "state", "turn", "data", "started_at", "updated_at")
EVENT_KEYS = ("call_sid", "turn", "kind", "at", "params", "state_before", "state_after", "path", "facts", "twiml",
              "elapsed_ms")


class CallRows:
    """The statements every webhook runs on its call's row and record, prepared for one database.

    Each webhook reads and locks its call's row, then saves it together with the record of the
    step — on the driver's cursor inside the webhook's transaction (`models.storage.fastpath`). On
    PostgreSQL the save and the record are one statement (a data-modifying WITH), one round trip
    fewer per webhook; SQLite, in-process, runs the two. Values are plain dicts keyed like the
    columns; the row's new turn is `next_turn` (the record's `turn` is the turn it answers).
    """

    def __init__(self, dialect: Dialect):
        by_sid = CALLS.c.call_sid == bindparam("sid")
        save = {"state": bindparam("state"), "turn": bindparam("next_turn"), "data": bindparam("data"),
                "updated_at": bindparam("updated_at")}
        saves = {
            False: update(CALLS).where(by_sid).values(**save),
            True: update(CALLS).where(by_sid).values(**save, handoff=bindparam("handoff")),
        }
        ending = update(CALLS).where(by_sid).values(
            end_reason=bindparam("end_reason"), ended_at=bindparam("ended_at"), data=bindparam("data"),
            duration_s=bindparam("duration_s"))
        # Explicit binds, not column keys: the keys would reach the UPDATE inside the WITH too.
        record = insert(EVENTS).values({k: bindparam(k) for k in EVENT_KEYS}).inline()  # no RETURNING of the id
        self.together = dialect.name == "postgresql"
        if self.together:
            self._save = {k: Prepared(record.add_cte(u.cte("saved")), dialect) for k, u in saves.items()}
            self._end = Prepared(record.add_cte(ending.cte("ended")), dialect)
        else:
            self._save = {k: Prepared(u, dialect) for k, u in saves.items()}
            self._end = Prepared(ending, dialect)
            self._record = Prepared(record, dialect)
        self._load = Prepared(select(CALLS.c.state, CALLS.c.turn, CALLS.c.data).where(by_sid).with_for_update(),
                              dialect)
        self._create = Prepared(_insert_new(dialect.name).returning(CALLS.c.state, CALLS.c.turn, CALLS.c.data),
                                dialect, NEW_CALL_KEYS)
        self._answered = Prepared(
            select(EVENTS.c.twiml).where(EVENTS.c.call_sid == bindparam("sid"), EVENTS.c.turn == bindparam("turn"),
                                         EVENTS.c.kind == bindparam("kind")).limit(1), dialect)
        self._ending = Prepared(select(CALLS.c.state, CALLS.c.turn, CALLS.c.data, CALLS.c.handoff).where(by_sid)
                                .with_for_update(), dialect)

    def load(self, conn: Connection, sid: str) -> tuple[str, int, dict[str, Any] | None] | None:
        """Return the call's (state, turn, data), its row locked until the webhook commits; None if new."""
        return self._load.first(conn, {"sid": sid})  # type: ignore[return-value]

    def load_or_create(self, conn: Connection, sid: str,
                       new: Callable[[], dict[str, Any]]) -> tuple[str, int, dict[str, Any] | None]:
        """Return the call's (state, turn, data), locked; a new call's row (`new()`) is inserted first."""
        row = self._load.first(conn, {"sid": sid})
        if row is None:
            # Inserted here, or (None back) by a simultaneous first webhook: then wait for its row.
            row = self._create.first(conn, new()) or self._load.first(conn, {"sid": sid})
        return row  # type: ignore[return-value]

    def save(self, conn: Connection, values: dict[str, Any], event: dict[str, Any]) -> None:
        """Save the call's state, next_turn and data (and handoff, when given), and record the webhook."""
        self._write(self._save["handoff" in values], conn, values, event)

    def end(self, conn: Connection, values: dict[str, Any], event: dict[str, Any]) -> None:
        """Close the call's row (why and when it ended, its duration, the data it keeps); record the webhook."""
        self._write(self._end, conn, values, event)

    def _write(self, statement: Prepared, conn: Connection, values: dict[str, Any], event: dict[str, Any]) -> None:
        if self.together:
            statement.execute(conn, event | values)
        else:
            statement.execute(conn, values)
            self._record.execute(conn, event)

    def answered(self, conn: Connection, sid: str, turn: int, kind: str) -> str | None:
        """Return the TwiML already answered to this webhook, if it was (a retry), else None."""
        row = self._answered.first(conn, {"sid": sid, "turn": turn, "kind": kind})
        return None if row is None else row[0]

    def load_ending(self, conn: Connection, sid: str) -> tuple[str, int, dict[str, Any] | None, Any] | None:
        """Return the call's (state, turn, data, handoff), locked, to close its record."""
        return self._ending.first(conn, {"sid": sid})  # type: ignore[return-value]


def _insert_new(dialect: str) -> Any:
    insert_ = {"postgresql": pg_insert, "sqlite": sqlite_insert}[dialect]
    return insert_(CALLS).on_conflict_do_nothing(index_elements=["call_sid"])
