"""Which states and transitions of the call flow a set of calls went through, and which none did."""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from ivr.callflow.machine import Machine


@dataclass
class Coverage:
    """States and transitions of the flow, and those the calls exercised."""

    states: set[str]
    transitions: set[tuple[str, str]]
    seen_states: set[str]
    seen_transitions: set[tuple[str, str]]

    def summary(self) -> str:
        """One line: how much of the flow was exercised."""
        return (f"flow coverage: {len(self.seen_states & self.states)}/{len(self.states)} states, "
                f"{len(self.seen_transitions & self.transitions)}/{len(self.transitions)} transitions")

    def missing(self) -> list[str]:
        """Lines naming every state and transition no call went through."""
        lines = [f"state never reached: {s}" for s in sorted(self.states - self.seen_states)]
        lines += [f"transition never taken: {a} -> {b}" for a, b in sorted(self.transitions - self.seen_transitions)]
        return lines


def measure(machine: Machine, paths: Iterable[list[str]]) -> Coverage:
    """Compare the transitions the recorded paths took with every transition the flow declares."""
    transitions = {(name, go.target) for name in machine.states for go in machine.edges(name)}
    seen_states: set[str] = set()
    seen: set[tuple[str, str]] = set()
    for path in paths:
        seen_states.update(path)
        seen.update(itertools.pairwise(path))
    return Coverage(set(machine.states), transitions, seen_states, seen)
