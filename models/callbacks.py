"""Call-backs as work: the items agents call back, in due order, and the queue's answered waits.

An item (`models.agents.CallbackRequest`, table `callback_requests`) is one of three kinds:

- `missed`: a transfer the agents did not answer (no-answer, busy, failed, canceled, a failed
  queue, or the caller hanging up while it rang or while queued), from a number that can be
  called back (a Chinese number, `models.phones.normalise_phone`); made by the hotline itself;
- `requested`: the caller asked for a call-back (the flow's call-back offer);
- `queue`: the caller pressed 1 while waiting in the queue: a call-back that keeps their place.

One item per call at most: a caller whose missed transfer became an item and who then asks for
a call-back in the same call has one item, of the kind asked, keeping the earlier place.

Every item has a place in line (`queued_at`: when the caller was first put through or first
queued, or asked) and a due time: `callback_due_minutes` of the hotline's staffed time after it
(`due_after`: outside staffed hours the clock stands still, on the official calendar). Agents
work open items in due order (then by place, then by when they were made), record an outcome
(reached, no answer, wrong number, other) and a note (`record_outcome`); "no answer" keeps the
item open for another try, due again `callback_retry_minutes` of staffed time later, until
`callback_attempts` tries: then it is closed as unreachable. Every try is a row of
`callback_attempts`.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ForeignKey, Index, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.agents import CallbackRequest
from models.calendar import WorkCalendar
from models.calls import CallState
from models.hours import Hotline
from models.recordings import twilio_recording
from models.storage.db import Base, UTCDateTime

NOTE_WIDTH = 200  # an agent's note on a try, at most this many characters
MAX_DAYS = 400  # staffed time is looked for this many days ahead, at most


class CallbackKind(StrEnum):
    """Why an item is on the agents' list (labels: `label.callback_kind.<code>`)."""

    MISSED = "missed"  # 未接来电: a transfer nobody answered
    REQUESTED = "requested"  # 回电请求: the caller asked
    QUEUE = "queue"  # 排队回电: 1 pressed while waiting in the queue


class CallbackOutcome(StrEnum):
    """What came of calling back (labels: `label.callback_outcome.<code>`)."""

    REACHED = "reached"  # 已联系
    NO_ANSWER = "no_answer"  # 未接通: open for another try
    WRONG_NUMBER = "wrong_number"  # 号码错误
    OTHER = "other"  # 其他
    UNREACHABLE = "unreachable"  # 无法联系: no answer at every try (closes by itself)


# What an agent may record; UNREACHABLE is the hotline's own conclusion after the last try.
WORKED = (CallbackOutcome.REACHED, CallbackOutcome.NO_ANSWER, CallbackOutcome.WRONG_NUMBER, CallbackOutcome.OTHER)


@dataclass(frozen=True)
class CallbackPolicy:
    """config.yaml `agent`: when an item is due, how many tries it gets, when a try is made again."""

    due_minutes: int = 30  # callback_due_minutes: staffed minutes from the caller's place to due
    attempts: int = 3  # callback_attempts: tries before an item is closed as unreachable
    retry_minutes: int = 30  # callback_retry_minutes: staffed minutes from a try without answer to due again


