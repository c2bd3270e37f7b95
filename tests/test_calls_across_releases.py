"""Calls in flight survive a deploy: a call saved in a state the new release removed starts again at
the main menu ("系统已更新，我们从头开始。"), not with the system-error apology; one saved in a state it
renamed (`ivr.callflow.flow.RENAMED`) resumes there with its data; `flow check --calls` lists them."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from ivr.callflow import flow
from ivr.callflow.machine import Action, FlowError, Go, Hangup, Machine, Menu, Transfer, hints_for
from ivr.sim.phone import ClientTransport, Phone
from models.agents import CallbackRequest
from models.calls import CallEvent, CallState
from tests.support import ALICE, PIN, TOKEN, Ledger, calls

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the frozen clock: Monday 10:00 in Qingdao
OLD_NAME = "contact_choice"  # what an earlier release called contact_menu
OLD_TRANSFER = "agents_ringing"  # ...and agent_dial


def saved_in(app, sid: str, state: str) -> None:
    """Put a call's row in a state, as an earlier release saved it."""
    with app.extensions["sessions"]() as s, s.begin():
        s.execute(update(CallState).where(CallState.call_sid == sid).values(state=state))


def row(app, sid: str) -> CallState:
    with app.extensions["sessions"]() as s:
        return s.get(CallState, sid)


def calls_events(app, call_sid: str) -> list[CallEvent]:
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid).order_by(CallEvent.id)))


def phone_on(app) -> Phone:
    return Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"])


def main_menu_after(app, prompt: str, turn: int) -> str:
    """The main menu's document as a caller hears it after `prompt`, its actions for `turn`."""
    texts, main = app.extensions["catalogue"], app.extensions["machine"].states["main"]
    says = "".join(f'<Say language="cmn-CN" voice="Polly.Zhiyu">{texts.text(pid, {})}</Say>'
                   for pid in (prompt, "main.menu", "keys.agent"))
    return ('<?xml version="1.0" encoding="UTF-8"?><Response>'
            f'<Gather action="/voice/step?t={turn}" actionOnEmptyResult="false" finishOnKey="" hints="{hints_for(main)}" '
            'input="dtmf speech" language="cmn-Hans-CN" method="POST" numDigits="1" speechTimeout="auto" timeout="6">'
            f'{says}</Gather><Redirect method="POST">/voice/step?t={turn}&amp;e=silence</Redirect></Response>')


@pytest.fixture
def release(monkeypatch, configured):
    """The app of a release that renamed contact_menu (it was contact_choice) and agent_dial."""
    monkeypatch.setitem(flow.RENAMED, OLD_NAME, "contact_menu")
    monkeypatch.setitem(flow.RENAMED, OLD_TRANSFER, "agent_dial")
    app = configured()
    Ledger(app).add(ALICE)
    return app


# -- a state removed -------------------------------------------------------------------------------

def test_a_call_in_a_state_the_release_removed_starts_again_at_the_main_menu(app, call):
    phone = call().dial().press("8")  # the guides menu, saved after turn 2
    saved_in(app, phone.call_sid, "guides_v1")  # ...as the last release named it; this one has no such state
    phone.press("1")
    assert phone.prompts == ["common.restart", "main.menu", "keys.agent"]
    assert phone.twiml == main_menu_after(app, "common.restart", 3)
    assert not phone.transferred
    assert row(app, phone.call_sid).state == "main"
    step = [e for e in calls_events(app, phone.call_sid) if e.kind == "step"][-1]
    assert (step.state_before, step.state_after, step.path) == ("guides_v1", "main", ["guides_v1", "main"])


def test_after_starting_again_the_call_goes_on_as_any_other(app, call):
    phone = call().dial().press("8")
    saved_in(app, phone.call_sid, "guides_v1")
    phone.press("1").press("8")
    assert phone.prompts == ["guide.menu", "keys.agent_back"]
    phone.press("9")  # the restart is not said again by the repeat key
    assert phone.prompts[0] == "guide.menu"


