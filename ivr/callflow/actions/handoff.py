"""Agents: the hotline's entry, routing to agents, call-back requests, the rating."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ivr.callflow.actions import CallContext, Data, action, completed, started, take_number
from ivr.callflow.actions.auth import heard_number
from ivr.callflow.machine import Event
from models.agents import rate_call
from models.callbacks import CallbackKind, Due, ask_callback
from models.callbacks import missed_call as missed_item
from models.elders import sole_holder_is_elder
from models.identity import mask_phone
from models.phones import normalise_mobile, normalise_phone
from models.vocabulary import Service, TransferReason

ELDER_BY_MOBILE = "mobile"  # CallData.elder: the caller's number is the registered mobile of one elder holder


@action
def entry(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Greet as the dialled hotline does: its menu (saying when agents work), or an agent first.
    First of all, on a hotline with elder mode on: a caller whose number is the registered mobile
    of exactly one cardholder at least elder.age today is an elder caller from the first word."""
    elder = ctx.settings.elder
    if elder.on(ctx.hotline.name):
        mobile = normalise_mobile(ctx.caller)
        today = ctx.now.astimezone(ctx.settings.tz).date()
        if mobile is not None and sole_holder_is_elder(ctx.uow.runs_on, mobile, today, elder.age):
            data.elder = ELDER_BY_MOBILE
    if ctx.hotline.entry == "agent_first":
        return "agent_first"
    return "menu" if data.staffed else "menu_closed"


@action
def route_agent(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Put the caller through while agents work; otherwise offer a call-back."""
    return "staffed" if data.staffed else "closed"


@action
def callback_from(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Offer the number the caller calls from, when it is a Chinese number to call back (the
    caller chose a call-back: the service starts)."""
    started(data, Service.CALLBACK)
    number = normalise_phone(ctx.caller)
    if number is None:
        return "unusable"
    data.from_last4 = number[-4:]
    return "usable"


@action
def callback_keep_from(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Call back the number the caller calls from."""
    data.callback_number = normalise_phone(ctx.caller)
    return "ok"


@action
def callback_number(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Take a call-back number, keyed or spoken ("+86" and all), checked with phonenumbers as a
    Chinese number; the flow reads it back before it is kept (callback_confirm)."""
    return take_number(ctx, data, heard_number(event, normalise_phone, phone=True)[0], "callback_number")


@action
def callback_save(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Store the call-back request for the agents, with the message if one was left (kept only
    when its URL is one of Twilio's recordings: models.callbacks.ask_callback). A caller put
    through earlier in the call keeps the place they had then (a missed transfer's item becomes
    this request); one who pressed 1 in the queue and keyed a number makes a queue call-back."""
    recorded = event.kind == "recorded" and bool(event.value)
    seconds = event.extra.get("RecordingDuration", "")  # ASCII digits or "" (ivr.voice.fields.seconds)
    number, data.callback_number = data.callback_number or "", None
    ask_callback(
        ctx.uow.session, call_sid=ctx.call_sid, hotline=ctx.hotline,
        kind=CallbackKind.QUEUE if data.queue_left else CallbackKind.REQUESTED, number=number,
        recording_url=event.value if recorded else None,
        recording_seconds=int(seconds) if recorded and seconds.isascii() and seconds.isdigit() else None,
        context=handoff_context(data, ctx), queued_at=place(data), now=ctx.now, due=due(ctx),
    )
    completed(data, Service.CALLBACK)
    return "ok"


@action
def missed_call(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """The agents did not answer (no-answer, busy, failed, canceled; or the queue failed): when the
    caller's number can be called back, the call becomes a call-back item by itself, due in staffed
    time from when the caller was put through (models.callbacks.missed_call)."""
    missed(ctx, data)
    return "ok"


@action
def queue_callback(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """The caller pressed 1 while waiting in the queue and has left it: a call-back that keeps
    their place, to the number they call from when it can be called back (else they key one)."""
    started(data, Service.CALLBACK)
    data.queue_left = True
    number = normalise_phone(ctx.caller)
    if number is None:
        return "unusable"
    data.from_last4 = number[-4:]
    ask_callback(ctx.uow.session, call_sid=ctx.call_sid, hotline=ctx.hotline, kind=CallbackKind.QUEUE,
                 number=number, recording_url=None, recording_seconds=None, context=handoff_context(data, ctx),
                 queued_at=place(data), now=ctx.now, due=due(ctx))
    completed(data, Service.CALLBACK)
    return "usable"


def missed(ctx: CallContext, data: Data) -> bool:
    """Make the call's missed transfer a call-back item (the status callback does too, for a caller
    who hung up while it rang or while queued); return whether an item was made."""
    item = missed_item(ctx.uow.session, call_sid=ctx.call_sid, hotline=ctx.hotline,
                       number=normalise_phone(ctx.caller), context=handoff_context(data, ctx),
                       queued_at=place(data) or ctx.now, now=ctx.now, due=due(ctx))
    return item is not None


def place(data: Data) -> datetime | None:
    """Return when the caller was first put through or queued in this call (their place in line)."""
    try:
        return datetime.fromisoformat(data.queued_at) if data.queued_at else None
    except ValueError:
        return None


def due(ctx: CallContext) -> Due:
    """Return what call-back items' due times are counted with (config.yaml agent.callback_*)."""
    return Due(ctx.settings.callbacks, ctx.settings.calendar, ctx.settings.tz)


@action
def rate(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Store the caller's rating of the call (one per call; a second one replaces the first)."""
    rate_call(ctx.uow.runs_on, call_sid=ctx.call_sid, hotline=ctx.hotline.name, key=str(arg),
              services=list(data.services), agent=data.agent, now=ctx.now)
    return "ok"


def handoff_context(data: Data, ctx: CallContext) -> dict[str, Any]:
    """Return what an agent is told about the caller: never an ID number, PIN or full mobile."""
    last4 = data.id_last4
    return {
        "call_sid": ctx.call_sid,
        "hotline": ctx.hotline.name,
        "from": mask_phone(ctx.caller),
        "verified": bool(data.holder_id),
        "id_masked": f"**************{last4}" if last4 else None,
        "services": list(data.services),
        "completed": list(data.completed),
        "reason": data.transfer_reason or TransferReason.CALLER_REQUEST,
        "pin_failures": data.auth_failures,
        "locked": data.locked,
        "elder": bool(data.elder),  # an elder caller (适老化): the whisper says 长者
        "at": ctx.now.isoformat(),
    }
