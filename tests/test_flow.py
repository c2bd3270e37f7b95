"""The phone tree is validated when built, and every prompt and action it names exists."""
from __future__ import annotations

import pytest

from ivr.callflow import flow
from ivr.callflow.actions import ACTIONS
from ivr.callflow.calldata import CallData
from ivr.callflow.machine import Action, Entry, Event, FlowError, Go, Hangup, Machine, Menu, Transfer
from ivr.config import ROOT
from ivr.voice.prompts import Catalogue

BASE = {
    "main": Menu(prompts=("p",), options={"1": "bye"}, back=None),
    "agent": Transfer(prompts=("p",), answered="bye", unanswered="bye"),
    "bye": Hangup(prompts=("p",)),
}


def machine(**states):
    """Build a small machine on top of a valid base."""
    return Machine(states={**BASE, **states}, start=Go("main"), resume=Go("main"), failure=Go("agent"))


def test_the_hotline_flow_builds():
    m = flow.build()
    assert m.states["main"].options == {"1": "loss", "2": "release", "3": "status", "4": "activate",
                                        "5": "account", "6": "contact", "7": "pin", "8": "guides"}


def test_every_prompt_the_flow_can_speak_is_in_the_catalogue():
    catalogue = Catalogue.load(ROOT / "voice_prompts" / "zh-CN.yaml")
    ids = flow.build().prompt_ids()
    assert "status.detail.in_production" in ids and "loss.at_expiry.cancel" in ids
    assert catalogue.missing(ids) == set()


def test_every_action_the_flow_names_exists():
    assert flow.build().action_names() <= set(ACTIONS)


def test_the_built_in_agent_key_makes_the_agent_reachable_from_any_menu():
    # The base binds only 1 (to bye): the agent is reached through the built-in 0 alone, which is
    # why the base is a valid tree on which each broken one below differs by one state.
    m = machine()
    assert m.reachable(["main"]) == {"main", "agent", "bye"}
    assert m.reachable(["bye"]) == {"bye"}


@pytest.mark.parametrize(
    "states, problem",
    [
        ({"orphan": Hangup(prompts=())}, "unreachable states: orphan"),
        ({"main": Menu(prompts=(), options={"1": "nowhere"})}, "unknown state 'nowhere'"),
        ({"main": Menu(prompts=(), options={})}, "offers no option"),
        ({"main": Menu(prompts=(), options={"0": "bye"})}, "reserved or invalid key '0'"),
        ({"main": Menu(prompts=(), options={"9": "bye"})}, "reserved or invalid key '9'"),
        ({"main": Menu(prompts=(), options={"1": "act"}), "act": Action("x", {})}, "has no outcome"),
        (
            {"main": Menu(prompts=(), options={"1": "e"}), "e": Entry(prompts=(), next="bye", redact="pin")},
            "must lead to an action",
        ),
    ],
)
def test_a_broken_tree_is_refused_when_built(states, problem):
    with pytest.raises(FlowError, match=problem):
        machine(**states)


def test_a_loop_with_no_way_to_end_the_call_is_refused():
    with pytest.raises(FlowError, match="cannot lead to the end"):
        Machine(
            states={
                "main": Menu(prompts=(), options={"1": "main"}, back=None, give_up="main"),
                "agent": Transfer(prompts=(), answered="main", unanswered="main"),
            },
            start=Go("main"), resume=Go("main"), failure=Go("agent"),
        )


def test_an_action_with_an_undeclared_outcome_is_an_error_not_a_wrong_path():
    m = machine(main=Menu(prompts=(), options={"1": "act"}, back=None),
                act=Action("x", {"ok": "bye"}))
    with pytest.raises(FlowError, match="undeclared outcome 'surprise'"):
        m.step("main", Event("keys", "1"), CallData(), lambda *a: "surprise")


def test_stepping_is_pure_data_in_and_out():
    m = flow.build()
    data = CallData(misses=2)
    turn = m.step("main", Event("keys", "1"), data, lambda *a: "unverified")
    assert (turn.state, [s.id for s in turn.spoken]) == ("auth_id", ["auth.ask_id"])
    assert (data.misses, data.entry_said) == (0, [])
