"""The operators' pages: the call report with its charts and CSV, the phone tree with a period's
traffic on it, the calls that ended in a state, and today's figures on the dashboard.

Every figure comes from `models.reports` (one set of definitions, the same as `report calls`);
these pages only lay them out, with the codes' Mandarin labels from the prompt catalogue. They
read through `reader()`: no write lock on SQLite, never in a webhook's way.
"""
from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import select

from ivr.callflow import draw
from ivr.callflow.machine import Machine
from ivr.config import Settings
from ivr.console import reader
from ivr.console.cache import Recent
from ivr.console.charts import Bar, columns, rows
from ivr.console.query import BadQuery, day_arg
from ivr.console.views import bp
from models.calls import CallState
from models.clock import local_today, utcnow
from models.reports import RATING_KEYS, CallReport, Period, as_csv, call_report, containment, flow_traffic

PAGE = 50  # calls a page in the list of calls
LONGEST = 366  # days a period may cover
TODAY_TTL = timedelta(seconds=3)  # figures reused this long; the dashboard asks every 2 s: at most 5 s stale
TRAFFIC_TTL = timedelta(seconds=15)  # the flow map's counts, per period and hotline
DOT = "dot"  # Graphviz, found on PATH (Debian's graphviz package)
DOT_TIMEOUT = 20.0
LEGS = ("answered", "no_answer", "busy", "failed")


@dataclass(frozen=True)
class Query:
    """A page's period (local days) and hotline (None: all of them)."""

    period: Period
    hotline: str | None

    def args(self) -> dict[str, Any]:
        """Return the query string that asks for the same period and hotline."""
        return {"from": self.period.start.isoformat(), "to": self.period.end.isoformat(),
                "hotline": self.hotline or ""}

    @property
    def days(self) -> str:
        """Say the period in Chinese: one day, or from … to …."""
        start, end = self.period.start, self.period.end
        return f"{start:%Y-%m-%d}" if start == end else f"{start:%Y-%m-%d} 至 {end:%Y-%m-%d}"


@dataclass(frozen=True)
class Traffic:
    """What the flow map draws of a period: the transitions taken, the states ended in, the calls."""

    taken: Counter[tuple[str, str]]
    ended: Counter[str]
    calls: int


@dataclass
class Chart:
    """A chart and its numbers as a table (headers, then one row a bar)."""

    id: str
    title: str
    svg: Markup | None  # None: nothing to draw (the note says so)
    headers: tuple[str, ...]
    table: list[tuple[Any, ...]] = field(default_factory=list)
    note: str = ""


def init_app(app: Flask) -> None:
    """Give the app the console's per-worker caches: today's figures, the flow drawings."""
    app.extensions["console_cache"] = {"today": Recent[dict[str, Any]](TODAY_TTL, size=4),
                                       "traffic": Recent[Traffic](TRAFFIC_TTL, size=16),
                                       "drawings": Recent[str | None](timedelta(minutes=10), size=16)}


def settings() -> Settings:
    """Return the app's settings."""
    value: Settings = current_app.extensions["settings"]
    return value


def hotline_names() -> list[str]:
    """Return the names of the hotlines (settings.hotlines), sorted."""
    return sorted({h.name for h in settings().hotlines.values()})


def query() -> Query:
    """Read from, to and hotline off the query string, as `report calls` reads its options:
    from defaults to today (or to `to`, when that is earlier), to to from. BadQuery when wrong."""
    s = settings()
    start, end = day_arg("from", "开始日期"), day_arg("to", "结束日期")
    today = local_today(s.tz)
    first = start or (end if end and end < today else today)
    last = end or first
    if last < first:
        raise BadQuery(f"结束日期 {last} 早于开始日期 {first}。")
    if (last - first).days + 1 > LONGEST:
        raise BadQuery(f"一次最多查询 {LONGEST} 天，请缩短时间段。")
    hotline = (request.args.get("hotline") or "").strip() or None
    if hotline is not None and hotline not in hotline_names():
        raise BadQuery(f"没有名为“{hotline}”的热线；可选：{'、'.join(hotline_names())}。")
    return Query(Period(first, last, s.tz), hotline)


