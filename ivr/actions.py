"""The actions the call flow names: verification and card services, over the ledger.

Each action takes the call's context, its argument, the call's data and the event, may change
the ledger through `models.ledger`, and returns the outcome that `ivr.flow` maps to a path.
The call's data never receives an ID number or a PIN: only keyed hashes and last digits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.config import Settings
from ivr.hours import Hotline
from ivr.machine import Event
from models.agents import RATINGS, CallbackRequest, CallRating
from models.identity import id_key, is_pin_shape, mask_phone, normalise_id
from models import services
from models.phones import normalise_phone
from models.ledger import (
    IN_PRODUCTION,
    Actor,
    Card,
    CardEvent,
    CardRuleError,
    Cardholder,
    holder_by_key,
)
from models.pins import LOCKED, OK, check_pin

Data = dict[str, Any]
ACTIONS: dict[str, Callable[["CallContext", "str | None", Data, Event], str]] = {}
HISTORY_READ = 5


@dataclass
class CallContext:
    """What an action may use: the unit of work, the settings, the call and the clock."""

    session: Session
    settings: Settings
    call_sid: str
    now: datetime
    hotline: Hotline
    caller: str = ""  # the From number, as Twilio sent it
    # What the ledger looked like, kept with the recorded webhook so QA can replay the call.
    facts: dict[str, Any] = field(default_factory=dict)

    def actor(self) -> Actor:
        """Return who changes the ledger from this call."""
        return Actor("ivr", call_sid=self.call_sid)

    def run(self, name: str, arg: str | None, data: Data, event: Event) -> str:
        """Run a named action: the machine's hook."""
        return ACTIONS[name](self, arg, data, event)


def action(fn: Callable[[CallContext, str | None, Data, Event], str]) -> Callable:
    """Register a function as an action of the flow, by its name."""
    ACTIONS[fn.__name__] = fn
    return fn


def bump(data: Data, counter: str) -> int:
    """Add one to a counter of the call and return it."""
    data[counter] = int(data.get(counter, 0)) + 1
    return data[counter]


