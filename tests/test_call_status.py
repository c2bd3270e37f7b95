"""Whole calls: hearing the card's status, progress and history (menu key 3).

The plain calls (the status of a normal, not yet activated, verbally or formally lost card, the
expected date of a card in production, the history newest first, the status menu's keys) are
scenarios: tests/scenarios/status/.
"""
from __future__ import annotations

from datetime import date

from tests.support import ALICE, card_of, verified


def test_expected_date_in_a_year_without_official_data_falls_back_without_failing(call, ledger):
    ledger.add(ALICE, status="in_production", applied_on=date(2026, 12, 28))
    phone = verified(call, key="3")
    # 29, 30, 31 Dec; 1 Jan (fixed holiday) skipped; 4, 5, 6, 7 Jan 2027.
    assert "预计2027年1月7日前发卡" in phone.text()


def test_a_card_in_production_without_an_acceptance_date_says_so(call, ledger):
    ledger.add(ALICE, status="in_production", applied_on=None)
    phone = verified(call, key="3")
    assert phone.prompts == ["status.detail.in_production_undated", "status.menu", "keys.agent"]


def test_the_last_four_digits_are_spoken_one_by_one_and_nothing_more(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3")
    assert '<say-as interpret-as="digits">0025</say-as>' in phone.twiml
    assert ALICE not in phone.twiml and ALICE[:14] not in phone.twiml
    assert card_of(ALICE) not in phone.twiml


def test_a_holder_whose_only_card_is_cancelled_hears_so(call, ledger):
    ledger.add(ALICE, status="cancelled")
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", "status.detail.cancelled", "status.menu", "keys.agent"]


def test_repeat_says_the_status_again(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3").press("9")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
