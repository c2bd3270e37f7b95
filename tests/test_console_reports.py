"""The operators' pages in the console: the call report with its charts and CSV, the phone tree with
the period's traffic on it, the calls that ended in a state, today's figures on the dashboard.

Whole calls are placed through the emulator; what the pages show is compared with the figures of
`report calls` (models.reports: one set of definitions)."""
from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

from ivr.console import reports
from tests.support import ALICE, verified

CITY = "+8653212345"
A, B, C, D = "+8613911110001", "+8613911110002", "+8613911110003", "+8613911110004"
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"


@pytest.fixture
def morning(ledger, call, clock):
    """Five calls on Monday morning: one finished on its own, two put through (answered after 10 s
    and after 20 s), two given up (at the main menu, and keying the ID number, from a number that
    had called before). Returns their CallSids by name."""
    ledger.add(ALICE)
    own = verified(call, caller=A, call_duration=60).press("1")  # the loss reported
    own.press("2").press("1")  # end the service, satisfied
    assert own.ended and own.prompts[-1] == "common.goodbye"
    clock.tick(1)
    quick = call(caller=B, call_duration=120).dial().press("0")
    clock.tick(10)
    quick.agent_leg_ends("completed").press("2")  # basically satisfied
    late = call(caller=C, call_duration=150).dial().press("0")
    clock.tick(20)
    late.agent_leg_ends("completed").hang_up()  # at the rating
    menu = call(caller=D, call_duration=5).dial().hang_up()
    clock.tick(60)
    keying = call(caller=D, call_duration=15).dial().press("1").hang_up()
    return {"own": own.call_sid, "quick": quick.call_sid, "late": late.call_sid, "menu": menu.call_sid,
            "keying": keying.call_sid}


def cli_report(runner, *args: str, fmt: str = "json") -> str:
    result = runner.invoke(args=["report", "calls", "--format", fmt, *args])
    assert result.exit_code == 0, result.output
    return result.output


def page(console, path: str, status: int = 200) -> str:
    resp = console.client.get(path)
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    return resp.get_data(as_text=True)


def tile(text: str, element_id: str) -> str:
    """Return the number a figure's tile shows."""
    return re.search(rf'id="{element_id}"><span class="num">([^<]*)</span>', text).group(1)


def bar_titles(text: str, chart: str) -> list[str]:
    """Return the <title> of every bar of a chart (what a screen reader reads for each)."""
    section = re.search(rf'<section class="card chart-card" id="chart-{chart}">(.*?)</section>', text, re.S).group(1)
    return re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", section)


def flow_svg(text: str) -> ET.Element:
    """Return the flow map's inline SVG, parsed."""
    return ET.fromstring(re.search(r'<div class="flowmap" id="flowmap"[^>]*>(<svg.*?</svg>)', text, re.S).group(1))


def drawn(svg: ET.Element, kind: str) -> dict[str, tuple[list[str], str | None]]:
    """Return each node or edge of the map by its Graphviz title ("main", "main->loss"): its texts and link."""
    out = {}
    for g in svg.iter(f"{SVG}g"):
        if g.get("class") == kind:
            links = [a.get(XLINK) for a in g.iter(f"{SVG}a") if a.get(XLINK)]
            out[g.find(f"{SVG}title").text] = ([t.text for t in g.iter(f"{SVG}text")], links[0] if links else None)
    return out


# -- access -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/agent/reports", "/agent/reports.csv", "/agent/flow", "/agent/calls?ended_in=main",
                                  "/agent/today"])
def test_the_report_pages_send_an_anonymous_visitor_to_the_login_page(client, path):
    resp = client.get(path)
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/agent/login")


def test_every_page_links_to_the_reports_and_the_flow_map(agent):
    nav = re.search(r"<nav>(.*?)</nav>", page(agent, "/agent/holders"), re.S).group(1)
    assert '<a href="/agent/reports">报表</a>' in nav and '<a href="/agent/flow">话务流程图</a>' in nav


