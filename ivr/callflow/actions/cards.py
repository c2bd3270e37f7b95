"""Card services: status, verbal loss report, release, history."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ivr.callflow.actions import CallContext, Data, action, completed, verified
from ivr.callflow.machine import Event
from models import services
from models.cards import IN_PRODUCTION, CardRuleError, newest_first, newest_live
from models.ledger_rows import CardRow, HistoryRow, history_of
from models.vocabulary import Service

HISTORY_READ = 5  # history rows read back, the most recent
HISTORY_PAGE = 2  # ...two at a time (one stretch of speech: tests/test_prompt_budget.py)


def _cards(ctx: CallContext, data: Data) -> tuple[CardRow, ...]:
    """The verified caller's cards to read back, each with its newest history rows."""
    return services.cards_to_read(ctx.uow.runs_on, verified(data), now=ctx.now, policy=ctx.settings.loss,
                                  history=HISTORY_READ)


def remember(ctx: CallContext, data: Data, card: CardRow) -> None:
    """Keep what the prompts say about the card: last four digits, status, dates."""
    data.card_id = card.id
    data.card_last4 = card.last4
    data.card_status = card.status
    data.status_detail = card.status
    expires = card.loss_expires_at
    data.loss_at_expiry = ctx.settings.loss.at_expiry  # what happens at expiry (said on request)
    data.loss_expires_on = expires.astimezone(ctx.settings.tz).date().isoformat() if expires else None
    data.expected_on = None
    if card.status == IN_PRODUCTION:
        replacement = "_replacement" if card.is_replacement() else ""
        data.production_stage = card.production_stage or "accepted"
        data.status_detail = f"in_production{replacement}"
        if card.applied_on is None:
            data.status_detail = f"in_production{replacement}_undated"
        else:
            due = ctx.settings.calendar.add_workdays(card.applied_on, ctx.settings.issue_working_days)
            data.expected_on = due.isoformat()


@action
def load_card(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Find the card the phone acts on (the newest not cancelled) and say its status."""
    cards = _cards(ctx, data)
    card = newest_live(cards) or next(iter(newest_first(cards)), None)
    if card is None:
        ctx.facts.setdefault("card", None)
        return "no_card"
    remember(ctx, data, card)
    if "card" not in ctx.facts:
        ctx.facts["card"] = snapshot(ctx, card)
    if data.pending == "status":
        completed(data, Service.STATUS)
    return card.status


def recent_events(ctx: CallContext, card: CardRow) -> list[HistoryRow]:
    """Return the card's last few history rows, newest first."""
    return history_of(ctx.uow.runs_on, card, HISTORY_READ)


def snapshot(ctx: CallContext, card: CardRow, history: bool = True) -> dict[str, Any]:
    """Describe a card as a replay fixture needs it: no holder identity, last four digits only."""
    return {
        "last4": card.last4,
        "status": card.status,
        "applied_on": card.applied_on.isoformat() if card.applied_on else None,
        "status_before_loss": card.status_before_loss,
        "loss_expires_at": card.loss_expires_at.isoformat() if card.loss_expires_at else None,
        "history": [
            {"status": e.status_after, "at": e.at.isoformat(), "channel": e.channel}
            for e in reversed(recent_events(ctx, card))
        ] if history else None,
    }


def _card_id(data: Data) -> int:
    """Return the card the caller heard about (a card action runs only after `load_card`)."""
    if data.card_id is None:
        raise RuntimeError("a card action ran before the card was loaded")
    return data.card_id


def _card(ctx: CallContext, data: Data) -> CardRow:
    card_id = _card_id(data)
    for card in _cards(ctx, data):
        if card.id == card_id:
            return card
    raise services.NotFound(f"cardholder {data.holder_id} has no card {card_id}")


def _change(ctx: CallContext, data: Data, operation: Callable[..., CardRow], service: Service) -> str:
    """Run a card change of `models.services` on the caller's card; say refused when the rules say no."""
    try:
        card = operation(ctx.uow.runs_on, verified(data), _card_id(data), now=ctx.now, actor=ctx.actor(),
                         policy=ctx.settings.loss, tz=ctx.settings.tz)
    except CardRuleError:
        return "refused"
    remember(ctx, data, card)
    ctx.facts["card_after"] = snapshot(ctx, card, history=False)
    completed(data, service)
    return "done"


@action
def report_loss(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Report the card lost by phone (口头挂失), if its status allows."""
    data.loss_at_expiry = ctx.settings.loss.at_expiry
    return _change(ctx, data, services.report_verbal_loss, Service.LOSS)


@action
def release_loss(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Release the card's verbal loss report (解挂), if it has one."""
    return _change(ctx, data, services.release_verbal_loss, Service.RELEASE)


def history_page(ctx: CallContext, data: Data, offset: int) -> bool:
    """Put a page of the card's recent changes (newest first) where the prompts read them; tell if any."""
    recent = recent_events(ctx, _card(ctx, data))[offset:offset + HISTORY_PAGE]
    data.history = [
        {"date": e.at.astimezone(ctx.settings.tz).date().isoformat(), "status": e.status_after}
        for e in recent
    ]
    data.history_offset = offset
    return bool(recent)


@action
def load_history(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Read the card's most recent status changes, newest first, a page at a time."""
    return "ok" if history_page(ctx, data, 0) else "empty"


@action
def more_history(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Read the next page of the recent changes, or say there are no more."""
    return "ok" if history_page(ctx, data, data.history_offset + HISTORY_PAGE) else "end"


@action
def activate_card(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Activate a card that was made but not yet activated (激活)."""
    return _change(ctx, data, services.activate, Service.ACTIVATE)
