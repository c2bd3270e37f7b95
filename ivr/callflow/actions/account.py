"""The medical insurance personal account read back, and the contact mobile changed by keypad."""
from __future__ import annotations

from ivr.callflow.actions import CallContext, Data, action, completed, take_number, verified
from ivr.callflow.actions.auth import heard_number
from ivr.callflow.machine import Event
from models import services
from models.medical import recent, yuan_jiao
from models.phones import normalise_mobile
from models.vocabulary import Service

PAGE = 1  # records read back at a time: one record is one stretch of speech (tests/test_prompt_budget.py)


def page(ctx: CallContext, data: Data, offset: int) -> bool:
    """Put a page of records, most recent first, where the prompts read them; tell if any."""
    rows = recent(ctx.uow.session, verified(data), offset=offset, limit=PAGE)
    tz = ctx.settings.tz
    data.records = [
        {"date": r.at.astimezone(tz).date().isoformat(), "kind": r.kind, "amount": yuan_jiao(r.amount_fen),
         "institution": r.institution}
        for r in rows
    ]
    data.account_offset = offset
    return bool(rows)


@action
def load_account(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Read the balance and the five most recent records."""
    latest = recent(ctx.uow.session, verified(data), offset=0, limit=1)
    if not latest:
        return "no_records"
    data.balance = yuan_jiao(latest[0].balance_fen)
    page(ctx, data, 0)
    completed(data, Service.ACCOUNT)
    return "ok"


@action
def more_records(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Read the next five records, or say there are no more."""
    return "ok" if page(ctx, data, data.account_offset + PAGE) else "end"


@action
def accept_mobile(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Take a new contact mobile (keyed or spoken, "+86" and all), checked as a Chinese mobile number;
    the flow reads it back before it is saved (mobile_confirm)."""
    return take_number(ctx, data, heard_number(event, normalise_mobile, phone=True)[0], "new_mobile")


@action
def change_mobile(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Save the confirmed contact mobile, with a history row holding it masked."""
    mobile, data.new_mobile = data.new_mobile, None
    services.change_mobile(ctx.uow.runs_on, verified(data), mobile or "", now=ctx.now, actor=ctx.actor(),
                           tz=ctx.settings.tz)
    completed(data, Service.CONTACT)
    return "done"
