"""The call report: one set of definitions, read by `report calls`, the console and the metrics.

Every figure is counted from what the hotline records anyway: the call's row (`calls`: its state
when it ended, the services it chose and completed, the handoff given to the agent, how it ended)
and its recorded webhooks (`call_events`: the agent leg's result, the moment the agent's whisper
was fetched, the path through the flow). One call is one row, so a retried webhook or status
callback, which records nothing new, never counts twice.

The definitions (README "Reports"):

- `calls`: calls whose first webhook arrived in the period (local days of config `timezone`,
  both ends included), to the hotline asked for (the hotline a call was served as).
- `transferred`: calls that reached an agent leg (a `<Dial>` or a queue), whatever its outcome.
- `self_service`: calls that completed at least one service and never reached an agent leg.
- `abandoned`: calls that ended without completing a service and without an agent leg, counted
  in `abandoned_at` by the state the caller was in. A call has ended with its status callback, or
  (when that never came) `unended_after` after its last webhook; calls still going are in `calls`
  only, until they are one of the three.
- `containment`: self_service / calls, three decimals.
- A service is started when the caller chose it and completed when its last step succeeded
  (`CallData.services` / `CallData.completed`, kept by the call flow's actions).
- `agent_legs`: the leg's `DialCallStatus`: completed or answered is `answered`, busy `busy`,
  failed `failed`, no-answer and canceled `no_answer`; a queue's `QueueResult`: bridged is
  `answered`, anything else `no_answer`; a leg with no result (the caller hung up
  while it rang, or while talking: Twilio then posts no action) is `answered` when the agent's
  whisper was fetched, else `no_answer`. `answered_within_15s`: the whisper fetched within 15 s of
  the moment the caller was put through.
- `repeat_callers_7d`: calls of the period from a number (compared by its keyed hash) that also
  called, any of the hotlines, in the 7 days before that call.
- `callbacks`: call-back requests callers made in the period, in the flow or from the queue (the
  items the hotline made of missed transfers are not counted); `done` those since worked by an agent.
- `ratings`: the key the caller pressed (1 satisfied, 2 basically, 3 dissatisfied) on calls of the period.
- `duration_s`: nearest-rank p50 and p90 of the ended calls' durations (Twilio's `CallDuration`;
  without a status callback, first to last webhook), whole seconds.
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.agents import CallbackRequest, CallRating
from models.calls import CallEvent, CallState
from models.vocabulary import Rating, Service, TransferReason

ANSWER_WITHIN = timedelta(seconds=15)  # GB/T 33358-2016: answer within 15 s
REPEAT_WINDOW = timedelta(days=7)
DEFAULT_UNENDED_AFTER = timedelta(minutes=30)
LEG_OUTCOMES = ("answered", "no_answer", "busy", "failed")
DIAL_OUTCOME = {"completed": "answered", "answered": "answered", "busy": "busy", "failed": "failed",
                "no-answer": "no_answer", "canceled": "no_answer"}
QUEUE_BRIDGED = ("bridged", "redirected-from-bridged")  # a queued call's QueueResult when an agent took it
RATING_KEYS = {Rating.SATISFIED: "1", Rating.BASICALLY_SATISFIED: "2", Rating.DISSATISFIED: "3"}
SELF_SERVICE, TRANSFERRED, ABANDONED, ONGOING = "self_service", "transferred", "abandoned", "ongoing"


@dataclass(frozen=True)
class Period:
    """Local days, both ends included, in the hotline's time zone."""

    start: date
    end: date
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"the period ends ({self.end}) before it starts ({self.start})")

    @property
    def since(self) -> datetime:
        """The period's first moment (aware, local)."""
        return datetime.combine(self.start, time.min, self.tz)

    @property
    def until(self) -> datetime:
        """The moment after the period (aware, local): midnight after its last day."""
        return datetime.combine(self.end + timedelta(days=1), time.min, self.tz)

    def days(self) -> list[date]:
        """Every day of the period."""
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


