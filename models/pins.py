"""Service PIN checks with a lockout counted per entered ID number, known or not."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import Base, UTCDateTime
from models.identity import pin_matches
from models.ledger import Cardholder

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
    holder: Cardholder | None,
    pin: str,
    now: datetime,
    policy: PinPolicy,
) -> str:
    """Check a PIN for an entered ID number; return OK, WRONG or LOCKED.

    An unknown ID number is treated exactly like a wrong PIN, counter and lock included, so
    neither the answer nor a lockout tells a caller which ID numbers exist.
    """
    guard = locked_guard(session, id_key)
    # Hash even when the holder is unknown, so both paths cost the same.
    matches = pin_matches(key, holder.id_number if holder else "", pin, holder.pin_hash if holder else None)
    if guard.is_locked(now, policy):
        return LOCKED
    if matches and holder is not None:
        guard.clear()
        return OK
    guard.failures += 1
    guard.last_failure_at = now
    if guard.failures >= policy.max_failures:
        guard.locked_at = now
        return LOCKED
    return WRONG


def locked_guard(session: Session, id_key: str) -> PinGuard:
    """Return the counter row for an ID number, created if need be and locked for this update.

    One statement: insert the row, or (already there) touch it, which takes its row lock on
    PostgreSQL (SQLite's unit of work already holds the database's write lock), and return it.
    """
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = insert(PinGuard).values(id_key=id_key, failures=0)
        stmt = stmt.on_conflict_do_update(index_elements=[PinGuard.id_key], set_={"id_key": stmt.excluded.id_key})
        return session.scalars(stmt.returning(PinGuard), execution_options={"populate_existing": True}).one()
    if session.get(PinGuard, id_key) is None:
        session.add(PinGuard(id_key=id_key, failures=0))
        session.flush()
    q = select(PinGuard).where(PinGuard.id_key == id_key).with_for_update()
    return session.scalars(q.execution_options(populate_existing=True)).one()


def clear_lock(session: Session, id_key: str) -> None:
    """Lift a PIN lockout after an agent or a counter has checked the caller's identity."""
    guard = session.get(PinGuard, id_key)
    if guard is not None:
        guard.clear()
