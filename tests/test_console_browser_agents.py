"""An agent's shift in Chromium (Playwright), at 1280 and 390 px: finding the caller by each kind of
search, the whole call turn by turn, and a loss report that asks for confirmation first."""
from __future__ import annotations

import os

from sqlalchemy import select

from ivr.sim.phone import HttpTransport, Phone
from models.cards import Card, Cardholder
from tests.support import AGENT, ALICE, BOB, PIN, XENA, Ledger, card_of, create_agent
from tests.support.browser import (  # fixtures (pyproject: F401, F811)
    TOKEN,
    WIDTHS,
    browser,
    fits_the_width,
    log_in,
    served,
)

ZHANG_WEI_2 = "370203199203060025"  # another 张伟 whose ID number also ends 0025


def shots(tmp_path) -> str:
    return os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))  # set it to keep the pictures


def holders(app) -> dict[str, int]:
    """Four holders (two 张伟 ending 0025, 李娜, 周敏 ending 104X), 李娜 and 周敏 sharing a mobile."""
    ledger = Ledger(app)
    ledger.add(ALICE, name="张伟")
    ledger.add(ZHANG_WEI_2, name="张伟")
    ledger.add(BOB, name="李娜")
    ledger.add(XENA, name="周敏", status="pending_activation")
    with app.extensions["sessions"]() as s, s.begin():
        for h in s.scalars(select(Cardholder).where(Cardholder.id_number.in_([BOB, XENA]))):
            h.mobile = "+8613912345678"
        return {h.id_number: h.id for h in s.scalars(select(Cardholder))}


def search(page, text: str) -> None:
    page.click("nav >> text=查询持卡人")
    page.fill("#q", text)
    page.click("#lookup button[type=submit]")
    page.wait_for_load_state()


def cells_are_not_squeezed(page, selector: str, at_least: int = 100) -> bool:
    """Tell whether every cell of a table is at least that wide (not a column one character wide)."""
    widths = page.eval_on_selector_all(f"{selector} td", "cells => cells.map(c => c.getBoundingClientRect().width)")
    return bool(widths) and min(widths) >= at_least


def test_an_agent_finds_the_caller_by_each_kind_of_search(served, browser, tmp_path):
    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    ids = holders(app)
    for name, viewport in WIDTHS.items():
        page = log_in(browser, url, viewport)
        search(page, XENA.lower())  # the full ID number, a small x: straight to the holder
        assert page.url == f"{url}/agent/holders/{ids[XENA]}" and page.inner_text("h1") == "周敏"
        assert page.inner_text("#id-number") == "**************104X"
        search(page, "张伟 0025")  # the name and the last four: both 张伟
        assert page.url == f"{url}/agent/holders"  # posted: nothing typed is in the address
        assert page.inner_text("#search-message") == "按姓名加身份证后四位“张伟 0025”找到 2 位持卡人"
        rows = page.locator("#results tbody tr")
        assert rows.count() == 2 and [rows.nth(i).get_attribute("id") for i in range(2)] == [
            f"holder-{ids[ALICE]}", f"holder-{ids[ZHANG_WEI_2]}"]
        assert "**************0025" in rows.nth(0).inner_text() and ALICE not in page.content()
        assert fits_the_width(page) and cells_are_not_squeezed(page, "#results", 200 if name == "390" else 60)
        page.screenshot(path=os.path.join(shots(tmp_path), f"search-name-{name}.png"), full_page=True)
        rows.nth(1).locator("text=查看").click()
        assert page.url == f"{url}/agent/holders/{ids[ZHANG_WEI_2]}"
        search(page, "139 1234 5678")  # the mobile 李娜 and 周敏 share
        assert page.inner_text("#search-message") == "按手机号码“+86139****5678”找到 2 位持卡人"
        assert page.locator("#results tbody tr").count() == 2
        search(page, card_of(BOB))  # the card number
        assert page.url == f"{url}/agent/holders/{ids[BOB]}" and page.inner_text("h1") == "李娜"
        search(page, "370202198503120026")  # a check character mistyped
        assert page.inner_text("#search-message").startswith("**************0026 不是有效的身份证号码")
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots(tmp_path), f"search-invalid-{name}.png"), full_page=True)
        page.goto(f"{url}/agent/holders?q=张伟0025")  # a bookmark
        assert page.locator("#results tbody tr").count() == 2
        page.close()