@dataclass
class CallFacts:
    """What the report knows of one call."""

    call_sid: str
    hotline: str
    started_at: datetime
    state: str  # the state the call is in, or ended in
    ended: bool
    services: list[str]
    completed: list[str]
    transferred: bool
    reason: str | None  # why the caller was put through
    put_through_at: datetime | None  # when (the handoff's moment; the last one, if put through twice)
    duration_s: int | None
    from_key: str | None
    leg: str | None = None  # the agent leg's outcome (LEG_OUTCOMES), once known
    answered_within_15s: bool = False
    rating: str | None = None
    repeat: bool = False

    @property
    def outcome(self) -> str:
        """self_service, transferred, abandoned, or ongoing (not ended, nothing done yet)."""
        if self.transferred:
            return TRANSFERRED
        if self.completed:
            return SELF_SERVICE
        return ABANDONED if self.ended else ONGOING


@dataclass
class CallReport:
    """The report of a period: the figures, and the calls they were counted from."""

    period: Period
    hotline: str | None
    calls: list[CallFacts]
    callbacks: dict[str, int] = field(default_factory=lambda: {"requested": 0, "done": 0})

    def figures(self) -> dict[str, Any]:
        """Return the report as `report calls --format json` prints it (key order included)."""
        calls = self.calls
        outcomes = Counter(c.outcome for c in calls)
        services = {str(s): {"started": 0, "completed": 0} for s in Service}
        for c in calls:
            for s in set(c.services):
                services.setdefault(s, {"started": 0, "completed": 0})["started"] += 1
            for s in set(c.completed):
                services.setdefault(s, {"started": 0, "completed": 0})["completed"] += 1
        reasons = {str(r): 0 for r in TransferReason}
        for c in calls:
            if c.transferred:
                reason = c.reason or TransferReason.CALLER_REQUEST
                reasons[reason] = reasons.get(reason, 0) + 1
        abandoned_at = Counter(c.state for c in calls if c.outcome == ABANDONED)
        legs = {k: 0 for k in LEG_OUTCOMES} | {"answered_within_15s": 0}
        for c in calls:
            if c.leg is not None:
                legs[c.leg] += 1
            legs["answered_within_15s"] += c.answered_within_15s
        ratings = {key: 0 for key in RATING_KEYS.values()}
        for c in calls:
            if c.rating in RATING_KEYS:
                ratings[RATING_KEYS[Rating(c.rating)]] += 1
        durations = sorted(c.duration_s for c in calls if c.ended and c.duration_s is not None)
        return {
            "from": self.period.start.isoformat(), "to": self.period.end.isoformat(), "hotline": self.hotline,
            "calls": len(calls), "self_service": outcomes[SELF_SERVICE], "transferred": outcomes[TRANSFERRED],
            "abandoned": outcomes[ABANDONED], "containment": containment(outcomes[SELF_SERVICE], len(calls)),
            "services": services,
            "transfer_reasons": reasons,
            "abandoned_at": dict(sorted(abandoned_at.items(), key=lambda kv: (-kv[1], kv[0]))),
            "agent_legs": legs,
            "callbacks": dict(self.callbacks),
            "ratings": ratings,
            "repeat_callers_7d": sum(c.repeat for c in calls),
            "duration_s": {"p50": percentile(durations, 50), "p90": percentile(durations, 90)},
        }

    def per_hour(self) -> list[int]:
        """Calls by the local hour of day they started (24 counts, the period's days together)."""
        hours = [0] * 24
        for c in self.calls:
            hours[c.started_at.astimezone(self.period.tz).hour] += 1
        return hours

    def per_day(self) -> list[tuple[date, int, int]]:
        """Each day of the period: (day, calls, self-service calls)."""
        calls: Counter[date] = Counter()
        contained: Counter[date] = Counter()
        for c in self.calls:
            day = c.started_at.astimezone(self.period.tz).date()
            calls[day] += 1
            contained[day] += c.outcome == SELF_SERVICE
        return [(day, calls[day], contained[day]) for day in self.period.days()]


