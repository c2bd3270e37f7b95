"""A Twilio emulator for one call: signs each webhook as Twilio does and follows the TwiML.

It posts the form fields Twilio posts and follows TwiML with Twilio's documented semantics:
<Gather> (numDigits, finishOnKey, input dtmf/speech; on timeout the keys so far are submitted,
and with none Twilio goes on to the verbs after the Gather unless actionOnEmptyResult is true),
<Redirect> (empty: the current URL), <Say>/<Play>/<Pause>, <Dial> (the agent leg's <Number url>
whisper, then the action callback with DialCallStatus; without an action, the verbs after the
Dial), <Enqueue> (below), <Record> (any key of finishOnKey ends it; action with RecordingUrl),
<Hangup>, and the status callback at the end. Actions are requested with their `method` (POST or
GET). Keys pressed when nothing listens fail the call. It drives the app in-process (a Flask test
client) or a running server by URL, and keeps a transcript.

Queues (`Queues`: Twilio's queues of one account, first in first out, on one clock of simulated
seconds): <Enqueue> puts the caller in the named queue and fetches its waitUrl with QueuePosition,
CurrentQueueSize, QueueTime, AvgQueueTime, QueueSid and MaxQueueSize; the document is played
(<Say> taking SAY_SECONDS_PER_CHARACTER a character, <Pause> its length, <Play> `play_seconds`, a
<Gather> its timeout after what it says) and fetched again when it ends, for as long as the caller
waits (`wait(seconds)`, or `silence()`: one document). Keys go to a <Gather> in it, whose action's
document plays in the queue too; <Leave> takes the caller out (the <Enqueue> action then gets
QueueResult leave and QueueTime). An agent's call (`Agent.take`) posts the hotline's
/voice/queue/next and follows its <Dial><Queue url>: the first caller of that queue is taken out,
the url is fetched for the caller's end (CallSid the caller's, QueueSid, QueueTime,
DequeingCallSid) and heard by the caller; when the agent hangs up (`bridge_ends`) the <Enqueue>
action gets QueueResult bridged. A caller who hangs up while queued or bridged: the action with
hangup (or bridged), then the status callback.
"""
from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from ivr.callflow.heard import Heard, heard_in  # what a TwiML answer makes the caller hear, as the console reads it
from ivr.voice.prompts import Catalogue

DIAL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")
QUEUE_RESULTS = ("bridged", "bridging-in-process", "error", "hangup", "leave", "redirected",
                 "redirected-from-bridged", "queue-full", "system-error")
KEYS = frozenset("0123456789*#")


class Transport(Protocol):
    """Sends one signed POST and returns the status code and body (and GET, for method="GET")."""

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]: ...


