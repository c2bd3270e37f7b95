"""The agent console in a real browser: headless Chromium driven by Playwright."""
from __future__ import annotations

import os
import shutil
import threading

import pytest
from werkzeug.serving import make_server

from ivr import create_app
from ivr.sim.phone import HttpTransport, Phone
from models.storage.db import init_db
from tests.support import AGENT, ALICE, PIN, card_of, create_agent

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does)", allow_module_level=True)

TOKEN = "browser-test-token"


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The whole app on a loopback port, agents on duty around the clock."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", "browser-pin-key")
    monkeypatch.delenv("IVR_CONFIG", raising=False)
    app = create_app({
        "database_url": f"sqlite:///{tmp_path / 'console.db'}",
        "hotlines": {"numbers": {"+8653212333": {"name": "12333", "hours": "always"}}},
    })
    init_db(app.extensions["engine"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture
def browser():
    """Headless Chromium from the Debian package (Playwright's own download is not used)."""
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


def test_an_agent_sees_a_transferred_call_and_reports_the_card_lost(served, browser, tmp_path):
    from tests.support import Ledger

    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    Ledger(app).add(ALICE)
    phone = Phone(HttpTransport(), TOKEN, base_url=url, catalogue=app.extensions["catalogue"])
    phone.dial().press("1").press(ALICE + "#").press(PIN + "#").press("0")
    assert phone.prompts == ["agent.connecting"]

    page = browser.new_page()
    page.goto(f"{url}/agent/")
    assert "/agent/login" in page.url
    page.fill("#username", AGENT[0])
    page.fill("#password", AGENT[1])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#transfers")
    row = page.locator("#transfers tr").nth(1).inner_text()
    assert "已验证 · 尾号0025" in row and "loss" in row and "来电人要求人工" in row

    page.click("text=查询持卡人")
    page.fill("#id_number", ALICE)
    page.click("#lookup button[type=submit]")
    page.wait_for_selector("#id-number")
    assert page.inner_text("#id-number") == "**************0025"
    page.click("text=办理口头挂失")
    page.wait_for_selector(".flash")
    assert "已办理口头挂失" in page.inner_text(".flash")
    card = page.locator(f"#card-{card_of(ALICE)}")
    assert "口头挂失" in card.locator(".status").inner_text()
    first_row = card.locator("table.history tr").nth(1).inner_text()
    assert "正常 → 口头挂失" in first_row and "agent" in first_row and AGENT[0] in first_row
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))  # set it to keep the picture
    page.screenshot(path=os.path.join(shots, "holder.png"), full_page=True)
    with app.extensions["sessions"]() as s:
        from sqlalchemy import select

        from models.cards import Card

        assert s.scalars(select(Card.status).where(Card.card_number == card_of(ALICE))).one() == "verbal_loss"
