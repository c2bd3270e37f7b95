"""ID and phone numbers as people say them and recognisers write them, read without a wrong digit.

The table holds what a recogniser returned for a caller saying an ID number, a new mobile or a
call-back number, and the digits the caller meant, or None where the words cannot be read for
certain as one number (the caller is asked again). `read_back` says whether the reading holds a
word that could have meant something else (双, 俩): the flow then reads the number back before using
it. Mobiles and call-back numbers are read back anyway; an ID number only then, or when the
recogniser's confidence is low or unknown.
"""
from __future__ import annotations

from datetime import date

import pytest

from ivr.callflow.actions.auth import heard_number
from ivr.callflow.machine import Event
from ivr.callflow.redact import mask_numbers
from ivr.callflow.speech import (
    DIGITS,
    UNSURE_DIGITS,
    confident_choice,
    exact_choice,
    hear_number,
    known_confidence,
)
from ivr.voice.fields import confidence
from models.identity import normalise_id
from models.phones import normalise_mobile, normalise_phone
from tests.support import ALICE, BOB, XENA

MOBILE = "13812345678"
TODAY = date(2026, 11, 30)
CHECKS = {
    "id": lambda raw: normalise_id(raw, today=TODAY),
    "mobile": normalise_mobile,
    "phone": normalise_phone,  # a call-back number: a mobile, or a fixed line with its area code
}

SAID = [
    # heard, kind, digits, read_back
    # -- as it was understood before: digits, Chinese numerals, 幺 洞 拐 勾, groups, a filler
    ("370202198503120025", "id", ALICE, False),
    ("三七零二零二 一九八五零三一二 零零二五", "id", ALICE, False),
    ("三七洞二洞二幺九八五洞三幺二洞洞二五", "id", ALICE, False),
    ("幺三八 幺二三四 五六七八", "mobile", MOBILE, False),
    ("我的手机号是138 1234 5678", "mobile", MOBILE, False),
    ("零五三二 八八八八 一二三四", "phone", "053288881234", False),
    # -- runs: a digit said with how many times in a row
    ("幺三八 三个八 幺二三四五", "mobile", "13888812345", False),
    ("幺三九 两个二 两个三 四四五五", "mobile", "13922334455", False),
    ("幺三八 四个零 四个八", "mobile", "13800008888", False),
    ("幺三八 幺二三四 四个八", "mobile", "13812348888", False),
    ("一三九两个零一两个二三三四", "mobile", "13900122334", False),
    ("幺三九三个八幺二三两个六", "mobile", "13988812366", False),
    ("二个二", "mobile", "22", False),  # 二个 for 两个, as a recogniser may write it
    ("三七零二零二 一九八五零三一二 两个零二五", "id", ALICE, False),
    ("三七零二零三一九九两个零五一七一零一五", "id", BOB, False),
    ("零五三二 四个八 一二三四", "phone", "053288881234", False),
    # -- sound-alikes: 腰 and 么 are 幺 for certain; 俩 and 双 may be 2 or a pair, so read back
    ("腰三八 腰二三四 五六七八", "mobile", MOBILE, False),
    ("么三八么二三四五六七八", "mobile", MOBILE, False),
    ("三七零二零二腰九八五零三腰二零零二五", "id", ALICE, False),
    ("幺三九俩俩三三四四五五", "mobile", "13922334455", True),
    ("三七零俩零俩一九八五零三一二零零二五", "id", ALICE, True),
    ("三七零俩零俩一九八五零三一俩零零俩五", "id", ALICE, True),  # 俩 reads one way: no limit on how often
    ("幺三九双双三三四四五五", "mobile", "13922334455", True),
    ("三七零二零二一九八五零三一二零零双五", "id", ALICE, True),  # 双五: 25 (or 55: no valid ID)
    ("三七零二零三一双九零零五一七一零一五", "id", BOB, True),  # 双九: 99 (29 gives no birth date)
    # -- the keypad's end key said at the end
    ("13812345678井号", "mobile", MOBILE, False),
    ("幺三八幺二三四五六七八 井号键", "mobile", MOBILE, False),
    ("13812345678 按井号", "mobile", MOBILE, False),
    ("13812345678#", "mobile", MOBILE, False),
    ("370202198503120025井号", "id", ALICE, False),
    ("三七零二零二一九八六零七一四一零四叉 井号", "id", XENA, False),
    # -- lead-ins: what the number is, said before it
    ("手机幺三八幺二三四五六七八", "mobile", MOBILE, False),
    ("电话是13812345678", "mobile", MOBILE, False),
    ("我的电话是 幺三八 幺二三四 五六七八", "mobile", MOBILE, False),
    ("联系电话13812345678", "mobile", MOBILE, False),
    ("新号码是 138 1234 5678", "mobile", MOBILE, False),
    ("改成幺三八幺二三四五六七八", "mobile", MOBILE, False),
    ("就是 13812345678", "mobile", MOBILE, False),
    ("回电号码 0532 8888 1234", "phone", "053288881234", False),
    ("证件号码370202198503120025", "id", ALICE, False),
    # -- separators of any kind, and the country code where a phone number is expected
    ("138·1234·5678", "mobile", MOBILE, False),
    ("138～1234～5678", "mobile", MOBILE, False),
    ("138~1234~5678", "mobile", MOBILE, False),
    ("138–1234–5678", "mobile", MOBILE, False),
    ("138 • 1234 • 5678", "mobile", MOBILE, False),
    ("138…1234…5678", "mobile", MOBILE, False),
    ("370202·19850312·0025", "id", ALICE, False),
    ("+86 138 1234 5678", "mobile", MOBILE, False),
    ("+86-138-1234-5678", "mobile", MOBILE, False),
    ("+8613812345678", "mobile", MOBILE, False),
    ("＋８６ １３８ １２３４ ５６７８", "mobile", MOBILE, False),
    ("0086 138 1234 5678", "mobile", MOBILE, False),
    ("86 138 1234 5678", "mobile", MOBILE, False),
    ("加八六 幺三八 幺二三四 五六七八", "mobile", MOBILE, False),
    ("+86 138 1234 5678", "phone", MOBILE, False),
    ("+86 532 8888 1234", "phone", "053288881234", False),
    # -- the ID's final X said any way
    ("37020219860714104X", "id", XENA, False),
    ("三七零二零二一九八六零七一四一零四叉", "id", XENA, False),
    ("37020219860714104大写的X", "id", XENA, False),
    ("370202198607141 04 小写的x", "id", XENA, False),
    ("37020219860714104 ex", "id", XENA, False),
    ("37020219860714104EX", "id", XENA, False),
    ("37020219860714104×", "id", XENA, False),
    ("三七零二零二一九八六零七一四一零四 大写X", "id", XENA, False),
    ("37020219860714104 爱克斯", "id", XENA, False),
    # -- refused: amounts, runs too long, corrections, letters, an X not last, +86 before an ID
    ("一百三十八", "mobile", None, None),
    ("幺三八 十二三四 五六七八", "mobile", None, None),
    ("幺三八 五个八 幺二三", "mobile", None, None),
    ("幺三八 十个零 一", "mobile", None, None),
    ("幺三八 一个八 幺二三四五六七", "mobile", None, None),
    ("幺三八三个", "mobile", None, None),
    ("幺三八 俩个八 幺二三四五六", "mobile", None, None),
    ("幺三八 千 幺二三四", "mobile", None, None),
    ("138井号12345678", "mobile", None, None),
    ("幺三八，不对，幺三九幺二三四五六七八", "mobile", None, None),
    ("幺三八就是幺三九幺二三四五六七八", "mobile", None, None),  # 就是 inside: a correction, not a filler
    ("幺三双九双三双四双五六", "mobile", None, None),  # 双 before a digit four times: 16 readings, ask again
    ("37020219860714104Y", "id", None, None),
    ("3702021986071410X4", "id", None, None),
    ("叉37020219860714104", "id", None, None),
    ("+86 370202198503120025", "id", None, None),
    ("37020219860714104ex", "mobile", None, None),
    ("138 abc 5678", "mobile", None, None),
    ("我不知道", "id", None, None),
]


