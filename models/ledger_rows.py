"""The ledger's rows as the use cases change them: on compiled Core statements, not the ORM.

`models.services` (the one place the phone and the console change a card or a holder through)
reads a cardholder and their cards for update here, and writes what the rules of `models.cards`
decided: the card's new state with its history row, a holder's new contact mobile or PIN with its
history row (the SMS that tells of it: `models.notifications.outbox`, on the same path). A
read-back that changes nothing (the phone saying a card's status and history) reads the cards and
their newest history in one statement, unlocked (`cards_to_read`). Every statement
goes through `models.storage.fastpath` (prepared once per database, on the driver's cursor;
`database.fast_path: false` runs the very same statements on plain SQLAlchemy Core), inside the
caller's unit of work: a Session, which the boundary flushes first, or a Connection. It never
begins, commits or rolls back anything.

What the ORM did, kept: the holder's row is locked (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's
unit of work holds the write lock from BEGIN IMMEDIATE) before their cards are read, in a second
statement (a row locked after waiting is re-read, rows joined to it would not be: which is why the
unlocked read-back may join, and a read for a change may not); a card's update
checks and bumps its version (`cards.version`), and a stale one raises StaleDataError as the ORM's
versioned update does. The rows read back are plain values (`HolderRow`, `CardRow`,
`HistoryRow`): a change made here is not seen by ORM objects the same session had loaded before.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import Integer, Table, and_, bindparam, func, insert, literal, select, union_all, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm.exc import StaleDataError

from models.cards import (
    Card,
    CardEvent,
    Cardholder,
    CardState,
    Change,
    HolderEvent,
    is_replaced,
    replaces_a_lost_card,
)
from models.notifications.outbox import QUEUED_KEYS, OutboxMessage, queue_row
from models.storage.db import Base
from models.storage.fastpath import Statement, Unit, database_of, prepare

HOLDERS: Table = Base.metadata.tables[Cardholder.__tablename__]
CARDS: Table = Base.metadata.tables[Card.__tablename__]
CARD_EVENTS: Table = Base.metadata.tables[CardEvent.__tablename__]
HOLDER_EVENTS: Table = Base.metadata.tables[HolderEvent.__tablename__]
OUTBOX: Table = Base.metadata.tables[OutboxMessage.__tablename__]

HOLDER_COLUMNS = ("id", "id_number", "id_key", "name", "mobile", "pin_hash")
CARD_COLUMNS = ("id", "holder_id", "card_number", "status", "bank", "applied_on", "status_before_loss",
                "loss_reported_at", "loss_expires_at", "loss_scope", "production_stage", "version")
HISTORY_COLUMNS = tuple(c.key for c in CARD_EVENTS.c)
HOLDER_CHANGES = ("mobile", "pin_hash")  # the columns of a holder the use cases change (`change_holder`)
# The columns an insert sets: all but the id (an outbox row's sending columns start empty).
CARD_EVENT_KEYS = tuple(c.key for c in CARD_EVENTS.c if not c.primary_key)
HOLDER_EVENT_KEYS = tuple(c.key for c in HOLDER_EVENTS.c if not c.primary_key)


@dataclass(eq=False)
class CardRow:
    """One card as read (for update, or for a read-back), and as a change written here leaves it."""

    id: int
    holder_id: int
    card_number: str
    status: str
    bank: str | None
    applied_on: date | None
    status_before_loss: str | None
    loss_reported_at: datetime | None
    loss_expires_at: datetime | None
    loss_scope: str | None
    production_stage: str | None
    version: int
    siblings: tuple[CardRow, ...] = field(default=(), repr=False)  # the holder's cards, this one too
    # Its newest history rows, as read with it (`LedgerRows.cards_to_read`), at most `history_read`
    # of them; None: not read, or stale (a change written here drops them).
    history: tuple[HistoryRow, ...] | None = field(default=None, repr=False)
    history_read: int = field(default=0, repr=False)

    @property
    def last4(self) -> str:
        """Return the last four characters of the card number."""
        return self.card_number[-4:]

    @property
    def state(self) -> CardState:
        """Return the card's status and verbal loss report, as the rules read them."""
        return CardState(self.status, self.status_before_loss, self.loss_reported_at, self.loss_expires_at,
                         self.loss_scope)

    def age_key(self) -> tuple[date, int]:
        """Order cards by application date, then by when the ledger learnt of them (as `Card.age_key`)."""
        return (self.applied_on or date.min, self.id)

    def replaced(self) -> bool:
        """Tell whether a newer card has been applied for in this card's place (as `Card.replaced`)."""
        return is_replaced(self, self.siblings)

    def is_replacement(self) -> bool:
        """Tell whether an older card of the holder was lost formally (as `Card.is_replacement`)."""
        return replaces_a_lost_card(self, self.siblings)


