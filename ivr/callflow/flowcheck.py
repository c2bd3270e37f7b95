"""The checks a phone tree must pass when it is built: no missing, unreachable or dead-end state, and
states renamed by a release (`Machine.renamed`) that lead to a state a call can be saved in."""
from __future__ import annotations

import string
from typing import TYPE_CHECKING

from ivr.callflow.machine import RESERVED_KEYS, Action, Entry, Hangup, Menu, Record

if TYPE_CHECKING:
    from ivr.callflow.machine import Machine


def problems(m: Machine) -> list[str]:
    """Return what is wrong with the tree (empty when it is valid)."""
    found: list[str] = []
    for req in ("main", "agent"):
        if req not in m.states:
            found.append(f"the flow needs a {req!r} state")
    for name, st in m.states.items():
        if isinstance(st, Menu):
            if not st.options:
                found.append(f"menu {name!r} offers no option")
            for key in st.options:
                if key in RESERVED_KEYS or len(key) != 1 or key not in string.digits + "#":
                    found.append(f"menu {name!r} binds reserved or invalid key {key!r}")
        if isinstance(st, Action) and not st.outcomes:
            found.append(f"action {name!r} has no outcome")
        if isinstance(st, (Entry, Record)) and not isinstance(m.states.get(st.next), Action):
            found.append(f"{type(st).__name__.lower()} {name!r} must lead to an action, not {st.next!r}")
        for go in m.edges(name):
            if go.target not in m.states:
                found.append(f"{name!r} leads to unknown state {go.target!r}")
    for go in m.entrances():
        if go.target not in m.states:
            found.append(f"start leads to unknown state {go.target!r}")
    for old, new in m.renamed.items():
        if old in m.states:
            found.append(f"renamed state {old!r} is still a state of the flow")
        if new not in m.states:
            found.append(f"{old!r} is renamed to unknown state {new!r}")
        elif isinstance(m.states[new], Action):
            found.append(f"{old!r} is renamed to action {new!r}: a call is saved only in a state that waits")
    if found:
        return found
    roots = [m.start.target, m.resume.target] + ([m.restart.target] if m.restart is not None else [])
    unreachable = sorted(set(m.states) - m.reachable(roots))
    if unreachable:
        return [f"unreachable states: {', '.join(unreachable)}"]
    finals = {n for n, s in m.states.items() if isinstance(s, Hangup)}
    for name in m.states:
        if not (m.reachable([name]) & finals):
            return [f"state {name!r} cannot lead to the end of a call"]
    return []
