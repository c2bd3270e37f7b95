"""Whole calls: releasing a verbal loss report (menu key 2)."""
from __future__ import annotations

import pytest

from tests.support import ALICE, card_of, verified


def test_release_returns_the_card_to_its_status_before_the_loss(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="1").press("1")  # report lost...
    phone.press("1").press("2")  # ...back to the main menu, then release: already verified
    assert phone.prompts == ["card.readback", "release.confirm"]
    assert "口头挂失" in phone.text()
    phone.press("1")
    assert phone.prompts == ["release.done", "common.after_service", "keys.agent_back"]
    assert "恢复为正常状态" in phone.text()
    assert ledger.card(card_of(ALICE)).status == "normal"
    assert ledger.history(card_of(ALICE))[1:] == [
        ("normal", "verbal_loss", "ivr", phone.call_sid),
        ("verbal_loss", "normal", "ivr", phone.call_sid),
    ]


def test_verification_is_asked_once_per_call(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3")
    phone.press("2")  # back to the main menu from the status menu
    phone.press("1")
    assert phone.prompts == ["card.readback", "loss.confirm"]
    assert phone.all_prompts.count("auth.ask_id") == 1


def test_a_card_reported_before_activation_goes_back_to_pending_activation(call, ledger):
    ledger.add(ALICE, status="pending_activation")
    verified(call, key="1").press("1")
    verified(call, key="2").press("1")
    assert ledger.card(card_of(ALICE)).status == "pending_activation"


def test_a_formal_loss_cannot_be_released_by_phone(call, ledger):
    ledger.add(ALICE, status="formal_loss")
    phone = verified(call, key="2")
    assert phone.prompts == ["release.formal", "common.after_service", "keys.agent_back"]
    assert ledger.card(card_of(ALICE)).status == "formal_loss"


@pytest.mark.parametrize("status", ["normal", "pending_activation", "in_production"])
def test_a_card_not_reported_lost_has_nothing_to_release(call, ledger, status):
    ledger.add(ALICE, status=status)
    phone = verified(call, key="2")
    assert phone.prompts == ["release.not_lost", "common.after_service", "keys.agent_back"]
    assert len(ledger.history(card_of(ALICE))) == 1


@pytest.mark.parametrize("key", ["2", "5", "#"])
def test_any_key_but_1_keeps_the_loss_report(call, ledger, key):
    ledger.add(ALICE, status="verbal_loss")
    phone = verified(call, key="2").press(key)
    assert phone.prompts == ["common.nothing_changed", "common.after_service", "keys.agent_back"]
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"


def test_the_phone_acts_on_the_newest_card_that_is_not_cancelled(call, ledger):
    from datetime import date

    ledger.add(ALICE, status="cancelled", card="QD-OLD", applied_on=date(2015, 1, 1))
    ledger.add(ALICE, status="verbal_loss", card="QD-NEW", applied_on=date(2023, 1, 1))
    ledger.add(ALICE, status="cancelled", card="QD-NEWER-CANCELLED", applied_on=date(2024, 1, 1))
    verified(call, key="2").press("1")
    assert ledger.card("QD-NEW").status == "normal"
    assert ledger.card("QD-NEWER-CANCELLED").status == "cancelled"
