"""The ledger as a test sees it: holders put in through the importer's own code, cards read back."""
from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import func, select

from models.cards import Card, CardEvent, Cardholder, holder_by_id_number
from models.clock import utcnow
from models.ledger_io import load_rows, rows_from
from tests.support.constants import PIN


class Ledger:
    """Puts cardholders in the ledger and reads cards back, as a test sees them."""

    def __init__(self, app):
        self.app = app
        self.sessions = app.extensions["sessions"]
        self.settings = app.extensions["settings"]

    def add(self, id_number: str, status: str = "normal", pin: str = PIN, card: str | None = None,
            applied_on: date | None = date(2024, 3, 1), name: str = "测试", mobile: str = "13800000001") -> None:
        """Add a holder (or a card to one) through the importer's own code."""
        record = dict(id_number=id_number, name=name, card_number=card or f"QD{id_number[-10:]}",
                      status=status, pin=pin, mobile=mobile, bank="青岛银行",
                      applied_on=applied_on.isoformat() if applied_on else "")
        with self.sessions() as s, s.begin():
            load_rows(s, rows_from([record]), key=self.settings.pin_key, now=utcnow(), policy=self.settings.loss)

    def card(self, card_number: str) -> Card:
        """Return a card by number (detached, with its history loaded)."""
        with self.sessions() as s:
            card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
            card.events  # noqa: B018  (load the history before the session closes)
            return card

    def history(self, card_number: str) -> list[tuple[Any, ...]]:
        """Return (before, after, channel, call_sid) for each history row, oldest first."""
        with self.sessions() as s:
            card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
            rows = s.scalars(select(CardEvent).where(CardEvent.card_id == card.id).order_by(CardEvent.id))
            return [(e.status_before, e.status_after, e.channel, e.call_sid) for e in rows]

    def holder(self, id_number: str):
        """Return a cardholder by ID number."""
        with self.sessions() as s:
            return holder_by_id_number(s, id_number)


def card_of(id_number: str) -> str:
    """Return the card number the ledger helper gives an ID number's first card."""
    return f"QD{id_number[-10:]}"


def counts(app) -> tuple[int, int, int]:
    """Return how many holders, cards and card history rows the ledger holds."""
    with app.extensions["sessions"]() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Cardholder, Card, CardEvent))
