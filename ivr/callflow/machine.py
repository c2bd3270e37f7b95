"""The call-flow machine: state kinds, validation when built, and one pure step function.

The phone tree itself is declared in `ivr.callflow.flow`. This module knows nothing of Flask, TwiML or
the ledger: actions are named, and the caller of `Machine.step` supplies what runs them.
"""
from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.callflow.calldata import CallData
from ivr.callflow.speech import BUILT_IN, confident_choice
from models.vocabulary import TransferReason

AGENT_KEY = "0"
REPEAT_KEY = "9"
BACK_KEY = "*"
# Elder callers (CallData.elder) hear the agent offered first in a menu while agents work: this
# prompt right before the menu's last prompt, the one naming its options ("人工服务请按0").
AGENT_FIRST_PROMPT = "keys.agent_first"
RESERVED_KEYS = {AGENT_KEY, REPEAT_KEY, BACK_KEY}
DIAL_ANSWERED = ("completed", "answered")  # DialCallStatus of a leg an agent took
# Twilio's QueueResult: an agent took the caller (then the call was bridged, perhaps redirected
# after), or the caller left the queue with <Leave> (the hotline answers that only to 1 while waiting).
QUEUE_ANSWERED = ("bridged", "redirected-from-bridged")
QUEUE_LEFT = ("leave",)


class FlowError(Exception):
    """The declared flow is not a valid phone tree."""


@dataclass(frozen=True)
class Each:
    """Say one prompt for every item of a list kept in the call's data."""

    prompt: str
    items: str

    def __str__(self) -> str:
        return f"{self.prompt} × {self.items}"


Prompt = str | Each
EACH_MARK = "each:"  # an Each kept in the call's data (what 9 says again): each:<items>:<prompt>


@dataclass(frozen=True)
class Go:
    """A transition: the prompts to say on the way, the target state, why (for transfers).

    What a state says about a result (a card's status, a record read back) is said on the way in,
    so that a re-prompt (silence, a wrong key, 0 out of hours) says the lead-in and the menu's
    options only; 9 says it all again."""

    target: str
    say: tuple[Prompt, ...] = ()
    reason: str | None = None
Target = str | Go


@dataclass(frozen=True)
class Menu:
    """Wait for one key. Built in everywhere: 9 repeats, 0 reaches an agent, * goes back."""

    prompts: tuple[Prompt, ...]
    options: Mapping[str, Target]
    otherwise: Target | None = None  # any other key; None: "wrong key" and the menu again
    back: str | None = "main"  # where * leads; None: * is a wrong key
    give_up: str = "agent"  # where repeated silence or wrong keys lead
    announce: bool = True  # end with the built-in keys (9, 0 while agents work, *) spoken
    reprompts: int | None = None  # None: the machine's default
    give_up_say: tuple[str, ...] = ("common.too_many_misses",)
    give_up_reason: str | None = None  # None: no_input or wrong_keys
    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # spoken keywords per key
    repeat: str | None = None  # where 9 leads instead of saying it all again (a read-back said once)
    # elder callers hear "人工服务请按0" before its options while agents work; False where the caller is
    # on the way to an agent anyway, or has just spoken to one (the rating)
    elder_agent_first: bool = True


@dataclass(frozen=True)
class Entry:
    """Collect keyed data ended by #. Keys are data here: * and 0 are characters, not commands."""

    prompts: tuple[Prompt, ...]
    next: str  # an Action that receives the keyed text
    redact: str  # what the keys are (id_number, pin): never stored as keyed
    give_up: str = "agent"
    speech: bool = False  # digits may be spoken (never for a PIN)


@dataclass(frozen=True)
class Action:
    """Run a named action and follow the transition named by its outcome."""

    run: str
    outcomes: Mapping[str, Target]
    arg: str | None = None


@dataclass(frozen=True)
class Record:
    """Record a short message from the caller; silence (no message) goes on all the same."""

    prompts: tuple[Prompt, ...]
    next: str  # an Action that receives the recording (or nothing)
    max_seconds: int = 60


@dataclass(frozen=True)
class Transfer:
    """Connect the caller to an agent (a <Dial>, or a queue: config.yaml agent.leg); then follow the
    result: the dial's DialCallStatus, or how the wait in the queue ended (its QueueResult)."""

    prompts: tuple[Prompt, ...]
    answered: Target
    unanswered: Target
    left: Target | None = None  # the caller left the queue for a call-back (1 while waiting); None: unanswered


