"""Render a turn of the call flow as TwiML: Say or Play, Gather nesting, Dial, Hangup."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import Say, VoiceResponse

from ivr.config import Settings
from ivr.machine import Entry, Hangup, Menu, Spoken, Transfer, Turn
from ivr.prompts import Catalogue

AUDIO_URL = "/prompts/audio/"


class Renderer:
    """Turns the machine's turns into TwiML documents."""

    def __init__(self, catalogue: Catalogue, settings: Settings):
        self.catalogue = catalogue
        self.settings = settings

    def render(self, turn: Turn, next_turn: int) -> str:
        """Return the TwiML for a turn; action URLs carry the next turn number."""
        r = VoiceResponse()
        step = f"/voice/step?t={next_turn}"
        if turn.kind in (Menu, Entry):
            if turn.kind is Menu:
                # finishOnKey="" lets # be a key like any other in a menu.
                g = r.gather(input="dtmf", num_digits=1, finish_on_key="", timeout=self.settings.menu_timeout,
                             action=step, method="POST", action_on_empty_result=False)
            else:
                g = r.gather(input="dtmf", finish_on_key="#", timeout=self.settings.entry_timeout,
                             action=step, method="POST", action_on_empty_result=False)
            self._speak(g, turn.spoken)
            # Twilio goes on to the next verb when the caller stays silent.
            r.redirect(f"{step}&e=silence", method="POST")
        elif turn.kind is Transfer:
            self._speak(r, turn.spoken)
            d = r.dial(action=f"/voice/dial?t={next_turn}", method="POST",
                       timeout=self.settings.agent_timeout)
            d.number(self.settings.agent_dial)
        elif turn.kind is Hangup:
            self._speak(r, turn.spoken)
            r.hangup()
        else:
            raise TypeError(f"cannot render a {turn.kind.__name__} state")
        return r.to_xml()

    def _speak(self, parent: Any, spoken: list[Spoken]) -> None:
        for item in spoken:
            if item.id in self.catalogue.audio:
                parent.play(f"{AUDIO_URL}{item.id}.wav")
                continue
            parent.append(self.say(item.id, item.values))

    def say(self, pid: str, values: Mapping[str, Any]) -> Say:
        """Return a <Say> for one prompt; digits to be heard one by one get SSML say-as."""
        say = Say(voice=self.settings.voice, language=self.settings.language)
        text = ""  # the twilio library keeps only the last text after a child: join runs first
        for seg in self.catalogue.fill(pid, values):
            if seg.fmt == "digits":
                if text:
                    say.append(text)
                    text = ""
                say.say_as(seg.text, interpret_as="digits")
            else:
                text += seg.text
        if text:
            say.append(text)
        return say
