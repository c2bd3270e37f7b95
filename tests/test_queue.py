"""The optional queue (agent.leg: queue): the caller waits in their hotline's Twilio queue, hears
their place and an estimated wait every 30-45 s, may press 1 for a call-back that keeps their place;
agents take the next caller at /voice/queue/next; the console shows who waits."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import select

from ivr.sim.phone import Agent, ClientTransport, Phone, Queues
from models.agents import CallbackRequest
from models.callbacks import QueueWait
from models.calls import CallState
from tests.support import AGENT, ALICE, PIN, TOKEN, Console, create_agent, events, signed_post

SAY = '<Say language="cmn-CN" voice="Polly.Zhiyu">'
HOURS = {"numbers": {"+8653212333": {"name": "12333", "hours": "always"},
                     "+8653212345": {"name": "12345", "entry": "agent_first", "hours": "always"}}}
TAKER = "+8653200000000"  # agent.dial: the one agent.queue_takers allows by default


@pytest.fixture
def queued_app(configured):
    """The hotline with agent.leg: queue, agents on duty around the clock."""
    return configured(agent={"leg": "queue"}, hotlines=HOURS)


@pytest.fixture
def queues():
    """Twilio's queues, shared by the callers and agents of a test."""
    return Queues()


@pytest.fixture
def caller(queued_app, queues):
    """A factory of callers of the queued hotline, all in the same Twilio account's queues."""
    def make(number: str = "+8613912345678", **kw) -> Phone:
        return Phone(ClientTransport(queued_app.test_client()), TOKEN, caller=number, queues=queues,
                     catalogue=queued_app.extensions["catalogue"], **kw)
    return make


@pytest.fixture
def agent_phone(queued_app, queues):
    """An agent's phone taking callers from the queues."""
    return Agent(ClientTransport(queued_app.test_client()), TOKEN, queues, number=TAKER,
                 catalogue=queued_app.extensions["catalogue"])


def items(app) -> list[CallbackRequest]:
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallbackRequest).order_by(CallbackRequest.id)))


def row(app, sid) -> CallState:
    with app.extensions["sessions"]() as s:
        return s.get(CallState, sid)


def announcements(phone: Phone) -> list[float]:
    """When the caller heard their place, on the queue's clock."""
    return [at for at, h in phone.queue_heard if h.prompt in ("queue.position", "queue.next_in_line")]


# -- the transfer puts the caller in the hotline's queue -------------------------------------------------------
def test_each_hotlines_callers_wait_in_its_own_queue_and_hear_their_place_at_once(caller):
    phone = caller().dial().press("0")
    assert phone.queued is not None and phone.queued.name == "hotline-12333"
    assert phone.prompts == ["agent.connecting", "queue.next_in_line", "queue.press_1"]
    city = caller("+8613800000002", dialled="+8653212345").dial().silence()
    assert city.queued is not None and city.queued.name == "hotline-12345"


def test_the_transfers_twiml_is_an_enqueue_into_the_hotlines_queue(queued_app, queues):
    phone = Phone(ClientTransport(queued_app.test_client()), TOKEN, queues=queues).dial()
    enqueue = next(e for e in events(queued_app, phone.call_sid) if e.kind == "incoming")
    assert enqueue.state_after == "main"
    phone.press("0")
    transfer = [e for e in events(queued_app, phone.call_sid) if e.kind == "step"][-1]
    assert transfer.twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>' + SAY + "正在为您转接人工服务，请稍候。</Say>"
        '<Enqueue action="/voice/queue/result?t=2" method="POST" waitUrl="/voice/queue/wait" waitUrlMethod="POST">'
        "hotline-12333</Enqueue></Response>")


def test_the_wait_says_the_place_the_estimate_and_1_for_a_call_back_then_silence(queued_app, caller):
    phone = caller().dial().press("0")
    with queued_app.extensions["sessions"]() as s, s.begin():  # an answered wait of 4 minutes, 10 minutes ago
        s.add(QueueWait(call_sid="CA0", hotline="12333", seconds=240,
                        answered_at=row(queued_app, phone.call_sid).updated_at - timedelta(minutes=10)))
    resp = signed_post(queued_app.test_client(), "/voice/queue/wait", {
        "CallSid": phone.call_sid, "From": "+8613912345678", "To": "+8653212333", "QueuePosition": "3",
        "CurrentQueueSize": "3", "QueueTime": "70", "AvgQueueTime": "50", "QueueSid": "QU1"})
    assert resp.get_data(as_text=True) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Gather action="/voice/queue/wait" actionOnEmptyResult="false" input="dtmf" method="POST" numDigits="1" '
        'timeout="1">' + SAY + "您现在排在第3位。</Say>" + SAY + "预计还需等待大约3分钟。</Say>"
        + SAY + "如需工作人员稍后给您回电，请按1，我们将为您保留排队顺序。</Say>"
        '<Pause length="25" /></Gather></Response>')
    recorded = [e for e in events(queued_app, phone.call_sid) if e.kind == "queue_wait"][-1]
    assert (recorded.params["QueuePosition"], recorded.params["QueueTime"], recorded.state_before) == (
        "3", "70", "agent_dial")


