"""Mandarin speech as keys: menu choices by keyword, and numbers spoken digit by digit.

What a recogniser returns for "三七零二零二……叉" or "幺三八 一二三四 五六七八" becomes the same
string of digits a keypad would send, then goes through exactly the same checks as keyed input.
Numbers are understood as people say them: runs ("三个八" is 888), the digits' other names and
sound-alikes (幺 腰 么 for 1, 洞 for 0, 拐 for 7, 勾 for 9), a lead-in ("手机", "电话是"), a final
"井号", separators of any kind, an ID's final X said any way ("叉", "大写的X", "ex", "×"), and where a
phone number is expected the country code ("+86 138…"). A word that may mean two things (双: "2" or
"twice the next digit"; 俩: 两 heard as 俩, or 两个) makes the reading uncertain: the caller hears it
read back before it is used. Anything that is not clearly digits is refused (None), so the caller is
asked again: 十 and 百 (amounts, not digits), a run of five or more, other letters, an X not last.
"""
from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

# Every character read as one digit when spoken, for certain (Arabic and full-width digits are read
# as themselves). 腰 is 幺 as a recogniser writes it, 么 its variant form.
DIGITS = {
    "零": "0", "〇": "0", "洞": "0", "一": "1", "幺": "1", "妖": "1", "腰": "1", "么": "1", "壹": "1", "二": "2",
    "两": "2", "贰": "2", "三": "3", "叁": "3", "四": "4", "肆": "4", "五": "5", "伍": "5", "六": "6", "陆": "6",
    "七": "7", "拐": "7", "柒": "7", "八": "8", "捌": "8", "九": "9", "勾": "9", "钩": "9", "玖": "9",
}
# Words read as 2 but not for certain: 俩 is 两 slurred, or 两个 said short ("俩八": 88?); 双 is 两
# misheard, or a pair ("双八": 88). Either makes the number read back before it is used.
UNSURE_DIGITS = {"俩": "2", "双": "2"}
DOUBLING = "双"  # before a digit: 2 and the digit, or (the second reading) that digit twice
# "三个八": a run of one digit said with its count. Two to four make sense in an ID or phone number;
# 五个 and more are refused (a count so long is miscounted, and 十 sounds like 四).
COUNTS = {"二": 2, "两": 2, "三": 3, "四": 4}
RUN_WORD = "个"
MAX_TWO_WAYS = 3  # more words that read two ways (双 before a digit) in one number: ask again, not guess
X_WORDS = ("艾克斯", "爱克斯", "埃克斯", "艾克思", "爱克思", "叉", "ex", "×", "✕", "x")  # compared in lower case
# Words callers wrap numbers in; removed wherever they stand before reading the digits.
FILLERS = ("我的", "身份证号码", "身份证号", "身份证", "手机号码", "手机号", "电话号码", "号码", "号", "是", "嗯",
           "呃", "那个", "这个", "末位", "最后一位", "最后", "大写的", "小写的", "大写", "小写", "字母", "请",
           "吧", "啊")
# Words a number may start with (only there): what it is, or that it is the new one.
LEAD_INS = ("联系电话", "联系方式", "证件", "手机", "电话", "座机", "固话", "回电", "回拨", "新的", "新", "改成",
            "换成", "改为", "我要", "我想", "就", "打")  # 就(是) inside a number may be a correction: no filler
# Words a number may end with (only there): the keypad's end key said, or thanks.
TRAILERS = ("按井号键", "按井号", "井号键", "井号", "#", "谢谢")
# One character that may stand between the digits of a number read out (also used to mask numbers).
SEPARATOR = r"[\s,，.。、;；:：\-—–_/()（）!！?？\"'“”‘’·・•‧~～〜…]"
SEPARATORS = re.compile(SEPARATOR + "+")
# The country code before a phone number: +86, 0086, 加八六 (the plus said).
COUNTRY_CODE = re.compile(r"^(?:\+|加|00|零零|洞洞)(?:86|八六|八陆)")
MOBILE_WITH_86 = re.compile(r"861[3-9][0-9]{9}")  # a Chinese mobile with the country code but no plus
# Words that mean the same in every menu.
BUILT_IN = {"0": ("人工", "客服", "转人工", "坐席", "接线员"), "9": ("重听", "再听", "再说一遍", "重复", "没听清"),
            "*": ("返回", "上一级", "主菜单", "回到主菜单")}
KEY_WORDS = {"1": ("一", "幺", "腰", "么"), "2": ("二", "两"), "3": ("三",), "4": ("四",), "5": ("五",), "6": ("六",),
             "7": ("七",), "8": ("八",)}


@dataclass(frozen=True)
class Heard:
    """A number as spoken: every way it can be read (the likeliest first), and whether only one can."""

    readings: tuple[str, ...]
    certain: bool  # no word in it could have meant something else: no read-back needed for it

    @property
    def digits(self) -> str:
        return self.readings[0]


def _strip_words(s: str, words: tuple[str, ...], *, start: bool) -> str:
    """Remove any of `words` from the start (or end) of `s`, again while one is there."""
    found = True
    while found and s:
        found = False
        for word in words:
            if start and s.startswith(word):
                s, found = s[len(word):], True
            elif not start and s.endswith(word):
                s, found = s[: -len(word)], True
    return s


def _by_length(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(words, key=len, reverse=True))


def _digit(ch: str) -> str | None:
    """Return the digit one character is read as for certain, or None."""
    if ch.isascii() and ch.isdigit():
        return ch
    return DIGITS.get(ch)