def containment(self_service: int, calls: int) -> float:
    """Return the share of calls that finished on their own, three decimals (0.0 with no calls)."""
    return round(self_service / calls, 3) if calls else 0.0


def percentile(values: list[int], p: int) -> int:
    """Return the nearest-rank percentile of sorted values (0 with none)."""
    if not values:
        return 0
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def call_report(session: Session, period: Period, *, hotline: str | None, now: datetime,
                names: Mapping[str, str], default: str,
                unended_after: timedelta = DEFAULT_UNENDED_AFTER) -> CallReport:
    """Count the calls of a period, to one hotline (by its name) or all.

    `names` maps each dialled number (To) to its hotline's name and `default` is the name a call
    to any other number is served as; a call's own record (`data.hotline`) wins when it has one.
    """
    calls = {c.call_sid: c for c in _calls(session, period, hotline, now, names, default, unended_after)}
    if calls:
        _legs(session, period, calls)
        _repeats(session, period, calls.values())
        for sid, rating in session.execute(
                select(CallRating.call_sid, CallRating.rating).where(CallRating.call_sid.in_(list(calls)))):
            calls[sid].rating = rating
    requested = done = 0
    query = select(CallbackRequest.hotline, CallbackRequest.done_at).where(
        CallbackRequest.created_at >= period.since, CallbackRequest.created_at < period.until,
        CallbackRequest.kind != "missed")  # the callers' own requests (in the call flow, or from the queue)
    for line, done_at in session.execute(query):
        if hotline is None or line == hotline:
            requested += 1
            done += done_at is not None
    return CallReport(period, hotline, list(calls.values()), {"requested": requested, "done": done})


def _calls(session: Session, period: Period, hotline: str | None, now: datetime, names: Mapping[str, str],
           default: str, unended_after: timedelta) -> Iterator[CallFacts]:
    t = CallState
    query = (select(t.call_sid, t.to_number, t.state, t.data, t.started_at, t.updated_at, t.ended_at,
                    t.duration_s, t.handoff, t.from_key)
             .where(t.started_at >= period.since, t.started_at < period.until).order_by(t.started_at))
    stale = now - unended_after
    for sid, to, state, data, started, updated, ended_at, duration, handoff, from_key in session.execute(query):
        data = data or {}
        line = data.get("hotline") or names.get((to or "").replace(" ", ""), default)
        if hotline is not None and line != hotline:
            continue
        ended = ended_at is not None or updated < stale
        if duration is None and ended:
            duration = round((updated - started).total_seconds())
        yield CallFacts(
            call_sid=sid, hotline=line, started_at=started, state=state, ended=ended,
            services=list(data.get("services") or ()), completed=list(data.get("completed") or ()),
            transferred=handoff is not None, reason=(handoff or {}).get("reason"),
            put_through_at=_moment((handoff or {}).get("at")), duration_s=duration,
            from_key=from_key,
        )


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _legs(session: Session, period: Period, calls: Mapping[str, CallFacts]) -> None:
    """Read each transferred call's agent leg: its result, and whether the agent answered in 15 s."""
    transferred = {sid for sid, c in calls.items() if c.transferred}
    if not transferred:
        return
    e = CallEvent
    results: dict[str, str] = {}
    whispers: dict[str, list[datetime]] = {}
    query = (select(e.call_sid, e.kind, e.at, e.params)
             .join(CallState, CallState.call_sid == e.call_sid)
             .where(CallState.started_at >= period.since, CallState.started_at < period.until,
                    CallState.handoff.is_not(None), e.kind.in_(("dial", "whisper", "queue_result")))
             .order_by(e.id))
    for sid, kind, at, params in session.execute(query):
        if sid not in transferred:
            continue
        if kind == "dial":
            results[sid] = (params or {}).get("DialCallStatus", "")
        elif kind == "queue_result":  # a queue's wait: an agent took the caller, or nobody did
            results[sid] = "completed" if (params or {}).get("QueueResult") in QUEUE_BRIDGED else "no-answer"
        else:
            whispers.setdefault(sid, []).append(at)
    for sid in transferred:
        call = calls[sid]
        since = call.put_through_at
        answers = [w for w in whispers.get(sid, ()) if since is None or w >= since]
        status = results.get(sid)
        if status is not None:
            call.leg = DIAL_OUTCOME.get(status, "failed")
        elif answers:
            call.leg = "answered"
        elif call.ended:
            call.leg = "no_answer"
        call.answered_within_15s = bool(since and call.leg == "answered" and answers
                                        and min(answers) - since <= ANSWER_WITHIN)