@dataclass(frozen=True)
class Hangup:
    """Say the prompts and end the call."""

    prompts: tuple[Prompt, ...]


State = Menu | Entry | Record | Action | Transfer | Hangup
WAITING = (Menu, Entry, Record)


@dataclass(frozen=True)
class Event:
    """What the caller did: start, keys, silence, or the result of a dial."""

    kind: str  # start, resume, failure, keys, silence, speech, recorded, dial (DialCallStatus), queue (QueueResult)
    value: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. the recording's duration


@dataclass
class Spoken:
    """One prompt to speak, with the values its placeholders take."""

    id: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    """The machine's answer to one event: the new state and what the caller hears."""

    state: str
    spoken: list[Spoken]
    kind: type  # the new state's kind: Menu, Entry, Transfer or Hangup
    path: list[str] = field(default_factory=list)  # the states passed through, actions included
    hints: str | None = None  # listen for speech too, with these hints; None: keypad only
    elder: bool = False  # an elder caller (CallData.elder): slower speech, longer silences


RunAction = Callable[[str, "str | None", CallData, Event], str]


def keys_prompt(menu: Menu, staffed: bool) -> str:
    """Return the prompt announcing a menu's built-in keys: 9, 0 while agents work (unless already
    offered first), * back (not announced where an option of the menu already leads there: * still
    works)."""
    back = menu.back is not None and menu.back not in {as_go(t).target for t in menu.options.values()}
    return f"keys.{'agent' if staffed else 'noagent'}{'_back' if back else ''}"


def kept(prompt: Prompt) -> str:
    """Return a prompt as the call's data keeps it (what 9 says again)."""
    return prompt if isinstance(prompt, str) else f"{EACH_MARK}{prompt.items}:{prompt.prompt}"


def unkept(prompt: str) -> Prompt:
    """Return a prompt kept in the call's data as the machine says it."""
    if prompt.startswith(EACH_MARK):
        items, _, pid = prompt.removeprefix(EACH_MARK).partition(":")
        return Each(pid, items)
    return prompt


def agent_first(st: State, data: CallData) -> bool:
    """Tell whether a state offers an agent before its options: a menu, to an elder caller, while agents work."""
    return isinstance(st, Menu) and st.elder_agent_first and bool(data.elder) and data.staffed


def hints_for(st: State) -> str | None:
    """Return the speech hints of a waiting state, or None where only the keypad is heard."""
    if isinstance(st, Menu):
        words = [w for options in st.words.values() for w in options]
        return ",".join(words + [w for options in BUILT_IN.values() for w in options])
    if isinstance(st, Entry) and st.speech:
        return "$OOV_CLASS_DIGIT_SEQUENCE"
    return None


def as_go(target: Target) -> Go:
    """Return a transition for a bare state name or a Go."""
    return target if isinstance(target, Go) else Go(target)


