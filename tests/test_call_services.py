"""Whole calls for the services beyond the core: medical account, PIN rules, speech, progress.

The plain calls (the medical account in pages, no records, a PIN change, a mobile change, the
guides) are scenarios: tests/scenarios/services/ and tests/scenarios/qa/.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models.cards import HolderEvent, holder_by_id_number
from models.medical import MedicalRecord, yuan_jiao
from tests.support import ALICE, PIN, verified


@pytest.mark.parametrize("fen, spoken", [(0, "0元"), (5, "5分"), (40, "4角"), (12345, "123元4角5分"),
                                          (100, "1元"), (10010, "100元1角"), (-250, "负2元5角")])
def test_amounts_are_spoken_in_yuan_jiao_and_fen(fen, spoken):
    assert yuan_jiao(fen) == spoken


@pytest.mark.parametrize(
    "new_pin, reason",
    [("12345", "bad_format"), ("123456", "initial"), ("777777", "same_digits"), ("234567", "sequence"),
     ("876543", "sequence"), ("850312", "birth_date"), ("031285", "birth_date"), ("120385", "birth_date"),
     ("198503", "birth_date"), (PIN, "same_as_old")],
)
def test_weak_new_pins_are_refused_with_the_reason(call, ledger, new_pin, reason):
    ledger.add(ALICE)
    phone = verified(call, key="7").press(PIN + "#").press(new_pin + "#")
    assert phone.prompts == [f"pin.weak.{reason}", "pin.ask_new"]


def test_a_changed_pin_is_the_one_that_works_next(app, call, ledger):
    ledger.add(ALICE)
    verified(call, key="7").press(PIN + "#").press("246813#").press("246813#")
    assert verified(call, pin=PIN).prompts == ["auth.wrong", "auth.ask_id"]
    assert verified(call, pin="246813").prompts[:2] == ["card.readback", "loss.confirm"]
    with app.extensions["sessions"]() as s:
        rows = [(e.kind, e.channel, e.detail) for e in s.scalars(select(HolderEvent))]
    assert rows == [("pin_changed", "ivr", "service PIN changed")]


def test_three_weak_pins_end_the_change_with_nothing_changed(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="7").press(PIN + "#")
    for weak in ("111111", "222222", "333333"):
        phone.press(weak + "#")
    assert phone.prompts == ["pin.not_changed", "common.after_service", "keys.agent"]


def test_the_old_pin_counts_towards_the_lock(call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="7")
    for _ in range(2):
        phone.press("000000#")
    phone.press("000000#")
    assert phone.prompts == ["auth.too_many", "common.back_to_main", "keys.agent"]


def test_pins_are_never_heard_by_speech_recognition(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("1")
    assert 'input="dtmf speech"' in phone.twiml and 'language="cmn-Hans-CN"' in phone.twiml
    phone.press(ALICE + "#")
    assert phone.prompts == ["auth.ask_pin"]
    assert 'input="dtmf"' in phone.twiml and "speech" not in phone.twiml


def test_a_spoken_id_with_good_confidence_goes_straight_to_the_pin(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().speak("挂失", 0.9).speak("三七零二零二一九八五零三一二零零二五", 0.88)
    assert phone.prompts == ["auth.ask_pin"]


def test_a_spoken_id_that_is_not_valid_is_asked_again(call):
    phone = call().dial().speak("挂失", 0.9).speak("三七零二 不知道", 0.95)
    assert phone.prompts == ["auth.bad_id", "auth.ask_id"]


def test_a_spoken_id_read_back_is_hidden_in_the_call_record(app, call, ledger):
    from models.calls import CallEvent

    ledger.add(ALICE)
    phone = call().dial().speak("挂失", 0.9).speak(ALICE, 0.2)
    assert phone.prompts == ["auth.id_heard", "auth.id_heard_menu"] and "370202" in phone.twiml
    with app.extensions["sessions"]() as s:
        kept = repr([(e.params, e.twiml) for e in s.scalars(select(CallEvent))])
        data = repr(s.get(__import__("models.calls", fromlist=["CallState"]).CallState, phone.call_sid).data)
    assert ALICE not in kept and "370202" not in kept and ALICE not in data


def test_a_mobile_spoken_is_checked_like_a_keyed_one(app, call, ledger):
    ledger.add(ALICE)
    phone = verified(call, key="6").press("1").speak("幺三九 幺二三四 五六七八", 0.9)
    assert phone.prompts == ["mobile.readback", "mobile.confirm_menu"]
    phone.press("1")
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile == "+8613912345678"


def test_a_mobile_keyed_but_never_confirmed_leaves_with_the_call(app, call, ledger):
    from models.calls import CallState

    ledger.add(ALICE)
    phone = verified(call, key="6").press("1").press("13912345678#")
    phone.hang_up()
    with app.extensions["sessions"]() as s:
        assert "13912345678" not in repr(s.get(CallState, phone.call_sid).data)


def test_a_card_in_production_says_its_stage(app, call, ledger):
    from datetime import date

    from models.cards import Card

    ledger.add(ALICE, status="in_production", applied_on=date(2026, 11, 27))
    with app.extensions["sessions"]() as s, s.begin():
        s.scalars(select(Card)).one().advance_production("outlet_ready")
    phone = verified(call, key="3")
    assert "您尾号0025的社保卡已到网点，可以领取，预计2026年12月8日前发卡。" in phone.text()


def test_the_medical_csv_is_recognised_by_its_header_and_loaded_once(runner, app, ledger, tmp_path):
    ledger.add(ALICE)
    path = tmp_path / "medical.csv"
    path.write_text("id_number,at,kind,amount,institution,balance\n"
                    f"{ALICE},2026-11-01 09:30,credit,180.50,青岛市医疗保障局,680.50\n"
                    f"{ALICE},2026-11-03T15:00:00+08:00,debit,32.8,青岛市立医院,647.70\n", encoding="utf-8")
    for _ in range(2):
        assert runner.invoke(args=["ledger", "import", str(path)]).exit_code == 0
    with app.extensions["sessions"]() as s:
        rows = [(r.kind, r.amount_fen, r.balance_fen, r.at.isoformat()) for r in s.scalars(select(MedicalRecord))]
    assert rows == [("credit", 18050, 68050, "2026-11-01T01:30:00+00:00"),
                    ("debit", 3280, 64770, "2026-11-03T07:00:00+00:00")]


def test_a_bad_medical_csv_names_its_lines_and_loads_nothing(runner, app, ledger, tmp_path):
    ledger.add(ALICE)
    path = tmp_path / "medical.csv"
    path.write_text("id_number,at,kind,amount,institution,balance\n"
                    f"{ALICE},2026-11-01 09:30,credit,180.50,青岛市医疗保障局,680.50\n"
                    f"{ALICE},yesterday,spend,1.234,,x\n", encoding="utf-8")
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code == 1
    for problem in ("line 3: at must be", "line 3: kind must be", "line 3: amount must be",
                    "line 3: balance must be", "line 3: institution is empty"):
        assert problem in result.output
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(MedicalRecord)).all() == []


def test_seed_demo_gives_the_demo_holders_a_year_of_records(runner, app):
    runner.invoke(args=["seed-demo"])
    with app.extensions["sessions"]() as s:
        holder = holder_by_id_number(s, "370202198503120025")
        rows = s.scalars(select(MedicalRecord).where(MedicalRecord.holder_id == holder.id)
                         .order_by(MedicalRecord.at)).all()
    assert 12 <= sum(r.kind == "credit" for r in rows) <= 13
    assert any(r.kind == "debit" for r in rows)
    assert (rows[-1].at - rows[0].at).days >= 300
    assert all(r.balance_fen >= 0 for r in rows)


def test_nine_at_a_spoken_id_read_back_asks_for_the_id_again_rather_than_repeating_half(call, ledger):
    ledger.add(ALICE)
    phone = call().dial().speak("挂失", 0.9).speak(ALICE, 0.2)
    assert phone.prompts == ["auth.id_heard", "auth.id_heard_menu"]
    phone.press("9")
    assert phone.prompts == ["auth.ask_id"]
