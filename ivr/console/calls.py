"""The console's page of one call: the whole call turn by turn, from its recorded webhooks.

Each recorded webhook (`call_events`: incoming, step, dial, whisper, status) says what the caller did
(its parameters, numbers already masked when recorded) and what they heard next (the TwiML answered,
read by `ivr.callflow.heard`). Around it: who the caller proved to be, the services, the transfer,
the agent leg, the rating and any call-back request. Times are the hotline's local time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import ParseError

from flask import abort, current_app, render_template
from sqlalchemy import select

from ivr.callflow.heard import heard_in_twiml
from ivr.console import reader
from ivr.console.views import bp
from models.agents import CallbackRequest, CallRating
from models.calls import CallEvent, CallState
from models.cards import Cardholder
from models.identity import mask_id, mask_phone
from models.reports import DIAL_OUTCOME

MASK = re.compile(r"<(id_number|pin|phone|digits)>")  # what ivr.callflow.redact leaves of a number


@dataclass
class Said:
    """One prompt the caller heard: its id (when known) and its text."""

    prompt: str | None
    text: str


@dataclass
class Turn:
    """One recorded webhook: when, what the caller did, what they heard then."""

    at: str  # local time, HH:MM:SS
    kind: str  # incoming, step, dial, whisper, status
    did: str  # in Mandarin: keys, speech, silence, the agent leg's end ...
    heard: list[Said] = field(default_factory=list)
    state: str | None = None  # where the flow went


@dataclass
class Leg:
    """The agent leg of a transferred call."""

    outcome: str | None  # models.reports LEG_OUTCOMES, None while it rings
    ring_seconds: int | None  # from the transfer to the agent's answer (or to the leg's end)
    talk_seconds: int | None


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _seconds(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isascii() and text.isdigit() else None


class CallPage:
    """Builds what the page shows of one call in the hotline's words and time zone."""

    def __init__(self) -> None:
        self.catalogue = current_app.extensions["catalogue"]
        self.tz = current_app.extensions["settings"].tz

    def label(self, kind: str, code: str | None) -> str:
        return str(self.catalogue.label(kind, code))

    def time(self, moment: datetime | None, with_date: bool = False) -> str:
        if moment is None:
            return ""
        return moment.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")

    def unmasked(self, text: str) -> str:
        """Keys or speech as recorded, each masked number named in Mandarin (〔身份证号码〕 ...)."""
        return MASK.sub(lambda m: self.label("masked", m.group(1)), text)

    def did(self, event: CallEvent) -> str:
        p = event.params or {}
        if event.kind == "incoming":
            return self.label("webhook", "incoming")
        if event.kind == "dial":
            outcome = self.label("leg", DIAL_OUTCOME.get(p.get("DialCallStatus", ""), "failed"))
            talk = _seconds(p.get("DialCallDuration"))
            return f"{self.label('webhook', 'dial')}：{outcome}" + (f"，通话 {talk} 秒" if talk else "")
        if event.kind == "whisper":
            return self.label("webhook", "whisper")
        if event.kind == "status":
            length = _seconds(p.get("CallDuration"))
            return self.label("webhook", "status") + (f"，时长 {length} 秒" if length is not None else "")
        if p.get("RecordingUrl"):
            length = _seconds(p.get("RecordingDuration"))
            return "录制留言" + (f" {length} 秒" if length is not None else "")
        if p.get("Digits"):
            return f"按键 {self.unmasked(p['Digits'])}"
        if p.get("SpeechResult"):
            return f"说：“{self.unmasked(p['SpeechResult'])}”"
        return "没有按键（等待超时）"

    def heard(self, twiml: str) -> list[Said]:
        if not twiml:
            return []
        try:
            heard = heard_in_twiml(twiml, self.catalogue)
        except ParseError:
            return [Said(None, "（录音记录无法读取）")]
        # A recording (<Play>) says its prompt's text.
        return [Said(h.prompt, self.catalogue.texts.get(h.prompt, h.text) if h.verb == "Play" else h.text)
                for h in heard]

    def turns(self, events: list[CallEvent]) -> list[Turn]:
        return [Turn(self.time(e.at), e.kind, self.did(e), self.heard(e.twiml), e.state_after) for e in events]


def agent_leg(handoff: dict[str, Any] | None, events: list[CallEvent], ended: bool) -> Leg | None:
    """The agent leg's outcome (as the reports count it) and its ring time; None without a transfer."""
    if not handoff:
        return None
    since = _moment(handoff.get("at"))
    answers = [e.at for e in events if e.kind == "whisper" and (since is None or e.at >= since)]
    dials = [e for e in events if e.kind == "dial"]
    outcome: str | None = None
    talk = None
    if dials:
        outcome = DIAL_OUTCOME.get((dials[-1].params or {}).get("DialCallStatus", ""), "failed")
        talk = _seconds((dials[-1].params or {}).get("DialCallDuration"))
    elif answers:
        outcome = "answered"
    elif ended:
        outcome = "no_answer"
    until = answers[0] if answers else (dials[-1].at if dials else None)
    ring = round((until - since).total_seconds()) if since and until else None
    return Leg(outcome, ring, talk if outcome == "answered" else None)


@bp.get("/calls/<call_sid>")
def call(call_sid: str) -> Any:
    """One call, turn by turn, with who called, what they did and how it ended."""
    s = reader()
    row = s.get(CallState, call_sid) or abort(404)
    events = list(s.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid).order_by(CallEvent.id)))
    page = CallPage()
    data = row.data or {}
    handoff = row.handoff or {}
    holder = s.get(Cardholder, data["holder_id"]) if isinstance(data.get("holder_id"), int) else None
    rating = s.scalars(select(CallRating).where(CallRating.call_sid == call_sid)).first()
    callbacks = s.scalars(select(CallbackRequest).where(CallbackRequest.call_sid == call_sid)
                          .order_by(CallbackRequest.id)).all()
    return render_template(
        "agent/call.html", call=row, h=handoff, data=data, page=page, turns=page.turns(events),
        holder=holder, holder_id_masked=mask_id(holder.id_number) if holder else None,
        leg=agent_leg(row.handoff, events, row.ended_at is not None), rating=rating, callbacks=callbacks,
        put_through=page.time(_moment(handoff.get("at")), with_date=True), mask_phone=mask_phone,
    )
