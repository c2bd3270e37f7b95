"""The call centre's side: agent accounts and their logins, call-back requests, call ratings, the audit trail."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    delete,
    event,
    false,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from models.passwords import PasswordProblem
from models.recordings import twilio_recording
from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Statement, Unit, database_of, prepare
from models.vocabulary import AuditAction, Rating

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
    # Set with a temporary password an admin handed over: the account must choose its own at its
    # next login before anything else (so that nobody but its owner knows the password it works with).
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

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
    """A call-back item: a caller who asked to be called back, or whose transfer nobody answered
    (what comes of each kind, and the work on it: models.callbacks)."""

    __tablename__ = "callback_requests"
    __table_args__ = (Index("ix_callback_requests_open_due", "done_at", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # missed, requested or queue (models.callbacks.CallbackKind); when the caller took their place
    # in line (first put through or queued, or asked), and when the agents should have called back.
    kind: Mapped[str] = mapped_column(String(16), default="requested", server_default=text("'requested'"))
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))  # the last try's (models.callbacks.CallbackOutcome)
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
    """Something someone did in the console (or an operator at the CLI) that must be accountable.

    Append-only: the app never changes or deletes a row. The ORM refuses it (`_refuse_change`,
    below), no code issues an UPDATE or DELETE on the table (tests/test_layout.py reads the source),
    and the database itself refuses it with triggers (`APPEND_ONLY`, migration 0007).
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_agent_at", "agent", "at"),
                      Index("ix_audit_events_action_at", "action", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    agent: Mapped[str] = mapped_column(String(64))  # the username; `cli:<os user>` for a command
    action: Mapped[str] = mapped_column(String(32))  # an AuditAction
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("cardholders.id"), index=True)
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))  # the client's
    detail: Mapped[str] = mapped_column(String(256), default="")  # masked: never a full ID, PIN or mobile


class AuditTrailIsAppendOnly(RuntimeError):
    """An attempt to change or delete a row of the audit trail."""


def _refuse_change(_mapper: Any, _connection: Any, target: AuditEvent) -> None:
    raise AuditTrailIsAppendOnly(f"audit event {target.id} cannot be changed or deleted: the trail is append-only")


def _refuse_bulk_change(state: ORMExecuteState) -> None:
    """Refuse an UPDATE or DELETE statement on the table run through a session (it skips the mapper events)."""
    table = getattr(state.statement, "table", None)  # the ORM's statements name it annotated: compare names
    if (state.is_update or state.is_delete) and getattr(table, "name", None) == AuditEvent.__tablename__:
        raise AuditTrailIsAppendOnly("the audit trail is append-only: no UPDATE or DELETE of audit_events")


event.listen(AuditEvent, "before_update", _refuse_change)
event.listen(AuditEvent, "before_delete", _refuse_change)
event.listen(Session, "do_orm_execute", _refuse_bulk_change)

# The database's own refusal, for whatever reaches it without the ORM. Created with the table
# (create_schema) and by migration 0007 (which keeps its own copy, as migrations must).
APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP; END $$",
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
    ],
}


@event.listens_for(AuditEvent.__table__, "after_create")
def _append_only_triggers(_table: Any, connection: Connection, **_kw: Any) -> None:
    for statement in APPEND_ONLY.get(connection.dialect.name, []):
        connection.execute(text(statement))

# A run of digits long enough to be a phone number, an ID number or a card's (a final X: an ID).
_NUMBER = re.compile(r"\d{7,}[Xx]?")


def scrub(detail: str) -> str:
    """Return an audit detail with every run of 7 digits or more masked but its last four, at most
    256 characters. A safety net: callers mask what they write (mask_id, mask_phone) and never write
    a PIN; shorter numbers (a count, a staff number in a username) stay."""
    return _NUMBER.sub(lambda m: "*" * (len(m.group(0)) - 4) + m.group(0)[-4:], detail)[:256]


def record_audit(session: Session, action: AuditAction, *, agent: str, address: str, now: datetime,
                 holder_id: int | None = None, card_id: int | None = None, call_sid: str | None = None,
                 detail: str = "") -> AuditEvent:
    """Add a row to the audit trail (committed with the caller's unit of work); the detail is scrubbed."""
    row = AuditEvent(at=now, agent=agent[:64], action=str(action), holder_id=holder_id, card_id=card_id,
                     call_sid=call_sid[:64] if call_sid else None, address=address[:64], detail=scrub(detail))
    session.add(row)
    return row


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


