"""Mandarin speech as keys: menu choices by keyword, and numbers spoken digit by digit.

What a recogniser returns for "三七零二零二……叉" or "幺三八 一二三四 五六七八" becomes the same
string of digits a keypad would send, then goes through exactly the same checks as keyed input.
Anything that is not clearly digits is refused (None), so the caller is asked again.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

# Every character read as a digit when spoken (Arabic and full-width digits are read as themselves).
DIGITS = {
    "零": "0", "〇": "0", "洞": "0", "一": "1", "幺": "1", "妖": "1", "壹": "1", "二": "2", "两": "2", "贰": "2",
    "三": "3", "叁": "3", "四": "4", "肆": "4", "五": "5", "伍": "5", "六": "6", "陆": "6", "七": "7", "拐": "7",
    "柒": "7", "八": "8", "捌": "8", "九": "9", "勾": "9", "玖": "9",
}
X_WORDS = ("艾克斯", "爱克斯", "埃克斯", "叉", "x", "X")
# Words callers wrap numbers in; removed before reading the digits.
FILLERS = ("我的", "身份证号码", "身份证号", "身份证", "手机号码", "手机号", "电话号码", "号码", "号", "是", "嗯", "呃",
           "那个", "末位", "最后一位", "最后", "大写", "小写", "字母", "请", "吧", "啊")
# One character that may stand between the digits of a number read out (also used to mask numbers).
SEPARATOR = r"[\s,，.。、;；:：\-—_/()（）!！?？\"'“”‘’]"
SEPARATORS = re.compile(SEPARATOR + "+")
# Words that mean the same in every menu.
BUILT_IN = {"0": ("人工", "客服", "转人工", "坐席", "接线员"), "9": ("重听", "再听", "再说一遍", "重复", "没听清"),
            "*": ("返回", "上一级", "主菜单", "回到主菜单")}
KEY_WORDS = {"1": ("一", "幺"), "2": ("二", "两"), "3": ("三",), "4": ("四",), "5": ("五",), "6": ("六",),
             "7": ("七",), "8": ("八",)}


def digits_from_speech(text: str, *, x_last: bool = False) -> str | None:
    """Return the digits a caller spoke (and a final X where allowed), or None if it is not that."""
    s = unicodedata.normalize("NFKC", text or "").strip()
    if not s:
        return None
    for word in FILLERS:
        s = s.replace(word, "")
    s = SEPARATORS.sub("", s)
    x = False
    if x_last:
        for word in X_WORDS:
            if s.endswith(word):
                s, x = s[: -len(word)], True
                break
    out = []
    for ch in s:
        if ch.isascii() and ch.isdigit():
            out.append(ch)
        elif ch in DIGITS:
            out.append(DIGITS[ch])
        else:
            return None  # 十, 百, letters, words: not digits read one by one
    if not out:
        return None
    return "".join(out) + ("X" if x else "")


def choice_from_speech(text: str, words: Mapping[str, tuple[str, ...]]) -> str | None:
    """Return the menu key a spoken phrase stands for: a keyword, a built-in word or "按一"."""
    s = SEPARATORS.sub("", unicodedata.normalize("NFKC", text or ""))
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
    spoken = s.removeprefix("按").removesuffix("键").removesuffix("号")
    if len(spoken) == 1 and spoken.isdigit():
        return spoken
    for key, options in KEY_WORDS.items():
        if spoken in options:
            return key
    return None
