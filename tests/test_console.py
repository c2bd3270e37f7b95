"""The agent console: nothing without logging in, CSRF on every form, the same ledger rules."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from models.agents import AuditEvent, CallbackRequest, CallRating
from models.cards import CardEvent, HolderEvent, holder_by_id_number
from tests.support import ADMIN, AGENT, ALICE, PIN, Console, card_of, verified

PAGES = ["/agent/", "/agent/live", "/agent/holders", "/agent/holders/1", "/agent/calls/CA1", "/agent/admin"]
FORMS = ["/agent/logout", "/agent/callbacks/1/done", "/agent/holders/1/reveal", "/agent/holders/1/mobile",
         "/agent/holders/1/cards/1/loss", "/agent/holders/1/cards/1/release", "/agent/holders/1/unlock"]


@pytest.fixture
def admin(app, accounts):
    """The console, logged in as an admin (a client of its own): enrolled in two-factor sign-in on the way."""
    console = Console(app.test_client())
    assert console.login_with_code(*ADMIN).status_code == 200  # the recovery codes, once enrolled
    return console


def holder_id(app, id_number=ALICE) -> int:
    with app.extensions["sessions"]() as s:
        return holder_by_id_number(s, id_number).id


@pytest.mark.parametrize("path", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, path):
    resp = client.get(path)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/agent/login")


@pytest.mark.parametrize("path", FORMS)
def test_an_anonymous_form_post_is_refused_and_changes_nothing(client, ledger, app, path):
    ledger.add(ALICE)  # holder 1, card 1: what the forms name
    assert client.post(path, data={}).status_code == 400  # no CSRF token
    html = client.get("/agent/login").get_data(as_text=True)  # a token of the login page's session
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    resp = client.post(path, data={"csrf_token": token, "mobile": "13912345678"})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/agent/login")
    assert ledger.history(card_of(ALICE)) == [(None, "normal", "import", None)]
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile == "+8613800000001"
        assert s.scalars(select(AuditEvent)).all() == []


def test_a_wrong_password_is_refused_with_a_generic_message(client, accounts):
    resp = Console(client).login(AGENT[0], "not-the-password")
    assert resp.status_code == 200 and "用户名或密码错误" in resp.get_data(as_text=True)
    assert client.get("/agent/").status_code == 302


def test_an_unknown_agent_hears_the_same_as_a_wrong_password(client, accounts):
    resp = Console(client).login("nobody", "whatever-password")
    assert "用户名或密码错误" in resp.get_data(as_text=True)


def test_a_form_without_its_csrf_token_is_refused(agent, ledger, app):
    ledger.add(ALICE)
    hid = holder_id(app)
    assert agent.client.post(f"/agent/holders/{hid}/reveal", data={}).status_code == 400


def test_logout_ends_the_session(agent):
    agent.post("/agent/logout", "/agent/")
    assert agent.client.get("/agent/").status_code == 302


def test_a_disabled_account_loses_its_session(agent, runner):
    runner.invoke(args=["agent", "disable", AGENT[0]])
    assert agent.client.get("/agent/").status_code == 302


@pytest.mark.parametrize("path", ["/agent/admin"])
def test_an_agent_without_the_admin_role_cannot_reach_admin_pages(agent, path):
    assert agent.client.get(path).status_code == 403


def test_passwords_are_stored_hashed(app, accounts):
    from models.agents import AgentAccount

    with app.extensions["sessions"]() as s:
        hashes = [a.password_hash for a in s.scalars(select(AgentAccount))]
    assert len(hashes) == 2
    assert all(AGENT[1] not in h and ADMIN[1] not in h for h in hashes)
    assert all(h.startswith(("scrypt:", "pbkdf2:")) for h in hashes)


def test_an_agent_reports_a_card_lost_through_the_same_ledger_rules(agent, ledger, app):
    ledger.add(ALICE)
    hid = holder_id(app)
    page = f"/agent/holders/{hid}"
    card_id = ledger.card(card_of(ALICE)).id
    resp = agent.post(f"{page}/cards/{card_id}/loss", page, confirm="1")
    assert resp.status_code == 302
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    assert ledger.history(card_of(ALICE))[-1] == ("normal", "verbal_loss", "agent", None)
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(CardEvent.actor).order_by(CardEvent.id)).all()[-1] == AGENT[0]
    again = agent.post(f"{page}/cards/{card_id}/loss", page, confirm="1")
    assert "不能办理：卡状态为口头挂失" in agent.client.get(again.headers["Location"]).get_data(as_text=True)


def test_an_agent_releases_a_verbal_loss(agent, ledger, app):
    ledger.add(ALICE, status="verbal_loss")
    hid = holder_id(app)
    page = f"/agent/holders/{hid}"
    agent.post(f"{page}/cards/{ledger.card(card_of(ALICE)).id}/release", page, confirm="1")
    assert ledger.card(card_of(ALICE)).status == "normal"


def test_an_agent_cannot_act_on_another_holders_card(agent, ledger, app):
    from tests.support import BOB

    ledger.add(ALICE)
    ledger.add(BOB)
    page = f"/agent/holders/{holder_id(app)}"
    resp = agent.post(f"{page}/cards/{ledger.card(card_of(BOB)).id}/loss", page, confirm="1")
    assert resp.status_code == 404
    assert ledger.card(card_of(BOB)).status == "normal"


def test_the_id_number_is_masked_until_an_audited_reveal(agent, ledger, app):
    ledger.add(ALICE)
    page = f"/agent/holders/{holder_id(app)}"
    html = agent.client.get(page).get_data(as_text=True)
    assert ALICE not in html and "**************0025" in html
    revealed = agent.post(f"{page}/reveal", page).get_data(as_text=True)
    assert ALICE in revealed
    with app.extensions["sessions"]() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action.not_in(["login", "account_create"]))).all()
    assert [(e.agent, e.action, e.holder_id) for e in events] == [(AGENT[0], "reveal_id", holder_id(app))]
    assert ALICE not in agent.client.get(page).get_data(as_text=True)


def test_a_mobile_change_is_validated_and_written_masked(agent, ledger, app):
    ledger.add(ALICE)
    hid = holder_id(app)
    page = f"/agent/holders/{hid}"
    bad = agent.post(f"{page}/mobile", page, mobile="12345")
    assert "不是有效的中国大陆手机号码" in agent.client.get(bad.headers["Location"]).get_data(as_text=True)
    agent.post(f"{page}/mobile", page, mobile="139 1234 5678", confirm="1")
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).mobile == "+8613912345678"
        rows = [(e.kind, e.channel, e.actor, e.detail) for e in s.scalars(select(HolderEvent))]
    assert rows == [("mobile_changed", "agent", AGENT[0], "+86138****0001 -> +86139****5678")]


def test_only_an_admin_clears_a_pin_lockout_and_it_is_audited(agent, admin, ledger, app, call):
    ledger.add(ALICE)
    for _ in range(6):
        call().dial().press("1").press(ALICE + "#").press("000000#")
    page = f"/agent/holders/{holder_id(app)}"
    assert "已锁定" in agent.client.get(page).get_data(as_text=True)
    assert agent.post(f"{page}/unlock", page, confirm="1").status_code == 403
    admin.post(f"{page}/unlock", page, confirm="1")
    assert "已锁定" not in admin.client.get(page).get_data(as_text=True)
    assert verified(call).prompts[:2] == ["card.readback", "loss.confirm"]
    with app.extensions["sessions"]() as s:
        assert [e.action for e in s.scalars(select(AuditEvent))] == [  # the accounts made, the agent's login, the admin's
            "account_create", "account_create", "login", "twofactor_enrol", "login", "clear_pin_lock"]


def test_a_transferred_call_shows_its_context(agent, ledger, call):
    ledger.add(ALICE)
    phone = call().dial().press("1").press(ALICE + "#").press("000000#").press(ALICE + "#").press(PIN + "#")
    phone.press("0")
    html = agent.client.get("/agent/live").get_data(as_text=True)
    assert "已验证 · 尾号0025" in html and "<td>口头挂失</td>" in html and "来电人要求人工" in html
    detail = agent.client.get(f"/agent/calls/{phone.call_sid}").get_data(as_text=True)
    assert "**************0025" in detail and "本次通话错误 0 次" in detail
    assert ALICE not in detail


def test_call_back_requests_are_listed_and_marked_done(agent, app, call, clock):
    clock.move_to("2026-11-30 12:00:00")  # 20:00 in Qingdao: closed
    call(caller="+8613912345678").dial().press("0").silence().silence().silence().silence()
    phone = call(caller="+8613912345678").dial().press("####").press("1").press("1").press("2")
    assert phone.prompts == ["callback.saved", "rating.ask"]
    html = agent.client.get("/agent/live").get_data(as_text=True)
    assert "+8613912345678" in html and "标记已回电" in html
    with app.extensions["sessions"]() as s:
        cb = s.scalars(select(CallbackRequest)).one()
    agent.post(f"/agent/callbacks/{cb.id}/done", "/agent/")
    assert f"已回电 · {AGENT[0]}" in agent.client.get("/agent/live").get_data(as_text=True)


def test_the_dashboard_totals_ratings_for_today_and_the_week(agent, app, call, clock):
    for key in "1123":
        call().dial().press("0").agent_leg_ends("completed").press(key)
    clock.tick(timedelta(days=3))
    call().dial().press("0").agent_leg_ends("completed").press("3")
    clock.tick(timedelta(days=5))
    call().dial().press("0").agent_leg_ends("completed").press("1")
    html = agent.client.get("/agent/").get_data(as_text=True)
    assert '<td id="today-satisfied">1</td>' in html
    assert '<td id="week-dissatisfied">1</td>' in html  # the first day's fell out of the 7 days
    assert '<td id="week-satisfied">1</td>' in html
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(CallRating)).all()[0].agent.startswith("+8653200000000 CA")
    assert "<svg" in html
