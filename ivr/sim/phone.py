"""A Twilio emulator for one call: signs each webhook as Twilio does and follows the TwiML.

It posts the form fields Twilio posts, follows <Gather> (numDigits, finishOnKey; silence falls
through to the verbs after it), <Redirect>, <Say>/<Play>/<Pause>, <Dial> (action callback with
DialCallStatus) and <Hangup>, and sends the status callback at the end. It drives the app
in-process (a Flask test client) or a running server by URL, and records what the caller heard.
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
    """A <Gather> the caller is in, and the verbs Twilio runs if it times out."""

    action: str
    num_digits: int | None
    finish_on_key: str
    rest: list[ET.Element]
    base: str


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
    dialing: tuple[str, str, list[str]] | None = None  # action URL, base, numbers
    ended: bool = False
    transferred: bool = False
    requests: int = 0
    _typeahead: str = ""

    # -- what the caller does ------------------------------------------------------------------
    def dial(self) -> "Phone":
        """Place the call: Twilio's incoming-call webhook."""
        self._post(urljoin(self.base_url, "/voice"), {"CallStatus": "ringing"})
        return self

    def press(self, keys: str) -> "Phone":
        """Key DTMF into the current <Gather>; keys beyond what it takes go to the next one."""
        self._typeahead += keys
        self._drain()
        return self

    def silence(self) -> "Phone":
        """Say nothing until the <Gather> times out: Twilio runs the verbs after it."""
        w = self._need_gather()
        pending = self._typeahead
        self._typeahead = ""
        if pending:  # keys without the finish key are submitted on timeout
            self._submit(w, pending)
        else:
            self.waiting = None
            self._run(w.rest, w.base, fresh=True)
        return self

    def agent_leg_ends(self, status: str = "completed") -> "Phone":
        """Finish the <Dial>: Twilio posts DialCallStatus to its action URL."""
        if self.dialing is None:
            raise CallFailed("the call is not being transferred")
        action, _base, _ = self.dialing
        self.dialing = None
        extra = {"DialCallStatus": status, "DialCallSid": "CA" + uuid.uuid4().hex}
        self._post(action, extra)
        return self

    def hang_up(self) -> "Phone":
        """End the call: Twilio's status callback."""
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
                )
                self._drain()
                return
            elif verb.tag == "Redirect":
                self._post(urljoin(base, (verb.text or "").strip() or base), {})
                return
            elif verb.tag == "Dial":
                self.transferred = True
                numbers = [(n.text or "").strip() for n in verb]
                self.dialing = (urljoin(base, verb.get("action") or base), base, numbers)
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

    def _hear(self, el: ET.Element) -> None:
        if el.tag == "Say":
            text = "".join(el.itertext())
            pid = self.catalogue.identify(text) if self.catalogue else None
            item = Heard(pid, text)
        elif el.tag == "Play":
            url = (el.text or "").strip()
            item = Heard(url.rsplit("/", 1)[-1].removesuffix(".wav"), f"[{url}]", "Play")
        else:
            return
        self.last.append(item)
        self.heard.append(item)

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
