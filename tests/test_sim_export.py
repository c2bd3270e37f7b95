"""`sim record`: calls placed by hand export as scenarios that replay, and hold no real identity."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from ivr.sim import record, runner
from ivr.sim.scenario import load
from tests.support import ALICE, PIN, card_of

CALLER = "+8613912345678"
SECRETS = (ALICE, ALICE[:-4], PIN, CALLER[3:], card_of(ALICE))


@pytest.fixture
def cli(app):
    """The app's CLI runner."""
    return app.test_cli_runner()


def alice(app, pin_failures: int = 0, cards: list | None = None) -> None:
    """Put Alice in the ledger as a fixture: her PIN, a normal card unless told, prior wrong PINs."""
    cards = [{"card_number": card_of(ALICE), "status": "normal"}] if cards is None else cards
    runner.Target(app).load_fixtures([{"id_number": ALICE, "pin": PIN, "mobile": CALLER[3:],
                                       "pin_failures": pin_failures, "cards": cards}])


def exported(cli, phone) -> tuple[str, dict]:
    """Export the call with `sim record`: its YAML, checked to hold no secret, and the parsed doc."""
    if not phone.ended:
        phone.hang_up()
    result = cli.invoke(args=["sim", "record", phone.call_sid])
    assert result.exit_code == 0, result.output
    for secret in SECRETS:
        assert secret not in result.output
    return result.output, yaml.safe_load(result.output)


def replayed(app, text: str, tmp_path: Path) -> runner.Result:
    """Run an exported scenario against the app."""
    path = tmp_path / "replay.yaml"
    path.write_text(text, encoding="utf-8")
    return runner.run(runner.Target(app), load(path))


def kinds(doc: dict) -> list[str]:
    return [next(iter(step)) for step in doc["steps"]]


def test_a_call_that_locks_the_pin_in_the_call_replays_with_five_prior_failures(app, call, cli, tmp_path):
    alice(app, pin_failures=5)
    phone = call(caller=CALLER).dial().press("1").press(ALICE + "#").press("000000#")
    assert phone.prompts[0] == "auth.locked"
    text, doc = exported(cli, phone)
    assert doc["cardholders"][0]["pin_failures"] == 5
    assert doc["steps"][3]["press"] == record.WRONG_PIN + "#"
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_a_call_locked_from_the_start_replays_its_refused_right_pin(app, call, cli, tmp_path):
    alice(app, pin_failures=6)
    phone = call(caller=CALLER).dial().press("1").press(ALICE + "#").press(PIN + "#")
    assert phone.prompts[0] == "auth.locked"
    text, doc = exported(cli, phone)
    assert doc["steps"][3]["expect"]["prompts"][0] == "auth.locked"
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_three_malformed_pins_replay_as_malformed_keys(app, call, cli, tmp_path):
    alice(app)
    phone = call(caller=CALLER).dial().press("1").press(ALICE + "#").press("12#").press("34#").press("56#")
    assert phone.prompts[0] == "auth.too_many"
    text, doc = exported(cli, phone)
    assert [s.get("press") for s in doc["steps"][3:6]] == ["1#", "1#", "1#"]
    assert doc["cardholders"][0]["pin_failures"] == 0
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_a_verified_holder_with_no_card_replays_as_a_holder_without_cards(app, call, cli, tmp_path):
    alice(app, cards=[])
    phone = call(caller=CALLER).dial().press("3").press(ALICE + "#").press(PIN + "#")
    assert phone.prompts[0] == "card.none"
    text, doc = exported(cli, phone)
    assert doc["cardholders"][0]["cards"] == []
    assert "cards" not in doc["expect"]
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_silence_in_the_id_and_pin_entries_replays_as_silence_steps(app, call, cli, tmp_path):
    alice(app)
    phone = call(caller=CALLER).dial().press("1").silence().press(ALICE + "#").silence().press(PIN + "#")
    assert phone.prompts[0] == "card.readback"
    text, doc = exported(cli, phone)
    assert kinds(doc) == ["dial", "press", "silence", "press", "silence", "press", "hangup"]
    assert doc["steps"][4]["expect"]["prompts"] == ["common.no_input", "auth.ask_pin"]
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_a_verified_caller_put_through_to_an_agent_replays_the_transfer(app, call, cli, tmp_path):
    alice(app)
    phone = call(caller=CALLER).dial().press("1").press(ALICE + "#").press(PIN + "#").press("0")
    phone.agent_leg_ends("completed").press("1")
    assert phone.prompts == ["rating.thanks", "common.goodbye"] and phone.ended
    text, doc = exported(cli, phone)
    assert doc["steps"][5] == {"agent": "completed", "expect": doc["steps"][5]["expect"]}
    assert doc["steps"][5]["expect"]["prompts"] == ["rating.ask"]
    assert doc["expect"]["transferred"] is True
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_a_call_the_hotline_restarted_as_unknown_cannot_be_exported(app, call, cli):
    phone = call(caller=CALLER)
    phone._post("http://127.0.0.1:8000/voice/step?t=5", {"Digits": "1"})  # no incoming webhook first
    phone.hang_up()
    result = cli.invoke(args=["sim", "record", phone.call_sid])
    assert result.exit_code == 1
    assert f"call {phone.call_sid} cannot be replayed: its first recorded webhook is a step webhook" in result.output
    assert "<digits>" not in result.output and "press" not in result.output
    assert "Traceback" not in result.output


