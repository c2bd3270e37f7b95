"""Render a turn of the call flow as TwiML: Say or Play, Gather nesting, Dial, Hangup."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import Say, VoiceResponse

from ivr.callflow.flow import AGENT_FIRST_GREETING
from ivr.callflow.machine import Entry, Hangup, Menu, Record, Spoken, Transfer, Turn
from ivr.config import Settings
from ivr.voice.prompts import SECRET_FORMATS, Catalogue, mask_secret

AUDIO_URL = "/prompts/audio/"
WHISPER_URL = "/voice/whisper"
QUEUE_WAIT_URL = "/voice/queue/wait"  # the <Enqueue waitUrl>, and its <Gather>'s action (1: a call-back)
QUEUE_RESULT_URL = "/voice/queue/result"  # the <Enqueue action>: how the wait ended (QueueResult)
QUEUE_KEY_TIMEOUT = 1  # the wait's <Gather> listens this long after the announcement and the music or silence
TURN_MARK = "@@turn@@"  # stands for the next turn number in a cached document's action URLs
CACHED_DOCUMENTS = 4096  # most turns are the same few menus; values (dates, last digits) vary the rest
MARKS = {Menu: 2, Entry: 2, Record: 2, Transfer: 1, Hangup: 0}  # action URLs, each with the turn number


class Renderer:
    """Turns the machine's turns into TwiML documents."""

    def __init__(self, catalogue: Catalogue, settings: Settings):
        self.catalogue = catalogue
        self.settings = settings
        # How long each agent-first hotline's greeting waits for the 1, by the hotline's name.
        self.greeting_seconds = {h.name: h.agent_first_seconds for h in settings.hotlines.values()
                                 if h.entry == "agent_first"}
        self._documents: OrderedDict[Any, list[str]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # gunicorn's threaded workers share a renderer
        self.forget()

    def forget(self) -> None:
        """Drop the documents built so far (the catalogue changed: tests; the app itself never edits it)."""
        with self._lock:
            self.fields = {pid: tuple(s.field for s in segs if s.field)
                           for pid, segs in self.catalogue.templates.items()}
            self._documents.clear()

    def render(self, turn: Turn, next_turn: int, masked: bool = False, hotline: str | None = None) -> str:
        """Return the TwiML for a turn; action URLs carry the next turn number.

        masked: the copy kept in the call's record, phone numbers read back hidden.
        hotline: the call's hotline (its name), whose queue a transfer puts the caller in (agent.leg: queue).
        A document is built once for what it says (the prompts and the values they use) and
        kept, split where the turn number goes: the next time costs a join. A turn that reads
        back a number (an ID, a phone) is never kept: it is said once, and stays out of memory.
        """
        queue = self.queue_name(hotline) if turn.kind is Transfer and self.settings.agent_leg == "queue" else None
        key = None if self.has_secret(turn) else self._key(turn, masked, queue)
        if key is None:
            return self._build(turn, next_turn, masked, queue)
        with self._lock:
            parts = self._documents.get(key)
            if parts is not None:
                self._documents.move_to_end(key)
        if parts is None:
            parts = self._build(turn, TURN_MARK, masked, queue).split(TURN_MARK)
            if len(parts) != MARKS[turn.kind] + 1:  # a value held the mark itself: build it as it is
                return self._build(turn, next_turn, masked, queue)
            with self._lock:
                self._documents[key] = parts
                if len(self._documents) > CACHED_DOCUMENTS:
                    self._documents.popitem(last=False)
        return str(next_turn).join(parts)

    def _key(self, turn: Turn, masked: bool, queue: str | None = None) -> Any:
        """Return what decides a turn's document, or None when a value cannot be a key."""
        try:
            spoken = tuple((sp.id, tuple((v.__class__, v) for v in (sp.values.get(f) for f in self.fields[sp.id])))
                           for sp in turn.spoken)
            key = (turn.kind, turn.hints, masked, self.menu_timeout(turn) if turn.kind is Menu else None, queue,
                   turn.elder, spoken)
            hash(key)
        except (KeyError, TypeError):
            return None
        return key

    def _build(self, turn: Turn, next_turn: int | str, masked: bool, queue: str | None = None) -> str:
        r = VoiceResponse()
        step = f"/voice/step?t={next_turn}"
        if turn.kind in (Menu, Entry):
            listen = self._speech(turn)
            if turn.kind is Menu:
                # finishOnKey="" lets # be a key like any other in a menu.
                g = r.gather(num_digits=1, finish_on_key="", timeout=self.menu_timeout(turn),
                             action=step, method="POST", action_on_empty_result=False, **listen)
            else:
                g = r.gather(finish_on_key="#", timeout=self.settings.entry_timeout + self._extra(turn),
                             action=step, method="POST", action_on_empty_result=False, **listen)
            self._speak(g, turn.spoken, masked, slow=turn.elder)
            # Twilio goes on to the next verb when the caller stays silent.
            r.redirect(f"{step}&e=silence", method="POST")
        elif turn.kind is Record:
            self._speak(r, turn.spoken, masked, slow=turn.elder)
            r.record(action=step, method="POST", max_length=60, finish_on_key="#", play_beep=True, timeout=5)
            r.redirect(f"{step}&e=silence", method="POST")  # no message: Twilio goes on without the action
        elif turn.kind is Transfer and queue is not None:
            self._speak(r, turn.spoken, masked, slow=turn.elder)
            r.enqueue(queue, action=f"{QUEUE_RESULT_URL}?t={next_turn}", method="POST",
                      wait_url=QUEUE_WAIT_URL, wait_url_method="POST")
        elif turn.kind is Transfer:
            self._speak(r, turn.spoken, masked, slow=turn.elder)
            d = r.dial(action=f"/voice/dial?t={next_turn}", method="POST",
                       timeout=self.settings.agent_timeout)
            self._agent_leg(d)
        elif turn.kind is Hangup:
            self._speak(r, turn.spoken, masked, slow=turn.elder)
            r.hangup()
        else:
            raise TypeError(f"cannot render a {turn.kind.__name__} state")
        xml: str = r.to_xml()
        return xml

    def menu_timeout(self, turn: Turn) -> int:
        """Return how long a menu waits for a key: gather.menu_timeout, but an agent-first hotline's
        greeting waits that hotline's agent_first_seconds for the 1 before the caller is put through;
        an elder caller elder.extra_timeout longer, either way."""
        if turn.state == AGENT_FIRST_GREETING:
            hotline = next((sp.values.get("hotline") for sp in turn.spoken if "hotline" in sp.values), None)
            if hotline in self.greeting_seconds:
                return self.greeting_seconds[hotline] + self._extra(turn)
        return self.settings.menu_timeout + self._extra(turn)

    def _extra(self, turn: Turn) -> int:
        """Return the seconds an elder caller's <Gather> waits longer (elder.extra_timeout), else 0."""
        return self.settings.elder.extra_timeout if turn.elder else 0

    def _speech(self, turn: Turn) -> dict[str, Any]:
        """Return the <Gather> attributes: keypad only, or Mandarin speech too, with hints. The end of
        speech stays Twilio's own (speechTimeout auto), also for an elder caller: their longer
        `timeout` is the wait for a first key or word (and between keys)."""
        if turn.hints is None:
            return {"input": "dtmf"}
        return {"input": "dtmf speech", "language": self.settings.speech_language, "hints": turn.hints,
                "speech_timeout": "auto"}

    def has_secret(self, turn: Turn) -> bool:
        """Tell whether the turn reads back something the call's record must not keep."""
        return any(self.catalogue.is_secret(sp.id) for sp in turn.spoken)

    def _agent_leg(self, dial: Any) -> None:
        """Add the agents' number, SIP address or client; its whisper tells them who is calling."""
        leg, address = self.settings.agent_leg, self.settings.agent_dial
        if leg == "sip":
            dial.sip(address, url=WHISPER_URL)
        elif leg == "client":
            dial.client(url=WHISPER_URL).identity(address)
        else:
            dial.number(address, url=WHISPER_URL)

    def speech(self, spoken: list[Spoken], slow: bool = False) -> str:
        """Return a TwiML document that only speaks (the whisper to an agent; to a caller taken from
        the queue, `slow` for an elder caller)."""
        r = VoiceResponse()
        self._speak(r, spoken, slow=slow)
        xml: str = r.to_xml()
        return xml

    # -- the queue (agent.leg: queue) ---------------------------------------------------------------
    def queue_name(self, hotline: str | None) -> str:
        """Return the Twilio queue of a hotline (the default hotline's when it is not known)."""
        return self.settings.queue.of(hotline or self.settings.hotlines[self.settings.default_hotline].name)

    def queue_wait(self, spoken: list[Spoken], slow: bool = False) -> str:
        """Return what a caller waiting in the queue hears, once: the announcement (place, estimated
        wait, 1 for a call-back), then the music or silence, all inside a <Gather> for the 1. Twilio
        plays the wait URL's document again when it ends: an announcement every cycle. `slow`: an
        elder caller, said slower (the 1 is heard all through the cycle: its timeout stays)."""
        r = VoiceResponse()
        g = r.gather(input="dtmf", num_digits=1, timeout=QUEUE_KEY_TIMEOUT, action=QUEUE_WAIT_URL, method="POST",
                     action_on_empty_result=False)
        self._speak(g, spoken, slow=slow)
        if self.settings.queue.music:
            g.play(self.settings.queue.music)
        else:
            g.pause(length=self.settings.queue.pause_seconds)
        xml: str = r.to_xml()
        return xml

    def queue_leave(self) -> str:
        """Return the document that takes the caller out of the queue (<Leave>): the <Enqueue>'s
        action follows, with QueueResult leave."""
        r = VoiceResponse()
        r.leave()
        xml: str = r.to_xml()
        return xml

    def queue_take(self, spoken: list[Spoken], queue: str) -> str:
        """Return the TwiML of an agent's call taking the next caller from a queue: what the agent
        hears of that caller, then <Dial><Queue>, whose url Twilio fetches for the caller's end just
        before they are connected (/voice/whisper: it records that an agent answered)."""
        r = VoiceResponse()
        self._speak(r, spoken)
        d = r.dial()
        d.queue(queue, url=WHISPER_URL)
        xml: str = r.to_xml()
        return xml

    def refuse(self, spoken: list[Spoken]) -> str:
        """Return a document that speaks and hangs up."""
        r = VoiceResponse()
        self._speak(r, spoken)
        r.hangup()
        xml: str = r.to_xml()
        return xml

    def nothing(self) -> str:
        """Return an empty document (an answer Twilio does not play: the caller has hung up)."""
        xml: str = VoiceResponse().to_xml()
        return xml

    def _speak(self, parent: Any, spoken: list[Spoken], masked: bool = False, slow: bool = False) -> None:
        """Add what is said: a recording where one exists, else a <Say>. `slow`: to an elder caller,
        every prompt a <Say> at elder.rate, recorded or not (a <Play> cannot be slowed down)."""
        rate = self.settings.elder.rate if slow else None
        for item in spoken:
            if rate is None and item.id in self.catalogue.audio:
                parent.play(f"{AUDIO_URL}{item.id}.wav")
                continue
            parent.append(self.say(item.id, item.values, masked, rate=rate))

    def say(self, pid: str, values: Mapping[str, Any], masked: bool = False, rate: int | None = None) -> Say:
        """Return a <Say> for one prompt; digits to be heard one by one get SSML say-as. `rate`: the
        whole of it inside SSML <prosody rate="N%"> (Amazon Polly's voices: 20-200 % of the normal rate)."""
        say = Say(voice=self.settings.voice, language=self.settings.language)
        words: Any = say if rate is None else say.prosody(rate=f"{rate}%")
        text = ""  # the twilio library keeps only the last text after a child: join runs first
        for seg in self.catalogue.fill(pid, values):
            if seg.fmt in SECRET_FORMATS and masked:
                seg = mask_secret(seg)
            if seg.fmt in ("digits", *SECRET_FORMATS):
                if text:
                    words.append(text)
                    text = ""
                groups = seg.text.split()
                for i, group in enumerate(groups):  # a phone number: 3-4-4 groups, each digit by digit
                    words.say_as(group, interpret_as="digits")
                    if i < len(groups) - 1:
                        words.append("，")
            else:
                text += seg.text
        if text:
            words.append(text)
        return say
