"""Finding a cardholder from what an agent types into one search box.

What is typed says what it is: a full ID number (any case, the X as x or X), a name followed by the
last four characters of the ID number ("张伟 0025", "张伟0025", a full-width space or digits), a
mobile number (11 digits or E.164) or a card number. `parse_query` reads it (pure, no database);
`find_holders` looks it up: the ID number by its keyed hash (`Cardholder.id_key`), the name and last
four by their index, the mobile by its index, the card number by its unique key. Something shaped
like an ID number that fails its check character or birth date is `INVALID_ID`, not "nobody".

`Query.shown` is what may be shown of the query or kept in the audit trail: masked like the holder
page masks (the ID number to its last four, a mobile as +86139****5678, a card number to its last
four). The query itself is never shown back.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.cards import Card, Cardholder
from models.identity import id_key, mask_id, mask_phone, normalise_id
from models.phones import normalise_mobile

# The kinds of query, by the key their Mandarin label takes in the catalogue (`label.search.<kind>`).
ID_NUMBER = "id_number"
NAME_LAST4 = "name_last4"
MOBILE = "mobile"
CARD_NUMBER = "card_number"
INVALID_ID = "invalid_id"  # shaped like an ID number, but not a valid one
NAME_ONLY = "name_only"  # a name without the last four: too many people share one
EMPTY = "empty"
KINDS = (ID_NUMBER, NAME_LAST4, MOBILE, CARD_NUMBER, INVALID_ID, NAME_ONLY, EMPTY)
FOUND_BY = (ID_NUMBER, NAME_LAST4, MOBILE, CARD_NUMBER)  # the kinds that are looked up
LIMIT = 50  # at most this many holders listed

ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
MOBILE_SHAPE = re.compile(r"(?:\+?86|0086)?1[0-9]{10}")
# A name (letters of any script, the middle dots and spaces of transliterated names; no digit), then
# the last four: right after it for a Chinese name ("张伟0025"), after a space for any name.
NAME_AND_LAST4 = re.compile(r"(?P<name>[^\W\d_][^\d]*?)(?P<gap>\s*)(?P<last4>[0-9]{3}[0-9Xx])")
CHINESE = re.compile(r"[\u3400-\u9fff]")
SEPARATORS = re.compile(r"[\s\-]")


class Query(NamedTuple):
    """What a search box's text was read as: its kind, the value looked up, and what may be shown."""

    kind: str
    value: str = ""  # the ID number, the mobile in E.164, the card number, or the name
    last4: str = ""  # with NAME_LAST4: the last four characters of the ID number
    shown: str = ""  # masked: what a page or the audit trail may say was searched for


def parse_query(text: str, today: date | None = None) -> Query:
    """Read a search box's text: which kind of query it is and what to look up."""
    plain = " ".join(unicodedata.normalize("NFKC", text or "").split())  # full-width forms, any spaces
    compact = SEPARATORS.sub("", plain).upper()
    if not compact:
        return Query(EMPTY)
    if ID_SHAPE.fullmatch(compact):
        id_number = normalise_id(compact, today)
        if id_number is None:
            return Query(INVALID_ID, shown=mask_id(compact))
        return Query(ID_NUMBER, id_number, shown=mask_id(id_number))
    if MOBILE_SHAPE.fullmatch(compact):
        mobile = normalise_mobile(compact)
        if mobile is not None:
            return Query(MOBILE, mobile, shown=mask_phone(mobile))
    named = NAME_AND_LAST4.fullmatch(plain)
    if named and (named.group("gap") or CHINESE.search(named.group("name"))):
        name, last4 = named.group("name").strip(), named.group("last4").upper()
        return Query(NAME_LAST4, name, last4, shown=f"{name} {last4}")
    if not re.search(r"[0-9]", plain):
        return Query(NAME_ONLY, plain, shown=plain)
    return Query(CARD_NUMBER, compact, shown=mask_id(compact) if len(compact) > 4 else compact)


def find_holders(session: Session, query: Query, *, key: bytes, limit: int = LIMIT) -> list[Cardholder]:
    """Return the holders a query finds, in the order the ledger learnt them (none for a query not looked up)."""
    if query.kind == ID_NUMBER:
        where = Cardholder.id_key == id_key(key, query.value)
    elif query.kind == NAME_LAST4:
        where = (Cardholder.name == query.value) & (Cardholder.id_last4 == query.last4)
    elif query.kind == MOBILE:
        where = Cardholder.mobile == query.value
    elif query.kind == CARD_NUMBER:
        where = Cardholder.id.in_(select(Card.holder_id).where(Card.card_number == query.value))
    else:
        return []
    return list(session.scalars(select(Cardholder).where(where).order_by(Cardholder.id).limit(limit)))
