"""The call centre's side: agent accounts, call-back requests, call ratings and the audit trail."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.storage.db import Base, UTCDateTime
from models.vocabulary import Rating

ROLES = ("agent", "admin")
RATINGS = {"1": Rating.SATISFIED, "2": Rating.BASICALLY_SATISFIED, "3": Rating.DISSATISFIED}  # by key


class AgentAccount(Base):
    """Someone who works the console; the password only as a salted hash."""

    __tablename__ = "agent_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def is_admin(self) -> bool:
        """Tell whether the account may reach admin pages."""
        return self.role == "admin"


class CallbackRequest(Base):
    """A caller who could not reach an agent asks to be called back."""

    __tablename__ = "callback_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    hotline: Mapped[str] = mapped_column(String(32))
    # The number to call back: needed in full by the agent, never logged or recorded.
    number: Mapped[str] = mapped_column(String(20))
    recording_url: Mapped[str | None] = mapped_column(String(512))
    recording_seconds: Mapped[int | None] = mapped_column(Integer)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by: Mapped[str | None] = mapped_column(String(64))


class CallRating(Base):
    """How a caller rated the service at the end of a call (一次一评)."""

    __tablename__ = "call_ratings"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    hotline: Mapped[str] = mapped_column(String(32))
    rating: Mapped[str] = mapped_column(String(24))  # satisfied, basically_satisfied, dissatisfied
    services: Mapped[list[str]] = mapped_column(JSON, default=list)
    agent: Mapped[str | None] = mapped_column(String(128))  # the agent leg, when an agent took the call
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """Something an agent did that must be accountable: revealing an ID number, clearing a lock."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    agent: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("cardholders.id"))
    detail: Mapped[str] = mapped_column(String(256), default="")


def request_callback(session: Session, *, call_sid: str, hotline: str, number: str, recording_url: str | None,
                     recording_seconds: int | None, context: dict[str, Any], now: datetime) -> CallbackRequest:
    """Leave a call-back request for the agents (the number in full: they must call it)."""
    request = CallbackRequest(call_sid=call_sid, hotline=hotline, number=number, recording_url=recording_url,
                              recording_seconds=recording_seconds, context=context, created_at=now)
    session.add(request)
    return request


def rate_call(session: Session, *, call_sid: str, hotline: str, key: str, services: list[str], agent: str | None,
              now: datetime) -> CallRating:
    """Keep the caller's rating of a call: one per call, a second one replaces the first."""
    rating = session.scalars(select(CallRating).where(CallRating.call_sid == call_sid)).first()
    if rating is None:
        rating = CallRating(call_sid=call_sid, hotline=hotline, at=now)
        session.add(rating)
    rating.rating = RATINGS[key]
    rating.services = services
    rating.agent = agent
    rating.at = now
    return rating