class CallbackAttempt(Base):
    """One try at calling back: who, when, what came of it, the agent's note."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("callback_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    agent: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # a CallbackOutcome of WORKED
    note: Mapped[str] = mapped_column(String(NOTE_WIDTH), default="")


class QueueWait(Base):
    """How long a caller waited in a hotline's queue before an agent took the call (Twilio's QueueTime
    when the agent's <Dial><Queue> bridged it): what the estimated wait is worked out from."""

    __tablename__ = "queue_waits"
    __table_args__ = (Index("ix_queue_waits_hotline_at", "hotline", "answered_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    hotline: Mapped[str] = mapped_column(String(32))
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seconds: Mapped[int] = mapped_column(Integer)


KEEP_WAITS = timedelta(days=1)  # answered waits older than this are deleted (only the last hour counts)
ESTIMATE_WINDOW = timedelta(hours=1)


# -- due times in staffed time ------------------------------------------------------------------------
def due_after(hotline: Hotline, start: datetime, minutes: int, calendar: WorkCalendar, tz: ZoneInfo) -> datetime:
    """Return the moment `minutes` of the hotline's staffed time after `start` (aware, UTC).

    The clock runs only while agents work: from a moment outside staffed hours it starts with the
    next shift, and a due time that would fall in a break, an evening, a weekend or a holiday (the
    official calendar, 调休 make-up days included) runs on into the next shift. A hotline staffed
    always, or never (no hours at all), counts plain minutes.
    """
    need = timedelta(minutes=minutes)
    if hotline.always or need <= timedelta(0) or not any(hotline.hours.values()):
        return start.astimezone(UTC) + need
    cursor = start.astimezone(tz).replace(tzinfo=None)  # local wall time (no daylight saving in China)
    day = cursor.date()
    for _ in range(MAX_DAYS):
        for a, b in hotline.hours.get(calendar.day_type(day), ()):
            begin, end = max(datetime.combine(day, a), cursor), datetime.combine(day, b)
            if begin >= end:
                continue
            if end - begin >= need:
                return (begin + need).replace(tzinfo=tz).astimezone(UTC)
            need -= end - begin
        day += timedelta(days=1)
    return start.astimezone(UTC) + timedelta(minutes=minutes)  # no staffed time for a year: plain minutes


@dataclass(frozen=True)
class Due:
    """What a due time is counted with: the policy, the official calendar and the local time zone."""

    policy: CallbackPolicy
    calendar: WorkCalendar
    tz: ZoneInfo

    def first(self, hotline: Hotline, place: datetime) -> datetime:
        """Return when an item whose caller took their place at `place` is due."""
        return due_after(hotline, place, self.policy.due_minutes, self.calendar, self.tz)

    def again(self, hotline: Hotline, now: datetime) -> datetime:
        """Return when an item tried without answer at `now` is due again."""
        return due_after(hotline, now, self.policy.retry_minutes, self.calendar, self.tz)


# -- making items -----------------------------------------------------------------------------------
def item_of_call(session: Session, call_sid: str, *, lock: bool = False) -> CallbackRequest | None:
    """Return the call's item, if it has one (the oldest, should a call from before have two)."""
    query = select(CallbackRequest).where(CallbackRequest.call_sid == call_sid).order_by(CallbackRequest.id).limit(1)
    return session.scalars(query.with_for_update() if lock else query).first()


def missed_call(session: Session, *, call_sid: str, hotline: Hotline, number: str | None,
                context: Mapping[str, Any], queued_at: datetime, now: datetime, due: Due) -> CallbackRequest | None:
    """Make a missed transfer a call-back item, due in staffed time from when the caller was put
    through; nothing when the number cannot be called back or the call already has an item.

    The caller's own number (`number`: already checked as a Chinese number, E.164) is what the
    agents call; the call's webhooks run one at a time on its locked row, so two items never race.
    """
    if not number or item_of_call(session, call_sid) is not None:
        return None
    item = CallbackRequest(call_sid=call_sid, hotline=hotline.name, number=number, recording_url=None,
                           recording_seconds=None, context=dict(context), created_at=now,
                           kind=CallbackKind.MISSED, queued_at=queued_at, due_at=due.first(hotline, queued_at))
    session.add(item)
    return item


def ask_callback(session: Session, *, call_sid: str, hotline: Hotline, kind: CallbackKind, number: str,
                 recording_url: str | None, recording_seconds: int | None, context: Mapping[str, Any],
                 queued_at: datetime | None, now: datetime, due: Due) -> CallbackRequest:
    """Leave the caller's call-back request (kind requested, or queue) for the agents.

    The number in full (the agents must call it). Its place in line is the earliest of: the place
    the call's item already had (a missed transfer just before), `queued_at` (when the caller first
    queued), now. The message is kept only when its URL is one of Twilio's recordings
    (models.recordings); with any other, the request is kept without one.
    """
    recording_url = twilio_recording(recording_url)
    item = item_of_call(session, call_sid, lock=True)
    places = [p for p in (queued_at, item.queued_at if item else None) if p is not None]
    place = min(places) if places else now
    if item is None:
        item = CallbackRequest(call_sid=call_sid, hotline=hotline.name, created_at=now)
        session.add(item)
    item.kind = kind
    item.number = number
    item.recording_url = recording_url
    item.recording_seconds = recording_seconds if recording_url else None
    item.context = dict(context)
    item.queued_at = place
    if item.done_at is None:
        item.due_at = due.first(hotline, place)
    return item


# -- working items ----------------------------------------------------------------------------------
class ItemClosed(Exception):
    """The item was closed already (by another agent, a moment ago): nothing recorded."""


class NoSuchItem(Exception):
    """No call-back item by that id."""


@dataclass(frozen=True)
class Worked:
    """What recording an outcome did: the item, its try, whether it closed, and how many tries it had."""

    item: CallbackRequest
    attempt: CallbackAttempt
    closed: bool
    tries: int


def tries(session: Session, request_ids: Collection[int]) -> dict[int, list[CallbackAttempt]]:
    """Return each item's tries, oldest first."""
    out: dict[int, list[CallbackAttempt]] = {i: [] for i in request_ids}
    if out:
        query = select(CallbackAttempt).where(CallbackAttempt.request_id.in_(list(out))).order_by(CallbackAttempt.id)
        for attempt in session.scalars(query):
            out[attempt.request_id].append(attempt)
    return out


def record_outcome(session: Session, request_id: int, *, outcome: CallbackOutcome, note: str, agent: str,
                   now: datetime, hotline: Hotline, due: Due) -> Worked:
    """Record one try at calling back: reached, wrong number or other close the item; no answer
    keeps it open, due again in staffed time, until the last try closes it as unreachable.

    The item's row is locked first (SQLite: the write lock of the unit of work), so two agents
    recording at once cannot both close it or count the same try twice.
    """
    if outcome not in WORKED:
        raise ValueError(f"an agent records one of {', '.join(WORKED)}, not {outcome!r}")
    item = session.scalars(select(CallbackRequest).where(CallbackRequest.id == request_id).with_for_update()).first()
    if item is None:
        raise NoSuchItem(request_id)
    if item.done_at is not None:
        raise ItemClosed(request_id)
    unanswered = session.scalar(select(func.count()).select_from(CallbackAttempt).where(
        CallbackAttempt.request_id == item.id, CallbackAttempt.outcome == CallbackOutcome.NO_ANSWER)) or 0
    count = int(unanswered) + (outcome == CallbackOutcome.NO_ANSWER)  # this try's included
    attempt = CallbackAttempt(request_id=item.id, at=now, agent=agent[:64], outcome=outcome,
                              note=" ".join(note.split())[:NOTE_WIDTH])
    session.add(attempt)
    final = outcome
    if outcome == CallbackOutcome.NO_ANSWER:
        if count < due.policy.attempts:
            item.due_at = due.again(hotline, now)
            item.outcome = outcome
            session.flush()
            return Worked(item, attempt, False, count)
        final = CallbackOutcome.UNREACHABLE
    item.outcome = final
    item.done_at, item.done_by = now, agent[:64]
    session.flush()
    return Worked(item, attempt, True, count)


def in_due_order(query: Any) -> Any:
    """Order items as agents work them: due first, then by the caller's place, then by when made."""
    r = CallbackRequest
    return query.order_by(func.coalesce(r.due_at, r.created_at), func.coalesce(r.queued_at, r.created_at),
                          r.created_at, r.id)


def open_items(session: Session, *, kind: str | None = None, limit: int = 200) -> list[CallbackRequest]:
    """Return the open items in due order."""
    query = select(CallbackRequest).where(CallbackRequest.done_at.is_(None))
    if kind:
        query = query.where(CallbackRequest.kind == kind)
    return list(session.scalars(in_due_order(query).limit(limit)))


def closed_items(session: Session, *, kind: str | None = None, limit: int = 100) -> list[CallbackRequest]:
    """Return the items closed most recently first."""
    query = select(CallbackRequest).where(CallbackRequest.done_at.is_not(None))
    if kind:
        query = query.where(CallbackRequest.kind == kind)
    return list(session.scalars(query.order_by(CallbackRequest.done_at.desc(), CallbackRequest.id.desc())
                                .limit(limit)))


def overdue(item: CallbackRequest, now: datetime) -> bool:
    """Tell whether an open item is past its due time."""
    due = item.due_at or item.created_at
    return item.done_at is None and due < now


# -- the queue --------------------------------------------------------------------------------------
def answered_wait(session: Session, *, call_sid: str, hotline: str, seconds: int | None, now: datetime) -> None:
    """Keep how long a caller waited before an agent took the call (once per call); forget waits
    older than a day (only the last hour is read)."""
    if seconds is None:
        return
    if session.scalar(select(QueueWait.id).where(QueueWait.call_sid == call_sid).limit(1)) is None:
        session.add(QueueWait(call_sid=call_sid, hotline=hotline, answered_at=now, seconds=seconds))
    session.execute(delete(QueueWait).where(QueueWait.answered_at < now - KEEP_WAITS)
                    .execution_options(synchronize_session=False))


def typical_wait(session: Session, hotline: str, now: datetime) -> float | None:
    """Return the mean wait, in seconds, of the hotline's callers taken by an agent in the last hour;
    None when nobody was."""
    mean = session.scalar(select(func.avg(QueueWait.seconds)).where(
        QueueWait.hotline == hotline, QueueWait.answered_at >= now - ESTIMATE_WINDOW, QueueWait.answered_at <= now))
    return None if mean is None else float(mean)


def minutes_left(typical: float | None, waited: int | None) -> int | None:
    """Return the estimated wait still to come, in whole minutes (at least 1): the typical wait of
    the last hour less what the caller has waited already; None when nothing is known, or the
    caller has already waited longer than callers usually do."""
    if typical is None:
        return None
    left = typical - (waited or 0)
    if left <= 0:
        return None
    return max(1, math.ceil(left / 60))


@dataclass(frozen=True)
class Waiting:
    """A caller in a hotline's queue, as the console shows them."""

    call_sid: str
    hotline: str
    caller: str  # masked
    queued_at: datetime
    handoff: Mapping[str, Any]

    def waited(self, now: datetime) -> int:
        """Return how long the caller has waited, in whole seconds."""
        return max(0, int((now - self.queued_at).total_seconds()))


def waiting_calls(session: Session, *, transfer_states: Iterable[str], now: datetime,
                  since: timedelta = timedelta(days=1)) -> list[Waiting]:
    """Return the callers in a queue now, the longest waiting first: calls not ended, in a transfer
    state, put in a queue (`data.queue`) with no QueueResult yet (`data.queue_result`), not taken by
    an agent yet (`data.queue_taken_at`: the QueueResult bridged comes only when the talk is over)."""
    t = CallState
    states = list(transfer_states)
    query = (select(t.call_sid, t.from_masked, t.data, t.handoff)
             .where(t.started_at >= now - since, t.ended_at.is_(None), t.state.in_(states)))
    out: list[Waiting] = []
    for sid, caller, data, handoff in session.execute(query):
        data = data or {}
        if not data.get("queue") or data.get("queue_result") or data.get("queue_taken_at") or not data.get("queued_at"):
            continue
        try:
            queued_at = datetime.fromisoformat(str(data["queued_at"]))
        except ValueError:
            continue
        out.append(Waiting(sid, str(data.get("hotline") or (handoff or {}).get("hotline") or ""), caller or "",
                           queued_at, handoff or {}))
    out.sort(key=lambda w: (w.queued_at, w.call_sid))
    return out