def test_with_music_configured_the_wait_plays_it_between_announcements(configured, queues):
    app = configured(agent={"leg": "queue", "queue_music": "https://example.gov.cn/hold.mp3"}, hotlines=HOURS)
    phone = Phone(ClientTransport(app.test_client()), TOKEN, queues=queues, play_seconds=30,
                  catalogue=app.extensions["catalogue"]).dial().press("0")
    assert "<Play>https://example.gov.cn/hold.mp3</Play></Gather>" in phone.twiml
    phone.wait(120)
    gaps = [b - a for a, b in zip(announcements(phone), announcements(phone)[1:], strict=False)]
    assert gaps and all(30 <= g <= 45 for g in gaps), gaps


def test_announcements_come_every_30_to_45_seconds_with_the_place_and_the_last_hours_estimate(
        queued_app, caller, agent_phone):
    first = caller("+8613900000001").dial().press("0")
    first.wait(150)
    second = caller("+8613900000002").dial().press("0")
    assert second.prompts == ["agent.connecting", "queue.position", "queue.press_1"]  # nobody answered yet: no minutes
    assert "您现在排在第2位。" in second.text() and "分钟" not in second.text()
    second.wait(50)
    times = announcements(first)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 4 and all(30 <= g <= 45 for g in gaps), gaps
    assert agent_phone.take() is first  # after 200 s: the last hour's answered waits are known now
    second.wait(40)
    assert second.prompts == ["queue.next_in_line", "queue.estimate", "queue.press_1"]
    assert "预计还需等待大约3分钟。" in second.text()  # 200 s typical, 71 s waited at that announcement: 129 s left
    waits = [e for e in events(queued_app, second.call_sid) if e.kind == "queue_wait"]
    assert waits[-1].params["QueueTime"] == "71"
    third = caller("+8613900000003").dial().press("0")
    assert "预计还需等待大约4分钟。" in third.text()  # 200 s typical, nothing waited yet
    second.wait(200)  # longer than callers usually wait: no minutes said, rather than a wrong promise
    assert second.prompts == ["queue.next_in_line", "queue.press_1"]
    with queued_app.extensions["sessions"]() as s:
        assert [(w.call_sid, w.hotline, w.seconds) for w in s.scalars(select(QueueWait))] == [
            (first.call_sid, "12333", 200)]


def test_the_estimate_counts_only_the_last_hours_answered_waits(queued_app, caller, agent_phone, clock):
    first = caller("+8613900000001").dial().press("0")
    first.wait(300)
    agent_phone.take()
    first.bridge_ends()
    clock.tick(timedelta(minutes=61))
    later = caller("+8613900000002").dial().press("0")
    assert later.prompts == ["agent.connecting", "queue.next_in_line", "queue.press_1"]


# -- 1 while waiting: a call-back that keeps the place -------------------------------------------------------
def test_pressing_1_while_waiting_leaves_the_queue_for_a_call_back_that_keeps_the_place(
        queued_app, caller, clock):
    first = caller("+8613900000001").dial().press("0")  # queued at 10:00
    clock.tick(timedelta(minutes=2))
    second = caller("+8613900000002").dial().press("0")  # queued at 10:02
    second.wait(40)
    clock.tick(timedelta(minutes=1))
    second.press("1")  # asks first, at 10:03
    assert [h.prompt for h in second.last] == ["queue.callback_saved", "rating.ask"]
    assert "回电号码尾号0002" in second.text()
    assert second.queued is None and second.queues.place(second) == (0, 0)
    clock.tick(timedelta(minutes=1))
    first.wait(40)
    first.press("1")  # asks later, at 10:04
    items_ = items(queued_app)
    assert [(i.kind, i.number) for i in items_] == [("queue", "+8613900000002"), ("queue", "+8613900000001")]
    assert [i.queued_at.strftime("%H:%M") for i in items_] == ["02:02", "02:00"]  # UTC: 10:02 and 10:00 in Qingdao
    create_agent(queued_app.test_cli_runner(), *AGENT)
    console = Console(queued_app.test_client())
    console.login(*AGENT)
    html = console.client.get("/agent/callbacks").get_data(as_text=True)
    assert re.findall(r'href="tel:(\+86\d+)"', html) == ["+8613900000001", "+8613900000002"]  # by the place kept
    assert html.count("排队回电") >= 2
    wait = [e for e in events(queued_app, first.call_sid) if e.kind == "queue_wait" and e.params.get("Digits")]
    assert [(e.params["Digits"], e.twiml) for e in wait] == [
        ("1", '<?xml version="1.0" encoding="UTF-8"?><Response><Leave /></Response>')]
    result = [e for e in events(queued_app, first.call_sid) if e.kind == "queue_result"]
    assert [e.params["QueueResult"] for e in result] == ["leave"]
    assert row(queued_app, first.call_sid).data["queue_result"] == "leave"


