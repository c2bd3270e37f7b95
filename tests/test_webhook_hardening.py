"""The webhook side's hardening: recording links, secrets of calls that never ended, retried status
callbacks, and odd values from Twilio's form answered without a traceback (also on PostgreSQL)."""
from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ivr.config import load_settings
from models.agents import CallbackRequest, CallRating, request_callback
from tests.support import (
    AGENT,
    ALICE,
    BASE,
    FORM,
    Console,
    calls,
    create_agent,
    events,
    signed_post,
    use_test_secrets,
    verified,
)

START = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the frozen clock: MONDAY_10AM
ACCOUNT, RECORDING = "AC" + "0123456789abcdef" * 2, "RE" + "fedcba9876543210" * 2
TWILIO_RECORDING = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}"
NEW_MOBILE = "+8613812345678"


def at_the_message(call):
    """Return a call at the call-back message's <Record>: no agent answered, call back this number."""
    return call().dial().press("0").agent_leg_ends("no-answer").press("1").press("1").press("1")


def leave_message(phone, url, duration="9"):
    """Post the <Record>'s action as Twilio does, with the given RecordingUrl and duration."""
    rec = phone.waiting
    phone._post(rec.action, {"RecordingUrl": url, "RecordingSid": RECORDING, "RecordingDuration": duration,
                             "Digits": "#"})
    return phone


def callbacks(app):
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallbackRequest)))


def no_traceback(caplog):
    """Assert nothing was logged as an error, nor with a traceback."""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


# -- 7. a call-back's recording: only Twilio's, over https, is kept and linked -----------------------

@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)",
    "JavaScript://api.twilio.com/%0Aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    f"http://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"https://recordings.example.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"https://api.twilio.com.example.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"https://api.twilio.com@example.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"https://api.twilio.com:8443/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"{TWILIO_RECORDING}?u=https://example.com",
])
def test_a_message_url_not_twilios_is_not_stored_and_the_request_is_kept_without_it(app, call, url):
    phone = leave_message(at_the_message(call), url)
    assert phone.prompts == ["callback.saved", "rating.ask"]
    [cb] = callbacks(app)
    assert (cb.number, cb.recording_url, cb.recording_seconds) == ("+8613900000000", None, None)


@pytest.mark.parametrize("url", [
    TWILIO_RECORDING,
    f"https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"https://api.sydney.au1.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}.mp3",
    f"https://api.ie1.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
])
def test_a_twilio_recording_url_is_kept_with_its_duration(app, call, url):
    leave_message(at_the_message(call), url)
    [cb] = callbacks(app)
    assert (cb.recording_url, cb.recording_seconds) == (url, 9)


@pytest.fixture
def agent(client, runner):
    create_agent(runner, *AGENT)
    console = Console(client)
    assert console.login(*AGENT).status_code == 302
    return console


def stored(app, url, sid):
    """A call-back request stored as it is, whatever its URL (a row from before the check)."""
    with app.extensions["sessions"]() as s, s.begin():
        s.add(CallbackRequest(call_sid=sid, hotline="12333", number="+8613900000000", recording_url=url,
                              recording_seconds=9, context={}, created_at=START))


def test_the_console_links_a_twilio_recording(app, agent):
    stored(app, TWILIO_RECORDING, "CA1")
    html = agent.client.get("/agent/live").get_data(as_text=True)
    assert f'<a href="{TWILIO_RECORDING}" rel="noreferrer">留言（9秒）</a>' in html


@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)",
    f"http://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
    f"https://evil.example/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
])
def test_the_console_links_no_stored_url_that_is_not_a_twilio_recording(app, agent, url):
    stored(app, url, "CA1")
    html = agent.client.get("/agent/live").get_data(as_text=True)
    assert "留言（" not in html and "javascript:" not in html and "evil.example" not in html
    assert "http://api.twilio.com" not in html


def test_request_callback_drops_a_url_that_is_not_a_twilio_recording(app):
    with app.extensions["sessions"]() as s, s.begin():
        cb = request_callback(s, call_sid="CA1", hotline="12333", number="+8613900000000",
                              recording_url="javascript:alert(1)", recording_seconds=9, context={}, now=START)
    assert (cb.recording_url, cb.recording_seconds) == (None, None)


# -- 10. the secrets of a call whose status callback never came ----------------------------------

def at_the_new_mobile_confirmation(call, ledger):
    """Return a verified call that keyed a new mobile and has not confirmed it."""
    ledger.add(ALICE)
    phone = verified(call, key="6").press("1").press(NEW_MOBILE[3:] + "#")
    assert phone.prompts[0] == "mobile.readback"
    return phone


def the_call(app, sid):
    [row] = [c for c in calls(app) if c.call_sid == sid]
    return row