def test_a_verified_caller_who_starts_again_stays_verified(release):
    phone = phone_on(release).dial().press("6").press(ALICE + "#").press(PIN + "#")
    saved_in(release, phone.call_sid, "contact_menu_v0")  # removed by this release, not renamed
    phone.press("1")
    assert phone.prompts == ["common.restart", "main.menu", "keys.agent"]
    phone.press("3")  # another service: no ID number or PIN asked again
    assert phone.prompts[0] == "card.readback"


# -- a state renamed -------------------------------------------------------------------------------

def test_a_call_in_a_renamed_state_resumes_there_with_its_data(release):
    phone = phone_on(release).dial().press("6").press(ALICE + "#").press(PIN + "#")
    assert phone.prompts[:1] == ["contact.menu"]
    before = dict(row(release, phone.call_sid).data)
    saved_in(release, phone.call_sid, OLD_NAME)
    phone.press("1")  # 修改联系手机, in the old state's menu: taken by the renamed one, no new verification
    assert phone.prompts == ["mobile.ask"]
    after = row(release, phone.call_sid)
    assert after.state == "mobile_new"
    kept = ("holder_id", "id_key", "services", "pending", "hotline", "auth_failures")
    assert {k: after.data.get(k) for k in kept} == {k: before.get(k) for k in kept}
    assert after.data["holder_id"] is not None and after.data["services"] == ["contact"]
    step = [e for e in calls_events(release, phone.call_sid) if e.kind == "step"][-1]
    assert (step.state_before, step.path[:2]) == (OLD_NAME, ["contact_menu", "mobile_new"])


def test_a_renamed_state_keeps_its_built_in_keys(release):
    phone = phone_on(release).dial().press("6").press(ALICE + "#").press(PIN + "#")
    saved_in(release, phone.call_sid, OLD_NAME)
    phone.press("9")
    assert phone.prompts == ["contact.menu", "keys.agent_back"]
    assert row(release, phone.call_sid).state == "contact_menu"


def test_a_caller_put_through_before_the_deploy_is_still_being_put_through_after_it(release):
    phone = phone_on(release).dial().press("0")
    assert phone.prompts == ["agent.connecting"]
    saved_in(release, phone.call_sid, OLD_TRANSFER)
    assert OLD_TRANSFER in release.extensions["turns"].transfer_states()  # the queue's waiting callers
    phone.hang_up()  # while the agents' phones rang: a missed call-back item, as from agent_dial
    with release.extensions["sessions"]() as s:
        [item] = s.scalars(select(CallbackRequest))
    assert (item.kind, item.call_sid) == ("missed", phone.call_sid)


def test_an_agent_leg_that_ends_after_the_deploy_goes_on_as_from_the_renamed_transfer(release):
    phone = phone_on(release).dial().press("0")
    saved_in(release, phone.call_sid, OLD_TRANSFER)
    phone.agent_leg_ends("no-answer")
    assert phone.prompts == ["agent.unavailable", "callback.offer", "keys.agent_back"]


# -- the machine refuses a RENAMED that cannot work ----------------------------------------------

BASE = {
    "main": Menu(prompts=("p",), options={"1": "act"}, back=None),
    "act": Action("x", {"ok": "bye"}),
    "agent": Transfer(prompts=("p",), answered="bye", unanswered="bye"),
    "bye": Hangup(prompts=("p",)),
}


@pytest.mark.parametrize("renamed, problem", [
    ({"menu_v1": "nowhere"}, "'menu_v1' is renamed to unknown state 'nowhere'"),
    ({"main": "bye"}, "renamed state 'main' is still a state of the flow"),
    ({"act_v1": "act"}, "'act_v1' is renamed to action 'act': a call is saved only in a state that waits"),
])
def test_the_machine_refuses_an_invalid_renamed_when_built(renamed, problem):
    with pytest.raises(FlowError, match=problem):
        Machine(states=BASE, start=Go("main"), resume=Go("main"), failure=Go("agent"), renamed=renamed)