def test_a_caller_without_a_number_to_call_back_keys_one_and_keeps_the_place(queued_app, caller, clock):
    phone = caller("anonymous").dial().press("0")
    clock.tick(timedelta(minutes=3))
    phone.press("1")
    assert phone.prompts == ["queue.keep_place", "callback.ask_number"]
    phone.press("13800138000#").press("1").press("2")
    assert phone.prompts == ["callback.saved", "rating.ask"]
    [item] = items(queued_app)
    assert (item.kind, item.number, item.queued_at.strftime("%H:%M")) == ("queue", "+8613800138000", "02:00")


def test_another_key_while_waiting_is_told_wrong_and_the_wait_goes_on(caller):
    phone = caller().dial().press("0")
    phone.press("5")
    assert phone.prompts == ["common.invalid_key", "queue.press_1"]  # the place comes with the next announcement
    assert phone.queued is not None


# -- how the wait ended: QueueResult ------------------------------------------------------------------------
def test_an_agent_takes_the_caller_who_hears_they_are_connected_then_rates_the_call(
        queued_app, ledger_in, caller, agent_phone):
    phone = caller().dial().press("3").press(ALICE + "#").press(PIN + "#").press("0")
    phone.wait(50)
    assert agent_phone.take() is phone
    assert agent_phone.twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>' + SAY + "12333热线排队来电，已等候约1分钟。</Say>"
        + SAY + "12333热线转接。</Say>" + SAY + '来电人已通过身份验证，身份证尾号<say-as interpret-as="digits">0025'
        "</say-as>。</Say>" + SAY + "正在查询卡状态。</Say>" + SAY + "转接原因：来电人要求人工服务。</Say>"
        '<Dial><Queue url="/voice/whisper">hotline-12333</Queue></Dial></Response>')
    assert phone.prompts == ["queue.connecting"]
    whisper = [e for e in events(queued_app, phone.call_sid) if e.kind == "whisper"]
    assert [(e.params["QueueTime"], e.params["DequeingCallSid"]) for e in whisper] == [("50", agent_phone.call_sid)]
    phone.bridge_ends(120)
    assert phone.prompts == ["rating.ask"]
    phone.press("1")
    call_row = row(queued_app, phone.call_sid)
    assert (call_row.data["queue_result"], call_row.data["queue_seconds"], call_row.end_reason) == (
        "bridged", 50, "transferred")
    assert items(queued_app) == []


@pytest.fixture
def ledger_in(queued_app):
    from tests.support import Ledger

    Ledger(queued_app).add(ALICE)


@pytest.mark.parametrize("result", ["queue-full", "system-error", "error", "redirected", "bridging-in-process"])
def test_a_queue_that_failed_apologises_offers_a_call_back_and_makes_a_missed_item(queued_app, caller, result):
    phone = caller().dial().press("0").leave_queue(result)
    assert phone.prompts == ["agent.unavailable", "callback.offer", "keys.agent_back"]
    [item] = items(queued_app)
    assert (item.kind, item.number) == ("missed", "+8613912345678")
    assert row(queued_app, phone.call_sid).data["queue_result"] == result


def test_a_caller_who_hangs_up_in_the_queue_gets_nothing_said_and_becomes_a_missed_item(
        queued_app, caller, clock):
    phone = caller().dial().press("0")
    phone.wait(90)
    clock.tick(timedelta(seconds=90))
    phone.hang_up()
    result = [e for e in events(queued_app, phone.call_sid) if e.kind == "queue_result"]
    assert [(e.params["QueueResult"], e.params["QueueTime"], e.twiml) for e in result] == [
        ("hangup", "90", '<?xml version="1.0" encoding="UTF-8"?><Response />')]
    assert [e.kind for e in events(queued_app, phone.call_sid)][-1] == "status"
    [item] = items(queued_app)
    assert (item.kind, item.queued_at.strftime("%H:%M"), item.due_at.strftime("%H:%M")) == ("missed", "02:00", "02:30")


