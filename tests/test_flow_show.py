"""`flow show` draws the phone tree from the declared flow; the README shows exactly that; 12345's greeting
waits agent_first_seconds for the 1."""
from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from ivr.callflow import draw, flow
from ivr.callflow.machine import Action, Go, Hangup, Machine, Menu, Spoken, Transfer, Turn
from ivr.commands.flow import README, readme_tree, with_tree
from ivr.config import load_settings
from ivr.voice.twiml import Renderer
from models.hours import parse_hotlines
from tests.support import PIN_KEY, TOKEN

REGENERATE = "regenerate it with `flask --app wsgi flow show --write-readme`"


def show(runner, *args: str) -> str:
    result = runner.invoke(args=["flow", "show", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def small() -> Machine:
    """A tree with a loop back to the main menu and a state two transitions lead to."""
    return Machine(
        states={
            "main": Menu(prompts=("m.menu",), options={"1": "ask"}, back=None),
            "ask": Action("check", {"ok": "main", "later": Go("bye", ("m.later",)), "no": Go("bye", ("m.later",))}),
            "agent": Transfer(prompts=("m.wait",), answered="bye", unanswered="main"),
            "bye": Hangup(prompts=("m.bye",)),
        },
        start=Go("main"), resume=Go("main"), failure=Go("agent"),
    )


SMALL_TEXTS = {"m.menu": "查询请按1。", "m.wait": "请稍候。", "m.bye": "再见。", "m.later": "稍后再试。"}


# -- the text tree -------------------------------------------------------------------------------------
def test_readme_tree_is_what_flow_show_prints(runner):
    drawn = readme_tree(README.read_text(encoding="utf-8"))
    assert drawn is not None, "README.md has lost its <!-- flow show: begin --> … <!-- flow show: end --> block"
    assert drawn == show(runner), f"README.md's menu tree differs from `flask --app wsgi flow show`: {REGENERATE}"


def test_flow_show_prints_the_text_tree_by_default_and_the_same_every_time(runner, app):
    printed = show(runner)
    assert printed == show(runner, "--format", "text")
    assert printed == draw.text(flow.build(), app.extensions["catalogue"].texts)


def test_the_main_menu_lists_each_key_with_its_mandarin_label_and_where_it_leads(runner):
    lines = show(runner).splitlines()
    start = lines.index("main [menu, no *]") + 1
    keys = [line for line in lines[start:lines.index("", start)] if line[:2] in ("├─", "└─")]
    assert keys == [
        "├─ 1 挂失 → loss [action start_service loss]",
        "├─ 2 解挂 → release [action start_service release]",
        "├─ 3 查卡状态和办卡进度 → status [action start_service status]",
        "├─ 4 激活 → activate [action start_service activate]",
        "├─ 5 查医保账户 → account [action start_service account]",
        "├─ 6 修改联系电话 → contact [action start_service contact]",
        "├─ 7 修改密码 → pin [action start_service pin]",
        "└─ 8 办事指南 → guides [menu]",
    ]


def test_the_12345_greeting_is_drawn_with_its_1_and_its_direct_transfer(runner):
    lines = show(runner).splitlines()
    greeting = lines.index("└─ agent_first → city_entry [menu, no *] 「您好，这里是12345政务服务便民热线…」")
    assert lines[greeting + 1:greeting + 3] == [
        "   ├─ 1 社保卡自助服务 → main ↓ (says city.self_service)",
        "   └─ silence or wrong keys, no re-prompt → agent ↓ (reason direct)",
    ]


def test_every_state_of_the_flow_is_drawn_in_full_exactly_once(runner, app):
    printed = show(runner)
    drawn = re.findall(r"(?:^|→ )(\w+) \[", printed, re.M)
    assert sorted(drawn) == sorted(app.extensions["machine"].states)


def test_a_state_reached_again_is_referred_to_not_drawn_again():
    # bye is drawn where it is reached first breadth first (under agent), referred to from ask
    assert draw.text(small(), SMALL_TEXTS) == "\n".join([
        "Every menu, unless noted: 9 repeats, 0 → agent, * → main, silence or wrong keys: 3 re-prompts, then → agent.",
        "↑ / ↓: drawn in full above / below.",
        "",
        "a call comes in → main",
        "a call the hotline lost track of → main",
        "a system failure → agent",
        "",
        "main [menu, no *]",
        "└─ 1 查询 → ask [action check]",
        "   ├─ ok → main ↑",
        "   └─ later, no → bye ↓ (says m.later)",
        "",
        "agent [transfer] 「请稍候」",
        "├─ answered → bye [hangup] 「再见」",
        "└─ not answered → main ↑",
        "",
    ])


def test_without_the_catalogue_the_tree_has_no_mandarin_labels():
    lines = draw.text(small()).splitlines()
    assert lines[8:] == ["└─ 1 → ask [action check]", "   ├─ ok → main ↑", "   └─ later, no → bye ↓ (says m.later)", "",
                         "agent [transfer]", "├─ answered → bye [hangup]", "└─ not answered → main ↑"]


def test_the_readme_block_is_replaced_whole_and_nothing_around_it():
    block = "<!-- flow show: begin -->\n```text\n{}```\n<!-- flow show: end -->\n"
    readme = "before\n" + block.format("old\ntree\n") + "after\n"
    assert with_tree(readme, "new\n") == "before\n" + block.format("new\n") + "after\n"
    with pytest.raises(ValueError, match="no <!-- flow show: begin -->"):
        with_tree("no markers\n", "new\n")


# -- mermaid and dot -----------------------------------------------------------------------------------
MERMAID_NODE = re.compile(r'^    (\w+)(\(\(|\[/|\[\(|\[\[|\(\[|\[|\()"([^"]*)"(\)\)|/\]|\)\]|\]\]|\]\)|\]|\))$')
MERMAID_EDGE = re.compile(r'^    (\w+) -->\|"([^"|]*)"\| (\w+)$')
MERMAID_CLOSE = {"((": "))", "[/": "/]", "[(": ")]", "[[": "]]", "([": "])", "[": "]", "(": ")"}


def test_mermaid_is_a_flowchart_whose_every_line_is_a_node_or_an_edge_between_nodes(runner, app):
    lines = show(runner, "--format", "mermaid").splitlines()
    assert lines[0] == "flowchart TD"
    nodes, edges = [], []
    for line in lines[1:]:
        node, edge = MERMAID_NODE.match(line), MERMAID_EDGE.match(line)
        assert node or edge, f"not a mermaid node or edge: {line!r}"
        if node:
            assert MERMAID_CLOSE[node.group(2)] == node.group(4), line
            nodes.append(node.group(1))
        else:
            edges.append((edge.group(1), edge.group(3)))
    machine = app.extensions["machine"]
    assert sorted(nodes) == sorted([*machine.states, "_call"])
    assert {a for a, _ in edges} | {b for _, b in edges} <= set(nodes)
    assert edges[:3] == [("_call", "entry"), ("_call", "main"), ("_call", "agent_dial")]


def test_mermaid_draws_the_main_menu_keys_as_labelled_edges(runner):
    lines = show(runner, "--format", "mermaid").splitlines()
    assert '    main -->|"1 挂失"| loss' in lines
    assert '    city_entry -->|"silence or wrong keys, no re-prompt (direct)"| agent' in lines


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_dot_is_a_digraph_graphviz_lays_out_with_every_state_a_node(runner, app):
    source = show(runner, "--format", "dot")
    laid_out = subprocess.run(["dot", "-Tplain"], input=source, capture_output=True, text=True, check=False)
    assert laid_out.returncode == 0, laid_out.stderr
    assert laid_out.stderr == ""
    nodes = [line.split()[1].strip('"') for line in laid_out.stdout.splitlines() if line.startswith("node ")]
    assert sorted(nodes) == sorted([*app.extensions["machine"].states, "_call"])


def test_dot_quotes_every_name_and_label(runner):
    lines = show(runner, "--format", "dot").splitlines()
    assert lines[0] == "digraph flow {" and lines[-1] == "}"
    assert '    "main" -> "loss" [label="1 挂失"];' in lines
    assert ('    "city_entry" [shape=box, label="city_entry\\nmenu, no *\\n您好，这里是12345政务服务便民热线…"];'
            in lines)


# -- agent_first_seconds: the 12345 greeting's <Gather timeout> ------------------------------------------
def gather_timeouts(twiml: str) -> list[str | None]:
    return [g.get("timeout") for g in ET.fromstring(twiml).iter("Gather")]  # noqa: S314 (the app's own TwiML)


def test_the_12345_greeting_waits_agent_first_seconds_for_the_1(call):
    phone = call(dialled="+8653212345").dial()
    assert phone.prompts == ["city.greeting"]
    assert gather_timeouts(phone.twiml) == ["5"]  # config.yaml: agent_first_seconds: 5
    phone.press("9")
    assert (phone.prompts, gather_timeouts(phone.twiml)) == (["city.greeting"], ["5"])
    phone.press("1")
    assert (phone.prompts, gather_timeouts(phone.twiml)) == (["city.self_service", "main.menu", "keys.agent"], ["6"])


def test_the_12333_main_menu_waits_the_menu_timeout(call):
    phone = call(dialled="+8653212333").dial()
    assert gather_timeouts(phone.twiml) == ["6"]  # config.yaml: gather.menu_timeout: 6


def test_each_agent_first_hotline_greeting_waits_its_own_seconds(tmp_path, monkeypatch, app):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", PIN_KEY)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
    settings = load_settings(tmp_path, {"database_url": "sqlite://", "hotlines": {"numbers": {
        "+8653212333": {"name": "12333"},
        "+8653212345": {"name": "12345", "entry": "agent_first", "agent_first_seconds": 3},
        "+8653296345": {"name": "96345", "entry": "agent_first", "agent_first_seconds": 8},
    }}})
    renderer = Renderer(app.extensions["catalogue"], settings)

    def greeting(hotline: str) -> Turn:
        return Turn(state=flow.AGENT_FIRST_GREETING, spoken=[Spoken("city.greeting", {"hotline": hotline})], kind=Menu)

    assert [gather_timeouts(renderer.render(greeting(name), 1)) for name in ("12345", "96345", "12345")] == [
        ["3"], ["8"], ["3"]]
    assert gather_timeouts(renderer.render(Turn(state="main", spoken=[Spoken("main.menu", {})], kind=Menu), 1)) == [
        str(settings.menu_timeout)]


@pytest.mark.parametrize("seconds", [0, -5])
def test_agent_first_seconds_below_one_is_refused(seconds):
    with pytest.raises(ValueError, match=r"hotline \+1: agent_first_seconds must be at least 1"):
        parse_hotlines({"numbers": {"+1": {"entry": "agent_first", "agent_first_seconds": seconds}}})
