"""Draw the phone tree from the declared flow: an indented text tree, a Mermaid flowchart, a Graphviz digraph.

Pure functions of a `Machine` and, for the Mandarin labels, the prompt catalogue's texts (prompt id ->
text); without texts the prompt ids are shown. `flask --app wsgi flow show` prints them.

What is drawn is what the flow declares for each state: a menu's keys (labelled with what its prompt
says before 请按<key>), "other keys", a 9 or a give-up that differs from the built-in ones; an entry's
keyed data; an action's outcomes (outcomes taking the same transition share a line); a transfer's
two results. The keys every menu has built in (9 repeat, 0 an agent, * back, silence and wrong keys
re-prompted) are said once, in the text tree's heading, not drawn at every menu.
"""
from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ivr.callflow.machine import (
    AGENT_KEY,
    BACK_KEY,
    REPEAT_KEY,
    Action,
    Each,
    Entry,
    Go,
    Hangup,
    Machine,
    Menu,
    Prompt,
    Record,
    State,
    Transfer,
    as_go,
)

Texts = Mapping[str, str]
LABEL_CHARS = 20  # a state's Mandarin label is cut to this many characters
AGENT = "agent"  # where the built-in 0 leads (`Machine._react`)
KINDS = {Menu: "menu", Entry: "entry", Action: "action", Record: "record", Transfer: "transfer", Hangup: "hangup"}
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
CLAUSES = re.compile(r"[，。；：！？,;:!?]")
PRESS = re.compile(r"^(.*?)请?按(其他键|星号键|井号键|[0-9*#])键?$")


def _default(kind: type, name: str) -> object:
    """Return a state field's declared default (Menu.back is "main", Menu.give_up "agent")."""
    return next(f.default for f in dataclasses.fields(kind) if f.name == name)


@dataclass(frozen=True)
class Traffic:
    """What calls did in the flow, to draw on it (`models.reports.flow_traffic`'s two counters).

    taken: how many calls took each transition (from state, to state); ended: how many calls ended
    in each state. names: a state's name to show first (the console's Mandarin label); href: the
    address a state links to (its calls), or None for no link. took / ended_here: the words of a
    count ("{n}" is the count).
    """

    taken: Mapping[tuple[str, str], int]
    ended: Mapping[str, int]
    names: Mapping[str, str] = field(default_factory=dict)
    href: Callable[[str], str | None] | None = None
    took: str = "{n} calls"
    ended_here: str = "ended here: {n}"


@dataclass(frozen=True)
class Edge:
    """One drawn transition: what takes it (a key, an outcome, an event) and where it goes."""

    label: str
    go: Go


# -- what the flow says -----------------------------------------------------------------------------
def _prompt_id(p: Prompt) -> str:
    return p.prompt if isinstance(p, Each) else p


def _text(pid: str, texts: Texts | None) -> str | None:
    """Return a prompt's text with its placeholders as …, or None when the catalogue has none."""
    if texts is None or pid not in texts:
        return None
    return PLACEHOLDER.sub("…", texts[pid]).strip()


def _cut(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS].rstrip("，；：,;: ") + "…"


def state_label(st: State, texts: Texts | None) -> str:
    """Return a short Mandarin label: the first sentence its prompts say, without the 请按 clauses."""
    for p in getattr(st, "prompts", ()):
        text = _text(_prompt_id(p), texts)
        if not text:
            continue
        sentence = re.split(r"[。！？]", text)[0]
        clauses = [c for c in re.split(r"(?<=[，；：,;:])", sentence) if "请按" not in c]
        label = "".join(clauses).rstrip("，；：,;: ")
        if len(re.sub(r"[…，；：,;: ]", "", label)) >= 2:  # not only placeholders
            return _cut(label)
    return ""