def test_the_report_counts_a_queued_transfer_as_transferred_and_its_leg_by_how_the_wait_ended(
        queued_app, caller, agent_phone):
    taken = caller("+8613900000001").dial().press("0")
    agent_phone.take()
    taken.bridge_ends().press("1")
    caller("+8613900000002").dial().press("0").hang_up()
    caller("+8613900000003").dial().press("0").leave_queue("queue-full").hang_up()
    out = queued_app.test_cli_runner().invoke(args=["report", "calls", "--format", "json"]).output
    figures = json.loads(out)
    assert figures["transferred"] == 3
    assert figures["agent_legs"] == {"answered": 1, "no_answer": 2, "busy": 0, "failed": 0, "answered_within_15s": 1}


# -- agents take the next caller -----------------------------------------------------------------------------
def next_caller(app, hotline: str | None = None, taker: str = TAKER):
    path = "/voice/queue/next" + (f"?hotline={hotline}" if hotline else "")
    return signed_post(app.test_client(), path, {"CallSid": "CA" + "7" * 32, "From": taker,
                                                  "To": "+8653200000001"}).get_data(as_text=True)


def test_queue_next_names_the_hotline_asked_for_else_the_longest_wait_else_the_default(queued_app, caller, clock):
    assert next_caller(queued_app) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>' + SAY + "12333热线目前没有来电排队，有来电时将为您接通。</Say>"
        '<Dial><Queue url="/voice/whisper">hotline-12333</Queue></Dial></Response>')
    caller("+8613900000001", dialled="+8653212345").dial().silence()  # 12345, queued at 10:00
    clock.tick(timedelta(minutes=1))
    caller("+8613900000002").dial().press("0")  # 12333, queued at 10:01
    assert next_caller(queued_app).endswith('<Dial><Queue url="/voice/whisper">hotline-12345</Queue></Dial></Response>')
    assert "12345热线排队来电，已等候约1分钟。" in next_caller(queued_app)
    asked = next_caller(queued_app, "12333")
    assert asked.endswith('<Dial><Queue url="/voice/whisper">hotline-12333</Queue></Dial></Response>')
    assert "12333热线排队来电" in asked and "转接原因：来电人要求人工服务。" in asked
    assert next_caller(queued_app, "99999").endswith("hotline-12345</Queue></Dial></Response>")  # unknown: as none


def test_only_the_configured_takers_may_take_a_caller(queued_app, caller):
    caller().dial().press("0")
    refused = next_caller(queued_app, taker="+8613912345678")
    assert refused == ('<?xml version="1.0" encoding="UTF-8"?><Response>' + SAY + "本号码不能接听排队来电，再见。</Say>"
                       "<Hangup /></Response>")


def test_a_twilio_client_identity_listed_in_queue_takers_takes_the_next_caller(configured, queues):
    app = configured(agent={"leg": "queue", "queue_takers": ["client:li.agent"]}, hotlines=HOURS)
    phone = Phone(ClientTransport(app.test_client()), TOKEN, queues=queues).dial().press("0")
    agent = Agent(ClientTransport(app.test_client()), TOKEN, queues, number="client:li.agent")
    assert agent.take() is phone
    assert Agent(ClientTransport(app.test_client()), TOKEN, queues, number=TAKER).take() is None


# -- the console's live queue ---------------------------------------------------------------------------------
def test_the_console_shows_who_waits_how_long_verified_or_not_and_why(queued_app, caller, agent_phone, clock):
    from tests.support import Ledger

    Ledger(queued_app).add(ALICE)
    create_agent(queued_app.test_cli_runner(), *AGENT)
    console = Console(queued_app.test_client())
    console.login(*AGENT)
    verified = caller("+8613900000001").dial().press("1").press(ALICE + "#").press(PIN + "#").press("0")
    clock.tick(timedelta(seconds=30))
    caller("+8613900000002").dial().press("####")  # wrong keys: put through
    clock.tick(timedelta(seconds=95))
    live = console.client.get("/agent/live").get_data(as_text=True)
    rows = re.findall(r"<tr>\s*(<td data-label=\"热线\">.*?)</tr>", live, re.S)
    assert len(rows) == 2
    text = [re.sub(r"<[^>]+>", "", r).split() for r in rows]
    assert text[0] == ["12333", "+86139****0001", "2分5秒", "已验证", "·", "尾号0025", "口头挂失", "来电人要求人工"]
    assert text[1] == ["12333", "+86139****0002", "1分35秒", "未验证", "—", "多次按键错误"]
    assert "13900000001" not in live.split("回电任务")[0]  # masked in the queue
    queue_page = console.client.get("/agent/queue").get_data(as_text=True)
    assert "排队等候" in queue_page and "2 位" in queue_page
    assert agent_phone.take() is verified
    assert "1 位" in console.client.get("/agent/queue").get_data(as_text=True)
    assert "排队等候" in console.client.get("/agent/callbacks").get_data(as_text=True)


