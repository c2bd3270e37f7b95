"""Whole calls: releasing a verbal loss report (menu key 2).

The plain calls (a verbal loss released, a formal loss refused, nothing to release, any other key
at the confirmation, a caller verified once per call) are scenarios: tests/scenarios/release/ and
tests/scenarios/status/no_history_and_back_to_loss.yaml.
"""
from __future__ import annotations

from datetime import date

from tests.support import ALICE, card_of, verified


def test_a_card_reported_before_activation_goes_back_to_pending_activation(call, ledger):
    ledger.add(ALICE, status="pending_activation")
    verified(call, key="1").press("1")
    verified(call, key="2").press("1")
    assert ledger.card(card_of(ALICE)).status == "pending_activation"


def test_the_phone_acts_on_the_newest_card_that_is_not_cancelled(call, ledger):
    ledger.add(ALICE, status="cancelled", card="QD-OLD", applied_on=date(2015, 1, 1))
    ledger.add(ALICE, status="verbal_loss", card="QD-NEW", applied_on=date(2023, 1, 1))
    ledger.add(ALICE, status="cancelled", card="QD-NEWER-CANCELLED", applied_on=date(2024, 1, 1))
    verified(call, key="2").press("1")
    assert ledger.card("QD-NEW").status == "normal"
    assert ledger.card("QD-NEWER-CANCELLED").status == "cancelled"