def _pieces(s: str) -> tuple[list[tuple[str, ...]], int] | None:
    """Read `s` as digits: each piece the ways it can be read (two for 双 before a digit), and how
    many words in it were uncertain; None when it is not digits read one by one."""
    pieces: list[tuple[str, ...]] = []
    unsure = 0
    i = 0
    while i < len(s):
        ch = s[i]
        next_digit = _digit(s[i + 1]) if i + 1 < len(s) else None
        run_of = _digit(s[i + 2]) if i + 2 < len(s) and s[i + 1] == RUN_WORD else None
        if ch in COUNTS and run_of is not None:
            pieces.append((run_of * COUNTS[ch],))  # 三个八: 888
            i += 3
            continue
        if ch == DOUBLING and next_digit is not None:
            pieces.append((UNSURE_DIGITS[ch] + next_digit, next_digit * 2))  # 双八: 28, or 88
            unsure += 1
            i += 2
            continue
        digit = UNSURE_DIGITS.get(ch)
        unsure += digit is not None
        digit = digit or _digit(ch)
        if digit is None:
            return None  # 十, 百, 个 without a count, letters, words: not digits read one by one
        pieces.append((digit,))
        i += 1
    return pieces, unsure


def hear_number(text: str, *, x_last: bool = False, phone: bool = False) -> Heard | None:
    """Return how a caller's spoken number reads (a final X where `x_last`; without the country code
    where `phone`), or None if it is not a number said digit by digit."""
    s = SEPARATORS.sub("", unicodedata.normalize("NFKC", text or "").lower())
    s = _strip_words(s, TRAILERS, start=False)
    for word in _by_length(FILLERS):
        s = s.replace(word, "")
    s = _strip_words(_strip_words(s, TRAILERS, start=False), _by_length(LEAD_INS), start=True)
    national = False
    if phone:
        code = COUNTRY_CODE.match(s)
        if code:
            s, national = s[code.end():], True
    x = False
    if x_last:
        for word in X_WORDS:
            if s.endswith(word):
                s, x = s[: -len(word)], True
                break
    read = _pieces(s)
    if read is None or not read[0] or sum(len(p) > 1 for p in read[0]) > MAX_TWO_WAYS:
        return None
    pieces, unsure = read
    readings: list[str] = []
    for combination in itertools.product(*pieces):
        reading = "".join(combination)
        if national and not reading.startswith(("0", "1")):
            reading = "0" + reading  # +86 532…: the area code 0532 as dialled inside China
        elif phone and not national and MOBILE_WITH_86.fullmatch(reading):
            reading = reading[2:]  # 86 138…: the plus not heard
        reading += "X" if x else ""
        if reading not in readings:
            readings.append(reading)
    return Heard(tuple(readings), certain=not unsure)


def digits_from_speech(text: str, *, x_last: bool = False, phone: bool = False) -> str | None:
    """Return the digits a caller spoke (and a final X where allowed), read the likeliest way, or None."""
    heard = hear_number(text, x_last=x_last, phone=phone)
    return heard.digits if heard else None


def known_confidence(raw: str | None) -> float | None:
    """Return a recogniser's confidence (0 < c <= 1) as the call flow got it, or None when it is unknown
    (no Confidence, an empty one, or 0.0: the recognisers' "not computed")."""
    try:
        value = float((raw or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 < value <= 1.0 else None


def _spoken_key(s: str) -> str | None:
    """Return the key of "按一", "1", "按3号键" said alone, or None."""
    spoken = s.removeprefix("按").removesuffix("键").removesuffix("号")
    if len(spoken) == 1 and spoken.isascii() and spoken.isdigit():
        return spoken
    for key, options in KEY_WORDS.items():
        if spoken in options:
            return key
    return None


def _said(text: str) -> str:
    return SEPARATORS.sub("", unicodedata.normalize("NFKC", text or ""))


def choice_from_speech(text: str, words: Mapping[str, tuple[str, ...]]) -> str | None:
    """Return the menu key a spoken phrase stands for: a keyword, a built-in word or "按一"."""
    s = _said(text)
    if not s:
        return None
    found: list[tuple[int, str]] = []
    for key, options in list(words.items()) + list(BUILT_IN.items()):
        for word in options:
            if word and word in s:
                found.append((len(word), key))
    if found:
        best = max(found)
        if sum(1 for length, key in found if length == best[0] and key != best[1]) == 0:
            return best[1]
        return None  # two options heard as strongly: ask again rather than guess
    return _spoken_key(s)


def exact_choice(text: str, words: Mapping[str, tuple[str, ...]]) -> str | None:
    """Return the menu key when the caller said exactly one option's word and nothing else ("挂失",
    "人工", "按一", "3"; punctuation aside), or None (more words, or none of them)."""
    key = choice_from_speech(text, words)
    if key is None:
        return None
    s = _said(text)
    keys = {k for k, options in list(words.items()) + list(BUILT_IN.items()) for word in options if word == s}
    if keys:
        return key if keys == {key} else None
    return key if _spoken_key(s) == key else None


def confident_choice(text: str, words: Mapping[str, tuple[str, ...]], confidence: str | None,
                     threshold: float) -> str | None:
    """Return the key of a spoken menu choice that can be taken: an exact match whatever the
    confidence; a partial one ("我的卡丢了") only with a known confidence of at least `threshold`."""
    key = choice_from_speech(text, words)
    if key is None or exact_choice(text, words) == key:
        return key
    level = known_confidence(confidence)
    return key if level is not None and level >= threshold else None
