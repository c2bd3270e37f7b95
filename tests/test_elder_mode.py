"""Elder mode (适老化): callers 65 and over hear slower speech, wait longer, and are offered an agent first.

An elder caller is one whose verified ID number's birth date makes them at least elder.age on the
day of the call (Qingdao's date), or, from the first webhook, one who calls from the registered
mobile of exactly one cardholder that old. Time is pinned on both sides of a 65th birthday.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date

import pytest
from sqlalchemy import event, text

from ivr.callflow.heard import heard_in_twiml
from ivr.sim.phone import Agent, ClientTransport, Phone, Queues, say_seconds
from models.elders import age_on, is_elder
from models.identity import check_char
from tests.support import ALICE, ON_POSTGRES, PIN, TOKEN, Ledger, calls, events, signed_post, verified


def born(day: date, seq: str = "002") -> str:
    """Return a made-up Qingdao (市南区) ID number of someone born on a day, with its check character."""
    body = f"370202{day:%Y%m%d}{seq}"
    return body + check_char(body)


# 65 on Tuesday 1 December 2026: the frozen clock's Monday is the day before the birthday.
SENIOR = born(date(1961, 12, 1))
SPOUSE = born(date(1958, 5, 20), "011")  # 68: shares SENIOR's mobile in one test
SENIOR_MOBILE = "13800000065"
CALLER = "+86" + SENIOR_MOBILE
BIRTHDAY_10AM = "2026-12-01 02:00:00"  # Tuesday 1 December 2026, 10:00 in Qingdao: a working day
MONDAY_8PM = "2026-11-30 12:00:00"  # the day before, 20:00 in Qingdao: agents off duty


def says(twiml: str) -> list[tuple[str | None, str]]:
    """Return each <Say> of a document: its <prosody rate> (None: none) and its text."""
    out = []
    for say in ET.fromstring(twiml).iter("Say"):
        prosody = say.find("prosody")
        out.append((None if prosody is None else prosody.get("rate"), "".join(say.itertext())))
    return out


def gather(twiml: str) -> dict[str, str]:
    """Return the attributes of the document's <Gather>."""
    found = ET.fromstring(twiml).find("Gather")
    assert found is not None, twiml
    return dict(found.attrib)


def slow(twiml: str) -> bool:
    """Tell whether every <Say> of a document is said at the elder rate (85 %), with nothing outside it."""
    root = ET.fromstring(twiml)
    for say in root.iter("Say"):
        prosody = list(say)
        if (say.text or "").strip() or len(prosody) != 1 or prosody[0].tag != "prosody" \
                or prosody[0].get("rate") != "85%" or (prosody[0].tail or "").strip():
            return False
    return bool(list(root.iter("Say"))) and not list(root.iter("Play"))


def test_age_turns_on_the_birthday_itself_and_a_29_february_birthday_on_1_march():
    assert age_on(date(1961, 12, 1), date(2026, 11, 30)) == 64
    assert age_on(date(1961, 12, 1), date(2026, 12, 1)) == 65
    assert age_on(date(1960, 2, 29), date(2025, 2, 28)) == 64
    assert age_on(date(1960, 2, 29), date(2025, 3, 1)) == 65
    assert not is_elder(SENIOR, date(2026, 11, 30)) and is_elder(SENIOR, date(2026, 12, 1))
    assert is_elder(SENIOR, date(2026, 12, 1), age=65) and not is_elder(SENIOR, date(2026, 12, 1), age=66)


# -- by the verified ID number's birth date -----------------------------------------------------


def test_the_day_before_the_65th_birthday_a_verified_caller_hears_the_menus_as_anyone(call, ledger):
    ledger.add(SENIOR)
    phone = verified(call, key="3", id_number=SENIOR)
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
    assert gather(phone.twiml)["timeout"] == "6"
    assert all(rate is None for rate, _ in says(phone.twiml))
    assert calls(ledger.app)[0].data.get("elder") is None


