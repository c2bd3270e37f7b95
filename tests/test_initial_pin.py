"""The initial PIN (config pin.initial, 123456) tells a caller nothing about the ID number keyed.

Whoever keys it — for a holder still on it, a holder with a PIN of their own, an ID number no one
has — hears the same words and gets no self-service for the rest of the call. It counts as a wrong
PIN (models.pins' lockout counter, per entered ID number) except for the holder whose PIN it is.
"""
from __future__ import annotations

import pytest

import models.pins
from models.identity import id_key
from models.pins import PinGuard
from tests.support import ALICE, BOB, NOBODY, events

INITIAL = "123456"
WRONG = "000000"
HEARD = ["auth.initial_pin", "auth.initial_menu", "keys.agent"]
# Alice is still on the initial PIN, Bob has his own, no one has NOBODY's ID number.
CALLERS = {"still on it": ALICE, "a PIN of their own": BOB, "unknown ID number": NOBODY}


@pytest.fixture
def holders(ledger):
    ledger.add(ALICE, pin=INITIAL)
    ledger.add(BOB)


def key_initial(call, id_number: str, pin: str = INITIAL):
    """Choose the loss report, key the ID number and the PIN."""
    return call().dial().press("1").press(id_number + "#").press(pin + "#")


def guard(app, id_number: str) -> tuple[int, bool] | None:
    """Return the PIN counter of an entered ID number: (failures, locked), or None without a row."""
    with app.extensions["sessions"]() as s:
        row = s.get(PinGuard, id_key(app.extensions["settings"].pin_key, id_number))
        return None if row is None else (row.failures, row.locked_at is not None)


def test_whoever_keys_the_initial_pin_hears_exactly_the_same(call, holders):
    phones = {case: key_initial(call, id_number) for case, id_number in CALLERS.items()}
    assert {case: phone.prompts for case, phone in phones.items()} == {case: HEARD for case in CALLERS}
    twiml = {phone.twiml.replace(phone.call_sid, "") for phone in phones.values()}
    assert len(twiml) == 1
    assert "已设置自己密码的，请重新来电输入" in phones["unknown ID number"].text()


def test_how_to_set_a_pin_of_ones_own_is_told_on_request(call, holders):
    phone = key_initial(call, NOBODY).press("2")
    assert phone.prompts == ["auth.initial_how", "common.after_service", "keys.agent"]
    assert "尚未设置的，请本人携带有效身份证件到合作银行网点" in phone.text()


def test_after_the_initial_pin_no_service_of_the_call_asks_for_another_id_number(call, holders):
    heard = {}
    for case, id_number in CALLERS.items():
        phone = key_initial(call, id_number).press("1").press("3")
        heard[case] = phone.prompts
    assert heard == {case: HEARD for case in CALLERS}


def test_the_initial_pin_counts_as_a_wrong_pin_except_for_the_holder_still_on_it(app, call, holders):
    for id_number in CALLERS.values():
        for _ in range(2):
            key_initial(call, id_number, WRONG)
    for id_number in CALLERS.values():
        key_initial(call, id_number)
    assert {case: guard(app, id_number) for case, id_number in CALLERS.items()} == {
        "still on it": (2, False),  # neither counted nor reset: it is no way in
        "a PIN of their own": (3, False),
        "unknown ID number": (3, False),
    }


def test_the_sixth_initial_pin_locks_an_id_number_silently_and_the_lock_shows_with_any_other_pin(app, call, holders):
    for _ in range(6):
        assert key_initial(call, NOBODY).prompts == HEARD
    assert guard(app, NOBODY) == (6, True)
    assert key_initial(call, NOBODY, WRONG).prompts == ["auth.locked", "auth.locked_menu", "keys.agent"]


def test_the_holder_still_on_the_initial_pin_is_never_locked_by_keying_it(app, call, holders):
    for _ in range(7):
        assert key_initial(call, ALICE).prompts == HEARD
    assert guard(app, ALICE) == (0, False)


def test_the_record_of_the_call_says_only_that_the_initial_pin_was_keyed(app, call, holders):
    facts = {case: events(app, key_initial(call, id_number).call_sid)[-1].facts
             for case, id_number in CALLERS.items()}
    assert facts == {case: {"pin": "initial"} for case in CALLERS}


def test_the_keyed_hash_and_the_counters_statements_run_whoever_keys_it(app, call, holders, monkeypatch):
    ran: list[str] = []
    statements = models.pins._guard_statements
    pin_matches = models.pins.pin_matches

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def first(self, unit, values):
            ran.append("first")
            return self.inner.first(unit, values)

        def execute(self, unit, values):
            ran.append("execute")
            return self.inner.execute(unit, values)

    def hashed(*args):
        ran.append("hash")
        return pin_matches(*args)

    monkeypatch.setattr(models.pins, "_guard_statements",
                        lambda *a: {name: Spy(st) for name, st in statements(*a).items()})
    monkeypatch.setattr(models.pins, "pin_matches", hashed)
    work = {}
    for case, id_number in CALLERS.items():
        ran.clear()
        key_initial(call, id_number)
        work[case] = list(ran)
    assert work == {case: ["first", "hash", "execute"] for case in CALLERS}
