"""Whole calls where the caller says numbers and menu choices as people do.

An ID number said with a run or 腰 goes straight to the PIN when the recogniser is sure; one with a
word that reads two ways (双, 俩), or with no confidence given, is read back first. A menu choice said
exactly is taken without a Confidence (or with an empty or 0.0 one); one matched in part is asked
again. A new mobile and a call-back number said with +86, separators or runs are read back, then
kept as E.164. Nothing of a number said in these ways is kept in the call's record.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models.agents import CallbackRequest
from models.calls import CallState
from models.cards import holder_by_id_number
from tests.support import ALICE, BOB, PIN, XENA, events, verified

READ_BACK = "您说的身份证号码是370202，19850312，0025。"


def spoken_digits(text: str) -> str:
    """The digits read out in a prompt, without the commas and spaces between their groups."""
    return "".join(ch for ch in text if ch.isascii() and ch.isdigit())


def kept(app, phone) -> str:
    """Everything the call's record keeps of what the caller did: the recorded webhooks' fields (but
    the call's and account's SIDs: random hex, which may hold four digits of a number by chance)."""
    sids = ("CallSid", "AccountSid", "ParentCallSid", "DialCallSid")
    return repr([{k: v for k, v in ev.params.items() if k not in sids} for ev in events(app, phone.call_sid)])


def saved_data(app, phone) -> str:
    with app.extensions["sessions"]() as s:
        return repr(s.get(CallState, phone.call_sid).data)


@pytest.mark.parametrize(
    "said, id_number",
    [
        ("三七零二零二 一九八五零三一二 两个零二五", ALICE),
        ("三七零二零二腰九八五零三腰二零零二五", ALICE),
        ("我的身份证是三七零二零二一九八五零三一二零零二五井号", ALICE),
        ("三七零二零三一九九两个零五一七一零一五", BOB),
        ("370202·19860714·104 大写的X", XENA),
        ("37020219860714104 ex", XENA),
    ],
    ids=["a run of zeros", "腰 for 幺", "a lead-in and 井号", "a run in the birth date", "大写的X", "ex"],
)
def test_an_id_number_said_for_certain_with_good_confidence_goes_straight_to_the_pin(call, ledger, said, id_number):
    ledger.add(id_number)
    phone = call().dial().press("1").speak(said, 0.9)
    assert phone.prompts == ["auth.ask_pin"]
    phone.press(PIN + "#")
    assert phone.prompts == ["card.readback", "loss.confirm"]  # verified: the card to report lost


@pytest.mark.parametrize(
    "said",
    ["三七零二零二一九八五零三一二零零双五", "三七零俩零俩一九八五零三一二零零二五", "三七零二零二一九八五零三一二双零二五"],
    ids=["双五: 25 or 55", "俩 for 两", "双零: 20 or 00, the ID check picks 00"],
)
def test_an_id_number_with_a_word_that_reads_two_ways_is_read_back_before_the_pin(call, ledger, said):
    ledger.add(ALICE)
    phone = call().dial().press("1").speak(said, 0.95)
    assert phone.prompts == ["auth.id_heard", "auth.id_heard_menu"]
    assert phone.text() == READ_BACK + "正确请按1，重新输入请按2。"
    phone.press("1")
    assert phone.prompts == ["auth.ask_pin"]


@pytest.mark.parametrize("level", [None, "", "0.0"], ids=["no Confidence", "empty", "0.0"])
def test_an_id_number_said_with_unknown_confidence_is_read_back(call, ledger, level):
    ledger.add(ALICE)
    phone = call().dial().press("1").speak("三七零二零二 一九八五零三一二 两个零二五", level)
    assert phone.prompts == ["auth.id_heard", "auth.id_heard_menu"]
    assert phone.text().startswith(READ_BACK)


def test_a_read_back_id_number_is_confirmed_by_saying_yes_without_a_confidence(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("1").speak("三七零二零二一九八五零三一二零零双五", None).speak("对", None)
    assert phone.prompts == ["auth.ask_pin"]


def test_a_run_too_long_to_count_is_asked_again(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("1").speak("三七零二零二 一九八五零三一二 五个零", 0.95)
    assert phone.prompts == ["auth.bad_id", "auth.ask_id"]


def test_the_country_code_said_before_an_id_number_is_no_id_number(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("1").speak("+86 370202198503120025", 0.95)
    assert phone.prompts == ["auth.bad_id", "auth.ask_id"]


@pytest.mark.parametrize("level", [None, "", "0.0", 0.2], ids=["no Confidence", "empty", "0.0", "low"])
@pytest.mark.parametrize("said", ["挂失", "挂失。", "按一", "1"])
def test_a_menu_choice_said_exactly_is_taken_whatever_the_confidence(call, said, level):
    phone = call().dial().speak(said, level)
    assert phone.prompts == ["auth.ask_id"]


@pytest.mark.parametrize("level", [None, "", "0.0", 0.2], ids=["no Confidence", "empty", "0.0", "low"])
def test_a_menu_choice_matched_only_in_part_without_a_good_confidence_is_asked_again(call, level):
    phone = call().dial().speak("我的卡丢了", level)
    assert phone.prompts == ["common.not_understood", "main.menu", "keys.agent"]


def test_a_menu_choice_matched_in_part_with_a_good_confidence_is_taken(call):
    phone = call().dial().speak("我的卡丢了", 0.8)
    assert phone.prompts == ["auth.ask_id"]


def test_a_whole_call_by_voice_with_no_confidence_at_all_reports_the_card_lost_after_a_read_back(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().speak("挂失", None).speak("三七零二零二 一九八五零三一二 两个零二五", None)
    assert phone.prompts == ["auth.id_heard", "auth.id_heard_menu"]
    phone.speak("按一", None)
    assert phone.prompts == ["auth.ask_pin"]
    phone.press(PIN + "#")
    assert phone.prompts == ["card.readback", "loss.confirm"]
    phone.speak("一", None)
    assert phone.prompts[0] == "loss.done"


@pytest.mark.parametrize(
    "said",
    ["+86 138·1234·5678", "手机 幺三八 幺二三四 五六七八 井号", "腰三八腰二三四五六七八", "电话是 138～1234～5678"],
)
def test_a_new_mobile_said_as_people_say_it_is_read_back_then_saved(app, call, ledger, said):
    ledger.add(ALICE)
    phone = verified(call, key="6").press("1").speak(said, None)
    assert phone.prompts == ["mobile.readback", "mobile.confirm_menu"]
    assert spoken_digits(phone.text()).startswith("13812345678")
    phone.press("1")
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile == "+8613812345678"


def test_a_new_mobile_with_runs_is_read_back_with_every_digit(app, call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="6").press("1").speak("幺三八 四个零 四个八", 0.9)
    assert phone.prompts == ["mobile.readback", "mobile.confirm_menu"]
    assert spoken_digits(phone.text()).startswith("13800008888")
    phone.press("1")
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile == "+8613800008888"


@pytest.mark.parametrize(
    "said, number",
    [("+86 139 双双 三三 四四五五", "+8613922334455"), ("加八六 五三二 八八八八 一二三四", "+8653288881234"),
     ("回电号码是 零五三二 四个八 一二三四", "+8653288881234")],
    ids=["+86 and 双双", "加八六 and a fixed line", "a lead-in and a run"],
)
def test_a_call_back_number_said_as_people_say_it_is_read_back_then_kept(app, call, said, number):
    phone = call(caller="+8613800000009").dial().press("0").agent_leg_ends("busy")
    phone.press("1").press("2")
    assert phone.prompts == ["callback.ask_number"]
    phone.speak(said, None)
    assert phone.prompts == ["callback.readback", "callback.confirm_menu", "keys.agent_back"]
    assert spoken_digits(phone.text()).startswith(number.replace("+86", "0" if number[3] != "1" else ""))
    phone.press("1").press("2")
    with app.extensions["sessions"]() as s:
        [item] = s.scalars(select(CallbackRequest).where(CallbackRequest.call_sid == phone.call_sid)).all()
    assert item.number == number


@pytest.mark.parametrize(
    "said",
    ["挂失，我的身份证是三七零二零二 一九八五零三一二 两个零二五", "挂失，身份证号三七零二零二腰九八五零三腰二零零二五",
     "改手机，新号码是腰三八 腰二三四 五六七八", "改手机，新手机 幺三八 幺二三四 四个八", "改手机，+86 138·1234·5678"],
)
def test_a_number_said_in_the_new_ways_at_a_menu_leaves_nothing_of_it_in_the_record(app, call, ledger, said):
    ledger.add(ALICE)
    phone = call().dial().speak(said, 0.9)
    assert phone.prompts == ["auth.ask_id"]
    record = kept(app, phone)
    for secret in (ALICE, "13812345678", "13812348888"):
        assert not any(secret[i:i + 4] in record for i in range(len(secret) - 3))
    assert "<" in events(app, phone.call_sid)[1].params["SpeechResult"]


def test_an_id_number_and_a_mobile_said_in_the_new_ways_leave_nothing_of_them_in_the_record(app, call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("6").speak("三七零二零二一九八五零三一二零零双五", 0.9).press("1").press(PIN + "#")
    phone.press("1").speak("+86 幺三八 三个八 幺二三四五", 0.9)
    assert phone.prompts == ["mobile.readback", "mobile.confirm_menu"]
    phone.press("2").hang_up()  # not this one, and gone: the number is dropped with the call
    record = kept(app, phone)
    assert ALICE not in saved_data(app, phone) and "13888812345" not in saved_data(app, phone)
    for secret in (ALICE, "13888812345"):
        assert not any(secret[i:i + 4] in record for i in range(len(secret) - 3))
    said = [ev.params.get("SpeechResult") for ev in events(app, phone.call_sid) if ev.params.get("SpeechResult")]
    assert said == ["<id_number>", "<phone>"]


# -- the read-back of a new mobile or a call-back number, answered by voice ------------------------

def at_the_new_mobile_read_back(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="6").press("1").speak("幺三八 幺二三四 五六七八", None)
    assert phone.prompts == ["mobile.readback", "mobile.confirm_menu"]
    return phone


def at_the_call_back_number_read_back(call):
    phone = call(caller="+8613800000009").dial().press("0").agent_leg_ends("busy").press("1").press("2")
    phone.speak("零五三二 八八八八 一二三四", None)
    assert phone.prompts == ["callback.readback", "callback.confirm_menu", "keys.agent_back"]
    return phone


def test_the_read_backs_listen_for_yes_and_no(call, ledger):
    for phone in (at_the_new_mobile_read_back(call, ledger), at_the_call_back_number_read_back(call)):
        assert 'input="dtmf speech"' in phone.twiml
        hints = phone.twiml.split('hints="')[1].split('"')[0].split(",")
        assert {"对", "确认", "是的", "没错", "不对", "错", "重说"} <= set(hints)


@pytest.mark.parametrize("said", ["对", "确认", "是的", "没错"])
def test_a_new_mobile_read_back_is_confirmed_by_saying_yes_without_a_confidence(app, call, ledger, said):
    at_the_new_mobile_read_back(call, ledger).speak(said, None)
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile == "+8613812345678"


@pytest.mark.parametrize("said, confidence", [("不对", None), ("错", ""), ("重说", "0.0"), ("不对，我重说一遍", 0.9)])
def test_a_new_mobile_read_back_is_keyed_again_by_saying_no(app, call, ledger, said, confidence):
    phone = at_the_new_mobile_read_back(call, ledger).speak(said, confidence)
    assert phone.prompts == ["mobile.ask"]
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile != "+8613812345678"


def test_a_yes_said_in_part_without_a_confidence_is_asked_again_not_taken(app, call, ledger):
    phone = at_the_new_mobile_read_back(call, ledger).speak("嗯对的吧", None)
    assert phone.prompts[0] == "common.not_understood"
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile != "+8613812345678"


def test_a_call_back_number_read_back_is_confirmed_by_saying_yes(call):
    phone = at_the_call_back_number_read_back(call).speak("是的", None)
    assert phone.prompts[0] == "callback.message_offer"


def test_a_call_back_number_read_back_is_keyed_again_by_saying_no(call):
    phone = at_the_call_back_number_read_back(call).speak("不对", None)
    assert phone.prompts == ["callback.ask_number"]
