"""回电任务 and the live queue in a real browser (Debian's Chromium, Playwright), at 1280 and 390 px:
a missed transfer becomes a call-back item an agent works to an outcome; a queued caller hears their
place and presses 1, and the call-back keeps the place in the agents' list."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest

from ivr.sim.phone import HttpTransport, Phone, Queues
from models.clock import utcnow
from tests.support import AGENT, ALICE, PIN, Ledger, create_agent
from tests.support.browser import (  # fixtures (pyproject: F401, F811)
    TOKEN,
    WIDTHS,
    browser,
    fits_the_width,
    log_in,
    served,
    serving,
)


@pytest.fixture
def served_queue(tmp_path, monkeypatch):
    """The whole app on a loopback port with agent.leg: queue, agents on duty around the clock."""
    with serving(tmp_path, monkeypatch, agent={"leg": "queue"}) as running:
        yield running


def shots(tmp_path) -> str:
    return os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))  # set it to keep the pictures


def overdue_item(app, caller: str) -> None:
    """A missed transfer of two hours ago, as the hotline makes it: long past due."""
    from models.callbacks import Due, missed_call

    settings = app.extensions["settings"]
    hotline = settings.hotlines[settings.default_hotline]
    placed = utcnow() - timedelta(hours=2)
    with app.extensions["sessions"]() as s, s.begin():
        missed_call(s, call_sid="CA" + caller[-4:] * 8, hotline=hotline, number=caller, queued_at=placed, now=placed,
                    context={"hotline": "12333", "verified": False, "reason": "no_input", "services": ["guides"]},
                    due=Due(settings.callbacks, settings.calendar, settings.tz))


def test_a_missed_transfer_becomes_a_call_back_item_an_agent_works_to_an_outcome(served, browser, tmp_path):
    app, url = served
    create_agent(app.test_cli_runner(), *AGENT)
    Ledger(app).add(ALICE)
    overdue_item(app, "+8613800000002")
    phone = Phone(HttpTransport(), TOKEN, base_url=url, caller="+8613912345678", catalogue=app.extensions["catalogue"])
    phone.dial().press("1").press(ALICE + "#").press(PIN + "#").press("0")
    phone.agent_leg_ends("no-answer")
    assert phone.prompts == ["agent.unavailable", "callback.offer", "keys.agent_back"]
    phone.hang_up()
    pages = {}
    for name, viewport in WIDTHS.items():
        page = pages[name] = log_in(browser, url, viewport)
        live = page.locator("#callbacks tbody tr")
        assert live.count() == 2 and "已超时" in live.nth(0).inner_text() and "标记已回电" in live.nth(1).inner_text()
        assert fits_the_width(page), f"{name}: the dashboard scrolls sideways"
        page.screenshot(path=os.path.join(shots(tmp_path), f"dashboard-callbacks-{name}.png"), full_page=True)
        page.click("nav >> text=回电任务")
        page.wait_for_selector("#callback-items li.cb")
        cards = page.locator("#callback-items li.cb")
        assert cards.count() == 2
        late, fresh = cards.nth(0), cards.nth(1)
        assert "已超时" in late.locator(".cb-head").inner_text() and "未接来电" in late.inner_text()
        assert late.locator(".badge.late").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(180, 35, 24)"
        assert fresh.locator("a.number").inner_text().endswith("139 1234 5678")
        assert fresh.locator("a.number").get_attribute("href") == "tel:+8613912345678"
        context = fresh.locator("dl.ctx").inner_text()
        assert "已验证 · 身份证尾号0025" in context and "口头挂失" in context and "来电人要求人工" in context
        assert "已超时" not in fresh.inner_text()
        assert fits_the_width(page), f"{name}: the list scrolls sideways"
        box = fresh.locator("form.cb-outcome button").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
        page.screenshot(path=os.path.join(shots(tmp_path), f"callbacks-{name}.png"), full_page=True)
    for name, page in sorted(pages.items(), key=lambda kv: kv[0] != "390"):  # a try on a phone, the last at the desk
        mine = page.locator("#callback-items li.cb:has(a[href='tel:+8613912345678'])")
        if name == "390":
            mine.locator("label.choice:has-text('未接通')").click()
            mine.locator("input[name=note]").fill("响铃无人接")
            mine.locator("form.cb-outcome button").click()
            page.wait_for_selector(".flash")
            assert "已记录：未接通（已尝试1/3次），稍后再试。" in page.inner_text(".flash")
            again = page.locator("#callback-items li.cb:has(a[href='tel:+8613912345678'])")
            assert "已尝试 1/3 次" in again.inner_text() and "未接通（响铃无人接）" in again.inner_text()
            assert fits_the_width(page)
            page.screenshot(path=os.path.join(shots(tmp_path), "callbacks-tried-390.png"), full_page=True)
        else:
            page.reload()
            mine = page.locator("#callback-items li.cb:has(a[href='tel:+8613912345678'])")
            mine.locator("label.choice:has-text('已联系')").click()
            mine.locator("input[name=note]").fill("已告知补卡网点")
            mine.locator("form.cb-outcome button").click()
            page.wait_for_selector(".flash")
            assert "已记录：已联系，任务结束。" in page.inner_text(".flash")
            assert page.locator("#callback-items li.cb").count() == 1  # only the overdue one is left open
    desktop = log_in(browser, url, WIDTHS["desktop"])
    desktop.goto(f"{url}/agent/callbacks?show=closed")
    done = desktop.locator("#callback-items li.cb.closed")
    assert done.count() == 1 and "已联系" in done.inner_text() and AGENT[0] in done.inner_text()
    desktop.screenshot(path=os.path.join(shots(tmp_path), "callbacks-closed-desktop.png"), full_page=True)
    phone390 = log_in(browser, url, WIDTHS["390"])
    phone390.goto(f"{url}/agent/callbacks?show=closed")
    assert fits_the_width(phone390)
    phone390.screenshot(path=os.path.join(shots(tmp_path), "callbacks-closed-390.png"), full_page=True)


def test_the_queue_tells_the_caller_their_place_and_a_call_back_from_it_keeps_the_place(
        served_queue, browser, tmp_path):
    app, url = served_queue
    create_agent(app.test_cli_runner(), *AGENT)
    queues = Queues()
    catalogue = app.extensions["catalogue"]
    first = Phone(HttpTransport(), TOKEN, base_url=url, caller="+8613900000001", queues=queues, catalogue=catalogue)
    second = Phone(HttpTransport(), TOKEN, base_url=url, caller="+8613900000002", queues=queues, catalogue=catalogue)
    first.dial().press("0")
    assert first.prompts == ["agent.connecting", "queue.next_in_line", "queue.press_1"]
    second.dial().press("####")  # wrong keys: put through, second in line
    assert "您现在排在第2位。" in second.text()
    second.wait(80)  # two more announcements for each, about 37 s apart
    times = [at for at, h in second.queue_heard if h.prompt == "queue.position"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 3 and all(30 <= g <= 45 for g in gaps), gaps

    for name, viewport in WIDTHS.items():
        page = log_in(browser, url, viewport)
        page.wait_for_selector("#queue-live #queue")
        rows = page.locator("#queue-live #queue tbody tr")
        assert rows.count() == 2
        assert "+86139****0001" in rows.nth(0).inner_text() and "未验证" in rows.nth(0).inner_text()
        assert "多次按键错误" in rows.nth(1).inner_text()
        assert fits_the_width(page), f"{name}: the dashboard scrolls sideways"
        page.screenshot(path=os.path.join(shots(tmp_path), f"queue-dashboard-{name}.png"), full_page=True)

    second.press("1")  # the second caller asks first …
    assert second.prompts == ["queue.callback_saved", "rating.ask"]
    first.wait(40)
    first.press("1")  # … the first later: still first in the agents' list
    assert first.prompts == ["queue.callback_saved", "rating.ask"]
    for phone in (first, second):
        phone.press("1")
    for name, viewport in WIDTHS.items():
        page = log_in(browser, url, viewport)
        page.click("nav >> text=回电任务")
        page.wait_for_selector("#callback-items li.cb")
        numbers = [page.locator("#callback-items li.cb a.number").nth(i).get_attribute("href") for i in range(2)]
        assert numbers == ["tel:+8613900000001", "tel:+8613900000002"]
        assert page.locator("#callback-items li.cb .kind").all_inner_texts() == ["排队回电", "排队回电"]
        assert "暂无排队来电" in page.inner_text("#queue-box")
        assert fits_the_width(page), f"{name}: the list scrolls sideways"
        page.screenshot(path=os.path.join(shots(tmp_path), f"queue-callbacks-{name}.png"), full_page=True)
