"""The console in a real browser: the app served on a loopback port, Debian's headless Chromium
driven by Playwright, a logged-in page. Browser test modules import the fixtures from here; the
module skips (saying why) where Playwright or Chromium is missing.
"""
from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager

import pytest
from werkzeug.serving import make_server

from ivr import create_app
from models.storage.db import init_db
from tests.support.console import AGENT

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does)", allow_module_level=True)

TOKEN = "browser-test-token"


@contextmanager
def serving(tmp_path, monkeypatch, **sections):
    """Serve the whole app on a loopback port, agents on duty around the clock, with config.yaml
    sections of the test's choosing; yield (app, base URL)."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", "browser-pin-key")
    monkeypatch.delenv("IVR_CONFIG", raising=False)
    app = create_app({
        "database_url": f"sqlite:///{tmp_path / 'console.db'}",
        "hotlines": {"numbers": {"+8653212333": {"name": "12333", "hours": "always"}}},
        **sections,
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
def served(tmp_path, monkeypatch):
    """The whole app on a loopback port, agents on duty around the clock."""
    with serving(tmp_path, monkeypatch) as running:
        yield running


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


WIDTHS = {"desktop": {"width": 1280, "height": 900}, "390": {"width": 390, "height": 844}}


def log_in(browser, url: str, viewport: dict, account=AGENT):
    """A new page, logged in to the console (an agent: no second factor asked)."""
    page = browser.new_page(viewport=viewport, locale="zh-CN")
    page.goto(f"{url}/agent/login")
    page.fill("#username", account[0])
    page.fill("#password", account[1])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#live")
    return page


def fits_the_width(page) -> bool:
    """Tell whether the page needs no sideways scrolling (what scrolls sideways is inside a box)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
