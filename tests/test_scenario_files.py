"""Scenario files: whatever is wrong in one, the error is "FILE:LINE: problem", never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from ivr.sim.scenario import ScenarioError, load, parse


def problem(text: str) -> str:
    """Return the error a scenario text gets."""
    with pytest.raises(ScenarioError) as err:
        parse(Path("bad.yaml"), text)
    return str(err.value)


STEP = "steps:\n  - press: \"1\"\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("steps:\n  - speak: 挂失\n    confidence: high\n", "bad.yaml:3: confidence must be a number from 0 to 1"),
        ("steps:\n  - speak: 挂失\n    confidence: 1.5\n", "bad.yaml:3: confidence must be a number from 0 to 1"),
        ("steps:\n  - press: \"1\"\n    confidence: 0.5\n", "bad.yaml:3: confidence goes with speak:"),
        ("steps:\n  - dial:\nname: x\nsteps:\n  - press: \"1\"\n", "bad.yaml:4: bad YAML: duplicate key 'steps' (already on line 1)"),
        ("steps:\n  - press: \"1\"\n    press: \"2\"\n", "bad.yaml:3: bad YAML: duplicate key 'press' (already on line 2)"),
        ("steps:\n  - press: \"1\"\n    expect: {heard: a, heard: b}\n", "bad.yaml:3: bad YAML: duplicate key 'heard'"),
        ("steps:\n  - press: 0123\n", 'bad.yaml:2: press 0123 is read by YAML as the number 83: quote it, e.g. press: "0123"'),
        ("steps:\n  - press: 0x1F\n", "bad.yaml:2: press 0x1F is read by YAML as the number 31: quote it"),
        ("steps:\n  - press: \"12a\"\n", "bad.yaml:2: press takes the keys 0-9, * and #, not '12a'"),
        ("steps:\n  - press:\n", "bad.yaml:2: press needs the keys"),
        ("steps:\n  - press: [1, 2]\n", "bad.yaml:2: press must be a quoted string, not a list"),
        ("steps:\n  - silence: 0\n", "bad.yaml:2: silence (how many timeouts in a row) must be empty or a whole number of at least 1, not 0"),
        ("steps:\n  - silence: twice\n", "bad.yaml:2: silence (how many timeouts in a row) must be empty or a whole number"),
        ("steps:\n  - silence: true\n", "bad.yaml:2: silence (how many timeouts in a row) must be empty or a whole number"),
        ("steps:\n  - record: -3\n", "bad.yaml:2: record (seconds of message) must be empty or a whole number of at least 1"),
        ("steps:\n  - record: long\n", "bad.yaml:2: record (seconds of message) must be empty"),
        ("steps:\n  - agent: maybe\n", "bad.yaml:2: agent must be empty or one of: completed, answered, busy, no-answer, failed, canceled"),
        ("steps:\n  - queue: elsewhere\n", "bad.yaml:2: queue must be empty or one of: bridged"),
        ("steps:\n  - hangup: now\n", "bad.yaml:2: hangup: takes no value"),
        ("steps:\n  - press: \"1\"\n  - dial:\n", "bad.yaml:3: dial: can only be the first step"),
        ("steps:\n  - press: \"1\"\n  - hangup\n", "bad.yaml:3: a step must be a mapping such as 'hangup:', not 'hangup'"),
        ("steps:\n  - press: \"1\"\n\n  - 42\n", "bad.yaml:4: a step must be a mapping"),
        ("name: x\nat: 2026-11-30T10:00:00\n" + STEP, "bad.yaml:2: 'at' needs a UTC offset"),
        ("name: x\nat: soon\n" + STEP, "bad.yaml:2: 'at' is not an ISO date-time"),
        ("caller: +8613900000000\n" + STEP, 'bad.yaml:1: caller +8613900000000 is read by YAML as a number: quote it'),
        ("steps: {press: \"1\"}\n", "bad.yaml:1: 'steps' must be a list of steps, not a mapping"),
        ("", "bad.yaml:1: the file is empty"),
    ],
)
def test_a_bad_step_or_field_is_reported_at_its_own_line(text, expected):
    assert problem(text).startswith(expected)


@pytest.mark.parametrize(
    "expect, expected",
    [
        ("prompts: main.menu", "bad.yaml:4: prompts must be a list of strings, e.g. [main.menu], not 'main.menu'"),
        ("prompts_include: [1, 2]", "bad.yaml:4: prompts_include must be a list of strings"),
        ("heard: 5678", "bad.yaml:4: heard must be a string, not int 5678"),
        ("agent_heard: [a]", "bad.yaml:4: agent_heard must be a string, not a list"),
        ("heard_regex: \"(unclosed\"", "bad.yaml:4: heard_regex does not compile: missing ), unterminated subpattern"),
        ("text: {a: 1}", "bad.yaml:4: text must be a string or a list of strings"),
        ("text: [a, 1]", "bad.yaml:4: text must be a string or a list of strings"),
        ("transferred: \"yes\"", "bad.yaml:4: transferred must be true or false, not 'yes'"),
        ("ended: 1", "bad.yaml:4: ended must be true or false, not 1"),
    ],
)
def test_a_step_expectation_of_the_wrong_type_is_reported_at_its_line(expect, expected):
    text = f"steps:\n  - press: \"1\"\n    expect:\n      {expect}\n"
    assert problem(text).startswith(expected)


@pytest.mark.parametrize(
    "expect, expected",
    [
        ("cards: [QD0000000001]", "bad.yaml:4: cards must be a mapping of card number to status"),
        ("cards: {QD0000000001: 3}", "bad.yaml:4: card QD0000000001: the status must be a string, not 3"),
        ("history: [QD0000000001]", "bad.yaml:4: history must be a mapping of card number to a list of rows"),
        ("history: {QD0000000001: {status: normal}}", "bad.yaml:4: card QD0000000001's history must be a list"),
        ("history: {QD0000000001: [normal]}", "bad.yaml:4: history row must be a mapping, not str 'normal'"),
        ("history: {QD0000000001: [{state: normal}]}", "bad.yaml:4: unknown history row field 'state'"),
        ("history: {QD0000000001: [{status: normal, this_call: maybe}]}", "bad.yaml:4: this_call must be true or false"),
        ("prompts_heard: loss.done", "bad.yaml:4: prompts_heard must be a list of strings"),
        ("transferred: no-way", "bad.yaml:4: transferred must be true or false"),
    ],
)
def test_a_final_expectation_of_the_wrong_type_is_reported_at_its_line(expect, expected):
    text = f"steps:\n  - press: \"1\"\nexpect:\n  {expect}\n"
    assert problem(text).startswith(expected)


@pytest.mark.parametrize(
    "holders, expected",
    [
        ("  - id_number: \"370202198503120025\"\n    pin: 012345\n", "bad.yaml:3: pin 012345 is read by YAML as the number 5349: quote it"),
        ("  - id_number: \"370202198503120025\"\n    pin_failures: many\n", "bad.yaml:3: pin_failures must be empty or a whole number of at least 0"),
        ("  - id_number: \"370202198503120025\"\n    cards:\n      - {card_number: QD1, status: normal, applied_on: someday}\n",
         "bad.yaml:4: applied_on is not an ISO date"),
        ("  - id_number: \"370202198503120025\"\n    cards:\n      - card_number: QD1\n        status: verbal_loss\n"
         "        loss_expires_at: 2026-12-07T10:00:00\n", "bad.yaml:6: loss_expires_at needs a UTC offset"),
        ("  - id_number: \"370202198503120025\"\n    cards:\n      - card_number: QD1\n        status: normal\n"
         "        history: [{at: 2026-01-01T00:00:00+08:00}]\n", "bad.yaml:6: history row: missing field 'status'"),
    ],
)
def test_a_bad_cardholder_fixture_is_reported_at_its_line(holders, expected):
    assert problem("cardholders:\n" + holders + STEP).startswith(expected)


def test_a_file_that_is_not_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("steps:\n  - press: \"1\"\n    expect: {heard: 挂失}\n".encode("gb18030"))
    with pytest.raises(ScenarioError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}:3: not UTF-8 text")


def test_plain_numbers_keys_and_counts_are_accepted_as_written():
    sc = parse(Path("ok.yaml"), "steps:\n  - press: 12\n  - press: \"*0#\"\n  - silence: 3\n  - record:\n"
                                "  - agent: busy\n  - speak: 挂失\n    confidence: 1\n")
    assert [(s.kind, s.value) for s in sc.steps] == [
        ("dial", None), ("press", "12"), ("press", "*0#"), ("silence", 3), ("record", None),
        ("agent", "busy"), ("speak", ("挂失", 1.0)),
    ]
