"""The webhook boundary: signatures, health, retries, the call record, and never a 500."""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from twilio.request_validator import RequestValidator

from tests.support import (
    ALICE,
    BASE,
    FORM,
    PIN,
    TOKEN,
    calls,
    card_of,
    events,
    signed_post,
    use_test_secrets,
    verified,
)

START = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the frozen clock: MONDAY_10AM


@pytest.mark.parametrize("path", ["/voice", "/voice/step?t=1", "/voice/dial?t=1", "/voice/status"])
def test_a_request_without_a_signature_is_refused(client, path):
    assert client.post(path, data=FORM, base_url=BASE).status_code == 403


def test_a_request_signed_with_another_token_is_refused(client, app):
    assert signed_post(client, "/voice", FORM, token="not-our-token").status_code == 403
    assert calls(app) == []


def test_a_tampered_form_is_refused(client):
    sig = RequestValidator(TOKEN).compute_signature(BASE + "/voice", FORM)
    tampered = {**FORM, "From": "+8613900000000"}
    resp = client.post("/voice", data=tampered, base_url=BASE, headers={"X-Twilio-Signature": sig})
    assert resp.status_code == 403


def forwarded_post(client, host, base="http://10.0.0.5:8000"):
    """POST an incoming call signed for https://HOST/voice, reaching the app at `base` with the
    X-Forwarded-Proto and X-Forwarded-Host a proxy (or anyone) can send."""
    sig = RequestValidator(TOKEN).compute_signature(f"https://{host}/voice", FORM)
    headers = {"X-Twilio-Signature": sig, "X-Forwarded-Proto": "https", "X-Forwarded-Host": host}
    return client.post("/voice", data=FORM, base_url=base, headers=headers)


def test_behind_a_tls_proxy_the_forwarded_https_url_is_what_is_checked(configured):
    app = configured(twilio={"trusted_proxies": 1})
    assert forwarded_post(app.test_client(), "ivr.example.gov.cn").status_code == 200


def test_by_default_a_request_signed_for_another_host_is_refused_whatever_it_forwards(app, client):
    resp = forwarded_post(client, "ivr.elsewhere.example", base=BASE)
    assert resp.status_code == 403
    assert calls(app) == []


def test_with_one_trusted_proxy_the_host_it_forwards_is_what_is_checked(configured):
    app = configured(twilio={"trusted_proxies": 1})
    assert forwarded_post(app.test_client(), "ivr.elsewhere.example", base=BASE).status_code == 200


def test_the_default_configuration_trusts_no_forwarded_header(app):
    assert app.extensions["settings"].trusted_proxies == 0
    assert app.extensions["settings"].public_base_url is None


UNCHECKED = ("neither twilio.public_base_url nor twilio.trusted_proxies is set: Twilio's signatures are "
             "checked against the URL this host sees; behind a proxy, set public_base_url to the URL Twilio calls")
SHARED = "postgresql+psycopg://hotline@127.0.0.1:9/hotline"  # never connected to: the app is only built


def warnings_logged(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "twilio." in r.getMessage()]


@pytest.mark.parametrize(("sections", "warned"), [
    ({"database_url": SHARED}, [UNCHECKED]),
    ({"database_url": SHARED, "twilio": {"public_base_url": "https://ivr.example.gov.cn"}}, []),
    ({"database_url": SHARED, "twilio": {"trusted_proxies": 1}}, []),
    ({}, []),  # the embedded SQLite: one machine, tried directly
])
def test_a_shared_database_without_a_public_url_or_a_proxy_count_warns_once_at_start(
        tmp_path, monkeypatch, caplog, sections, warned):
    from ivr import create_app

    use_test_secrets(monkeypatch)
    sections = {"database_url": f"sqlite:///{tmp_path / 'x.db'}", **sections}
    with caplog.at_level(logging.WARNING):
        create_app(sections).extensions["engine"].dispose()
    assert warnings_logged(caplog) == warned


def test_init_db_warns_once_on_a_shared_database_without_a_public_url_or_a_proxy_count(app, runner, caplog):
    import dataclasses

    app.extensions["settings"] = dataclasses.replace(app.extensions["settings"], database_url=SHARED)
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and "database ready" in result.output
    assert warnings_logged(caplog) == [UNCHECKED]