def _repeats(session: Session, period: Period, calls: Iterable[CallFacts]) -> None:
    """Mark the calls from a number that also called in the 7 days before."""
    by_key: dict[str, list[CallFacts]] = {}
    for c in calls:
        if c.from_key:
            by_key.setdefault(c.from_key, []).append(c)
    if not by_key:
        return
    earlier: dict[str, list[datetime]] = {}
    keys = list(by_key)
    for i in range(0, len(keys), 500):  # bounded IN lists
        query = select(CallState.from_key, CallState.started_at).where(
            CallState.from_key.in_(keys[i:i + 500]), CallState.started_at >= period.since - REPEAT_WINDOW,
            CallState.started_at < period.until)
        for key, started in session.execute(query):
            earlier.setdefault(str(key), []).append(started)
    for key, group in by_key.items():
        moments = earlier.get(key, [])
        for c in group:
            c.repeat = any(c.started_at - REPEAT_WINDOW <= m < c.started_at for m in moments)


def flow_traffic(session: Session, report: CallReport) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """Return, for the report's calls, how many calls took each transition of the flow (a call
    taking one twice counts once) and how many ended in each state."""
    sids = {c.call_sid for c in report.calls}
    taken: dict[str, set[tuple[str, str]]] = {}
    e = CallEvent
    query = (select(e.call_sid, e.path).join(CallState, CallState.call_sid == e.call_sid)
             .where(CallState.started_at >= report.period.since, CallState.started_at < report.period.until))
    for sid, path in session.execute(query):
        if sid in sids and path:
            taken.setdefault(sid, set()).update(zip(path, path[1:], strict=False))
    transitions: Counter[tuple[str, str]] = Counter()
    for edges in taken.values():
        transitions.update(edges)
    ended = Counter(c.state for c in report.calls if c.ended)
    return transitions, ended


def rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Flatten the figures to (dotted name, value) rows: the table and CSV forms."""
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out.append((prefix, "" if value is None else value))

    walk("", figures)
    return out


def as_csv(figures: Mapping[str, Any]) -> str:
    """Return the figures as CSV: a header `figure,value`, then one row a figure."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("figure", "value"))
    writer.writerows(rows(figures))
    return buffer.getvalue()


def as_table(figures: Mapping[str, Any]) -> str:
    """Return the figures as aligned columns: the call counts in one table, then one table for
    each breakdown (services, reasons, states, agent legs, call-backs, ratings, durations)."""
    period = f"{figures['from']} – {figures['to']}, hotline {figures['hotline'] or 'all'}"
    scalars = {k: v for k, v in figures.items() if not isinstance(v, Mapping) and k not in ("from", "to", "hotline")}
    blocks = [period, _columns([list(scalars), [str(v) for v in scalars.values()]])]
    for name, value in figures.items():
        if not isinstance(value, Mapping):
            continue
        if value and all(isinstance(v, Mapping) for v in value.values()):
            heads = list(next(iter(value.values())))
            table = [[name, *heads]] + [[str(k), *(str(v[h]) for h in heads)] for k, v in value.items()]
        else:
            unit = {"duration_s": "seconds", "callbacks": "requests"}.get(name, "calls")
            table = [[name, unit]] + [[str(k), str(v)] for k, v in value.items()] if value else [[name], ["-"]]
        blocks.append(_columns(table))
    return "\n\n".join(blocks)


def _columns(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)