def the_report(q: Query, now: datetime | None = None) -> CallReport:
    """Count the period's calls (models.reports.call_report, with the settings' hotline scope)."""
    return call_report(reader(), q.period, hotline=q.hotline, now=now or utcnow(), **settings().report_scope())


@bp.errorhandler(BadQuery)
def bad_query(error: BadQuery) -> Any:
    """A wrong date, period or hotline: say what is wrong, in Chinese, with the form to correct it (400)."""
    action = request.path.removesuffix(".csv")
    values = {k: request.args.get(k, "") for k in ("from", "to", "hotline", "ended_in")}
    return render_template("agent/query_error.html", message=str(error), action=action, values=values,
                           hotlines=hotline_names()), 400


# -- labels -----------------------------------------------------------------------------------------
def label(kind: str, code: str | None) -> str:
    """Return a code's Mandarin label from the catalogue (the code itself without one)."""
    text: str = current_app.extensions["catalogue"].label(kind, code)
    return text


def machine() -> Machine:
    """Return the validated flow the app runs."""
    value: Machine = current_app.extensions["machine"]
    return value


def state_names() -> dict[str, str]:
    """Return each state's Mandarin name: its label.state.* label, else what its prompt says first."""
    texts = current_app.extensions["catalogue"].texts
    out = {}
    for name, st in machine().states.items():
        named = label("state", name)
        out[name] = named if named != name else (draw.state_label(st, texts) or name)
    return out


def percent(share: float) -> str:
    """Show a share (0.273) as a percentage (27.3%)."""
    return f"{share * 100:.1f}%"