def test_a_configured_public_base_url_is_what_is_checked(tmp_path, monkeypatch, clock):
    from ivr import create_app
    from models.storage.db import init_db

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", "k")
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'x.db'}",
                      "twilio": {"public_base_url": "https://hotline.qd.example/"}})
    init_db(app.extensions["engine"])
    client = app.test_client()
    assert signed_post(client, "/voice", FORM, base="https://hotline.qd.example").status_code == 200
    assert signed_post(client, "/voice", FORM).status_code == 403


def test_incoming_call_answers_twiml_with_the_right_content_type(client):
    resp = signed_post(client, "/voice", FORM)
    assert resp.status_code == 200
    assert resp.mimetype == "text/xml"
    assert b'<Say language="cmn-CN" voice="Polly.Zhiyu">' in resp.data


def test_healthz_answers_200_when_the_database_answers(client):
    resp = client.get("/healthz")
    assert (resp.status_code, resp.data) == (200, b"ok\n")


def test_healthz_answers_503_when_the_database_does_not(app, client, monkeypatch):
    engine = app.extensions["engine"]

    def broken(*a, **kw):
        raise ConnectionError("database down")

    monkeypatch.setattr(engine, "connect", broken)
    assert client.get("/healthz").status_code == 503


@pytest.mark.parametrize(
    "form",
    [
        {"CallSid": "CA" + "2" * 32, "Digits": "1" * 300},
        {"CallSid": "CA" + "2" * 32, "Digits": "abc<>&"},
        {"CallSid": "CA" + "2" * 32, "Digits": ""},
        {"CallSid": "CA" + "2" * 32},
        {"CallSid": ""},
        {},
    ],
)
@pytest.mark.parametrize("path", ["/voice", "/voice/step?t=1", "/voice/step?t=junk", "/voice/dial?t=3"])
def test_junk_and_missing_fields_still_get_a_spoken_answer(client, form, path):
    resp = signed_post(client, path, form)
    assert resp.status_code == 200
    assert b"<Say" in resp.data


def test_a_step_for_an_unknown_call_starts_it_again_at_the_main_menu(call, app):
    phone = call()
    phone.waiting = None
    phone._post(f"{BASE}/voice/step?t=5", {"Digits": "1"})
    assert phone.prompts == ["common.resumed", "main.menu", "keys.agent"]
    assert calls(app)[0].state == "main"


def test_a_database_outage_apologises_and_transfers_without_a_500(app, call, monkeypatch):
    phone = call().dial()
    engine = app.extensions["engine"]
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE call_events RENAME TO call_events_gone"))
    phone.press("1")
    assert phone.prompts == ["common.system_error", "agent.connecting"]
    assert phone.verbs == ["Say", "Say", "Dial"]


def test_a_failure_is_logged_with_the_call_sid(app, call, caplog):
    phone = call().dial()
    with app.extensions["engine"].begin() as conn:
        conn.execute(text("ALTER TABLE cardholders RENAME TO cardholders_gone"))
    with caplog.at_level(logging.ERROR):
        phone.press("1").press(ALICE + "#").press(PIN + "#")
    assert phone.prompts == ["common.system_error", "agent.connecting"]
    assert any(phone.call_sid in r.getMessage() for r in caplog.records)


def test_a_retried_webhook_gets_the_same_answer_and_changes_nothing_twice(app, call, ledger):
    ledger.add(ALICE)
    phone = verified(call)
    confirm_turn = phone.waiting.action
    phone.press("1")
    first = phone.twiml
    status, again = phone._send(confirm_turn, {"Digits": "1"})
    assert status == 200 and again == first
    assert len(ledger.history(card_of(ALICE))) == 2


def test_a_retried_wrong_pin_counts_once(app, call, ledger):
    from models.pins import PinGuard

    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#")
    pin_turn = phone.waiting.action
    phone.press("000000#")
    phone._send(pin_turn, {"Digits": "000000"})
    with app.extensions["sessions"]() as s:
        assert [g.failures for g in s.scalars(select(PinGuard))] == [1]


