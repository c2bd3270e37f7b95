"""Numbers taken out of what a caller keyed or said, before anything of it is stored or exported.

A recorded webhook and a `sim record` export keep keys and speech only through `mask_numbers`:
every run of digits long enough to be (part of) an ID number, a PIN or a phone number becomes
`<id_number>`, `<pin>`, `<phone>` or `<digits>`, wherever in the call it was keyed or said, and the
rest of the words stay as they were (a menu choice spoken around a number still reads the same).
A run is what `ivr.callflow.speech` would read as one number: Arabic, full-width or Chinese digits
(its digit tables: 一 幺 腰 么 两 俩 双 洞 零 〇 …) with separators (spaces, commas, dashes, dots, ·
～ …) and filler words (嗯, 那个, 大写的 …) between them, runs said with their count ("三个八" is three
digits), and a final X (x, 叉, 艾克斯, ex, ×, or the keypad's *).
"""
from __future__ import annotations

import re

from ivr.callflow.speech import COUNTS, DIGITS, FILLERS, RUN_WORD, SEPARATOR, UNSURE_DIGITS, X_WORDS

# Shorter runs stay as they are: a menu key ("1"), "按二", "两张卡". Four digits or more could be
# most of a PIN (six) whose caller or recogniser dropped a digit, a phone number or an ID number.
MIN_RUN = 4
_DIGIT = rf"(?:\d|[{''.join(DIGITS) + ''.join(UNSURE_DIGITS)}])"
_JOIN = "(?:" + "|".join([SEPARATOR, RUN_WORD, *map(re.escape, sorted(FILLERS, key=len, reverse=True))]) + ")"
_X = "(?:" + "|".join([*map(re.escape, sorted(X_WORDS, key=len, reverse=True)), r"[ｘＸ*＊]"]) + ")"
# Possessive joiners: a digit must follow them, and nothing is tried twice (no runaway backtracking).
# Case does not matter (an X said "EX").
RUN = re.compile(rf"{_DIGIT}(?:{_JOIN}*+{_DIGIT})*(?:{_JOIN}*+{_X})?", re.IGNORECASE)
_ONE_DIGIT = re.compile(_DIGIT)
# A count before 个 and a digit: "三个八" holds three digits where two characters are digits.
_COUNTED = re.compile(rf"([{''.join(COUNTS)}]){RUN_WORD}(?={_DIGIT})")


def kind_of_run(length: int, x: bool) -> str:
    """Return what a run of that many characters (a final X counted) could be: its placeholder's name."""
    if 15 <= length <= 18:
        return "id_number"  # 18 characters, 15 for the old IDs, 17 when the X was not heard
    if x:
        return "digits"
    if length == 6:
        return "pin"
    if 7 <= length <= 14:
        return "phone"  # 7-8 local, 11 mobile, 10-12 with the area code, 13-14 with +86 / 0086
    return "digits"


def _masked(match: re.Match[str]) -> str:
    run = match.group()
    digits = len(_ONE_DIGIT.findall(run)) + sum(COUNTS[count] - 2 for count in _COUNTED.findall(run))
    x = _ONE_DIGIT.fullmatch(run[-1]) is None
    length = digits + x
    return f"<{kind_of_run(length, x)}>" if length >= MIN_RUN else run


def mask_numbers(text: str) -> str:
    """Return keys or speech with every run of digits that could be a secret replaced by its placeholder."""
    return RUN.sub(_masked, text) if text else text
