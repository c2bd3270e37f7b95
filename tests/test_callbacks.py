"""Missed calls become work: a transfer nobody answered is a call-back item by itself, due in staffed
time; agents work the items in due order at /agent/callbacks and record each try, audited."""
from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from models.agents import AuditEvent, CallbackRequest
from models.calendar import WorkCalendar
from models.callbacks import CallbackAttempt, due_after
from models.clock import SHANGHAI
from models.hours import parse_hotlines
from tests.support import AGENT, ALICE, TOKEN, Console, calls, create_agent, events, signed_post, verified

CALLER = "+8613912345678"
CITY = "+8653212345"
HOURS = {"numbers": {
    "+8653212333": {"name": "12333", "hours": {"workday": ["08:30-11:30", "13:00-17:30"]}},
    "+8653212345": {"name": "12345", "entry": "agent_first", "hours": "always"},
}}


def local(text: str) -> datetime:
    """A moment in Qingdao's time."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def utc(text: str) -> str:
    """The moment freezegun is moved to (UTC) for a Qingdao moment."""
    return local(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def items(app) -> list[CallbackRequest]:
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallbackRequest).order_by(CallbackRequest.id)))


def attempts(app) -> list[CallbackAttempt]:
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallbackAttempt).order_by(CallbackAttempt.id)))


def audits(app) -> list[AuditEvent]:
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "callback_outcome").order_by(AuditEvent.id)))


def shown(moment: datetime | None) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if moment else ""


# -- a missed transfer becomes one item, due in staffed time -------------------------------------------------
@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled"])
def test_a_transfer_the_agents_did_not_answer_becomes_a_call_back_item_due_in_30_staffed_minutes(app, call, status):
    phone = call(caller=CALLER).dial().press("0").agent_leg_ends(status)
    assert phone.prompts == ["agent.unavailable", "callback.offer", "keys.agent_back"]
    phone.hang_up()
    [item] = items(app)
    assert (item.kind, item.number, item.hotline, item.call_sid) == ("missed", CALLER, "12333", phone.call_sid)
    assert (shown(item.queued_at), shown(item.due_at), item.done_at) == ("2026-11-30 10:00", "2026-11-30 10:30", None)
    assert item.context["reason"] == "caller_request" and item.context["verified"] is False
    assert item.context["from"] == "+86139****5678"


def test_a_caller_who_hangs_up_while_the_agents_phones_ring_becomes_one_missed_item(app, ledger, call, clock):
    ledger.add(ALICE)
    phone = verified(call, "3", caller=CALLER).press("0")
    assert phone.prompts == ["agent.connecting"]
    clock.tick(timedelta(seconds=20))
    phone.hang_up()  # no DialCallStatus comes: the status callback finds the call still being put through
    [item] = items(app)
    assert (item.kind, shown(item.queued_at), shown(item.due_at)) == ("missed", "2026-11-30 10:00", "2026-11-30 10:30")
    assert item.context["verified"] is True and item.context["id_masked"].endswith("0025")
    assert item.context["services"] == ["status"]
    retried = signed_post(app.test_client(), "/voice/status", {"CallSid": phone.call_sid, "From": CALLER,
                                                               "To": "+8653212333", "CallStatus": "completed"})
    assert retried.status_code == 204 and len(items(app)) == 1  # the callback again makes nothing twice


def test_an_answered_transfer_makes_no_item_even_when_the_caller_hangs_up_while_talking(app, call):
    call(caller=CALLER).dial().press("0").agent_leg_ends("completed").press("1")
    talking = call(caller=CALLER).dial().press("0")
    signed_post(app.test_client(), "/voice/whisper", {"CallSid": "CA" + "9" * 32, "ParentCallSid": talking.call_sid,
                                                      "From": CALLER, "To": "+8653200000000"})
    talking.hang_up()  # Twilio posts no Dial result: the whisper says an agent answered
    assert items(app) == []


@pytest.mark.parametrize("caller", ["anonymous", "+12025550123", "+8612345", ""])
def test_a_caller_number_that_cannot_be_called_back_makes_no_item(app, call, caller):
    call(caller=caller).dial().press("0").agent_leg_ends("no-answer").hang_up()
    call(caller=caller).dial().press("0").hang_up()
    assert items(app) == []
    assert {c.end_reason for c in calls(app)} == {"transferred"}


def test_a_transfer_at_11_20_with_30_minutes_due_is_due_at_13_20_across_the_lunch_break(app, call, clock):
    clock.move_to(utc("2026-11-30 11:20"))
    call(caller=CALLER).dial().press("0").agent_leg_ends("busy").hang_up()
    [item] = items(app)
    assert shown(item.due_at) == "2026-11-30 13:20"


def test_friday_evening_12333_runs_on_to_monday_morning_while_12345_staffed_always_is_due_in_30_minutes(
        app, call, clock):
    clock.move_to(utc("2026-12-04 17:20"))  # a Friday, ten staffed minutes left on 12333
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    clock.move_to(utc("2026-12-04 19:00"))
    call(caller="+8613800000002", dialled=CITY).dial().silence().agent_leg_ends("no-answer").hang_up()
    line, city = items(app)
    assert (line.hotline, shown(line.due_at)) == ("12333", "2026-12-07 08:50")
    assert (city.hotline, shown(city.due_at), city.context["reason"]) == ("12345", "2026-12-04 19:30", "direct")


@pytest.mark.parametrize("start, due", [
    ("2026-11-30 07:00", "2026-11-30 09:00"),  # before the morning shift: the clock starts at 08:30
    ("2026-11-30 11:30", "2026-11-30 13:30"),  # at the lunch break
    ("2026-11-30 17:40", "2026-12-01 09:00"),  # after hours: the next working morning
    ("2026-12-05 10:00", "2026-12-07 09:00"),  # a Saturday
    ("2026-09-30 17:20", "2026-10-08 08:50"),  # the eve of the National Day holidays: after them
    ("2026-10-09 17:20", "2026-10-10 08:50"),  # a Friday before a 调休 make-up working Saturday
    ("2026-11-30 11:00", "2026-11-30 11:30"),  # due at the end of the morning shift
])
def test_due_times_count_only_staffed_time_on_the_official_calendar(start, due):
    hotlines, _ = parse_hotlines(HOURS)
    moment = due_after(hotlines["+8653212333"], local(start), 30, WorkCalendar(), SHANGHAI)
    assert shown(moment) == due
    assert shown(due_after(hotlines["+8653212345"], local(start), 30, WorkCalendar(), SHANGHAI)) == shown(
        local(start) + timedelta(minutes=30))


def test_a_system_failure_out_of_hours_puts_the_caller_through_and_the_item_waits_for_the_next_shift(
        app, call, clock, monkeypatch):
    clock.move_to(utc("2026-11-30 20:00"))
    from ivr.callflow.actions import ACTIONS

    def broken(*_args):
        raise RuntimeError("the ledger is down")

    monkeypatch.setitem(ACTIONS, "start_service", broken)
    phone = call(caller=CALLER).dial().press("1")
    assert phone.prompts == ["common.system_error", "agent.connecting"]
    phone.agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    assert (item.context["reason"], shown(item.due_at)) == ("system_error", "2026-12-01 09:00")


def test_a_caller_who_then_asks_for_a_call_back_has_one_item_of_kind_requested_keeping_the_earlier_place(
        app, call, clock):
    phone = call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer")
    clock.tick(timedelta(minutes=5))
    phone.press("1")
    assert phone.prompts == ["callback.use_from", "callback.use_from_menu", "keys.agent_back"]
    phone.press("1").press("2")
    assert phone.prompts == ["callback.saved", "rating.ask"]
    phone.press("1")
    [item] = items(app)
    assert (item.kind, shown(item.queued_at), shown(item.due_at), shown(item.created_at)) == (
        "requested", "2026-11-30 10:00", "2026-11-30 10:30", "2026-11-30 10:00")
    later = call(caller="+8613800000009").dial().press("0").agent_leg_ends("busy")
    later.press("1").press("2").press("13800138000#").press("1").press("2")
    assert len(items(app)) == 2 and items(app)[1].kind == "requested" and items(app)[1].number == "+8613800138000"


def test_the_report_counts_the_callers_requests_not_the_items_made_of_missed_transfers(app, call, runner):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    asked = call(caller="+8613800000002").dial().press("0").agent_leg_ends("no-answer")
    asked.press("1").press("1").press("2").hang_up()
    import json
    figures = json.loads(runner.invoke(args=["report", "calls", "--format", "json"]).output)
    assert figures["callbacks"] == {"requested": 1, "done": 0}
    assert figures["agent_legs"]["no_answer"] == 2


# -- the agents' list: due order, overdue marked, the number in full for them alone ------------------------------
def missed_at(call, clock, moment: str, caller: str):
    clock.move_to(utc(moment))
    return call(caller=caller).dial().press("0").agent_leg_ends("no-answer").hang_up()


def test_open_items_are_listed_in_due_order_the_overdue_ones_marked(app, agent, call, clock):
    missed_at(call, clock, "2026-11-30 11:20", "+8613900000003")  # due 13:20
    missed_at(call, clock, "2026-11-30 10:00", "+8613900000001")  # due 10:30
    missed_at(call, clock, "2026-11-30 10:50", "+8613900000002")  # due 11:20
    clock.move_to(utc("2026-11-30 11:25"))
    html = agent.client.get("/agent/callbacks").get_data(as_text=True)
    numbers = re.findall(r'href="tel:(\+86\d+)"', html)
    assert numbers == ["+8613900000001", "+8613900000002", "+8613900000003"]
    cards = re.findall(r'<li class="cb( late)?" id="cb-\d+">', html)
    assert cards == [" late", " late", ""]  # due 10:30 and 11:20 are past at 11:25: marked 已超时
    assert html.count('<span class="badge late">已超时</span>') == 2
    assert "139 0000 0001" in html and "到期 <time>2026-11-30 10:30</time>" in html
    assert "未接来电" in html and "来电人要求人工" in html


def test_items_with_the_same_due_time_are_listed_by_when_they_were_made(app, client, accounts, call, clock):
    clock.move_to(utc("2026-11-30 07:00"))  # before the shift: both due 09:00
    for caller in ("+8613900000005", "+8613900000004"):
        clock.tick(timedelta(minutes=10))
        phone = calls_offer(call, caller)  # closed: wrong keys, then offered a call-back
        assert phone.prompts == ["callback.saved", "rating.ask"]
    clock.move_to(utc("2026-11-30 07:30"))
    agent = Console(client)
    agent.login(*AGENT)
    html = agent.client.get("/agent/callbacks").get_data(as_text=True)
    assert re.findall(r'href="tel:(\+86\d+)"', html) == ["+8613900000005", "+8613900000004"]


def calls_offer(call, caller):
    return call(caller=caller).dial().press("####").press("1").press("1").press("2")


def test_the_number_is_shown_in_full_only_to_logged_in_agents_and_never_logged(app, client, accounts, call, caplog):
    caplog.set_level(logging.DEBUG)
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    anonymous = client.get("/agent/callbacks")
    assert anonymous.status_code == 302 and "/agent/login" in anonymous.headers["Location"]
    console = Console(client)
    console.login(*AGENT)
    page = console.client.get("/agent/callbacks")
    assert page.headers["Cache-Control"] == "no-store"
    assert "13912345678" in page.get_data(as_text=True)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "13912345678" not in logged
    recorded = repr([(e.params, e.twiml) for e in events(app, items(app)[0].call_sid)])
    assert "13912345678" not in recorded


# -- working an item: each try recorded and audited; three unanswered tries close it -------------------------------
def outcome(agent, item_id: int, what: str, note: str = ""):
    return agent.post(f"/agent/callbacks/{item_id}/outcome", "/agent/callbacks", outcome=what, note=note)


def test_no_answer_keeps_an_item_open_for_another_try_until_the_third_closes_it_as_unreachable(
        app, agent, call, clock):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    clock.move_to(utc("2026-11-30 10:40"))
    answer = outcome(agent, item.id, "no_answer", "响铃无人接")
    assert answer.status_code == 303
    [item] = items(app)
    assert (item.done_at, item.outcome, shown(item.due_at)) == (None, "no_answer", "2026-11-30 11:10")
    html = agent.client.get("/agent/callbacks").get_data(as_text=True)
    assert "已记录：未接通（已尝试1/3次），稍后再试。" in html
    assert "已尝试 1/3 次" in html and "li.agent：未接通（响铃无人接）" in html
    clock.move_to(utc("2026-11-30 11:20"))  # 11:10 + 30 staffed minutes: 10 before lunch, 20 after
    outcome(agent, item.id, "no_answer")
    assert shown(items(app)[0].due_at) == "2026-11-30 13:20"
    clock.move_to(utc("2026-11-30 13:30"))
    outcome(agent, item.id, "no_answer")
    [item] = items(app)
    assert (item.outcome, item.done_by, shown(item.done_at)) == ("unreachable", AGENT[0], "2026-11-30 13:30")
    assert [a.outcome for a in attempts(app)] == ["no_answer"] * 3
    assert [a.detail for a in audits(app)] == [
        "未接来电 +86139****5678：未接通（第1次未接通）；备注：响铃无人接",
        "未接来电 +86139****5678：未接通（第2次未接通）",
        "未接来电 +86139****5678：未接通（第3次未接通，无法联系）",
    ]
    assert {(a.agent, a.call_sid) for a in audits(app)} == {(AGENT[0], item.call_sid)}
    html = agent.client.get("/agent/callbacks").get_data(as_text=True)
    assert "没有待回电的任务。" in html
    closed = agent.client.get("/agent/callbacks?show=closed").get_data(as_text=True)
    assert '<span class="badge outcome-unreachable">无法联系</span>' in closed and "已尝试 3 次" in closed
    assert 'name="outcome"' not in closed  # nothing left to record


@pytest.mark.parametrize("what, label", [("reached", "已联系"), ("wrong_number", "号码错误"), ("other", "其他")])
def test_reached_wrong_number_or_other_closes_the_item_with_the_note_audited_masked(app, agent, call, what, label):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    outcome(agent, item.id, what, "对方说 13912345678 不是他的号码")
    [item] = items(app)
    assert (item.outcome, item.done_by) == (what, AGENT[0]) and item.done_at is not None
    [row] = audits(app)
    assert row.detail == f"未接来电 +86139****5678：{label}；备注：对方说 *******5678 不是他的号码"
    assert "13912345678" not in row.detail
    assert f"{label}</span>" in agent.client.get("/agent/callbacks?show=closed").get_data(as_text=True)


def test_an_item_closed_a_moment_ago_by_another_agent_records_nothing_more(app, agent, call):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    outcome(agent, item.id, "reached")
    again = outcome(agent, item.id, "no_answer")
    assert again.status_code == 303
    assert "这条回电任务已经结束" in agent.client.get("/agent/callbacks").get_data(as_text=True)
    assert len(attempts(app)) == 1 and len(audits(app)) == 1


@pytest.mark.parametrize("fields", [{"outcome": "unreachable"}, {"outcome": "maybe"}, {}, {"outcome": "reached",
                                                                                          "note": "x" * 201}])
def test_an_outcome_an_agent_cannot_record_is_refused(app, agent, call, fields):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    assert agent.post(f"/agent/callbacks/{item.id}/outcome", "/agent/callbacks", **fields).status_code == 400
    assert items(app)[0].done_at is None and attempts(app) == []


def test_an_outcome_needs_the_forms_token_and_an_item_that_exists(app, agent, call):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    assert agent.client.post(f"/agent/callbacks/{item.id}/outcome", data={"outcome": "reached"}).status_code == 400
    assert outcome(agent, 999, "reached").status_code == 404
    assert items(app)[0].done_at is None


def test_the_dashboards_mark_called_back_records_reached_and_is_audited(app, agent, call):
    call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer").hang_up()
    [item] = items(app)
    live = agent.client.get("/agent/live").get_data(as_text=True)
    assert "标记已回电" in live and "未接来电" in live and "回电任务" in live
    agent.post(f"/agent/callbacks/{item.id}/done", "/agent/")
    assert f"已回电 · {AGENT[0]}" in agent.client.get("/agent/live").get_data(as_text=True)
    assert [a.outcome for a in attempts(app)] == ["reached"] and len(audits(app)) == 1


def test_the_list_filters_by_kind_and_shows_the_calls_context(app, agent, ledger, call, clock):
    ledger.add(ALICE)
    verified(call, "1", caller=CALLER).press("0").agent_leg_ends("busy").hang_up()
    clock.move_to(utc("2026-11-30 20:00"))
    calls_offer(call, "+8613900000007")
    missed = agent.client.get("/agent/callbacks?kind=missed").get_data(as_text=True)
    assert re.findall(r'href="tel:(\+86\d+)"', missed) == [CALLER]
    assert "已验证 · 身份证尾号0025" in missed and "口头挂失" in missed
    requested = agent.client.get("/agent/callbacks?kind=requested").get_data(as_text=True)
    assert re.findall(r'href="tel:(\+86\d+)"', requested) == ["+8613900000007"]
    assert agent.client.get("/agent/callbacks?kind=junk&show=junk").status_code == 200


def test_old_requests_without_a_due_time_are_listed_by_when_they_were_made(app, agent):
    with app.extensions["sessions"]() as s, s.begin():
        s.add(CallbackRequest(call_sid="CA1", hotline="12333", number="+8613900000000", recording_url=None,
                              recording_seconds=None, context={}, created_at=datetime.now(SHANGHAI)))
    html = agent.client.get("/agent/callbacks").get_data(as_text=True)
    assert "回电请求" in html and re.findall(r'href="tel:(\+86\d+)"', html) == ["+8613900000000"]


@pytest.mark.parametrize("agent_cfg, problem", [
    ({"callback_due_minutes": 0}, "agent.callback_due_minutes must be a whole number of at least 1"),
    ({"callback_attempts": "three"}, "agent.callback_attempts must be a whole number"),
    ({"leg": "pigeon"}, "agent.leg must be number, sip, client or queue"),
    ({"queue_name": "hotline {hotline}"}, "a queue name is 1-64 letters"),
    ({"queue_name": "q-{line}"}, "only {hotline} may be filled in"),
    ({"queue_music": "music.mp3"}, "agent.queue_music must be null or the URL"),
    ({"queue_takers": "+8653200000000"}, "agent.queue_takers must be a list"),
])
def test_a_bad_agent_configuration_is_refused_at_start_up(configured, agent_cfg, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        configured(agent=agent_cfg)


def test_the_call_back_kinds_and_outcomes_have_mandarin_labels(app):
    from models.callbacks import CallbackKind, CallbackOutcome

    labels = app.extensions["catalogue"]
    for kind, words in (("callback_kind", CallbackKind), ("callback_outcome", CallbackOutcome)):
        for code in words:
            assert re.search(r"[\u4e00-\u9fff]", labels.label(kind, code)), (kind, code)


def test_a_different_due_time_and_number_of_tries_come_from_the_configuration(configured, clock):
    from ivr.sim.phone import ClientTransport, Phone

    app = configured(agent={"callback_due_minutes": 90, "callback_attempts": 1})
    Phone(ClientTransport(app.test_client()), TOKEN, caller=CALLER).dial().press("0").agent_leg_ends("busy").hang_up()
    [item] = items(app)
    assert shown(item.due_at) == "2026-11-30 11:30"  # 10:00 + 90 staffed minutes: the end of the morning shift
    create_agent(app.test_cli_runner(), *AGENT)
    console = Console(app.test_client())
    console.login(*AGENT)
    outcome(console, item.id, "no_answer")
    assert items(app)[0].outcome == "unreachable"  # one try only
