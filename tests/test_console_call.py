"""The whole call on one page: turn by turn what the caller heard and did, in local time, and how it ended."""
from __future__ import annotations

import html as htmllib
import re

import pytest
from sqlalchemy import select

from ivr.callflow.heard import heard_in_twiml
from models.agents import CallbackRequest
from tests.support import ALICE, PIN, events


@pytest.fixture
def texts(app):
    """The prompt catalogue's texts, by prompt id."""
    return app.extensions["catalogue"].texts


def text_of(fragment: str) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def transcript(page: str) -> list[tuple[str, str, list[str]]]:
    """Return each turn of a call page: (local time, what the caller did, the texts heard)."""
    turns = []
    for block in re.findall(r'<li class="turn \w+">(.*?)</div>\s*</li>', page, re.S):
        at = re.search(r"<time>(.*?)</time>", block).group(1)
        did = text_of(re.search(r'<p class="did">(.*?)</p>', block, re.S).group(1))
        heard = [text_of(t) for t in re.findall(r"<li[^>]*>(.*?)</li>", block, re.S)]
        turns.append((at, did, heard))
    return turns


def fact(page: str, name: str) -> str:
    return " ".join(text_of(re.search(rf'<dd id="{name}">(.*?)</dd>', page, re.S).group(1)).split())


def transferred_call(call, clock, status="completed"):
    """A verified caller asks for an agent after choosing the loss report: 10:00:00 to 10:00:37 in Qingdao."""
    phone = call().dial()
    clock.tick(5)
    phone.press("1")
    clock.tick(10)
    phone.press(ALICE + "#")
    clock.tick(5)
    phone.press(PIN + "#")
    clock.tick(3)
    phone.press("0")  # put through at 10:00:23
    clock.tick(12)
    phone.agent_leg_ends(status, 60)  # the agent answers at 10:00:35 (the whisper), then the leg ends
    return phone


def test_the_transcript_lists_what_was_heard_and_keyed_turn_by_turn_in_local_time(agent, ledger, call, clock, texts):
    ledger.add(ALICE)
    phone = transferred_call(call, clock)
    clock.tick(2)
    phone.press("1").hang_up()  # 满意, at 10:00:37
    page = agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True)
    assert transcript(page) == [
        ("10:00:00", "来电接入", [texts["common.welcome"], texts["main.menu"], texts["keys.agent"]]),
        ("10:00:05", "按键 1", [texts["auth.ask_id"]]),
        ("10:00:15", "按键 〔身份证号码〕", [texts["auth.ask_pin"]]),
        ("10:00:20", "按键 〔服务密码〕", ["您尾号0025的社保卡，状态为正常。", texts["loss.confirm"]]),
        ("10:00:23", "按键 0", [texts["agent.connecting"]]),
        ("10:00:35", "坐席接听", []),
        ("10:00:35", "转接人工结果：已接听，通话 60 秒", [texts["rating.ask"]]),
        ("10:00:37", "按键 1", [texts["rating.thanks"], texts["common.goodbye"]]),
        ("10:00:37", "通话结束，时长 42 秒", []),
    ]
    assert ALICE not in page and PIN not in page


def test_the_call_page_shows_the_holder_services_transfer_leg_and_rating(agent, ledger, call, clock, app):
    ledger.add(ALICE, name="张伟")
    phone = transferred_call(call, clock)
    phone.press("2").hang_up()
    page = agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True)
    holder_id = ledger.holder(ALICE).id
    assert fact(page, "identity") == "已验证：张伟（**************0025）"
    assert f'<a href="/agent/holders/{holder_id}">张伟（**************0025）</a>' in page
    assert fact(page, "services") == "口头挂失" and fact(page, "completed") == "—"
    assert fact(page, "transfer") == "2026-11-30 10:00:23 · 来电人要求人工（在“挂失：确认”）"
    assert fact(page, "leg") == "已接听 · 振铃 12 秒 · 通话 60 秒"
    assert fact(page, "rating") == "基本满意"
    assert fact(page, "started") == "2026-11-30 10:00:00"
    assert fact(page, "ended") == "2026-11-30 10:00:35 · 转人工 · 时长 42 秒"
    assert fact(page, "callback") == "无"
    assert "+00:00" not in page and "T02:00" not in page  # no UTC ISO time anywhere


@pytest.mark.parametrize("status, shown", [("no-answer", "无人接听 · 振铃 12 秒"), ("busy", "坐席忙 · 振铃 12 秒"),
                                           ("failed", "接通失败 · 振铃 12 秒")])
def test_an_unanswered_agent_leg_shows_its_outcome_and_how_long_it_rang(agent, ledger, call, clock, status, shown):
    ledger.add(ALICE)
    phone = transferred_call(call, clock, status)
    page = agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True)
    assert fact(page, "leg") == shown


def test_a_call_back_request_left_in_the_call_is_shown_with_its_number_masked(agent, app, call, clock, texts):
    clock.move_to("2026-11-30 12:00:00")  # 20:00 in Qingdao: closed
    phone = call(caller="+8613912345678").dial().press("####").press("1").press("1").press("2")  # no message
    assert phone.prompts == ["callback.saved", "rating.ask"]
    page = agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True)
    assert fact(page, "callback") == "2026-11-30 20:00:00 · 回电号码 +86139****5678 · 待回电"
    assert fact(page, "identity") == "未验证" and fact(page, "transfer") == "未转人工"
    assert "13912345678" not in page
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(CallbackRequest.call_sid)).all() == [phone.call_sid]


def test_speech_and_silence_are_shown_as_the_record_keeps_them(agent, ledger, call, clock, texts):
    ledger.add(ALICE)
    phone = call().dial().speak("我要挂失").speak(f"{ALICE[:6]} {ALICE[6:]}").silence()
    turns = transcript(agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True))
    assert [did for _at, did, _heard in turns] == ["来电接入", "说：“我要挂失”", "说：“〔身份证号码〕”", "没有按键（等待超时）"]


def test_a_call_that_does_not_exist_is_a_chinese_404(agent):
    resp = agent.client.get("/agent/calls/CA0000")
    assert resp.status_code == 404 and "<title>页面不存在 · 社保卡热线</title>" in resp.get_data(as_text=True)


def test_the_console_and_the_emulator_hear_the_same_in_every_recorded_answer(app, ledger, call, clock):
    ledger.add(ALICE)
    phone = transferred_call(call, clock)
    catalogue = app.extensions["catalogue"]
    # What the console reads from the recorded answers, in order, is what the emulator's caller heard:
    # one reader of TwiML (ivr/callflow/heard.py), which the emulator uses too.
    shared = [(h.prompt, h.text, h.verb) for event in events(app, phone.call_sid) if event.twiml
              for h in heard_in_twiml(event.twiml, catalogue)]
    assert shared == [(h.prompt, h.text, h.verb) for h in phone.heard] != []
