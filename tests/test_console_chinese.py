"""A console that speaks Chinese: every code shown by its Mandarin label, local times, Chinese error
pages, a confirmation before every change of a card or holder."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from models.agents import AuditEvent
from models.cards import HOLDER_CHANGES, REASON_KEYS
from models.reports import LEG_OUTCOMES
from models.vocabulary import VOCABULARIES
from tests.support import ADMIN, AGENT, ALICE, BOB, PIN, XENA, Console, card_of

# Every code the ledger, the calls and the reports store, and every reason text a history row keeps.
CODES = sorted({str(c) for words in VOCABULARIES.values() for c in words} | set(REASON_KEYS) | set(HOLDER_CHANGES)
               | set(LEG_OUTCOMES) | {"no-answer", "in-progress", "caller_request"}, key=len, reverse=True)


class Visible(HTMLParser):
    """The text a person sees on a page: text outside scripts and styles, and tooltips and placeholders."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.hidden += 1
        self.parts += [v for k, v in attrs if k in ("title", "placeholder", "aria-label", "alt") and v]
        if tag == "input" and dict(attrs).get("type") in ("submit", "button"):
            self.parts.append(dict(attrs).get("value") or "")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible(page: str) -> str:
    parser = Visible()
    parser.feed(page)
    return "\n".join(parser.parts)


def raw_codes(page: str) -> set[str]:
    """Return the codes a page shows as they are stored (a username like li.agent is not one)."""
    text, found = visible(page), set()
    for code in CODES:  # the longest first: "verbal loss report released" is one code, not three
        text, n = re.subn(rf"(?<![\w.@/-]){re.escape(code)}(?![\w.@/-])", "\x00", text)
        found |= {code} if n else set()
    return found


@pytest.fixture
def admin(app, accounts):
    """The console, logged in as an admin (enrolled in two-factor sign-in on the way)."""
    console = Console(app.test_client())
    assert console.login_with_code(*ADMIN).status_code == 200
    return console


@pytest.fixture
def busy_day(ledger, call, clock, agent, app):
    """A morning that leaves every kind of code in the ledger and the calls: return a transferred call's sid."""
    ledger.add(ALICE, name="张伟")
    ledger.add(BOB, name="李娜", status="pending_activation")
    ledger.add(XENA, name="周敏", status="verbal_loss")
    phone = call().dial().press("1").press(ALICE + "#").press(PIN + "#").press("1")  # a loss report by phone
    phone.press("*").press("2").press("1").press("1")  # back to the menu, then its release by phone
    phone.hang_up()
    transferred = call().dial().press("3").press(ALICE + "#").press(PIN + "#").press("0")
    transferred.agent_leg_ends("no-answer")
    transferred.hang_up()
    holder = ledger.holder(BOB).id
    page = f"/agent/holders/{holder}"
    agent.post(f"{page}/mobile", page, mobile="13912345678", confirm="1")
    agent.post(f"{page}/cards/{ledger.card(card_of(BOB)).id}/activate", page, confirm="1")
    clock.tick(60 * 60 * 24 * 8)  # 周敏's verbal loss lapses (system)
    assert ledger.history(card_of(ALICE)) == [(None, "normal", "import", None), ("normal", "verbal_loss", "ivr", phone.call_sid),
                                              ("verbal_loss", "normal", "ivr", phone.call_sid)]
    assert ledger.history(card_of(BOB))[-1][:3] == ("pending_activation", "normal", "agent")
    return transferred.call_sid


def pages(app, ledger, sid) -> list[str]:
    holders = [ledger.holder(i).id for i in (ALICE, BOB, XENA)]
    return ["/agent/", "/agent/live", "/agent/holders", "/agent/holders?q=张伟 0025",
            *(f"/agent/holders/{h}" for h in holders), f"/agent/calls/{sid}", "/agent/reports",
            "/agent/calls?ended_in=goodbye", "/agent/2fa/"]


def test_no_page_shows_a_code_as_it_is_stored(agent, app, ledger, busy_day):
    shown = {path: raw_codes(agent.client.get(path).get_data(as_text=True)) for path in pages(app, ledger, busy_day)}
    assert shown == {path: set() for path in shown}


def test_the_scan_catches_a_code_shown_as_it_is_stored():
    page = '<td title="ivr">电话自助</td><td>li.agent</td><td>verbal loss report released</td><script>"normal"</script>'
    assert raw_codes(page) == {"ivr", "verbal loss report released"}


