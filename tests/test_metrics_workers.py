"""GET /metrics under real gunicorn with two workers (`-c deploy/gunicorn.conf.py`): every webhook
counted once, whichever worker answered it or the scrape; gunicorn's lines as JSON too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from twilio.request_validator import RequestValidator

from ivr import create_app
from ivr.sim.phone import HttpTransport, Phone
from ivr.voice.prompts import Catalogue
from models.storage.db import init_db
from tests.support import ALICE, BOB, PIN, PIN_KEY, Ledger, free_port, fresh_database
from tests.support.metrics import Scrape

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-workers-token"
ENV_KEYS = ("DATABASE_URL", "TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY", "IVR_CONFIG")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn -c deploy/gunicorn.conf.py with 2 workers on loopback, JSON logs, a ledger of its own."""
    folder = tmp_path_factory.mktemp("metrics-workers")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    cfg["hotlines"]["numbers"]["+8653212333"]["hours"] = "always"  # the server's clock is real
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999999.db").write_bytes(b"left over from an earlier run")  # emptied at start
    with fresh_database(folder) as url:
        env = {**os.environ, "DATABASE_URL": url, "TWILIO_AUTH_TOKEN": TOKEN, "IVR_PIN_KEY": PIN_KEY,
               "IVR_SECRET_KEY": "metrics-workers-secret", "IVR_CONFIG": str(folder / "config.yaml"),
               "IVR_LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        saved = {k: os.environ.get(k) for k in ENV_KEYS}
        os.environ.update({k: env[k] for k in ENV_KEYS})
        try:
            app = create_app()  # the test's own view of the ledger (one process: no multiprocess files)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        init_db(app.extensions["engine"])
        port = free_port()
        log_path = folder / "gunicorn.log"
        gunicorn = Path(sys.executable).with_name("gunicorn")
        with log_path.open("w") as log:
            proc = subprocess.Popen([str(gunicorn), "-c", "deploy/gunicorn.conf.py", "--workers", "2",
                                     "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                                    cwd=ROOT, env=env, stdout=log, stderr=log)
        url_base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{url_base}/healthz", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("gunicorn did not start: " + log_path.read_text()[-3000:])
                time.sleep(0.1)
            yield app, url_base, metrics_dir, log_path
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            app.extensions["engine"].dispose()


def phone(target: tuple[str, Catalogue]) -> Phone:
    url, catalogue = target
    return Phone(HttpTransport(), TOKEN, base_url=url, catalogue=catalogue)


def report_loss(target: tuple[str, Catalogue], id_number: str) -> Phone:
    """A caller reports a card lost, then hangs up: incoming, 4 steps, status."""
    p = phone(target).dial().press("1").press(id_number + "#").press(PIN + "#").press("1")
    assert p.prompts[0] == "loss.done", p.transcript
    return p.hang_up()


def reach_an_agent(target: tuple[str, Catalogue]) -> Phone:
    """0 for an agent, who answers (the whisper), then the caller rates the call (its goodbye hangs up):
    incoming, 2 steps, whisper, dial, status."""
    p = phone(target).dial().press("0").agent_leg_ends("completed").press("1")
    assert p.ended and p.status_answer == 204, p.transcript
    return p


def hang_up_at_the_menu(target: tuple[str, Catalogue]) -> Phone:
    """incoming, status."""
    return phone(target).dial().hang_up()


def status_again(url: str, p: Phone) -> int:
    """Twilio sends a call's status callback again: a webhook, but no call closed twice."""
    target = f"{url}/voice/status"
    form = {**p.params(), "CallStatus": "completed", "CallDuration": "42"}
    headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(target, form)}
    return requests.post(target, data=form, headers=headers, timeout=10).status_code


def webhooks_in(counts: Path) -> float:
    """Return how many webhooks one worker's counts file holds."""
    return sum(s.value for m in MultiProcessCollector.merge([str(counts)]) for s in m.samples
               if s.name == "ivr_webhooks_total")


def test_metrics_count_every_webhook_across_two_workers(server):
    app, url, metrics_dir, _log = server
    ledger = Ledger(app)
    ledger.add(ALICE)
    ledger.add(BOB)
    target = (url, app.extensions["catalogue"])
    with ThreadPoolExecutor(4) as pool:  # calls at once: both workers answer some
        work = [pool.submit(report_loss, target, ALICE), pool.submit(report_loss, target, BOB),
                pool.submit(reach_an_agent, target), pool.submit(reach_an_agent, target),
                *(pool.submit(hang_up_at_the_menu, target) for _ in range(3))]
        placed = [w.result(timeout=60) for w in work]
    assert status_again(url, placed[0]) == 204
    # Unsigned webhooks (refused, counted), several at once until both workers have answered some:
    # which worker accepts a connection is the kernel's choice, so one may have taken every call.
    refused = 0
    while refused < 400 and not (refused and all(webhooks_in(f) for f in sorted(metrics_dir.glob("counter_*.db")))):
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: requests.post(f"{url}/voice/step?t=1", data={"CallSid": "CA" + "9" * 32},
                                                          timeout=10).status_code, range(8)))
        assert codes == [403] * 8
        refused += 8

    page = Scrape(requests.get(f"{url}/metrics", timeout=10).text)
    assert page.nonzero("ivr_webhooks_total") == {
        "kind=incoming,outcome=ok": 7, "kind=step,outcome=ok": 2 * 4 + 2 * 2, "kind=step,outcome=refused": refused,
        "kind=whisper,outcome=ok": 2, "kind=dial,outcome=ok": 2, "kind=status,outcome=ok": 7 + 1}
    assert sum(p.requests for p in placed) == 7 + 12 + 2 + 2 + 7  # every webhook the emulator sent
    assert page("ivr_webhook_seconds_count", kind="step") == 12  # the refused one is not timed
    assert page("ivr_webhook_seconds_bucket", kind="step", le="5.0") == 12
    assert page.nonzero("ivr_calls_ended_total") == {"ended=completed,hotline=12333": 2,
                                                     "ended=transferred,hotline=12333": 2,
                                                     "ended=hung_up,hotline=12333": 3}
    assert page.nonzero("ivr_services_completed_total") == {"service=loss": 2}
    assert page.nonzero("ivr_transfers_total") == {"reason=caller_request": 2}
    assert page("ivr_database_errors_total") == 0
    assert (page("ivr_outbox_pending"), page("ivr_metrics_database_up")) == (2, 1)  # the two loss texts

    # Each worker wrote its own file and answered some webhooks; the page is their sum.
    files = sorted(metrics_dir.glob("counter_*.db"))
    assert len(files) == 2 and not (metrics_dir / "counter_99999999.db").exists()
    answered = [webhooks_in(f) for f in files]
    assert all(n > 0 for n in answered) and sum(answered) == 7 + 12 + refused + 2 + 2 + 8


def test_under_gunicorn_every_line_is_json_and_each_webhook_logs_one(server):
    app, url, _dir, log_path = server
    hang_up_at_the_menu((url, app.extensions["catalogue"]))
    time.sleep(0.2)  # the workers' lines reach the file
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert any(line["logger"] == "gunicorn.error" and line["message"].startswith("Listening at: ") for line in lines)
    assert {"time", "level", "logger", "message"} <= set().union(*lines)
    ends = [line for line in lines if line["logger"] == "ivr.webhook"]
    assert ends and all({"call_sid", "turn", "state", "duration_ms", "kind", "outcome"} <= e.keys() for e in ends)
    assert "13900000000" not in log_path.read_text()  # the emulator's caller number
