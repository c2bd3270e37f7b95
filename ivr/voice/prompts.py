"""The prompt catalogue: prompt id -> Mandarin template, parsed once, and its reverse matcher."""
from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from models.vocabulary import label_id

LABEL_PREFIX = "label."
FORMATS = ("text", "digits", "date", "status", "phone", "secret")
SECRET_FORMATS = ("phone", "secret")  # read back in groups, digit by digit; hidden in the call's record


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt: literal text, or a value read from the call in a format."""

    text: str = ""
    field: str | None = None
    fmt: str = "text"


class CatalogueError(Exception):
    """The catalogue is missing a prompt or holds a malformed one."""


def chinese_date(value: Any) -> str:
    """Say a date the way Mandarin prompts do: 2026年12月5日."""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        value = value.date()
    return f"{value.year}年{value.month}月{value.day}日"


def phone_groups(value: Any) -> str:
    """Group a Chinese number for reading: mobiles 3-4-4, fixed lines area code then the rest."""
    digits = str(value or "").removeprefix("+86")
    if len(digits) == 11 and digits.startswith("1"):
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    area = 2 if digits[:2] in ("10", "20", "21", "22", "23", "24", "25", "27", "28", "29") else 3
    return f"0{digits[:area]} {digits[area:]}" if digits else ""


def mask_secret(segment: Segment) -> Segment:
    """Return a phone segment with its digits hidden, for the recorded copy of a TwiML answer."""
    return Segment(text=" ".join("*" * len(g) for g in segment.text.split()), fmt=segment.fmt)


class Catalogue:
    """Prompt templates by id, parsed when loaded; audio recordings where they exist."""

    def __init__(self, texts: Mapping[str, str], audio_ids: Iterable[str] = ()):
        self.texts = dict(texts)
        self.templates = {pid: self._parse(pid, text) for pid, text in self.texts.items()}
        self.audio = {pid for pid in audio_ids if pid in self.texts and not self._has_fields(pid)}
        # Labels (label.*) are read in the console, never heard: not matched against speech.
        self._matchers = [(pid, self._regex(segs)) for pid, segs in self.templates.items()
                          if not pid.startswith(LABEL_PREFIX)]
        # Longest literal first, so a prompt that embeds another's text is preferred.
        self._matchers.sort(key=lambda m: -sum(len(s.text) for s in self.templates[m[0]]))

    @classmethod
    def load(cls, path: str | Path, audio_dir: str | Path | None = None) -> Catalogue:
        """Load a YAML catalogue and note which prompts have a recording."""
        texts = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
            raise CatalogueError(f"{path}: expected a mapping of prompt id to text")
        audio: list[str] = []
        if audio_dir and Path(audio_dir).is_dir():
            audio = [p.stem for p in Path(audio_dir).glob("*.wav")]
        return cls(texts, audio)

    def _parse(self, pid: str, text: str) -> tuple[Segment, ...]:
        segs: list[Segment] = []
        for literal, field, fmt, _conv in string.Formatter().parse(text):
            if literal:
                segs.append(Segment(text=literal))
            if field is not None:
                fmt = fmt or "text"
                if fmt not in FORMATS and "." not in fmt:  # a dotted format names a prompt prefix
                    raise CatalogueError(f"prompt {pid!r}: unknown format {fmt!r}")
                segs.append(Segment(field=field, fmt=fmt))
        return tuple(segs)

    def _has_fields(self, pid: str) -> bool:
        return any(s.field for s in self.templates[pid])

    def is_secret(self, pid: str) -> bool:
        """Tell whether a prompt reads back a phone number (hidden in the call's record)."""
        return any(s.fmt in SECRET_FORMATS for s in self.templates.get(pid, ()))

    def label(self, kind: str, code: str | None) -> str:
        """Return the Mandarin label of a vocabulary code (models.vocabulary), or the code itself."""
        if code is None:
            return "—"
        return self.texts.get(label_id(kind, code), code)

    def missing(self, ids: Iterable[str]) -> set[str]:
        """Return the ids that have no prompt."""
        return {pid for pid in ids if pid not in self.texts}

    def fill(self, pid: str, values: Mapping[str, Any]) -> list[Segment]:
        """Return the prompt's pieces with the call's values in place, each keeping its format."""
        out = []
        for seg in self.templates[pid]:
            if seg.field is None:
                out.append(seg)
                continue
            value = values.get(seg.field)
            if seg.fmt == "date":
                out.append(Segment(text=chinese_date(value) if value else ""))
            elif seg.fmt == "phone":
                out.append(Segment(text=phone_groups(value), fmt="phone"))
            elif seg.fmt == "secret":
                text = str(value or "")
                out.append(Segment(text=f"{text[:6]} {text[6:14]} {text[14:]}".strip(), fmt="secret"))
            elif seg.fmt == "status":
                out.append(Segment(text=self.texts[f"status.name.{value}"]))
            elif "." in seg.fmt:  # {kind:account.kind} says the prompt account.kind.<value>
                out.append(Segment(text=self.texts[f"{seg.fmt}.{value}"]))
            else:
                out.append(Segment(text="" if value is None else str(value), fmt=seg.fmt))
        return out

    def text(self, pid: str, values: Mapping[str, Any]) -> str:
        """Return the prompt as plain text with the values in place."""
        return "".join(s.text for s in self.fill(pid, values))

    @staticmethod
    def _regex(segs: tuple[Segment, ...]) -> re.Pattern[str]:
        parts = [re.escape(s.text) if s.field is None else "(.+?)" for s in segs]
        return re.compile("^" + "".join(parts) + "$", re.S)

    def identify(self, spoken: str) -> str | None:
        """Return the id of the prompt a spoken text came from, or None."""
        for pid, rx in self._matchers:
            if rx.match(spoken):
                return pid
        return None
