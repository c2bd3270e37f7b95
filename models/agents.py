"""The call centre's side: agent accounts and their logins, call-back requests, call ratings, the audit trail."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, delete, func, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.recordings import twilio_recording
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
    # Kept in every console session of the account: raised by a logout, a password reset or a
    # disable, it ends them all (ivr.console.load_agent compares the two).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Two-factor sign-in (ivr/console/twofactor.py): the TOTP secret encrypted (Fernet, keyed from
    # IVR_SECRET_KEY), when it was enrolled, and the last time step a code was accepted for (a code
    # is never accepted twice). Wrong codes are login attempts like wrong passwords (LoginAttempt).
    totp_secret: Mapped[str | None] = mapped_column(String(256))
    totp_enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)

    @property
    def is_admin(self) -> bool:
        """Tell whether the account may reach admin pages."""
        return self.role == "admin"

    @property
    def two_factor_enrolled(self) -> bool:
        """Tell whether the account signs in with a one-time code after its password."""
        return self.totp_secret is not None


class RecoveryCode(Base):
    """A single-use code that stands in for a one-time code; only its SHA-256 is kept."""

    __tablename__ = "agent_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent_accounts.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def end_sessions(session: Session, account_id: int) -> None:
    """End every console session of an account, on every device (logout, password reset, disable)."""
    session.execute(update(AgentAccount).where(AgentAccount.id == account_id)
                    .values(session_epoch=AgentAccount.session_epoch + 1))


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed console logins are allowed in a window (config.yaml `console.login_limit`)."""

    per_username: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


PENDING, FAILED, OK = "pending", "failed", "ok"  # a login attempt's outcome
KEEP_ATTEMPTS = timedelta(days=30)  # older attempts are deleted: long past any window, kept for a look back
LOGIN_LOCK = 12334  # PostgreSQL advisory lock: counting and adding an attempt, one worker at a time


class LoginAttempt(Base):
    """One try at the console's password, by the username typed (an account or not) and the address."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_username_at", "username", "at"),
                      Index("ix_login_attempts_address_at", "address", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    # pending while the password is checked (counted as a failure if the worker died meanwhile)
    outcome: Mapped[str] = mapped_column(String(16), default=PENDING)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # an admin let the username in again


def refused_until(session: Session, *, now: datetime, policy: LoginPolicy, username: str | None = None,
                  address: str | None = None) -> datetime | None:
    """Return until when logins of the username or from the address are refused; None when they are not.

    A failure counts for the window after it; a success does not wipe the failures before it.
    """
    counted = (LoginAttempt.outcome != OK, LoginAttempt.lifted_at.is_(None), LoginAttempt.at > now - policy.window)
    until: datetime | None = None
    for column, value, limit in ((LoginAttempt.username, username, policy.per_username),
                                 (LoginAttempt.address, address, policy.per_address)):
        if value is None:
            continue
        # The limit-th newest failure: once it leaves the window, one more try is allowed.
        oldest = session.scalars(select(LoginAttempt.at).where(column == value, *counted)
                                 .order_by(LoginAttempt.at.desc()).offset(limit - 1).limit(1)).first()
        if oldest is not None and (until is None or oldest + policy.window > until):
            until = oldest + policy.window
    return until


def begin_attempt(session: Session, *, username: str, address: str, now: datetime,
                  policy: LoginPolicy) -> LoginAttempt | datetime:
    """Count one more try before the password is checked; or return until when tries are refused.

    Counted first, so that tries made at once cannot slip past the limit together: the write lock
    on SQLite, an advisory lock on PostgreSQL (shared by every worker and host).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(LOGIN_LOCK)))
    until = refused_until(session, now=now, policy=policy, username=username, address=address)
    if until is not None:
        return until
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - KEEP_ATTEMPTS)
                    .execution_options(synchronize_session=False))
    attempt = LoginAttempt(at=now, username=username, address=address, outcome=PENDING)
    session.add(attempt)
    session.flush()
    return attempt


def end_attempt(session: Session, attempt_id: int, *, ok: bool) -> None:
    """Record whether the password was right."""
    session.execute(update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(outcome=OK if ok else FAILED))


def lift_login_limit(session: Session, username: str, *, now: datetime, policy: LoginPolicy) -> int:
    """Let a username log in again at once: its failures in the window stop counting; return how many."""
    result = session.execute(update(LoginAttempt).where(
        LoginAttempt.username == username, LoginAttempt.outcome != OK, LoginAttempt.lifted_at.is_(None),
        LoginAttempt.at > now - policy.window).values(lifted_at=now))
    return int(getattr(result, "rowcount", 0))


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

    @property
    def recording_link(self) -> str | None:
        """Return the message's URL when it is one of Twilio's recordings (the console links only that)."""
        return twilio_recording(self.recording_url)


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
    """Leave a call-back request for the agents (the number in full: they must call it).

    The message is kept only when its URL is one of Twilio's recordings (models.recordings);
    with any other, the request is kept without one."""
    recording_url = twilio_recording(recording_url)
    request = CallbackRequest(call_sid=call_sid, hotline=hotline, number=number, recording_url=recording_url,
                              recording_seconds=recording_seconds if recording_url else None,
                              context=context, created_at=now)
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
