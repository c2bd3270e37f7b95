"""Scenarios and load against a real gunicorn server over HTTP, signatures checked."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from ivr import create_app
from ivr.sim import load, runner
from ivr.sim.phone import CallFailed, HttpTransport, Phone
from ivr.sim.scenario import load as load_scenario
from models.storage.db import init_db
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"
TOKEN = "http-test-token"
# Scenarios whose expectations hold on any date (the server's clock is not pinned).
OVER_HTTP = [
    "load/report_loss.yaml",
    "load/release_loss.yaml",
    "verification/sixth_failure_locks.yaml",
    "menus/silence_reaches_an_agent.yaml",
]



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Run `gunicorn wsgi:app` (2 workers) on loopback over a fresh SQLite ledger."""
    folder = tmp_path_factory.mktemp("http")
    # The server's clock is real: staff 12333 around the clock so answers do not depend on the hour.
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    cfg["hotlines"]["numbers"]["+8653212333"]["hours"] = "always"
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder / 'ledger.db'}", "TWILIO_AUTH_TOKEN": TOKEN,
           "IVR_PIN_KEY": "http-test-pin-key", "IVR_CONFIG": str(folder / "config.yaml")}
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_CONFIG")}
    os.environ.update({k: env[k] for k in saved})
    try:
        app = create_app()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    init_db(app.extensions["engine"])
    port = free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "--workers", "2", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()
                raise RuntimeError("gunicorn did not start: " + proc.communicate(timeout=10)[1].decode(errors="replace"))
            time.sleep(0.1)
        yield app, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("name", OVER_HTTP)
def test_scenarios_pass_against_gunicorn_over_http(server, name):
    app, url = server
    result = runner.run(runner.Target(app, url), load_scenario(SCENARIOS / name))
    assert result.passed, "\n".join(result.failures + result.transcript)


def test_the_server_refuses_a_call_signed_with_another_token(server):
    app, url = server
    phone = Phone(HttpTransport(), "someone-else", base_url=url)
    with pytest.raises(CallFailed, match="answered 403"):
        phone.dial()


def test_a_small_load_runs_without_errors_and_reports_its_figures(server):
    app, url = server
    mix = load.read_mix(ROOT / "tests" / "load-mix.yaml", [])
    report = load.run_load(runner.Target(app, url), mix, calls=40, concurrency=20, out=open(os.devnull, "w"))
    assert report.errors == []
    assert report.calls == 40 and report.requests > 40 * 3
    lines = report.lines()
    assert lines[0].startswith("calls: 40 in ") and "p99" in lines[2] and lines[3] == "errors: 0 (0 calls failed)"


def test_sim_load_against_gunicorn_prints_its_figures_and_exits_0(server):
    app, url = server
    result = app.test_cli_runner().invoke(args=["sim", "load", "--url", url, "--calls", "12", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # the progress bar is on standard error
    figures = [line for line in lines if line.startswith(("calls:", "webhook requests:", "step latency", "errors:"))]
    assert figures[0].startswith("calls: 12 in ") and figures[0].endswith(" calls/s")
    assert figures[1].startswith("webhook requests: ") and figures[1].endswith(" requests/s")
    assert figures[2].startswith("step latency ms: p50 ") and " p95 " in figures[2] and " p99 " in figures[2]
    assert figures[3] == "errors: 0 (0 calls failed)"