# -- Chinese error pages -----------------------------------------------------------------------------
def chinese_page(resp, status: int, title: str) -> bool:
    html = resp.get_data(as_text=True)
    return (resp.status_code == status and f"<title>{title} · 社保卡热线</title>" in html and 'lang="zh-CN"' in html
            and f'<p class="code">{status}</p>' in html and not re.search(r"Not Found|Forbidden|Method Not Allowed", html))


@pytest.mark.parametrize("method, path, status, title", [
    ("get", "/agent/admin", 403, "没有权限"),
    ("get", "/agent/no/such/page", 404, "页面不存在"),
    ("get", "/agent/holders/999", 404, "页面不存在"),
    ("get", "/agent/calls/CA-unknown", 404, "页面不存在"),
    ("get", "/agent/static/no-such.css", 404, "页面不存在"),
    ("get", "/agent/holders/1/reveal", 405, "请求方式不正确"),
    ("put", "/agent/holders", 405, "请求方式不正确"),
    ("get", "/agent/logout", 405, "请求方式不正确"),
])
def test_console_errors_are_chinese_pages(agent, ledger, method, path, status, title):
    ledger.add(ALICE)
    assert chinese_page(getattr(agent.client, method)(path), status, title)


def test_a_405_still_says_which_methods_are_allowed(agent):
    assert set(agent.client.get("/agent/logout").headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_an_abort_inside_a_view_is_a_chinese_page(agent, ledger, app):
    ledger.add(ALICE)
    holder = ledger.holder(ALICE).id
    resp = agent.post(f"/agent/holders/{holder}/cards/999/loss", f"/agent/holders/{holder}")
    assert chinese_page(resp, 404, "页面不存在")
    assert chinese_page(agent.post(f"/agent/holders/{holder}/cards/1/bogus", f"/agent/holders/{holder}"), 404, "页面不存在")


def test_an_anonymous_visitor_gets_chinese_error_pages_too(client):
    assert chinese_page(client.get("/agent/no/such/page"), 404, "页面不存在")
    assert chinese_page(client.get("/agent/logout"), 405, "请求方式不正确")


@pytest.mark.parametrize("status, title", [(403, "没有权限"), (404, "页面不存在"), (405, "请求方式不正确"),
                                           (429, "尝试过于频繁"), (500, "系统出错")])
def test_every_error_a_view_raises_is_a_chinese_page(app, client, accounts, status, title):
    from flask import abort

    app.add_url_rule(f"/agent/test-error/{status}", f"test_error_{status}", lambda: abort(status))
    console = Console(client)
    console.login(*ADMIN)  # half logged in (the second factor): the error pages do not depend on it
    assert chinese_page(client.get(f"/agent/test-error/{status}"), status, title)


def test_a_refused_login_is_a_chinese_429_with_retry_after(client, accounts):
    console = Console(client)
    for _ in range(5):
        console.login(AGENT[0], "not-the-password")
    resp = console.login(*AGENT)
    assert resp.status_code == 429 and "Retry-After" in resp.headers and "请 15 分钟后再试" in resp.get_data(as_text=True)


# -- a confirmation before every change ------------------------------------------------------------------
def confirmation(resp) -> str:
    """Return the heading of a confirmation page (and check it posts back with confirm=1)."""
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and '<input type="hidden" name="confirm" value="1">' in html
    return re.sub(r"<[^>]+>", "", re.search(r"<h1>(.*?)</h1>", html, re.S).group(1))


@pytest.mark.parametrize("status, change, heading, after, flash", [
    ("normal", "loss", "确认办理口头挂失？", "verbal_loss", "已办理口头挂失。"),
    ("verbal_loss", "release", "确认解除口头挂失？", "normal", "已解除口头挂失。"),
    ("pending_activation", "activate", "确认激活社保卡？", "normal", "社保卡已激活。"),
])
def test_a_card_change_asks_first_and_only_the_confirmation_changes_the_card(agent, ledger, app, status, change,
                                                                            heading, after, flash):
    ledger.add(ALICE, status=status)
    holder, card = ledger.holder(ALICE).id, ledger.card(card_of(ALICE))
    page = f"/agent/holders/{holder}"
    asked = agent.post(f"{page}/cards/{card.id}/{change}", page)
    assert confirmation(asked) == heading
    assert ledger.card(card.card_number).status == status and len(ledger.history(card.card_number)) == 1
    done = agent.post(f"{page}/cards/{card.id}/{change}", page, confirm="1")
    assert done.status_code == 302 and flash in agent.client.get(done.headers["Location"]).get_data(as_text=True)
    assert ledger.history(card.card_number)[-1] == (status, after, "agent", None)
    with app.extensions["sessions"]() as s:
        audited = [(e.action, e.holder_id, e.card_id) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action.not_in(["account_create", "login", "search"])))]
    assert audited == [({"loss": "report_loss", "release": "release_loss", "activate": "activate"}[change],
                        holder, card.id)]


