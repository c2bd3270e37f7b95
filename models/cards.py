"""The card ledger: cardholders, cards and their history, with the rules of every status change.

The rules are small pure functions of a card's `CardState` (its status and its verbal loss
report), below: each refuses what the rules forbid (raising `CardRuleError`) or returns the
`Change` it makes, the card's new state and the values of the history row saying who, through
which channel, when and why. `Card`'s methods apply them to a card of the session: the hotline,
the agent console and the row-by-row load call those. `ledger import`'s set-based merge
(`models.storage.bulk`) calls the same functions (`import_change`, `import_opening`) and only
writes what they return, so no rule is spelt twice.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import Date, ForeignKey, Index, Integer, String, bindparam, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, validates
from sqlalchemy.orm.attributes import instance_state

from models.storage.db import Base, UTCDateTime
from models.storage.fastpath import Statement, Unit, database_of, prepare
from models.vocabulary import CardStatus, Channel

# The statuses, spelled once in models.vocabulary; short names for the rules below.
IN_PRODUCTION = CardStatus.IN_PRODUCTION
PENDING_ACTIVATION = CardStatus.PENDING_ACTIVATION
NORMAL = CardStatus.NORMAL
VERBAL_LOSS = CardStatus.VERBAL_LOSS
FORMAL_LOSS = CardStatus.FORMAL_LOSS
CANCELLED = CardStatus.CANCELLED


class Aged(Protocol):
    """What ordering a holder's cards needs of a card: the ORM's `Card` and the fast path's
    `models.ledger_rows.CardRow` both are one."""

    @property
    def status(self) -> str: ...

    def age_key(self) -> tuple[date, int]: ...


AgedCard = TypeVar("AgedCard", bound=Aged)


def newest_live(cards: Iterable[AgedCard]) -> AgedCard | None:
    """Return the card the phone acts on: the newest one that is not cancelled."""
    return max((c for c in cards if c.status != CANCELLED), key=lambda c: c.age_key(), default=None)


def newest_first(cards: Iterable[AgedCard]) -> list[AgedCard]:
    """Return every card, the newest first."""
    return sorted(cards, key=lambda c: c.age_key(), reverse=True)


def is_replaced(card: AgedCard, cards: Iterable[AgedCard]) -> bool:
    """Tell whether a newer card (not cancelled) has been applied for in this card's place."""
    mine = card.age_key()
    return any(c is not card and c.status != CANCELLED and c.age_key() > mine for c in cards)


def replaces_a_lost_card(card: AgedCard, cards: Iterable[AgedCard]) -> bool:
    """Tell whether an older card of the holder was lost formally: this one replaces it."""
    mine = card.age_key()
    return any(c is not card and c.status == FORMAL_LOSS and c.age_key() < mine for c in cards)
STATUSES = tuple(CardStatus)
# Where a card in production is (the cities' "办卡进度"): accepted, being made, at the bank, at the outlet.
STAGES = ("accepted", "making", "bank_received", "outlet_ready")

# Which statuses each change may start from.
ALLOWED_FROM = {
    "activate": {PENDING_ACTIVATION},
    "report_verbal_loss": {NORMAL, PENDING_ACTIVATION},
    "release_verbal_loss": {VERBAL_LOSS},
    "lapse_verbal_loss": {VERBAL_LOSS},
}
# The statuses time alone may change (a verbal loss report lapses); any other changes only when told.
CHANGED_BY_TIME = frozenset(ALLOWED_FROM["lapse_verbal_loss"])

# What each kind of change says in its history row (`CardEvent.reason`).
REASON_IMPORTED = "imported"  # a card new to the ledger, learnt from `ledger import`
REASON_FROM_IMPORT = "status from import"
REASON_LOSS_REPORTED = "verbal loss report"
REASON_LOSS_RELEASED = "verbal loss report released"
REASON_LOSS_LAPSED = "verbal loss report lapsed"
REASON_ACTIVATED = "activated"
# Each reason text by the key its Mandarin label takes in the catalogue (`label.note.<key>`); the
# texts stay as they are stored, the console shows the label.
REASON_KEYS = {
    REASON_IMPORTED: "imported", REASON_FROM_IMPORT: "from_import", REASON_LOSS_REPORTED: "loss_reported",
    REASON_LOSS_RELEASED: "loss_released", REASON_LOSS_LAPSED: "loss_lapsed", REASON_ACTIVATED: "activated",
}
# The kinds of change to a holder's own details (`HolderEvent.kind`, `label.change.<kind>`).
MOBILE_CHANGED, PIN_CHANGED = "mobile_changed", "pin_changed"
HOLDER_CHANGES = (MOBILE_CHANGED, PIN_CHANGED)


