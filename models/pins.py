"""Service PIN checks with a lockout counted per entered ID number, known or not."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, Table, bindparam, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.cards import Cardholder, Credentials, credentials_by_key, credentials_select
from models.identity import pin_matches
from models.ledger_rows import HolderRow
from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Statement, Unit, database_of, prepare

OK = "ok"
WRONG = "wrong"
LOCKED = "locked"
INITIAL = "initial"  # the initial PIN was keyed: never a way in, whoever keyed it


@dataclass(frozen=True)
class PinPolicy:
    """The PIN rules (config.yaml `pin`)."""

    max_failures: int = 6
    lock_hours: float | None = None  # None: locked until an agent or a counter clears it


class PinGuard(Base):
    """Consecutive wrong PINs for one entered ID number (by its keyed hash), across calls."""

    __tablename__ = "pin_guards"

    id_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def is_locked(self, now: datetime, policy: PinPolicy) -> bool:
        """Tell whether the phone service is locked for this ID number at this moment."""
        if self.locked_at is None:
            return False
        if policy.lock_hours is not None and now >= self.locked_at + timedelta(hours=policy.lock_hours):
            self.clear()
            return False
        return True

    def clear(self) -> None:
        """Forget the failures and lift the lock."""
        self.failures = 0
        self.locked_at = None


def check_pin(
    session: Unit,
    *,
    key: bytes,
    id_key: str,
    holder: Credentials | Cardholder | HolderRow | None,
    pin: str,
    now: datetime,
    policy: PinPolicy,
    initial: str | None = None,
    guard: tuple[int, datetime | None] | None = None,
) -> str:
    """Check a PIN for an entered ID number; return OK, WRONG or LOCKED (or INITIAL).

    An unknown ID number is treated exactly like a wrong PIN, counter and lock included, so
    neither the answer nor a lockout tells a caller which ID numbers exist.
    With `initial` given, keying that PIN returns INITIAL (LOCKED when the ID number is, or now
    becomes, locked) whoever keyed it: an unknown ID number, a holder with a PIN of their own, or a
    holder still on it. It counts as a wrong PIN, except for the holder whose PIN it really is: their
    count is written back unchanged, so the same statements run (the same time) either way.
    Every verification runs this: the counter row is created or locked and read in one statement
    (or, `guard`, by `guard_and_credentials` with the holder's credentials), written back only when
    it changes (`models.storage.fastpath`, which flushes the session first).
    `guard`: the counter row's (failures, locked_at) as `guard_and_credentials` created or locked
    and read it, in this unit of work (else read here).
    """
    rows = _guard_statements(*database_of(session))
    failures, locked_at = guard if guard is not None else _guard_row(rows["lock"].first(session, {"id_key": id_key}))
    before = (failures, locked_at)
    # Hash even when the holder is unknown, so both paths cost the same.
    matches = pin_matches(key, holder.id_number if holder else "", pin, holder.pin_hash if holder else None)
    lock_hours = policy.lock_hours
    if locked_at is not None and lock_hours is not None and now >= locked_at + timedelta(hours=lock_hours):
        failures, locked_at = 0, None  # the lock has run out
    keyed_initial = initial is not None and pin == initial
    if locked_at is not None:
        result = LOCKED
    elif matches and holder is not None and keyed_initial:  # really still on it: neither a failure nor a reset
        rows["set"].execute(session, {"key": id_key, "failures": failures, "locked_at": locked_at})
        return INITIAL
    elif matches and holder is not None:
        failures, result = 0, OK
    else:
        failures += 1
        locked_at = now if failures >= policy.max_failures else None
        result = LOCKED if locked_at is not None else INITIAL if keyed_initial else WRONG
        rows["fail"].execute(session, {"key": id_key, "failures": failures, "locked_at": locked_at, "at": now})
        return result
    if (failures, locked_at) != before:
        rows["set"].execute(session, {"key": id_key, "failures": failures, "locked_at": locked_at})
    return result


def guard_and_credentials(session: Unit, id_key: str) -> tuple[tuple[int, datetime | None], Credentials | None]:
    """Create or lock the PIN counter row of an entered ID number (its keyed hash) and read it, and
    read the credentials of the cardholder with that ID number, if there is one: `check_pin`'s
    `guard` and `holder`. The same statements run whether the ID number is known or not.

    On PostgreSQL one statement: the upsert in a WITH, the holder joined to the row it returns
    (the holder read unlocked, as `models.cards.credentials_by_key` reads it). SQLite runs the two.
    """
    dialect, fast = database_of(session)
    rows = _guard_statements(dialect, fast)
    if "together" not in rows:
        holder = credentials_by_key(session, id_key)
        return _guard_row(rows["lock"].first(session, {"id_key": id_key})), holder
    row = rows["together"].first(session, {"id_key": id_key})
    return _guard_row(row), (Credentials(*row[2:5]) if row is not None and row[2] is not None else None)


def _guard_row(row: tuple[Any, ...] | None) -> tuple[int, datetime | None]:
    """The counter row's (failures, locked_at) from its upsert's first columns (an upsert with
    RETURNING always returns its row)."""
    if row is None:
        raise RuntimeError("the PIN counter's upsert returned no row")
    return row[0], row[1]


@functools.lru_cache(maxsize=16)
def _guard_statements(dialect: Dialect, fast: bool) -> dict[str, Statement]:
    """The counter row's statements, prepared for a database (SQLite or PostgreSQL), fast path or not."""
    insert: Any = {"sqlite": sqlite_insert, "postgresql": pg_insert}[dialect.name]
    guards: Table = Base.metadata.tables[PinGuard.__tablename__]
    stmt = insert(guards).values(id_key=bindparam("id_key"), failures=0)
    # Already there: touch it, which takes its row lock on PostgreSQL (on SQLite the unit of work
    # holds the database's write lock from its start).
    lock = stmt.on_conflict_do_update(index_elements=[guards.c.id_key], set_={"id_key": stmt.excluded.id_key})
    by_key = guards.c.id_key == bindparam("key")
    locked = lock.returning(guards.c.failures, guards.c.locked_at)
    together: dict[str, Statement] = {}
    if dialect.name == "postgresql":
        guard = locked.cte("guard")
        holder = credentials_select(bindparam("id_key")).lateral("holder")
        together["together"] = prepare(
            select(guard.c.failures, guard.c.locked_at, *holder.c).select_from(guard.outerjoin(holder, true())),
            dialect, fast=fast)
    return together | {
        "lock": prepare(locked, dialect, fast=fast),
        "set": prepare(update(guards).where(by_key).values(failures=bindparam("failures"),
                                                           locked_at=bindparam("locked_at")), dialect, fast=fast),
        "fail": prepare(update(guards).where(by_key).values(failures=bindparam("failures"),
                                                            locked_at=bindparam("locked_at"),
                                                            last_failure_at=bindparam("at")), dialect, fast=fast),
    }


def clear_lock(session: Session, id_key: str) -> None:
    """Lift a PIN lockout after an agent or a counter has checked the caller's identity."""
    guard = session.get(PinGuard, id_key)
    if guard is not None:
        guard.clear()