# -- every new webhook is signed and never fails -------------------------------------------------------------
@pytest.mark.parametrize("path", ["/voice/queue/wait", "/voice/queue/result?t=2", "/voice/queue/next"])
def test_the_queues_webhooks_refuse_an_unsigned_request(queued_app, path):
    client = queued_app.test_client()
    assert client.post(path, data={"CallSid": "CA1", "From": TAKER}).status_code == 403
    assert signed_post(client, path, {"CallSid": "CA1", "From": TAKER}, token="wrong").status_code == 403


JUNK = ["", "-1", "1e9", "²", "9" * 40, "\x00", "bridged\x00", "NaN", "queue-full" * 30]


@pytest.mark.parametrize("junk", JUNK)
def test_junk_in_the_queues_webhooks_gets_an_answer_never_a_500(queued_app, caller, junk):
    phone = caller().dial().press("0")
    client = queued_app.test_client()
    base = {"CallSid": phone.call_sid, "From": "+8613912345678", "To": "+8653212333"}
    for path, form in [
        ("/voice/queue/wait", {**base, "QueuePosition": junk, "QueueTime": junk, "CurrentQueueSize": junk}),
        ("/voice/queue/wait", {**base, "Digits": junk}),
        ("/voice/queue/wait", {"QueuePosition": junk}),  # no CallSid at all
        ("/voice/queue/wait", {**base, "CallSid": "CA" + junk}),  # a call the hotline does not know
        (f"/voice/queue/next?hotline={quote(junk)}", {"From": TAKER, "CallSid": junk}),
        ("/voice/whisper", {"CallSid": phone.call_sid, "QueueSid": "QU1", "QueueTime": junk}),
    ]:
        resp = signed_post(client, path, form)
        assert resp.status_code == 200 and resp.get_data(as_text=True).startswith("<?xml"), (path, form)
    resp = signed_post(client, "/voice/queue/result?t=2", {**base, "QueueResult": junk, "QueueTime": junk})
    assert resp.status_code == 200 and "<Say" in resp.get_data(as_text=True)


def test_the_queues_webhooks_are_counted_in_the_metrics(queued_app, caller, agent_phone):
    from tests.support.metrics import Scrape

    phone = caller().dial().press("0")
    phone.wait(40)
    agent_phone.take()
    phone.bridge_ends()
    page = Scrape(queued_app.test_client().get("/metrics").get_data(as_text=True))
    assert page("ivr_webhooks_total", kind="queue_wait", outcome="ok") == 2
    assert page("ivr_webhooks_total", kind="queue_result", outcome="ok") == 1
    assert page("ivr_webhooks_total", kind="queue_next", outcome="ok") == 1
    assert page("ivr_webhooks_total", kind="whisper", outcome="ok") == 1


# -- the simulator: `sim call` waits, hears the place, and an agent takes the call -----------------------------
def test_sim_call_waits_in_the_queue_and_an_agent_takes_the_call_after_the_seconds_given(queued_app):
    result = queued_app.test_cli_runner().invoke(args=["sim", "call", "--agent-takes-after", "60"],
                                                 input="0\n\n\n\n3\n")
    out = result.output
    assert result.exit_code == 0, out
    assert out.count("< [queue.next_in_line] 您是下一位，工作人员马上为您接听。") == 2
    assert "< (the agent hears) 12333热线排队来电" in out and "< [queue.connecting] 正在为您接通工作人员。" in out
    assert "< [rating.ask]" in out and "(call ended after a transfer)" in out


def test_sim_call_presses_1_while_queued(queued_app):
    result = queued_app.test_cli_runner().invoke(args=["sim", "call"], input="0\n1\n1\n")
    assert "< [queue.callback_saved]" in result.output and "(call ended after a transfer)" in result.output
    assert [i.kind for i in items(queued_app)] == ["queue"]


def test_every_prompt_the_queue_says_is_in_the_catalogue(queued_app):
    from ivr.voice.turns import QUEUE_PROMPTS

    assert queued_app.extensions["catalogue"].missing(QUEUE_PROMPTS) == set()
