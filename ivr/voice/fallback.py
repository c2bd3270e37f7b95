"""The number's "primary handler fails" URL: an answer from the configuration alone, no database.

Twilio requests `POST /voice/fallback` when the call's own webhook failed (an error status, a
timeout, TwiML it could not read), with the usual fields plus ErrorCode and ErrorUrl. Whatever is
wrong — the database stopped, its file gone, a worker stuck — this answer needs none of it: the
hotline called (`To`, mapped by `hotlines.numbers`), its staffed hours on the official calendar
(chinesecalendar + `calendar`), the prompt catalogue and the voice, all read when the app was built.

While agents work: an apology, then the agents' `<Dial>` (`agent.dial`, `agent.timeout`, the noun
`agent.leg` names) whose action, `POST /voice/fallback/dial`, says goodbye after an agent's call or
that nobody could answer. With `agent.leg: queue` it is a plain `<Dial>` too: the queue's wait URL
and the agents' /voice/queue/next read the database, so the callers of a failed hotline ring
`agent.queue_takers` (by default `agent.dial`) directly, up to ten at once. No whisper
(`<Number url>`): /voice/whisper reads the call's record, which does not exist here. Out of hours:
the apology, the staffed hours and a goodbye.

If even this fails (a prompt the catalogue cannot fill), the caller hears `MINIMAL_TWIML`, a fixed
Mandarin apology: never a 500.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from twilio.twiml.voice_response import VoiceResponse

from ivr.config import Settings
from ivr.monitoring import logs
from ivr.voice import fields
from ivr.voice.twiml import AUDIO_URL, Renderer
from models.clock import utcnow
from models.hours import Hotline
from models.identity import mask_phone

log = logging.getLogger(__name__)

DIAL_ACTION = "/voice/fallback/dial"  # the fallback <Dial>'s action: answered or not, from DialCallStatus alone
# What the fallback says besides prompts the flow already has (the catalogue must hold each).
FALLBACK_PROMPTS = ("fallback.apology", "fallback.hours", "fallback.call_later")
SAID_OPEN = ("fallback.apology", "agent.connecting")
SAID_CLOSED = ("fallback.apology", "fallback.hours", "common.goodbye")
SAID_UNANSWERED = ("agent.unavailable", "fallback.call_later", "common.goodbye")
SAID_AFTER_AGENT = ("common.goodbye",)
PROMPTS = frozenset(SAID_OPEN + SAID_CLOSED + SAID_UNANSWERED + SAID_AFTER_AGENT)
MAX_TAKERS = 10  # Twilio rings at most ten nouns of one <Dial> at once
# The last resort, built by hand: no catalogue, no settings, no library.
MINIMAL_TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response>'
                 '<Say language="cmn-CN">很抱歉，系统暂时出现故障，请您稍后再拨。</Say><Hangup /></Response>')
ANSWERED = ("completed", "answered")


class Fallback:
    """The fallback's answers, from the settings and the catalogue (through the renderer) alone."""

    def __init__(self, settings: Settings, renderer: Renderer):
        self.settings = settings
        self.renderer = renderer

    def hotline(self, dialled: str) -> Hotline:
        """Return the hotline a dialled number belongs to (the default one for any other)."""
        hotlines = self.settings.hotlines
        return hotlines.get("".join(dialled.split())) or hotlines[self.settings.default_hotline]

    def answer(self, form: Mapping[str, str]) -> str:
        """Answer Twilio's fallback request: log what failed, then the apology and the agents'
        <Dial> while they work, or the staffed hours and a goodbye."""
        hotline = self.hotline(form.get("To", ""))
        staffed = hotline.staffed(utcnow().astimezone(self.settings.tz), self.settings.calendar)
        log.warning("fallback answered call %s to hotline %s from %s (%s): Twilio error %s at %s",
                    form.get("CallSid", "") or "-", hotline.name, mask_phone(form.get("From")) or "-",
                    "agents on duty" if staffed else "out of staffed hours", error_code(form.get("ErrorCode")),
                    error_url(form.get("ErrorUrl")))
        r = VoiceResponse()
        if not staffed:
            self._say(r, SAID_CLOSED, hotline)
            r.hangup()
            return str(r.to_xml())
        self._say(r, SAID_OPEN, hotline)
        dial = r.dial(action=DIAL_ACTION, method="POST", timeout=self.settings.agent_timeout)
        for noun, address in self.agents():
            if noun == "sip":
                dial.sip(address)
            elif noun == "client":
                dial.client().identity(address)
            else:
                dial.number(address)
        return str(r.to_xml())

    def dial_done(self, form: Mapping[str, str]) -> str:
        """Answer the fallback <Dial>'s end: goodbye after an agent's call, else that nobody could
        answer, to call again later, and goodbye."""
        hotline = self.hotline(form.get("To", ""))
        status = fields.text(form.get("DialCallStatus"), 32).strip()
        r = VoiceResponse()
        self._say(r, SAID_AFTER_AGENT if status in ANSWERED else SAID_UNANSWERED, hotline)
        r.hangup()
        return str(r.to_xml())

    def agents(self) -> list[tuple[str, str]]:
        """Return the <Dial>'s nouns: (number | sip | client, address). `agent.leg` number, sip or
        client: `agent.dial` as the normal transfer dials it; queue: every `agent.queue_takers`
        entry (`client:NAME` a client, `sip:…` a SIP address, else a number), the first ten."""
        leg = self.settings.agent_leg
        if leg != "queue":
            return [(leg, self.settings.agent_dial)]
        out: list[tuple[str, str]] = []
        for taker in self.settings.queue.takers[:MAX_TAKERS]:
            if taker.startswith("client:"):
                out.append(("client", taker.removeprefix("client:")))
            elif taker.startswith("sip:"):
                out.append(("sip", taker))
            else:
                out.append(("number", taker))
        return out or [("number", self.settings.agent_dial)]

    def _say(self, parent: VoiceResponse, ids: tuple[str, ...], hotline: Hotline) -> None:
        values = {"hours_text": hotline.spoken_hours, "hotline": hotline.name}
        for pid in ids:
            if pid in self.renderer.catalogue.audio:  # a recording, served as a file (/prompts/audio/)
                parent.play(f"{AUDIO_URL}{pid}.wav")
            else:
                parent.append(self.renderer.say(pid, values))


def error_code(raw: str | None) -> str:
    """Return Twilio's ErrorCode as logged: its digits (11200, 12100 …), or "-"."""
    code = "".join(ch for ch in fields.text(raw, 16) if ch.isascii() and ch.isdigit())
    return code or "-"


def error_url(raw: str | None) -> str:
    """Return Twilio's ErrorUrl as logged: cut short, every long run of digits masked."""
    return logs.mask(fields.text(raw, 200).strip()) or "-"
