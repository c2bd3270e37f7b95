"""The agent console in a real browser: headless Chromium driven by Playwright."""
from __future__ import annotations

import os

from ivr.sim.phone import HttpTransport, Phone
from tests.support import AGENT, ALICE, PIN, card_of, create_agent
from tests.support.browser import (  # fixtures (pyproject: F401, F811)
    TOKEN,
    WIDTHS,
    browser,
    fits_the_width,
    log_in,
    served,
)


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
    assert "已验证 · 尾号0025" in row and "口头挂失" in row and "来电人要求人工" in row

    page.click("text=查询持卡人")
    page.fill("#q", ALICE)
    page.click("#lookup button[type=submit]")
    page.wait_for_selector("#id-number")
    assert page.inner_text("#id-number") == "**************0025"
    page.click("text=办理口头挂失")
    page.click("#confirm-button")  # the first click asks; the confirmation reports it
    page.wait_for_selector(".flash")
    assert "已办理口头挂失" in page.inner_text(".flash")
    card = page.locator(f"#card-{card_of(ALICE)}")
    assert "口头挂失" in card.locator(".status").inner_text()
    first_row = card.locator("table.history tbody tr").nth(0).inner_text()
    assert "正常 → 口头挂失" in first_row and "人工坐席" in first_row and AGENT[0] in first_row
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))  # set it to keep the picture
    page.screenshot(path=os.path.join(shots, "holder.png"), full_page=True)
    with app.extensions["sessions"]() as s:
        from sqlalchemy import select

        from models.cards import Card

        assert s.scalars(select(Card.status).where(Card.card_number == card_of(ALICE))).one() == "verbal_loss"


def test_an_admin_enrols_an_authenticator_from_the_qr_code_and_then_logs_in_with_its_code(served, browser, tmp_path):
    import time

    import pyotp

    from tests.support import ADMIN

    app, url = served
    create_agent(app.test_cli_runner(), *ADMIN, admin=True)
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))
    desktop = browser.new_page(viewport={"width": 1280, "height": 900})
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    for page in (desktop, phone):
        page.goto(f"{url}/agent/")
        page.fill("#username", ADMIN[0])
        page.fill("#password", ADMIN[1])
        page.click("#login button[type=submit]")
        page.wait_for_selector("#qr svg")
        assert "/agent/2fa/enrol" in page.url and "本账号必须使用二次验证" in page.inner_text("main")
        box = page.locator("#qr svg").bounding_box()
        assert box["width"] >= 150 and box["height"] >= 150  # a QR code a phone can scan
        assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]
    desktop.screenshot(path=os.path.join(shots, "enrol-desktop.png"), full_page=True)
    phone.screenshot(path=os.path.join(shots, "enrol-390.png"), full_page=True)

    secret = desktop.inner_text("#secret").replace(" ", "")
    totp = pyotp.TOTP(secret)
    desktop.fill("#code", totp.now())
    desktop.click("#enrol button[type=submit]")
    desktop.wait_for_selector("#recovery-codes")
    assert desktop.locator("#recovery-codes li").count() == 10
    desktop.screenshot(path=os.path.join(shots, "recovery-desktop.png"), full_page=True)
    desktop.click("#continue")
    desktop.wait_for_selector("#live")

    phone.goto(f"{url}/agent/login")  # the other browser logs in again: the code is asked for now
    phone.fill("#username", ADMIN[0])
    phone.fill("#password", ADMIN[1])
    phone.click("#login button[type=submit]")
    phone.wait_for_selector("#two-factor")
    assert "/agent/2fa/code" in phone.url
    phone.screenshot(path=os.path.join(shots, "code-390.png"), full_page=True)
    wide = browser.new_page(viewport={"width": 1280, "height": 900})
    wide.goto(f"{url}/agent/login")
    wide.fill("#username", ADMIN[0])
    wide.fill("#password", ADMIN[1])
    wide.click("#login button[type=submit]")
    wide.wait_for_selector("#two-factor")
    wide.screenshot(path=os.path.join(shots, "code-desktop.png"), full_page=True)
    phone.fill("#code", "000000" if totp.now() != "000000" else "111111")
    phone.click("#two-factor button[type=submit]")
    phone.wait_for_selector(".flash")
    assert "验证码错误" in phone.inner_text(".flash")
    desktop.click("text=二次验证")
    desktop.wait_for_selector("#two-factor-state")
    assert "剩余恢复码 10 个" in desktop.inner_text("#two-factor-state")
    desktop.screenshot(path=os.path.join(shots, "two-factor-desktop.png"), full_page=True)
    desktop.click("text=管理")
    desktop.wait_for_selector("#accounts")
    assert "已绑定" in desktop.inner_text(f"#accounts tr:has-text('{ADMIN[0]}') .two-factor")
    desktop.screenshot(path=os.path.join(shots, "admin-desktop.png"), full_page=True)
    phone.fill("#code", totp.at(time.time() + 30))  # the next step's code: the current one was spent enrolling
    phone.click("#two-factor button[type=submit]")
    phone.wait_for_selector("#live")
    assert phone.url.endswith("/agent/")
    phone.screenshot(path=os.path.join(shots, "dashboard-390.png"), full_page=True)