# -- /agent/reports ---------------------------------------------------------------------------------
def answers(figures: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Split the agent legs by how they were answered: within 15 s, later, not answered (code, count, label)."""
    legs = figures["agent_legs"]
    within = legs["answered_within_15s"]
    return [("within", within, "15秒内接听"), ("later", legs["answered"] - within, "超过15秒接听"),
            ("missed", legs["no_answer"] + legs["busy"] + legs["failed"], "未接听")]


def charts(report: CallReport, figures: dict[str, Any]) -> list[Chart]:
    """Return the report's five charts, each with its numbers as a table."""
    names = state_names()
    hours = report.per_hour()
    per_hour = Chart("per-hour", "每小时来电", columns(
        [Bar(f"{h}", n, f"{h}:00–{h}:59 来电 {n} 通") for h, n in enumerate(hours)],
        "每小时来电（本时段各天合计）", every=3), ("时段", "来电"),
        [(f"{h:02d}:00–{h:02d}:59", n) for h, n in enumerate(hours)])
    days = [(day, calls, contained, containment(contained, calls)) for day, calls, contained in report.per_day()]
    per_day = Chart("per-day", "每日自助办结率", columns(
        [Bar(f"{d.month}/{d.day}", share * 100, f"{d:%Y-%m-%d} 自助办结率 {percent(share)}（{contained}/{calls} 通）")
         for d, calls, contained, share in days],
        "每日自助办结率", top=100, tick=lambda v: f"{v:.0f}%", every=max(1, math.ceil(len(days) / 8))),
        ("日期", "来电", "自助办结", "自助办结率"),
        [(f"{d:%Y-%m-%d}", calls, contained, percent(share)) for d, calls, contained, share in days])
    reasons = [(label("reason", code), n) for code, n in figures["transfer_reasons"].items()]
    by_reason = Chart("reasons", "转人工原因", rows(
        [Bar(text, n, f"{text} {n} 通", f"{n}") for text, n in reasons], "转人工原因"),
        ("原因", "来电"), reasons)
    abandoned = [(names.get(state, state), n) for state, n in figures["abandoned_at"].items()]
    by_state = Chart("abandoned", "未办结挂机时所在环节", rows(
        [Bar(text, n, f"{text} {n} 通", f"{n}", "warn") for text, n in abandoned], "未办结挂机时所在环节")
        if abandoned else None, ("环节", "来电"), abandoned, "" if abandoned else "本时段没有未办结挂机的来电。")
    split = answers(figures)
    by_answer = Chart("answers", "人工接听（15秒标准）", rows(
        [Bar(text, n, f"{text} {n} 通", f"{n}", code) for code, n, text in split], "人工接听是否在15秒内"),
        ("人工接听", "来电"), [(text, n) for _code, n, text in split])
    return [per_hour, per_day, by_reason, by_state, by_answer]


def key_figures(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return the figures an operator reads first: (id, label, value shown)."""
    d = figures["duration_s"]
    return [
        ("calls", "来电", str(figures["calls"])),
        ("self_service", "自助办结", str(figures["self_service"])),
        ("transferred", "转人工", str(figures["transferred"])),
        ("abandoned", "未办结挂机", str(figures["abandoned"])),
        ("containment", "自助办结率", percent(figures["containment"])),
        ("repeat_callers_7d", "7天内重复来电", str(figures["repeat_callers_7d"])),
        ("p50", "通话时长中位数", f"{d['p50']} 秒"),
        ("p90", "90%通话不超过", f"{d['p90']} 秒"),
    ]


def ratings(figures: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Return the ratings as (key pressed, Mandarin label, count)."""
    return [(key, label("rating", rating), figures["ratings"][key]) for rating, key in RATING_KEYS.items()]


@bp.get("/reports")
def reports() -> Any:
    """The call report of a period and hotline: key figures, charts, tables, a CSV download."""
    q = query()
    report = the_report(q)
    figures = report.figures()
    return render_template(
        "agent/reports.html", q=q, figures=figures, key_figures=key_figures(figures), ratings=ratings(figures),
        charts=charts(report, figures), hotlines=hotline_names(), legs=LEGS,
        csv_url=url_for("agent.reports_csv", **q.args()))


@bp.get("/reports.csv")
def reports_csv() -> Response:
    """The same figures as `report calls --format csv`, UTF-8 with a BOM (Excel on Chinese Windows)."""
    q = query()
    body = "\ufeff" + as_csv(the_report(q).figures())
    name = f"calls-{q.period.start}-{q.period.end}" + (f"-{q.hotline}" if q.hotline else "") + ".csv"
    return Response(body.encode("utf-8"), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- /agent/flow ------------------------------------------------------------------------------------
def render_svg(source: str) -> str | None:
    """Return Graphviz's SVG of a DOT source (from <svg>, to inline it), or None without a working `dot`."""
    exe = shutil.which(DOT)
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-Tsvg"], input=source.encode("utf-8"), capture_output=True,
                              timeout=DOT_TIMEOUT, check=True)
    except (OSError, subprocess.SubprocessError):
        current_app.logger.exception("dot -Tsvg failed: the flow map is shown as text")
        return None
    svg = done.stdout.decode("utf-8", errors="replace")
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else None


def drawing(source: str) -> str | None:
    """Return the SVG of a DOT source, drawn once per worker while it is asked for again (10 min);
    a drawing that failed is tried again next time."""
    key = hashlib.sha256(source.encode("utf-8")).hexdigest()
    cache: Recent[str | None] = current_app.extensions["console_cache"]["drawings"]
    svg, _made = cache.get(key, utcnow(), lambda: render_svg(source))
    if svg is None:
        cache.forget(key)
    return svg


def traffic_of(q: Query) -> tuple[Traffic, datetime]:
    """Return the period's traffic through the flow (models.reports.flow_traffic) and when it was
    counted: at most once per TRAFFIC_TTL per worker for a period and hotline."""
    def count() -> Traffic:
        report = the_report(q)
        taken, ended = flow_traffic(reader(), report)
        return Traffic(taken, ended, len(report.calls))

    cache: Recent[Traffic] = current_app.extensions["console_cache"]["traffic"]
    return cache.get((q.period.start, q.period.end, q.hotline), utcnow(), count)


@bp.get("/flow")
def flow_map() -> Any:
    """The phone tree drawn from the declared flow, with how many calls of the period took each
    transition and ended in each state; a state links to those calls."""
    q = query()
    traffic, counted = traffic_of(q)
    names = state_names()
    args = q.args()
    drawn = draw.Traffic(traffic.taken, traffic.ended, names=names, took="{n} 通", ended_here="在此结束 {n} 通",
                         href=lambda state: url_for("agent.calls", ended_in=state, **args))
    texts = current_app.extensions["catalogue"].texts
    svg = drawing(draw.dot(machine(), texts, traffic=drawn))
    fallback = None if svg is not None else draw.mermaid(machine(), texts, traffic=drawn)
    ends = sorted(((state, n) for state, n in traffic.ended.items() if n), key=lambda kv: (-kv[1], kv[0]))
    busiest = sorted(((pair, n) for pair, n in traffic.taken.items() if n), key=lambda kv: (-kv[1], kv[0]))[:15]
    shown = Markup(svg) if svg else None  # noqa: S704  (Graphviz's SVG of our own DOT: it escapes the labels)
    return render_template("agent/flow.html", q=q, svg=shown, fallback=fallback, ends=ends, busiest=busiest,
                           names=names, calls=traffic.calls,
                           ended_total=sum(traffic.ended.values()), hotlines=hotline_names(),
                           counted=counted.astimezone(settings().tz).strftime("%H:%M:%S"), start=machine().start.target)


# -- /agent/calls -----------------------------------------------------------------------------------
@bp.get("/calls")
def calls() -> Any:
    """The recorded calls of a period that ended in a state (without one: all the period's calls),
    newest first, 50 a page."""
    q = query()
    state = (request.args.get("ended_in") or "").strip() or None
    names = state_names()
    if state is not None and state not in names:
        raise BadQuery(f"话务流程中没有“{state}”这个环节。")
    page_text = (request.args.get("page") or "1").strip()
    if not page_text.isdigit() or int(page_text) < 1:
        raise BadQuery(f"页码“{page_text}”无效。")
    page = int(page_text)
    report = the_report(q)
    chosen = [c for c in report.calls if state is None or (c.ended and c.state == state)]
    chosen.sort(key=lambda c: (c.started_at, c.call_sid), reverse=True)
    pages = max(1, math.ceil(len(chosen) / PAGE))
    if page > pages:
        raise BadQuery(f"没有第 {page} 页：共 {pages} 页。")
    shown = chosen[(page - 1) * PAGE: page * PAGE]
    pages_args = q.args() | ({"ended_in": state} if state else {})
    masked: dict[str, str] = {}
    if shown:
        query_ = select(CallState.call_sid, CallState.from_masked).where(
            CallState.call_sid.in_([c.call_sid for c in shown]))
        masked = {sid: number for sid, number in reader().execute(query_)}
    return render_template("agent/calls.html", q=q, state=state, state_name=names.get(state or "", ""),
                           calls=shown, masked=masked, page=page, pages=pages, total=len(chosen), names=names,
                           hotlines=hotline_names(), page_url=lambda n: url_for("agent.calls", **pages_args, page=n))


# -- the dashboard's figures ------------------------------------------------------------------------
def today_figures() -> tuple[dict[str, Any], datetime]:
    """Return today's report figures (all hotlines) and when they were counted: at most once per
    TODAY_TTL per worker, however many dashboards ask."""
    now = utcnow()
    tz = settings().tz
    day = now.astimezone(tz).date()
    cache: Recent[dict[str, Any]] = current_app.extensions["console_cache"]["today"]

    def count() -> dict[str, Any]:
        return the_report(Query(Period(day, day, tz), None), now).figures()

    return cache.get(day, now, count)


def today_context() -> dict[str, Any]:
    """What the dashboard's figures fragment shows."""
    figures, made = today_figures()
    legs = figures["agent_legs"]
    return {"today": figures, "today_percent": percent(figures["containment"]), "today_answered": legs["answered"],
            "today_as_of": made.astimezone(settings().tz).strftime("%H:%M:%S")}


@bp.get("/today")
def today() -> Any:
    """Today's figures alone, for the dashboard to refresh itself."""
    return render_template("agent/_today.html", **today_context())
