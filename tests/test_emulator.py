"""The Twilio emulator follows TwiML the way Twilio documents it, against a tiny real Flask app."""
from __future__ import annotations

import pytest
from flask import Flask, Response, request
from freezegun import freeze_time
from twilio.request_validator import RequestValidator

from ivr.sim.phone import CallFailed, ClientTransport, Phone

TOKEN = "emulator-token"


def twiml_app(pages: dict[str, str]) -> tuple[Flask, list[tuple[str, dict]]]:
    """A Flask app answering each path with fixed TwiML, refusing badly signed requests.

    It notes each request as (path, form); a GET as ("GET path", its query parameters).
    """
    app = Flask("fake-twilio-peer")
    seen: list[tuple[str, dict]] = []

    @app.route("/<path:page>", methods=["GET", "POST"])
    def answer(page: str) -> Response:
        url = request.url
        if not RequestValidator(TOKEN).validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
            return Response("bad signature", status=403)
        if request.method == "GET":
            seen.append((f"GET {request.path}", request.args.to_dict()))
        else:
            seen.append((request.full_path.rstrip("?"), request.form.to_dict()))
        body = pages.get(page, "<Response/>")
        return Response(f'<?xml version="1.0" encoding="UTF-8"?>{body}', mimetype="text/xml")

    return app, seen


def phone_for(pages: dict[str, str], **kw) -> tuple[Phone, list[tuple[str, dict]]]:
    app, seen = twiml_app({"voice": pages.pop("voice"), **pages})
    return Phone(ClientTransport(app.test_client()), TOKEN, **kw), seen


