"""The admin's console in a real browser (Debian's Chromium, Playwright): an agent's loss report in
the audit trail, and the accounts administered, at 1280 and 390 px. CONSOLE_SCREENSHOTS=dir keeps
the screenshots."""
from __future__ import annotations

import os

import pyotp
from sqlalchemy import select

from models.agents import AgentAccount
from tests.support import ADMIN, AGENT, ALICE, Ledger, card_of, create_agent
from tests.support.browser import (  # fixtures (pyproject: F401, F811)
    WIDTHS,
    browser,
    fits_the_width,
    log_in,
    served,
)

NEW = ("zhang.wei", "崂山的茶和八大关的秋天-1984")


def shoot(page, shots: str, name: str) -> None:
    """Keep a full-page screenshot at the page's current width."""
    page.screenshot(path=os.path.join(shots, f"{name}-{page.viewport_size['width']}.png"), full_page=True)


def at_both_widths(page, shots: str, name: str) -> None:
    """Screenshot the page at 1280 px, then at 390 px (where it must fit), and back."""
    for width in ("desktop", "390"):
        page.set_viewport_size(WIDTHS[width])
        page.wait_for_timeout(50)
        assert fits_the_width(page), f"{name} scrolls sideways at {WIDTHS[width]['width']} px"
        shoot(page, shots, name)
    page.set_viewport_size(WIDTHS["desktop"])


def admin_logs_in(browser, url: str):
    """The admin's first login: the password, then binding an authenticator (admins must)."""
    page = browser.new_page(viewport=WIDTHS["desktop"], locale="zh-CN")
    page.goto(f"{url}/agent/login")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#secret")
    page.fill("#code", pyotp.TOTP(page.inner_text("#secret").replace(" ", "")).now())
    page.click("#enrol button[type=submit]")
    page.wait_for_selector("#recovery-codes")
    page.click("#continue")
    page.wait_for_selector("#live")
    return page


def test_an_agents_loss_report_appears_in_the_admins_audit_trail(served, browser, tmp_path):
    app, url = served
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))
    create_agent(app.test_cli_runner(), *ADMIN, admin=True)
    create_agent(app.test_cli_runner(), *AGENT)
    Ledger(app).add(ALICE)
    holder = Ledger(app).holder(ALICE).id

    agent = log_in(browser, url, WIDTHS["desktop"])
    agent.goto(f"{url}/agent/holders/{holder}")
    agent.click(f"#card-{card_of(ALICE)} button:has-text('办理口头挂失')")
    if agent.locator("#confirm-button").count():  # the change is confirmed on a page of its own
        agent.click("#confirm-button")
    agent.wait_for_selector(".flash")
    assert "已办理口头挂失" in agent.inner_text(".flash")

    admin = admin_logs_in(browser, url)
    admin.click("nav >> text=管理")
    admin.wait_for_selector("#accounts")
    admin.click("#audit-link")
    admin.wait_for_selector("#audit-filter")
    admin.select_option("#action", "report_loss")
    admin.fill("#agent", AGENT[0])
    admin.click("#audit-filter button[type=submit]")
    admin.wait_for_selector("#audit")
    rows = admin.locator("#audit tbody tr")
    assert rows.count() == 1
    cells = [c.strip() for c in rows.nth(0).locator("td").all_inner_texts()]
    assert cells[1:] == [AGENT[0], "办理口头挂失", "**************0025", "尾号 0025", "", "127.0.0.1", ""]
    assert ALICE not in admin.inner_text("main")
    at_both_widths(admin, shots, "audit-loss")
    admin.select_option("#action", "")
    admin.fill("#agent", "")
    admin.click("#audit-filter button[type=submit]")
    admin.wait_for_selector("#audit")
    assert admin.locator("#audit tbody tr").count() == 6  # 2 accounts made, a login, the loss, enrolment, a login
    at_both_widths(admin, shots, "audit-all")
    admin.click("#audit tbody tr >> a.holder")
    admin.wait_for_selector("#id-number")
    assert admin.url.endswith(f"/agent/holders/{holder}") and admin.inner_text("#id-number") == "**************0025"


