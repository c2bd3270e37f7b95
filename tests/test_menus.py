"""Every menu answers silence, wrong keys, 9, 0 and * the same way.

The plain calls (silence and wrong keys reaching an agent, 9 repeating, * going back, an agent leg
answered or not, silence after a service ending with the rating) are scenarios:
tests/scenarios/menus/ and tests/scenarios/agents/.
"""
from __future__ import annotations

import pytest

from tests.support import ALICE, verified


def test_a_good_key_after_a_miss_starts_the_count_again(call):
    phone = call().dial().press("#").press("#").press("#")
    phone.press("9")
    phone.press("#")
    assert phone.prompts == ["common.invalid_key", "main.menu", "keys.agent"]


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


def test_a_menu_offering_the_main_menu_by_a_key_does_not_announce_star_too_yet_star_works(call, ledger):
    ledger.add(ALICE, status="formal_loss")
    phone = verified(call)  # 1 口头挂失: a formal loss cannot be reported again
    assert phone.prompts == ["loss.already_formal", "common.after_service", "keys.agent"]
    assert "星号" not in phone.text()
    assert phone.press("*").prompts == ["main.menu", "keys.agent"]


def test_a_re_prompt_says_the_options_only_and_nine_says_the_result_again(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
    assert phone.silence().prompts == ["common.no_input", "status.menu", "keys.agent"]
    assert phone.press("9").prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