def test_a_call_idle_past_the_secrets_ttl_loses_its_secrets_and_is_closed_at_the_next_new_call(
        app, call, ledger, clock):
    phone = at_the_new_mobile_confirmation(call, ledger)
    assert the_call(app, phone.call_sid).data["new_mobile"] == NEW_MOBILE
    clock.tick(timedelta(minutes=61))
    call().dial()
    row = the_call(app, phone.call_sid)
    assert "new_mobile" not in row.data and row.data["services"] == ["contact"]
    assert (row.ended_at, row.end_reason, row.duration_s) == (START, "hung_up", None)


def test_a_call_idle_for_less_than_the_ttl_keeps_its_secrets(app, call, ledger, clock):
    phone = at_the_new_mobile_confirmation(call, ledger)
    clock.tick(timedelta(minutes=59))
    call().dial()
    row = the_call(app, phone.call_sid)
    assert (row.data["new_mobile"], row.ended_at) == (NEW_MOBILE, None)
    phone.press("1")  # still confirmable
    assert phone.prompts[0] == "mobile.done"


def test_another_call_s_status_callback_sweeps_too(app, call, ledger, clock):
    phone = at_the_new_mobile_confirmation(call, ledger)
    other = call().dial()
    clock.tick(timedelta(minutes=61))
    other.hang_up()
    row = the_call(app, phone.call_sid)
    assert "new_mobile" not in row.data and row.ended_at == START


def test_the_sweep_runs_at_most_once_a_minute(app, call, ledger, clock):
    phone = at_the_new_mobile_confirmation(call, ledger)
    clock.tick(timedelta(minutes=59, seconds=30))
    call().dial().hang_up()  # a sweep: nothing idle long enough yet
    clock.tick(timedelta(seconds=40))  # idle for 60 min 10 s, 40 s after that sweep: none
    call().dial().hang_up()
    assert the_call(app, phone.call_sid).data["new_mobile"] == NEW_MOBILE
    clock.tick(timedelta(seconds=20))
    call().dial()
    assert "new_mobile" not in the_call(app, phone.call_sid).data


def test_the_sweep_takes_the_configured_ttl(app, call, ledger, clock):
    turns = app.extensions["turns"]
    turns.settings = dataclasses.replace(turns.settings, secrets_ttl_minutes=5)
    phone = at_the_new_mobile_confirmation(call, ledger)
    clock.tick(timedelta(minutes=6))
    call().dial()
    row = the_call(app, phone.call_sid)
    assert "new_mobile" not in row.data and row.ended_at == START


def test_the_secrets_ttl_is_read_from_the_configuration_with_60_minutes_by_default(tmp_path, monkeypatch):
    use_test_secrets(monkeypatch)
    assert load_settings(tmp_path).secrets_ttl_minutes == 60
    assert load_settings(tmp_path, {"recording": {"secrets_ttl_minutes": 5}}).secrets_ttl_minutes == 5
    with pytest.raises(ValueError, match="recording.secrets_ttl_minutes must be a whole number of at least 1"):
        load_settings(tmp_path, {"recording": {"secrets_ttl_minutes": 0}})


def test_calls_purge_removes_the_secrets_of_idle_calls_and_closes_them(app, call, ledger, clock, runner):
    phone = at_the_new_mobile_confirmation(call, ledger)
    clock.tick(timedelta(minutes=61))
    result = runner.invoke(args=["calls", "purge"])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["purged 0 calls older than 90 days",
                                          "removed the secrets of 1 calls idle for 60 minutes"]
    row = the_call(app, phone.call_sid)
    assert "new_mobile" not in row.data and (row.ended_at, row.end_reason) == (START, "hung_up")


def test_calls_purge_leaves_a_call_that_ended_as_it_is(app, call, ledger, clock, runner):
    phone = at_the_new_mobile_confirmation(call, ledger).press("1").hang_up()
    before = the_call(app, phone.call_sid)
    clock.tick(timedelta(days=1))
    assert runner.invoke(args=["calls", "purge"]).output.splitlines()[1] == (
        "removed the secrets of 0 calls idle for 60 minutes")
    after = the_call(app, phone.call_sid)
    assert (after.data, after.ended_at, after.end_reason) == (before.data, before.ended_at, "completed")


def test_a_late_status_callback_still_closes_a_swept_call_with_what_twilio_says(app, call, ledger, clock):
    phone = at_the_new_mobile_confirmation(call, ledger)
    clock.tick(timedelta(minutes=61))
    call().dial()
    phone.hang_up(duration=3700)
    row = the_call(app, phone.call_sid)
    assert (row.ended_at, row.duration_s, row.end_reason) == (START + timedelta(minutes=61), 3700, "hung_up")


# -- 11. a status callback sent again ------------------------------------------------------------

def status_form(duration="42"):
    return {"CallStatus": "completed", "CallDuration": duration, "SequenceNumber": "0"}


