"""Whole calls: reporting a card lost by phone (menu key 1).

The plain calls (a normal or a not yet activated card reported, a refusal for each status that
cannot be reported, any other key at the confirmation) are scenarios: tests/scenarios/loss/.
"""
from __future__ import annotations

from datetime import timedelta

from tests.support import ALICE, card_of, verified


def test_greeting_offers_the_main_menu_inside_a_gather(call):
    phone = call().dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    assert phone.verbs == ["Gather", "Redirect"]
    assert phone.waiting is not None and phone.waiting.num_digits == 1


def test_loss_report_lapses_by_itself_at_expiry(call, ledger, clock):
    ledger.add(ALICE)
    verified(call).press("1")
    clock.tick(timedelta(days=7, seconds=-1))
    phone = verified(call, key="3")
    assert "card.readback" in phone.prompts and ledger.card(card_of(ALICE)).status == "verbal_loss"
    clock.tick(timedelta(seconds=1))
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
    assert ledger.card(card_of(ALICE)).status == "normal"
    history = ledger.history(card_of(ALICE))
    assert history[-1] == ("verbal_loss", "normal", "system", None)
    assert len(history) == 3