@action
def start_service(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Note the service the caller chose; verification comes first, once per call."""
    data["pending"] = arg
    data.setdefault("services", [])
    if arg not in data["services"]:
        data["services"].append(arg)
    if data.get("holder_id"):
        return "verified"
    if int(data.get("auth_failures", 0)) >= ctx.settings.per_call_pin_failures or data.get("locked"):
        return "suspended"  # self-service stays stopped for the rest of this call
    return "unverified"


@action
def accept_id(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Check the keyed ID number's form and check character before anything is looked up."""
    id_number = normalise_id(event.value)
    if id_number is None:
        return "too_many" if bump(data, "id_errors") >= ctx.settings.id_attempts else "invalid"
    data["id_errors"] = 0
    data["id_key"] = id_key(ctx.settings.pin_key, id_number)
    data["id_last4"] = id_number[-4:]
    return "ok"


@action
def verify_pin(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Check the PIN against the entered ID number, counting failures across calls."""
    pin = event.value
    if not is_pin_shape(pin):
        ctx.facts["pin"] = "bad_format"  # what the keys were, for a replay to key the same kind
        return "too_many" if bump(data, "pin_format_errors") >= ctx.settings.id_attempts else "bad_format"
    key = data.get("id_key", "")
    holder = holder_by_key(ctx.session, key) if key else None
    result = check_pin(
        ctx.session, key=ctx.settings.pin_key, id_key=key or "-", holder=holder, pin=pin,
        now=ctx.now, policy=ctx.settings.pin,
    )
    ctx.facts["pin"] = "right" if result == OK else "wrong_or_locked"
    if result == OK and holder is not None:
        data["holder_id"] = holder.id
        data["auth_failures"] = 0
        return "ok"
    if result == LOCKED:
        data["locked"] = True
        return "locked"
    return "too_many" if bump(data, "auth_failures") >= ctx.settings.per_call_pin_failures else "wrong"


@action
def resume_service(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Go on with the service chosen before verification."""
    return str(data.get("pending"))


def _holder(ctx: CallContext, data: Data) -> Cardholder:
    return services.load_holder(ctx.session, data["holder_id"], now=ctx.now, policy=ctx.settings.loss)


def remember(ctx: CallContext, data: Data, card: Card) -> None:
    """Keep what the prompts say about the card: last four digits, status, dates."""
    data["card_id"] = card.id
    data["card_last4"] = card.last4
    data["card_status"] = card.status
    data["status_detail"] = card.status
    expires = card.loss_expires_at
    data["loss_expires_on"] = expires.astimezone(ctx.settings.tz).date().isoformat() if expires else None
    data["expected_on"] = None
    if card.status == IN_PRODUCTION:
        if card.applied_on is None:
            data["status_detail"] = "in_production_undated"
        else:
            due = ctx.settings.calendar.add_workdays(card.applied_on, ctx.settings.issue_working_days)
            data["expected_on"] = due.isoformat()


@action
def load_card(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Find the card the phone acts on (the newest not cancelled) and say its status."""
    holder = _holder(ctx, data)
    card = holder.newest_card() or next(iter(holder.cards_newest_first()), None)
    if card is None:
        ctx.facts.setdefault("card", None)
        return "no_card"
    remember(ctx, data, card)
    ctx.facts.setdefault("card", snapshot(card))
    if data.get("pending") == "status":
        completed(data, "status")
    return card.status


def snapshot(card: Card) -> dict[str, Any]:
    """Describe a card as a replay fixture needs it: no holder identity, last four digits only."""
    return {
        "last4": card.last4,
        "status": card.status,
        "applied_on": card.applied_on.isoformat() if card.applied_on else None,
        "status_before_loss": card.status_before_loss,
        "loss_expires_at": card.loss_expires_at.isoformat() if card.loss_expires_at else None,
        "history": [
            {"status": e.status_after, "at": e.at.isoformat(), "channel": e.channel}
            for e in card.events[-HISTORY_READ:]
        ],
    }


def _card(ctx: CallContext, data: Data) -> Card:
    return services.holder_card(ctx.session, data["holder_id"], data["card_id"], now=ctx.now, policy=ctx.settings.loss)


def completed(data: Data, service: str) -> None:
    """Note a service the caller completed, for the call's record."""
    data.setdefault("completed", [])
    if service not in data["completed"]:
        data["completed"].append(service)


@action
def report_loss(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Report the card lost by phone (口头挂失), if its status allows."""
    try:
        card = services.report_verbal_loss(ctx.session, data["holder_id"], data["card_id"], now=ctx.now,
                                           actor=ctx.actor(), policy=ctx.settings.loss)
    except CardRuleError:
        return "refused"
    remember(ctx, data, card)
    ctx.facts["card_after"] = snapshot(card)
    data["loss_at_expiry"] = ctx.settings.loss.at_expiry
    completed(data, "loss")
    return "done"


@action
def release_loss(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Release the card's verbal loss report (解挂), if it has one."""
    try:
        card = services.release_verbal_loss(ctx.session, data["holder_id"], data["card_id"], now=ctx.now,
                                            actor=ctx.actor(), policy=ctx.settings.loss)
    except CardRuleError:
        return "refused"
    remember(ctx, data, card)
    ctx.facts["card_after"] = snapshot(card)
    completed(data, "release")
    return "done"


@action
def load_history(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Read the card's most recent status changes, newest first."""
    card = _card(ctx, data)
    recent: list[CardEvent] = list(reversed(card.events))[:HISTORY_READ]
    data["history"] = [
        {"date": e.at.astimezone(ctx.settings.tz).date().isoformat(), "status": e.status_after}
        for e in recent
    ]
    return "ok" if recent else "empty"


@action
def suspended_reason(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Say why self-service stays stopped for this call: the lock, or too many failures."""
    return "locked" if data.get("locked") else "too_many"


@action
def entry(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Greet as the dialled hotline does: its menu (saying when agents work), or an agent first."""
    if ctx.hotline.entry == "agent_first":
        return "agent_first"
    return "menu" if data.get("staffed", True) else "menu_closed"


@action
def route_agent(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Put the caller through while agents work; otherwise offer a call-back."""
    return "staffed" if data.get("staffed", True) else "closed"


@action
def callback_from(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Offer the number the caller calls from, when it is a Chinese number to call back."""
    number = normalise_phone(ctx.caller)
    if number is None:
        return "unusable"
    data["from_last4"] = number[-4:]
    return "usable"


@action
def callback_keep_from(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Call back the number the caller calls from."""
    data["callback_number"] = normalise_phone(ctx.caller)
    return "ok"


@action
def callback_number(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Take a keyed call-back number, checked with phonenumbers as a Chinese number."""
    number = normalise_phone(event.value)
    if number is None:
        return "too_many" if bump(data, "number_errors") >= ctx.settings.id_attempts else "invalid"
    data["number_errors"] = 0
    data["callback_number"] = number
    return "ok"


@action
def callback_save(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Store the call-back request for the agents, with the message if one was left."""
    recorded = event.kind == "recorded" and event.value
    seconds = event.extra.get("RecordingDuration", "")
    ctx.session.add(CallbackRequest(
        call_sid=ctx.call_sid, hotline=ctx.hotline.name, number=data.pop("callback_number", "") or "",
        recording_url=event.value if recorded else None,
        recording_seconds=int(seconds) if recorded and seconds.isdigit() else None,
        context=handoff_context(data, ctx), created_at=ctx.now,
    ))
    completed(data, "callback")
    return "ok"


@action
def rate(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Store the caller's rating of the call (one per call; a second one replaces the first)."""
    rating = ctx.session.scalars(select(CallRating).where(CallRating.call_sid == ctx.call_sid)).first()
    if rating is None:
        rating = CallRating(call_sid=ctx.call_sid, hotline=ctx.hotline.name, at=ctx.now)
        ctx.session.add(rating)
    rating.rating = RATINGS[str(arg)]
    rating.services = list(data.get("services", []))
    rating.agent = data.get("agent")
    rating.at = ctx.now
    return "ok"


def handoff_context(data: Data, ctx: CallContext) -> dict[str, Any]:
    """Return what an agent is told about the caller: never an ID number, PIN or full mobile."""
    last4 = data.get("id_last4")
    return {
        "call_sid": ctx.call_sid,
        "hotline": ctx.hotline.name,
        "from": mask_phone(ctx.caller),
        "verified": bool(data.get("holder_id")),
        "id_masked": f"**************{last4}" if last4 else None,
        "services": list(data.get("services", [])),
        "completed": list(data.get("completed", [])),
        "reason": data.get("transfer_reason", "caller_request"),
        "pin_failures": int(data.get("auth_failures", 0)),
        "locked": bool(data.get("locked")),
        "at": ctx.now.isoformat(),
    }
