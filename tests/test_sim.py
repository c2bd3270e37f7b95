"""The QA simulator: the regression scenarios, scenario files, replay of recorded calls, the CLI."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from flask import Flask, Response

from ivr.sim import record, runner, softphone
from ivr.sim.coverage import measure
from ivr.sim.phone import ClientTransport, Phone
from ivr.sim.scenario import ScenarioError, collect, load, parse
from tests.support import ALICE, PIN, TOKEN, card_of

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = collect([SCENARIOS])


@pytest.fixture
def target(app):
    """The scenario runner's target: the app in-process."""
    return runner.Target(app)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SCENARIOS)) for p in FILES])
def test_regression_scenario(target, path):
    result = runner.run(target, load(path))
    assert result.passed, "\n".join(result.failures + ["transcript:"] + result.transcript)


def test_the_regression_suite_reaches_every_state_of_the_flow(target, app):
    results = [runner.run(target, load(p)) for p in FILES]
    cov = measure(app.extensions["machine"], target.paths([r.call_sid for r in results]))
    assert cov.states - cov.seen_states == set()
    assert len(cov.seen_transitions & cov.transitions) >= 0.8 * len(cov.transitions), cov.missing()


def test_a_wrong_expectation_fails_with_the_line_and_a_transcript(target, tmp_path):
    path = tmp_path / "wrong.yaml"
    path.write_text("steps:\n  - press: \"9\"\n    expect: {prompts: [loss.done]}\n", encoding="utf-8")
    result = runner.run(target, load(path))
    assert not result.passed
    assert result.failures[0].startswith("line 2 (press 9): expected prompts ['loss.done'], heard")
    assert "> press 9" in result.transcript


@pytest.mark.parametrize(
    "text, problem",
    [
        ("steps:\n  - press: \"1\"\n  - jump: 3\n", "bad.yaml:3: unknown step kind 'jump'"),
        ("name: x\n", "bad.yaml:1: missing field 'steps'"),
        ("steps:\n  - press: \"1\"\n    expect: {prompt: [main.menu, keys.agent]}\n", "bad.yaml:3: unknown expectation field 'prompt'"),
        ("steps: [press: \"1\"\n", "bad.yaml:2: bad YAML"),
        ("steps:\n  - press: \"1\"\n    silence:\n", "bad.yaml:2: a step needs exactly one of"),
        ("cardholders:\n  - pin: \"1\"\nsteps:\n  - dial:\n", "bad.yaml:2: cardholder: missing field 'id_number'"),
        ("at: tomorrow\nsteps:\n  - dial:\n", "bad.yaml:1: 'at' is not an ISO date-time"),
        ("- just\n- a list\n", "bad.yaml:1: scenario must be a mapping"),
    ],
)
def test_a_bad_scenario_file_is_named_with_its_line_and_problem(text, problem):
    with pytest.raises(ScenarioError) as err:
        parse(Path("bad.yaml"), text)
    assert str(err.value).startswith(problem)


TRANSFER = """\
at: 2026-11-30T10:00:00+08:00
cardholders:
  - id_number: "370202198503120025"
    cards: [{{card_number: QD0000000001, status: normal}}]
steps:
  - dial:
    expect: {{{dial}}}
  - press: "0"
  - agent: completed
    expect: {{{agent}}}
expect: {{{end}}}
"""


@pytest.mark.parametrize(
    "dial, agent, end, failure",
    [
        ("heard: 再见", "", "", "line 6 (dial): expected to hear '再见', heard '您好，欢迎致电"),
        ("heard_regex: ^再见$", "", "", "line 6 (dial): expected to hear /^再见$/"),
        ("prompts_include: [loss.done]", "", "", "line 6 (dial): expected to hear loss.done, heard ['common.welcome'"),
        ("prompts: [main.menu]", "", "", "line 6 (dial): expected prompts ['main.menu'], heard ['common.welcome'"),
        ("text: 再见", "", "", "line 6 (dial): what the caller hears changed:\n--- expected\n+++ heard now"),
        ("transferred: true", "", "", "line 6 (dial): expected transferred=True, was False"),
        ("ended: true", "", "", "line 6 (dial): expected ended=True, was False"),
        ("", "agent_heard: 来电人已通过身份验证", "", "line 9 (agent completed): expected the agent to hear '来电人已通过身份验证', heard"),
        ("", "", "transferred: false", "at the end: expected transferred=False, was True"),
        ("", "", "ended: true", "at the end: expected ended=True, was False"),
        ("", "", "cards: {QD0000000001: verbal_loss}", "at the end: card QD0000000001: expected status verbal_loss, is normal"),
        ("", "", "cards: {QD9999999999: normal}", "at the end: card QD9999999999 is not in the ledger"),
        ("", "", "history: {QD0000000001: [{status: verbal_loss, this_call: true}]}",
         "at the end: card QD0000000001: expected last history rows [{'status': 'verbal_loss', 'this_call': True}], found"),
        ("", "", "prompts_heard: [loss.done]", "at the end: expected loss.done to be heard during the call"),
    ],
)
def test_each_kind_of_expectation_fails_when_the_call_does_not_meet_it(target, tmp_path, dial, agent, end, failure):
    path = tmp_path / "wrong.yaml"
    path.write_text(TRANSFER.format(dial=dial, agent=agent, end=end), encoding="utf-8")
    result = runner.run(target, load(path))
    assert len(result.failures) == 1 and result.failures[0].startswith(failure), result.failures


