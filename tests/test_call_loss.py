"""Whole calls: reporting a card lost by phone (menu key 1)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support import ALICE, card_of, verified


def test_greeting_offers_the_main_menu_inside_a_gather(call):
    phone = call().dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    assert phone.verbs == ["Gather", "Redirect"]
    assert phone.waiting is not None and phone.waiting.num_digits == 1


def test_loss_report_freezes_the_card_and_says_until_when(call, ledger, clock):
    ledger.add(ALICE)
    phone = verified(call)
    assert phone.prompts == ["card.readback", "loss.confirm"]
    assert "<say-as interpret-as=\"digits\">0025</say-as>" in phone.twiml
    phone.press("1")
    assert phone.prompts == ["loss.done", "loss.at_expiry.release", "loss.next_steps", "common.after_service", "keys.agent_back"]
    assert "2026年12月7日" in phone.text()
    card = ledger.card(card_of(ALICE))
    assert card.status == "verbal_loss"
    assert card.loss_expires_at.isoformat() == "2026-12-07T02:00:00+00:00"
    assert ledger.history(card_of(ALICE))[-1] == ("normal", "verbal_loss", "ivr", phone.call_sid)


def test_a_card_made_but_not_activated_can_be_reported_lost(call, ledger):
    ledger.add(ALICE, status="pending_activation")
    verified(call).press("1")
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"


@pytest.mark.parametrize("key", ["2", "3", "8", "#"])
def test_any_key_but_1_at_the_confirmation_changes_nothing(call, ledger, key):
    ledger.add(ALICE)
    phone = verified(call).press(key)
    assert phone.prompts == ["common.nothing_changed", "common.after_service", "keys.agent_back"]
    assert ledger.card(card_of(ALICE)).status == "normal"
    assert len(ledger.history(card_of(ALICE))) == 1


@pytest.mark.parametrize(
    "status, prompt",
    [
        ("verbal_loss", "loss.already_verbal"),
        ("formal_loss", "loss.already_formal"),
        ("cancelled", "card.cancelled"),
        ("in_production", "loss.not_made"),
    ],
)
def test_cards_that_cannot_be_reported_lost_get_a_plain_explanation(call, ledger, status, prompt):
    ledger.add(ALICE, status=status)
    before = ledger.history(card_of(ALICE))
    phone = verified(call)
    assert phone.prompts == [prompt, "common.after_service", "keys.agent_back"]
    assert ledger.card(card_of(ALICE)).status == status
    assert ledger.history(card_of(ALICE)) == before


def test_loss_report_lapses_by_itself_at_expiry(call, ledger, clock):
    ledger.add(ALICE)
    verified(call).press("1")
    clock.tick(timedelta(days=7, seconds=-1))
    phone = verified(call, key="3")
    assert "card.readback" in phone.prompts and ledger.card(card_of(ALICE)).status == "verbal_loss"
    clock.tick(timedelta(seconds=1))
    phone = verified(call, key="3")
    assert phone.prompts[:2] == ["card.readback", "status.detail.normal"]
    history = ledger.history(card_of(ALICE))
    assert history[-1] == ("verbal_loss", "normal", "system", None)
    assert len(history) == 3
