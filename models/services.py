"""The card operations every channel runs — the phone, the agent console — over the ledger rules.

Each takes the unit of work's session and changes nothing it cannot finish: the caller commits.
The rules themselves (what each status allows, the history rows) live in `models.cards`.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.cards import VERBAL_LOSS, Actor, Card, CardEvent, Cardholder, LossPolicy, settle
from models.clock import SHANGHAI
from models.notifications import outbox
from models.phones import normalise_mobile


class NotFound(LookupError):
    """No such cardholder, or no such card of that cardholder."""


class InvalidMobile(ValueError):
    """Not a Chinese mobile number."""


def load_holder(session: Session, holder_id: int, *, now: datetime, policy: LossPolicy) -> Cardholder:
    """Return a cardholder with every change time alone made (lapsed loss reports) applied."""
    # Locked for the unit of work: every channel changes a holder's cards one at a time, so a
    # change always starts from the status the card really has.
    # Two statements, not one join: on PostgreSQL a row locked after waiting is re-read, but the
    # rows joined to it are not, so cards read with the lock could be another writer's old ones
    # (tests/test_production.py, concurrent channels, caught exactly that).
    holder = session.get(Cardholder, holder_id, with_for_update=True)
    if holder is None:
        raise NotFound(f"no cardholder {holder_id}")
    settle(holder, now=now, policy=policy)
    return holder


def recent_history(session: Session, card_id: int, *, limit: int) -> list[CardEvent]:
    """Return a card's last few history rows, newest first, without loading all of them."""
    q = select(CardEvent).where(CardEvent.card_id == card_id).order_by(CardEvent.id.desc()).limit(limit)
    return list(session.scalars(q))


def holder_card(session: Session, holder_id: int, card_id: int, *, now: datetime, policy: LossPolicy) -> Card:
    """Return one card of a cardholder (never another holder's), settled."""
    return _holder_and_card(session, holder_id, card_id, now=now, policy=policy)[1]


def _holder_and_card(
    session: Session, holder_id: int, card_id: int, *, now: datetime, policy: LossPolicy
) -> tuple[Cardholder, Card]:
    holder = load_holder(session, holder_id, now=now, policy=policy)
    for card in holder.cards:
        if card.id == card_id:
            return holder, card
    raise NotFound(f"cardholder {holder_id} has no card {card_id}")


def report_verbal_loss(
    session: Session, holder_id: int, card_id: int, *, now: datetime, actor: Actor, policy: LossPolicy,
    tz: ZoneInfo = SHANGHAI, notify: bool = True,
) -> Card:
    """Report a card lost (口头挂失); raises CardRuleError when its status forbids it.

    Queues an SMS to the holder's mobile in the same unit of work (`tz`: the local time it states).
    """
    holder, card = _holder_and_card(session, holder_id, card_id, now=now, policy=policy)
    card.report_verbal_loss(now=now, actor=actor, policy=policy)
    if notify:
        outbox.notify_loss_reported(session, holder, card, now=now, tz=tz)
    return card


def release_verbal_loss(
    session: Session, holder_id: int, card_id: int, *, now: datetime, actor: Actor, policy: LossPolicy,
    tz: ZoneInfo = SHANGHAI, notify: bool = True,
) -> Card:
    """Release a card's verbal loss report (解挂); raises CardRuleError when there is none.

    Queues an SMS to the holder's mobile in the same unit of work.
    """
    holder, card = _holder_and_card(session, holder_id, card_id, now=now, policy=policy)
    card.release_verbal_loss(now=now, actor=actor)
    if notify:
        outbox.notify_loss_released(session, holder, card, now=now, tz=tz)
    return card


def activate(
    session: Session, holder_id: int, card_id: int, *, now: datetime, actor: Actor, policy: LossPolicy,
    tz: ZoneInfo = SHANGHAI,
) -> Card:
    """Activate a card that was made (激活); raises CardRuleError for any other status (no SMS)."""
    card = holder_card(session, holder_id, card_id, now=now, policy=policy)
    card.activate(now=now, actor=actor)
    return card


def change_mobile(
    session: Session, holder_id: int, raw: str, *, now: datetime, actor: Actor,
    tz: ZoneInfo = SHANGHAI, notify: bool = True,
) -> str:
    """Change a cardholder's contact mobile after checking it; return it in E.164.

    Queues an SMS to the new mobile and one to the old mobile (if any, and different), in the same
    unit of work: the old number's owner learns of a change they may not have made.
    """
    mobile = normalise_mobile(raw)
    if mobile is None:
        raise InvalidMobile(raw)
    # Two statements, not one join: on PostgreSQL a row locked after waiting is re-read, but the
    # rows joined to it are not, so cards read with the lock could be another writer's old ones
    # (tests/test_production.py, concurrent channels, caught exactly that).
    holder = session.get(Cardholder, holder_id, with_for_update=True)
    if holder is None:
        raise NotFound(f"no cardholder {holder_id}")
    before = holder.mobile
    holder.change_mobile(mobile, now=now, actor=actor)
    if notify:
        outbox.notify_mobile_changed(session, holder, before, now=now, tz=tz)
    return mobile


def expire_due(session: Session, *, now: datetime, policy: LossPolicy, batch: int = 500) -> int:
    """Let lapse every verbal loss report whose validity has run out; return how many lapsed.

    Safe on every host at once: each takes the holders nobody else holds (SKIP LOCKED on
    PostgreSQL), the same lock the phone and the console take before changing a card.
    """
    due = (select(Cardholder).join(Card).where(Card.status == VERBAL_LOSS, Card.loss_expires_at <= now)
           .limit(batch).with_for_update(skip_locked=True, of=Cardholder))
    lapsed = 0
    for holder in session.scalars(due).unique():
        for card in holder.cards:
            lapsed += card.lapse_if_due(now=now, policy=policy)
    return lapsed
