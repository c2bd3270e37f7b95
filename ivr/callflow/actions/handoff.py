"""Agents: the hotline's entry, routing to agents, call-back requests, the rating."""
from __future__ import annotations

from typing import Any

from ivr.callflow.actions import CallContext, Data, action, completed, started, take_number
from ivr.callflow.actions.auth import heard_number
from ivr.callflow.machine import Event
from models.agents import rate_call, request_callback
from models.identity import mask_phone
from models.phones import normalise_phone
from models.vocabulary import Service, TransferReason


@action
def entry(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Greet as the dialled hotline does: its menu (saying when agents work), or an agent first."""
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
    when its URL is one of Twilio's recordings: models.agents.request_callback)."""
    recorded = event.kind == "recorded" and bool(event.value)
    seconds = event.extra.get("RecordingDuration", "")  # ASCII digits or "" (ivr.voice.fields.seconds)
    number, data.callback_number = data.callback_number or "", None
    request_callback(
        ctx.uow.session, call_sid=ctx.call_sid, hotline=ctx.hotline.name, number=number,
        recording_url=event.value if recorded else None,
        recording_seconds=int(seconds) if recorded and seconds.isascii() and seconds.isdigit() else None,
        context=handoff_context(data, ctx), now=ctx.now,
    )
    completed(data, Service.CALLBACK)
    return "ok"


@action
def rate(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Store the caller's rating of the call (one per call; a second one replaces the first)."""
    rate_call(ctx.uow.session, call_sid=ctx.call_sid, hotline=ctx.hotline.name, key=str(arg),
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
        "at": ctx.now.isoformat(),
    }
