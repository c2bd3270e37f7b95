"""Scenario files: a call written down as YAML, checked with the file and line of every problem.

A scenario names the caller's and the dialled number, the moment the call happens (`at`, used
when the app runs in-process), the cardholders to put in the ledger first, the steps (dial,
press, speak, silence, record, agent, queue, hangup), what must be heard after each step, and
what must be true at the end (transferred or not, card statuses, history rows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

STEP_KINDS = ("dial", "press", "speak", "silence", "record", "agent", "queue", "hangup")
STEP_EXPECT = ("prompts", "prompts_include", "heard", "heard_regex", "text", "transferred",
               "ended", "agent_heard")
END_EXPECT = ("transferred", "ended", "cards", "history", "prompts_heard")
HOLDER_KEYS = ("id_number", "pin", "name", "mobile", "pin_failures", "cards")
CARD_KEYS = ("card_number", "status", "applied_on", "bank", "loss_expires_at",
             "status_before_loss", "history")
TOP_KEYS = ("name", "description", "caller", "dialled", "at", "cardholders", "steps", "expect")


class ScenarioError(Exception):
    """A scenario file that cannot be run, with where and why."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


class LineDict(dict):
    """A YAML mapping that remembers the line it started on."""

    line: int = 0


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings know their line numbers."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    out = LineDict(loader.construct_mapping(node, deep=True))
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


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
    cardholders: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)


def _check_keys(path: Path, mapping: Any, allowed: tuple[str, ...], what: str, line: int) -> None:
    if not isinstance(mapping, dict):
        raise ScenarioError(path, line, f"{what} must be a mapping")
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        raise ScenarioError(path, getattr(mapping, "line", line),
                            f"unknown {what} field {unknown[0]!r} (expected one of: {', '.join(allowed)})")


def _line(node: Any, default: int) -> int:
    return getattr(node, "line", default) or default


def parse(path: Path, text: str) -> Scenario:
    """Check a scenario's text and return it; raise ScenarioError naming file and line."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise ScenarioError(path, mark.line + 1 if mark else None, f"bad YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ScenarioError(path, None, f"bad YAML: {err}") from None
    _check_keys(path, doc, TOP_KEYS, "scenario", 1)
    steps_raw = doc.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(path, doc.line, "missing field 'steps' (a list of steps)")
    sc = Scenario(path=path, name=str(doc.get("name") or path.stem))
    sc.caller = str(doc.get("caller", sc.caller))
    sc.dialled = str(doc.get("dialled", sc.dialled))
    if doc.get("at") is not None:
        at = doc["at"]
        try:
            sc.at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        except ValueError:
            raise ScenarioError(path, doc.line, f"'at' is not an ISO date-time: {at!r}") from None
        if sc.at.tzinfo is None:
            raise ScenarioError(path, doc.line, "'at' needs a UTC offset, e.g. 2026-11-30T10:00:00+08:00")
    sc.cardholders = _holders(path, doc.get("cardholders") or [], doc.line)
    last_line = doc.line
    for raw in steps_raw:
        last_line = _line(raw, last_line)
        sc.steps.append(_step(path, raw, last_line))
    end = doc.get("expect") or LineDict()
    _check_keys(path, end, END_EXPECT, "final expectation", doc.line)
    sc.expect = dict(end)
    if sc.steps[0].kind != "dial":
        sc.steps.insert(0, Step("dial", None, {}, doc.line))
    return sc


def _holders(path: Path, holders: Any, line: int) -> list[dict[str, Any]]:
    if not isinstance(holders, list):
        raise ScenarioError(path, line, "'cardholders' must be a list")
    for h in holders:
        _check_keys(path, h, HOLDER_KEYS, "cardholder", line)
        if not h.get("id_number"):
            raise ScenarioError(path, _line(h, line), "cardholder: missing field 'id_number'")
        for c in h.get("cards") or []:
            _check_keys(path, c, CARD_KEYS, "card", _line(h, line))
            for req in ("card_number", "status"):
                if not c.get(req):
                    raise ScenarioError(path, _line(c, line), f"card: missing field {req!r}")
    return holders


def _step(path: Path, raw: Any, line: int) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(path, line, f"a step must be a mapping such as 'press: \"1\"', not {raw!r}")
    kinds = [k for k in raw if k in STEP_KINDS]
    others = [k for k in raw if k not in STEP_KINDS and k not in ("expect", "confidence")]
    if others:
        raise ScenarioError(path, line, f"unknown step kind {others[0]!r} (expected one of: {', '.join(STEP_KINDS)})")
    if len(kinds) != 1:
        raise ScenarioError(path, line, f"a step needs exactly one of: {', '.join(STEP_KINDS)}")
    kind = kinds[0]
    value = raw[kind]
    if kind == "press" and not isinstance(value, (str, int)):
        raise ScenarioError(path, line, "press takes the keys as a string, e.g. press: \"1\"")
    if kind == "press":
        value = str(value)
    if kind == "speak":
        value = (str(value), float(raw.get("confidence", 0.9)))
    expect = raw.get("expect") or {}
    _check_keys(path, expect, STEP_EXPECT, "expectation", line)
    return Step(kind, value, dict(expect), line)


def load(path: Path) -> Scenario:
    """Read and check one scenario file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(path, None, f"cannot read: {err.strerror}") from None
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
