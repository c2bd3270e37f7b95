"""Every menu answers silence, wrong keys, 9, 0 and * the same way."""
from __future__ import annotations

import pytest

from ivr.callflow.flow import STATES
from ivr.callflow.machine import Menu
from tests.support import ALICE, verified


def test_silence_re_prompts_three_times_then_reaches_an_agent(call):
    phone = call().dial()
    for _ in range(3):
        phone.silence()
        assert phone.prompts == ["common.no_input", "main.menu", "keys.agent"]
    phone.silence()
    assert phone.prompts == ["common.too_many_misses", "agent.connecting"]
    assert phone.verbs == ["Say", "Say", "Dial"]


@pytest.mark.parametrize("key", ["*", "#"])
def test_a_wrong_key_says_so_and_re_prompts(call, key):
    phone = call().dial().press(key)
    assert phone.prompts == ["common.invalid_key", "main.menu", "keys.agent"]


def test_wrong_keys_without_end_lead_to_an_agent(call):
    phone = call().dial().press("####")
    assert phone.prompts == ["common.too_many_misses", "agent.connecting"]


def test_a_good_key_after_a_miss_starts_the_count_again(call):
    phone = call().dial().press("#").press("#").press("#")
    phone.press("9")
    phone.press("#")
    assert phone.prompts == ["common.invalid_key", "main.menu", "keys.agent"]


def test_nine_repeats_the_greeting_and_menu(call):
    phone = call().dial().press("9")
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]


def test_zero_reaches_an_agent_from_the_main_menu(call):
    phone = call().dial().press("0")
    assert phone.prompts == ["agent.connecting"]
    assert phone.verbs == ["Say", "Dial"]
    assert phone.dialing[2] == [("+8653200000000", "/voice/whisper")]


@pytest.mark.parametrize("path", [["3"], ["3", "1"], ["1"], []])
def test_zero_reaches_an_agent_from_every_menu_of_a_service(call, ledger, path):
    ledger.add(ALICE)
    phone = verified(call, key="3")
    for key in path:
        phone.press(key)
    phone.press("0")
    assert phone.prompts == ["agent.connecting"]


def test_star_goes_back_to_the_main_menu(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3").press("*")
    assert phone.prompts == ["main.menu", "keys.agent"]


def test_every_menu_of_the_flow_is_a_menu_with_the_built_in_keys():
    menus = [name for name, st in STATES.items() if isinstance(st, Menu)]
    assert {"main", "loss_confirm", "release_confirm", "status_read", "after_service"} <= set(menus)
    for name in menus:
        assert not {"0", "9", "*"} & set(STATES[name].options), name


def test_after_a_service_silence_asks_for_a_rating_then_ends_politely(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="1").press("1")
    for _ in range(3):
        phone.silence()
    phone.silence()
    assert phone.prompts == ["rating.ask"]
    phone.silence()
    assert phone.prompts == ["common.no_input", "rating.ask"]
    phone.silence()
    assert phone.prompts == ["common.goodbye"]
    assert phone.verbs == ["Say", "Hangup"] and phone.ended


def test_an_unanswered_transfer_apologises_and_offers_a_call_back(call):
    phone = call().dial().press("0").agent_leg_ends("no-answer")
    assert phone.prompts == ["agent.unavailable", "callback.offer", "keys.agent_back"]


def test_an_answered_transfer_asks_for_a_rating_when_the_agent_hangs_up(call):
    phone = call().dial().press("0").agent_leg_ends("completed")
    assert phone.prompts == ["rating.ask"]
