"""The reports' charts, drawn on the server as SVG: no script, no library, nothing from elsewhere.

Each chart is an `<svg role="img">` whose `<title>` says what it shows; each bar carries a
`<title>` of its own (its label and count: a screen reader reads it, a mouse shows it). The page
puts the same numbers in a table under the chart. Sizes are in the viewBox's units: the chart
scales with its box (`.report-chart` in console.css), its text with it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 360  # the viewBox's width; a phone shows it at about 0.9, a desktop column at about 1.3
FONT = 12
ROW = 24  # a horizontal bar's line


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its length in the chart's unit, what it says, and a CSS class."""

    label: str
    value: float
    title: str
    text: str = ""  # printed at the bar's end (horizontal bars); none when empty
    tone: str = ""


def nice_top(value: float) -> float:
    """Return the axis' top for a largest count: 2, 4, 6, 8 or 10 times a power of ten, at least 2,
    so that its half (the middle grid line) is a whole number too."""
    if value <= 2:
        return 2
    power = 10.0 ** math.floor(math.log10(value))
    return min(step * unit for unit in (power / 10, power) for step in (2, 4, 6, 8, 10) if step * unit >= value)


def whole(value: float) -> str:
    """Print an axis value as a whole number."""
    return f"{value:.0f}"


def _svg(title: str, height: float, body: list[str]) -> Markup:
    head = (f'<svg class="report-chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
            f'font-size="{FONT}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>')
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704  (every text in it went through escape())


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def columns(bars: Sequence[Bar], title: str, *, top: float | None = None,
            tick: Callable[[float], str] = whole, every: int = 1) -> Markup:
    """Return vertical bars side by side (calls per hour, containment per day).

    top: the axis' top (default: a round number above the largest bar); every: label every n-th bar."""
    left, right, above, plot = 38, 6, 8, 140
    height = above + plot + 20
    top = top or nice_top(max([b.value for b in bars] + [0]))
    slot = (WIDTH - left - right) / max(len(bars), 1)
    body = []
    for i in range(3):  # grid lines at 0, half and the top
        y = above + plot - plot * i / 2
        value = escape(tick(top * i / 2))
        body.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{WIDTH - right}" y2="{y:.1f}"/>'
                    f'<text class="axis" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    for i, bar in enumerate(bars):
        h = plot * min(bar.value, top) / top
        w = min(max(slot * 0.72, 1), 40)  # one day's bar no wider than a chart of a week's
        x = left + slot * (i + 0.5) - w / 2
        body.append(f'<rect class="bar {escape(bar.tone)}" x="{x:.1f}" y="{above + plot - h:.1f}" '
                    f'width="{w:.1f}" height="{h:.1f}"><title>{escape(bar.title)}</title></rect>')
        if i % every == 0:
            body.append(f'<text class="axis" x="{left + slot * (i + 0.5):.1f}" y="{above + plot + 15}" '
                        f'text-anchor="middle">{escape(bar.label)}</text>')
    return _svg(title, height, body)


def rows(bars: Sequence[Bar], title: str, *, label_width: int = 140) -> Markup:
    """Return horizontal bars one under another, their labels on the left and their counts at their ends."""
    room = WIDTH - label_width - 46  # the longest bar; its count after it
    most = max([b.value for b in bars] + [0]) or 1
    chars = label_width // FONT  # Chinese characters are about one em wide
    body = []
    for i, bar in enumerate(bars):
        y = 4 + ROW * i
        w = room * bar.value / most
        body.append(f'<text class="label" x="{label_width - 6}" y="{y + ROW / 2 + 4:.1f}" '
                    f'text-anchor="end">{escape(_cut(bar.label, chars))}</text>'
                    f'<rect class="bar {escape(bar.tone)}" x="{label_width}" y="{y + 4}" width="{w:.1f}" '
                    f'height="{ROW - 8}"><title>{escape(bar.title)}</title></rect>')
        if bar.text:
            body.append(f'<text class="value" x="{label_width + w + 4:.1f}" y="{y + ROW / 2 + 4:.1f}">'
                        f"{escape(bar.text)}</text>")
    return _svg(title, 8 + ROW * len(bars), body)