def mobile_change_event(before: str | None, mobile: str, *, now: datetime, actor: Actor) -> dict[str, Any]:
    """The history row of a contact mobile change (`HolderEvent`'s columns but its ids): both numbers masked."""
    from models.identity import mask_phone

    return {"at": now, "kind": MOBILE_CHANGED, "channel": actor.channel, "actor": actor.who,
            "call_sid": actor.call_sid, "detail": f"{mask_phone(before)} -> {mask_phone(mobile)}"}


def pin_change_event(*, now: datetime, actor: Actor) -> dict[str, Any]:
    """The history row of a PIN change (`HolderEvent`'s columns but its ids): never the PIN."""
    return {"at": now, "kind": PIN_CHANGED, "channel": actor.channel, "actor": actor.who, "call_sid": actor.call_sid,
            "detail": "service PIN changed"}


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


SYSTEM = Actor(Channel.SYSTEM)  # time alone: a verbal loss report lapsing
IMPORT = Actor(Channel.IMPORT)  # `ledger import`


@dataclass(frozen=True)
class LossPolicy:
    """The city's verbal loss report rules (config.yaml `loss`)."""

    verbal_valid_days: int = 7
    at_expiry: str = "release"  # release: back to the previous status; cancel: card cancelled


# --- The rules, as pure functions: no session, no SQL ------------------------------------------


class CardState(NamedTuple):
    """What the status rules read and write of a card: its status and its verbal loss report."""

    status: str
    status_before_loss: str | None = None
    loss_reported_at: datetime | None = None
    loss_expires_at: datetime | None = None
    loss_scope: str | None = None  # which functions a loss report froze: social_security, financial or both


class History(NamedTuple):
    """The values of one history row: the columns of `CardEvent` but its ids."""

    at: datetime
    status_before: str | None
    status_after: str
    channel: str
    actor: str | None
    call_sid: str | None
    reason: str


class Change(NamedTuple):
    """One change the rules allow: the card's state after it, and the history row that records it."""

    state: CardState
    history: History


def check_status(status: str) -> None:
    """Raise ValueError for a status the ledger does not know."""
    if status not in STATUSES:
        raise ValueError(f"unknown card status {status!r}")


def loss_expiry(reported_at: datetime, policy: LossPolicy) -> datetime:
    """Return when a verbal loss report made (or learnt of) at reported_at lapses."""
    return reported_at + timedelta(days=policy.verbal_valid_days)


def opening(status: str, *, now: datetime, actor: Actor, reason: str, policy: LossPolicy) -> Change:
    """A card's first status, as the importer or a counter learns of it."""
    check_status(status)
    return _change(None, _learnt(status, before=NORMAL, now=now, policy=policy), at=now, actor=actor, reason=reason)


def status_sync(
    state: CardState, status: str, *, now: datetime, actor: Actor, reason: str, policy: LossPolicy
) -> Change | None:
    """The status another system of record reports (any to any); None if the card has it already."""
    check_status(status)
    if status == state.status:
        return None
    after = _learnt(status, before=state.status, now=now, policy=policy)
    return _change(state.status, after, at=now, actor=actor, reason=reason)


def verbal_loss_report(
    state: CardState, *, now: datetime, actor: Actor, policy: LossPolicy, scope: str = "both"
) -> Change:
    """Freeze the card at once by a verbal loss report (from normal or pending activation only)."""
    _require("report_verbal_loss", state.status)
    after = CardState(VERBAL_LOSS, state.status, now, loss_expiry(now, policy), scope)
    return _change(state.status, after, at=now, actor=actor, reason=REASON_LOSS_REPORTED)


def activation(state: CardState, *, now: datetime, actor: Actor) -> Change:
    """Activate a card that was made (封存): its social-security functions start."""
    _require("activate", state.status)
    return _change(state.status, state._replace(status=NORMAL), at=now, actor=actor, reason=REASON_ACTIVATED)


def release(state: CardState, *, now: datetime, actor: Actor) -> Change:
    """Release a verbal loss report: back to the status before it (`Card` also refuses a replaced card)."""
    _require("release_verbal_loss", state.status)
    return _change(state.status, CardState(state.status_before_loss or NORMAL), at=now, actor=actor,
                   reason=REASON_LOSS_RELEASED)


def lapse_outcome(state: CardState, *, now: datetime, policy: LossPolicy) -> Change | None:
    """The lapse of a verbal loss report whose validity has run out by now; None if none is due.

    The card goes back to the status it had before the report, or is cancelled, as
    `policy.at_expiry` says; the lapse is dated at the expiry, not when it is noticed.
    """
    expires = state.loss_expires_at
    if state.status not in CHANGED_BY_TIME or expires is None or now < expires:
        return None
    back = CANCELLED if policy.at_expiry == "cancel" else (state.status_before_loss or NORMAL)
    return _change(state.status, CardState(back), at=expires, actor=SYSTEM, reason=REASON_LOSS_LAPSED)


