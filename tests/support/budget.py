"""The prompt budget: how long a caller listens between two inputs, counted on the TwiML they get.

How it counts (the figures of issue 15: Mandarin text-to-speech at 4.5 characters a second, a
key 0.35 s):

- A *stretch* is what one TwiML document makes the caller hear before they can answer it: every
  `<Say>` of the document, those outside a `<Gather>` and the prompts inside it. Every document the
  flow answers ends waiting for the caller (a `<Gather>`, a `<Record>`), at an agent (`<Dial>`,
  `<Enqueue>`) or with `<Hangup>`, so one document is one stretch.
- Its length is the characters said: letters, digits and Chinese characters (`str.isalnum`),
  digits read one by one included; punctuation and spaces are not said and not counted.
- The limit is 15 s, or 25 s for a stretch that holds the main menu with its eight services
  (the greeting, a "closed hours" notice or a lead-in included).

`walk(app)` builds every stretch the declared flow (`ivr.callflow.flow`) can make a caller hear:
for every way into every waiting state — each menu option, the "otherwise" key, *, 9 (said again
without the apologies the flow does not repeat), 0 while agents work and outside their hours,
silence and wrong keys and words not understood (the re-prompt's lead-in), giving up, an entry's
data, a recording, the agent leg's results, a new call, a call the hotline lost track of, a system
failure — following every outcome of the actions on the way and saying what those transitions say.
Prompt ids with placeholders take each of their variants, lists (history, account records) are as
long as the actions read them, and every value a prompt reads takes the longest reference value in
`REFERENCE` (config.yaml's staffed hours for `hours_text`). Each stretch is rendered by the app's
own renderer, exactly as a webhook would answer it, and counted on that TwiML.
"""
from __future__ import annotations

import re
import string
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ivr.callflow.actions.account import PAGE as ACCOUNT_PAGE
from ivr.callflow.actions.cards import HISTORY_PAGE
from ivr.callflow.machine import (
    AGENT_KEY,
    BACK_KEY,
    REPEAT_KEY,
    Action,
    Each,
    Entry,
    Go,
    Machine,
    Menu,
    Record,
    Spoken,
    Transfer,
    Turn,
    as_go,
    hints_for,
    keys_prompt,
)
from ivr.commands.demo import PHARMACIES
from ivr.voice.turns import wait_prompts
from models.medical import yuan_jiao
from models.vocabulary import CardStatus

CHARACTERS_A_SECOND = 4.5
KEY_SECONDS = 0.35
LIMIT = 15.0
MAIN_MENU_LIMIT = 25.0  # a stretch holding the main menu with its eight services, greeting included
MAIN_MENU = "main.menu"
STATUS_DETAIL = "status.detail."

# The longest value each placeholder of the catalogue may read, by field name (several: the longest
# counts). A new placeholder needs a value here, or walk() says so.
REFERENCE: dict[str, tuple[Any, ...]] = {
    "card_last4": ("0025",), "id_last4": ("0025",), "from_last4": ("5678",),
    "say_id": ("37020219850312002X",),
    "new_mobile": ("13912345678",), "callback_number": ("13912345678", "53288886666"),  # 0532 88886666
    "card_status": tuple(CardStatus), "status": tuple(CardStatus),
    "loss_expires_on": ("2026-12-28",), "expected_on": ("2026-12-28",), "date": ("2026-12-28",),
    "production_stage": ("accepted", "making", "bank_received", "outlet_ready"),
    "balance": (yuan_jiao(123456),), "amount": (yuan_jiao(123456),),
    "kind": ("credit", "debit", "refund"),
    "institution": tuple(PHARMACIES),
    "position": (12,), "minutes": (15,),
}
REPORT: list[str] = []  # the figures tests/test_prompt_budget.py found, for the terminal summary (conftest)
LISTS = {"history": HISTORY_PAGE, "records": ACCOUNT_PAGE}  # Each(...) items: as many as an action reads


def said_characters(text: str) -> int:
    """Return the characters text-to-speech says: letters, digits, Chinese characters."""
    return sum(1 for ch in text if ch.isalnum())


def seconds(characters: int) -> float:
    """Return how long the characters take to say."""
    return characters / CHARACTERS_A_SECOND


def heard_characters(twiml: str) -> tuple[int, int]:
    """Return the characters a TwiML document says: in all, and outside any <Gather> (heard even
    by a caller who keys ahead: a <Gather> stops speaking at the first key)."""
    root = ET.fromstring(twiml)
    total = outside = 0

    def visit(el: ET.Element, in_gather: bool) -> None:
        nonlocal total, outside
        if el.tag == "Say":
            n = said_characters("".join(el.itertext()))
            total += n
            outside += 0 if in_gather else n
            return
        for child in el:
            visit(child, in_gather or el.tag == "Gather")

    visit(root, False)
    return total, outside