# -- the operators' pages: the report, the flow map, today's figures -------------------------------------
def test_an_operator_reads_the_report_and_the_flow_map_and_opens_the_calls_that_ended_in_a_state(
        served, browser, tmp_path):
    from tests.support import Ledger

    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    Ledger(app).add(ALICE)
    phone = lambda: Phone(HttpTransport(), TOKEN, base_url=url, catalogue=app.extensions["catalogue"])  # noqa: E731
    phone().dial().press("1").press(ALICE + "#").press(PIN + "#").press("1").press("2").press("1")  # self-service
    phone().dial().press("0").agent_leg_ends("completed").hang_up()  # put through, answered at once
    ended_at_main = phone().dial().hang_up()  # given up at the main menu
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))
    for name, viewport in WIDTHS.items():
        page = log_in(browser, url, viewport)
        page.click("nav >> text=报表")
        page.wait_for_selector("svg.report-chart")
        assert page.inner_text("#fig-calls .num") == "3" and page.inner_text("#fig-containment .num") == "33.3%"
        charts = page.locator("svg.report-chart")
        assert charts.count() == 5
        for i in range(5):  # every chart drawn inside the page, its 12-unit text at least 11 px high
            box = charts.nth(i).bounding_box()
            assert box["width"] / 360 * 12 >= 11
            assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots, f"reports-{name}.png"), full_page=True)

        page.click("nav >> text=话务流程图")
        page.wait_for_selector("#flowmap svg")
        main = page.locator('#flowmap g.node:has(> title:text-is("main"))')
        assert "主菜单" in main.text_content() and "在此结束 1 通" in main.text_content()
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots, f"flow-{name}.png"))
        main.locator("a").click()  # the state's link (target _top): the calls that ended there
        page.wait_for_selector("#calls")
        assert "ended_in=main" in page.url and "在“主菜单”结束的来电" in page.inner_text("h1")
        assert page.locator("#calls tr").count() == 2  # the header and the one call
        assert page.locator(f"#calls a[href='/agent/calls/{ended_at_main.call_sid}']").count() == 1
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots, f"calls-{name}.png"), full_page=True)
        page.close()


def test_the_dashboards_figures_of_today_update_by_themselves_after_a_call(served, browser, tmp_path):
    import time

    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    pages = {name: log_in(browser, url, viewport) for name, viewport in WIDTHS.items()}
    for page in pages.values():
        assert page.inner_text("#today-calls .num") == "0"
    Phone(HttpTransport(), TOKEN, base_url=url, catalogue=app.extensions["catalogue"]).dial().hang_up()
    placed = time.monotonic()
    for page in pages.values():  # at most 5 s stale: shown within 6 s, without reloading the page
        page.wait_for_function("document.querySelector('#today-calls .num').textContent === '1'",
                               timeout=max(1, 6 - (time.monotonic() - placed)) * 1000)
        assert page.inner_text("#today-abandoned .num") == "1" and page.inner_text("#today-containment .num") == "0.0%"
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))
    for name, page in pages.items():
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots, f"today-{name}.png"), full_page=True)