# -- /agent/reports ---------------------------------------------------------------------------------
def test_the_report_shows_the_mornings_figures_as_report_calls_counts_them(agent, runner, morning):
    figures = json.loads(cli_report(runner))
    assert (figures["calls"], figures["self_service"], figures["transferred"], figures["abandoned"]) == (5, 1, 2, 2)
    text = page(agent, "/agent/reports")
    shown = {key: tile(text, f"fig-{key}") for key in
             ("calls", "self_service", "transferred", "abandoned", "containment", "repeat_callers_7d", "p50", "p90")}
    assert shown == {"calls": "5", "self_service": "1", "transferred": "2", "abandoned": "2", "containment": "20.0%",
                     "repeat_callers_7d": "1", "p50": "60 秒", "p90": "150 秒"}
    assert [re.search(rf'id="rating-{k}">(\d+)<', text).group(1) for k in "123"] == ["1", "1", "0"]
    assert re.search(r'id="leg-answered">(\d+)<', text).group(1) == "2"
    assert re.search(r'id="leg-answered_within_15s">(\d+)<', text).group(1) == "1"
    assert '<tr id="service-loss"><td>口头挂失</td><td>2</td><td>1</td></tr>' in text
    assert '2026-11-30 · 全部热线' in text


def test_the_charts_draw_each_figure_with_a_title_per_bar(agent, morning):
    text = page(agent, "/agent/reports")
    hours = bar_titles(text, "per-hour")
    assert len(hours) == 24 and hours[10] == "10:00–10:59 来电 5 通" and hours[9] == "9:00–9:59 来电 0 通"
    assert bar_titles(text, "per-day") == ["2026-11-30 自助办结率 20.0%（1/5 通）"]
    assert bar_titles(text, "reasons") == ["来电人要求人工 2 通", "长时间无按键 0 通", "多次按键错误 0 通",
                                           "身份证号码多次输入有误 0 通", "系统故障 0 通", "12345直接转人工 0 通"]
    assert bar_titles(text, "abandoned") == ["输入身份证号码 1 通", "主菜单 1 通"]
    assert bar_titles(text, "answers") == ["15秒内接听 1 通", "超过15秒接听 1 通", "未接听 0 通"]
    assert text.count('<svg class="report-chart"') == 5 and 'role="img"' in text
    assert "<td>输入身份证号码</td><td>1</td>" in text  # the numbers in a table as well


def test_a_period_and_a_hotline_choose_the_calls_counted(agent, call, clock):
    call(caller=A).dial().hang_up()
    call(caller=B, dialled=CITY).dial().silence().agent_leg_ends("completed").hang_up()
    clock.tick(timedelta(days=1))
    call(caller=C).dial().hang_up()
    assert tile(page(agent, "/agent/reports?from=2026-11-30&to=2026-12-01"), "fig-calls") == "3"
    assert tile(page(agent, "/agent/reports?from=2026-11-30"), "fig-calls") == "2"
    assert tile(page(agent, "/agent/reports"), "fig-calls") == "1"  # today: 1 December
    city = page(agent, "/agent/reports?from=2026-11-30&hotline=12345")
    assert (tile(city, "fig-calls"), tile(city, "fig-transferred")) == ("1", "1")
    assert bar_titles(city, "reasons")[-1] == "12345直接转人工 1 通"


def test_the_csv_download_is_the_figures_of_report_calls_with_a_bom_for_excel(agent, runner, morning):
    resp = agent.client.get("/agent/reports.csv?from=2026-11-30&to=2026-11-30&hotline=12333")
    assert resp.status_code == 200
    assert resp.data == b"\xef\xbb\xbf" + cli_report(runner, "--hotline", "12333", fmt="csv").encode("utf-8")
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="calls-2026-11-30-2026-11-30-12333.csv"'
    assert resp.data.decode("utf-8-sig").splitlines()[:3] == ["figure,value", "from,2026-11-30", "to,2026-11-30"]
    text = page(agent, "/agent/reports?from=2026-11-30&to=2026-11-30&hotline=12333")
    assert 'href="/agent/reports.csv?from=2026-11-30&amp;to=2026-11-30&amp;hotline=12333"' in text


