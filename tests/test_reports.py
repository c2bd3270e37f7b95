"""The call report (`report calls`): whole calls of every outcome placed through the emulator, the
exact figures the operators read (models.reports has the definitions)."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from tests.support.calls import events, signed_post, verified
from tests.support.constants import ALICE, BOB

CITY = "+8653212345"
A, B, C, D = "+8613911110001", "+8613911110002", "+8613911110003", "+8613911110004"
ZEROS = {"started": 0, "completed": 0}


def report(runner, *args: str) -> dict:
    result = runner.invoke(args=["report", "calls", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def expected(**figures) -> dict:
    """The report of a period with nothing in it, changed by the figures given (nested: merged)."""
    empty = {
        "from": "2026-11-30", "to": "2026-11-30", "hotline": None,
        "calls": 0, "self_service": 0, "transferred": 0, "abandoned": 0, "containment": 0.0,
        "services": {s: dict(ZEROS) for s in
                     ("loss", "release", "status", "activate", "account", "contact", "pin", "guides", "callback")},
        "transfer_reasons": {r: 0 for r in
                             ("caller_request", "no_input", "wrong_keys", "invalid_id_number", "system_error",
                              "direct")},
        "abandoned_at": {},
        "agent_legs": {"answered": 0, "no_answer": 0, "busy": 0, "failed": 0, "answered_within_15s": 0},
        "callbacks": {"requested": 0, "done": 0},
        "ratings": {"1": 0, "2": 0, "3": 0},
        "repeat_callers_7d": 0,
        "duration_s": {"p50": 0, "p90": 0},
    }
    for key, value in figures.items():
        if isinstance(value, dict) and key != "abandoned_at":
            for inner, v in value.items():
                empty[key][inner] = v
        else:
            empty[key] = value
    return empty


def test_a_day_without_calls_reports_zeros(runner):
    assert report(runner) == expected()


def test_every_outcome_of_a_morning_counted_once(app, runner, call, ledger, clock):
    ledger.add(ALICE)
    ledger.add(BOB)
    # Self-service: a loss reported and rated satisfied; the same caller then hears a card's status.
    loss = verified(call, caller=A, call_duration=60).press("1")
    loss.press("2").press("1")
    assert loss.ended and loss.prompts[-1] == "common.goodbye"
    clock.tick(60)
    verified(call, key="3", id_number=BOB, caller=A, call_duration=30).hang_up()
    # A guide heard to its last part.
    guide = call(caller=B, call_duration=90).dial().press("8").press("2").press("1").press("1").press("1")
    assert "guide.replace.4" in guide.prompts
    guide.hang_up()
    # Put through (0), answered after 10 s: within the 15 s; rated basically satisfied.
    answered = call(caller=C, call_duration=120).dial().press("0")
    clock.tick(10)
    answered.agent_leg_ends("completed").press("2")
    # Put through, answered after 20 s.
    late = call(caller=D, call_duration=150).dial().press("0")
    clock.tick(20)
    late.agent_leg_ends("completed").hang_up()
    # Put through, nobody answers; the caller asks for a call-back to the number they call from.
    missed = call(caller=B, call_duration=80).dial().press("0")
    clock.tick(30)
    missed.agent_leg_ends("no-answer")
    assert "callback.offer" in missed.prompts
    missed.press("1").press("1").press("2")
    assert "callback.saved" in missed.prompts
    missed.press("3")
    # Silence until an agent is offered: the agents are busy.
    quiet = call(caller="+8613911110005", call_duration=40).dial()
    while not quiet.transferred:
        quiet.silence()
    quiet.agent_leg_ends("busy").hang_up()
    # Three invalid ID numbers: an agent; the leg fails.
    bad = call(caller="+8613911110006", call_duration=70).dial().press("1")
    for _ in range(3):
        bad.press("370202198503120026#")
    bad.agent_leg_ends("failed").hang_up()
    # The caller hangs up while the agents' phones ring.
    ringing = call(caller="+8613911110007", call_duration=35).dial().press("0")
    ringing.hang_up()
    # Abandoned: at the main menu, and while keying the ID number.
    call(caller="+8613911110008", call_duration=5).dial().hang_up()
    call(caller="+8613911110009", call_duration=15).dial().press("1").hang_up()
    # The 12345 city line: a direct transfer, answered at once.
    city = call(caller="+8613911110010", dialled=CITY, call_duration=200).dial().silence()
    city.agent_leg_ends("completed").hang_up()
    # Twilio retries a status callback and an agent-leg callback: nothing counts twice.
    loss.status_answer = None
    loss.ended = False
    loss.hang_up(60)
    dial = next(e for e in events(app, late.call_sid) if e.kind == "dial")
    retried = signed_post(app.test_client(), f"/voice/dial?t={dial.turn}", {
        "CallSid": late.call_sid, "From": D, "To": "+8653212333", "DialCallStatus": "completed"})
    assert retried.status_code == 200

    services = {"loss": {"started": 3, "completed": 1}, "status": {"started": 1, "completed": 1},
                "guides": {"started": 1, "completed": 1}, "callback": {"started": 1, "completed": 1}}
    assert report(runner, "--hotline", "12333") == expected(
        hotline="12333", calls=11, self_service=3, transferred=6, abandoned=2, containment=0.273,
        services=services,
        transfer_reasons={"caller_request": 4, "no_input": 1, "invalid_id_number": 1},
        abandoned_at={"auth_id": 1, "main": 1},
        agent_legs={"answered": 2, "no_answer": 2, "busy": 1, "failed": 1, "answered_within_15s": 1},
        callbacks={"requested": 1, "done": 0},
        ratings={"1": 1, "2": 1, "3": 1},
        repeat_callers_7d=2,
        duration_s={"p50": 60, "p90": 120},
    )
    every = report(runner)
    assert (every["calls"], every["transferred"], every["transfer_reasons"]["direct"]) == (12, 7, 1)
    assert every["agent_legs"]["answered"] == 3 and every["agent_legs"]["answered_within_15s"] == 2


def test_a_call_without_a_status_callback_ends_after_the_configured_time(runner, call, clock):
    phone = call(caller=A).dial().press("1")  # never hangs up, Twilio's callback never comes
    assert report(runner)["calls"] == 1 and report(runner)["abandoned"] == 0
    clock.tick(timedelta(minutes=29))
    assert report(runner)["abandoned"] == 0
    clock.tick(timedelta(minutes=2))
    figures = report(runner)
    assert (figures["abandoned"], figures["abandoned_at"], figures["duration_s"]) == (
        1, {"auth_id": 1}, {"p50": 0, "p90": 0})
    assert phone.call_sid


def test_repeat_callers_are_counted_within_seven_days_before(runner, call, clock):
    call(caller=A).dial().hang_up()
    call(caller=B).dial().hang_up()
    clock.tick(timedelta(days=6, hours=23))
    call(caller=A).dial().hang_up()  # 6 days 23 hours later: a repeat
    clock.tick(timedelta(days=1, hours=2))
    call(caller=B).dial().hang_up()  # 8 days later: not
    assert report(runner, "--from", "2026-12-07", "--to", "2026-12-08")["repeat_callers_7d"] == 1
    assert report(runner, "--from", "2026-12-08")["repeat_callers_7d"] == 0
    assert report(runner, "--from", "2026-11-30", "--to", "2026-12-08")["calls"] == 4


def test_days_are_local_both_ends_included(runner, call, clock):
    clock.move_to("2026-11-30 15:59:00")  # 23:59 in Qingdao
    call(caller=A).dial().hang_up()
    clock.move_to("2026-11-30 16:00:00")  # 00:00 on 1 December
    call(caller=B).dial().hang_up()
    assert report(runner, "--from", "2026-11-30", "--to", "2026-11-30")["calls"] == 1
    assert report(runner, "--from", "2026-12-01", "--to", "2026-12-01")["calls"] == 1
    assert report(runner, "--from", "2026-11-30", "--to", "2026-12-01")["calls"] == 2
    assert report(runner)["from"] == "2026-12-01"  # today, in Qingdao


def test_the_table_and_csv_forms_carry_the_same_figures(runner, call):
    call(caller=A).dial().hang_up()
    table = runner.invoke(args=["report", "calls"]).output
    assert "containment" in table and "abandoned_at  calls\nmain          1" in table
    rows = list(csv.reader(io.StringIO(runner.invoke(args=["report", "calls", "--format", "csv"]).output)))
    assert rows[0] == ["figure", "value"]
    assert ["calls", "1"] in rows and ["abandoned_at.main", "1"] in rows


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-13-01"], "is not a date"),
    (["--from", "2026-11-30", "--to", "2026-11-29"], "is before"),
    (["--hotline", "12306"], "no hotline '12306'"),
])
def test_a_wrong_option_says_what_is_wrong_in_one_line(runner, args, message):
    result = runner.invoke(args=["report", "calls", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