def key_labels(menu: Menu, texts: Texts | None) -> dict[str, str]:
    """Return what each key of a menu is for, as its prompts say it ("口头挂失" for 口头挂失请按1).

    The key "other" stands for 请按其他键 (a menu's `otherwise`)."""
    out: dict[str, str] = {}
    for p in menu.prompts:
        text = _text(_prompt_id(p), texts)
        if not text:
            continue
        clauses = [c.strip() for c in CLAUSES.split(text)]
        for i, clause in enumerate(clauses):
            m = PRESS.match(clause)
            if not m:
                continue
            label = m.group(1) or (clauses[i - 1] if i else "")
            key = {"其他键": "other", "星号键": BACK_KEY, "井号键": "#"}.get(m.group(2), m.group(2))
            out.setdefault(key, label)
    return out


# -- what leaves a state ----------------------------------------------------------------------------
def _misses(m: Machine, st: Menu | Entry) -> str:
    n = st.reprompts if isinstance(st, Menu) and st.reprompts is not None else m.reprompts
    what = "silence or wrong keys" if isinstance(st, Menu) else "silence"
    return f"{what}, no re-prompt" if n == 0 else f"{what}, {n} re-prompt{'s' if n > 1 else ''}"


def edges(m: Machine, name: str, texts: Texts | None = None) -> list[Edge]:
    """Return the transitions drawn for a state, in the order the flow declares them."""
    st = m.states[name]
    if isinstance(st, Menu):
        labels = key_labels(st, texts)
        out = [Edge(f"{key} {labels[key]}" if labels.get(key) else key, as_go(t)) for key, t in st.options.items()]
        if st.otherwise is not None:
            other = labels.get("other")
            out.append(Edge(f"other keys {other}" if other else "other keys", as_go(st.otherwise)))
        if st.repeat:
            out.append(Edge(REPEAT_KEY, Go(st.repeat)))
        if st.back and st.back != _default(Menu, "back"):
            out.append(Edge(BACK_KEY, Go(st.back)))
        if st.give_up != _default(Menu, "give_up") or st.reprompts is not None or st.give_up_reason:
            reason = st.give_up_reason
            out.append(Edge(_misses(m, st), Go(st.give_up, st.give_up_say, reason)))
        return out
    if isinstance(st, Entry):
        keyed = "keyed or spoken + #" if st.speech else "keyed + #"
        out = [Edge(f"{keyed} ({st.redact})", Go(st.next))]
        if st.give_up != _default(Entry, "give_up"):
            out.append(Edge(_misses(m, st), Go(st.give_up)))
        return out
    if isinstance(st, Record):
        return [Edge("recorded, or silence", Go(st.next))]
    if isinstance(st, Action):
        grouped: dict[Go, list[str]] = {}
        for outcome, target in st.outcomes.items():
            grouped.setdefault(as_go(target), []).append(outcome)
        return [Edge(", ".join(outcomes), go) for go, outcomes in grouped.items()]
    if isinstance(st, Transfer):
        edges = [Edge("answered", as_go(st.answered)), Edge("not answered", as_go(st.unanswered))]
        if st.left is not None:
            edges.append(Edge("1 while queued (agent.leg: queue)", as_go(st.left)))
        return edges
    return []


def kind_of(st: State) -> str:
    """Return what a state is, as drawn: "menu, no *", "action load_card", "entry", …"""
    kind = KINDS[type(st)]
    if isinstance(st, Action):
        return f"{kind} {st.run}" + (f" {st.arg}" if st.arg else "")
    if isinstance(st, Menu) and not st.back:
        return f"{kind}, no {BACK_KEY}"
    if isinstance(st, Record):
        return f"{kind} ≤{st.max_seconds} s"
    return kind


def sections(m: Machine) -> list[str]:
    """Return the states drawn as trees of their own: the start, where * and 0 lead, then any other
    state the drawn transitions do not reach."""
    roots = [m.start.target]
    for st in m.states.values():
        if isinstance(st, Menu) and st.back and st.back not in roots:
            roots.append(st.back)
    if AGENT in m.states and AGENT not in roots:
        roots.append(AGENT)
    seen = _owners(m, roots)[1]
    roots += [n for n in m.states if n not in seen]
    return roots