@pytest.mark.parametrize("path", ["/agent/reports", "/agent/reports.csv", "/agent/flow", "/agent/calls"])
@pytest.mark.parametrize("query, message", [
    ("from=2026-13-01", "开始日期“2026-13-01”不是有效的日期，请按 年-月-日 填写，例如 2026-12-01。"),
    ("from=2026-11-30&to=yesterday", "结束日期“yesterday”不是有效的日期"),
    ("from=2026-11-30&to=2026-11-29", "结束日期 2026-11-29 早于开始日期 2026-11-30。"),
    ("from=0001-01-01&to=9999-12-31", "开始日期“0001-01-01”超出可查询的范围（2000年至2099年）。"),
    ("from=2025-01-01&to=2026-11-30", "一次最多查询 366 天，请缩短时间段。"),
    ("hotline=12306", "没有名为“12306”的热线；可选：12333、12345。"),
])
def test_a_bad_date_or_hotline_is_refused_in_chinese_with_the_form_to_correct_it(agent, path, query, message):
    text = page(agent, f"{path}?{query}", status=400)
    assert message in html.unescape(text) and "查询条件有误" in text and 'id="period"' in text


@pytest.mark.parametrize("query, message", [
    ("ended_in=nowhere", "话务流程中没有“nowhere”这个环节。"),
    ("ended_in=main&page=0", "页码“0”无效。"),
    ("ended_in=main&page=2", "没有第 2 页：共 1 页。"),
])
def test_a_state_or_page_that_does_not_exist_is_refused_in_chinese(agent, query, message):
    assert message in html.unescape(page(agent, f"/agent/calls?{query}", status=400))


# -- /agent/flow ------------------------------------------------------------------------------------
def test_the_flow_map_counts_the_calls_that_took_each_key_and_ended_in_each_state(agent, morning):
    svg = flow_svg(page(agent, "/agent/flow"))
    edges, nodes = drawn(svg, "edge"), drawn(svg, "node")
    assert edges["main->loss"][0] == ["1 挂失", "2 通"]  # the loss and the caller keying the ID number
    assert edges["main->release"][0][-1] == "0 通"
    assert edges["main->agent"][0] == ["2 通"]  # the built-in 0: drawn dotted, with its count
    assert edges["agent->agent_dial"][0] == ["staffed", "2 通"]
    assert nodes["main"][0] == ["主菜单", "main", "在此结束 1 通"]
    assert nodes["goodbye"][0] == ["结束语", "goodbye", "在此结束 2 通"]
    assert nodes["main"][1] == "/agent/calls?ended_in=main&from=2026-11-30&to=2026-11-30&hotline="
    assert nodes["loss"] == (["选择口头挂失", "loss"], None)  # nobody ended there: no count, no link


def test_the_flow_maps_link_lists_exactly_the_calls_that_ended_in_that_state(agent, morning):
    nodes = drawn(flow_svg(page(agent, "/agent/flow")), "node")
    for state, names in (("goodbye", ["quick", "own"]), ("main", ["menu"]), ("auth_id", ["keying"]),
                         ("rating", ["late"])):
        text = page(agent, nodes[state][1])
        listed = re.findall(r'<a href="/agent/calls/(CA\w+)">详情</a>', text)
        assert listed == [morning[n] for n in names], state  # newest first
        assert f"共 {len(names)} 通" in text
    text = page(agent, nodes["main"][1])
    assert "在“主菜单”结束的来电" in text and "+86139****0004" in text and '<td class="nw">5 秒</td>' in text
    assert "<td>未办结挂机</td>" in text