class ClientTransport:
    """Posts through a Flask test client: the app in-process."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        path, base = self._split(url)
        resp = self.client.post(path, data=form, headers=headers, base_url=base)
        return resp.status_code, resp.get_data(as_text=True)

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str]:
        """Send a GET (the parameters are in the URL)."""
        path, base = self._split(url)
        resp = self.client.get(path, headers=headers, base_url=base)
        return resp.status_code, resp.get_data(as_text=True)

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else ""), f"{parts.scheme}://{parts.netloc}"


class HttpTransport:
    """Posts over HTTP to a running server."""

    def __init__(self, timeout: float = 10.0):
        self.session = requests.Session()
        self.timeout = timeout

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        resp = self.session.post(url, data=form, headers=headers, timeout=self.timeout)
        return resp.status_code, resp.text

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str]:
        """Send a GET (the parameters are in the URL)."""
        resp = self.session.get(url, headers=headers, timeout=self.timeout)
        return resp.status_code, resp.text


@dataclass
class Waiting:
    """A <Gather> or <Record> the caller is in, and the verbs Twilio runs if nothing comes."""

    action: str
    num_digits: int | None
    finish_on_key: str  # <Gather>: one key (or none); <Record>: a set of keys, any one ends it
    rest: list[ET.Element]
    base: str
    verb: str = "Gather"
    speech: bool = False
    on_empty: bool = False  # actionOnEmptyResult: post the action even with no input
    method: str = "POST"
    dtmf: bool = True
    in_queue: bool = False  # in a queue's wait document: its action's document plays in the queue too


@dataclass
class Dialing:
    """A <Dial> in progress: where its action goes (None: on with the verbs after it), the numbers."""

    action: str | None
    base: str
    numbers: list[tuple[str, str | None, str]]  # number, whisper URL, the whisper's method
    rest: list[ET.Element]
    method: str = "POST"

    def __getitem__(self, i: int) -> str | list[tuple[str, str | None]] | None:
        # dialing[2]: the (number, whisper URL) pairs, as before
        return (self.action, self.base, [(n, u) for n, u, _ in self.numbers])[i]


@dataclass
class Queued:
    """An <Enqueue> the caller waits in: its action (None: on with the verbs after it), the queue."""

    action: str | None
    name: str
    base: str
    rest: list[ET.Element]
    method: str = "POST"
    wait_url: str | None = None  # the waitUrl, fetched again each time its document ends
    wait_method: str = "POST"
    since: float = 0.0  # on the queues' clock: when the caller joined
    ends_at: float = 0.0  # on the queues' clock: when the wait document playing now ends
    bridged: Agent | None = None  # taken by an agent: talking, until the agent hangs up
    waited: int = 0  # QueueTime when the wait ended


SAY_SECONDS_PER_CHARACTER = 0.25  # Mandarin text-to-speech says about four characters a second


class Queues:
    """Twilio's queues of one account as the emulator keeps them: callers by queue name, first in
    first out, on one clock of simulated seconds shared by every phone (and agent) using them."""

    def __init__(self, max_size: int = 1000) -> None:
        self.clock = 0.0
        self.max_size = max_size
        self.members: dict[str, list[Phone]] = {}

    def join(self, name: str, phone: Phone) -> bool:
        """Put a caller at the end of a queue; False when it is full."""
        line = self.members.setdefault(name, [])
        if len(line) >= self.max_size:
            return False
        line.append(phone)
        return True

    def leave(self, phone: Phone) -> None:
        """Take a caller out of whatever queue they are in."""
        for line in self.members.values():
            if phone in line:
                line.remove(phone)

    def place(self, phone: Phone) -> tuple[int, int]:
        """Return a caller's position (from 1) and the size of their queue."""
        for line in self.members.values():
            if phone in line:
                return line.index(phone) + 1, len(line)
        return 0, 0

    def average(self, name: str) -> int:
        """Return the average time, in seconds, the callers now in a queue have waited."""
        line = [p for p in self.members.get(name, []) if p.queued is not None]
        if not line:
            return 0
        return round(sum(self.clock - p.queued.since for p in line if p.queued) / len(line))

    def first(self, name: str) -> Phone | None:
        """Return the caller an agent's <Dial><Queue> takes: the first in line."""
        line = self.members.get(name) or []
        return line[0] if line else None

    def advance(self, seconds: float) -> None:
        """Let time pass: every waiting caller's wait document plays on, fetched again as it ends."""
        until = self.clock + max(0.0, seconds)
        while True:
            due = [p for line in self.members.values() for p in line
                   if p.queued is not None and p.queued.bridged is None and p.queued.ends_at <= until]
            if not due:
                break
            phone = min(due, key=lambda p: p.queued.ends_at if p.queued else until)
            assert phone.queued is not None
            self.clock = max(self.clock, phone.queued.ends_at)
            phone._wait_ended()
        self.clock = until


def say_seconds(el: ET.Element) -> float:
    """How long a <Say> takes: SAY_SECONDS_PER_CHARACTER a character, longer inside SSML
    <prosody rate="N%"> (elder mode: 85 % of the rate takes 1/0.85 the time)."""
    texts: dict[float, str] = {}
    for text, rate in _say_parts(el, 1.0):
        texts[rate] = texts.get(rate, "") + text
    return sum(len(text.strip()) * SAY_SECONDS_PER_CHARACTER / rate for rate, text in texts.items())


def _say_parts(el: ET.Element, rate: float) -> list[tuple[str, float]]:
    """Return the texts of a <Say> (SSML children included) with the rate each is said at."""
    if el.tag == "prosody":
        given = (el.get("rate") or "").strip()
        if given.endswith("%") and given[:-1].isdigit():
            percent = int(given[:-1])
            if not 20 <= percent <= 200:  # Amazon Polly's range
                raise CallFailed(f'<prosody rate="{given}">: Polly takes 20% to 200%')
            rate = rate * percent / 100
    parts = [(el.text or "", rate)]
    for child in el:
        parts += _say_parts(child, rate)
        parts.append((child.tail or "", rate))
    return parts