def read(heard: str, kind: str):
    return hear_number(heard, x_last=kind == "id", phone=kind != "id")


def used(heard: str, kind: str) -> str | None:
    """The digits the action checks: the first reading that is a valid number of the kind, else the first."""
    number = read(heard, kind)
    if number is None:
        return None
    return next((r for r in number.readings if CHECKS[kind](r)), number.digits)


@pytest.mark.parametrize("heard, kind, digits, read_back", SAID)
def test_a_number_said_as_people_say_it_reads_as_the_digits_meant_or_not_at_all(heard, kind, digits, read_back):
    assert used(heard, kind) == digits
    if digits is not None:
        assert read(heard, kind).certain is not read_back


def test_the_table_covers_at_least_58_outputs_and_every_kind_of_number():
    assert len(SAID) >= 58
    assert {kind for _, kind, _, _ in SAID} == set(CHECKS)


@pytest.mark.parametrize("heard, kind, digits, read_back", SAID)
def test_no_output_in_the_table_gives_a_valid_number_other_than_the_one_meant(heard, kind, digits, read_back):
    check = CHECKS[kind]
    meant = check(digits) if digits is not None else None
    taken, certain = heard_number(Event("speech", heard), check, x_last=kind == "id", phone=kind != "id")
    assert taken == meant
    number = read(heard, kind)
    if certain:  # used without a read-back: no other reading exists that could be valid
        assert number is not None and number.readings == (digits,)


def test_a_run_of_three_eights_is_read_as_888():
    assert read("三个八", "mobile").readings == ("888",)


