"""Service PIN checks with a lockout counted per entered ID number, known or not."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.cards import Cardholder, Credentials
from models.identity import pin_matches
from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Prepared

OK = "ok"
WRONG = "wrong"
LOCKED = "locked"


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
    session: Session,
    *,
    key: bytes,
    id_key: str,
    holder: Credentials | Cardholder | None,
    pin: str,
    now: datetime,
    policy: PinPolicy,
) -> str:
    """Check a PIN for an entered ID number; return OK, WRONG or LOCKED.

    An unknown ID number is treated exactly like a wrong PIN, counter and lock included, so
    neither the answer nor a lockout tells a caller which ID numbers exist.
    Every verification runs this: the counter row is created or locked and read in one statement,
    written back only when it changes (`models.storage.fastpath`).
    """
    session.flush()  # as the ORM would before a query of its own
    conn = session.connection()
    rows = _guard_statements(conn.dialect)
    failures, locked_at = rows["lock"].first(conn, {"id_key": id_key})
    before = (failures, locked_at)
    # Hash even when the holder is unknown, so both paths cost the same.
    matches = pin_matches(key, holder.id_number if holder else "", pin, holder.pin_hash if holder else None)
    if locked_at is not None and policy.lock_hours is not None and now >= locked_at + timedelta(hours=policy.lock_hours):
        failures, locked_at = 0, None  # the lock has run out
    if locked_at is not None:
        result = LOCKED
    elif matches and holder is not None:
        failures, result = 0, OK
    else:
        failures += 1
        locked_at = now if failures >= policy.max_failures else None
        result = LOCKED if locked_at is not None else WRONG
        rows["fail"].execute(conn, {"key": id_key, "failures": failures, "locked_at": locked_at, "at": now})
        return result
    if (failures, locked_at) != before:
        rows["set"].execute(conn, {"key": id_key, "failures": failures, "locked_at": locked_at})
    return result


@functools.lru_cache(maxsize=16)
def _guard_statements(dialect: Dialect) -> dict[str, Prepared]:
    """The counter row's statements, prepared for a database (SQLite or PostgreSQL)."""
    insert = {"sqlite": sqlite_insert, "postgresql": pg_insert}[dialect.name]
    guards = PinGuard.__table__
    stmt = insert(guards).values(id_key=bindparam("id_key"), failures=0)
    # Already there: touch it, which takes its row lock on PostgreSQL (on SQLite the unit of work
    # holds the database's write lock from its start).
    lock = stmt.on_conflict_do_update(index_elements=[guards.c.id_key], set_={"id_key": stmt.excluded.id_key})
    by_key = guards.c.id_key == bindparam("key")
    return {
        "lock": Prepared(lock.returning(guards.c.failures, guards.c.locked_at), dialect),
        "set": Prepared(update(guards).where(by_key).values(failures=bindparam("failures"),
                                                            locked_at=bindparam("locked_at")), dialect),
        "fail": Prepared(update(guards).where(by_key).values(failures=bindparam("failures"),
                                                             locked_at=bindparam("locked_at"),
                                                             last_failure_at=bindparam("at")), dialect),
    }


def clear_lock(session: Session, id_key: str) -> None:
    """Lift a PIN lockout after an agent or a counter has checked the caller's identity."""
    guard = session.get(PinGuard, id_key)
    if guard is not None:
        guard.clear()