def test_on_the_65th_birthday_a_verified_caller_hears_slower_waits_longer_and_is_offered_an_agent_first(
        call, ledger, clock):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR)
    phone = call().dial()
    assert gather(phone.twiml)["timeout"] == "6" and not slow(phone.twiml)  # not known yet: not their mobile
    phone.press("3").press(SENIOR + "#")
    assert gather(phone.twiml)["timeout"] == "10" and not slow(phone.twiml)  # the PIN entry: not verified yet
    phone.press(PIN + "#")
    assert phone.prompts == ["card.readback", "status.detail.normal", "keys.agent_first", "status.menu",
                             "keys.noagent"]
    assert slow(phone.twiml)
    assert says(phone.twiml)[2] == ("85%", "人工服务请按0。")
    assert gather(phone.twiml) == {
        "action": "/voice/step?t=4", "actionOnEmptyResult": "false", "finishOnKey": "", "hints": gather(
            phone.twiml)["hints"], "input": "dtmf speech", "language": "cmn-Hans-CN", "method": "POST",
        "numDigits": "1", "speechTimeout": "auto", "timeout": "11"}
    (row,) = calls(ledger.app)
    assert row.data["elder"] == "id"
    # Every menu from now on: the main menu, the agent first, then the eight services.
    phone.press("*")
    assert phone.prompts == ["keys.agent_first", "main.menu", "keys.noagent"]
    assert gather(phone.twiml)["timeout"] == "11" and slow(phone.twiml)
    phone.press("0")
    assert phone.prompts == ["agent.connecting"] and slow(phone.twiml)


def test_the_birthday_is_qingdaos_date_not_utcs(call, ledger, clock):
    clock.move_to("2026-11-30 16:30:00")  # 1 December, 00:30 in Qingdao; still 30 November in UTC
    ledger.add(SENIOR)
    phone = verified(call, key="3", id_number=SENIOR)
    assert slow(phone.twiml) and gather(phone.twiml)["timeout"] == "11"
    assert "keys.agent_first" not in phone.prompts  # agents off duty: 0 says when they work, as for anyone


def test_a_caller_verified_as_someone_younger_leaves_elder_mode_even_from_an_elders_mobile(call, ledger, clock):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    ledger.add(ALICE, mobile="13800000001")
    phone = call(caller=CALLER).dial()
    assert slow(phone.twiml)
    phone.press("3").press(ALICE + "#").press(PIN + "#")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
    assert not slow(phone.twiml) and gather(phone.twiml)["timeout"] == "6"
    assert calls(ledger.app)[0].data.get("elder") is None


# -- by the caller's number, from the first webhook ---------------------------------------------


def test_an_elders_registered_mobile_is_an_elder_caller_from_the_greeting_on(call, ledger, clock, app):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    phone = call(caller=CALLER).dial()
    assert phone.prompts == ["common.welcome", "keys.agent_first", "main.menu", "keys.noagent"]
    assert slow(phone.twiml)
    welcome = app.extensions["catalogue"].texts["common.welcome"]
    assert says(phone.twiml)[:2] == [("85%", welcome), ("85%", "人工服务请按0。")]
    assert gather(phone.twiml)["timeout"] == "11"
    (row,) = calls(app)
    assert row.data["elder"] == "mobile"
    # The console reads what was heard from the recorded TwiML, prosody and all.
    recorded = events(app, phone.call_sid)[0].twiml
    assert [h.prompt for h in heard_in_twiml(recorded, app.extensions["catalogue"])] == phone.prompts
    # Nothing is said about whom: the greeting is everyone's, and no name or digits are read.
    assert "测试" not in phone.text() and "0065" not in phone.text()
    # Entries wait longer too (the ID number, keyed or spoken; Twilio ends speech by itself).
    phone.press("3")
    assert phone.prompts == ["auth.ask_id"]
    assert phone.twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/voice/step?t=2" actionOnEmptyResult="false" '
        'finishOnKey="#" hints="$OOV_CLASS_DIGIT_SEQUENCE" input="dtmf speech" language="cmn-Hans-CN" method="POST" '
        'speechTimeout="auto" timeout="15"><Say language="cmn-CN" voice="Polly.Zhiyu"><prosody rate="85%">'
        + app.extensions["catalogue"].texts["auth.ask_id"] + "</prosody></Say></Gather>"
        '<Redirect method="POST">/voice/step?t=2&amp;e=silence</Redirect></Response>')
    entry = gather(phone.twiml)
    assert (entry["timeout"], entry["input"], entry["speechTimeout"], entry["finishOnKey"]) == (
        "15", "dtmf speech", "auto", "#")
    phone.speak(" ".join(SENIOR), confidence=0.92)
    assert phone.prompts == ["auth.ask_pin"] and gather(phone.twiml)["timeout"] == "15" and slow(phone.twiml)
    phone.press(PIN + "#")
    assert phone.prompts[-3:] == ["keys.agent_first", "status.menu", "keys.noagent"]
    assert calls(app)[0].data["elder"] == "id"


def test_the_day_before_the_birthday_the_same_mobile_is_an_ordinary_caller(call, ledger):
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    phone = call(caller=CALLER).dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    assert not slow(phone.twiml) and gather(phone.twiml)["timeout"] == "6"
    assert calls(ledger.app)[0].data.get("elder") is None