@dataclass(frozen=True)
class Stretch:
    """What the caller hears between two inputs: how they got there, the state, the prompts."""

    how: str  # the input (or event) that led here, e.g. "main 1" or "auth_pin_check:ok"
    state: str
    prompts: tuple[str, ...]
    characters: int
    limit: float

    @property
    def seconds(self) -> float:
        return seconds(self.characters)

    @property
    def over(self) -> bool:
        return self.seconds > self.limit

    def line(self) -> str:
        flag = "  OVER" if self.over else ""
        return f"{self.seconds:5.1f} s / {self.limit:.0f} s  {self.state:<22} via {self.how}: {' + '.join(self.prompts)}{flag}"


def _fields(template: Iterable[Any]) -> list[tuple[str, str]]:
    return [(seg.field, seg.fmt) for seg in template if seg.field]


class Walker:
    """Every stretch of the declared flow, rendered by the app's renderer."""

    def __init__(self, app: Any) -> None:
        service = app.extensions["turns"]
        self.machine: Machine = service.machine
        self.renderer = service.renderer
        self.catalogue = self.renderer.catalogue
        self.hours = tuple(h.spoken_hours for h in service.settings.hotlines.values())
        self.hotlines = tuple(h.name for h in service.settings.hotlines.values())

    # -- values ---------------------------------------------------------------------------------
    def _candidates(self, name: str, fmt: str) -> tuple[Any, ...]:
        if name == "hours_text":
            return self.hours
        if name == "hotline":
            return self.hotlines
        if name not in REFERENCE:
            raise KeyError(f"no reference value for the placeholder {{{name}}}: add one to REFERENCE")
        return REFERENCE[name]

    def worst_values(self, pids: Iterable[str]) -> dict[str, Any]:
        """Return, for every field the prompts read, the value said longest."""
        pids = list(pids)
        fields = {name: fmt for pid in pids for name, fmt in _fields(self.catalogue.templates[pid])}
        values = {name: self._candidates(name, fmt)[0] for name, fmt in fields.items()}
        for name, fmt in fields.items():
            values[name] = max(self._candidates(name, fmt), key=lambda v, n=name: self._length(pids, {**values, n: v}))
        return values

    def _length(self, pids: list[str], values: Mapping[str, Any]) -> int:
        return sum(said_characters(s.text) for pid in pids for s in self.catalogue.fill(pid, values))

    # -- transitions ----------------------------------------------------------------------------
    def expand(self, pid: str, context: frozenset[str] = frozenset()) -> list[str]:
        """Return a prompt id with its placeholders replaced by each of their variants; where the
        way in names some (an action's outcome or argument: status_lookup:verbal_loss, the guide
        chosen), only those: a card's status detail is said of a card in that status."""
        out = [pid]
        for _, name, _, _ in string.Formatter().parse(pid):
            if name:
                variants = tuple(self.machine.variants[name])
                named = tuple(v for v in variants if any(v == c or v.startswith(c + "_") or v.startswith(c + ".")
                                                         for c in context))
                out = [p.replace("{" + name + "}", v) for p in out for v in (named or variants)]
        return out

    def arrivals(self, how: str, go: Go, depth: int = 0) -> list[tuple[str, str, tuple[str | Each, ...]]]:
        """Follow a transition through actions (every outcome) to the waiting states it reaches:
        (how, state, what is said on the way)."""
        st = self.machine.states[go.target]
        if not isinstance(st, Action):
            return [(how, go.target, tuple(go.say))]
        if depth > len(self.machine.states):
            return []
        out = []
        for outcome, target in st.outcomes.items():
            nxt = as_go(target)
            arg = f"({st.arg})" if st.arg else ""
            for h, state, say in self.arrivals(f"{how} > {go.target}{arg}:{outcome}", nxt, depth + 1):
                out.append((h, state, tuple(go.say) + say))
        return out

    def inputs(self) -> list[tuple[str, Go]]:
        """Every transition an input (or a call event) starts: (how, transition)."""
        m = self.machine
        out: list[tuple[str, Go]] = [("a new call", m.start), ("a call the hotline lost track of", m.resume),
                                     ("a system failure", m.failure)]
        if m.restart is not None:
            out.append(("a call in a state this release does not have", m.restart))
        for name, st in m.states.items():
            if isinstance(st, Menu):
                out += [(f"{name} {key}", as_go(t)) for key, t in st.options.items()]
                if st.otherwise is not None:
                    out.append((f"{name} other key", as_go(st.otherwise)))
                if st.back:
                    out.append((f"{name} {BACK_KEY}", Go(st.back)))
                if st.repeat:
                    out.append((f"{name} {REPEAT_KEY}", Go(st.repeat)))
                out.append((f"{name} {AGENT_KEY}", Go("agent")))
                out.append((f"{name} {AGENT_KEY} out of hours", Go(name, ("common.closed_hours",))))
                for lead in ("common.no_input", "common.invalid_key", "common.not_understood"):
                    out.append((f"{name} re-prompt", Go(name, (lead,))))
                out.append((f"{name} gives up", Go(st.give_up, tuple(st.give_up_say))))
            elif isinstance(st, Entry):
                out += [(f"{name} keyed", Go(st.next)), (f"{name} re-prompt", Go(name, ("common.no_input",))),
                        (f"{name} gives up", Go(st.give_up, ("common.too_many_misses",)))]
            elif isinstance(st, Record):
                out.append((f"{name} recorded", Go(st.next)))
            elif isinstance(st, Transfer):
                out += [(f"{name} answered", as_go(st.answered)), (f"{name} unanswered", as_go(st.unanswered))]
                if st.left is not None:
                    out.append((f"{name} left the queue", as_go(st.left)))
        return out

    # -- stretches ------------------------------------------------------------------------------
    def stretches(self) -> list[Stretch]:
        arrived: list[tuple[str, str, tuple[str | Each, ...]]] = []
        for how, go in self.inputs():
            arrived += self.arrivals(how, go)
        # 9 says again what was said on entering, less the apologies the flow does not repeat.
        unrepeated = self.machine.unrepeated
        arrived += [(f"{how} then {REPEAT_KEY}", state, tuple(p for p in say if p not in unrepeated))
                    for how, state, say in arrived
                    if isinstance(self.machine.states[state], Menu) and not self.machine.states[state].repeat]
        seen: dict[tuple[str, tuple[str, ...]], Stretch] = {}
        for how, state, say in arrived:
            for stretch in self._render(how, state, say):
                key = (stretch.state, stretch.prompts)
                if key not in seen or stretch.characters > seen[key].characters:
                    seen[key] = stretch
        seen.update({(s.state, s.prompts): s for s in self.queue_wait()})
        return sorted(seen.values(), key=lambda s: -s.seconds)

    def _render(self, how: str, name: str, say: tuple[str | Each, ...]) -> list[Stretch]:
        st = self.machine.states[name]
        prompts = list(say) + list(getattr(st, "prompts", ()))
        out = []
        closed = "common.closed_hours" in prompts
        for staffed in ((False,) if closed else (True, False)):
            keys = [keys_prompt(st, staffed)] if isinstance(st, Menu) and st.announce else []
            context = frozenset(w for step in how.removesuffix(f" then {REPEAT_KEY}").split(" > ")[1:]
                                for w in re.split(r"[():]", step)[1:] if w)
            for ids in self._variants(prompts + keys, context):
                spoken = self._spoken(ids)
                turn = Turn(state=name, spoken=spoken, kind=type(st), hints=hints_for(st))
                total, _ = heard_characters(self.renderer.render(turn, 1))
                labels = tuple(sp.id for sp in spoken)
                dedup = tuple(dict.fromkeys(labels))
                limit = MAIN_MENU_LIMIT if MAIN_MENU in labels else LIMIT
                out.append(Stretch(how, name, dedup, total, limit))
        return out

    def _variants(self, prompts: list[str | Each], context: frozenset[str]) -> list[list[str | Each]]:
        out: list[list[str | Each]] = [[]]
        for p in prompts:
            options: list[str | Each] = [p] if isinstance(p, Each) else list(self.expand(p, context))
            out = [o + [v] for o in out for v in options]
        return out

    def _spoken(self, ids: list[str | Each]) -> list[Spoken]:
        plain = [p for p in ids if isinstance(p, str)]
        values = self.worst_values(plain)
        for p in plain:  # a status's detail is said of a card in that status
            if p.startswith(STATUS_DETAIL):
                values["card_status"] = next(st for st in CardStatus if p.removeprefix(STATUS_DETAIL).startswith(st))
        out = []
        for p in ids:
            if isinstance(p, Each):
                item = self.worst_values([p.prompt])
                out += [Spoken(p.prompt, item) for _ in range(LISTS[p.items])]
            else:
                out.append(Spoken(p, values))
        return out

    def queue_wait(self) -> list[Stretch]:
        """A caller waiting in the queue: the announcement every cycle (not a state of the flow)."""
        out = []
        for position in (12, 1):
            spoken = wait_prompts(position, 15)
            total, _ = heard_characters(self.renderer.queue_wait(spoken))
            out.append(Stretch("waiting in the queue", "(queue wait)", tuple(s.id for s in spoken), total, LIMIT))
        return out


def walk(app: Any) -> list[Stretch]:
    """Return every stretch of the app's flow, longest first."""
    return Walker(app).stretches()

