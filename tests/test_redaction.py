"""Numbers a caller keys or says are masked before anything is stored, in every state, menus too.

A menu choice spoken around an ID number, a PIN or a mobile still picks its option; the recorded
webhook (call_events.params) keeps the words and the placeholder, nothing of the number.
"""
from __future__ import annotations

import pytest

from ivr.callflow.redact import mask_numbers
from tests.support import ALICE, PIN, XENA, events

MOBILE = "13812345678"
CN = dict(zip("0123456789", "零一二三四五六七八九", strict=True))


def chinese(digits: str) -> str:
    """Say digits one by one in Chinese numerals."""
    return "".join(CN.get(d, d) for d in digits)


def pieces(secret: str) -> set[str]:
    """Every four characters in a row of a secret number."""
    return {secret[i:i + 4] for i in range(len(secret) - 3)}


def kept(app, phone) -> list[dict[str, str]]:
    """The recorded webhooks' fields of a call, without the SIDs (random letters and digits)."""
    return [{k: v for k, v in ev.params.items() if not k.endswith("Sid")} for ev in events(app, phone.call_sid)]


def nothing_of(secret: str, params: list[dict[str, str]]) -> bool:
    text = repr(params)
    return not any(piece in text for piece in pieces(secret))


@pytest.mark.parametrize(
    "said, masked",
    [
        (f"挂失，我的身份证号是{ALICE}", "挂失，我的身份证号是<id_number>"),
        (f"改密码，原来的密码是{PIN}", "改密码，原来的密码是<pin>"),
        (f"改手机，新号码是{MOBILE}", "改手机，新号码是<phone>"),
        ("1", "1"),
        ("#", "#"),
        ("按一", "按一"),
        ("我要挂失一张卡", "我要挂失一张卡"),
        ("两张卡", "两张卡"),
        # Chinese numerals, 幺 两 洞 〇, spaces, commas, dashes, dots, fillers between the groups
        ("三七零二 零二一九 八五零三 一二零零 二五", "<id_number>"),
        ("改密码，八零七 嗯 一六二", "改密码，<pin>"),
        ("幺三八-幺两三四-五六七八", "<phone>"),
        ("洞五三二.八八八八.六六六六", "<phone>"),
        ("〇五三二，八八八八，六六六六", "<phone>"),
        ("１３８１２３４５６７８", "<phone>"),
        ("+86 138 1234 5678", "+<phone>"),
        # an X at the end, spoken or keyed as *
        ("三七零二零二一九八六零七一四一零四叉", "<id_number>"),
        (XENA, "<id_number>"),
        (XENA[:-1] + "*", "<id_number>"),
        ("查询，尾号0025", "查询，尾号<digits>"),
    ],
)
def test_every_run_of_digits_that_could_be_a_secret_is_masked(said, masked):
    assert mask_numbers(said) == masked


@pytest.mark.parametrize(
    "said, first_prompt, masked",
    [
        (f"挂失，我的身份证号是{ALICE}", "auth.ask_id", "挂失，我的身份证号是<id_number>"),
        (f"挂失，我的身份证号是{' '.join(chinese(ALICE))}", "auth.ask_id", "挂失，我的身份证号是<id_number>"),
        (f"改密码，原来的密码是{PIN}", "auth.ask_id", "改密码，原来的密码是<pin>"),
        (f"改密码，原来的密码是{chinese(PIN[:3])}，{chinese(PIN[3:])}", "auth.ask_id", "改密码，原来的密码是<pin>"),
        (f"改手机，新号码是{MOBILE[:3]}-{MOBILE[3:7]}-{MOBILE[7:]}", "auth.ask_id", "改手机，新号码是<phone>"),
    ],
    ids=["ID number", "ID number in Chinese numerals", "PIN", "PIN in two groups", "mobile with dashes"],
)
def test_a_menu_choice_spoken_with_a_number_picks_the_option_and_keeps_nothing_of_the_number(
        app, call, ledger, said, first_prompt, masked):
    ledger.add(ALICE)
    phone = call().dial().speak(said, 0.9)
    assert phone.prompts == [first_prompt]
    params = kept(app, phone)
    assert params[1]["SpeechResult"] == masked
    for secret in (ALICE, PIN, MOBILE):
        assert nothing_of(secret, params)


def test_a_number_alone_spoken_at_a_menu_is_no_choice_and_is_kept_as_its_placeholder(app, call):
    phone = call().dial().speak(MOBILE, 0.9)
    assert phone.prompts == ["common.not_understood", "main.menu", "keys.agent"]
    assert kept(app, phone)[1]["SpeechResult"] == "<phone>"


def test_a_menu_key_is_kept_as_it_was_keyed(app, call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#").press(PIN + "#")
    params = kept(app, phone)
    assert [p.get("Digits") for p in params] == [None, "1", "<id_number>", "<pin>"]


def test_keys_posted_at_a_menu_with_a_number_in_them_are_masked(app, call):
    phone = call().dial()
    phone._post("http://127.0.0.1:8000/voice/step?t=1", {"Digits": ALICE})  # not what a menu's <Gather> sends
    params = kept(app, phone)
    assert params[1]["Digits"] == "<id_number>"
    assert nothing_of(ALICE, params)