def test_a_mobile_two_holders_share_tells_nothing_even_when_both_are_elders(call, ledger, clock):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    ledger.add(SPOUSE, mobile=SENIOR_MOBILE)
    phone = call(caller=CALLER).dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    assert not slow(phone.twiml) and gather(phone.twiml)["timeout"] == "6"


def test_a_younger_holders_mobile_and_a_number_nobody_registered_are_ordinary_callers(call, ledger, clock):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(ALICE, mobile=SENIOR_MOBILE)
    for caller in (CALLER, "+8613800000066", "+85291234567", "anonymous"):
        phone = call(caller=caller).dial()
        assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"], caller
        assert not slow(phone.twiml)


def test_out_of_staffed_hours_an_elder_is_not_offered_the_agent_first_and_0_says_the_hours(call, ledger, clock):
    clock.move_to(MONDAY_8PM)
    ledger.add(born(date(1950, 3, 3)), mobile=SENIOR_MOBILE)
    phone = call(caller=CALLER).dial()
    assert phone.prompts == ["common.welcome", "common.closed_hours", "main.menu", "keys.noagent"]
    assert slow(phone.twiml) and gather(phone.twiml)["timeout"] == "11"
    phone.press("0")
    assert phone.prompts == ["common.closed_hours", "main.menu", "keys.noagent"] and slow(phone.twiml)


def test_the_agents_whisper_says_an_elder_is_calling_at_the_normal_rate(call, ledger, clock, app):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    phone = call(caller=CALLER).dial().press("0")
    assert calls(app)[0].handoff["elder"] is True
    phone.agent_leg_ends("completed")
    assert [h.text for h in phone.agent_heard] == [
        "12333热线转接。", "长者来电，请放慢语速。", "来电人未通过身份验证。", "尚未选择业务。", "转接原因：来电人要求人工服务。"]
    whisper = signed_post(app.test_client(), "/voice/whisper", {
        "CallSid": "CA" + "e" * 32, "ParentCallSid": phone.call_sid, "Direction": "outbound-dial"}).get_data(True)
    assert [rate for rate, _ in says(whisper)] == [None] * 5  # the agent hears it at the normal rate


def test_an_ordinary_callers_whisper_does_not_say_elder(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3").press("0").agent_leg_ends("completed")
    assert "长者来电，请放慢语速。" not in [h.text for h in phone.agent_heard]
    assert phone.agent_heard[1].text == "来电人已通过身份验证，身份证尾号0025。"


# -- the settings ---------------------------------------------------------------------------------


def phone_of(app, **kw) -> Phone:
    return Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"], **kw)


def test_elder_mode_off_for_a_hotline_leaves_its_elder_callers_as_anyone(configured, clock):
    clock.move_to(BIRTHDAY_10AM)
    app = configured(elder={"hotlines": {"12333": False}})
    Ledger(app).add(SENIOR, mobile=SENIOR_MOBILE)
    phone = phone_of(app, caller=CALLER).dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"] and not slow(phone.twiml)
    phone.press("3").press(SENIOR + "#").press(PIN + "#")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
    assert not slow(phone.twiml) and gather(phone.twiml)["timeout"] == "6"
    # ... while 12345, still on, greets the same caller slower and waits longer for the 1.
    city = phone_of(app, caller=CALLER, dialled="+8653212345").dial()
    assert city.prompts == ["city.greeting"] and slow(city.twiml) and gather(city.twiml)["timeout"] == "10"


def test_the_age_rate_and_extra_seconds_are_the_configurations(configured, clock):
    app = configured(elder={"age": 64, "rate": "70%", "extra_timeout": 8})
    Ledger(app).add(SENIOR, mobile=SENIOR_MOBILE)  # 64 today
    phone = phone_of(app, caller=CALLER).dial()
    assert [rate for rate, _ in says(phone.twiml)] == ["70%"] * 4 and gather(phone.twiml)["timeout"] == "14"


@pytest.mark.parametrize("elder, problem", [
    ({"rate": "250%"}, "elder.rate must be a percentage from 20 to 100"),
    ({"rate": 10}, "elder.rate must be a percentage from 20 to 100"),
    ({"age": 0}, "elder.age must be a whole number of at least 1"),
    ({"extra_timeout": -1}, "elder.extra_timeout must be a whole number of at least 0"),
    ({"hotlines": {"12333": "no"}}, "elder.hotlines.12333 must be true or false"),
    ({"enabled": True}, "elder.enabled: unknown"),
])
def test_a_wrong_elder_setting_stops_the_start_with_its_name(configured, elder, problem):
    with pytest.raises(ValueError, match=problem):
        configured(elder=elder)


def test_a_hotline_elder_mode_names_but_the_hotlines_do_not_is_told_and_ignored(configured, caplog):
    app = configured(elder={"hotlines": {"12321": False}})
    assert app.extensions["settings"].elder.off == frozenset({"12321"})
    assert "elder.hotlines.12321: no hotline of that name (hotlines.numbers.<To>.name); ignored" in caplog.text


def test_a_recorded_prompt_is_said_slower_to_an_elder_and_played_to_anyone_else(app, call, ledger, clock):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    app.extensions["catalogue"].audio.add("common.welcome")  # as if voice_prompts/audio/common.welcome.wav
    app.extensions["turns"].renderer.forget()
    anyone = call().dial()
    assert ET.fromstring(anyone.twiml).find("Gather/Play").text == "/prompts/audio/common.welcome.wav"
    elder = call(caller=CALLER).dial()
    assert slow(elder.twiml) and says(elder.twiml)[0] == ("85%", app.extensions["catalogue"].texts["common.welcome"])


# -- the first webhook: one indexed look-up ---------------------------------------------------------


def test_the_first_webhook_looks_the_mobile_up_once_on_its_index(configured, clock):
    clock.move_to(BIRTHDAY_10AM)
    app = configured(database={"fast_path": False})  # plain Core: every statement reaches the engine's events
    Ledger(app).add(SENIOR, mobile=SENIOR_MOBILE)
    engine = app.extensions["engine"]
    seen: list[tuple[str, dict]] = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, st, params, ctx, many: seen.append((st, params)))
    phone = phone_of(app, caller=CALLER).dial()
    assert slow(phone.twiml)
    lookups = [(st, params) for st, params in seen if "cardholders" in st]
    assert len(lookups) == 1 and "LIMIT" in lookups[0][0].upper()
    statement, params = lookups[0]
    with engine.begin() as conn:
        if ON_POSTGRES:
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # a test ledger is too small to need the index
            plan = " ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
        else:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
    assert "ix_cardholders_mobile" in plan
    seen.clear()
    phone.press("1")  # later webhooks do not look again
    assert not [st for st, _ in seen if "cardholders" in st]