def rate_call(session: Unit, *, call_sid: str, hotline: str, key: str, services: list[str], agent: str | None,
              now: datetime) -> None:
    """Keep the caller's rating of a call: one per call, a second one replaces the first (its rating,
    services, agent and time; the hotline stays). One upsert on the call's SID, a compiled Core
    statement (`models.storage.fastpath`, which flushes the session first)."""
    _rating_statement(*database_of(session)).execute(session, {
        "call_sid": call_sid, "hotline": hotline, "rating": RATINGS[key], "services": services, "agent": agent,
        "at": now})


@functools.lru_cache(maxsize=16)
def _rating_statement(dialect: Dialect, fast: bool) -> Statement:
    insert: Any = {"sqlite": sqlite_insert, "postgresql": pg_insert}[dialect.name]
    ratings: Table = Base.metadata.tables[CallRating.__tablename__]
    stmt = insert(ratings)
    again = {k: stmt.excluded[k] for k in ("rating", "services", "agent", "at")}
    return prepare(stmt.on_conflict_do_update(index_elements=[ratings.c.call_sid], set_=again), dialect, fast=fast,
                   keys=("call_sid", "hotline", "rating", "services", "agent", "at"))


@dataclass(frozen=True)
class AuditFilter:
    """Which rows of the audit trail to read: a time range (from `since`, before `until`), one agent, one action."""

    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None
    action: str | None = None

    def where(self) -> list[Any]:
        """Return the conditions (the indexes at, (agent, at) and (action, at) serve them)."""
        conditions: list[Any] = []
        if self.since is not None:
            conditions.append(AuditEvent.at >= self.since)
        if self.until is not None:
            conditions.append(AuditEvent.at < self.until)
        if self.agent:
            conditions.append(AuditEvent.agent == self.agent)
        if self.action:
            conditions.append(AuditEvent.action == self.action)
        return conditions


class AuditRow(NamedTuple):
    """A row of the audit trail with the ID number of its holder and the number of its card, for masking."""

    event: AuditEvent
    id_number: str | None
    card_number: str | None


def audit_rows(session: Session, where: AuditFilter, *, newest_first: bool = True, offset: int = 0,
               limit: int | None = None) -> Iterator[AuditRow]:
    """Yield the rows of the trail that match, newest first (the page) or oldest first (the export),
    read a batch at a time."""
    from models.cards import Card, Cardholder  # cards know nothing of agents: imported where needed

    order = (AuditEvent.at.desc(), AuditEvent.id.desc()) if newest_first else (AuditEvent.at, AuditEvent.id)
    statement = (select(AuditEvent, Cardholder.id_number, Card.card_number)
                 .outerjoin(Cardholder, Cardholder.id == AuditEvent.holder_id)
                 .outerjoin(Card, Card.id == AuditEvent.card_id)
                 .where(*where.where()).order_by(*order).offset(offset).limit(limit))
    for row, id_number, card_number in session.execute(statement.execution_options(yield_per=500)):
        yield AuditRow(row, id_number, card_number)


def audit_count(session: Session, where: AuditFilter) -> int:
    """Return how many rows of the trail match."""
    return session.scalar(select(func.count()).select_from(AuditEvent).where(*where.where())) or 0


# --- accounts: made, disabled, enabled, passwords set and roles changed, by the console and the CLI --

ROLE_NAMES = {"agent": "坐席", "admin": "管理员"}  # for the audit trail's details
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}")  # 3-64 characters, no spaces


class AccountProblem(StrEnum):
    """Why an account change is refused (besides a PasswordProblem)."""

    BAD_USERNAME = "bad_username"  # not 3-64 letters, digits, dots, hyphens, underscores
    TAKEN = "taken"  # another account has that username (in any case)
    BAD_NAME = "bad_name"  # the display name is empty after trimming, or over 64 characters
    BAD_ROLE = "bad_role"
    LAST_ADMIN = "last_admin"  # the change would leave no active admin