def test_a_status_callback_sent_again_changes_nothing_and_records_nothing(app, call, clock):
    phone = call().dial().hang_up()
    first = the_call(app, phone.call_sid)
    clock.tick(timedelta(seconds=30))
    status, body = phone._send(f"{BASE}/voice/status", status_form(duration="72"))
    assert (status, body) == (204, "")
    again = the_call(app, phone.call_sid)
    assert (again.ended_at, again.duration_s, again.end_reason) == (first.ended_at, 42, "hung_up")
    assert [e.kind for e in events(app, phone.call_sid)] == ["incoming", "status"]


# -- 12. odd values: a normal answer, no traceback ------------------------------------------------

# As the action URL carries them (percent-encoded, as Twilio requests and signs them): ², ١ (Arabic-
# Indic one), 1², 26 digits, -1, a space and 1, 1 and a NUL byte.
@pytest.mark.parametrize("turn", ["%C2%B2", "%D9%A1", "1%C2%B2", "9" * 26, "-1", "%201", "1%00"])
def test_an_odd_turn_number_is_taken_as_none_and_the_keys_answered(call, caplog, turn):
    phone = call().dial()
    phone._post(f"{BASE}/voice/step?t={turn}", {"Digits": "1"})
    assert phone.prompts == ["auth.ask_id"]
    no_traceback(caplog)


@pytest.mark.parametrize("confidence", ["abc", "", "nan", "inf", "-1", "1e400", "²"])
def test_a_confidence_that_is_no_number_from_0_to_1_is_asked_again(call, caplog, confidence):
    phone = call().dial()  # words matching an option only in part: they need a confidence (exact ones do not)
    phone._post(phone.waiting.action, {"SpeechResult": "我要挂失", "Confidence": confidence})
    assert phone.prompts[0] == "common.not_understood"
    no_traceback(caplog)


def test_a_confident_spoken_choice_still_chooses(call):
    phone = call().dial()
    phone._post(phone.waiting.action, {"SpeechResult": "挂失", "Confidence": "0.87"})
    assert phone.prompts == ["auth.ask_id"]


@pytest.mark.parametrize("duration", ["4" * 40, "²", "-5", "12.5", "x"])
def test_an_odd_call_duration_still_closes_the_call_without_one(app, call, caplog, duration):
    phone = call().dial()
    status, _ = phone._send(f"{BASE}/voice/status", status_form(duration))
    assert status == 204
    row = the_call(app, phone.call_sid)
    assert (row.ended_at, row.end_reason, row.duration_s) == (START, "hung_up", None)
    no_traceback(caplog)


@pytest.mark.parametrize("duration", ["4" * 40, "²", "x"])
def test_an_odd_recording_duration_keeps_the_message_without_one(app, call, caplog, duration):
    phone = leave_message(at_the_message(call), TWILIO_RECORDING, duration=duration)
    assert phone.prompts == ["callback.saved", "rating.ask"]
    [cb] = callbacks(app)
    assert (cb.recording_url, cb.recording_seconds) == (TWILIO_RECORDING, None)
    no_traceback(caplog)


def test_nul_bytes_in_every_field_are_dropped_and_the_call_goes_on(app, call, caplog):
    phone = call(caller="+86139\x001234\x005678").dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    phone._post(phone.waiting.action, {"Digits": "1\x00", "SpeechResult": "\x00"})
    assert phone.prompts == ["auth.ask_id"]
    row = the_call(app, phone.call_sid)
    assert row.from_masked == "+86139****5678"
    assert [e.params.get("Digits") for e in events(app, phone.call_sid)] == [None, "1"]
    no_traceback(caplog)


def test_an_over_long_call_sid_is_cut_to_its_column_and_answered(app, client, caplog):
    sid = "CA" + "7" * 200
    resp = signed_post(client, "/voice", {**FORM, "CallSid": sid, "To": "+86532" + "1" * 100})
    assert resp.status_code == 200 and b"<Gather" in resp.data
    [row] = calls(app)
    assert row.call_sid == sid[:64]
    no_traceback(caplog)


def test_an_over_long_agent_leg_fits_the_rating(app, call, caplog):
    phone = call().dial().press("0")
    phone._post(phone.dialing.action, {"DialCallStatus": "completed", "DialCallSid": "CA" + "9" * 300})
    phone.press("1")
    assert phone.prompts[0] == "rating.thanks"
    with app.extensions["sessions"]() as s:
        [rating] = s.scalars(select(CallRating))
    assert len(rating.agent) == 128 and rating.agent.startswith("+8653200000000 CA999")
    no_traceback(caplog)


def test_a_whisper_for_a_parent_call_sid_with_a_nul_byte_is_still_spoken(app, call, client, caplog):
    phone = call().dial().press("0")
    form = {**FORM, "CallSid": "CA" + "8" * 32, "ParentCallSid": phone.call_sid + "\x00"}
    resp = signed_post(client, "/voice/whisper", form)
    assert resp.status_code == 200 and b"<Say" in resp.data
    no_traceback(caplog)