def test_the_status_callback_closes_the_call_record(app, call, ledger, clock):
    ledger.add(ALICE)
    phone = verified(call).press("1")
    clock.tick(timedelta(seconds=42))
    phone.hang_up()  # the emulator reports CallDuration=42
    row = calls(app)[0]
    assert row.end_reason == "completed"
    assert (row.started_at, row.ended_at, row.duration_s) == (START, START + timedelta(seconds=42), 42)
    assert row.data["services"] == ["loss"] and row.data["completed"] == ["loss"]


def test_a_caller_who_hangs_up_at_the_menu_is_recorded_as_hung_up(app, call):
    call().dial().hang_up()
    assert calls(app)[0].end_reason == "hung_up"


def test_a_transfer_stores_the_context_for_the_agent(app, call, ledger):
    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#").press("000000#")
    phone.silence().silence().silence().silence()
    phone.hang_up()
    row = calls(app)[0]
    assert row.end_reason == "transferred"
    assert row.handoff == {
        "call_sid": phone.call_sid,
        "hotline": "12333",
        "from": "+86139****0000",
        "verified": False,
        "id_masked": "**************0025",
        "services": ["loss"],
        "completed": [],
        "reason": "no_input",
        "pin_failures": 1,
        "locked": False,
        "elder": False,
        "from_state": "auth_id",
        "at": "2026-11-30T02:00:00+00:00",
    }


def test_recorded_webhooks_hold_no_id_number_pin_or_full_mobile(app, call, ledger, caplog):
    ledger.add(ALICE)
    caplog.set_level(logging.DEBUG)
    phone = call(caller="+8613912345678").dial().press("1").press(ALICE + "#").press(PIN + "#").press("1")
    phone.hang_up()
    recorded = repr([(e.params, e.twiml) for e in events(app, phone.call_sid)])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (ALICE, ALICE[:-4], PIN, "13912345678"):
        assert secret not in recorded
        assert secret not in logged
    assert [e.params.get("Digits") for e in events(app, phone.call_sid)][1:4] == ["1", "<id_number>", "<pin>"]
    assert events(app, phone.call_sid)[0].params["From"] == "+86139****5678"


def test_the_database_keeps_no_pin_in_clear(app, ledger):
    ledger.add(ALICE)
    with app.extensions["engine"].connect() as conn:
        dump = repr(conn.execute(text("SELECT * FROM cardholders")).all())
    assert PIN not in dump


def test_keys_for_an_unknown_call_are_not_recorded_in_clear(app, call):
    phone = call()
    phone._post(f"{BASE}/voice/step?t=2", {"Digits": ALICE})
    recorded = repr([e.params for e in events(app, phone.call_sid)])
    assert ALICE not in recorded and "<digits>" in recorded


def test_a_sip_caller_is_masked_and_fits_the_record(app, call):
    phone = call(caller="sip:13912345678@trunk.example.com").dial()
    row = calls(app)[0]
    assert row.from_masked == "sip:139****5678"
    assert "13912345678" not in repr(events(app, phone.call_sid)[0].params)


def test_a_status_only_call_is_recorded_as_completed(app, call, ledger):
    ledger.add(ALICE)
    verified(call, key="3").hang_up()
    row = calls(app)[0]
    assert (row.end_reason, row.data["completed"]) == ("completed", ["status"])


def test_every_service_tried_is_kept_in_the_call_record(app, call, ledger):
    ledger.add(ALICE)
    verified(call, key="3").press("*").press("2").hang_up()
    assert calls(app)[0].data["services"] == ["status", "release"]


def test_a_retry_of_a_failed_step_replays_the_apology_instead_of_acting_again(app, call, ledger, monkeypatch):
    from ivr.callflow import actions

    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#")
    pin_turn = phone.waiting.action

    def broken(*a, **kw):
        raise RuntimeError("ledger unavailable")

    monkeypatch.setitem(actions.ACTIONS, "verify_pin", broken)
    phone.press(PIN + "#")
    assert phone.prompts == ["common.system_error", "agent.connecting"]
    status, again = phone._send(pin_turn, {"Digits": PIN})
    assert status == 200 and again == phone.twiml
    assert [e.kind for e in events(app, phone.call_sid)].count("step") == 3