def import_opening(status: str, *, now: datetime, policy: LossPolicy) -> Change:
    """What `ledger import` records for a card new to the ledger: its first status, from the file."""
    return opening(status, now=now, actor=IMPORT, reason=REASON_IMPORTED, policy=policy)


def import_change(state: CardState, status: str, *, now: datetime, policy: LossPolicy) -> list[Change]:
    """What `ledger import` does to a card already in the ledger whose line says `status`.

    What time did comes first: a verbal loss report due by now lapses; then the card takes the
    file's status if it differs from the one it has by then. Empty: the card does not change.
    """
    changes: list[Change] = []
    lapse = lapse_outcome(state, now=now, policy=policy)
    if lapse is not None:
        changes.append(lapse)
        state = lapse.state
    sync = status_sync(state, status, now=now, actor=IMPORT, reason=REASON_FROM_IMPORT, policy=policy)
    if sync is not None:
        changes.append(sync)
    return changes


def _learnt(status: str, *, before: str, now: datetime, policy: LossPolicy) -> CardState:
    # A verbal loss learnt from elsewhere lapses like one reported here, from when we learn it.
    if status != VERBAL_LOSS:
        return CardState(status)
    return CardState(VERBAL_LOSS, before if before in ALLOWED_FROM["report_verbal_loss"] else NORMAL, now,
                     loss_expiry(now, policy), "both")


def _require(change: str, status: str) -> None:
    if status not in ALLOWED_FROM[change]:
        raise CardRuleError(change, status)


def _change(before: str | None, after: CardState, *, at: datetime, actor: Actor, reason: str) -> Change:
    return Change(after, History(at, before, after.status, actor.channel, actor.who, actor.call_sid, reason))


