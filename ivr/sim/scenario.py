"""Scenario files: a call written down as YAML, checked with the file and line of every problem.

A scenario names the caller's and the dialled number, the moment the call happens (`at`, used
when the app runs in-process), how agents are reached (`agent_leg`: `queue` answers the call
in-process as the hotline configured with agent.leg queue; against a server, its configuration
must say so), the cardholders to put in the ledger first, the steps (dial, press, speak, silence,
record, agent, queue, wait, agent_takes, hangup), what must be heard after each step, and what
must be true at the end (transferred or not, card statuses, history rows).

Every problem a file can have, whatever its kind, is a ScenarioError "FILE:LINE: problem",
never a traceback: the values are type-checked here, before any call is placed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from yaml.constructor import ConstructorError

from ivr.sim.phone import DIAL_STATUSES, QUEUE_RESULTS
from models.medical import KINDS as MEDICAL_KINDS

STEP_KINDS = ("dial", "press", "speak", "silence", "record", "agent", "queue", "wait", "agent_takes", "hangup")
AGENT_LEGS = ("number", "sip", "client", "queue")
STEP_EXPECT = ("prompts", "prompts_include", "heard", "heard_regex", "text", "transferred",
               "ended", "agent_heard")
END_EXPECT = ("transferred", "ended", "cards", "history", "prompts_heard")
HOLDER_KEYS = ("id_number", "pin", "name", "mobile", "pin_failures", "cards", "medical")
MEDICAL_KEYS = ("at", "kind", "amount_fen", "institution", "balance_fen")
CARD_KEYS = ("card_number", "status", "applied_on", "bank", "loss_expires_at",
             "status_before_loss", "history")
FIXTURE_HISTORY_KEYS = ("status", "at", "channel")
HISTORY_KEYS = ("status", "before", "channel", "this_call", "reason")
TOP_KEYS = ("name", "description", "caller", "dialled", "at", "agent_leg", "cardholders", "steps", "expect")
KEYS = re.compile(r"[0-9*#]+")
LineT = TypeVar("LineT", bound=int | None)  # a fallback line: given, or unknown (None)


class ScenarioError(Exception):
    """A scenario file that cannot be run, with where and why."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its line, each key's line and each plain value's source text."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.line = 0
        self.lines: dict[Any, int] = {}
        self.raw: dict[Any, str | None] = {}


class LineList(list[Any]):
    """A YAML sequence that remembers its line and each item's line."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.line = 0
        self.lines: list[int] = []


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences know their line numbers, refusing duplicate keys."""