def test_the_calls_that_ended_in_a_state_are_listed_fifty_a_page(agent, call, clock):
    sids = []
    for _ in range(51):
        sids.append(call(caller=A).dial().hang_up().call_sid)
        clock.tick(1)
    first = page(agent, "/agent/calls?ended_in=main")
    assert re.findall(r'<a href="/agent/calls/(CA\w+)">', first) == sids[::-1][:50]
    assert "共 51 通，第 1 / 2 页" in first
    assert 'href="/agent/calls?from=2026-11-30&amp;to=2026-11-30&amp;hotline=&amp;ended_in=main&amp;page=2"' in first
    second = page(agent, "/agent/calls?from=2026-11-30&to=2026-11-30&hotline=&ended_in=main&page=2")
    assert re.findall(r'<a href="/agent/calls/(CA\w+)">', second) == [sids[0]]


def test_without_graphviz_the_map_is_the_mermaid_text_with_the_counts(agent, morning, monkeypatch):
    monkeypatch.setattr(reports, "DOT", "no-such-graphviz-dot")
    text = html.unescape(page(agent, "/agent/flow"))
    assert "服务器上没有 Graphviz（dot 命令）" in text and 'id="flowmap"' not in text
    assert 'main -->|"1 挂失 · 2 通"| loss' in text
    assert 'main -.->|"2 通"| agent' in text
    assert '主菜单<br/>main<br/>在此结束 1 通' in text
    assert 'click main href "/agent/calls?ended_in=main&from=2026-11-30&to=2026-11-30&hotline=" _top' in text


def test_the_map_is_drawn_once_while_its_counts_stay_the_same(agent, morning, monkeypatch, clock):
    drawings = []
    real = reports.render_svg
    monkeypatch.setattr(reports, "render_svg", lambda source: drawings.append(source) or real(source))
    first = page(agent, "/agent/flow")
    clock.tick(60)  # the counts are read again; they have not changed
    assert page(agent, "/agent/flow").count("在此结束") == first.count("在此结束")
    assert len(drawings) == 1


# -- the dashboard ----------------------------------------------------------------------------------
def test_the_dashboard_shows_todays_figures(agent, morning):
    text = page(agent, "/agent/")
    shown = {key: tile(text, f"today-{key}") for key in
             ("calls", "self_service", "transferred", "abandoned", "containment", "within15")}
    assert shown == {"calls": "5", "self_service": "1", "transferred": "2", "abandoned": "2", "containment": "20.0%",
                     "within15": "1"}
    assert "转人工 2 通，接听 2 通" in text and 'data-src="/agent/today"' in text


def test_todays_figures_are_counted_at_most_once_every_three_seconds(agent, call, clock):
    assert tile(page(agent, "/agent/today"), "today-calls") == "0"
    call(caller=A).dial().hang_up()
    clock.tick(2.9)
    assert tile(page(agent, "/agent/today"), "today-calls") == "0"  # the figures of 2.9 s ago
    clock.tick(0.1)
    text = page(agent, "/agent/today")
    assert (tile(text, "today-calls"), tile(text, "today-abandoned")) == ("1", "1")
    assert '更新于 <span id="today-as-of">10:00:03</span>' in text


# -- labels -----------------------------------------------------------------------------------------
def test_every_state_of_the_flow_has_a_mandarin_name(app):
    catalogue = app.extensions["catalogue"]
    unnamed = [s for s in app.extensions["machine"].states
               if not re.search(r"[\u4e00-\u9fff]", catalogue.label("state", s))]
    assert unnamed == []


def test_a_map_graphviz_could_not_draw_is_drawn_when_it_can_again(agent, morning, monkeypatch):
    monkeypatch.setattr(reports, "DOT", "no-such-graphviz-dot")
    assert 'id="no-dot"' in page(agent, "/agent/flow")
    monkeypatch.setattr(reports, "DOT", "dot")
    text = page(agent, "/agent/flow")
    assert 'id="no-dot"' not in text and drawn(flow_svg(text), "node")["main"][0][-1] == "在此结束 1 通"
