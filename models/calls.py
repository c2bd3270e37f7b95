"""Call state (one row per CallSid) and the record of every webhook a call made.

The statements every webhook runs on these two tables are `models.storage.callrows.CallRows`.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, delete, or_, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.identity import keyed_hash
from models.storage.db import Base, UTCDateTime
from models.vocabulary import CallEnd


class CallState(Base):
    """Where a call stands in the flow, so any worker on any host can answer its next webhook."""

    __tablename__ = "calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_masked: Mapped[str] = mapped_column(String(32), default="")
    # Keyed hash of the caller's number (`caller_key`): repeat callers are counted by it, never shown.
    from_key: Mapped[str | None] = mapped_column(String(64))
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


Index("ix_calls_from_key", CallState.from_key, CallState.started_at)


def caller_key(key: bytes, number: str | None) -> str | None:
    """Return the keyed hash a caller's number is compared by (reports' repeat callers), or None
    for a call without one. Twilio sends From in E.164; spaces and case are ignored."""
    plain = "".join((number or "").split()).lower()
    return keyed_hash(key, "caller", plain) if plain else None


class CallEvent(Base):
    """One webhook of a call: its parameters (secrets removed), the TwiML answered, timing."""

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_turn", "call_sid", "turn", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid"))
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # incoming, step, dial, whisper, status
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
    deleted = session.execute(delete(CallState).where(CallState.started_at < before))
    return cast("CursorResult[Any]", deleted).rowcount  # a DELETE's result is a CursorResult


def end_reason(handoff: Mapping[str, Any] | None, completed: Collection[str]) -> CallEnd:
    """Return how a call ended: put through to an agent, a service done, or neither."""
    if handoff:
        return CallEnd.TRANSFERRED
    return CallEnd.COMPLETED if completed else CallEnd.HUNG_UP


def sweep_secrets(session: Session, *, secrets: Collection[str], idle_before: datetime,
                  started_after: datetime | None = None) -> int:
    """Remove the secret fields from the data of every call not updated since `idle_before`.

    For the calls whose status callback never came: a call without an end is closed as ended
    at its last webhook (`updated_at`), with the reason its record gives (`end_reason`) and no
    duration. `secrets` are the names of the fields to remove (the call flow's SECRET fields);
    `started_after` bounds the look to recent calls (the frequent sweep; `calls purge` looks at
    all). Rows another transaction holds are skipped (PostgreSQL: SKIP LOCKED): their webhook is
    saving them, so they are not idle. Returns how many calls changed.
    """
    idle = [CallState.updated_at < idle_before,
            or_(CallState.ended_at.is_(None), CallState.ended_at < CallState.updated_at)]
    if started_after is not None:
        idle.append(CallState.started_at > started_after)
    changed = 0
    for call in session.scalars(select(CallState).where(*idle).with_for_update(skip_locked=True)):
        data = call.data or {}
        kept = {name: value for name, value in data.items() if name not in secrets}
        if kept == data and call.ended_at is not None:
            continue
        call.data = kept
        if call.ended_at is None:
            call.ended_at = call.updated_at
            call.end_reason = end_reason(call.handoff, kept.get("completed") or ())
        changed += 1
    session.flush()
    return changed


def active_calls_outside(session: Session, states: Collection[str], *, active_since: datetime) -> list[CallState]:
    """Return the calls still going — no end, a webhook since `active_since` — whose saved state is
    none of `states` (a release's flow), the oldest first. A call not yet answered once (no state) is
    not one of them."""
    return list(session.scalars(
        select(CallState)
        .where(CallState.ended_at.is_(None), CallState.updated_at >= active_since, CallState.state != "",
               CallState.state.notin_(list(states)))
        .order_by(CallState.started_at, CallState.call_sid)))
