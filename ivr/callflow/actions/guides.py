"""The guides (办事指南), read in short parts."""
from __future__ import annotations

from ivr.callflow.actions import CallContext, Data, action, completed
from ivr.callflow.machine import Event
from models.vocabulary import Service

PARTS = 3  # what to bring, where to go, how long it takes (ivr.callflow.flow.GUIDE_PARTS)


@action
def guide_start(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Start reading a guide from its first part."""
    data.guide_topic, data.guide_part = arg, "1"
    completed(data, Service.GUIDES)
    return "ok"


@action
def guide_next(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Go on to the guide's next part, or say it has ended."""
    part = int(data.guide_part or "1") + 1
    if part > PARTS:
        return "end"
    data.guide_part = str(part)
    return "ok"
