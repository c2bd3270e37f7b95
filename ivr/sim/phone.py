"""A Twilio emulator for one call: signs each webhook as Twilio does and follows the TwiML.

It posts the form fields Twilio posts and follows TwiML with Twilio's documented semantics:
<Gather> (numDigits, finishOnKey, input dtmf/speech; on timeout the keys so far are submitted,
and with none Twilio goes on to the verbs after the Gather unless actionOnEmptyResult is true),
<Redirect> (empty: the current URL), <Say>/<Play>/<Pause>, <Dial> (the agent leg's <Number url>
whisper, then the action callback with DialCallStatus), <Enqueue> (action with QueueResult),
<Record> (action with RecordingUrl), <Hangup>, and the status callback at the end. It drives
the app in-process (a Flask test client) or a running server by URL, and keeps a transcript.
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import requests
from twilio.request_validator import RequestValidator

from ivr.prompts import Catalogue


class Transport(Protocol):
    """Sends one signed POST and returns the status code and body."""

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]: ...


class ClientTransport:
    """Posts through a Flask test client: the app in-process."""

    def __init__(self, client):
        self.client = client

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        resp = self.client.post(path, data=form, headers=headers, base_url=f"{parts.scheme}://{parts.netloc}")
        return resp.status_code, resp.get_data(as_text=True)


class HttpTransport:
    """Posts over HTTP to a running server."""

    def __init__(self, timeout: float = 10.0):
        self.session = requests.Session()
        self.timeout = timeout

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        resp = self.session.post(url, data=form, headers=headers, timeout=self.timeout)
        return resp.status_code, resp.text


@dataclass
class Heard:
    """One thing the caller heard: the prompt id (when known), its text, and the verb."""

    prompt: str | None
    text: str
    verb: str = "Say"


@dataclass
class Waiting:
    """A <Gather> or <Record> the caller is in, and the verbs Twilio runs if nothing comes."""

    action: str
    num_digits: int | None
    finish_on_key: str
    rest: list[ET.Element]
    base: str
    verb: str = "Gather"
    speech: bool = False
    on_empty: bool = False  # actionOnEmptyResult: post the action even with no input


def heard_in(el: ET.Element, catalogue: Catalogue | None) -> Heard:
    """Return what the caller hears from a <Say> or <Play> element."""
    if el.tag == "Play":
        url = (el.text or "").strip()
        return Heard(url.rsplit("/", 1)[-1].removesuffix(".wav"), f"[{url}]", "Play")
    text = "".join(el.itertext())
    return Heard(catalogue.identify(text) if catalogue else None, text)


def heard_in_twiml(twiml: str, catalogue: Catalogue | None) -> list[Heard]:
    """Return everything a TwiML document makes the caller hear, Gather contents included."""
    out = []
    for el in ET.fromstring(twiml).iter():
        if el.tag in ("Say", "Play"):
            out.append(heard_in(el, catalogue))
    return out


MAX_REDIRECTS = 25


class CallFailed(AssertionError):
    """The hotline answered something Twilio could not use."""


@dataclass
class Phone:
    """One simulated call."""

    transport: Transport
    auth_token: str
    base_url: str = "http://127.0.0.1:8000"
    caller: str = "+8613900000000"
    dialled: str = "+8653212333"
    catalogue: Catalogue | None = None
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    account_sid: str = field(default_factory=lambda: "AC" + uuid.uuid4().hex)
    on_response: Callable[[str, int, str], None] | None = None

    heard: list[Heard] = field(default_factory=list)
    last: list[Heard] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    twiml: str = ""
    waiting: Waiting | None = None
    dialing: tuple[str, str, list[tuple[str, str | None]]] | None = None  # action, base, (number, whisper url)
    queued: tuple[str, str] | None = None  # <Enqueue> action URL and queue name
    agent_heard: list[Heard] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    ended: bool = False
    transferred: bool = False
    requests: int = 0
    _typeahead: str = ""
    _redirects: int = 0  # in a row, without the caller doing anything: a loop guard

    # -- what the caller does ------------------------------------------------------------------
    def dial(self) -> "Phone":
        """Place the call: Twilio's incoming-call webhook."""
        self._post(urljoin(self.base_url, "/voice"), {"CallStatus": "ringing"})
        return self

    def press(self, keys: str) -> "Phone":
        """Key DTMF into the current <Gather>; keys beyond what it takes go to the next one."""
        self.transcript.append(f"> press {keys}")
        self._typeahead += keys
        self._drain()
        return self

    def speak(self, words: str, confidence: float = 0.9) -> "Phone":
        """Say something to a <Gather input="speech">: Twilio posts SpeechResult and Confidence."""
        self.transcript.append(f"> speak {words} ({confidence})")
        w = self._need_gather()
        if not w.speech:
            raise CallFailed("the <Gather> does not listen for speech")
        self.waiting = None
        self._post(w.action, {"SpeechResult": words, "Confidence": f"{confidence:.2f}"})
        return self

    def record(self, seconds: int = 5, ended_by: str = "#") -> "Phone":
        """Leave a message at a <Record>: Twilio posts the recording's URL and duration."""
        self.transcript.append(f"> record {seconds}s")
        w = self._need_gather()
        if w.verb != "Record":
            raise CallFailed("the call is not recording")
        self.waiting = None
        rec = "RE" + uuid.uuid4().hex
        self._post(w.action, {
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{self.account_sid}/Recordings/{rec}",
            "RecordingSid": rec, "RecordingDuration": str(seconds), "Digits": ended_by,
        })
        return self

    def leave_queue(self, result: str = "bridged") -> "Phone":
        """End the wait in an <Enqueue>: Twilio posts QueueResult to its action URL."""
        if self.queued is None:
            raise CallFailed("the call is not in a queue")
        action, _queue = self.queued
        self.queued = None
        self.transcript.append(f"> queue {result}")
        self._post(action, {"QueueResult": result, "QueueTime": "30"})
        return self

    def silence(self) -> "Phone":
        """Say nothing until the <Gather> times out: Twilio runs the verbs after it."""
        self.transcript.append("> (silence)")
        self._redirects = 0
        w = self._need_gather()
        pending = self._typeahead
        self._typeahead = ""
        if pending and w.verb == "Gather":  # keys without the finish key are submitted on timeout
            self._submit(w, pending)
        elif w.on_empty:
            self.waiting = None
            self._post(w.action, {"Digits": ""} if w.verb == "Gather" else {})
        else:
            self.waiting = None
            self._run(w.rest, w.base, fresh=True)
        return self

    def agent_leg_ends(self, status: str = "completed") -> "Phone":
        """Finish the <Dial>: an answered agent first hears the whisper, then the action is posted."""
        if self.dialing is None:
            raise CallFailed("the call is not being transferred")
        action, base, numbers = self.dialing
        self.dialing = None
        self.transcript.append(f"> agent leg {status}")
        leg = "CA" + uuid.uuid4().hex
        if status in ("completed", "answered"):
            for _number, whisper in numbers:
                if whisper:
                    self._whisper(urljoin(base, whisper), leg)
        self._post(action, {"DialCallStatus": status, "DialCallSid": leg, "DialCallDuration": "60"})
        return self

    def _whisper(self, url: str, leg: str) -> None:
        status, body = self._send(url, {"CallSid": leg, "ParentCallSid": self.call_sid, "Direction": "outbound-dial"})
        if status != 200:
            raise CallFailed(f"whisper {url} answered {status}")
        for el in ET.fromstring(body):
            if el.tag in ("Say", "Play"):
                self.agent_heard.append(self._heard(el))
        self.transcript.append("< (agent hears) " + "".join(h.text for h in self.agent_heard))

    def hang_up(self) -> "Phone":
        """End the call: Twilio's status callback."""
        if self.ended:
            return self
        self.transcript.append("> hang up")
        self.ended = True
        self.waiting = None
        self._send(urljoin(self.base_url, "/voice/status"), {"CallStatus": "completed", "CallDuration": "42"})
        return self

    # -- what the caller heard -----------------------------------------------------------------
    @property
    def prompts(self) -> list[str | None]:
        """Prompt ids heard in the last answer."""
        return [h.prompt for h in self.last]

    @property
    def all_prompts(self) -> list[str | None]:
        """Prompt ids heard during the whole call."""
        return [h.prompt for h in self.heard]

    def text(self) -> str:
        """The text heard in the last answer."""
        return "".join(h.text for h in self.last)

    # -- Twilio's side -------------------------------------------------------------------------
    def params(self) -> dict[str, str]:
        """Return the fields Twilio posts with every voice webhook of this call."""
        return {
            "CallSid": self.call_sid, "AccountSid": self.account_sid, "From": self.caller,
            "To": self.dialled, "Caller": self.caller, "Called": self.dialled,
            "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01",
            "FromCountry": "CN", "ToCountry": "CN",
        }

    def sign(self, url: str, form: dict[str, str]) -> dict[str, str]:
        """Return the headers Twilio sends: the signature of URL and form with the auth token."""
        sig = RequestValidator(self.auth_token).compute_signature(url, form)
        return {"X-Twilio-Signature": sig}

    def _send(self, url: str, extra: dict[str, str]) -> tuple[int, str]:
        if extra:  # the caller (or the agent leg) did something: not a redirect loop
            self._redirects = 0
        form = {**self.params(), **extra}
        status, body = self.transport.post(url, form, self.sign(url, form))
        self.requests += 1
        if self.on_response:
            self.on_response(url, status, body)
        return status, body

    def _post(self, url: str, extra: dict[str, str]) -> None:
        status, body = self._send(url, extra)
        if status != 200:
            raise CallFailed(f"POST {url} answered {status}: {body[:200]}")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as err:
            raise CallFailed(f"POST {url} answered unparsable TwiML: {err}") from err
        if root.tag != "Response":
            raise CallFailed(f"POST {url} answered <{root.tag}>, not <Response>")
        self.twiml = body
        self._run(list(root), url, fresh=True)

    def _run(self, verbs: list[ET.Element], base: str, fresh: bool) -> None:
        if fresh:
            self.last = []
            self.verbs = [v.tag for v in verbs]
        for i, verb in enumerate(verbs):
            if verb.tag in ("Say", "Play"):
                self._hear(verb)
            elif verb.tag == "Gather":
                for child in verb:
                    self._hear(child)
                self.waiting = Waiting(
                    action=urljoin(base, verb.get("action") or base),
                    num_digits=int(verb.get("numDigits")) if verb.get("numDigits") else None,
                    finish_on_key=verb.get("finishOnKey", "#"),
                    rest=verbs[i + 1:], base=base,
                    speech="speech" in verb.get("input", "dtmf"),
                    on_empty=verb.get("actionOnEmptyResult") == "true",
                )
                self._drain()
                return
            elif verb.tag == "Record":
                self.waiting = Waiting(
                    action=urljoin(base, verb.get("action") or base), num_digits=None,
                    finish_on_key=verb.get("finishOnKey", "1234567890*#"), rest=verbs[i + 1:],
                    base=base, verb="Record",
                )
                return
            elif verb.tag == "Redirect":
                self._redirects += 1
                if self._redirects > MAX_REDIRECTS:
                    raise CallFailed(f"more than {MAX_REDIRECTS} <Redirect>s in a row: a loop")
                self._post(urljoin(base, (verb.text or "").strip() or base), {})
                return
            elif verb.tag == "Dial":
                self.transferred = True
                numbers = [((n.text or "").strip(), n.get("url")) for n in verb]
                self.dialing = (urljoin(base, verb.get("action") or base), base, numbers)
                self.transcript.append("< (transfer to " + ", ".join(n for n, _ in numbers) + ")")
                return
            elif verb.tag == "Enqueue":
                self.transferred = True
                self.queued = (urljoin(base, verb.get("action") or base), (verb.text or "").strip())
                self.transcript.append(f"< (queued in {self.queued[1]})")
                return
            elif verb.tag == "Hangup":
                self.hang_up()
                return
            elif verb.tag == "Pause":
                continue
            else:
                raise CallFailed(f"unsupported TwiML verb <{verb.tag}>")
        if not self.dialing and not self.waiting:
            self.hang_up()  # Twilio ends the call when the document runs out

    def _heard(self, el: ET.Element) -> Heard:
        return heard_in(el, self.catalogue)

    def _hear(self, el: ET.Element) -> None:
        if el.tag not in ("Say", "Play"):
            return
        item = self._heard(el)
        self.last.append(item)
        self.heard.append(item)
        self.transcript.append(f"< [{item.prompt or '?'}] {item.text}")

    def _need_gather(self) -> Waiting:
        if self.waiting is None:
            state = "ended" if self.ended else "being transferred" if self.dialing else "not listening"
            raise CallFailed(f"the call is {state}: no <Gather> to answer")
        return self.waiting

    def _drain(self) -> None:
        """Feed buffered keys to the waiting <Gather> while they complete it."""
        while self.waiting is not None and self._typeahead:
            w = self.waiting
            keys = self._typeahead
            if w.finish_on_key and w.finish_on_key in keys:
                cut = keys.index(w.finish_on_key)
                if w.num_digits is None or cut < w.num_digits:
                    self._typeahead = keys[cut + 1:]
                    self._submit(w, keys[:cut])
                    continue
            if w.num_digits is not None and len(keys) >= w.num_digits:
                self._typeahead = keys[w.num_digits:]
                self._submit(w, keys[: w.num_digits])
                continue
            return  # not complete yet: waits for more keys or the timeout

    def _submit(self, w: Waiting, digits: str) -> None:
        self.waiting = None
        if digits:
            self._post(w.action, {"Digits": digits})
        else:  # an empty result falls through like silence
            self._run(w.rest, w.base, fresh=True)
