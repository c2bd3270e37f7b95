"""The card ledger: cardholders, cards and their history, with the rules of every status change.

Every change of a card's status goes through a method of `Card`, which refuses what the rules
forbid (raising `CardRuleError`) and appends a `CardEvent` saying who, through which channel,
when and why. The hotline, the agent console and the importer all call these methods.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Date, ForeignKey, Index, Integer, String, bindparam, inspect, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Statement, database_of, prepare

IN_PRODUCTION = "in_production"
PENDING_ACTIVATION = "pending_activation"
NORMAL = "normal"
VERBAL_LOSS = "verbal_loss"
FORMAL_LOSS = "formal_loss"
CANCELLED = "cancelled"
STATUSES = (IN_PRODUCTION, PENDING_ACTIVATION, NORMAL, VERBAL_LOSS, FORMAL_LOSS, CANCELLED)
# Where a card in production is (the cities' "办卡进度"): accepted, being made, at the bank, at the outlet.
STAGES = ("accepted", "making", "bank_received", "outlet_ready")

# Which statuses each change may start from.
ALLOWED_FROM = {
    "activate": {PENDING_ACTIVATION},
    "report_verbal_loss": {NORMAL, PENDING_ACTIVATION},
    "release_verbal_loss": {VERBAL_LOSS},
    "lapse_verbal_loss": {VERBAL_LOSS},
}


class CardRuleError(Exception):
    """A change the card rules forbid for the card's current status."""

    def __init__(self, change: str, status: str):
        super().__init__(f"{change} is not allowed for a card that is {status}")
        self.change = change
        self.status = status


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the channel, and the person or call behind it."""

    channel: str  # ivr, agent, import, system, bank, web, app
    who: str | None = None  # agent id, bank teller, ...
    call_sid: str | None = None


SYSTEM = Actor("system")


@dataclass(frozen=True)
class LossPolicy:
    """The city's verbal loss report rules (config.yaml `loss`)."""

    verbal_valid_days: int = 7
    at_expiry: str = "release"  # release: back to the previous status; cancel: card cancelled


