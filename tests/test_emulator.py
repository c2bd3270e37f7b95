"""The Twilio emulator follows TwiML the way Twilio documents it, against a tiny real Flask app."""
from __future__ import annotations

import pytest
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

from ivr.sim.phone import CallFailed, ClientTransport, Phone

TOKEN = "emulator-token"


def twiml_app(pages: dict[str, str]) -> tuple[Flask, list[tuple[str, dict]]]:
    """A Flask app answering each path with fixed TwiML, refusing badly signed requests."""
    app = Flask("fake-twilio-peer")
    seen: list[tuple[str, dict]] = []

    @app.post("/<path:page>")
    def answer(page: str) -> Response:
        url = request.url
        if not RequestValidator(TOKEN).validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
            return Response("bad signature", status=403)
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
    assert phone.queued == ("http://127.0.0.1:8000/left", "agents")
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
