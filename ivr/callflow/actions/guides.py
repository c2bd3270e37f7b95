"""The guides (办事指南), read in short parts."""
from __future__ import annotations

from ivr.callflow.actions import CallContext, Data, action, completed, started
from ivr.callflow.flow import GUIDE_PARTS
from ivr.callflow.machine import Event
from models.vocabulary import Service


@action
def guide_start(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Start reading a guide from its first part (choosing a guide starts the service)."""
    data.guide_topic = arg
    started(data, Service.GUIDES)
    _read(data, 1)
    return "ok"


@action
def guide_next(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Go on to the guide's next part, or say it has ended."""
    part = int(data.guide_part or "1") + 1
    if part > GUIDE_PARTS.get(data.guide_topic or "", 0):
        return "end"
    _read(data, part)
    return "ok"


def _read(data: Data, part: int) -> None:
    """Say a part of the guide (guide.<topic>.<part>); its last part read out completes the service."""
    data.guide_part = str(part)
    data.guide_section = f"{data.guide_topic}.{part}"
    if part == GUIDE_PARTS.get(data.guide_topic or "", 0):
        completed(data, Service.GUIDES)