def test_the_same_call_with_true_expectations_passes(target, tmp_path):
    path = tmp_path / "right.yaml"
    path.write_text(TRANSFER.format(
        dial="heard: 欢迎, heard_regex: 按1, prompts_include: [main.menu], transferred: false, ended: false",
        agent="agent_heard: 转接原因：来电人要求人工服务, prompts: [rating.ask]",
        end="transferred: true, ended: false, cards: {QD0000000001: normal}, prompts_heard: [agent.connecting],"
            " history: {QD0000000001: [{status: normal, this_call: false}]}",
    ), encoding="utf-8")
    result = runner.run(target, load(path))
    assert result.passed, result.failures


def test_keys_typed_ahead_that_no_menu_takes_fail_the_scenario(target, tmp_path):
    path = tmp_path / "typeahead.yaml"
    path.write_text("at: 2026-11-30T10:00:00+08:00\nsteps:\n  - press: \"09\"\n"
                    "    expect: {prompts: [agent.connecting]}\n", encoding="utf-8")
    result = runner.run(target, load(path))
    assert result.failures == ["at the end: keys typed but never used by the call: '9'"]


def test_keys_pressed_after_the_call_ended_fail_the_scenario(target, tmp_path):
    path = tmp_path / "late.yaml"
    path.write_text("steps:\n  - hangup:\n  - press: \"1\"\n", encoding="utf-8")
    result = runner.run(target, load(path))
    assert result.failures == ["the call broke: the call is ended: no <Gather> or <Record> to hear keys"]


def test_sim_run_prints_failures_a_summary_and_exits_non_zero(runner_cli, tmp_path):
    good = SCENARIOS / "menus" / "wrong_keys_repeat_and_agent.yaml"
    bad = tmp_path / "broken.yaml"
    bad.write_text("steps:\n  - fly: true\n", encoding="utf-8")
    junit = tmp_path / "report.xml"
    result = runner_cli.invoke(args=["sim", "run", str(good), str(bad), "--junit", str(junit)])
    assert result.exit_code == 1
    assert f"ERROR {bad}:2: unknown step kind 'fly'" in result.output
    assert "Traceback" not in result.output
    assert result.output.rstrip().endswith("1 passed, 1 failed")
    assert "flow coverage:" in result.output
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "1")
    error = suite.find("testcase/error")
    assert error is not None and error.get("message") == f"{bad}:2: unknown step kind 'fly' (expected one of: " \
        "dial, press, speak, silence, record, agent, queue, wait, agent_takes, hangup)"