class Cardholder(Base):
    """A person who holds social security cards."""

    __tablename__ = "cardholders"

    id: Mapped[int] = mapped_column(primary_key=True)
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    # The keyed hash the phone looks a holder up by, so call state never keeps the ID number.
    id_key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    mobile: Mapped[str | None] = mapped_column(String(20))
    pin_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    cards: Mapped[list[Card]] = relationship(
        back_populates="holder", order_by="Card.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[HolderEvent]] = relationship(order_by="HolderEvent.id", cascade="all, delete-orphan")

    def change_mobile(self, mobile: str, *, now: datetime, actor: Actor) -> None:
        """Change the contact mobile (already validated), leaving a history row with both masked."""
        from models.identity import mask_phone

        before = self.mobile
        self.mobile = mobile
        append_history(self, HolderEvent(
            at=now, kind="mobile_changed", channel=actor.channel, actor=actor.who, call_sid=actor.call_sid,
            detail=f"{mask_phone(before)} -> {mask_phone(mobile)}",
        ))

    def change_pin(self, new_hash: str, *, now: datetime, actor: Actor) -> None:
        """Replace the PIN (given as its keyed hash), leaving a history row without it."""
        self.pin_hash = new_hash
        append_history(self, HolderEvent(at=now, kind="pin_changed", channel=actor.channel, actor=actor.who,
                                         call_sid=actor.call_sid, detail="service PIN changed"))

    def newest_card(self) -> Card | None:
        """Return the card the phone acts on: the newest one that is not cancelled."""
        live = [c for c in self.cards if c.status != CANCELLED]
        return max(live, key=Card.age_key, default=None)

    def cards_newest_first(self) -> list[Card]:
        """Return every card, the newest first."""
        return sorted(self.cards, key=Card.age_key, reverse=True)


class Card(Base):
    """One social security card and its current status."""

    __tablename__ = "cards"

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("cardholders.id"), index=True)
    card_number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(24))
    bank: Mapped[str | None] = mapped_column(String(64))
    applied_on: Mapped[date | None] = mapped_column(Date)
    status_before_loss: Mapped[str | None] = mapped_column(String(24))
    loss_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    loss_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which functions a loss report froze: social_security, financial or both.
    loss_scope: Mapped[str | None] = mapped_column(String(24))
    # For a card in production: which stage of making it has reached (None: just accepted).
    production_stage: Mapped[str | None] = mapped_column(String(24))
    version: Mapped[int] = mapped_column(Integer, default=1)

    holder: Mapped[Cardholder] = relationship(back_populates="cards")
    events: Mapped[list[CardEvent]] = relationship(
        back_populates="card", order_by="CardEvent.id", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}
    # The expiry job's search at city size: only cards under a verbal loss report, by expiry.
    __table_args__ = (Index("ix_cards_verbal_loss_expiry", "loss_expires_at",
                            postgresql_where=text("status = 'verbal_loss'"),
                            sqlite_where=text("status = 'verbal_loss'")),)

    def age_key(self) -> tuple[date, int]:
        """Order cards by application date, then by when the ledger learnt of them."""
        return (self.applied_on or date.min, self.id or 0)

    def replaced(self) -> bool:
        """Tell whether a newer card has been applied for in this card's place."""
        mine = self.age_key()
        return any(c is not self and c.status != CANCELLED and c.age_key() > mine for c in self.holder.cards)

    @property
    def last4(self) -> str:
        """Return the last four characters of the card number."""
        return self.card_number[-4:]

    def open(self, status: str, *, now: datetime, actor: Actor, reason: str, policy: LossPolicy) -> None:
        """Record the card's first status, as the importer or a counter learns of it."""
        self._check_known(status)
        self._start_loss_if(status, now, policy)
        self._change(None, status, now=now, actor=actor, reason=reason)

    def sync_status(
        self, status: str, *, now: datetime, actor: Actor, reason: str, policy: LossPolicy
    ) -> bool:
        """Take the status another system of record reports; record it if it differs."""
        self._check_known(status)
        if status == self.status:
            return False
        self._clear_loss()
        self._start_loss_if(status, now, policy, before=self.status)
        self._change(self.status, status, now=now, actor=actor, reason=reason)
        return True

    @staticmethod
    def _check_known(status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown card status {status!r}")

    def _start_loss_if(self, status: str, now: datetime, policy: LossPolicy, before: str = NORMAL) -> None:
        # A verbal loss learnt from elsewhere lapses like one reported here, from when we learn it.
        if status == VERBAL_LOSS:
            self.status_before_loss = before if before in ALLOWED_FROM["report_verbal_loss"] else NORMAL
            self.loss_reported_at = now
            self.loss_expires_at = now + timedelta(days=policy.verbal_valid_days)
            self.loss_scope = "both"

    def report_verbal_loss(
        self, *, now: datetime, actor: Actor, policy: LossPolicy, scope: str = "both"
    ) -> datetime:
        """Freeze the card at once by a verbal loss report; return when the report lapses."""
        self._require("report_verbal_loss")
        self.status_before_loss = self.status
        self.loss_reported_at = now
        self.loss_expires_at = now + timedelta(days=policy.verbal_valid_days)
        self.loss_scope = scope
        self._change(self.status, VERBAL_LOSS, now=now, actor=actor, reason="verbal loss report")
        return self.loss_expires_at

    def activate(self, *, now: datetime, actor: Actor) -> None:
        """Activate a card that was made (封存): its social-security functions start."""
        self._require("activate")
        self._change(PENDING_ACTIVATION, NORMAL, now=now, actor=actor, reason="activated")

    def advance_production(self, stage: str) -> None:
        """Note how far the making of the card has got (the bank reports it; no status change)."""
        if stage not in STAGES:
            raise ValueError(f"unknown production stage {stage!r}")
        if self.status != IN_PRODUCTION:
            raise CardRuleError("advance_production", self.status)
        self.production_stage = stage

    def is_replacement(self) -> bool:
        """Tell whether an older card of the holder was lost formally: this one replaces it."""
        mine = self.age_key()
        return any(c is not self and c.status == FORMAL_LOSS and c.age_key() < mine for c in self.holder.cards)

    def release_verbal_loss(self, *, now: datetime, actor: Actor) -> str:
        """Release a verbal loss report: the card returns to the status it had before."""
        self._require("release_verbal_loss")
        if self.replaced():
            raise CardRuleError("release_verbal_loss", "replaced")
        back = self.status_before_loss or NORMAL
        self._clear_loss()
        self._change(VERBAL_LOSS, back, now=now, actor=actor, reason="verbal loss report released")
        return back

    def lapse_if_due(self, *, now: datetime, policy: LossPolicy) -> bool:
        """Let a verbal loss report lapse once its validity has run out; tell whether it did."""
        if self.status != VERBAL_LOSS or self.loss_expires_at is None or now < self.loss_expires_at:
            return False
        at = self.loss_expires_at
        back = CANCELLED if policy.at_expiry == "cancel" else (self.status_before_loss or NORMAL)
        self._clear_loss()
        self._change(VERBAL_LOSS, back, now=at, actor=SYSTEM, reason="verbal loss report lapsed")
        return True

    def _clear_loss(self) -> None:
        self.status_before_loss = None
        self.loss_reported_at = None
        self.loss_expires_at = None
        self.loss_scope = None

    def _require(self, change: str) -> None:
        if self.status not in ALLOWED_FROM[change]:
            raise CardRuleError(change, self.status)

    def _change(
        self, before: str | None, after: str, *, now: datetime, actor: Actor, reason: str
    ) -> None:
        self.status = after
        append_history(
            self,
            CardEvent(
                at=now,
                status_before=before,
                status_after=after,
                channel=actor.channel,
                actor=actor.who,
                call_sid=actor.call_sid,
                reason=reason,
            ),
        )


def append_history(owner: Cardholder | Card, event: CardEvent | HolderEvent) -> None:
    """Add a history row to a holder or a card without loading the whole history first.

    History is append-only, so a row that is not loaded yet need not be read to add one: the
    new row goes to the session, keyed to its owner, and any later read of the history has it.
    """
    state = inspect(owner)
    if state.persistent and "events" in state.unloaded:
        if isinstance(event, CardEvent):
            event.card_id = owner.id
        else:
            event.holder_id = owner.id
        state.session.add(event)
    else:
        owner.events.append(event)


class CardEvent(Base):
    """One row of a card's history: every status change, never updated or deleted."""

    __tablename__ = "card_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_before: Mapped[str | None] = mapped_column(String(24))
    status_after: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    call_sid: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(128))

    card: Mapped[Card] = relationship(back_populates="events")


