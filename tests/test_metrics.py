"""GET /metrics in one process: who may read it, and what each webhook, call and scrape counts."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from tests.support import ALICE, FORM, PIN, signed_post, verified
from tests.support.metrics import Scrape

OUTSIDE = {"REMOTE_ADDR": "203.0.113.5"}  # a documentation address: not loopback


def scrape(app) -> Scrape:
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200, resp.text
    return Scrape(resp.text)


def test_loopback_reads_the_metrics_in_prometheus_text_format(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type == "text/plain; version=1.0.0; charset=utf-8"
    assert "# TYPE ivr_webhooks_total counter" in resp.text


def test_a_client_not_on_loopback_without_the_token_is_refused(client):
    resp = client.get("/metrics", environ_base=OUTSIDE)
    assert (resp.status_code, resp.text) == (403, "forbidden\n")


def test_without_a_configured_token_even_a_bearer_header_is_refused(client):
    resp = client.get("/metrics", environ_base=OUTSIDE, headers={"Authorization": "Bearer anything"})
    assert resp.status_code == 403


def test_the_right_bearer_token_reads_the_metrics_from_anywhere(configured):
    app = configured({"IVR_METRICS_TOKEN": "scrape-secret"})
    resp = app.test_client().get("/metrics", environ_base=OUTSIDE, headers={"Authorization": "Bearer scrape-secret"})
    assert resp.status_code == 200 and "ivr_webhooks_total" in resp.text


@pytest.mark.parametrize("address", ["203.0.113.5", "127.0.0.1"])
@pytest.mark.parametrize("header", ["Bearer scrape-secreT", "Bearer scrape-secret-and-more", "Basic scrape-secret",
                                    "scrape-secret"])
def test_a_wrong_token_is_refused_wherever_it_comes_from(configured, address, header):
    app = configured({"IVR_METRICS_TOKEN": "scrape-secret"})
    resp = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": address}, headers={"Authorization": header})
    assert resp.status_code == 403


def test_a_forged_x_forwarded_for_does_not_pass_for_loopback_when_no_proxy_is_trusted(client):
    resp = client.get("/metrics", environ_base=OUTSIDE, headers={"X-Forwarded-For": "127.0.0.1"})
    assert resp.status_code == 403


def test_behind_a_trusted_proxy_on_loopback_the_client_it_forwards_is_the_one_checked(configured):
    app = configured(twilio={"trusted_proxies": 1})
    client = app.test_client()
    loopback = {"REMOTE_ADDR": "127.0.0.1"}  # nginx on the same host
    # The client sent X-Forwarded-For: 127.0.0.1 itself; nginx appended the address it really came from.
    forged = client.get("/metrics", environ_base=loopback, headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.5"})
    on_the_host = client.get("/metrics", environ_base=loopback, headers={"X-Forwarded-For": "127.0.0.1"})
    assert (forged.status_code, on_the_host.status_code) == (403, 200)


def test_every_label_set_shows_from_zero_before_any_call(app):
    page = scrape(app)
    assert page("ivr_webhooks_total", kind="whisper", outcome="failed") == 0
    assert page("ivr_calls_ended_total", hotline="12333", ended="hung_up") == 0
    assert page("ivr_services_completed_total", service="guides") == 0
    assert page("ivr_transfers_total", reason="direct") == 0
    assert page("ivr_database_errors_total") == 0
    assert page("ivr_webhook_seconds_count", kind="step") == 0


def test_a_completed_call_counts_its_webhooks_its_end_and_its_service(app, call, ledger):
    ledger.add(ALICE)
    phone = verified(call).press("1")  # a loss report
    phone.hang_up()
    page = scrape(app)
    assert page.nonzero("ivr_webhooks_total") == {"kind=incoming,outcome=ok": 1, "kind=step,outcome=ok": 4,
                                                   "kind=status,outcome=ok": 1}
    assert page.nonzero("ivr_calls_ended_total") == {"ended=completed,hotline=12333": 1}
    assert page.nonzero("ivr_services_completed_total") == {"service=loss": 1}
    assert page.nonzero("ivr_transfers_total") == {}
    assert page("ivr_webhook_seconds_count", kind="step") == 4
    assert page("ivr_webhook_seconds_bucket", kind="step", le="+Inf") == 4


def test_a_status_callback_sent_again_is_a_webhook_but_closes_no_call_twice(app, call, client):
    phone = call().dial().hang_up()
    form = {**phone.params(), "CallStatus": "completed", "CallDuration": "42"}
    assert signed_post(client, "/voice/status", form).status_code == 204
    page = scrape(app)
    assert page("ivr_webhooks_total", kind="status", outcome="ok") == 2
    assert page.nonzero("ivr_calls_ended_total") == {"ended=hung_up,hotline=12333": 1}


def test_a_retried_step_that_transferred_counts_the_transfer_once(app, call, client):
    phone = call().dial()
    action = phone.waiting.action
    phone.press("0")  # an agent, please
    path = action.removeprefix("http://127.0.0.1:8000")
    signed_post(client, path, {**phone.params(), "Digits": "0"})  # Twilio sends the same step again
    page = scrape(app)
    assert page.nonzero("ivr_transfers_total") == {"reason=caller_request": 1}
    assert page("ivr_webhooks_total", kind="step", outcome="ok") == 2


def test_a_caller_put_through_after_silence_counts_a_transfer_by_its_reason(app, call):
    call().dial().silence().silence().silence().silence()
    assert scrape(app).nonzero("ivr_transfers_total") == {"reason=no_input": 1}


def test_the_agents_whisper_and_the_dial_outcome_are_counted_by_kind(app, call):
    phone = call().dial().press("0").agent_leg_ends("completed")
    phone.press("1")  # rates the call; the goodbye hangs up and Twilio reports the end
    page = scrape(app)
    assert page.nonzero("ivr_webhooks_total") == {
        "kind=incoming,outcome=ok": 1, "kind=step,outcome=ok": 2, "kind=whisper,outcome=ok": 1,
        "kind=dial,outcome=ok": 1, "kind=status,outcome=ok": 1}
    assert page.nonzero("ivr_calls_ended_total") == {"ended=transferred,hotline=12333": 1}


def test_an_unsigned_webhook_is_counted_refused_and_not_timed(app, client):
    assert client.post("/voice/step?t=1", data=FORM).status_code == 403
    page = scrape(app)
    assert page.nonzero("ivr_webhooks_total") == {"kind=step,outcome=refused": 1}
    assert page("ivr_webhook_seconds_count", kind="step") == 0


def test_a_failed_step_counts_failed_a_database_error_and_the_system_error_transfer(app, call, ledger):
    ledger.add(ALICE)
    phone = call().dial()
    with app.extensions["engine"].begin() as conn:
        conn.execute(text("ALTER TABLE cardholders RENAME TO cardholders_gone"))
    phone.press("1").press(ALICE + "#").press(PIN + "#")
    assert phone.prompts == ["common.system_error", "agent.connecting"]
    page = scrape(app)
    assert page.nonzero("ivr_webhooks_total") == {"kind=incoming,outcome=ok": 1, "kind=step,outcome=ok": 2,
                                                   "kind=step,outcome=failed": 1}
    assert page("ivr_database_errors_total") == 1
    assert page.nonzero("ivr_transfers_total") == {"reason=system_error": 1}


def test_a_failure_the_database_cannot_even_record_counts_failed_but_no_transfer(app, call):
    phone = call().dial()
    with app.extensions["engine"].begin() as conn:
        conn.execute(text("ALTER TABLE call_events RENAME TO call_events_gone"))
    phone.press("1")
    assert phone.prompts == ["common.system_error", "agent.connecting"]
    page = scrape(app)
    assert page("ivr_webhooks_total", kind="step", outcome="failed") == 1
    assert page("ivr_database_errors_total") == 1
    assert page.nonzero("ivr_transfers_total") == {}


def test_a_webhook_without_a_call_sid_is_counted_failed_and_no_database_error(app, client):
    assert signed_post(client, "/voice", {"From": "+8613912345678"}).status_code == 200
    page = scrape(app)
    assert page.nonzero("ivr_webhooks_total") == {"kind=incoming,outcome=failed": 1}
    assert page("ivr_database_errors_total") == 0


def test_the_outbox_gauge_counts_the_text_a_loss_report_queues(app, call, ledger):
    assert scrape(app)("ivr_outbox_pending") == 0
    ledger.add(ALICE)
    verified(call).press("1")
    page = scrape(app)
    assert (page("ivr_outbox_pending"), page("ivr_metrics_database_up")) == (1, 1)


def test_a_database_that_does_not_answer_leaves_the_outbox_gauge_out_and_the_page_up(app, monkeypatch, tmp_path):
    gauges = app.extensions["metrics"].gauges
    monkeypatch.setattr(gauges, "engine", create_engine(f"sqlite:///{tmp_path}/no/such/folder/ledger.db"))
    page = scrape(app)
    assert page("ivr_metrics_database_up") == 0
    assert "ivr_outbox_pending" not in page.names()
    assert page("ivr_calendar_days_known") == 31  # what needs no database is still there


def test_calendar_days_known_counts_from_today_in_the_configured_time_zone(app, clock):
    # The package's data ends on 2026-12-31; the clock stands at Monday 2026-11-30 10:00 in Qingdao.
    assert scrape(app)("ivr_calendar_days_known") == 31
    clock.move_to("2026-12-31 15:59:00")  # 23:59 in Qingdao: the last known day
    assert scrape(app)("ivr_calendar_days_known") == 0
    clock.tick(timedelta(minutes=2))  # 2027-01-01 00:01 in Qingdao, still 2026-12-31 in UTC
    assert scrape(app)("ivr_calendar_days_known") == -1


def test_calendar_days_known_follows_a_year_added_to_the_configuration(configured):
    app = configured(calendar={"holidays": ["2027-01-01"]})
    assert scrape(app)("ivr_calendar_days_known") == 31 + 365


def test_metrics_switched_off_count_nothing_and_answer_404(configured, monkeypatch):
    app = configured(metrics={"enabled": False})
    client = app.test_client()
    assert signed_post(client, "/voice", FORM).status_code == 200
    assert client.get("/metrics").status_code == 404
    assert app.extensions["metrics"].instruments is None


def test_a_metrics_failure_is_logged_and_the_webhook_still_answers(app, client, monkeypatch, caplog):
    instruments = app.extensions["metrics"].instruments

    def broken(*a, **kw):
        raise OSError("metrics file gone")

    monkeypatch.setattr(instruments.by_outcome["incoming", "ok"], "inc", broken)
    with caplog.at_level(logging.ERROR):
        resp = signed_post(client, "/voice", FORM)
    assert resp.status_code == 200 and "<Gather" in resp.text
    assert "metrics: could not count the incoming webhook" in caplog.text


def test_the_token_is_read_from_the_environment_only(configured):
    app = configured(metrics={"token": "from-the-file"})
    assert app.extensions["settings"].metrics_token is None
    assert app.extensions["metrics"].token is None
