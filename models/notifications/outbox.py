"""The SMS outbox: a text is queued in the same unit of work as the ledger change it tells of.

`enqueue` adds an `OutboxMessage` to the caller's session, so the message exists exactly when the
change commits (a rolled-back change leaves nothing to send). `models.notifications.sender` sends
what is due. Full mobile numbers are needed to send, so they are stored; every log line and
stored error masks them. No Flask here, and nothing of ivr/.
"""
from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ForeignKey, Index, Integer, String, Text, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.notifications.texts import (
    LOSS_RELEASED,
    LOSS_REPORTED,
    MOBILE_CHANGED,
    MOBILE_CHANGED_OLD,
    loss_released_text,
    loss_reported_text,
    mobile_changed_text,
    mobile_replaced_text,
)
from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Statement, Unit, database_of, prepare

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
STATUSES = (PENDING, SENDING, SENT, FAILED)


class OutboxMessage(Base):
    """One SMS to send: written in the ledger change's transaction, sent later by the worker."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    # E.164. The full number is needed to send; never log it (models.identity.mask_phone).
    to: Mapped[str] = mapped_column("to", String(20))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("cardholders.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # sends tried (requests to Twilio)
    # pending: when it may be sent; sending: when its outcome is checked if nobody finished it.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claim: Mapped[str | None] = mapped_column(String(96))  # the worker round holding it: host:pid:nonce
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    last_error: Mapped[str | None] = mapped_column(String(500))  # masked

    __table_args__ = (Index("ix_outbox_messages_due", "status", "next_attempt_at"),)


def enqueue(session: Session, *, to: str, body: str, kind: str, holder_id: int | None, now: datetime) -> OutboxMessage:
    """Add a message to the outbox in the caller's unit of work (sent only if it commits)."""
    message = OutboxMessage(to=to, body=body, kind=kind, holder_id=holder_id, created_at=now, status=PENDING,
                            attempts=0, next_attempt_at=now)
    session.add(message)
    return message


# The columns a queued message sets (the sending ones start empty), as `enqueue` sets them.
QUEUED_KEYS = ("to", "body", "kind", "holder_id", "created_at", "status", "attempts", "next_attempt_at")


def queued(*, to: str, body: str, kind: str, holder_id: int | None, now: datetime) -> dict[str, Any]:
    """Return the values of a queued message's row (its QUEUED_KEYS), as `enqueue` sets them."""
    return {"to": to, "body": body, "kind": kind, "holder_id": holder_id, "created_at": now, "status": PENDING,
            "attempts": 0, "next_attempt_at": now}


def queue_row(unit: Unit, row: dict[str, Any]) -> None:
    """Queue a message of `queued`'s values in the caller's unit of work, as `enqueue` does, on one
    compiled Core statement (`models.storage.fastpath`); on PostgreSQL the use cases' texts ride on
    the change they tell of instead (`models.ledger_rows`)."""
    _queue_statement(*database_of(unit)).execute(unit, row)


@functools.lru_cache(maxsize=16)
def _queue_statement(dialect: Dialect, fast: bool) -> Statement:
    return prepare(insert(Base.metadata.tables[OutboxMessage.__tablename__]).inline(), dialect, fast=fast,
                   keys=QUEUED_KEYS)


def loss_reported(holder: Any, last4: str, *, expires_at: datetime, now: datetime,
                  tz: ZoneInfo) -> dict[str, Any] | None:
    """Return the loss report text's row (`queued`), or None when the holder has no mobile. The
    ledger writes it with the card's change (`models.ledger_rows.LedgerRows.apply`)."""
    if not holder.mobile:
        return None
    return queued(to=holder.mobile, kind=LOSS_REPORTED, holder_id=holder.id, now=now,
                  body=loss_reported_text(last4, at=now, expires_at=expires_at, tz=tz))


def loss_released(holder: Any, last4: str, *, now: datetime, tz: ZoneInfo) -> dict[str, Any] | None:
    """Return the release text's row (`queued`), or None when the holder has no mobile."""
    if not holder.mobile:
        return None
    return queued(to=holder.mobile, kind=LOSS_RELEASED, holder_id=holder.id, now=now,
                  body=loss_released_text(last4, at=now, tz=tz))


def mobile_changed(holder_id: int, mobile: str, before: str | None, *, now: datetime,
                   tz: ZoneInfo) -> list[dict[str, Any]]:
    """Return the rows (`queued`) of the texts that tell of a contact mobile change: one to the new
    mobile and, when there was a different one, one to the old. The ledger writes them with the
    change (`models.ledger_rows.LedgerRows.change_holder`)."""
    texts = [queued(to=mobile, kind=MOBILE_CHANGED, holder_id=holder_id, now=now,
                    body=mobile_changed_text(at=now, tz=tz))]
    if before and before != mobile:
        texts.append(queued(to=before, kind=MOBILE_CHANGED_OLD, holder_id=holder_id, now=now,
                            body=mobile_replaced_text(mobile[-4:], at=now, tz=tz)))
    return texts