def test_the_call_page_shows_the_whole_call_turn_by_turn(served, browser, tmp_path):
    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    holders(app)
    texts = app.extensions["catalogue"].texts
    phone = Phone(HttpTransport(), TOKEN, base_url=url, catalogue=app.extensions["catalogue"])
    phone.dial().press("1").press(ALICE + "#").press(PIN + "#").press("0").agent_leg_ends("completed", 75)
    phone.press("1").hang_up()
    for name, viewport in WIDTHS.items():
        page = log_in(browser, url, viewport)
        page.goto(f"{url}/agent/calls/{phone.call_sid}")
        turns = page.locator("#transcript > li")
        assert turns.count() == 9
        assert [turns.nth(i).locator(".did").inner_text() for i in range(turns.count())] == [
            "来电接入", "按键 1", "按键 〔身份证号码〕", "按键 〔服务密码〕", "按键 0", "坐席接听",
            "转接人工结果：已接听，通话 75 秒", "按键 1", "通话结束，时长 42 秒"]
        assert turns.nth(0).locator(".heard li").all_inner_texts() == [
            texts["common.welcome"], texts["main.menu"], texts["keys.agent"]]
        assert turns.nth(3).locator(".heard li").all_inner_texts() == [
            "您尾号0025的社保卡，状态为正常。", texts["loss.confirm"]]
        assert page.inner_text("#identity") == "已验证：张伟（**************0025）"
        assert page.inner_text("#rating") == "满意" and page.inner_text("#leg").startswith("已接听 · 振铃 ")
        assert ALICE not in page.content() and PIN not in page.content()
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots(tmp_path), f"call-{name}.png"), full_page=True)
        page.click("#identity a")
        assert page.inner_text("h1") == "张伟"
        page.close()


def test_a_loss_report_asks_for_confirmation_and_one_click_changes_nothing(served, browser, tmp_path):
    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    ids = holders(app)

    def status(card_number):
        with app.extensions["sessions"]() as s:
            return s.scalars(select(Card.status).where(Card.card_number == card_number)).one()

    for name, viewport in WIDTHS.items():
        holder = ALICE if name == "desktop" else ZHANG_WEI_2
        card = Ledger(app).card(card_of(holder))
        page = log_in(browser, url, viewport)
        page.goto(f"{url}/agent/holders/{ids[holder]}")
        page.click(f"#loss-{card.id}")  # the first click only asks
        page.wait_for_selector("#confirm")
        assert page.inner_text("#confirm h1") == "确认办理口头挂失？" and status(card.card_number) == "normal"
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots(tmp_path), f"confirm-loss-{name}.png"), full_page=True)
        page.click("#cancel")
        assert page.url == f"{url}/agent/holders/{ids[holder]}" and status(card.card_number) == "normal"
        page.click(f"#loss-{card.id}")
        page.click("#confirm-button")
        page.wait_for_selector(".flash")
        assert page.inner_text(".flash") == "已办理口头挂失。" and status(card.card_number) == "verbal_loss"
        history = page.locator(f"#card-{card.card_number} table.history tbody tr").nth(0).inner_text()
        assert "正常 → 口头挂失" in history and "人工坐席" in history and AGENT[0] in history
        assert "口头挂失" in page.locator(f"#card-{card.card_number} .status").inner_text()
        assert fits_the_width(page) and cells_are_not_squeezed(page, "table.history", 200 if name == "390" else 60)
        page.screenshot(path=os.path.join(shots(tmp_path), f"holder-after-loss-{name}.png"), full_page=True)
        page.close()


ELDER = "370202195006150027"  # born 1950-06-15: an elder caller on any day of these tests


def test_an_elder_callers_transfer_and_call_page_say_so(served, browser, tmp_path):
    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    Ledger(app).add(ELDER, name="王秀英")
    phone = Phone(HttpTransport(), TOKEN, base_url=url, catalogue=app.extensions["catalogue"])
    phone.dial().press("3").press(ELDER + "#").press(PIN + "#").press("0")
    for name, viewport in WIDTHS.items():
        page = log_in(browser, url, viewport)
        assert "长者" in page.inner_text("#live")  # the transfer ringing now
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots(tmp_path), f"live-elder-{name}.png"), full_page=True)
        page.goto(f"{url}/agent/calls/{phone.call_sid}")
        assert page.inner_text("#elder") == "长者来电（已验证身份证）"
        assert ELDER not in page.content() and PIN not in page.content()
        assert fits_the_width(page)
        page.screenshot(path=os.path.join(shots(tmp_path), f"call-elder-{name}.png"), full_page=True)
        page.close()
    phone.agent_leg_ends("completed", 30)