MAX_REDIRECTS = 25


class CallFailed(AssertionError):
    """The hotline answered something Twilio could not use, or the caller did what a call cannot."""


def _method(verb: ET.Element) -> str:
    method = (verb.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise CallFailed(f"<{verb.tag} method={method!r}>: Twilio requests with GET or POST only")
    return method


@dataclass
class Phone:
    """One simulated call.

    call_duration: the CallDuration the status callback reports; None reports the seconds
    really elapsed since dial() (at least 1).
    """

    transport: Transport
    auth_token: str
    base_url: str = "http://127.0.0.1:8000"
    caller: str = "+8613900000000"
    dialled: str = "+8653212333"
    catalogue: Catalogue | None = None
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    account_sid: str = field(default_factory=lambda: "AC" + uuid.uuid4().hex)
    on_response: Callable[[str, int, str], None] | None = None
    call_duration: int | None = 42
    queues: Queues = field(default_factory=Queues)  # Twilio's queues: share one between the phones of a test
    play_seconds: int = 30  # how long a <Play> in a queue's wait document lasts (its length is not known)

    heard: list[Heard] = field(default_factory=list)
    last: list[Heard] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    twiml: str = ""
    waiting: Waiting | None = None
    dialing: Dialing | None = None
    queued: Queued | None = None
    agent_heard: list[Heard] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    ended: bool = False
    transferred: bool = False
    requests: int = 0
    unused_keys: list[str] = field(default_factory=list)  # typed ahead, then nothing took them
    queue_heard: list[tuple[float, Heard]] = field(default_factory=list)  # heard while queued, on the queues' clock
    status_answer: int | None = None  # what the status callback answered
    _typeahead: str = ""
    _redirects: int = 0  # in a row, without the caller doing anything: a loop guard
    _dialled_at: float | None = None
    _status_sequence: int = 0

    # -- what the caller does ------------------------------------------------------------------
    def dial(self) -> Phone:
        """Place the call: Twilio's incoming-call webhook."""
        self._dialled_at = time.monotonic()
        self._post(urljoin(self.base_url, "/voice"), {"CallStatus": "ringing"})
        return self

    def press(self, keys: str) -> Phone:
        """Key DTMF into the current <Gather> (or <Record>); keys beyond what it takes go to the next one.

        Keys nobody listens for (the call ended, is being transferred, or waits for speech only)
        fail the call rather than wait silently for a <Gather> that may never come.
        """
        self.transcript.append(f"> press {keys}")
        bad = set(keys) - KEYS
        if not keys or bad:
            raise CallFailed(f"a phone has no key {''.join(sorted(bad)) or '(none)'!r}: keys are 0-9 * #")
        w = self._need_gather("keys")
        if w.verb == "Gather" and not w.dtmf:
            raise CallFailed("the <Gather> listens for speech only: nobody hears the keys")
        self._typeahead += keys
        self._drain()
        return self

    def speak(self, words: str, confidence: float | str | None = 0.9) -> Phone:
        """Say something to a <Gather input="speech">: Twilio posts SpeechResult and Confidence (a
        number with two decimals; a string as it is, e.g. "" or "0.0"; None: no Confidence at all)."""
        self.transcript.append(f"> speak {words} ({confidence})")
        w = self._need_gather("speech")
        if not w.speech:
            raise CallFailed("the <Gather> does not listen for speech" if w.verb == "Gather"
                             else "the call is recording: speak: is for a <Gather input=\"speech\">")
        self.waiting = None
        form = {"SpeechResult": words}
        if confidence is not None:
            form["Confidence"] = confidence if isinstance(confidence, str) else f"{confidence:.2f}"
        self._post(w.action, form, w.method)
        return self

    def record(self, seconds: int = 5, ended_by: str = "#") -> Phone:
        """Leave a message at a <Record>: Twilio posts the recording's URL, its duration, the key
        that ended it (none when it ended by its timeout, ended_by="")."""
        self.transcript.append(f"> record {seconds}s")
        w = self._need_gather("a message")
        if w.verb != "Record":
            raise CallFailed("the call is not recording")
        self.waiting = None
        rec = "RE" + uuid.uuid4().hex
        form = {
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{self.account_sid}/Recordings/{rec}",
            "RecordingSid": rec, "RecordingDuration": str(seconds),
        }
        if ended_by and ended_by in w.finish_on_key:
            form["Digits"] = ended_by
        self._post(w.action, form, w.method)
        return self

    def leave_queue(self, result: str = "bridged") -> Phone:
        """End the wait in an <Enqueue> with any QueueResult: Twilio posts it, and the QueueTime, to
        its action URL (a wait that ended some way the hotline does not make itself: queue-full,
        system-error, a REST API redirect…)."""
        if self.queued is None:
            raise CallFailed("the call is not in a queue")
        self.transcript.append(f"> queue {result}")
        self._queue_over(result)
        return self

    def wait(self, seconds: float) -> Phone:
        """Wait in the queue: the wait document plays (and is fetched again as it ends) for this
        many simulated seconds; every caller of the same `Queues` waits as long."""
        if self.queued is None:
            raise CallFailed("the call is not in a queue")
        self.transcript.append(f"> (wait {seconds:g} s)")
        self.queues.advance(seconds)
        return self

    def bridge_ends(self, seconds: int = 60) -> Phone:
        """The agent who took the caller from the queue hangs up after talking: the <Enqueue>'s
        action gets QueueResult bridged, and the caller hears what the hotline answers (the rating)."""
        if self.queued is None or self.queued.bridged is None:
            raise CallFailed("no agent has taken the call from a queue")
        self.transcript.append(f"> agent hangs up after {seconds} s")
        self._queue_over("bridged")
        return self

    def _queue_over(self, result: str) -> None:
        """The wait (or the bridged talk) is over: the <Enqueue> action, or the verbs after it."""
        q = self.queued
        assert q is not None
        self.queues.leave(self)
        self.queued = None
        self.waiting = None
        waited = q.waited if q.bridged is not None else round(self.queues.clock - q.since)
        if q.action is None:
            self._run(q.rest, q.base, fresh=True)
        else:
            self._post(q.action, {"QueueResult": result, "QueueTime": str(waited)}, q.method)

    # -- Twilio's side of a queue --------------------------------------------------------------
    def _enqueue(self, q: Queued) -> None:
        """Join the queue and start its wait document (Twilio's own hold music without a waitUrl)."""
        q.since = q.ends_at = self.queues.clock
        self.queued = q
        if not self.queues.join(q.name, self):
            self.transcript.append(f"< (the queue {q.name} is full)")
            self._queue_over("queue-full")
            return
        if q.wait_url is None:
            q.ends_at = float("inf")  # the default classical playlist: nothing to fetch, nothing to press
            return
        self._fetch_wait(q.wait_url, {}, q.wait_method, first=True)

    def _queue_params(self) -> dict[str, str]:
        q = self.queued
        assert q is not None
        position, size = self.queues.place(self)
        return {"QueueSid": queue_sid(q.name), "QueuePosition": str(position), "CurrentQueueSize": str(size),
                "QueueTime": str(round(self.queues.clock - q.since)), "AvgQueueTime": str(self.queues.average(q.name)),
                "MaxQueueSize": str(self.queues.max_size)}

    def _fetch_wait(self, url: str, extra: dict[str, str], method: str, with_queue: bool = True,
                    first: bool = False) -> None:
        """Fetch a document to play while the caller waits (the waitUrl, or its <Gather>'s action) and
        play it (`first`: right after the <Enqueue>, heard with what came before it)."""
        form = {**self._queue_params(), **extra} if with_queue else extra
        root, body = self._fetch(url, form, method, f"queue wait {url}")
        if root.tag != "Response":
            raise CallFailed(f"{method} {url} answered <{root.tag}>, not <Response>")
        self.twiml = body
        self._play_wait(list(root), url, first)

    def _play_wait(self, verbs: list[ET.Element], base: str, first: bool = False) -> None:
        """Play a wait document from the queues' clock on: what the caller hears and when, its
        <Gather> to press keys into; note when it ends (then Twilio fetches the waitUrl again)."""
        q = self.queued
        assert q is not None
        if not first:
            self.last = []
            self.verbs = [v.tag for v in verbs]
        at = self.queues.clock
        self.waiting = None
        for i, verb in enumerate(verbs):
            if verb.tag in ("Say", "Play", "Pause"):
                at = self._wait_hear(verb, at)
            elif verb.tag == "Gather":
                for child in verb:
                    at = self._wait_hear(child, at)
                if "dtmf" not in verb.get("input", "dtmf").split():
                    raise CallFailed("a <Gather> in a queue's wait document must listen for keys")
                num_digits = verb.get("numDigits")
                self.waiting = Waiting(
                    action=urljoin(base, verb.get("action") or base),
                    num_digits=int(num_digits) if num_digits else None,
                    finish_on_key=verb.get("finishOnKey", "#"), rest=verbs[i + 1:], base=base,
                    on_empty=verb.get("actionOnEmptyResult") == "true", method=_method(verb), in_queue=True,
                )
                at += float(verb.get("timeout") or 5)
                for after in verbs[i + 1:]:  # what follows the <Gather> when it times out
                    if after.tag in ("Say", "Play", "Pause"):
                        at += self._seconds(after)
                break
            elif verb.tag == "Leave":
                self.transcript.append("< (leaves the queue)")
                self._queue_over("leave")
                return
            elif verb.tag == "Hangup":
                self.hang_up()
                return
            elif verb.tag == "Redirect":
                self._fetch_wait(urljoin(base, (verb.text or "").strip() or base), {}, _method(verb))
                return
            else:
                raise CallFailed(f"<{verb.tag}> is not allowed in a queue's wait document")
        q.ends_at = max(at, self.queues.clock + 1.0)  # Twilio never fetches the same document twice at once

    def _wait_hear(self, el: ET.Element, at: float) -> float:
        if el.tag in ("Say", "Play"):
            item = self._heard(el)
            self.last.append(item)
            self.heard.append(item)
            self.queue_heard.append((at, item))
            self.transcript.append(f"< [{item.prompt or '?'}] {item.text}")
        return at + self._seconds(el)

    def _seconds(self, el: ET.Element) -> float:
        """How long the caller hears a verb of a wait document, in simulated seconds."""
        if el.tag == "Say":
            return say_seconds(el)
        if el.tag == "Play":
            return float(self.play_seconds) * max(1, int(el.get("loop") or 1))
        if el.tag == "Pause":
            return float(el.get("length") or 1)
        return 0.0

    def _wait_ended(self) -> None:
        """The wait document played to its end (its <Gather> heard nothing): fetch the waitUrl again."""
        q = self.queued
        assert q is not None and q.wait_url is not None
        self.waiting = None
        self._fetch_wait(q.wait_url, {}, q.wait_method)

    def _taken(self, agent: Agent, url: str | None, method: str, agent_sid: str) -> None:
        """An agent's <Dial><Queue> took this caller: out of the queue, the Queue url's document
        played at the caller's end, then talking (until `bridge_ends` or a hang-up)."""
        q = self.queued
        assert q is not None
        self.queues.leave(self)
        self.waiting = None
        q.waited = round(self.queues.clock - q.since)
        q.bridged = agent
        self.transcript.append("< (an agent takes the call)")
        if url:
            form = {"QueueSid": queue_sid(q.name), "QueueTime": str(q.waited), "DequeingCallSid": agent_sid}
            root, _body = self._fetch(urljoin(agent.base_url, url), form, method, f"queue url {url}")
            self.last = []
            for el in root.iter():
                if el.tag in ("Say", "Play"):
                    self._hear(el)

    def silence(self) -> Phone:
        """Say nothing until the <Gather> times out: Twilio runs the verbs after it."""
        self.transcript.append("> (silence)")
        self._redirects = 0
        w = self._need_gather("silence")
        if w.in_queue and self.queued is not None:  # the wait document plays to its end, and again
            self._typeahead = ""
            self.queues.advance(self.queued.ends_at - self.queues.clock)
            return self
        pending = self._typeahead
        self._typeahead = ""
        if pending and w.verb == "Gather":  # keys without the finish key are submitted on timeout
            self._submit(w, pending)
        elif w.on_empty:
            self.waiting = None
            self._post(w.action, {"Digits": ""} if w.verb == "Gather" else {}, w.method)
        else:
            self.waiting = None
            self._run(w.rest, w.base, fresh=True)
        return self

    def agent_leg_ends(self, status: str = "completed", seconds: int = 60) -> Phone:
        """Finish the <Dial>: an answered agent first hears the whisper, then the action is posted
        (without an action, Twilio goes on with the verbs after the <Dial>)."""
        if self.dialing is None:
            raise CallFailed("the call is ended: nobody is being put through" if self.ended
                             else "the call is not being transferred")
        if status not in DIAL_STATUSES:
            raise CallFailed(f"DialCallStatus {status!r} is not one of {', '.join(DIAL_STATUSES)}")
        d = self.dialing
        self.dialing = None
        self.transcript.append(f"> agent leg {status}")
        leg = "CA" + uuid.uuid4().hex
        answered = status in ("completed", "answered")
        if answered and d.numbers:
            number, whisper, method = d.numbers[0]  # the leg that answered
            if whisper:
                self._whisper(urljoin(d.base, whisper), leg, number, method)
        if d.action is None:
            self._run(d.rest, d.base, fresh=True)
            return self
        self._post(d.action, {"DialCallStatus": status, "DialCallSid": leg,
                              "DialCallDuration": str(seconds) if answered else "0"}, d.method)
        return self

    def _whisper(self, url: str, leg: str, number: str, method: str) -> None:
        """The agent's leg fetches the <Number url>: what it says (an accept prompt in a <Gather>
        included) is what the agent hears before the caller is connected."""
        extra = {"CallSid": leg, "ParentCallSid": self.call_sid, "Direction": "outbound-dial",
                 "To": number, "Called": number}
        root, _body = self._fetch(url, extra, method, f"whisper {url}")
        now = [self._heard(el) for el in root.iter() if el.tag in ("Say", "Play")]
        self.agent_heard.extend(now)
        self.transcript.append("< (agent hears) " + "".join(h.text for h in now))

    def hang_up(self, duration: int | None = None) -> Phone:
        """End the call: Twilio's status callback, with the call's duration in seconds
        (given, else the phone's call_duration, else the time since dial(), at least 1)."""
        if self.ended:
            return self
        self.transcript.append("> hang up")
        if self.queued is not None:  # Twilio tells the <Enqueue> action how the wait ended (its answer is not played)
            q, self.queued = self.queued, None
            self.queues.leave(self)
            if q.action is not None:
                waited = q.waited if q.bridged is not None else round(self.queues.clock - q.since)
                self._send(q.action, {"QueueResult": "bridged" if q.bridged else "hangup", "QueueTime": str(waited)},
                           q.method)
        self.ended = True
        self.waiting = self.dialing = self.queued = None
        if duration is None:
            duration = self.call_duration
        if duration is None:
            since = time.monotonic() - self._dialled_at if self._dialled_at is not None else 0
            duration = max(1, round(since))
        self._status_sequence += 1
        self.status_answer, _ = self._send(urljoin(self.base_url, "/voice/status"), {
            "CallStatus": "completed", "CallDuration": str(duration),
            "Timestamp": format_datetime(datetime.now(UTC)),
            "SequenceNumber": str(self._status_sequence - 1), "CallbackSource": "call-progress-events",
        })
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

    @property
    def pending_keys(self) -> str:
        """Keys typed but never used: typed ahead past a <Gather>, or never submitted."""
        return "".join(self.unused_keys) + self._typeahead

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
        """Return the headers Twilio sends: the signature of URL and form with the auth token
        (for a GET, the URL carries the parameters and the form is empty)."""
        sig = RequestValidator(self.auth_token).compute_signature(url, form)
        return {"X-Twilio-Signature": sig}

    def _send(self, url: str, extra: dict[str, str], method: str = "POST") -> tuple[int, str]:
        if extra:  # the caller (or the agent leg) did something: not a redirect loop
            self._redirects = 0
        form = {**self.params(), **extra}
        if method == "GET":
            get = getattr(self.transport, "get", None)
            if get is None:
                raise CallFailed(f"GET {url}: this transport can only POST")
            url = url + ("&" if urlsplit(url).query else "?") + urlencode(form)
            status, body = get(url, self.sign(url, {}))
        else:
            status, body = self.transport.post(url, form, self.sign(url, form))
        self.requests += 1
        if self.on_response:
            self.on_response(url, status, body)
        return status, body

    def _fetch(self, url: str, extra: dict[str, str], method: str, who: str) -> tuple[ET.Element, str]:
        """Send one webhook and parse its TwiML; anything Twilio could not use fails the call."""
        status, body = self._send(url, extra, method)
        if status != 200:
            raise CallFailed(f"{who} answered {status}: {body[:200]}")
        try:
            return ET.fromstring(body), body
        except ET.ParseError as err:
            raise CallFailed(f"{who} answered unparsable TwiML: {err}") from err

    def _post(self, url: str, extra: dict[str, str], method: str = "POST") -> None:
        root, body = self._fetch(url, extra, method, f"{method} {url}")
        if root.tag != "Response":
            raise CallFailed(f"{method} {url} answered <{root.tag}>, not <Response>")
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
                inputs = verb.get("input", "dtmf").split()
                num_digits = verb.get("numDigits")
                self.waiting = Waiting(
                    action=urljoin(base, verb.get("action") or base),
                    num_digits=int(num_digits) if num_digits else None,
                    finish_on_key=verb.get("finishOnKey", "#"),
                    rest=verbs[i + 1:], base=base,
                    speech="speech" in inputs, dtmf="dtmf" in inputs,
                    on_empty=verb.get("actionOnEmptyResult") == "true", method=_method(verb),
                )
                self._drain()
                return
            elif verb.tag == "Record":
                self.waiting = Waiting(
                    action=urljoin(base, verb.get("action") or base), num_digits=None,
                    finish_on_key=verb.get("finishOnKey", "1234567890*#"), rest=verbs[i + 1:],
                    base=base, verb="Record", method=_method(verb),
                )
                self._drain()
                return
            elif verb.tag == "Redirect":
                self._redirects += 1
                if self._redirects > MAX_REDIRECTS:
                    raise CallFailed(f"more than {MAX_REDIRECTS} <Redirect>s in a row: a loop")
                self._post(urljoin(base, (verb.text or "").strip() or base), {}, _method(verb))
                return
            elif verb.tag == "Dial":
                self._drop_typeahead()
                self.transferred = True
                numbers = [((n.text or "").strip(), n.get("url"), _method(n)) for n in verb]
                action = verb.get("action")
                self.dialing = Dialing(urljoin(base, action) if action else None, base, numbers,
                                       verbs[i + 1:], _method(verb))
                self.transcript.append("< (transfer to " + ", ".join(n for n, _, _ in numbers) + ")")
                return
            elif verb.tag == "Enqueue":
                self._drop_typeahead()
                self.transferred = True
                action, wait_url = verb.get("action"), verb.get("waitUrl")
                wait_method = (verb.get("waitUrlMethod") or "POST").upper()
                if wait_method not in ("GET", "POST"):
                    raise CallFailed(f"<Enqueue waitUrlMethod={wait_method!r}>: Twilio requests with GET or POST only")
                queued = Queued(urljoin(base, action) if action else None, (verb.text or "").strip(),
                                base, verbs[i + 1:], _method(verb), urljoin(base, wait_url) if wait_url else None,
                                wait_method)
                self.transcript.append(f"< (queued in {queued.name})")
                self._enqueue(queued)
                return
            elif verb.tag == "Hangup":
                self.hang_up()
                return
            elif verb.tag == "Pause":
                continue
            else:
                raise CallFailed(f"unsupported TwiML verb <{verb.tag}>")
        if not self.dialing and not self.waiting and not self.queued:
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

    def _need_gather(self, what: str) -> Waiting:
        if self.waiting is None:
            state = ("ended" if self.ended else "being transferred" if self.dialing
                     else "in a queue" if self.queued else "not listening")
            raise CallFailed(f"the call is {state}: no <Gather> or <Record> to hear {what}")
        return self.waiting

    def _drop_typeahead(self) -> None:
        """Keys typed ahead that reach no <Gather>: kept aside, for the runner to report."""
        if self._typeahead:
            self.unused_keys.append(self._typeahead)
            self.transcript.append(f"< (nothing took the keys {self._typeahead})")
            self._typeahead = ""

    def _drain(self) -> None:
        """Feed buffered keys to the waiting <Gather> (or <Record>) while they complete it."""
        while self.waiting is not None and self._typeahead:
            w = self.waiting
            keys = self._typeahead
            if w.verb == "Record":
                cut = next((i for i, k in enumerate(keys) if k in w.finish_on_key), None)
                if cut is None:
                    self._typeahead = ""  # tones in the recording, which goes on
                    return
                # Ended by a key before anything was said: an empty recording, so Twilio does
                # not request the action and goes on with the verbs after the <Record>.
                self._typeahead = keys[cut + 1:]
                self.waiting = None
                self._run(w.rest, w.base, fresh=True)
                continue
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
        if self.ended or self.dialing or (self.queued and self.waiting is None):
            self._drop_typeahead()

    def _submit(self, w: Waiting, digits: str) -> None:
        self.waiting = None
        if w.in_queue and self.queued is not None:  # keys while waiting: the action's document plays in the queue
            if digits or w.on_empty:
                self._fetch_wait(w.action, {"Digits": digits}, w.method, with_queue=False)
            else:
                self.queues.advance(self.queued.ends_at - self.queues.clock)
            return
        if digits or w.on_empty:
            self._post(w.action, {"Digits": digits}, w.method)
        else:  # an empty result falls through like silence
            self._run(w.rest, w.base, fresh=True)


def queue_sid(name: str) -> str:
    """Return the SID Twilio gives a queue (QU + 32 hex digits), the same for the same name."""
    return "QU" + uuid.uuid5(uuid.NAMESPACE_URL, f"queue:{name}").hex


@dataclass
class Agent:
    """An agent's phone or Twilio Client taking the next caller from a queue: it calls the
    hotline's /voice/queue/next (a signed webhook of the agent's own call) and follows its
    <Dial><Queue>: the first caller of that queue (in the same `Queues`) is connected."""

    transport: Transport
    auth_token: str
    queues: Queues
    base_url: str = "http://127.0.0.1:8000"
    number: str = "+8653200000000"  # the agent's From (agent.queue_takers lists who may take callers)
    line: str = "+8653200000001"  # the number the agent dials (To)
    catalogue: Catalogue | None = None
    heard: list[Heard] = field(default_factory=list)
    twiml: str = ""
    call_sid: str = ""

    def take(self, hotline: str | None = None) -> Phone | None:
        """Call /voice/queue/next (`?hotline=` when given): hear what it says, then dial the queue
        it names. Return the caller connected, or None (nobody waited: the <Dial> times out)."""
        self.call_sid = "CA" + uuid.uuid4().hex
        url = urljoin(self.base_url, "/voice/queue/next") + (f"?{urlencode({'hotline': hotline})}" if hotline else "")
        form = {"CallSid": self.call_sid, "AccountSid": "AC" + uuid.uuid4().hex, "From": self.number, "To": self.line,
                "Caller": self.number, "Called": self.line, "CallStatus": "in-progress", "Direction": "inbound",
                "ApiVersion": "2010-04-01"}
        sig = RequestValidator(self.auth_token).compute_signature(url, form)
        status, body = self.transport.post(url, form, {"X-Twilio-Signature": sig})
        if status != 200:
            raise CallFailed(f"POST {url} answered {status}: {body[:200]}")
        self.twiml = body
        try:
            root = ET.fromstring(body)
        except ET.ParseError as err:
            raise CallFailed(f"POST {url} answered unparsable TwiML: {err}") from err
        for verb in root:
            if verb.tag in ("Say", "Play"):
                self.heard.append(heard_in(verb, self.catalogue))
            elif verb.tag == "Hangup":
                return None
            elif verb.tag == "Dial":
                queue = next((n for n in verb if n.tag == "Queue"), None)
                if queue is None:
                    raise CallFailed("the agent's <Dial> names no <Queue>")
                caller = self.queues.first((queue.text or "").strip())
                if caller is None:
                    continue  # nobody waits: the <Dial> times out, the document goes on
                caller._taken(self, queue.get("url"), _method(queue), self.call_sid)
                return caller
            elif verb.tag != "Pause":
                raise CallFailed(f"unsupported TwiML verb <{verb.tag}> on the agent's call")
        return None