def _owners(m: Machine, roots: list[str]) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """Return where each state is drawn in full: the (state, edge number) that reaches it first,
    breadth first from the roots (the shallowest place); and every state reached."""
    owner: dict[str, tuple[str, int]] = {}
    seen = set(roots)
    todo = deque(roots)
    while todo:
        name = todo.popleft()
        for i, e in enumerate(edges(m, name)):
            if e.go.target not in seen:
                seen.add(e.go.target)
                owner[e.go.target] = (name, i)
                todo.append(e.go.target)
    return owner, seen


# -- text -------------------------------------------------------------------------------------------
def _extras(go: Go) -> str:
    parts = []
    if go.say:
        parts.append("says " + ", ".join(map(str, go.say)))
    if go.reason:
        parts.append(f"reason {go.reason}")
    return f" ({'; '.join(parts)})" if parts else ""


def _describe(m: Machine, name: str, texts: Texts | None) -> str:
    st = m.states[name]
    label = state_label(st, texts)
    return f"{name} [{kind_of(st)}]" + (f" 「{label}」" if label else "")


def text(m: Machine, texts: Texts | None = None) -> str:
    """Return the phone tree as an indented text tree; each state is drawn once, then referred to."""
    roots = sections(m)
    owner, _ = _owners(m, roots)
    drawn: set[str] = set()
    back, give_up = _default(Menu, "back"), _default(Menu, "give_up")
    lines = [
        f"Every menu, unless noted: {REPEAT_KEY} repeats, {AGENT_KEY} → {AGENT}, {BACK_KEY} → {back}, "
        f"silence or wrong keys: {m.reprompts} re-prompts, then → {give_up}.",
        "↑ / ↓: drawn in full above / below.",
        "",
        f"a call comes in → {m.start.target}{_extras(Go('', m.start.say, m.start.reason))}",
        f"a call the hotline lost track of → {m.resume.target}{_extras(m.resume)}",
        f"a system failure → {m.failure.target}{_extras(m.failure)}",
    ]
    if m.restart is not None:
        lines.insert(-1, f"a call in a state this release does not have → {m.restart.target}{_extras(m.restart)}")
    lines[-1:-1] = [f"a call in {old}, renamed by a release → {new}" for old, new in sorted(m.renamed.items())]

    def walk(name: str, indent: str) -> None:
        drawn.add(name)
        out = edges(m, name, texts)
        for i, e in enumerate(out):
            last = i == len(out) - 1
            head = f"{indent}{'└─' if last else '├─'} {e.label} → "
            target = e.go.target
            if owner.get(target) == (name, i) and target not in drawn:
                lines.append(head + _describe(m, target, texts) + _extras(e.go))
                walk(target, indent + ("   " if last else "│  "))
            else:
                lines.append(f"{head}{target} {'↑' if target in drawn else '↓'}{_extras(e.go)}")

    for root in roots:
        lines += ["", _describe(m, root, texts)]
        walk(root, "")
    return "\n".join(lines) + "\n"


# -- graphs -----------------------------------------------------------------------------------------
def _graph_edges(m: Machine, texts: Texts | None) -> list[tuple[str, str, str]]:
    """Return (from, to, label) for every drawn transition; those between the same two states merged."""
    merged: dict[tuple[str, str], list[str]] = {}
    for name in m.states:
        for e in edges(m, name, texts):
            label = e.label + (f" ({e.go.reason})" if e.go.reason else "")
            labels = merged.setdefault((name, e.go.target), [])
            if label not in labels:
                labels.append(label)
    return [(a, b, " / ".join(labels)) for (a, b), labels in merged.items()]


def _call_node(m: Machine) -> str:
    """Return a node name no state has, for where calls come from."""
    node = "_call"
    while node in m.states:
        node += "_"
    return node


def _entries(m: Machine) -> list[tuple[str, str]]:
    return [(m.start.target, "start"), (m.resume.target, "resume"), (m.failure.target, "failure")]


MERMAID_SHAPES = {
    Menu: ('["', '"]'), Entry: ('[/"', '"/]'), Action: ('("', '")'), Record: ('[("', '")]'),
    Transfer: ('[["', '"]]'), Hangup: ('(["', '"])'),
}