# -- the emulator ---------------------------------------------------------------------------------


def test_the_emulator_times_a_slower_say_by_its_prosody_rate():
    plain = ET.fromstring('<Say voice="Polly.Zhiyu">人工服务请按0。</Say>')
    slower = ET.fromstring('<Say voice="Polly.Zhiyu"><prosody rate="85%">人工服务请按'
                           '<say-as interpret-as="digits">0</say-as>。</prosody></Say>')
    assert say_seconds(plain) == pytest.approx(8 * 0.25)
    assert say_seconds(slower) == pytest.approx(8 * 0.25 / 0.85)


def test_in_the_queue_an_elder_hears_the_wait_and_the_connection_slower_and_the_agent_hears_elder(configured, clock):
    clock.move_to(BIRTHDAY_10AM)
    app = configured(agent={"leg": "queue"})
    Ledger(app).add(SENIOR, mobile=SENIOR_MOBILE)
    queues = Queues()
    phone = phone_of(app, caller=CALLER, queues=queues).dial().press("0")
    assert phone.queued is not None
    assert phone.prompts == ["agent.connecting", "queue.next_in_line", "queue.press_1"]
    assert slow(phone.twiml)  # the wait document (its <Gather> for the 1 keeps its own timeout)
    assert gather(phone.twiml)["timeout"] == "1"
    agent = Agent(ClientTransport(app.test_client()), TOKEN, queues, number="+8653200000000",
                  catalogue=app.extensions["catalogue"])
    assert agent.take() is phone
    assert "长者来电，请放慢语速。" in [h.text for h in agent.heard]
    assert phone.prompts == ["queue.connecting"]


def test_the_console_shows_an_elder_call_and_what_it_heard_through_the_prosody(agent, call, ledger, clock, app):
    clock.move_to(BIRTHDAY_10AM)
    ledger.add(SENIOR, mobile=SENIOR_MOBILE)
    phone = call(caller=CALLER).dial().press("0").agent_leg_ends("completed").press("1").hang_up()
    page = agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True)
    texts = app.extensions["catalogue"].texts
    assert re.search(r'<dd id="elder">长者来电（来电号码为长者登记的手机）</dd>', page)
    heard = re.findall(r'<li data-prompt="([\w.]+)">', page)
    assert heard[:4] == ["common.welcome", "keys.agent_first", "main.menu", "keys.noagent"]
    assert texts["keys.agent_first"] in page and "prosody" not in page