def _mapping(loader: LineLoader, node: yaml.MappingNode) -> LineDict:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if key in first:
            raise ConstructorError(None, None, f"duplicate key {key!r} (already on line {first[key]})",
                                   key_node.start_mark)
        first[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
        out.raw[key] = value_node.value if isinstance(value_node, yaml.ScalarNode) else None
    return out


def _sequence(loader: LineLoader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


@dataclass
class Step:
    """One thing the caller does, and what they must hear after it."""

    kind: str
    value: Any
    expect: dict[str, Any]
    line: int


@dataclass
class Scenario:
    """A whole call to place and check."""

    path: Path
    name: str
    caller: str = "+8613900000000"
    dialled: str = "+8653212333"
    at: datetime | None = None
    agent_leg: str | None = None  # None: as the hotline is configured
    cardholders: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)


class _Checker:
    """Checks the parts of one file, raising ScenarioError with the line of the part at fault."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, line: int | None, problem: str) -> NoReturn:
        raise ScenarioError(self.path, line, problem)

    def mapping(self, value: Any, allowed: tuple[str, ...], what: str, line: int) -> dict[Any, Any]:
        if not isinstance(value, dict):
            self.fail(_line(value, line), f"{what} must be a mapping, not {_kind(value)}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            self.fail(key_line(value, unknown[0], line),
                      f"unknown {what} field {unknown[0]!r} (expected one of: {', '.join(allowed)})")
        return value

    def items(self, value: Any, what: str, line: int) -> list[tuple[Any, int]]:
        """Return a list's items with their lines."""
        if not isinstance(value, list):
            self.fail(_line(value, line), f"{what} must be a list, not {_kind(value)}")
        lines = getattr(value, "lines", [])
        return [(item, lines[i] if i < len(lines) else _line(value, line)) for i, item in enumerate(value)]

    def text(self, m: dict[Any, Any], key: str, what: str, line: int) -> str:
        """Return a field that stands for keys or digits: a string, or a plain decimal number."""
        value, where = m[key], key_line(m, key, line)
        if isinstance(value, str):
            return value
        raw: str | None = getattr(m, "raw", {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and raw is not None and raw == str(value):
            return raw
        if isinstance(value, (int, float)) and not isinstance(value, bool) and raw is not None:
            self.fail(where, f"{what} {raw} is read by YAML as the number {value!r}: quote it, "
                             f"e.g. {key}: \"{raw}\"")
        self.fail(where, f"{what} must be a quoted string, not {_kind(value)}")
        return ""

    def string(self, m: dict[Any, Any], key: str, what: str, line: int) -> str:
        value = m[key]
        if not isinstance(value, str):
            self.fail(key_line(m, key, line), f"{what} must be a string, not {_kind(value)}")
        return value

    def strings(self, m: dict[Any, Any], key: str, what: str, line: int) -> list[str]:
        where = key_line(m, key, line)
        value = m[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(where, f"{what} must be a list of strings, e.g. [main.menu], not {_short(value)}")
        return list(value)

    def flag(self, m: dict[Any, Any], key: str, line: int) -> bool:
        value = m[key]
        if not isinstance(value, bool):
            self.fail(key_line(m, key, line), f"{key} must be true or false, not {_short(value)}")
        return value

    def count(self, m: dict[Any, Any], key: str, what: str, line: int, least: int) -> int | None:
        """Return a whole number of at least `least`, or None when the field is empty."""
        value = m[key]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            self.fail(key_line(m, key, line), f"{what} must be empty or a whole number of at least {least}, "
                                               f"not {_short(value)}")
        return value

    def moment(self, m: dict[Any, Any], key: str, what: str, line: int) -> datetime:
        value, where = m[key], key_line(m, key, line)
        try:
            at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(where, f"{what} is not an ISO date-time: {value!r}")
        if at.tzinfo is None:
            self.fail(where, f"{what} needs a UTC offset, e.g. 2026-11-30T10:00:00+08:00")
        return at

    def day(self, m: dict[Any, Any], key: str, what: str, line: int) -> None:
        value = m[key]
        if value in (None, "") or (isinstance(value, date) and not isinstance(value, datetime)):
            return
        try:
            date.fromisoformat(str(value))
        except ValueError:
            self.fail(key_line(m, key, line), f"{what} is not an ISO date (YYYY-MM-DD): {value!r}")


def _line(node: Any, default: LineT) -> int | LineT:
    line: int | None = getattr(node, "line", None)
    return line or default


def key_line(m: Any, key: Any, default: LineT) -> int | LineT:
    line: int | None = getattr(m, "lines", {}).get(key)
    if line:
        return line
    return _line(m, default)


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(path: Path, text: str) -> Scenario:
    """Check a scenario's text and return it; raise ScenarioError naming file and line."""
    try:
        doc = yaml.load(text, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ScenarioError(path, mark.line + 1 if mark else None, f"bad YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ScenarioError(path, None, f"bad YAML: {err}") from None
    check = _Checker(path)
    if doc is None:
        check.fail(1, "the file is empty: a scenario is a mapping with 'steps'")
    check.mapping(doc, TOP_KEYS, "scenario", 1)
    steps_raw = doc.get("steps")
    if "steps" not in doc or steps_raw is None:
        check.fail(doc.line, "missing field 'steps' (a list of steps)")
    if not isinstance(steps_raw, list) or not steps_raw:
        check.fail(key_line(doc, "steps", doc.line), "'steps' must be a list of steps, not " + _kind(steps_raw))
    name = doc.get("name")
    if name is not None and not isinstance(name, (str, int, float)):
        check.fail(key_line(doc, "name", doc.line), f"name must be a string, not {_kind(name)}")
    if doc.get("description") is not None:
        check.string(doc, "description", "description", doc.line)
    sc = Scenario(path=path, name=str(name or path.stem))
    for key in ("caller", "dialled"):
        if key in doc:
            setattr(sc, key, _number(check, doc, key))
    if doc.get("at") is not None:
        sc.at = check.moment(doc, "at", "'at'", doc.line)
    if doc.get("agent_leg") is not None:
        if doc["agent_leg"] not in AGENT_LEGS:
            check.fail(key_line(doc, "agent_leg", doc.line),
                       f"agent_leg must be one of: {', '.join(AGENT_LEGS)}; not {_short(doc['agent_leg'])}")
        sc.agent_leg = str(doc["agent_leg"])
    sc.cardholders = _holders(check, doc.get("cardholders"), key_line(doc, "cardholders", doc.line))
    for i, (raw, line) in enumerate(check.items(steps_raw, "'steps'", doc.line)):
        step = _step(check, raw, line)
        if step.kind == "dial" and i > 0:
            check.fail(line, "dial: can only be the first step (a scenario is one call)")
        sc.steps.append(step)
    end = doc.get("expect")
    sc.expect = _end_expect(check, end, key_line(doc, "expect", doc.line)) if end is not None else {}
    if sc.steps[0].kind != "dial":
        sc.steps.insert(0, Step("dial", None, {}, doc.line))
    return sc


def _number(check: _Checker, doc: LineDict, key: str) -> str:
    value = doc[key]
    if isinstance(value, str):
        return value
    raw = doc.raw.get(key)
    if raw is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        check.fail(key_line(doc, key, doc.line), f"{key} {raw} is read by YAML as a number: quote it, "
                                                  f"e.g. {key}: \"{raw}\"")
    check.fail(key_line(doc, key, doc.line), f"{key} must be a phone number in quotes, not {_kind(value)}")
    return ""


def _holders(check: _Checker, holders: Any, line: int) -> list[dict[str, Any]]:
    if holders is None:
        return []
    for h, h_line in check.items(holders, "'cardholders'", line):
        check.mapping(h, HOLDER_KEYS, "cardholder", h_line)
        if h.get("id_number") in (None, ""):
            check.fail(_line(h, h_line), "cardholder: missing field 'id_number'")
        for key in ("id_number", "pin", "mobile"):
            if h.get(key) is not None:
                h[key] = check.text(h, key, key, h_line)
        if h.get("name") is not None:
            check.string(h, "name", "name", h_line)
        if "pin_failures" in h:
            check.count(h, "pin_failures", "pin_failures", h_line, 0)
        for c, c_line in check.items(h.get("cards") or [], "'cards'", key_line(h, "cards", h_line)):
            check.mapping(c, CARD_KEYS, "card", c_line)
            for req in ("card_number", "status"):
                if c.get(req) in (None, ""):
                    check.fail(_line(c, c_line), f"card: missing field {req!r}")
            c["card_number"] = check.text(c, "card_number", "card_number", c_line)
            for key in ("status", "bank", "status_before_loss"):
                if c.get(key) is not None:
                    check.string(c, key, key, c_line)
            if "applied_on" in c:
                check.day(c, "applied_on", "applied_on", c_line)
            if c.get("loss_expires_at") not in (None, ""):
                check.moment(c, "loss_expires_at", "loss_expires_at", c_line)
            if c.get("history") is not None:
                for row, r_line in check.items(c["history"], "a card's 'history'", key_line(c, "history", c_line)):
                    check.mapping(row, FIXTURE_HISTORY_KEYS, "history row", r_line)
                    if not row.get("status"):
                        check.fail(_line(row, r_line), "history row: missing field 'status'")
                    check.string(row, "status", "status", r_line)
                    if row.get("at") not in (None, ""):
                        check.moment(row, "at", "a history row's 'at'", r_line)
                    if row.get("channel") is not None:
                        check.string(row, "channel", "channel", r_line)
        for r, r_line in check.items(h.get("medical") or [], "'medical'", key_line(h, "medical", h_line)):
            check.mapping(r, MEDICAL_KEYS, "medical record", r_line)
            missing = [k for k in MEDICAL_KEYS if r.get(k) is None]
            if missing:
                check.fail(_line(r, r_line), f"medical record: missing field {missing[0]!r}")
            check.moment(r, "at", "a medical record's 'at'", r_line)
            if r["kind"] not in MEDICAL_KINDS:
                check.fail(key_line(r, "kind", r_line), f"kind must be one of: {', '.join(MEDICAL_KINDS)}; "
                                                        f"not {_short(r['kind'])}")
            check.count(r, "amount_fen", "amount_fen", r_line, 0)
            balance = r["balance_fen"]
            if isinstance(balance, bool) or not isinstance(balance, int):
                check.fail(key_line(r, "balance_fen", r_line), f"balance_fen must be a whole number of fen, "
                                                               f"not {_short(balance)}")
            check.string(r, "institution", "institution", r_line)
    return list(holders)


def _step(check: _Checker, raw: Any, line: int) -> Step:
    if not isinstance(raw, dict):
        hint = f"'{raw}:'" if isinstance(raw, str) and raw in STEP_KINDS else "'press: \"1\"'"
        check.fail(line, f"a step must be a mapping such as {hint}, not {raw!r}")
    kinds = [k for k in raw if k in STEP_KINDS]
    others = [k for k in raw if k not in STEP_KINDS and k not in ("expect", "confidence")]
    if others:
        check.fail(key_line(raw, others[0], line),
                   f"unknown step kind {others[0]!r} (expected one of: {', '.join(STEP_KINDS)})")
    if len(kinds) != 1:
        check.fail(line, f"a step needs exactly one of: {', '.join(STEP_KINDS)}")
    kind = kinds[0]
    value = raw[kind]
    where = key_line(raw, kind, line)
    if "confidence" in raw and kind != "speak":
        check.fail(key_line(raw, "confidence", line), "confidence goes with speak:")
    if kind == "press":
        if value is None:
            check.fail(where, "press needs the keys, e.g. press: \"1\"")
        value = check.text(raw, "press", "press", line)
        if not KEYS.fullmatch(value):
            check.fail(where, f"press takes the keys 0-9, * and #, not {value!r}")
    elif kind == "speak":
        if not isinstance(value, str) or not value:
            check.fail(where, f"speak takes the words said, e.g. speak: \"挂失\", not {_kind(value)}")
        confidence = raw.get("confidence", 0.9)
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
            check.fail(key_line(raw, "confidence", line),
                       f"confidence must be a number from 0 to 1, not {_short(confidence)}")
        value = (value, float(confidence))
    elif kind in ("silence", "record"):
        what = "silence (how many timeouts in a row)" if kind == "silence" else "record (seconds of message)"
        value = check.count(raw, kind, what, line, 1)
    elif kind == "wait":
        value = check.count(raw, kind, "wait (seconds in the queue)", line, 1)
        if value is None:
            check.fail(where, "wait needs the seconds to wait in the queue, e.g. wait: 40")
    elif kind == "agent_takes":
        if value is not None and not isinstance(value, str):
            check.fail(where, f"agent_takes takes nothing or a hotline's name, e.g. \"12333\"; not {_short(value)}")
    elif kind in ("agent", "queue"):
        allowed = DIAL_STATUSES if kind == "agent" else QUEUE_RESULTS
        if value is not None and value not in allowed:
            check.fail(where, f"{kind} must be empty or one of: {', '.join(allowed)}; not {_short(value)}")
    elif value is not None:  # dial, hangup
        check.fail(where, f"{kind}: takes no value, not {_short(value)}")
    expect = raw.get("expect")
    return Step(kind, value, _step_expect(check, expect, key_line(raw, "expect", line)) if expect is not None else {},
                line)


def _step_expect(check: _Checker, e: Any, line: int) -> dict[str, Any]:
    check.mapping(e, STEP_EXPECT, "expectation", line)
    for key in ("prompts", "prompts_include"):
        if key in e:
            check.strings(e, key, key, line)
    for key in ("heard", "agent_heard", "heard_regex"):
        if key in e:
            check.string(e, key, key, line)
    if "heard_regex" in e:
        try:
            re.compile(e["heard_regex"])
        except re.error as err:
            check.fail(key_line(e, "heard_regex", line), f"heard_regex does not compile: {err}")
    if "text" in e:
        text = e["text"]
        if not isinstance(text, str) and not (isinstance(text, list) and all(isinstance(t, str) for t in text)):
            check.fail(key_line(e, "text", line), f"text must be a string or a list of strings, not {_short(text)}")
    for key in ("transferred", "ended"):
        if key in e:
            check.flag(e, key, line)
    return dict(e)


def _end_expect(check: _Checker, e: Any, line: int) -> dict[str, Any]:
    check.mapping(e, END_EXPECT, "final expectation", line)
    for key in ("transferred", "ended"):
        if key in e:
            check.flag(e, key, line)
    if "prompts_heard" in e:
        check.strings(e, "prompts_heard", "prompts_heard", line)
    if "cards" in e:
        cards = e["cards"]
        c_line = key_line(e, "cards", line)
        if not isinstance(cards, dict):
            check.fail(c_line, f"cards must be a mapping of card number to status, not {_short(cards)}")
        for number, status in cards.items():
            if not isinstance(status, str):
                check.fail(key_line(cards, number, c_line), f"card {number}: the status must be a string, "
                                                             f"not {_short(status)}")
    if "history" in e:
        history = e["history"]
        h_line = key_line(e, "history", line)
        if not isinstance(history, dict):
            check.fail(h_line, f"history must be a mapping of card number to a list of rows, not {_short(history)}")
        for number, rows in history.items():
            for row, r_line in check.items(rows, f"card {number}'s history", key_line(history, number, h_line)):
                check.mapping(row, HISTORY_KEYS, "history row", r_line)
                if "this_call" in row:
                    check.flag(row, "this_call", r_line)
    return dict(e)


def load(path: Path) -> Scenario:
    """Read and check one scenario file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ScenarioError(path, None, f"cannot read: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ScenarioError(path, line,
                            f"not UTF-8 text (byte 0x{data[err.start]:02x}): save the file as UTF-8") from None
    return parse(path, text)


def collect(paths: list[Path]) -> list[Path]:
    """Return the scenario files named, folders searched for *.yaml, in a stable order."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(p.rglob("*.yaml")) + sorted(p.rglob("*.yml")))
        else:
            found.append(p)
    return found