class HolderEvent(Base):
    """One change to a cardholder's own details (contact mobile …), never updated or deleted."""

    __tablename__ = "holder_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("cardholders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    call_sid: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(128))  # masked: no full mobile number


def holder_by_id_number(session: Session, id_number: str, *, lock: bool = False) -> Cardholder | None:
    """Find a cardholder by ID number (locked for the unit of work when it will change them)."""
    q = select(Cardholder).where(Cardholder.id_number == id_number)
    return session.scalars(q.with_for_update() if lock else q).first()


class Credentials(NamedTuple):
    """What checking a PIN needs of a cardholder, and nothing more."""

    id: int
    id_number: str
    pin_hash: str | None


def credentials_by_key(session: Session, key: str) -> Credentials | None:
    """Return the credentials of the cardholder with this keyed ID number, if any (every verification).

    One statement through `models.storage.fastpath`, which flushes the session first.
    """
    row = _credentials_statement(*database_of(session)).first(session, {"key": key})
    return Credentials(*row) if row else None


@functools.lru_cache(maxsize=16)
def _credentials_statement(dialect: Any, fast: bool) -> Statement:
    return prepare(select(Cardholder.id, Cardholder.id_number, Cardholder.pin_hash)
                   .where(Cardholder.id_key == bindparam("key")).limit(1), dialect, fast=fast)


def settle(holder: Cardholder, *, now: datetime, policy: LossPolicy) -> None:
    """Apply every change that time alone makes (lapsed loss reports) before a read."""
    for card in holder.cards:
        card.lapse_if_due(now=now, policy=policy)
