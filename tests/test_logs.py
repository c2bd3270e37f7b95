"""Log lines: readable text by default, JSON lines with IVR_LOG_FORMAT=json, masked either way."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from ivr.monitoring import logs
from tests.support import ALICE, FORM, PIN, PIN_KEY, TOKEN, signed_post
from tests.support.metrics import Scrape

ROOT = Path(__file__).resolve().parent.parent
CALLER = "+8613912345678"
SID = "CA0123456789abcdef0123456789abcdef"
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
# A fresh process: the app built as wsgi.py builds it, one incoming call, one line logged by hand.
PROCESS = f"""
import logging
from ivr import create_app
from models.storage.db import create_schema
from tests.support import FORM, signed_post
app = create_app()
create_schema(app.extensions["engine"])
assert signed_post(app.test_client(), "/voice", FORM).status_code == 200
logging.getLogger("ivr.check").warning("caller %s", "{CALLER}")
"""


@pytest.fixture
def json_lines(caplog):
    """Collect what the app logs as JSON lines meanwhile (a handler of the JSON format on the root logger)."""
    out = io.StringIO()
    handler = logs.handler(out, "json")
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="ivr.webhook")  # the line per webhook: JSON only (the app is text)
    logging.getLogger().addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        logging.getLogger().removeHandler(handler)


def run_process(database_url: str, **env: str) -> list[str]:
    """Run PROCESS with the test secrets and this environment; return its standard error's lines."""
    environ = {k: v for k, v in os.environ.items() if k not in ("IVR_LOG_FORMAT", "IVR_CONFIG")}
    environ.update(DATABASE_URL=database_url, TWILIO_AUTH_TOKEN=TOKEN, IVR_PIN_KEY=PIN_KEY,
                   IVR_SECRET_KEY="test-secret-key", **env)
    done = subprocess.run([sys.executable, "-c", PROCESS], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_with_ivr_log_format_json_a_process_logs_one_json_object_a_line(database_url):
    lines = [json.loads(line) for line in run_process(database_url, IVR_LOG_FORMAT="json")]
    webhook = [line for line in lines if line["logger"] == "ivr.webhook"]
    assert len(webhook) == 1
    assert webhook[0] == {"time": webhook[0]["time"], "level": "INFO", "logger": "ivr.webhook",
                          "message": webhook[0]["message"], "call_sid": FORM["CallSid"], "turn": 0, "state": "main",
                          "duration_ms": webhook[0]["duration_ms"], "kind": "incoming", "outcome": "ok"}
    assert re.fullmatch(ISO_UTC, webhook[0]["time"]) and webhook[0]["duration_ms"] > 0
    assert re.fullmatch(r"incoming webhook ok in \d+\.\d ms", webhook[0]["message"])
    assert lines[-1] == {"time": lines[-1]["time"], "level": "WARNING", "logger": "ivr.check",
                         "message": "caller +86139****5678"}  # outside a webhook: no call keys


def test_by_default_a_process_logs_readable_text_masked_without_a_line_per_webhook(database_url):
    lines = run_process(database_url)
    assert not any(" ivr.webhook: " in line or line.startswith("{") for line in lines)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ivr\.check: caller \+86139\*\*\*\*5678",
                        lines[-1])


def test_an_unknown_log_format_logs_text_and_says_so(database_url):
    lines = run_process(database_url, IVR_LOG_FORMAT="xml")
    assert any(line.endswith("WARNING ivr.monitoring.logs: IVR_LOG_FORMAT=xml is neither text nor json: logging text")
               for line in lines)
    assert not any(line.startswith("{") for line in lines)


def test_each_line_logged_during_a_webhook_carries_its_call_turn_state_and_duration(app, call, ledger, json_lines):
    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#")
    with app.extensions["engine"].begin() as conn:
        conn.execute(text("ALTER TABLE cardholders RENAME TO cardholders_gone"))
    phone.press(PIN + "#")
    out = json_lines()
    ends = [line for line in out if line["logger"] == "ivr.webhook"]
    assert [(e["kind"], e["outcome"], e["turn"], e["state"]) for e in ends] == [
        ("incoming", "ok", 0, "main"), ("step", "ok", 1, "auth_id"), ("step", "ok", 2, "auth_pin"),
        ("step", "failed", 3, "agent_dial")]
    for line in out:
        assert re.fullmatch(ISO_UTC, line["time"])
        assert (line["call_sid"], line["duration_ms"] >= 0) == (phone.call_sid, True)
    failed = next(line for line in out if line["level"] == "ERROR")
    assert failed["message"] == f"call {phone.call_sid}: step webhook failed; transferring to an agent"
    assert (failed["logger"], failed["turn"], failed["state"]) == ("ivr.voice.turns", 3, "auth_pin")
    assert "cardholders" in failed["exception"]


def test_a_refused_webhook_logs_its_line_without_a_call(client, json_lines):
    client.post("/voice", data=FORM)
    out = json_lines()
    assert [(line["logger"], line["level"], line["call_sid"], line.get("outcome")) for line in out] == [
        ("ivr", "WARNING", None, None), ("ivr.webhook", "INFO", None, "refused")]


def test_the_webhook_lines_agree_with_the_metrics(app, client, json_lines):
    signed_post(client, "/voice", FORM)
    signed_post(client, "/voice/status", {**FORM, "CallStatus": "completed"})
    client.post("/voice/step?t=1", data=FORM)
    ends = [(line["kind"], line["outcome"]) for line in json_lines() if line["logger"] == "ivr.webhook"]
    page = Scrape(client.get("/metrics").text)
    assert ends == [("incoming", "ok"), ("status", "ok"), ("step", "refused")]
    assert page.nonzero("ivr_webhooks_total") == {"kind=incoming,outcome=ok": 1, "kind=status,outcome=ok": 1,
                                                   "kind=step,outcome=refused": 1}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_phone_id_or_pin_in_a_log_message_comes_out_masked(fmt):
    out = io.StringIO()
    handler = logs.handler(out, fmt)
    logger = logging.getLogger("ivr.test.masking")
    logger.addHandler(handler)
    try:
        logger.warning("caller %s (%s) keyed ID %s, PIN %s, call %s, card QD0000000001, on 2026-11-30 10:00",
                       CALLER, "13912345678", "37020219860714104X", "135790", SID)
        try:
            raise ValueError(f"bad number {CALLER}")
        except ValueError:
            logger.exception("failed for %s", "370202198503120025")
    finally:
        logger.removeHandler(handler)
    written = out.getvalue()
    for secret in ("8613912345678", "13912345678", "37020219860714104X", "370202198503120025", "135790"):
        assert secret not in written
    assert ("caller +86139****5678 (139****5678) keyed ID **************104X, PIN ******, "
            f"call {SID}, card QD0000000001, on 2026-11-30 10:00") in written
    assert "failed for **************0025" in written and "ValueError: bad number +86139****5678" in written
    if fmt == "json":
        _first, second = (json.loads(line) for line in written.splitlines())
        assert second["exception"].endswith("ValueError: bad number +86139****5678")


def test_a_process_id_is_not_taken_for_a_phone_number():
    assert logs.mask("Booting worker with pid: 4194303") == "Booting worker with pid: 4194303"
    assert logs.mask("Worker exiting (pid: 1234567)") == "Worker exiting (pid: 1234567)"
    assert logs.mask("worker 1234567 exited") == "worker ******* exited"
