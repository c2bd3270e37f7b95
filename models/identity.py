"""Resident ID numbers (GB 11643-1999), PIN keyed hashing and masking: pure, standard library only
(and the one clock, for today's date when no day is given)."""
from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date

from models.clock import local_today

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
# ASCII only: str.isdigit() would let full-width and superscript digits through.
ID_SHAPE = re.compile(r"[0-9]{17}[0-9X*]")
PIN_SHAPE = re.compile(r"[0-9]{6}")
EARLIEST_BIRTH = date(1900, 1, 1)  # no one born before is still a cardholder


def check_char(first17: str) -> str:
    """Return the GB 11643 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def normalise_id(text: str, today: date | None = None) -> str | None:
    """Return the 18-character ID number in canonical form, or None when it is not a valid one.

    Accepts an X as 'x', 'X' or the keypad's '*' in the 18th place only; checks the birth
    date (a real date from 1900-01-01 to `today`, by default today in Qingdao from the one clock)
    and the check character. Covers resident IDs, HK/Macau/Taiwan residence permits and
    the 2023 foreigners' permanent-residence ID, which share the scheme.
    """
    raw = text.strip().upper()
    if not ID_SHAPE.fullmatch(raw):
        return None
    last = "X" if raw[17] in "X*" else raw[17]
    try:
        born = date(int(raw[6:10]), int(raw[10:12]), int(raw[12:14]))
    except ValueError:
        return None
    if not EARLIEST_BIRTH <= born <= (local_today() if today is None else today):
        return None
    if check_char(raw[:17]) != last:
        return None
    return raw[:17] + last


def birth_date(id_number: str) -> date:
    """Return the birth date encoded in a valid ID number."""
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def keyed_hash(key: bytes, purpose: str, *parts: str) -> str:
    """Return HMAC-SHA256 of the parts under the key, separated by purpose (hex)."""
    msg = "\x1f".join((purpose, *parts)).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def id_key(key: bytes, id_number: str) -> str:
    """Return the keyed hash that stands for an ID number in call state and PIN counters."""
    return keyed_hash(key, "id", id_number)


def pin_hash(key: bytes, id_number: str, pin: str) -> str:
    """Return the keyed hash a PIN is kept as; salted by the holder's ID number."""
    return keyed_hash(key, "pin", id_number, pin)


def pin_matches(key: bytes, id_number: str, pin: str, stored: str | None) -> bool:
    """Compare a keyed PIN in constant time; a missing stored hash never matches."""
    candidate = pin_hash(key, id_number, pin)
    return hmac.compare_digest(candidate, stored or "0" * len(candidate)) and stored is not None


def is_pin_shape(text: str) -> bool:
    """Tell whether the text is six keypad digits."""
    return PIN_SHAPE.fullmatch(text) is not None


def mask_id(id_number: str) -> str:
    """Keep only the last four characters of an ID number."""
    return "*" * (len(id_number) - 4) + id_number[-4:]


def mask_phone(number: str | None) -> str:
    """Keep the prefix and last four digits of a phone number: +86138****5678.

    SIP and client addresses keep only their user part, masked the same way; the result is
    at most 32 characters.
    """
    if not number:
        return ""
    user = number.split("@", 1)[0]
    scheme, _, user = user.rpartition(":") if ":" in user else ("", "", user)
    if len(user) <= 7:
        masked = "*" * len(user)
    else:
        masked = user[:-8] + "****" + user[-4:]
    return (f"{scheme}:{masked}" if scheme else masked)[:32]
