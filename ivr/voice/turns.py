"""One webhook, one unit of work: load the call's row, step the flow, record, render.

No Flask here: `ivr.voice.webhooks` parses the request and hands over its form fields. Every path
returns TwiML; when anything fails the caller hears an apology and is put through to an agent.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ivr.callflow.actions import CallContext
from ivr.callflow.actions.handoff import handoff_context, place
from ivr.callflow.calldata import SECRETS, CallData
from ivr.callflow.machine import DIAL_ANSWERED, QUEUE_ANSWERED, Entry, Event, Machine, Menu, Spoken, Transfer
from ivr.callflow.redact import mask_numbers
from ivr.config import Settings
from ivr.monitoring import webhook
from ivr.monitoring.metrics import Metrics
from ivr.voice import fields
from ivr.voice.twiml import Renderer
from models.callbacks import Due, answered_wait, minutes_left, missed_call, typical_wait, waiting_calls
from models.calls import CallEvent, CallState, caller_key, end_reason, sweep_secrets
from models.clock import utcnow
from models.hours import Hotline
from models.identity import mask_phone
from models.phones import normalise_phone
from models.storage.callrows import CallExists, CallRows
from models.storage.unit import UnitOfWork
from models.vocabulary import VERIFIED_SERVICES, TransferReason

log = logging.getLogger(__name__)
MASKED_FIELDS = ("From", "Caller", "ForwardedFrom", "CallerName")
# What a recorded webhook keeps of Twilio's form: anything else (forged or new) is dropped.
RECORDED_FIELDS = frozenset({
    "CallSid", "AccountSid", "From", "To", "Caller", "Called", "CallStatus", "Direction", "ApiVersion",
    "ForwardedFrom", "CallerName", "ParentCallSid", "FromCountry", "ToCountry", "Digits", "SpeechResult",
    "Confidence", "DialCallStatus", "DialCallSid", "DialCallDuration", "QueueResult", "QueueTime",
    "QueueSid", "QueuePosition", "CurrentQueueSize", "AvgQueueTime", "MaxQueueSize", "DequeingCallSid",
    "RecordingUrl", "RecordingSid", "RecordingDuration", "CallDuration", "Timestamp", "SequenceNumber",
})
DIAL_OK = DIAL_ANSWERED
MAX_QUEUE = 100_000  # a queue position or size beyond this is not Twilio's (its queues hold at most 5000)
# What the queue's webhooks say besides the flow's prompts (the catalogue must have each).
QUEUE_PROMPTS = ("queue.position", "queue.next_in_line", "queue.estimate", "queue.press_1", "queue.connecting",
                 "queue.agent_next", "queue.agent_empty", "queue.agent_taking", "queue.agent_refused",
                 "common.invalid_key")
SWEEP_EVERY = timedelta(minutes=1)  # the sweep of idle calls' secrets, at most this often per worker
SWEEP_LOOKS_BACK = timedelta(days=1)  # ...over calls started this recently (`calls purge` looks at all)
T = TypeVar("T")


class Answer(NamedTuple):
    """A webhook's TwiML, and the reason when it puts the caller through (counted once committed)."""

    twiml: str
    transfer: str | None = None


class Ended(NamedTuple):
    """What a status callback closed: counted once committed (a retried callback closes nothing)."""

    hotline: str
    ended: str
    completed: list[str]