@dataclass(eq=False)
class HolderRow:
    """A cardholder as read (for update, or unlocked for a PIN change): what the use cases need of
    them, and their cards by id."""

    id: int
    id_number: str
    id_key: str
    name: str
    mobile: str | None
    pin_hash: str | None
    cards: tuple[CardRow, ...] = ()


class HistoryRow(NamedTuple):
    """One row of a card's history, as read back (the columns of `CardEvent`)."""

    id: int
    card_id: int
    at: datetime
    status_before: str | None
    status_after: str
    channel: str
    actor: str | None
    call_sid: str | None
    reason: str


class LedgerRows:
    """The ledger's statements, prepared for one database, fast path or plain Core."""

    def __init__(self, dialect: Dialect, fast: bool):
        def prepared(statement: Any, keys: tuple[str, ...] | None = None) -> Statement:
            return prepare(statement, dialect, fast=fast, keys=keys)

        by_holder = HOLDERS.c.id == bindparam("holder_id")
        holder = select(*(HOLDERS.c[k] for k in HOLDER_COLUMNS)).where(by_holder)
        self._holder = prepared(holder)
        self._lock_holder = prepared(holder.with_for_update())
        self._cards = prepared(select(*(CARDS.c[k] for k in CARD_COLUMNS))
                               .where(CARDS.c.holder_id == bindparam("holder_id")).order_by(CARDS.c.id))
        self._card_update = prepared(self._card_update_statement())
        self._card_event = prepared(insert(CARD_EVENTS).inline(), CARD_EVENT_KEYS)
        # PostgreSQL: the card's change and its history row in one statement (one round trip fewer a
        # change): the history row is inserted from the updated row, so a stale version inserts
        # nothing, and no history row back tells it, as the UPDATE's count does on SQLite.
        self.together = dialect.name == "postgresql"
        if self.together:
            changed = self._card_update_statement().returning(CARDS.c.id).cte("changed")
            history = [k for k in CARD_EVENT_KEYS if k != "card_id"]
            recorded = insert(CARD_EVENTS).add_cte(changed).from_select(
                ["card_id", *history],
                select(changed.c.id, *(bindparam(f"h_{k}", type_=CARD_EVENTS.c[k].type) for k in history)))
            # With the SMS that tells of it (a loss report, its release), inserted from the change too.
            texted = insert(OUTBOX).from_select(
                list(QUEUED_KEYS),
                select(*(bindparam(f"t_{k}", type_=OUTBOX.c[k].type) for k in QUEUED_KEYS)).select_from(changed))
            self._card_change = prepared(recorded.returning(CARD_EVENTS.c.id))
            self._card_change_texted = prepared(recorded.add_cte(texted.cte("texted")).returning(CARD_EVENTS.c.id))
        self._holder_event = prepared(insert(HOLDER_EVENTS).inline(), HOLDER_EVENT_KEYS)
        self._holder_changes: dict[tuple[str, int], Statement] = {}
        self._history: dict[int, Statement] = {}
        # A holder's cards and each one's newest history rows (up to `limit`), unlocked, in one
        # statement: the cards in the ledger's order, each card's rows newest first.
        holders_cards = select(CARDS.c.id).where(CARDS.c.holder_id == bindparam("holder_id"))
        ranked = select(*(CARD_EVENTS.c[k] for k in HISTORY_COLUMNS), func.row_number().over(
            partition_by=CARD_EVENTS.c.card_id, order_by=CARD_EVENTS.c.id.desc()).label("n")).where(
            CARD_EVENTS.c.card_id.in_(holders_cards)).subquery("recent")
        self._cards_to_read = prepared(
            select(*(CARDS.c[k] for k in CARD_COLUMNS), *(ranked.c[k] for k in HISTORY_COLUMNS))
            .select_from(CARDS.outerjoin(ranked, and_(ranked.c.card_id == CARDS.c.id,
                                                      ranked.c.n <= bindparam("limit", type_=Integer))))
            .where(CARDS.c.holder_id == bindparam("holder_id")).order_by(CARDS.c.id, ranked.c.id.desc()))
        self._prepared = prepared

    @staticmethod
    def _card_update_statement() -> Any:
        # Bound under names of their own (b_…): through plain Core a bind named like a column would set it.
        return (update(CARDS).where(CARDS.c.id == bindparam("b_id"), CARDS.c.version == bindparam("b_version"))
                .values(status=bindparam("b_status"), status_before_loss=bindparam("b_status_before_loss"),
                        loss_reported_at=bindparam("b_loss_reported_at"),
                        loss_expires_at=bindparam("b_loss_expires_at"), loss_scope=bindparam("b_loss_scope"),
                        version=bindparam("b_new_version")))

    def holder_for_update(self, unit: Unit, holder_id: int, *, cards: bool = True) -> HolderRow | None:
        """Lock a cardholder's row and read it, then (a second statement) their cards; None: no such holder."""
        row = self._lock_holder.first(unit, {"holder_id": holder_id})
        if row is None:
            return None
        holder = HolderRow(*row)
        if cards:
            holder.cards = self.cards_of(unit, holder_id)
        return holder

    def holder(self, unit: Unit, holder_id: int) -> HolderRow | None:
        """Read a cardholder's row (not locked, without cards); None: no such holder."""
        row = self._holder.first(unit, {"holder_id": holder_id})
        return None if row is None else HolderRow(*row)

    def cards_of(self, unit: Unit, holder_id: int) -> tuple[CardRow, ...]:
        """Read a holder's cards, in the order the ledger learnt of them."""
        rows = self._cards.all(unit, {"holder_id": holder_id})
        found = tuple(CardRow(*r) for r in rows)
        for card in found:
            card.siblings = found
        return found

    def cards_to_read(self, unit: Unit, holder_id: int, limit: int) -> tuple[CardRow, ...]:
        """Read a holder's cards, not locked, each with its newest `limit` history rows (`CardRow.history`),
        in one statement: what a read-back says, when nothing is to change."""
        cards: dict[int, CardRow] = {}
        width = len(CARD_COLUMNS)
        for row in self._cards_to_read.all(unit, {"holder_id": holder_id, "limit": limit}):
            card = cards.get(row[0])
            if card is None:
                card = cards[row[0]] = CardRow(*row[:width])
                card.history, card.history_read = (), limit
            if row[width] is not None:
                card.history = (*(card.history or ()), HistoryRow(*row[width:]))
        found = tuple(cards.values())
        for card in found:
            card.siblings = found
        return found

    def apply(self, unit: Unit, card: CardRow, change: Change, *, text: dict[str, Any] | None = None) -> None:
        """Write a change the rules decided: the card's new state (its version checked and bumped)
        and the history row recording it, and `text`, the SMS that tells of it (the values of
        `models.notifications.outbox.queued`), if any; the CardRow takes the new state."""
        state = change.state
        values = {
            "b_id": card.id, "b_version": card.version, "b_new_version": card.version + 1, "b_status": state.status,
            "b_status_before_loss": state.status_before_loss, "b_loss_reported_at": state.loss_reported_at,
            "b_loss_expires_at": state.loss_expires_at, "b_loss_scope": state.loss_scope,
        }
        if self.together:
            values |= {f"h_{k}": v for k, v in change.history._asdict().items()}
            if text is not None:
                values |= {f"t_{k}": text[k] for k in QUEUED_KEYS}
            statement = self._card_change if text is None else self._card_change_texted
            changed = 0 if statement.first(unit, values) is None else 1
        else:
            changed = self._card_update.execute(unit, values)
        if changed != 1:
            raise StaleDataError(f"UPDATE statement on table 'cards' expected to update 1 row(s); "
                                 f"{changed} were matched.")
        if not self.together:
            self._card_event.execute(unit, {"card_id": card.id, **change.history._asdict()})
            if text is not None:
                queue_row(unit, text)
        (card.status, card.status_before_loss, card.loss_reported_at, card.loss_expires_at,
         card.loss_scope) = state
        card.version += 1
        card.history, card.history_read = None, 0  # one row more than was read

    def change_holder(self, unit: Unit, holder: HolderRow, column: str, value: str, *, event: dict[str, Any],
                      texts: Sequence[dict[str, Any]] = ()) -> None:
        """Write a holder's new contact mobile or PIN (its keyed hash): `column` "mobile" or "pin_hash";
        the row of their own history recording it (`event`: `holder_events`' columns but the ids);
        and `texts`, the SMS that tell of it (`models.notifications.outbox.queued`'s values). The
        HolderRow takes the new value. On PostgreSQL one statement: the history row and the texts
        inserted from the updated row, so nothing is written for a holder who is not there
        (StaleDataError), as the UPDATE's count tells on SQLite, which runs the statements one by one."""
        if column not in HOLDER_CHANGES:
            raise ValueError(f"not a holder change: {column}")
        values = {"b_id": holder.id, "b_value": value}
        if self.together:
            values |= {f"e_{k}": event[k] for k in HOLDER_EVENT_KEYS if k != "holder_id"}
            for i, text in enumerate(texts):
                values |= {f"t{i}_{k}": text[k] for k in QUEUED_KEYS}
            changed = 0 if self._holder_change(column, len(texts)).first(unit, values) is None else 1
        else:
            changed = self._holder_change(column, 0).execute(unit, values)
        if changed != 1:
            raise StaleDataError(f"UPDATE statement on table 'cardholders' expected to update 1 row(s); "
                                 f"{changed} were matched.")
        if not self.together:
            self._holder_event.execute(unit, {"holder_id": holder.id, **event})
            for text in texts:
                queue_row(unit, text)
        setattr(holder, column, value)

    def _holder_change(self, column: str, texts: int) -> Statement:
        """The statement of a holder change (PostgreSQL: with its history row and `texts` SMS), prepared once."""
        statement = self._holder_changes.get((column, texts))
        if statement is None:
            update_ = update(HOLDERS).where(HOLDERS.c.id == bindparam("b_id")).values({column: bindparam("b_value")})
            if self.together:
                changed = update_.returning(HOLDERS.c.id).cte("changed")
                history = [k for k in HOLDER_EVENT_KEYS if k != "holder_id"]
                recorded: Any = insert(HOLDER_EVENTS).add_cte(changed).from_select(
                    ["holder_id", *history],
                    select(changed.c.id, *(bindparam(f"e_{k}", type_=HOLDER_EVENTS.c[k].type) for k in history)))
                if texts:  # one INSERT, its rows in the order given (their ids, the order they are sent in)
                    each = [select(literal(i).label("n"), *(bindparam(f"t{i}_{k}", type_=OUTBOX.c[k].type).label(k)
                                                            for k in QUEUED_KEYS)).select_from(changed)
                            for i in range(texts)]
                    given = union_all(*each).subquery("given") if texts > 1 else each[0].subquery("given")
                    recorded = recorded.add_cte(insert(OUTBOX).from_select(
                        list(QUEUED_KEYS), select(*(given.c[k] for k in QUEUED_KEYS)).order_by(given.c.n))
                        .cte("texted"))
                update_ = recorded.returning(HOLDER_EVENTS.c.id)
            statement = self._holder_changes[column, texts] = self._prepared(update_)
        return statement

    def recent_history(self, unit: Unit, card_id: int, limit: int) -> list[HistoryRow]:
        """Return a card's last `limit` history rows, newest first (`history_of` uses those read with it)."""
        statement = self._history.get(limit)
        if statement is None:
            statement = self._history[limit] = self._prepared(
                select(*(CARD_EVENTS.c[k] for k in HISTORY_COLUMNS))
                .where(CARD_EVENTS.c.card_id == bindparam("card_id")).order_by(CARD_EVENTS.c.id.desc()).limit(limit))
        return [HistoryRow(*r) for r in statement.all(unit, {"card_id": card_id})]


def history_of(unit: Unit, card: CardRow, limit: int) -> list[HistoryRow]:
    """Return a card's last `limit` history rows, newest first: those read with it when enough were
    (`LedgerRows.cards_to_read`), else read now."""
    if card.history is not None and limit <= card.history_read:
        return list(card.history[:limit])
    return ledger_rows(unit).recent_history(unit, card.id, limit)


def ledger_rows(unit: Unit) -> LedgerRows:
    """Return the ledger's statements for the database a unit of work is on (prepared once each)."""
    return _ledger_rows(*database_of(unit))


@functools.lru_cache(maxsize=16)
def _ledger_rows(dialect: Dialect, fast: bool) -> LedgerRows:
    return LedgerRows(dialect, fast)