@dataclass
class Machine:
    """A validated phone tree and the step function that walks it."""

    states: Mapping[str, State]
    start: Go
    resume: Go  # where a call we lost track of starts again
    failure: Go  # where a call goes when the system fails (apology and an agent)
    reprompts: int = 3  # re-prompts on silence or wrong keys before give_up
    variants: Mapping[str, Iterable[str]] = field(default_factory=dict)
    unrepeated: frozenset[str] = frozenset()  # apologies that 9 (repeat) does not say again
    speech_confidence: float = 0.5  # below it (or unknown) a spoken menu choice that is no exact match is asked again
    # A state an earlier release had, by its new name: a call saved there resumes in the new state,
    # with its data. Each target must be a state of the flow, an old name must not be one.
    renamed: Mapping[str, str] = field(default_factory=dict)
    # Where a call saved in a state the flow no longer has (removed, not renamed) starts again;
    # None: as a call we lost track of (resume).
    restart: Go | None = None

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def edges(self, name: str) -> list[Go]:
        """Return every transition that leaves a state."""
        st = self.states[name]
        if isinstance(st, Menu):
            out = [as_go(t) for t in st.options.values()]
            out += [Go(name), Go(st.give_up), Go("agent")]
            if st.otherwise is not None:
                out.append(as_go(st.otherwise))
            if st.back:
                out.append(Go(st.back))
            if st.repeat:
                out.append(Go(st.repeat))
            return out
        if isinstance(st, Entry):
            return [Go(st.next), Go(name), Go(st.give_up)]
        if isinstance(st, Record):
            return [Go(st.next)]
        if isinstance(st, Action):
            return [as_go(t) for t in st.outcomes.values()]
        if isinstance(st, Transfer):
            return [as_go(st.answered), as_go(st.unanswered)] + ([as_go(st.left)] if st.left is not None else [])
        return []

    def validate(self) -> None:
        """Refuse a tree with a missing state, an unreachable one or a dead end."""
        from ivr.callflow.flowcheck import problems

        found = problems(self)
        if found:
            raise FlowError("; ".join(found))

    def reachable(self, roots: list[str]) -> set[str]:
        """Return every state reachable from the roots."""
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(go.target for go in self.edges(name))
        return seen

    def prompt_ids(self) -> set[str]:
        """Return every prompt id the flow can speak, placeholders expanded over their variants."""
        ids: set[str] = set()
        for name, st in self.states.items():
            raw = [p.prompt if isinstance(p, Each) else p for p in getattr(st, "prompts", ())]
            if isinstance(st, Menu):
                raw += list(st.give_up_say) + ["common.closed_hours", "common.no_input", "common.invalid_key",
                                                "common.not_understood"]
                raw += [keys_prompt(st, staffed) for staffed in (True, False)] if st.announce else []
                raw += [AGENT_FIRST_PROMPT] if st.elder_agent_first else []
            raw += [s.prompt if isinstance(s, Each) else s for go in self.edges(name) for s in go.say]
            for go in self.entrances():
                raw += [s.prompt if isinstance(s, Each) else s for s in go.say]
            for pid in raw:
                ids.update(self._expand(pid))
        return ids

    def _expand(self, pid: str) -> set[str]:
        fields = [f for _, f, _, _ in string.Formatter().parse(pid) if f]
        if not fields:
            return {pid}
        out = {pid}
        for f in fields:
            out = {p.replace("{" + f + "}", v) for p in out for v in self.variants.get(f, ())}
        return out

    def entrances(self) -> tuple[Go, ...]:
        """Return the transitions that do not leave a state: start, resume, failure, restart."""
        return (self.start, self.resume, self.failure) + ((self.restart,) if self.restart is not None else ())

    def live(self, name: str) -> str | None:
        """Return the state a saved state name stands for now: itself, its new name (`renamed`),
        or None when the flow no longer has it."""
        if name in self.states:
            return name
        return self.renamed.get(name)

    def state_of(self, name: str) -> State | None:
        """Return the state a saved state name stands for now (see `live`), or None."""
        live = self.live(name)
        return None if live is None else self.states[live]

    def transfer_names(self) -> list[str]:
        """Return the transfer states (a caller waiting for an agent, or in the queue), and their
        names before a release renamed them: calls saved under those still wait."""
        names = [name for name, st in self.states.items() if isinstance(st, Transfer)]
        return names + [old for old, new in self.renamed.items() if new in names]

    def action_names(self) -> set[str]:
        """Return every action name the flow runs."""
        return {st.run for st in self.states.values() if isinstance(st, Action)}

    # -- stepping ---------------------------------------------------------------------------
    def step(self, current: str, event: Event, data: CallData, run: RunAction) -> Turn:
        """Feed one event to the call standing in `current`; mutate data; return the turn."""
        if event.kind == "start":
            go = self.start
        elif event.kind == "resume":
            go = self.resume
        elif event.kind == "failure":
            go = self.failure
        else:
            live = self.live(current)
            if live is None:  # saved in a state a new release removed: from the top, not an error
                go = self.restart or self.resume
            else:  # renamed by a new release: where the call was, with its data
                go = self._react(live, event, data)
                current = live
        said: list[Prompt] = []
        path = [current] if current else []
        for _ in range(len(self.states) + 1):
            said.extend(go.say)
            path.append(go.target)
            if go.reason:
                data.transfer_reason = go.reason
            st = self.states[go.target]
            if isinstance(st, Action):
                outcome = run(st.run, st.arg, data, event)
                if outcome not in st.outcomes:
                    raise FlowError(f"action {st.run!r} gave undeclared outcome {outcome!r}")
                go = as_go(st.outcomes[outcome])
                continue
            break
        else:
            raise FlowError(f"actions loop without reaching a waiting state from {current!r}")
        name = go.target
        st = self.states[name]
        if not data.missed:
            data.misses = 0
        if not data.reprompt:
            data.entry_said = [kept(p) for p in said if p not in self.unrepeated]
        data.missed = data.reprompt = False
        own: list[Prompt] = list(getattr(st, "prompts", ()))
        first = agent_first(st, data)
        if first:  # before the prompt that names the options: the results said first stay first
            own.insert(max(len(own) - 1, 0), AGENT_FIRST_PROMPT)
        prompts = list(said) + own
        if isinstance(st, Menu) and st.announce:
            prompts.append(keys_prompt(st, data.staffed and not first))
        return Turn(state=name, spoken=self._speak(prompts, data), kind=type(st), path=path, hints=hints_for(st),
                    elder=bool(data.elder))

    def repeat(self, current: str, data: CallData) -> Go:
        """Return the transition that says again what the caller heard on entering the state."""
        data.reprompt = True
        return Go(current, tuple(unkept(p) for p in data.entry_said))

    def _react(self, current: str, event: Event, data: CallData) -> Go:
        st = self.states[current]
        if isinstance(st, Transfer):
            if event.kind == "queue" and event.value in QUEUE_LEFT and st.left is not None:
                return as_go(st.left)
            answered = (event.kind == "dial" and event.value in DIAL_ANSWERED) or (
                event.kind == "queue" and event.value in QUEUE_ANSWERED)
            return as_go(st.answered if answered else st.unanswered)
        if isinstance(st, (Action, Hangup)) or event.kind in ("dial", "queue"):
            return self.resume
        if isinstance(st, Record):
            return Go(st.next)  # with the recording, or with nothing when the caller said nothing
        if event.kind == "speech" and isinstance(st, Menu):
            # words matching an option exactly are taken whatever the confidence; others need it known and high
            heard = confident_choice(event.value, st.words, event.extra.get("Confidence"), self.speech_confidence)
            if heard is None:
                return self._miss(current, st, data, "common.not_understood", TransferReason.WRONG_KEYS)
            event = Event("keys", heard)
        if event.kind == "speech" and isinstance(st, Entry):
            return Go(st.next)  # the action reads the spoken digits like keyed ones
        keys = event.value if event.kind == "keys" else ""
        if not keys:
            return self._miss(current, st, data, "common.no_input", TransferReason.NO_INPUT)
        if isinstance(st, Entry):
            return Go(st.next)
        assert isinstance(st, Menu)
        if keys == REPEAT_KEY:
            return Go(st.repeat) if st.repeat else self.repeat(current, data)
        if keys == AGENT_KEY and data.staffed:
            return Go("agent", reason=TransferReason.CALLER_REQUEST)
        if keys == AGENT_KEY:  # out of staffed hours: say when agents work, then the menu again
            data.reprompt = True
            return Go(current, ("common.closed_hours",))
        if keys == BACK_KEY and st.back:
            return Go(st.back)
        if keys in st.options:
            return as_go(st.options[keys])
        if st.otherwise is not None:
            return as_go(st.otherwise)
        return self._miss(current, st, data, "common.invalid_key", TransferReason.WRONG_KEYS)

    def _miss(self, current: str, st: Menu | Entry, data: CallData, prompt: str, why: str) -> Go:
        misses = data.misses + 1
        own = st.reprompts if isinstance(st, Menu) else None
        limit = self.reprompts if own is None else own
        if misses > limit:
            say = st.give_up_say if isinstance(st, Menu) else ("common.too_many_misses",)
            reason = (st.give_up_reason if isinstance(st, Menu) else None) or why
            return Go(st.give_up, tuple(say), reason=reason)
        data.misses = misses
        data.missed = data.reprompt = True
        return Go(current, (prompt,))

    def _speak(self, prompts: list[Prompt], data: CallData) -> list[Spoken]:
        values = data.values()
        out: list[Spoken] = []
        for p in prompts:
            if isinstance(p, Each):
                out.extend(Spoken(p.prompt, item) for item in values.get(p.items, ()))
            else:
                out.append(Spoken(p.format_map(_Values(values)) if "{" in p else p, values))
        return out


class _Values(dict[str, Any]):
    """Format helper: prompt-id placeholders read the call's data."""

    def __init__(self, data: Mapping[str, Any]):
        super().__init__(data)

    def __missing__(self, key: str) -> str:
        return "unknown"