def _mermaid_text(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;")


def _mermaid_id(name: str) -> str:
    node = re.sub(r"\W", "_", name)
    return f"{node}_" if node.lower() == "end" else node


def mermaid(m: Machine, texts: Texts | None = None, *, traffic: Traffic | None = None) -> str:
    """Return the phone tree as a Mermaid `flowchart TD`: every state a node, every drawn transition an edge.

    With `traffic`, each node also says how many calls ended there (and links to `href`), each
    transition how many calls took it; transitions calls took that are not drawn (a menu's built-in
    keys) are added as dotted edges."""
    call = _mermaid_id(_call_node(m))
    lines = ["flowchart TD", f'    {call}(("call"))']
    for name, st in m.states.items():
        label = state_label(st, texts)
        if traffic is None:
            body = _mermaid_text(f"{name}<br/>{kind_of(st)}" + (f"<br/>{label}" if label else ""))
        else:
            body = _mermaid_text("<br/>".join(_traffic_node(name, st, texts, traffic)))
        left, right = MERMAID_SHAPES[type(st)]
        lines.append(f"    {_mermaid_id(name)}{left}{body}{right}")
    for target, why in _entries(m):
        lines.append(f'    {call} -->|"{why}"| {_mermaid_id(target)}')
    for a, b, label in _graph_edges(m, texts):
        if traffic is not None:
            label += " · " + traffic.took.format(n=traffic.taken.get((a, b), 0))
        lines.append(f'    {_mermaid_id(a)} -->|"{_mermaid_text(label)}"| {_mermaid_id(b)}')
    if traffic is not None:
        for (a, b), n in _undrawn(m, texts, traffic):
            lines.append(f'    {_mermaid_id(a)} -.->|"{_mermaid_text(traffic.took.format(n=n))}"| {_mermaid_id(b)}')
        for name in m.states:
            url = traffic.href(name) if traffic.href and traffic.ended.get(name) else None
            if url:
                lines.append(f'    click {_mermaid_id(name)} href "{url.replace(chr(34), "%22")}" _top')
    return "\n".join(lines) + "\n"


def _traffic_node(name: str, st: State, texts: Texts | None, traffic: Traffic) -> list[str]:
    """Return a state's lines on a map with traffic: its name (Mandarin first), its code, the calls ended there."""
    shown = traffic.names.get(name) or state_label(st, texts)
    lines = [shown, name] if shown and shown != name else [name]
    n = traffic.ended.get(name, 0)
    return lines + [traffic.ended_here.format(n=n)] if n else lines


def _undrawn(m: Machine, texts: Texts | None, traffic: Traffic) -> list[tuple[tuple[str, str], int]]:
    """Return the transitions calls took between two states that the flow does not draw (the built-in
    0, * and give-ups), most taken first; a state to itself (a repeat) is left out."""
    drawn = {(a, b) for a, b, _ in _graph_edges(m, texts)}
    extra = [(pair, n) for pair, n in traffic.taken.items()
             if n and pair not in drawn and pair[0] != pair[1] and pair[0] in m.states and pair[1] in m.states]
    return sorted(extra, key=lambda kv: (-kv[1], kv[0]))


DOT_SHAPES = {Menu: "box", Entry: "parallelogram", Action: "ellipse", Record: "cylinder", Transfer: "box3d",
              Hangup: "doubleoctagon"}


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(m: Machine, texts: Texts | None = None, *, traffic: Traffic | None = None) -> str:
    """Return the phone tree as a Graphviz `digraph`: every state a node, every drawn transition an edge.

    With `traffic`: the map of a period's calls (see `traffic_dot`)."""
    if traffic is not None:
        return traffic_dot(m, texts, traffic)
    call = _dot_text(_call_node(m))
    lines = [
        "digraph flow {",
        '    graph [rankdir=TB, fontname="sans-serif"];',
        '    node [fontname="sans-serif", fontsize=10];',
        '    edge [fontname="sans-serif", fontsize=9];',
        f'    {call} [shape=circle, label="call"];',
    ]
    for name, st in m.states.items():
        label = state_label(st, texts)
        body = f"{name}\n{kind_of(st)}" + (f"\n{label}" if label else "")
        lines.append(f"    {_dot_text(name)} [shape={DOT_SHAPES[type(st)]}, label={_dot_text(body)}];")
    for target, why in _entries(m):
        lines.append(f"    {call} -> {_dot_text(target)} [label={_dot_text(why)}, style=dashed];")
    for a, b, label in _graph_edges(m, texts):
        lines.append(f"    {_dot_text(a)} -> {_dot_text(b)} [label={_dot_text(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


TRAFFIC_INK, IDLE_INK, UNDRAWN_INK, ENDED_FILL = "#0b5cad", "#9aa5b1", "#b45309", "#fde8d7"
EDGE_CHARS = 16  # a transition's label on the traffic map is cut to this many characters


def _pen(n: int, most: int) -> str:
    """Return an edge's width for its count: 1 for none, up to 5 for the most taken."""
    return f"{1 + 4 * n / most:.1f}" if most else "1.0"


def traffic_dot(m: Machine, texts: Texts | None, traffic: Traffic) -> str:
    """Return the map of a period's calls as a Graphviz `digraph`: every state with how many calls
    ended there (filled, and linked to `href` with target _top, when any did), every drawn transition
    with how many calls took it (thicker the more; grey when none did; its label cut to EDGE_CHARS,
    in full in its tooltip), and the transitions calls took that the flow does not draw (its menus'
    built-in keys) as dotted edges with their count."""
    call = _dot_text(_call_node(m))
    undrawn = _undrawn(m, texts, traffic)
    most = max([n for n in traffic.taken.values()] + [0])
    lines = [
        "digraph flow {",
        '    graph [rankdir=TB, fontname="sans-serif", nodesep=0.2, ranksep=0.3];',
        '    node [fontname="sans-serif", fontsize=11];',
        '    edge [fontname="sans-serif", fontsize=10];',
        f'    {call} [shape=circle, label="call"];',
    ]
    for name, st in m.states.items():
        n = traffic.ended.get(name, 0)
        body = "\n".join(_traffic_node(name, st, texts, traffic))
        attrs = [f"shape={DOT_SHAPES[type(st)]}", f"label={_dot_text(body)}",
                 f"tooltip={_dot_text(f'{name}: ' + traffic.ended_here.format(n=n))}"]
        url = traffic.href(name) if traffic.href and n else None
        if n:
            attrs += ["style=filled", f'fillcolor="{ENDED_FILL}"', "penwidth=1.6"]
        if url:  # Graphviz writes a URL into its SVG as given: its & must already be &amp;
            attrs += [f"URL={_dot_text(url.replace('&', '&amp;'))}", 'target="_top"']
        lines.append(f"    {_dot_text(name)} [{', '.join(attrs)}];")
    for target, why in _entries(m):
        lines.append(f"    {call} -> {_dot_text(target)} [label={_dot_text(why)}, style=dashed];")
    for a, b, label in _graph_edges(m, texts):
        n = traffic.taken.get((a, b), 0)
        count = traffic.took.format(n=n)
        ink = TRAFFIC_INK if n else IDLE_INK
        short = label if len(label) <= EDGE_CHARS else label[:EDGE_CHARS - 1] + "…"  # in full in the tooltip
        lines.append(f"    {_dot_text(a)} -> {_dot_text(b)} [label={_dot_text(short + chr(10) + count)}, "
                     f'color="{ink}", fontcolor="{ink}", penwidth={_pen(n, most)}, '
                     f"tooltip={_dot_text(f'{a} → {b}: {label}: {count}')}];")
    for (a, b), n in undrawn:
        count = traffic.took.format(n=n)
        lines.append(f"    {_dot_text(a)} -> {_dot_text(b)} [label={_dot_text(count)}, style=dotted, "
                     f'color="{UNDRAWN_INK}", fontcolor="{UNDRAWN_INK}", penwidth={_pen(n, most)}, '
                     f"tooltip={_dot_text(f'{a} → {b}: {count}')}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


FORMATS = {"text": text, "mermaid": mermaid, "dot": dot}
