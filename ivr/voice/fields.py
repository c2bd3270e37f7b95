"""Twilio's fields, parsed defensively in one place: whatever arrives, a value the hotline can use.

A signed request can still carry odd values (a retried or replayed webhook, a proxy's rewrite, a
test account, a future Twilio field): `str.isdigit()` lets `²` and `٣` through (then `int()`
fails), a number may have 40 digits (no database integer holds it), a string may hold NUL bytes
(PostgreSQL's text columns refuse them) or be longer than the column it goes to. Here a count is
ASCII digits within a bound, a confidence a finite number above 0 up to 1, and a string has no NUL
and fits; anything else is "unknown" (None or ""), never an exception.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

from models.agents import CallRating
from models.calls import CallState

DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only (re's \d is Unicode); 18 fit any int64
# The widest a form value may be once cleaned: a CallSid is 34 characters, a SpeechResult a
# sentence, a RecordingUrl about 120; the record keeps no more than this of any field.
FIELD_WIDTH = 1024


def _width(column: object) -> int:
    length = getattr(getattr(column, "type", None), "length", None)
    assert isinstance(length, int)
    return length


# The columns Twilio's values are stored in, read from the models (never a copy of their widths).
SID_WIDTH = _width(CallState.__table__.c.call_sid)  # CallSid, ParentCallSid: the call's key
AGENT_WIDTH = _width(CallRating.__table__.c.agent)  # the agent leg: dialled address + DialCallSid
MAX_TURN = 10**8 - 1  # a call never takes this many turns
MAX_SECONDS = 7 * 24 * 3600  # a duration beyond a week is not a call's (Twilio ends calls after 24 h)


def text(raw: str | None, width: int = FIELD_WIDTH) -> str:
    """Return a string without NUL bytes, cut to `width` characters."""
    if not raw:
        return ""
    return raw.replace("\x00", "")[:width]


def count(raw: str | None, limit: int) -> int | None:
    """Return a whole number of ASCII digits from 0 to `limit`; None for anything else."""
    value = (raw or "").strip()
    if not DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if number <= limit else None


def turn(raw: str | None) -> int | None:
    """Return the turn number of an action URL's `t=`, or None when absent or junk."""
    return count(raw, MAX_TURN)


def seconds(raw: str | None) -> int | None:
    """Return a duration Twilio reports (CallDuration, RecordingDuration) in seconds, or None."""
    return count(raw, MAX_SECONDS)


def confidence(raw: str | None) -> float | None:
    """Return a speech recogniser's confidence, above 0 and at most 1, or None when it is unknown:
    no Confidence, an empty one, one that is no such number, or 0.0 (the recognisers' "not computed",
    e.g. Google Speech-to-Text's default; never a measured "certainly wrong")."""
    try:
        value = float((raw or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 < value <= 1.0 else None


def form(fields: Mapping[str, str]) -> dict[str, str]:
    """Return a webhook's form as the hotline reads it: every value without NUL bytes and at most
    FIELD_WIDTH characters; the call's SIDs cut to the width of the call's key."""
    clean = {key: text(value) for key, value in fields.items()}
    for key in ("CallSid", "ParentCallSid"):
        if key in clean:
            clean[key] = clean[key][:SID_WIDTH]
    return clean