class AccountRefused(Exception):
    """An account change the rules refuse; `problem` says why."""

    def __init__(self, problem: AccountProblem | PasswordProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Actor:
    """Who changes an account, for the audit trail: a username (`cli:<os user>` at the CLI) and an address."""

    who: str
    address: str = ""


def account_named(session: Session, username: str) -> AgentAccount | None:
    """Return the account of that username (exact), or None."""
    return session.scalars(select(AgentAccount).where(AgentAccount.username == username)).first()


def create_account(session: Session, *, username: str, display_name: str, role: str, password_hash: str,
                   temporary: bool, by: Actor, now: datetime) -> AgentAccount:
    """Make an account (audited). `temporary`: its owner must choose a password at the first login."""
    if not USERNAME.fullmatch(username):
        raise AccountRefused(AccountProblem.BAD_USERNAME)
    name = _display_name(display_name or username)
    if role not in ROLES:
        raise AccountRefused(AccountProblem.BAD_ROLE)
    if session.scalars(select(AgentAccount.id).where(func.lower(AgentAccount.username) == username.lower())).first():
        raise AccountRefused(AccountProblem.TAKEN)
    account = AgentAccount(username=username, display_name=name, password_hash=password_hash, role=role,
                           active=True, created_at=now, session_epoch=0, must_change_password=temporary)
    session.add(account)
    session.flush()
    _audit(session, AuditAction.ACCOUNT_CREATE, by, now, f"{username}（{name}，{ROLE_NAMES[role]}）")
    return account


def set_password(session: Session, account: AgentAccount, *, password_hash: str, temporary: bool, by: Actor,
                 now: datetime, detail: str = "") -> None:
    """Give the account a new password (audited): every session of it ends. `temporary`: an admin's
    reset, to be replaced by the owner at the next login; otherwise the owner's own choice."""
    account.password_hash = password_hash
    account.must_change_password = temporary
    session.flush()
    end_sessions(session, account.id)
    _audit(session, AuditAction.ACCOUNT_RESET, by, now, detail or account.username)


def set_active(session: Session, account: AgentAccount, active: bool, *, by: Actor, now: datetime) -> bool:
    """Disable an account (it can no longer log in, its sessions end) or enable it again (audited);
    return whether anything changed. The last active admin cannot be disabled."""
    if account.active == active:
        return False
    if not active:
        _keep_an_admin(session, account)
        end_sessions(session, account.id)
    account.active = active
    _audit(session, AuditAction.ACCOUNT_ENABLE if active else AuditAction.ACCOUNT_DISABLE, by, now,
           account.username)
    return True


def set_role(session: Session, account: AgentAccount, role: str, *, by: Actor, now: datetime) -> bool:
    """Make the account an agent or an admin (audited); return whether it changed. The last active
    admin cannot become an agent. Takes effect at the account's next page (the role is read each request)."""
    if role not in ROLES:
        raise AccountRefused(AccountProblem.BAD_ROLE)
    if account.role == role:
        return False
    if role != "admin":
        _keep_an_admin(session, account)
    before, account.role = account.role, role
    _audit(session, AuditAction.ACCOUNT_ROLE, by, now,
           f"{account.username}：{ROLE_NAMES[before]} → {ROLE_NAMES[role]}")
    return True


def set_display_name(session: Session, account: AgentAccount, display_name: str) -> None:
    """Change the name the console shows for the account."""
    account.display_name = _display_name(display_name)


def _display_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > 64:
        raise AccountRefused(AccountProblem.BAD_NAME)
    return name


def _keep_an_admin(session: Session, account: AgentAccount) -> None:
    """Refuse a change that would leave no active admin: the active admins are locked first (on
    PostgreSQL; SQLite's unit of work holds the write lock), so two admins demoting each other at
    once cannot both succeed."""
    admins = session.scalars(select(AgentAccount.id).where(AgentAccount.role == "admin", AgentAccount.active)
                             .order_by(AgentAccount.id).with_for_update()).all()
    if account.role == "admin" and account.active and set(admins) <= {account.id}:
        raise AccountRefused(AccountProblem.LAST_ADMIN)


def _audit(session: Session, action: AuditAction, by: Actor, now: datetime, detail: str) -> None:
    record_audit(session, action, agent=by.who, address=by.address, now=now, detail=detail)