def test_a_run_of_two_twos_and_two_zeros_are_read_as_22_and_00():
    assert read("两个二两个零", "mobile").readings == ("2200",)


def test_a_pair_before_a_digit_reads_two_ways_the_sound_alike_first():
    heard = read("双八", "mobile")
    assert (heard.readings, heard.certain) == (("28", "88"), False)


def test_a_pair_before_a_digit_is_read_as_the_one_valid_id_number():
    # 双零 said meaning 00: the 2-then-0 reading fails the ID's check character, 00 passes
    taken = heard_number(Event("speech", "三七零二零二一九八五零三一二双零二五"), CHECKS["id"], x_last=True)
    assert taken == (ALICE, False)


def test_the_country_code_is_taken_off_a_phone_number_but_never_off_an_id_number():
    assert read("+86 138 1234 5678", "mobile").digits == MOBILE
    assert hear_number("+86 138 1234 5678") is None
    assert hear_number("86 138 1234 5678").digits == "8613812345678"  # not a phone: the digits as said
    assert hear_number("+86 370202198503120025", x_last=True) is None


@pytest.mark.parametrize(
    "raw, level",
    [("0.87", 0.87), ("1", 1.0), ("0.0", None), ("0", None), ("", None), (None, None), ("abc", None),
     ("nan", None), ("-0.2", None), ("1.5", None)],
)
def test_a_missing_empty_or_zero_confidence_is_unknown(raw, level):
    assert confidence(raw) == level
    assert known_confidence(raw) == level


MAIN = {"1": ("挂失", "丢了", "丢失"), "2": ("解挂", "解除挂失", "找到了"), "3": ("查询", "状态", "进度")}


@pytest.mark.parametrize(
    "heard, key",
    [("挂失", "1"), ("挂失。", "1"), ("解除挂失", "2"), ("人工", "0"), ("按一", "1"), ("3", "3"), ("按3号键", "3"),
     ("幺", "1"), ("重听", "9"), ("我的卡丢了", None), ("我要挂失", None), ("挂失还是查询", None), ("你好", None)],
)
def test_an_exact_match_is_the_words_of_one_option_and_nothing_else(heard, key):
    assert exact_choice(heard, MAIN) == key


@pytest.mark.parametrize("level", [None, "", "0.0", "0.1", "abc"])
def test_a_menu_choice_said_exactly_is_taken_whatever_the_confidence(level):
    assert confident_choice("挂失", MAIN, level, 0.5) == "1"
    assert confident_choice("按二", MAIN, level, 0.5) == "2"


@pytest.mark.parametrize("level, key", [(None, None), ("", None), ("0.0", None), ("0.4", None), ("0.5", "1"),
                                        ("0.9", "1")])
def test_a_menu_choice_matched_in_part_needs_a_known_confidence_over_the_threshold(level, key):
    assert confident_choice("我的卡丢了", MAIN, level, 0.5) == key


@pytest.mark.parametrize(
    "said, masked",
    [
        ("幺三八 三个八 幺二三四五", "<phone>"),
        ("腰三八腰二三四五六七八", "<phone>"),
        ("么三八么二三四五六七八", "<phone>"),
        ("幺三九俩俩三三四四五五", "<phone>"),
        ("幺三九双双三三四四五五", "<phone>"),
        ("三七零二零二 一九八五零三一二 两个零二五", "<id_number>"),
        ("370202198503120025井号", "<id_number>井号"),
        ("手机138·1234·5678", "手机<phone>"),
        ("电话是138～1234～5678", "电话是<phone>"),
        ("+86 138 1234 5678", "+<phone>"),
        ("37020219860714104大写的X", "<id_number>"),
        ("37020219860714104 EX", "<id_number>"),
        ("37020219860714104×", "<id_number>"),
        ("改密码，一三五 七九零", "改密码，<pin>"),
        ("两个八两个八", "<digits>"),  # four digits: most of a PIN
        ("查询，尾号三个八", "查询，尾号三个八"),  # three digits tell nothing
        ("两个月", "两个月"),
        ("怎么挂失", "怎么挂失"),
    ],
)
def test_a_number_said_in_the_new_ways_is_masked_whole(said, masked):
    assert mask_numbers(said) == masked


def digit_characters(text: str) -> str:
    """The characters of a text that are read as digits (Arabic, full-width, Chinese, sound-alikes)."""
    return "".join(ch for ch in text if ch.isdigit() or ch in DIGITS or ch in UNSURE_DIGITS)


@pytest.mark.parametrize("heard, kind, digits, read_back",
                         [row for row in SAID if row[2] is not None and len(row[2]) >= 4])
def test_every_number_in_the_table_is_masked_whole_for_the_record(heard, kind, digits, read_back):
    masked = mask_numbers(heard)
    assert digit_characters(masked) == "" and "<" in masked