def test_a_call_back_request_with_a_number_and_a_message_replays(app, call, cli, tmp_path):
    phone = call(caller=CALLER).dial().press("0").agent_leg_ends("no-answer")
    phone.press("1").press("2").press(CALLER[3:] + "#").press("1").press("1").record(8).press("1")
    assert phone.prompts == ["rating.thanks", "common.goodbye"]
    text, doc = exported(cli, phone)
    assert {"press": record.FIXTURE_CALLBACK + "#"} == {"press": doc["steps"][5]["press"]}
    assert "text" not in doc["steps"][5]["expect"]  # the number read back was kept hidden
    assert doc["steps"][8]["record"] == 8
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_a_spoken_menu_choice_and_id_number_replay_as_speech_with_their_confidence(app, call, cli, tmp_path):
    alice(app)
    phone = call(caller=CALLER).dial().speak("我要查询卡的状态", 0.92).speak(" ".join(ALICE), 0.35).speak("对", 0.9)
    phone.press(PIN + "#")
    assert phone.prompts[0] == "card.readback"
    text, doc = exported(cli, phone)
    assert doc["steps"][1] == {"speak": "我要查询卡的状态", "confidence": 0.92, "expect": doc["steps"][1]["expect"]}
    assert (doc["steps"][2]["speak"], doc["steps"][2]["confidence"]) == (record.FIXTURE_ID, 0.35)
    assert "text" not in doc["steps"][2]["expect"]  # the ID number read back was kept hidden
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_a_pin_change_with_a_weak_pin_and_a_mismatch_replays(app, call, cli, tmp_path):
    alice(app)
    phone = call(caller=CALLER).dial().press("7").press(ALICE + "#").press(PIN + "#").press(PIN + "#")
    phone.press("777777#").press("246813#").press("246831#").press("246813#").press("246813#")
    assert phone.prompts[0] == "pin.done"
    text, doc = exported(cli, phone)
    assert replayed(app, text, tmp_path).passed


def test_a_caller_on_the_initial_pin_replays_with_the_initial_pin(app, call, cli, tmp_path):
    alice(app)
    with app.extensions["sessions"]() as s, s.begin():
        from models.cards import holder_by_id_number
        from models.identity import pin_hash

        holder_by_id_number(s, ALICE).pin_hash = pin_hash(app.extensions["settings"].pin_key, ALICE, "123456")
    phone = call(caller=CALLER).dial().press("1").press(ALICE + "#").press("123456#")
    assert phone.prompts[0] == "auth.initial_pin"
    text, doc = exported(cli, phone)
    assert doc["cardholders"][0]["pin"] == "123456"
    assert replayed(app, text, tmp_path).passed


@pytest.mark.parametrize(
    "said, masked",
    [
        (f"挂失，我的身份证号是{ALICE}", "挂失，我的身份证号是<id_number>"),
        (f"改密码，原来的密码是{' '.join(PIN)}", "改密码，原来的密码是<pin>"),
        (f"改手机，我的手机是{CALLER[3:]}", "改手机，我的手机是<phone>"),
    ],
    ids=["ID number", "PIN digit by digit", "mobile"],
)
def test_a_menu_choice_spoken_with_a_number_exports_without_it_and_replays(app, call, cli, tmp_path, said, masked):
    alice(app)
    phone = call(caller=CALLER).dial().speak(said, 0.9).press(ALICE + "#").press(PIN + "#")
    text, doc = exported(cli, phone)
    assert doc["steps"][1]["speak"] == masked
    result = replayed(app, text, tmp_path)
    assert result.passed, result.failures


def test_speech_recorded_in_full_at_a_menu_by_an_older_release_is_masked_in_the_export(app, call, cli, tmp_path):
    alice(app)
    phone = call(caller=CALLER).dial().speak("挂失", 0.9).press(ALICE + "#").press(PIN + "#")
    with app.extensions["sessions"]() as s, s.begin():
        from models.calls import CallEvent

        menu_step = s.scalars(select(CallEvent).where(CallEvent.call_sid == phone.call_sid)
                              .order_by(CallEvent.id)).all()[1]
        menu_step.params = {**menu_step.params, "SpeechResult": f"挂失，身份证{ALICE}，然后{PIN}，手机{CALLER[3:]}"}
    text, doc = exported(cli, phone)
    assert doc["steps"][1]["speak"] == "挂失，身份证<id_number>，然后<pin>，手机<phone>"
    assert replayed(app, text, tmp_path).passed


@pytest.mark.parametrize("own_pin", ["123456", PIN], ids=["still on it", "a PIN of their own"])
def test_a_caller_keying_the_initial_pin_replays_the_same_whoever_they_are(app, call, cli, tmp_path, own_pin):
    alice(app)
    with app.extensions["sessions"]() as s, s.begin():
        from models.cards import holder_by_id_number
        from models.identity import pin_hash

        holder_by_id_number(s, ALICE).pin_hash = pin_hash(app.extensions["settings"].pin_key, ALICE, own_pin)
    phone = call(caller=CALLER).dial().press("1").press(ALICE + "#").press("123456#").press("1").press("3")
    assert phone.prompts[0] == "auth.initial_pin"
    text, doc = exported(cli, phone)
    assert doc["steps"][3]["press"] == "123456#"
    assert doc["cardholders"][0]["pin"] == "123456"
    assert replayed(app, text, tmp_path).passed