def test_every_request_carries_twilios_fields_and_a_valid_signature():
    phone, seen = phone_for({"voice": "<Response><Say>hi</Say></Response>"})
    phone.dial()
    path, form = seen[0]
    assert path == "/voice"
    assert {"CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "ApiVersion"} <= set(form)
    assert form["CallStatus"] == "ringing" and form["Direction"] == "inbound"


def test_a_wrong_token_is_refused_by_a_validating_server():
    app, _ = twiml_app({"voice": "<Response/>"})
    with pytest.raises(CallFailed, match="403"):
        Phone(ClientTransport(app.test_client()), "wrong").dial()


def test_silence_falls_through_to_the_verb_after_the_gather():
    phone, seen = phone_for({
        "voice": '<Response><Gather action="/menu" numDigits="1"><Say>menu</Say></Gather>'
                 '<Say>nothing heard</Say><Hangup/></Response>',
    })
    phone.dial().silence()
    assert [h.text for h in phone.last] == ["nothing heard"] and phone.ended
    assert [p for p, _ in seen] == ["/voice", "/voice/status"]


def test_action_on_empty_result_posts_the_action_with_no_digits():
    phone, seen = phone_for({
        "voice": '<Response><Gather action="/menu" actionOnEmptyResult="true"><Say>menu</Say></Gather></Response>',
        "menu": "<Response><Say>empty</Say></Response>",
    })
    phone.dial().silence()
    assert seen[1] == ("/menu", {**seen[1][1], "Digits": ""})


def test_finish_on_key_ends_the_entry_and_is_not_sent():
    phone, seen = phone_for({
        "voice": '<Response><Gather action="/id" finishOnKey="#"><Say>id</Say></Gather></Response>',
        "id": '<Response><Gather action="/menu" numDigits="1"><Say>menu</Say></Gather></Response>',
        "menu": "<Response><Say>done</Say></Response>",
    })
    phone.dial().press("12*4#2")  # the key after # is typed ahead into the next Gather
    assert [(p, f.get("Digits")) for p, f in seen[1:3]] == [("/id", "12*4"), ("/menu", "2")]


def test_an_empty_redirect_means_the_current_url():
    phone, seen = phone_for({
        "voice": '<Response><Redirect method="POST">/again?x=1</Redirect></Response>',
        "again": "<Response><Redirect/></Response>",
    })
    with pytest.raises(CallFailed, match="Redirect>s in a row"):
        phone.dial()
    assert [p for p, _ in seen[:3]] == ["/voice", "/again?x=1", "/again?x=1"]


def test_dial_whispers_to_the_agent_then_posts_the_dial_status():
    phone, seen = phone_for({
        "voice": '<Response><Dial action="/after"><Number url="/whisper">+8653200000000</Number></Dial></Response>',
        "whisper": "<Response><Say>未验证，尾号1234，按了0</Say></Response>",
        "after": "<Response><Say>bye</Say></Response>",
    })
    phone.dial()
    assert phone.dialing[2] == [("+8653200000000", "/whisper")]
    phone.agent_leg_ends("completed")
    assert [h.text for h in phone.agent_heard] == ["未验证，尾号1234，按了0"]
    assert seen[1][1]["ParentCallSid"] == phone.call_sid
    assert seen[2][0] == "/after" and seen[2][1]["DialCallStatus"] == "completed"


def test_an_unanswered_dial_skips_the_whisper():
    phone, seen = phone_for({
        "voice": '<Response><Dial action="/after"><Number url="/whisper">+1</Number></Dial></Response>',
        "after": "<Response><Say>sorry</Say></Response>",
    })
    phone.dial().agent_leg_ends("no-answer")
    assert [p for p, _ in seen] == ["/voice", "/after", "/voice/status"]


def test_enqueue_waits_then_posts_the_queue_result():
    phone, seen = phone_for({
        "voice": '<Response><Enqueue action="/left">agents</Enqueue></Response>',
        "left": "<Response><Hangup/></Response>",
    })
    phone.dial()
    assert (phone.queued.action, phone.queued.name) == ("http://127.0.0.1:8000/left", "agents")
    phone.leave_queue("hangup")
    assert seen[1][1]["QueueResult"] == "hangup"


def test_record_posts_the_recording_and_silence_skips_it():
    page = '<Response><Record action="/saved" maxLength="30"/><Say>no message</Say></Response>'
    phone, seen = phone_for({"voice": page, "saved": "<Response><Say>thanks</Say></Response>"})
    phone.dial().record(7)
    assert seen[1][0] == "/saved" and seen[1][1]["RecordingDuration"] == "7"
    assert seen[1][1]["RecordingUrl"].startswith("https://api.twilio.com/")
    quiet, _ = phone_for({"voice": page})
    quiet.dial().silence()
    assert [h.text for h in quiet.last] == ["no message"]


def test_speech_is_posted_with_its_confidence():
    phone, seen = phone_for({
        "voice": '<Response><Gather input="dtmf speech" action="/heard"><Say>说</Say></Gather></Response>',
        "heard": "<Response/>",
    })
    phone.dial().speak("挂失", 0.72)
    assert (seen[1][1]["SpeechResult"], seen[1][1]["Confidence"]) == ("挂失", "0.72")


def test_speaking_to_a_keypad_only_gather_is_refused():
    phone, _ = phone_for({"voice": '<Response><Gather action="/x"><Say>按键</Say></Gather></Response>'})
    with pytest.raises(CallFailed, match="speech"):
        phone.dial().speak("挂失")


def test_a_document_that_runs_out_ends_the_call_with_the_status_callback():
    phone, seen = phone_for({"voice": "<Response><Say>hello</Say><Pause length=\"1\"/></Response>"})
    phone.dial()
    assert phone.ended and seen[-1][0] == "/voice/status" and seen[-1][1]["CallStatus"] == "completed"


@pytest.mark.parametrize("body, problem", [("not xml", "unparsable TwiML"), ("<Html/>", "not <Response>"),
                                           ("<Response><Sms>x</Sms></Response>", "unsupported TwiML verb <Sms>")])
def test_twiml_twilio_could_not_use_fails_the_call(body, problem):
    app = Flask("broken")
    app.post("/voice")(lambda: Response(body, mimetype="text/xml"))
    with pytest.raises(CallFailed, match=problem):
        Phone(ClientTransport(app.test_client()), TOKEN).dial()


@pytest.mark.parametrize("do", [lambda p: p.press("1"), lambda p: p.speak("挂失"), lambda p: p.record(5),
                                lambda p: p.silence()], ids=["press", "speak", "record", "silence"])
def test_anything_the_caller_does_after_hanging_up_fails_the_call(do):
    phone, seen = phone_for({"voice": '<Response><Gather action="/x"><Say>按键</Say></Gather></Response>'})
    phone.dial().hang_up()
    with pytest.raises(CallFailed, match="the call is ended"):
        do(phone)
    assert [p for p, _ in seen] == ["/voice", "/voice/status"]


@pytest.mark.parametrize("page, state", [('<Dial action="/after"><Number>+1</Number></Dial>', "being transferred"),
                                         ('<Enqueue action="/left">agents</Enqueue>', "in a queue")])
def test_keys_pressed_while_transferred_or_queued_fail_the_call_instead_of_waiting(page, state):
    phone, _ = phone_for({"voice": f"<Response>{page}</Response>"})
    phone.dial()
    with pytest.raises(CallFailed, match=f"the call is {state}: no <Gather> or <Record> to hear keys"):
        phone.press("1")


def test_keys_typed_past_the_last_gather_are_kept_as_unused():
    phone, _ = phone_for({
        "voice": '<Response><Gather action="/menu" numDigits="1"><Say>menu</Say></Gather></Response>',
        "menu": '<Response><Dial action="/after"><Number>+1</Number></Dial></Response>',
    })
    phone.dial().press("09")
    assert phone.pending_keys == "9" and phone.dialing is not None
    with pytest.raises(CallFailed, match="the call is being transferred"):
        phone.press("1")


def test_a_dial_without_action_goes_on_with_the_verbs_after_it():
    phone, seen = phone_for({
        "voice": '<Response><Dial><Number url="/whisper">+1</Number></Dial><Say>after the agent</Say></Response>',
        "whisper": "<Response><Say>来电</Say></Response>",
    })
    phone.dial().agent_leg_ends("completed")
    assert [h.text for h in phone.last] == ["after the agent"]
    assert [p for p, _ in seen] == ["/voice", "/whisper", "/voice/status"]  # no re-post of /voice


def test_any_key_of_the_record_finish_set_ends_the_recording():
    page = '<Response><Record action="/saved" finishOnKey="*#"/><Say>no message</Say></Response>'
    phone, seen = phone_for({"voice": page})
    phone.dial().press("*")  # ended before anything was said: an empty recording, no action
    assert [h.text for h in phone.last] == ["no message"]
    assert [p for p, _ in seen] == ["/voice", "/voice/status"]
    other, seen = phone_for({"voice": page, "saved": "<Response><Say>thanks</Say></Response>"})
    other.dial().record(5, ended_by="*")
    assert seen[1][0] == "/saved" and seen[1][1]["Digits"] == "*"


def test_a_recording_ended_by_its_timeout_posts_no_key():
    phone, seen = phone_for({"voice": '<Response><Record action="/saved" finishOnKey="#"/></Response>',
                             "saved": "<Response/>"})
    phone.dial().record(5, ended_by="")
    assert "Digits" not in seen[1][1]


def test_action_on_empty_result_posts_an_entry_of_just_the_finish_key_with_no_digits():
    phone, seen = phone_for({
        "voice": '<Response><Gather action="/id" actionOnEmptyResult="true"><Say>id</Say></Gather>'
                 '<Say>fell through</Say></Response>',
        "id": "<Response><Say>empty entry</Say></Response>",
    })
    phone.dial().press("#")
    assert seen[1] == ("/id", {**seen[1][1], "Digits": ""})
    assert [h.text for h in phone.last] == ["empty entry"]


def test_gather_redirect_and_dial_actions_are_requested_with_their_method():
    phone, seen = phone_for({
        "voice": '<Response><Gather action="/menu?a=1" method="GET" numDigits="1"><Say>m</Say></Gather></Response>',
        "menu": '<Response><Redirect method="GET">/agent</Redirect></Response>',
        "agent": '<Response><Dial action="/after" method="GET"><Number>+1</Number></Dial></Response>',
        "after": "<Response><Say>bye</Say></Response>",
    })
    phone.dial().press("1").agent_leg_ends("busy")
    assert [p for p, _ in seen] == ["/voice", "GET /menu", "GET /agent", "GET /after", "/voice/status"]
    assert seen[1][1]["Digits"] == "1" and seen[1][1]["a"] == "1" and seen[1][1]["CallSid"] == phone.call_sid
    assert seen[3][1]["DialCallStatus"] == "busy"
    assert [h.text for h in phone.last] == ["bye"]  # every GET passed the signature check


def test_the_whisper_leg_is_to_the_agent_and_an_accept_gather_is_heard_without_keys():
    phone, seen = phone_for({
        "voice": '<Response><Dial action="/after"><Number url="/whisper">+8653200000000</Number></Dial></Response>',
        "whisper": '<Response><Say>来电人已验证</Say><Gather numDigits="1" action="/accept">'
                   "<Say>接听请按1</Say></Gather></Response>",
        "after": "<Response><Say>bye</Say></Response>",
    })
    phone.dial().agent_leg_ends("completed")
    assert [h.text for h in phone.agent_heard] == ["来电人已验证", "接听请按1"]
    whisper = seen[1][1]
    assert (whisper["To"], whisper["Called"], whisper["From"]) == ("+8653200000000", "+8653200000000", phone.caller)
    assert [p for p, _ in seen] == ["/voice", "/whisper", "/after", "/voice/status"]


def test_the_status_callback_reports_the_seconds_since_dial_a_timestamp_and_a_sequence_number():
    phone, seen = phone_for({"voice": '<Response><Gather action="/x"><Say>按键</Say></Gather></Response>'},
                            call_duration=None)
    with freeze_time("2026-11-30 02:00:00") as clock:
        phone.dial()
        clock.tick(75)
        phone.hang_up()
    status = seen[-1][1]
    assert (status["CallStatus"], status["CallDuration"]) == ("completed", "75")
    assert status["Timestamp"] == "Mon, 30 Nov 2026 02:01:15 +0000"
    assert status["SequenceNumber"] == "0"


def test_a_call_shorter_than_a_second_lasts_one_and_a_duration_can_be_fixed():
    quick, seen = phone_for({"voice": "<Response><Say>hi</Say></Response>"}, call_duration=None)
    with freeze_time("2026-11-30 02:00:00"):
        quick.dial()
    assert seen[-1][1]["CallDuration"] == "1"
    fixed, seen = phone_for({"voice": '<Response><Gather action="/x"/></Response>'}, call_duration=42)
    fixed.dial().hang_up()
    assert seen[-1][1]["CallDuration"] == "42"
    given, seen = phone_for({"voice": '<Response><Gather action="/x"/></Response>'}, call_duration=None)
    given.dial().hang_up(duration=7)
    assert seen[-1][1]["CallDuration"] == "7"


def test_an_unanswered_agent_leg_reports_no_dial_call_duration():
    phone, seen = phone_for({
        "voice": '<Response><Dial action="/after"><Number>+1</Number></Dial></Response>',
        "after": "<Response><Say>sorry</Say></Response>",
    })
    phone.dial().agent_leg_ends("no-answer")
    assert seen[1][1]["DialCallDuration"] == "0"
