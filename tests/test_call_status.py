"""Whole calls: hearing the card's status, progress and history (menu key 3)."""
from __future__ import annotations

from datetime import date

import pytest

from tests.support import ALICE, card_of, verified


@pytest.mark.parametrize(
    "status, detail",
    [
        ("normal", "status.detail.normal"),
        ("pending_activation", "status.detail.pending_activation"),
        ("verbal_loss", "status.detail.verbal_loss"),
        ("formal_loss", "status.detail.formal_loss"),
    ],
)
def test_status_is_read_in_plain_mandarin(call, ledger, status, detail):
    ledger.add(ALICE, status=status)
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", detail, "status.menu", "keys.agent_back"]
    assert phone.verbs == ["Gather", "Redirect"]


def test_a_card_in_production_tells_the_seventh_working_day_after_acceptance(call, ledger):
    # Accepted Friday 2026-09-25: 26-27 Sep Mid-Autumn, 1-7 Oct National Day; working days are
    # 28, 29, 30 Sep, 8, 9 Oct, Saturday 10 Oct (调休) and 12 Oct: the 7th is 12 October
    # (13 October if the make-up Saturday were missed).
    ledger.add(ALICE, status="in_production", applied_on=date(2026, 9, 25))
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", "status.detail.in_production", "status.menu", "keys.agent_back"]
    assert "预计在2026年10月12日前发卡" in phone.text()


def test_expected_date_in_a_year_without_official_data_falls_back_without_failing(call, ledger):
    ledger.add(ALICE, status="in_production", applied_on=date(2026, 12, 28))
    phone = verified(call, key="3")
    # 29, 30, 31 Dec; 1 Jan (fixed holiday) skipped; 4, 5, 6, 7 Jan 2027.
    assert "预计在2027年1月7日前发卡" in phone.text()


def test_a_card_in_production_without_an_acceptance_date_says_so(call, ledger):
    ledger.add(ALICE, status="in_production", applied_on=None)
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", "status.detail.in_production_undated", "status.menu", "keys.agent_back"]


def test_the_last_four_digits_are_spoken_one_by_one_and_nothing_more(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3")
    assert '<say-as interpret-as="digits">0025</say-as>' in phone.twiml
    assert ALICE not in phone.twiml and ALICE[:14] not in phone.twiml
    assert card_of(ALICE) not in phone.twiml


def test_history_is_read_newest_first(call, ledger, clock):
    ledger.add(ALICE)
    phone = verified(call, key="1").press("1")
    phone.press("1").press("3").press("1")
    assert phone.prompts == ["history.intro", "history.item", "history.item", "history.menu", "keys.agent_back"]
    assert phone.last[1].text == "2026年11月30日，变更为口头挂失。"
    assert phone.last[2].text == "2026年11月30日，变更为正常。"


def test_a_holder_whose_only_card_is_cancelled_hears_so(call, ledger):
    ledger.add(ALICE, status="cancelled")
    phone = verified(call, key="3")
    assert phone.prompts == ["card.readback", "status.detail.cancelled", "status.menu", "keys.agent_back"]


def test_repeat_says_the_status_again(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="3").press("9")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent_back"]
