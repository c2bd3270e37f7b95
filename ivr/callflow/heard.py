"""What a TwiML answer makes the caller hear: its <Say> and <Play> verbs, in order, <Gather>s included.

Pure (the standard library's XML parser): the simulator reads the hotline's answers with it, and
the console reads the recorded ones (`call_events.twiml`) to show a call turn by turn. A <Say> is
traced back to its prompt id through the catalogue (`identify`); a <Play> names its recording.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Protocol


class Identifies(Protocol):
    """What tracing spoken text back to its prompt needs of the catalogue (ivr.voice.prompts.Catalogue)."""

    def identify(self, text: str) -> str | None: ...


@dataclass
class Heard:
    """One thing the caller heard: the prompt id (when known), its text, and the verb."""

    prompt: str | None
    text: str
    verb: str = "Say"


def heard_in(el: ET.Element, catalogue: Identifies | None) -> Heard:
    """Return what the caller hears from a <Say> or <Play> element."""
    if el.tag == "Play":
        url = (el.text or "").strip()
        return Heard(url.rsplit("/", 1)[-1].removesuffix(".wav"), f"[{url}]", "Play")
    text = "".join(el.itertext())
    return Heard(catalogue.identify(text) if catalogue else None, text)


def heard_in_twiml(twiml: str, catalogue: Identifies | None) -> list[Heard]:
    """Return everything a TwiML document makes the caller hear, Gather contents included."""
    root = ET.fromstring(twiml)  # noqa: S314  (the hotline's own answer: recorded, or the server under test)
    return [heard_in(el, catalogue) for el in root.iter() if el.tag in ("Say", "Play")]