class Cardholder(Base):
    """A person who holds social security cards."""

    __tablename__ = "cardholders"

    id: Mapped[int] = mapped_column(primary_key=True)
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    # The keyed hash the phone looks a holder up by, so call state never keeps the ID number.
    id_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The ID number's last four characters, set with it: the console finds a holder by name and these.
    id_last4: Mapped[str] = mapped_column(String(4))
    name: Mapped[str] = mapped_column(String(64))
    mobile: Mapped[str | None] = mapped_column(String(20), index=True)  # E.164; the console finds by it
    pin_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    cards: Mapped[list[Card]] = relationship(
        back_populates="holder", order_by="Card.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[HolderEvent]] = relationship(order_by="HolderEvent.id", cascade="all, delete-orphan")

    __table_args__ = (Index("ix_cardholders_name_last4", "name", "id_last4"),)

    @validates("id_number")
    def _keep_last4(self, _key: str, id_number: str) -> str:
        """Keep `id_last4` with the ID number, whoever writes the holder (the bulk import sets it in SQL)."""
        self.id_last4 = id_number[-4:]
        return id_number

    def change_mobile(self, mobile: str, *, now: datetime, actor: Actor) -> None:
        """Change the contact mobile (already validated), leaving a history row with both masked."""
        before = self.mobile
        self.mobile = mobile
        append_history(self, HolderEvent(**mobile_change_event(before, mobile, now=now, actor=actor)))

    def change_pin(self, new_hash: str, *, now: datetime, actor: Actor) -> None:
        """Replace the PIN (given as its keyed hash), leaving a history row without it."""
        self.pin_hash = new_hash
        append_history(self, HolderEvent(**pin_change_event(now=now, actor=actor)))

    def newest_card(self) -> Card | None:
        """Return the card the phone acts on: the newest one that is not cancelled."""
        return newest_live(self.cards)

    def cards_newest_first(self) -> list[Card]:
        """Return every card, the newest first."""
        return newest_first(self.cards)


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
        return is_replaced(self, self.holder.cards)

    @property
    def last4(self) -> str:
        """Return the last four characters of the card number."""
        return self.card_number[-4:]

    @property
    def state(self) -> CardState:
        """Return the card's status and verbal loss report, as the rules read them."""
        return CardState(self.status, self.status_before_loss, self.loss_reported_at, self.loss_expires_at,
                         self.loss_scope)

    def open(self, status: str, *, now: datetime, actor: Actor, reason: str, policy: LossPolicy) -> None:
        """Record the card's first status, as the importer or a counter learns of it."""
        self._apply(opening(status, now=now, actor=actor, reason=reason, policy=policy))

    def sync_status(
        self, status: str, *, now: datetime, actor: Actor, reason: str, policy: LossPolicy
    ) -> bool:
        """Take the status another system of record reports; record it if it differs."""
        change = status_sync(self.state, status, now=now, actor=actor, reason=reason, policy=policy)
        if change is not None:
            self._apply(change)
        return change is not None

    def open_from_import(self, status: str, *, now: datetime, policy: LossPolicy) -> None:
        """Record the first status of a card new to the ledger, as `ledger import` does."""
        self._apply(import_opening(status, now=now, policy=policy))

    def take_import(self, status: str, *, now: datetime, policy: LossPolicy) -> bool:
        """Do what `ledger import` does to this card when its line says status; tell whether it changed."""
        changes = import_change(self.state, status, now=now, policy=policy)
        for change in changes:
            self._apply(change)
        return bool(changes)

    def report_verbal_loss(
        self, *, now: datetime, actor: Actor, policy: LossPolicy, scope: str = "both"
    ) -> datetime:
        """Freeze the card at once by a verbal loss report; return when the report lapses."""
        self._apply(verbal_loss_report(self.state, now=now, actor=actor, policy=policy, scope=scope))
        return loss_expiry(now, policy)

    def activate(self, *, now: datetime, actor: Actor) -> None:
        """Activate a card that was made (封存): its social-security functions start."""
        self._apply(activation(self.state, now=now, actor=actor))

    def advance_production(self, stage: str) -> None:
        """Note how far the making of the card has got (the bank reports it; no status change)."""
        if stage not in STAGES:
            raise ValueError(f"unknown production stage {stage!r}")
        if self.status != IN_PRODUCTION:
            raise CardRuleError("advance_production", self.status)
        self.production_stage = stage

    def is_replacement(self) -> bool:
        """Tell whether an older card of the holder was lost formally: this one replaces it."""
        return replaces_a_lost_card(self, self.holder.cards)

    def release_verbal_loss(self, *, now: datetime, actor: Actor) -> str:
        """Release a verbal loss report: the card returns to the status it had before."""
        change = release(self.state, now=now, actor=actor)
        if self.replaced():
            raise CardRuleError("release_verbal_loss", "replaced")
        self._apply(change)
        return self.status

    def lapse_if_due(self, *, now: datetime, policy: LossPolicy) -> bool:
        """Let a verbal loss report lapse once its validity has run out; tell whether it did."""
        change = lapse_outcome(self.state, now=now, policy=policy)
        if change is not None:
            self._apply(change)
        return change is not None

    def _apply(self, change: Change) -> None:
        """Give the card the state a rule decided and append the history row recording it."""
        (self.status, self.status_before_loss, self.loss_reported_at, self.loss_expires_at,
         self.loss_scope) = change.state
        append_history(self, CardEvent(**change.history._asdict()))


def append_history(owner: Cardholder | Card, event: CardEvent | HolderEvent) -> None:
    """Add a history row to a holder or a card without loading the whole history first.

    History is append-only, so a row that is not loaded yet need not be read to add one: the
    new row goes to the session, keyed to its owner, and any later read of the history has it.
    """
    state = instance_state(owner)
    session = state.session
    if state.persistent and session is not None and "events" in state.unloaded:
        if isinstance(event, CardEvent):
            event.card_id = owner.id
        else:
            event.holder_id = owner.id
        session.add(event)
    else:
        events: list[Any] = owner.events  # a card's CardEvents, a holder's HolderEvents
        events.append(event)


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


def credentials_by_key(session: Unit, key: str) -> Credentials | None:
    """Return the credentials of the cardholder with this keyed ID number, if any (a verification on
    SQLite; on PostgreSQL `models.pins.guard_and_credentials` reads them with the PIN counter).

    One statement through `models.storage.fastpath`, which flushes the session first.
    """
    row = _credentials_statement(*database_of(session)).first(session, {"key": key})
    return Credentials(*row) if row else None


def credentials_select(key: Any) -> Any:
    """The query of a cardholder's credentials (`Credentials`' columns) by keyed ID number `key` (a bind)."""
    return select(Cardholder.id, Cardholder.id_number, Cardholder.pin_hash).where(Cardholder.id_key == key).limit(1)


@functools.lru_cache(maxsize=16)
def _credentials_statement(dialect: Any, fast: bool) -> Statement:
    return prepare(credentials_select(bindparam("key")), dialect, fast=fast)


def settle(holder: Cardholder, *, now: datetime, policy: LossPolicy) -> None:
    """Apply every change that time alone makes (lapsed loss reports) before a read."""
    for card in holder.cards:
        card.lapse_if_due(now=now, policy=policy)