def test_the_holder_page_offers_activation_of_a_card_that_awaits_it(agent, ledger):
    ledger.add(ALICE, status="pending_activation")
    card = ledger.card(card_of(ALICE))
    html = agent.client.get(f"/agent/holders/{ledger.holder(ALICE).id}").get_data(as_text=True)
    assert f'<button type="submit" id="activate-{card.id}">激活社保卡…</button>' in html
    assert f'id="loss-{card.id}"' in html and f'id="release-{card.id}"' not in html


def test_a_change_the_rules_refuse_is_refused_before_asking(agent, ledger):
    ledger.add(ALICE, status="formal_loss")
    holder, card = ledger.holder(ALICE).id, ledger.card(card_of(ALICE))
    page = f"/agent/holders/{holder}"
    resp = agent.post(f"{page}/cards/{card.id}/loss", page)
    assert resp.status_code == 302 and "不能办理：卡状态为书面挂失。" in agent.client.get(page).get_data(as_text=True)


def test_a_mobile_change_asks_first_showing_the_new_number_masked(agent, ledger, app):
    ledger.add(ALICE)
    holder = ledger.holder(ALICE).id
    page = f"/agent/holders/{holder}"
    asked = agent.post(f"{page}/mobile", page, mobile="139 1234 5678")
    assert confirmation(asked) == "确认修改联系手机？"
    assert '<strong id="mobile-after">+86139****5678</strong>' in asked.get_data(as_text=True)
    assert ledger.holder(ALICE).mobile == "+8613800000001"
    agent.post(f"{page}/mobile", page, mobile="+8613912345678", confirm="1")
    assert ledger.holder(ALICE).mobile == "+8613912345678"


def test_a_pin_unlock_asks_first(admin, ledger, call):
    ledger.add(ALICE)
    for _ in range(6):
        call().dial().press("1").press(ALICE + "#").press("000000#")
    page = f"/agent/holders/{ledger.holder(ALICE).id}"
    assert confirmation(admin.post(f"{page}/unlock", page)) == "确认解除服务密码锁定？"
    assert "已锁定" in admin.client.get(page).get_data(as_text=True)
    admin.post(f"{page}/unlock", page, confirm="1")
    assert "已锁定" not in admin.client.get(page).get_data(as_text=True)


def test_a_confirmation_without_its_csrf_token_changes_nothing(agent, ledger):
    ledger.add(ALICE)
    holder, card = ledger.holder(ALICE).id, ledger.card(card_of(ALICE))
    resp = agent.client.post(f"/agent/holders/{holder}/cards/{card.id}/loss", data={"confirm": "1"})
    assert resp.status_code == 400 and ledger.card(card.card_number).status == "normal"


# -- labels and local times ------------------------------------------------------------------------------
def test_a_cards_history_reads_in_mandarin_in_local_time(agent, ledger, call, clock):
    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#").press(PIN + "#").press("1")
    clock.tick(60 * 60 * 24 * 8)  # the report lapses on 7 December, 10:00 in Qingdao
    html = agent.client.get(f"/agent/holders/{ledger.holder(ALICE).id}").get_data(as_text=True)
    rows = [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(<td.*?)</tr>", html, re.S)]
    assert [r[1:] for r in rows] == [
        ["口头挂失 → 正常", "系统（到期自动）", "—", "口头挂失到期"],
        ["正常 → 口头挂失", "电话自助", "查看来电", "口头挂失"],
        ["正常", "制卡系统导入", "—", "首次导入"],
    ]
    assert [r[0] for r in rows] == ["2026-12-07 10:00", "2026-11-30 10:00", "2026-11-30 10:00"]
    assert f'<a href="/agent/calls/{phone.call_sid}">查看来电</a>' in html