def test_the_hotline_flow_refuses_a_rename_to_a_state_it_does_not_have():
    with pytest.raises(FlowError, match="'contact_choice' is renamed to unknown state 'contact_menus'"):
        flow.build(renamed={"contact_choice": "contact_menus"})


def test_a_valid_rename_builds_and_is_drawn_in_the_tree():
    from ivr.callflow import draw

    m = flow.build(renamed={OLD_NAME: "contact_menu"})
    assert m.live(OLD_NAME) == "contact_menu" and m.live("contact_menu") == "contact_menu" and m.live("x") is None
    assert f"a call in {OLD_NAME}, renamed by a release → contact_menu" in draw.text(m, None)


# -- flow check --calls --------------------------------------------------------------------------

def add_call(app, sid: str, state: str, *, idle_minutes: int = 1, ended: bool = False, to: str = "+8653212333",
             data: dict | None = None) -> None:
    with app.extensions["sessions"]() as s, s.begin():
        s.add(CallState(call_sid=sid, from_masked="+86139****5678", to_number=to, state=state, turn=3,
                        data=data if data is not None else {"hotline": "12333"},
                        started_at=NOW - timedelta(minutes=idle_minutes + 2),
                        updated_at=NOW - timedelta(minutes=idle_minutes), ended_at=NOW if ended else None))


def sid(n: int) -> str:
    return f"CA{n:032x}"


def test_flow_check_lists_the_calls_in_flight_in_unknown_states_and_fails_if_one_starts_again(release):
    add_call(release, sid(1), OLD_NAME)                            # renamed: resumes
    add_call(release, sid(2), "guides_v1", to="+8653212345", data={})  # removed: starts again (hotline by To)
    add_call(release, sid(3), "guides_v1", ended=True)             # over: not listed
    add_call(release, sid(4), "main")                              # a state this flow has: not listed
    add_call(release, sid(5), "guides_v1", idle_minutes=31)        # no webhook for 31 minutes: not in flight
    add_call(release, sid(6), "")                                  # not answered once yet
    result = release.test_cli_runner().invoke(args=["flow", "check", "--calls"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("the flow is valid: ") and "2 renamed by a release" in lines[0]
    assert lines[1] == "2 calls in flight are in states this flow does not have: 1 resume where they were, 1 start again"
    assert [line.split() for line in lines[2:]] == [
        ["call", "state", "started", "last", "webhook", "hotline", "next", "webhook"],
        [sid(1), OLD_NAME, "2026-11-30", "09:57:00", "2026-11-30", "09:59:00", "12333",
         "resumes", "in", "contact_menu", "(renamed)"],
        [sid(2), "guides_v1", "2026-11-30", "09:57:00", "2026-11-30", "09:59:00", "12345",
         "starts", "again", "(main", "menu)"],
    ]


def test_flow_check_passes_when_every_call_in_an_unknown_state_resumes(release):
    add_call(release, sid(1), OLD_NAME)
    result = release.test_cli_runner().invoke(args=["flow", "check", "--calls"])
    assert result.exit_code == 0, result.output
    assert "1 calls in flight are in states this flow does not have: 1 resume where they were, 0 start again" \
        in result.output


def test_flow_check_with_no_call_in_an_unknown_state(app, runner, call):
    call().dial()  # a call in flight, at the main menu
    result = runner.invoke(args=["flow", "check", "--calls"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == "no call in flight is in a state this flow does not have"
    assert len(calls(app)) == 1


def test_flow_check_without_calls_only_checks_the_flow(runner):
    result = runner.invoke(args=["flow", "check"])
    assert result.exit_code == 0
    assert result.output.startswith("the flow is valid: ") and len(result.output.splitlines()) == 1