def test_sim_run_removes_its_temporary_database_afterwards(runner_cli, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = runner_cli.invoke(args=["sim", "run", str(SCENARIOS / "menus" / "wrong_keys_repeat_and_agent.yaml")])
    assert result.exit_code == 0, result.output
    assert list(scratch.iterdir()) == []


def test_sim_coverage_lists_what_the_recorded_calls_went_through(app, call, runner_cli):
    call().dial().press("9").hang_up()
    result = runner_cli.invoke(args=["sim", "coverage"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    machine = app.extensions["machine"]
    assert lines[0].startswith("flow coverage: ") and f"/{len(machine.states)} states" in lines[0]
    assert "  state never reached: loss_do" in lines
    assert not any(line.endswith(": main") for line in lines if "state never reached" in line)


def test_sim_run_passes_the_whole_regression_folder(runner_cli):
    result = runner_cli.invoke(args=["sim", "run", str(SCENARIOS)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"{len(FILES)} passed, 0 failed")


@pytest.fixture
def runner_cli(app):
    """The app's CLI runner."""
    return app.test_cli_runner()


def hand_call(app, ledger):
    """A call placed by hand: report Alice's card lost, with one wrong PIN on the way."""
    ledger.add(ALICE, pin=PIN)
    phone = Phone(ClientTransport(app.test_client()), TOKEN, caller="+8613912345678",
                  catalogue=app.extensions["catalogue"])
    phone.dial().press("1").press(ALICE + "#").press("000000#")
    phone.press(ALICE + "#").press(PIN + "#").press("1").hang_up()
    return phone


def test_a_recorded_call_exports_as_a_scenario_without_identity(app, ledger, runner_cli):
    phone = hand_call(app, ledger)
    result = runner_cli.invoke(args=["sim", "record", phone.call_sid])
    assert result.exit_code == 0, result.output
    text = result.output
    for secret in (ALICE, ALICE[:-4], PIN, "13912345678", card_of(ALICE)):
        assert secret not in text
    doc = yaml.safe_load(text)
    assert [list(s)[0] for s in doc["steps"]] == ["dial", "press", "press", "press", "press", "press", "press", "hangup"]
    assert doc["steps"][3]["press"] == record.WRONG_PIN + "#"
    assert doc["steps"][5] == {"press": record.FIXTURE_PIN + "#", "expect": doc["steps"][5]["expect"]}
    assert doc["expect"]["cards"] == {"RP000000000025": "verbal_loss"}


def test_an_exported_call_passes_on_replay_and_a_changed_prompt_shows_a_diff(app, ledger, runner_cli, tmp_path):
    phone = hand_call(app, ledger)
    path = tmp_path / "replay.yaml"
    path.write_text(runner_cli.invoke(args=["sim", "record", phone.call_sid]).output, encoding="utf-8")
    replay = runner.Target(app)
    first = runner.run(replay, load(path))
    assert first.passed, first.failures
    catalogue = app.extensions["catalogue"]
    catalogue.templates["loss.confirm"] = type(catalogue)({"loss.confirm": "确认挂失请按1。"}).templates["loss.confirm"]
    app.extensions["turns"].renderer.forget()
    changed = runner.run(replay, load(path))
    assert not changed.passed
    diff = next(f for f in changed.failures if "what the caller hears changed" in f)
    assert "-挂失后，社保和金融功能将立即冻结。确认请按1，取消请按其他键。" in diff
    assert "+确认挂失请按1。" in diff


def test_sim_record_of_an_unknown_call_says_so(runner_cli):
    result = runner_cli.invoke(args=["sim", "record", "CA-nope"])
    assert result.exit_code == 1 and "no recorded call CA-nope" in result.output


def test_the_softphone_shows_prompts_and_takes_keys_silence_and_hangup(app, ledger):
    ledger.add(ALICE)
    phone = Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"])
    keys = iter(["", "x", "3", ALICE + "#", PIN + "#", "hangup"])
    shown: list[str] = []
    softphone.talk(phone, read=lambda prompt: next(keys), write=shown.append)
    screen = "\n".join(shown)
    assert "< [main.menu] 挂失请按1" in screen
    assert "< [common.no_input]" in screen
    assert softphone.HELP in screen
    assert "< [status.detail.normal] 您的社保卡可以正常使用。" in screen
    assert f"(call ended)\n(recorded as {phone.call_sid}: `flask --app wsgi sim record {phone.call_sid}`" in screen


def test_hangup_at_the_transfer_prompt_hangs_up_instead_of_answering(app):
    phone = Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"])
    keys = iter(["0", "hangup"])
    shown: list[str] = []
    softphone.talk(phone, read=lambda prompt: next(keys), write=shown.append)
    assert phone.ended and phone.agent_heard == []
    assert "> agent leg completed" not in phone.transcript and phone.transcript[-1] == "> hang up"
    assert shown[-2] == "(call ended after a transfer)"


def test_the_softphone_speaks_what_is_said_but_not_the_urls_of_played_files(monkeypatch):
    peer = Flask("player")
    peer.post("/voice", endpoint="voice")(lambda: Response(
        "<Response><Play>/prompts/audio/common.welcome.wav</Play><Say>欢迎</Say><Hangup/></Response>",
        mimetype="text/xml"))
    peer.post("/voice/status", endpoint="status")(lambda: Response("", status=204))
    spoken: list[str] = []
    monkeypatch.setattr(softphone.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(softphone, "espeak", spoken.append)
    shown: list[str] = []
    softphone.talk(Phone(ClientTransport(peer.test_client()), TOKEN), read=lambda prompt: "", write=shown.append,
                   speak=True)
    assert "< [common.welcome] [/prompts/audio/common.welcome.wav]" in shown
    assert spoken == ["欢迎"]


def test_the_softphone_asks_how_the_agent_leg_ends(app):
    phone = Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"])
    keys = iter(["0", "n", "hangup"])
    shown: list[str] = []
    softphone.talk(phone, read=lambda prompt: next(keys), write=shown.append)
    assert "< [agent.unavailable] 抱歉，人工座席暂时无法接听。" in "\n".join(shown)
    assert shown[-2] == "(call ended after a transfer)"


def test_a_confirmation_that_loses_a_race_explains_the_new_status(app, call, ledger):
    from models.cards import Actor
    from models.clock import utcnow

    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#").press(PIN + "#")
    with app.extensions["sessions"]() as s, s.begin():  # a bank counter reports it meanwhile
        card = ledger_card(s, card_of(ALICE))
        card.report_verbal_loss(now=utcnow(), actor=Actor("bank", who="teller-3"),
                                policy=app.extensions["settings"].loss)
    phone.press("1")
    assert phone.prompts == ["loss.already_verbal", "loss.result_menu", "keys.agent_back"]
    assert [h[2] for h in ledger.history(card_of(ALICE))] == ["import", "bank"]


def ledger_card(session, number):
    """Return a card by number in a session."""
    from sqlalchemy import select

    from models.cards import Card

    return session.scalars(select(Card).where(Card.card_number == number)).one()
