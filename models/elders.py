"""Elder callers (适老化): a caller's age on the day of the call, from an ID number's birth date or
from the cardholder whose registered mobile they call from.

Since 2020-12-25 China's carriers put callers aged 65 and over straight through to a person; the
hotline treats them kindly too (slower speech, longer silences, the agent offered first: the
call flow and its TwiML do that). Here only the facts: how old someone is on a local day, and
whether a number is the registered mobile of exactly one cardholder that old. Pure, but for the
one indexed look-up the first webhook of a call runs.
"""
from __future__ import annotations

import functools
from datetime import date
from typing import Any

from sqlalchemy import bindparam, func, select

from models.cards import Cardholder
from models.identity import birth_date
from models.storage.fastpath import Statement, Unit, database_of, prepare

ELDER_AGE = 65  # config.yaml elder.age: the carriers' age for straight-through service


def age_on(born: date, day: date) -> int:
    """Return someone's age in whole years on a day: a year more on each birthday itself. Born on
    29 February: a year more on 1 March in a year without a 29 February."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def is_elder(id_number: str, day: date, age: int = ELDER_AGE) -> bool:
    """Tell whether the holder of a valid ID number (its digits 7-14 are the birth date) is at
    least `age` on a local day."""
    return age_on(birth_date(id_number), day) >= age


def sole_holder_is_elder(unit: Unit, mobile: str, day: date, age: int = ELDER_AGE) -> bool:
    """Tell whether a mobile (E.164, as the ledger keeps it) is the registered mobile of exactly
    one cardholder, who is at least `age` on a local day. No holder, or two or more sharing the
    number: False (nobody can tell which of them is calling). Says nothing of who the holder is.

    One statement on the indexed `cardholders.mobile`, reading at most two rows, through
    `models.storage.fastpath` (the first webhook of every call runs it).
    """
    row = _sole_holder_statement(*database_of(unit)).first(unit, {"mobile": mobile})
    if row is None or row[0] != 1 or row[1] is None:
        return False
    try:
        return is_elder(str(row[1]), day, age)
    except ValueError:  # not a birth date (a row no importer checked): not known to be an elder
        return False


@functools.lru_cache(maxsize=16)
def _sole_holder_statement(dialect: Any, fast: bool) -> Statement:
    holders = (select(Cardholder.id_number).where(Cardholder.mobile == bindparam("mobile"))
               .limit(2).subquery("holders"))
    return prepare(select(func.count(), func.min(holders.c.id_number)), dialect, fast=fast)
