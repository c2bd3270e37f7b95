"""Whole calls as tests place them: a verified caller, webhooks signed like Twilio's, the call record."""
from __future__ import annotations

from sqlalchemy import select
from twilio.request_validator import RequestValidator

from models.calls import CallEvent, CallState
from tests.support.constants import ALICE, PIN, TOKEN

BASE = "http://127.0.0.1:8000"
FORM = {"CallSid": "CA" + "1" * 32, "From": "+8613912345678", "To": "+8653212333", "CallStatus": "ringing"}


def verified(call, key: str = "1", id_number: str = ALICE, pin: str = PIN, **kw):
    """Dial, choose a service and pass verification."""
    return call(**kw).dial().press(key).press(id_number + "#").press(pin + "#")


def signed_post(client, path, form, token=TOKEN, base=BASE, headers=None):
    """POST a form signed like Twilio signs it."""
    sig = RequestValidator(token).compute_signature(base + path, form)
    return client.post(path, data=form, base_url=base, headers={"X-Twilio-Signature": sig, **(headers or {})})


def calls(app):
    """Return every call row."""
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallState)))


def events(app, sid):
    """Return the recorded webhooks of a call."""
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(CallEvent).where(CallEvent.call_sid == sid).order_by(CallEvent.id)))
