"""The guides (办事指南), read in short parts."""
from __future__ import annotations

from ivr.callflow.actions import CallContext, Data, action, completed, started
from ivr.callflow.machine import Event
from models.vocabulary import Service

PARTS = 3  # what to bring, where to go, how long it takes (ivr.callflow.flow.GUIDE_PARTS)


@action
def guide_start(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Start reading a guide from its first part (choosing a guide starts the service)."""
    data.guide_topic, data.guide_part = arg, "1"
    started(data, Service.GUIDES)
    _read(data, 1)
    return "ok"


@action
def guide_next(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Go on to the guide's next part, or say it has ended."""
    part = int(data.guide_part or "1") + 1
    if part > PARTS:
        return "end"
    data.guide_part = str(part)
    _read(data, part)
    return "ok"


def _read(data: Data, part: int) -> None:
    """A guide's last part read out completes the service (heard to its end)."""
    if part == PARTS:
        completed(data, Service.GUIDES)
