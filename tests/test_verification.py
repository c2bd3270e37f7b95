"""Whole calls: proving who you are with the ID number and the service PIN.

The plain calls (an X keyed as *, a malformed ID or PIN asked again, three malformed IDs or three
wrong PINs, a locked caller refused even the right PIN and for the rest of the call, silence in
the entries) are scenarios: tests/scenarios/verification/ and tests/scenarios/status/.
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from models.identity import check_char, id_key
from models.pins import PinGuard
from tests.support import ALICE, NOBODY, PIN, card_of, verified

WRONG = "000000"


def start(call, key="1", **kw):
    """Dial and choose a service: the ID number prompt."""
    phone = call(**kw).dial().press(key)
    assert phone.prompts == ["auth.ask_id"]
    return phone


def test_a_card_service_asks_the_id_number_then_the_pin(call, ledger):
    ledger.add(ALICE)
    phone = start(call)
    assert phone.waiting.finish_on_key == "#" and phone.waiting.num_digits is None
    phone.press(ALICE + "#")
    assert phone.prompts == ["auth.ask_pin"]
    phone.press(PIN + "#")
    assert phone.prompts == ["card.readback", "loss.confirm"]


@pytest.mark.parametrize(
    "keys",
    [
        "370202198503120026",  # wrong check character
        "37020219850312002",  # 17 characters
        "3702021985031200251",  # 19 characters
        "3702021985*3120025",  # * inside the number
        "370202198502300024",  # 30 February
        "*" * 18,
        "0" * 300,
    ],
)
def test_a_malformed_id_number_is_asked_again_before_anything_is_looked_up(call, ledger, keys):
    ledger.add(ALICE)
    phone = start(call).press(keys + "#")
    assert phone.prompts == ["auth.bad_id", "auth.ask_id"]


def test_an_unknown_id_hears_exactly_what_a_wrong_pin_hears(call, ledger):
    ledger.add(ALICE)
    known = start(call).press(ALICE + "#").press(WRONG + "#")
    unknown = start(call).press(NOBODY + "#").press(WRONG + "#")
    assert known.prompts == unknown.prompts == ["auth.wrong", "auth.ask_id"]
    assert known.twiml.replace(known.call_sid, "") == unknown.twiml.replace(unknown.call_sid, "")


def test_the_sixth_wrong_pin_across_calls_locks_the_phone_service(call, ledger):
    ledger.add(ALICE)
    for _ in range(5):
        phone = start(call).press(ALICE + "#").press(WRONG + "#")
        assert phone.prompts == ["auth.wrong", "auth.ask_id"]
    phone = start(call).press(ALICE + "#").press(WRONG + "#")
    assert phone.prompts == ["auth.locked", "auth.locked_menu", "keys.agent"]
    assert "锁定" in phone.text()


def test_a_locked_caller_hears_the_lock_first_and_how_it_is_lifted_on_request(call, ledger):
    ledger.add(ALICE)
    for _ in range(5):
        start(call).press(ALICE + "#").press(WRONG + "#")
    phone = start(call).press(ALICE + "#").press(WRONG + "#")
    assert "重置密码" not in phone.text()
    phone.press("2")
    assert phone.prompts == ["auth.locked_how", "common.after_service", "keys.agent"]
    assert "请本人携带有效身份证件到社保卡合作银行网点重置密码，或按0转人工服务核实身份后解锁。" in phone.text()
    phone.press("9")
    assert phone.prompts == ["auth.locked_how", "common.after_service", "keys.agent"]


def test_an_unknown_id_locks_after_six_failures_just_like_a_known_one(call):
    for _ in range(5):
        start(call).press(NOBODY + "#").press(WRONG + "#")
    phone = start(call).press(NOBODY + "#").press(WRONG + "#")
    assert phone.prompts == ["auth.locked", "auth.locked_menu", "keys.agent"]


def test_the_right_pin_resets_the_count_of_failures(call, ledger):
    ledger.add(ALICE)
    for _ in range(5):
        start(call).press(ALICE + "#").press(WRONG + "#")
    verified(call)
    for _ in range(5):
        phone = start(call).press(ALICE + "#").press(WRONG + "#")
    assert phone.prompts == ["auth.wrong", "auth.ask_id"]


def test_a_lock_with_lock_hours_lifts_by_itself(app, call, ledger, clock, monkeypatch):
    from dataclasses import replace

    settings = app.extensions["settings"]
    patched = replace(settings, pin=replace(settings.pin, lock_hours=24))
    monkeypatch.setattr(app.extensions["turns"], "settings", patched)
    ledger.add(ALICE)
    for _ in range(6):
        start(call).press(ALICE + "#").press(WRONG + "#")
    clock.tick(timedelta(hours=24))
    phone = verified(call)
    assert phone.prompts == ["card.readback", "loss.confirm"]


def test_silence_at_the_id_prompt_asks_again_then_reaches_an_agent(call):
    phone = start(call)
    for _ in range(3):
        phone.silence()
        assert phone.prompts == ["common.no_input", "auth.ask_id"]
    phone.silence()
    assert phone.prompts == ["common.too_many_misses", "agent.connecting"]


def test_in_an_entry_zero_is_a_digit_not_the_agent(call, ledger):
    ledger.add(ALICE)
    phone = start(call).press("0#")
    assert phone.prompts == ["auth.bad_id", "auth.ask_id"]
    assert not phone.transferred


def test_wrong_pins_spread_over_calls_lock_at_the_sixth_not_later(call, ledger):
    ledger.add(ALICE)
    first = start(call)
    for _ in range(3):
        first.press(ALICE + "#").press(WRONG + "#")
    second = start(call)
    second.press(ALICE + "#").press(WRONG + "#").press(ALICE + "#").press(WRONG + "#")
    assert second.prompts == ["auth.wrong", "auth.ask_id"]
    second.press(ALICE + "#").press(WRONG + "#")
    assert second.prompts == ["auth.locked", "auth.locked_menu", "keys.agent"]


def test_concurrent_wrong_pins_lock_after_exactly_the_limit(app, ledger):
    import threading

    from models.cards import holder_by_id_number
    from models.clock import utcnow
    from models.identity import id_key
    from models.pins import LOCKED, PinGuard, check_pin
    from models.pins import WRONG as WRONG_RESULT

    ledger.add(ALICE)
    settings, sessions = app.extensions["settings"], app.extensions["sessions"]
    key = id_key(settings.pin_key, ALICE)
    results: list[str] = []
    barrier = threading.Barrier(12)

    def guess() -> None:
        barrier.wait()
        with sessions() as s, s.begin():
            holder = holder_by_id_number(s, ALICE)
            results.append(check_pin(s, key=settings.pin_key, id_key=key, holder=holder, pin=WRONG,
                                     now=utcnow(), policy=settings.pin))

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count(WRONG_RESULT) == 5 and results.count(LOCKED) == 7
    with sessions() as s:
        assert s.get(PinGuard, key).failures == 6


def test_the_expiry_date_is_the_date_in_qingdao_not_in_utc(call, ledger, clock):
    clock.move_to("2026-11-30 17:00:00")  # 1 December, 01:00 in Qingdao
    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#").press(PIN + "#").press("1")
    assert "有效期至2026年12月8日" in phone.text()


def born_on(yyyymmdd: str) -> str:
    """Return the keys of an ID number born on that day, with the right check character (X as *)."""
    first17 = "370202" + yyyymmdd + "002"
    return (first17 + check_char(first17)).replace("X", "*")


@pytest.mark.parametrize("born", ["00010101", "25400101", "99991231", "18991231", "20261201"],
                         ids=["year 0001", "year 2540", "year 9999", "1899", "tomorrow"])
def test_an_id_number_born_before_1900_or_after_the_calls_day_is_not_valid(call, born):
    phone = start(call).press(born_on(born) + "#")
    assert phone.prompts == ["auth.bad_id", "auth.ask_id"]


def test_an_id_number_born_on_the_calls_day_in_qingdao_is_valid(call, clock):
    assert start(call).press(born_on("20261130") + "#").prompts == ["auth.ask_pin"]
    clock.move_to("2026-11-30 16:30:00")  # 00:30 on 1 December in Qingdao, still 30 November in UTC
    assert start(call).press(born_on("20261201") + "#").prompts == ["auth.ask_pin"]


def failures(app, id_number: str) -> int:
    """Return the PIN counter of an entered ID number."""
    with app.extensions["sessions"]() as s:
        row = s.get(PinGuard, id_key(app.extensions["settings"].pin_key, id_number))
        return 0 if row is None else row.failures


SUSPENDED = ["auth.too_many", "common.back_to_main", "keys.agent"]


@pytest.mark.parametrize("service", ["1", "2", "3", "7"])
def test_three_wrong_current_pins_in_a_pin_change_stop_self_service_for_the_rest_of_the_call(
        app, call, ledger, service):
    ledger.add(ALICE)
    phone = verified(call, key="7")
    assert phone.prompts == ["pin.ask_old"]
    for _ in range(2):
        assert phone.press(WRONG + "#").prompts == ["pin.old_wrong", "pin.ask_old"]
    assert phone.press(WRONG + "#").prompts == SUSPENDED
    phone.press("1").press(service)
    assert phone.prompts == SUSPENDED
    assert failures(app, ALICE) == 3
    assert ledger.card(card_of(ALICE)).status == "normal"
    assert ledger.history(card_of(ALICE)) == [(None, "normal", "import", None)]


@pytest.mark.parametrize("where", ["verification", "pin change"])
def test_three_malformed_pins_stop_self_service_for_the_rest_of_the_call(call, ledger, where):
    ledger.add(ALICE)
    phone = start(call).press(ALICE + "#") if where == "verification" else verified(call, key="7")
    phone.press("12#").press("34#").press("56#")
    assert phone.prompts == SUSPENDED
    assert phone.press("1").press("1").prompts == SUSPENDED
