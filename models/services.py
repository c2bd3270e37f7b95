"""The card operations every channel runs — the phone, the agent console — over the ledger rules.

Each takes the unit of work (its session, or its connection when no session was opened: the phone's
steps) and changes nothing it cannot finish: the caller commits.
The rules themselves (what each status allows, the history rows) live in `models.cards`; these
read and write the rows the rules decide on through `models.ledger_rows` (compiled Core
statements, the fast path), and return its plain rows (`HolderRow`, `CardRow`, `HistoryRow`).
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.cards import (
    VERBAL_LOSS,
    Actor,
    Card,
    Cardholder,
    CardRuleError,
    LossPolicy,
    activation,
    lapse_outcome,
    mobile_change_event,
    pin_change_event,
    release,
    verbal_loss_report,
)
from models.clock import SHANGHAI
from models.ledger_rows import CardRow, HolderRow, ledger_rows
from models.notifications import outbox
from models.phones import normalise_mobile
from models.storage.fastpath import Unit


class NotFound(LookupError):
    """No such cardholder, or no such card of that cardholder."""


class InvalidMobile(ValueError):
    """Not a Chinese mobile number."""


def load_holder(session: Unit, holder_id: int, *, now: datetime, policy: LossPolicy) -> HolderRow:
    """Return a cardholder with every change time alone made (lapsed loss reports) applied."""
    # Locked for the unit of work: every channel changes a holder's cards one at a time, so a
    # change always starts from the status the card really has.
    # Two statements, not one join: on PostgreSQL a row locked after waiting is re-read, but the
    # rows joined to it are not, so cards read with the lock could be another writer's old ones
    # (tests/test_production.py, concurrent channels, caught exactly that).
    rows = ledger_rows(session)
    holder = rows.holder_for_update(session, holder_id)
    if holder is None:
        raise NotFound(f"no cardholder {holder_id}")
    for card in holder.cards:  # as `models.cards.settle`, written through the ledger's statements
        lapse = lapse_outcome(card.state, now=now, policy=policy)
        if lapse is not None:
            rows.apply(session, card, lapse)
    return holder


def cards_to_read(session: Unit, holder_id: int, *, now: datetime, policy: LossPolicy,
                  history: int) -> tuple[CardRow, ...]:
    """Return a cardholder's cards to read back to them, each with its newest `history` rows
    (`models.ledger_rows.history_of` reads them from the card).

    One statement, not locked, when time has changed none of them: a read-back changes nothing, and
    the statement reads the ledger as it stood at one moment. When a loss report has lapsed (or no
    card is found: perhaps no holder either), as `load_holder`: locked, settled, written.
    """
    cards = ledger_rows(session).cards_to_read(session, holder_id, history)
    if not cards or any(lapse_outcome(card.state, now=now, policy=policy) is not None for card in cards):
        return load_holder(session, holder_id, now=now, policy=policy).cards
    return cards


def holder_card(session: Unit, holder_id: int, card_id: int, *, now: datetime, policy: LossPolicy) -> CardRow:
    """Return one card of a cardholder (never another holder's), settled."""
    return _holder_and_card(session, holder_id, card_id, now=now, policy=policy)[1]


def _holder_and_card(
    session: Unit, holder_id: int, card_id: int, *, now: datetime, policy: LossPolicy
) -> tuple[HolderRow, CardRow]:
    holder = load_holder(session, holder_id, now=now, policy=policy)
    for card in holder.cards:
        if card.id == card_id:
            return holder, card
    raise NotFound(f"cardholder {holder_id} has no card {card_id}")


def report_verbal_loss(
    session: Unit, holder_id: int, card_id: int, *, now: datetime, actor: Actor, policy: LossPolicy,
    tz: ZoneInfo = SHANGHAI, notify: bool = True,
) -> CardRow:
    """Report a card lost (口头挂失); raises CardRuleError when its status forbids it.

    Queues an SMS to the holder's mobile in the same unit of work (`tz`: the local time it states).
    """
    holder, card = _holder_and_card(session, holder_id, card_id, now=now, policy=policy)
    change = verbal_loss_report(card.state, now=now, actor=actor, policy=policy)
    expires_at = change.state.loss_expires_at
    if expires_at is None:
        raise RuntimeError("a verbal loss report without an expiry")  # the rules always give one
    text = outbox.loss_reported(holder, card.last4, expires_at=expires_at, now=now, tz=tz) if notify else None
    ledger_rows(session).apply(session, card, change, text=text)
    return card


def release_verbal_loss(
    session: Unit, holder_id: int, card_id: int, *, now: datetime, actor: Actor, policy: LossPolicy,
    tz: ZoneInfo = SHANGHAI, notify: bool = True,
) -> CardRow:
    """Release a card's verbal loss report (解挂); raises CardRuleError when there is none, or when
    a newer card replaced this one (as `Card.release_verbal_loss`).

    Queues an SMS to the holder's mobile in the same unit of work.
    """
    holder, card = _holder_and_card(session, holder_id, card_id, now=now, policy=policy)
    change = release(card.state, now=now, actor=actor)
    if card.replaced():
        raise CardRuleError("release_verbal_loss", "replaced")
    text = outbox.loss_released(holder, card.last4, now=now, tz=tz) if notify else None
    ledger_rows(session).apply(session, card, change, text=text)
    return card


def activate(
    session: Unit, holder_id: int, card_id: int, *, now: datetime, actor: Actor, policy: LossPolicy,
    tz: ZoneInfo = SHANGHAI,
) -> CardRow:
    """Activate a card that was made (激活); raises CardRuleError for any other status (no SMS)."""
    card = holder_card(session, holder_id, card_id, now=now, policy=policy)
    ledger_rows(session).apply(session, card, activation(card.state, now=now, actor=actor))
    return card


def change_mobile(
    session: Unit, holder_id: int, raw: str, *, now: datetime, actor: Actor,
    tz: ZoneInfo = SHANGHAI, notify: bool = True,
) -> str:
    """Change a cardholder's contact mobile after checking it; return it in E.164.

    Queues an SMS to the new mobile and one to the old mobile (if any, and different), in the same
    unit of work: the old number's owner learns of a change they may not have made.
    """
    mobile = normalise_mobile(raw)
    if mobile is None:
        raise InvalidMobile(raw)
    rows = ledger_rows(session)
    holder = rows.holder_for_update(session, holder_id, cards=False)  # the holder's row alone, locked
    if holder is None:
        raise NotFound(f"no cardholder {holder_id}")
    before = holder.mobile
    texts = outbox.mobile_changed(holder.id, mobile, before, now=now, tz=tz) if notify else []
    rows.change_holder(session, holder, "mobile", mobile,
                       event=mobile_change_event(before, mobile, now=now, actor=actor), texts=texts)
    return mobile


def verified_holder(session: Unit, holder_id: int) -> HolderRow:
    """Return the verified caller's cardholder row (without cards; not locked, as a PIN change needs)."""
    holder = ledger_rows(session).holder(session, holder_id)
    if holder is None:
        raise NotFound(f"no cardholder {holder_id}")
    return holder


def change_pin(session: Unit, holder: HolderRow, new_hash: str, *, now: datetime, actor: Actor) -> None:
    """Replace a holder's service PIN (given as its keyed hash), with a history row without it (as
    `Cardholder.change_pin`)."""
    ledger_rows(session).change_holder(session, holder, "pin_hash", new_hash,
                                       event=pin_change_event(now=now, actor=actor))


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