def test_an_admin_creates_resets_disables_and_promotes_accounts(served, browser, tmp_path):
    app, url = served
    shots = os.environ.get("CONSOLE_SCREENSHOTS", str(tmp_path))
    create_agent(app.test_cli_runner(), *ADMIN, admin=True)
    create_agent(app.test_cli_runner(), *AGENT)
    admin = admin_logs_in(browser, url)
    admin.goto(f"{url}/agent/admin")
    own = admin.locator(f"#accounts tr:has-text('{ADMIN[0]}')")
    assert own.locator("button[data-change=disable]").is_disabled()  # the last active admin
    at_both_widths(admin, shots, "accounts")

    admin.fill("#username", NEW[0])
    admin.fill("#display_name", "张伟")
    admin.click("#create-button")
    admin.wait_for_selector("#temporary-password")
    temporary = admin.inner_text("#temporary-password")
    assert len(temporary) == 19 and "只显示这一次" in admin.inner_text("#temporary")
    at_both_widths(admin, shots, "account-created")
    admin.click("#back")
    admin.wait_for_selector("#accounts")
    assert "待本人设置密码" in admin.inner_text(f"#accounts tr:has-text('{NEW[0]}')")

    newcomer = browser.new_page(viewport=WIDTHS["390"], locale="zh-CN")  # the new agent, on a phone
    newcomer.goto(f"{url}/agent/login")
    newcomer.fill("#username", NEW[0])
    newcomer.fill("#password", temporary)
    newcomer.click("#login button[type=submit]")
    newcomer.wait_for_selector("#forced")
    assert newcomer.url.endswith("/agent/password") and fits_the_width(newcomer)
    newcomer.fill("#current", temporary)
    newcomer.fill("#new", "Password12345678")
    newcomer.fill("#repeat", "Password12345678")
    newcomer.click("#save-password")
    newcomer.wait_for_selector(".flash")
    assert "这个密码太常见或太容易被猜到" in newcomer.inner_text(".flash")
    shoot(newcomer, shots, "password-refused")
    newcomer.fill("#current", temporary)
    newcomer.fill("#new", NEW[1])
    newcomer.fill("#repeat", NEW[1])
    newcomer.click("#save-password")
    newcomer.wait_for_selector("#live")
    assert "密码已修改" in newcomer.inner_text(".flash")

    row = f"#accounts tr:has-text('{AGENT[0]}')"
    admin.click(f"{row} button[data-change=reset]")
    admin.wait_for_selector("#confirm")
    assert "确认重设密码？" in admin.inner_text("#confirm")
    at_both_widths(admin, shots, "account-confirm-reset")
    admin.click("#confirm-button")
    admin.wait_for_selector("#temporary-password")
    admin.click("#back")
    admin.click(f"{row} button[data-change=disable]")
    admin.click("#confirm-button")
    admin.wait_for_selector(".flash")
    assert "li.agent：已停用账号。" in admin.inner_text(".flash")
    assert "已停用" in admin.inner_text(f"{row} .state")
    admin.click(f"#accounts tr:has-text('{NEW[0]}') button[data-change=admin]")
    admin.click("#confirm-button")
    admin.wait_for_selector(".flash")
    assert admin.inner_text(f"#accounts tr:has-text('{NEW[0]}') .role") == "管理员"
    assert not own.locator("button[data-change=disable]").is_disabled()  # now there are two admins
    at_both_widths(admin, shots, "accounts-changed")
    with app.extensions["sessions"]() as s:
        stored = {a.username: (a.role, a.active, a.must_change_password) for a in s.scalars(select(AgentAccount))}
    assert stored == {ADMIN[0]: ("admin", True, False), AGENT[0]: ("agent", False, True),
                      NEW[0]: ("admin", True, False)}
    admin.goto(f"{url}/agent/admin/audit")
    actions = admin.locator("#audit tbody td.action").all_inner_texts()
    assert actions[:5] == ["更改角色", "停用账号", "重设密码", "重设密码", "登录"]