class TurnService:
    """The hotline's webhook service: the flow over the ledger, one transaction per step."""

    def __init__(self, settings: Settings, machine: Machine, renderer: Renderer, sessions: sessionmaker[Session],
                 engine: Engine, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics(hotlines=(), enabled=False)  # counted after each commit
        self.machine = machine
        self.renderer = renderer
        self.sessions = sessions  # the ledger's sessions, on the same engine
        self.engine = engine
        self.rows = CallRows(engine.dialect, fast=settings.fast_path)
        self.failure_twiml = renderer.render(machine.step("main", Event("failure"), CallData(), _no_action), 1)
        self.swept_at: datetime | None = None  # this worker's last sweep of idle calls' secrets

    def sweep(self) -> None:
        """Remove the secrets of calls idle for `recording.secrets_ttl_minutes` (closing those whose
        status callback never came), at most once a minute; run after a new call or a status callback."""
        now = utcnow()
        if self.swept_at is not None and now - self.swept_at < SWEEP_EVERY:
            return
        self.swept_at = now
        idle_before = now - timedelta(minutes=self.settings.secrets_ttl_minutes)
        try:
            with self.sessions() as s, s.begin():
                swept = sweep_secrets(s, secrets=SECRETS, idle_before=idle_before,
                                      started_after=idle_before - SWEEP_LOOKS_BACK)
        except Exception as exc:
            log.exception("the sweep of idle calls' secrets failed (calls purge runs it too)")
            webhook.database_error(exc)
            return
        if swept:
            log.info("removed the secrets of %d idle calls", swept)

    def incoming(self, form: Mapping[str, str]) -> str:
        """Answer a new call with the greeting and the main menu."""
        twiml = self._handle("incoming", form, 0, Event("start"))
        self.sweep()
        return twiml

    def step(self, form: Mapping[str, str], turn: int | None, silence: bool) -> str:
        """Answer keys (or silence) from a Gather."""
        digits = (form.get("Digits") or "").strip()
        if form.get("RecordingUrl") and not silence:
            duration = fields.seconds(form.get("RecordingDuration"))
            event = Event("recorded", form["RecordingUrl"], {"RecordingDuration": _or_empty(duration)})
        elif (form.get("SpeechResult") or "").strip() and not digits and not silence:
            confidence = fields.confidence(form.get("Confidence"))  # unknown: as unsure as none given
            event = Event("speech", form["SpeechResult"].strip(), {"Confidence": _or_empty(confidence)})
        else:
            event = Event("silence") if silence or not digits else Event("keys", digits)
        return self._handle("step", form, turn, event)

    def dial_done(self, form: Mapping[str, str], turn: int | None) -> str:
        """Answer the end of the agent leg with what follows it."""
        return self._handle("dial", form, turn, Event("dial", form.get("DialCallStatus", "")))

    def queue_done(self, form: Mapping[str, str], turn: int | None) -> str:
        """Answer the <Enqueue>'s action: how the wait ended (QueueResult) decides what follows.
        bridged: after the agent's leg, the rating; leave: the call-back that keeps the place;
        hangup: nothing (the caller is gone: the status callback follows); anything else (queue-full,
        system-error, error…): the apology and the call-back offer, the call made a missed item."""
        result = fields.text(form.get("QueueResult"), 32).strip()
        waited = fields.seconds(form.get("QueueTime"))
        return self._handle("queue_result", form, turn, Event("queue", result, {"QueueTime": _or_empty(waited)}))

    def _handle(self, kind: str, form: Mapping[str, str], turn_no: int | None, event: Event) -> str:
        sid = form.get("CallSid", "")
        started = time.perf_counter()
        webhook.annotate(call_sid=sid, turn=turn_no)
        if not sid:
            log.warning("%s webhook without a CallSid", kind)
            webhook.failed()
            return self.failure_twiml
        try:
            try:
                # A first webhook assumes its call is new: the row is written with the answer (CallRows.create).
                answer = self._transaction(lambda conn: self._step(conn, kind, form, turn_no, event, sid, started,
                                                                   fresh=kind == "incoming"))
            except CallExists:  # its retry (or twin) got there first: run as any later webhook, on the row
                answer = self._transaction(lambda conn: self._step(conn, kind, form, turn_no, event, sid, started))
        except Exception as exc:
            log.exception("call %s: %s webhook failed; transferring to an agent", sid, kind)
            webhook.failed(exc)
            answer = self._fail(sid, kind, turn_no, form)
        if answer.transfer is not None:
            self.metrics.transfer(answer.transfer)
        return answer.twiml

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        """Run one unit of work in a transaction; once more on a new connection if the server had
        dropped the first (nothing was written: or, if the commit itself was lost after it
        happened, the webhook's retry path answers what was recorded)."""
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except DBAPIError as err:
            if not err.connection_invalidated:
                raise
            log.warning("the database dropped a connection; running the webhook again on a new one")
            webhook.database_error(err)
        with self.engine.begin() as conn:
            return work(conn)

    def _step(self, conn: Connection, kind: str, form: Mapping[str, str], turn_no: int | None, event: Event,
              sid: str, started: float, *, fresh: bool = False) -> Answer:
        """One webhook's unit of work, inside its transaction. fresh: the call is taken to be new (its
        first webhook): its row is inserted with this step's answer, or CallExists raised."""
        now = utcnow()
        new_row = self._new_call(sid, form, now) if fresh else None
        if new_row is not None:
            before, row_turn, row_data = new_row["state"], new_row["turn"], new_row["data"]
        else:
            # The call's row, locked: a retried webhook arriving with the original waits, then replays.
            before, row_turn, row_data = self.rows.load_or_create(conn, sid, lambda: self._new_call(sid, form, now))
        webhook.annotate(turn=row_turn if turn_no is None else turn_no, state=before or None)
        if row_turn == 0 and event.kind != "start":
            log.info("call %s unknown at %s: starting it again", sid, kind)
            event = Event("resume")
        elif row_turn > 0 and kind == "incoming":
            event = Event("resume")
        elif before and self.machine.live(before) != before:
            live = self.machine.live(before)
            log.info("call %s: its state %r is not in this release's flow: %s", sid, before,
                     f"resuming in {live!r} (renamed)" if live else "starting again at the main menu")
        if turn_no is not None and turn_no < row_turn:
            done = self.rows.answered(conn, sid, turn_no, kind)
            if done is not None:
                return Answer(done)  # a retried webhook: same answer, nothing changed twice, nothing counted
        data = CallData.from_row(row_data)  # parsed afresh from the row: this webhook's own copy
        ctx = self._context(conn, sid, now, form, data)
        try:
            if event.kind == "dial" and event.value in DIAL_OK:
                data.agent = f"{self.settings.agent_dial} {form.get('DialCallSid', '')}".strip()[:fields.AGENT_WIDTH]
            if event.kind == "queue" and isinstance(self.machine.state_of(before), Transfer):
                data.queue_result = event.value or "error"
                waited = event.extra.get("QueueTime", "")
                data.queue_seconds = int(waited) if waited.isdigit() else None
                if event.value in QUEUE_ANSWERED:
                    data.agent = f"queue {data.queue or ''}".strip()[:fields.AGENT_WIDTH]
                if event.value == "hangup":  # the caller hung up while waiting: nothing to say
                    return self._save_still(ctx, kind, form, turn_no, before, row_turn, data, started)
            result = self.machine.step(before, event, data, ctx.run)
            # Saved through the actions' unit of work: what they changed in the ledger is flushed
            # before the call's row and the record of the step (models.storage.fastpath).
            return self._save_turn(ctx, kind, form, turn_no, before, row_turn, data, result, started, new_row)
        finally:
            ctx.uow.close()

    def _save_turn(self, ctx: CallContext, kind: str, form: Mapping[str, str],
                   turn_no: int | None, before: str, row_turn: int, data: CallData, result: Any,
                   started: float | None, new_row: dict[str, Any] | None = None) -> Answer:
        """Render the turn, save the call's row (insert it, `new_row`, for a new call) and record the
        webhook; return the TwiML (and the transfer's reason when it puts the caller through)."""
        sid, now = ctx.call_sid, ctx.now
        webhook.annotate(state=result.state)
        turn = row_turn + 1
        if result.kind is Transfer:
            self._put_through(data, now)
        twiml = self.renderer.render(result, turn, hotline=data.hotline)
        # A number read back is hidden in the record (a retry of that turn hears it hidden).
        kept = (self.renderer.render(result, turn, masked=True, hotline=data.hotline)
                if self.renderer.has_secret(result) else twiml)
        values = {"sid": sid, "state": result.state, "next_turn": turn, "data": data.to_row(), "updated_at": now}
        transfer = None
        if result.kind is Transfer:
            values["handoff"] = handoff_context(data, ctx) | {"from_state": before}
            transfer = str(values["handoff"]["reason"])
        record = {
            "call_sid": sid, "turn": row_turn if turn_no is None else turn_no, "kind": kind, "at": now,
            "params": self._recorded(form, before), "state_before": before or None,
            "state_after": result.state, "path": result.path, "facts": ctx.facts or None, "twiml": kept,
            "elapsed_ms": 0.0 if started is None else (time.perf_counter() - started) * 1000,
        }
        if new_row is None:
            self.rows.save(ctx.uow.runs_on, values, record)
        else:
            made = new_row | {"state": result.state, "turn": turn, "data": values["data"], "updated_at": now}
            self.rows.create(ctx.uow.runs_on, made | ({"handoff": values["handoff"]} if "handoff" in values else {}),
                             record)
        return Answer(twiml, transfer)

    def _put_through(self, data: CallData, now: datetime) -> None:
        """Note the caller's place in line (the first time they are put through in the call) and,
        with agent.leg queue, the queue they wait in, with no result yet."""
        data.queued_at = data.queued_at or now.isoformat()
        if self.settings.agent_leg == "queue":
            data.queue = self.renderer.queue_name(data.hotline)
            data.queue_result = data.queue_seconds = data.queue_taken_at = None
            data.queue_left = False

    def _save_still(self, ctx: CallContext, kind: str, form: Mapping[str, str], turn_no: int | None, before: str,
                    row_turn: int, data: CallData, started: float) -> Answer:
        """Save what a webhook learnt without moving the call (a caller who hung up in the queue: the
        status callback decides what comes of it); answer an empty document, which Twilio does not play."""
        twiml = self.renderer.nothing()
        self.rows.save(ctx.uow.runs_on, {"sid": ctx.call_sid, "state": before, "next_turn": row_turn + 1,
                                         "data": data.to_row(), "updated_at": ctx.now}, {
            "call_sid": ctx.call_sid, "turn": row_turn if turn_no is None else turn_no, "kind": kind, "at": ctx.now,
            "params": self._recorded(form, before), "state_before": before or None, "state_after": before,
            "path": [before], "facts": None, "twiml": twiml, "elapsed_ms": (time.perf_counter() - started) * 1000,
        })
        return Answer(twiml)

    def _new_call(self, sid: str, form: Mapping[str, str], now: Any) -> dict[str, Any]:
        return {"call_sid": sid, "from_masked": mask_phone(form.get("From")),
                "from_key": caller_key(self.settings.pin_key, form.get("From")), "to_number": form.get("To", "")[:32],
                "state": "", "turn": 0, "data": {}, "started_at": now, "updated_at": now}

    def hotline_for(self, dialled: str) -> Hotline:
        """Return the hotline a dialled number belongs to (the default one for any other)."""
        hotlines = self.settings.hotlines
        return hotlines.get(dialled.replace(" ", "")) or hotlines[self.settings.default_hotline]

    def _context(self, conn: Connection, sid: str, now: datetime, form: Mapping[str, str],
                 data: CallData) -> CallContext:
        """Return what the actions may use, and put this moment's facts in the call's data."""
        hotline = self.hotline_for(form.get("To", ""))
        data.hotline = hotline.name
        data.staffed = hotline.staffed(now.astimezone(self.settings.tz), self.settings.calendar)
        data.hours_text = hotline.spoken_hours
        return CallContext(UnitOfWork(conn, self.sessions), self.settings, sid, now, hotline,
                           caller=form.get("From", ""))

    def _recorded(self, form: Mapping[str, str], before: str) -> dict[str, str]:
        """Return the webhook's fields as kept: known fields only, phone numbers masked, keys and
        speech with every number in them masked (`ivr.callflow.redact`), in any state; an entry's
        keys or speech replaced whole by what they were for, anything outside a menu by <digits>."""
        params = {k: v for k, v in form.items() if k in RECORDED_FIELDS}
        for key in MASKED_FIELDS:
            if params.get(key):
                params[key] = mask_phone(params[key])
        st = self.machine.state_of(before)
        for key in ("Digits", "SpeechResult"):
            if params.get(key):
                params[key] = mask_numbers(params[key])
                if not isinstance(st, Menu):
                    params[key] = f"<{st.redact}>" if isinstance(st, Entry) else "<digits>"
        return params

    def _fail(self, sid: str, kind: str, turn_no: int | None, form: Mapping[str, str]) -> Answer:
        """Move the call to an agent after a failure, and record it, if the database still answers
        (the transfer is counted only then: otherwise the call's record does not say it)."""
        try:
            with self.engine.begin() as conn:
                row = self.rows.load(conn, sid)
                if row is None:
                    return Answer(self.failure_twiml)
                before, row_turn, row_data = row
                data = CallData.from_row(row_data)
                now = utcnow()
                ctx = self._context(conn, sid, now, form, data)
                result = self.machine.step(before, Event("failure"), data, _no_action)
                return self._save_turn(ctx, kind, form, turn_no, before, row_turn, data, result, None)
        except Exception as exc:
            log.exception("call %s: could not record the failure", sid)
            webhook.failed(exc)
            return Answer(self.failure_twiml)

    def whisper(self, form: Mapping[str, str]) -> str:
        """Tell the agent, before the caller is connected, who is calling and why; record when the
        agent answered (the whisper is fetched then: reports count answers within 15 s of the <Dial>).

        From a queue (the agent's <Dial><Queue url>), Twilio fetches it for the dequeued caller's
        own call (CallSid, with QueueSid, QueueTime and DequeingCallSid) and plays it to the caller:
        they hear that they are being connected (the agent heard who is calling from
        /voice/queue/next), and the wait is kept for the estimates of those still waiting."""
        queued = not form.get("ParentCallSid") and bool(form.get("DequeingCallSid") or form.get("QueueSid"))
        parent = form.get("ParentCallSid", "") or (form.get("CallSid", "") if queued else "")
        webhook.annotate(call_sid=parent)
        handoff: dict[str, Any] = {}
        elder = False  # the caller taken from the queue hears it slower
        try:
            with self.engine.begin() as conn:
                row = self.rows.load_ending(conn, parent)  # the caller's call, from the agent's leg
                if row is not None:
                    state, turn, row_data, saved = row
                    webhook.annotate(turn=turn, state=state)
                    handoff = dict(saved or {})
                    now = utcnow()
                    uow = UnitOfWork(conn, self.sessions)
                    if queued:  # taken from the queue: no longer waiting (the console's live queue)
                        data = CallData.from_row(row_data)
                        elder = bool(data.elder)
                        data.queue_taken_at = now.isoformat()
                        line = data.hotline or self.hotline_for(form.get("To", "")).name
                        answered_wait(uow.session, call_sid=parent, hotline=line,
                                      seconds=fields.seconds(form.get("QueueTime")), now=now)
                        uow.session.execute(update(CallState).where(CallState.call_sid == parent)
                                            .values(data=data.to_row()))
                    self.rows.record(uow.runs_on, {
                        "call_sid": parent, "turn": turn, "kind": "whisper", "at": now,
                        "params": self._recorded(form, ""), "state_before": state, "state_after": state,
                        "path": [], "facts": None, "twiml": "", "elapsed_ms": 0.0,
                    })
                    uow.close()
        except Exception as exc:
            log.exception("call %s: whisper could not read the handoff or record the answer", parent)
            webhook.failed(exc)
        if queued:
            return self.renderer.speech([Spoken("queue.connecting")], slow=elder)
        return self.renderer.speech(whisper_prompts(handoff))

    # -- the queue (agent.leg: queue) ---------------------------------------------------------------
    def transfer_states(self) -> list[str]:
        """Return the flow's transfer states (where a caller waits for an agent, or in the queue)."""
        return self.machine.transfer_names()

    def queue_wait(self, form: Mapping[str, str]) -> str:
        """Answer the <Enqueue waitUrl> (and its <Gather>'s action): the caller's place and the
        estimated wait, 1 for a call-back, music or silence; 1 pressed: <Leave> (the <Enqueue>'s
        action then gets QueueResult leave). Recorded with the call; never fails the caller: without
        the database the announcement says the place alone."""
        sid = form.get("CallSid", "")
        webhook.annotate(call_sid=sid)
        digits = (form.get("Digits") or "").strip()
        position = fields.count(form.get("QueuePosition"), MAX_QUEUE)
        waited = fields.seconds(form.get("QueueTime"))
        try:
            return self._transaction(lambda conn: self._wait(conn, sid, form, digits, position, waited))
        except Exception as exc:
            log.exception("call %s: the queue's wait webhook failed; the caller keeps waiting", sid)
            webhook.failed(exc)
            if digits == "1":
                return self.renderer.queue_leave()
            return self.renderer.queue_wait(wait_prompts(position, None))

    def _wait(self, conn: Connection, sid: str, form: Mapping[str, str], digits: str, position: int | None,
              waited: int | None) -> str:
        row = self.rows.load_ending(conn, sid) if sid else None
        now = utcnow()
        uow = UnitOfWork(conn, self.sessions)
        try:
            if digits == "1":
                twiml = self.renderer.queue_leave()
            else:
                data = CallData.from_row(row[2] if row else None)
                line = data.hotline or self.hotline_for(form.get("To", "")).name
                minutes = minutes_left(typical_wait(uow.session, line, now), waited)
                said = [Spoken("common.invalid_key")] if digits else []
                twiml = self.renderer.queue_wait(said + wait_prompts(position, minutes), slow=bool(data.elder))
            if row is not None:  # a call the hotline knows: its record keeps the wait (a key as pressed)
                state, turn, _data, _handoff = row
                webhook.annotate(turn=turn, state=state)
                params = self._recorded(form, "")
                if len(digits) == 1:
                    params["Digits"] = digits
                self.rows.record(uow.runs_on, {
                    "call_sid": sid, "turn": turn, "kind": "queue_wait", "at": now, "params": params,
                    "state_before": state, "state_after": state, "path": [], "facts": None, "twiml": twiml,
                    "elapsed_ms": 0.0,
                })
            return twiml
        finally:
            uow.close()

    def queue_next(self, form: Mapping[str, str], hotline: str | None) -> str:
        """Answer an agent's call to /voice/queue/next: the next caller of a hotline's queue
        (`hotline`, a hotline's name), else of the queue whose first caller has waited longest,
        else the default hotline's. The agent hears who is calling, then <Dial><Queue> connects
        them. Only the calls from `agent.queue_takers` may take a caller; others hear so."""
        taker = "".join((form.get("From") or "").split())
        if taker not in self.settings.queue.takers:
            log.warning("refused a call from %s to take a caller from the queue (not in agent.queue_takers)",
                        mask_phone(taker))
            return self.renderer.refuse([Spoken("queue.agent_refused")])
        names = {h.name for h in self.settings.hotlines.values()}
        line = hotline if hotline in names else None
        try:
            with self.sessions() as s:
                waiting = waiting_calls(s, transfer_states=self.transfer_states(), now=utcnow())
        except Exception as exc:
            log.exception("the queue could not be read: the agent takes the next caller unannounced")
            webhook.failed(exc)
            return self.renderer.queue_take([Spoken("queue.agent_taking")], self.renderer.queue_name(line))
        if line is None:
            line = waiting[0].hotline if waiting and waiting[0].hotline in names else None
        line = line or self.settings.hotlines[self.settings.default_hotline].name
        first = next((w for w in waiting if w.hotline == line), None)
        if first is None:
            return self.renderer.queue_take([Spoken("queue.agent_empty", {"hotline": line})],
                                            self.renderer.queue_name(line))
        values = {"hotline": line, "waited_minutes": max(1, round(first.waited(utcnow()) / 60))}
        return self.renderer.queue_take([Spoken("queue.agent_next", values), *whisper_prompts(first.handoff)],
                                        self.renderer.queue_name(line))

    def status(self, form: Mapping[str, str]) -> None:
        """Close the call's record when Twilio reports the call over."""
        sid = form.get("CallSid", "")
        webhook.annotate(call_sid=sid)
        try:
            ended = self._transaction(lambda conn: self._end(conn, sid, form))
        except Exception as exc:
            log.exception("call %s: status callback failed", sid)
            webhook.failed(exc)
        else:
            if ended is not None:
                self.metrics.call_ended(*ended)
        self.sweep()

    def _end(self, conn: Connection, sid: str, form: Mapping[str, str]) -> Ended | None:
        """Close a call's row and record its status callback; return what it closed (None: nothing)."""
        row = self.rows.load_closing(conn, sid)
        if row is None:
            log.info("status callback for unknown call %s", sid)
            return None
        state, turn, row_data, handoff, ended_at = row
        webhook.annotate(turn=turn, state=state)
        # Not ended yet: no status callback was recorded (the end and its record are one statement).
        if ended_at is not None and self.rows.answered(conn, sid, turn, "status") is not None:
            log.info("call %s: status callback again (a retry): already closed", sid)
            return None
        data = CallData.from_row(row_data)
        now = utcnow()
        ended = end_reason(handoff, data.completed)
        uow = UnitOfWork(conn, self.sessions)
        try:
            if isinstance(self.machine.state_of(state), Transfer):
                self._missed_on_hang_up(uow, sid, form, data, handoff, now)
            # What the call keeps when it ends: its SECRET fields (numbers keyed, never confirmed) leave with it.
            self.rows.end(uow.runs_on, {"sid": sid, "end_reason": ended, "ended_at": now, "data": data.to_record(),
                                        "duration_s": fields.seconds(form.get("CallDuration"))}, {
                "call_sid": sid, "turn": turn, "kind": "status", "at": now,
                "params": self._recorded(form, ""), "state_before": state, "state_after": state,
                "path": [], "facts": None, "twiml": "", "elapsed_ms": 0.0,
            })
        finally:
            uow.close()
        return Ended(data.hotline or self.hotline_for(form.get("To", "")).name, str(ended), list(data.completed))

    def _missed_on_hang_up(self, uow: UnitOfWork, sid: str, form: Mapping[str, str], data: CallData,
                           handoff: Any, now: datetime) -> None:
        """A caller who hung up while the agents' phones rang, or while waiting in the queue: the
        call ends in its transfer state with no agent's answer (no whisper fetched since it was put
        through). A number that can be called back makes it a missed call-back item."""
        if data.queue_result in QUEUE_ANSWERED:
            return
        put_through = _moment((handoff or {}).get("at"))
        answered = select(CallEvent.id).where(CallEvent.call_sid == sid, CallEvent.kind == "whisper")
        if put_through is not None:
            answered = answered.where(CallEvent.at >= put_through)
        if uow.session.scalar(answered.limit(1)) is not None:
            return
        hotline = self.hotline_for(form.get("To", ""))
        hotline = next((h for h in self.settings.hotlines.values() if h.name == data.hotline), hotline)
        item = missed_call(uow.session, call_sid=sid, hotline=hotline, number=normalise_phone(form.get("From", "")),
                           context=dict(handoff or {}), queued_at=place(data) or put_through or now, now=now,
                           due=Due(self.settings.callbacks, self.settings.calendar, self.settings.tz))
        if item is not None:
            log.info("call %s: the caller hung up before an agent answered: a call-back item", sid)


def _or_empty(value: float | None) -> str:
    """Return a parsed value as the call flow reads it from an event: its text, or "" when unknown."""
    return "" if value is None else str(value)


def _no_action(name: str, arg: str | None, data: CallData, event: Event) -> str:
    raise RuntimeError(f"action {name} cannot run on the failure path")



def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def wait_prompts(position: int | None, minutes: int | None) -> list[Spoken]:
    """Return what a caller waiting in the queue hears each cycle: their place (Twilio's
    QueuePosition; 1: next), the estimated wait when one is known, and 1 for a call-back."""
    said: list[Spoken] = []
    if position == 1:
        said.append(Spoken("queue.next_in_line"))
    elif position:
        said.append(Spoken("queue.position", {"position": position}))
    if minutes:
        said.append(Spoken("queue.estimate", {"minutes": minutes}))
    said.append(Spoken("queue.press_1"))
    return said


WHISPER_SERVICES = frozenset(VERIFIED_SERVICES)  # the services the whisper names


def whisper_prompts(handoff: Mapping[str, Any]) -> list[Spoken]:
    """Return the short summary an agent hears: an elder caller (长者) or not, verified or not, ID last
    four, service, why."""
    last4 = (handoff.get("id_masked") or "")[-4:]
    values = {"hotline": handoff.get("hotline", ""), "id_last4": last4}
    if handoff.get("verified"):
        who = "whisper.verified"
    else:
        who = "whisper.unverified_id" if last4 else "whisper.unverified"
    services = [s for s in handoff.get("services", []) if s in WHISPER_SERVICES]
    reason = handoff.get("reason") if handoff.get("reason") in set(TransferReason) else TransferReason.CALLER_REQUEST
    ids = ["whisper.intro", *(["whisper.elder"] if handoff.get("elder") else []), who]
    if handoff.get("locked"):
        ids.append("whisper.locked")
    ids += [f"whisper.service.{services[-1] if services else 'none'}", f"whisper.reason.{reason}"]
    return [Spoken(pid, values) for pid in ids]
