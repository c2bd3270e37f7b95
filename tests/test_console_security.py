"""The console's defences: no write lock while a password is hashed, failed logins limited, sessions
that end with a logout or a reset, and 4xx (in Chinese) where a console page once answered 500."""
from __future__ import annotations

import re
import sqlite3
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

import ivr.console.auth
from ivr import create_app
from models.agents import AgentAccount, AuditEvent, LoginAttempt, LoginPolicy, begin_attempt
from models.clock import utcnow
from models.storage.db import create_schema, make_engine, make_read_sessionmaker
from tests.support import ADMIN, AGENT, ALICE, ON_POSTGRES, Console, card_of, create_agent, use_test_secrets

REFUSED = "登录失败次数过多"
WRONG = "用户名或密码错误"
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="SQLite's write lock")


@pytest.fixture
def app(database_url, monkeypatch, clock):
    """The app, the password the one step of a login (two-factor sign-in is tested on its own)."""
    app = app_with(database_url, monkeypatch, two_factor="none")
    yield app
    app.extensions["engine"].dispose()


def app_with(database_url, monkeypatch, **console):
    """Build the app with console settings of its own (e.g. login_limit)."""
    use_test_secrets(monkeypatch)
    app = create_app({"database_url": database_url, "console": console})
    app.config["TESTING"] = True
    create_schema(app.extensions["engine"])
    return app


def database_file(app) -> str:
    """Return the SQLite file of the app's database."""
    return app.extensions["engine"].url.database


def write_lock_is_free(app) -> bool:
    """Tell whether another connection could take SQLite's write lock this instant (no waiting)."""
    other = sqlite3.connect(database_file(app), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # database is locked
        return False
    finally:
        other.close()


def watch_the_hash(monkeypatch, during):
    """Run `during()` inside every password check of the login, before the real check."""
    real = ivr.console.auth.check_password_hash
    seen = []

    def check(pwhash, password):
        seen.append(during())
        return real(pwhash, password)

    monkeypatch.setattr(ivr.console.auth, "check_password_hash", check)
    return seen


# -- 1. A login holds no lock while the password is hashed; a page that only reads takes none ----

@pytest.mark.parametrize("username, password", [AGENT, (AGENT[0], "wrong-password"), ("nobody", "whatever-pass")])
def test_no_connection_is_held_while_the_password_is_checked(app, client, accounts, monkeypatch, username, password):
    engine = app.extensions["engine"]
    seen = watch_the_hash(monkeypatch, lambda: engine.pool.checkedout())
    Console(client).login(username, password)
    assert seen == [0]  # no connection checked out: no transaction open, on any database


@sqlite_only
@pytest.mark.parametrize("username, password", [AGENT, (AGENT[0], "wrong-password"), ("nobody", "whatever-pass")])
def test_the_write_lock_is_free_while_the_password_is_checked(app, client, accounts, monkeypatch, username, password):
    seen = watch_the_hash(monkeypatch, lambda: write_lock_is_free(app))
    Console(client).login(username, password)
    assert seen == [True]


def test_a_call_is_answered_while_a_login_checks_its_password(app, client, accounts, monkeypatch, call):
    phones = []
    watch_the_hash(monkeypatch, lambda: phones.append(call().dial()))
    assert Console(client).login(AGENT[0], "wrong-password").status_code == 200
    assert len(phones) == 1
    assert phones[0].prompts and "common.system_error" not in phones[0].all_prompts


@sqlite_only
def test_pages_that_only_read_open_while_another_worker_holds_the_write_lock(app, client, accounts, ledger):
    ledger.add(ALICE)
    admin = Console(client)
    assert admin.login(*ADMIN).status_code == 302
    holder_id = ledger.holder(ALICE).id
    other = sqlite3.connect(database_file(app), timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker's unit of work, mid-way
    try:
        for path in ("/agent/", "/agent/live", "/agent/holders", f"/agent/holders/{holder_id}", "/agent/admin",
                     "/agent/login"):
            assert client.get(path).status_code == 200, path
        assert client.get("/agent/calls/CA-unknown").status_code == 404
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_read_only_session_refuses_to_write(app):
    with app.extensions["read_sessions"]() as s:
        s.add(AgentAccount(username="x", display_name="x", password_hash="x", created_at=utcnow()))
        with pytest.raises(RuntimeError, match="read-only"):
            s.flush()


@sqlite_only
def test_a_read_only_session_begins_deferred_on_sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ro.db'}")
    begun = []
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def _seen(conn):
        begun.append(conn.get_execution_options().get("hotline_read_only", False))

    with make_read_sessionmaker(engine)() as s:
        s.execute(select(1))
        other = sqlite3.connect(str(tmp_path / "ro.db"), timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # free: the read-only session holds no lock
        other.execute("ROLLBACK")
        other.close()
    assert begun == [True]
    engine.dispose()


def test_the_holder_page_writes_a_lapse_that_time_made(agent_console, ledger, app, clock):
    ledger.add(ALICE)
    page = f"/agent/holders/{ledger.holder(ALICE).id}"
    agent_console.post(f"{page}/cards/{ledger.card(card_of(ALICE)).id}/loss", page, confirm="1")
    clock.tick(timedelta(days=8))
    html = agent_console.client.get(page).get_data(as_text=True)
    assert '<span class="status">正常</span>' in html and "口头挂失 → 正常" in html  # the page shows the lapse
    assert ledger.card(card_of(ALICE)).status == "normal"  # and it was written
    assert ledger.history(card_of(ALICE))[-1] == ("verbal_loss", "normal", "system", None)


@pytest.fixture
def agent_console(client, accounts):
    """The console, logged in as a plain agent."""
    console = Console(client)
    assert console.login(*AGENT).status_code == 302
    return console


@sqlite_only
def test_a_flood_of_logins_leaves_the_hotline_answering(database_url, monkeypatch, clock):
    # Limits out of the way: every try hashes its password, as in the review's flood.
    app = app_with(database_url, monkeypatch, two_factor="none",
                   login_limit={"per_username": 10_000, "per_address": 10_000})
    create_agent(app.test_cli_runner(), *AGENT)
    from ivr.sim.phone import ClientTransport, Phone
    from tests.support import TOKEN

    done, statuses, errors = threading.Event(), [], []

    def flood():
        console = Console(app.test_client())
        try:
            while not done.is_set():
                statuses.append(console.login(AGENT[0], "wrong-password").status_code)
        except Exception as err:  # noqa: BLE001  # reported below, never lost in a thread
            errors.append(err)

    threads = [threading.Thread(target=flood) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        phones = []
        while len(statuses) < 16 and not errors:  # every flooder is under way
            threading.Event().wait(0.01)
        for _ in range(10):
            phone = Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"])
            phones.append(phone.dial().press("1"))
    finally:
        done.set()
        for t in threads:
            t.join()
        app.extensions["engine"].dispose()
    assert errors == []
    assert set(statuses) == {200}  # each one "wrong password": no 500, no "database is locked"
    for phone in phones:
        assert phone.prompts and "common.system_error" not in phone.all_prompts


# -- 4. Failed logins are limited per username and per address -------------------------------------

def fail(console, username=AGENT[0], times=1):
    """Try a wrong password `times` times; return the last answer."""
    for _ in range(times):
        resp = console.login(username, "wrong-password")
    return resp


def test_five_failed_logins_refuse_even_the_right_password(client, accounts):
    console = Console(client)
    assert WRONG in fail(console, times=5).get_data(as_text=True)
    resp = console.login(*AGENT)
    assert resp.status_code == 429 and REFUSED in resp.get_data(as_text=True)
    assert resp.headers["Retry-After"] == str(15 * 60)
    assert client.get("/agent/").status_code == 302  # not logged in


def test_an_unknown_username_is_refused_the_same_way(client, accounts):
    console = Console(client)
    assert WRONG in fail(console, "nobody", times=5).get_data(as_text=True)
    resp = console.login("nobody", "wrong-password")
    assert resp.status_code == 429 and REFUSED in resp.get_data(as_text=True)


def test_another_username_is_not_refused_by_one_usernames_failures(client, accounts):
    console = Console(client)
    fail(console, times=5)
    assert console.login(*ADMIN).status_code == 302


def test_twenty_failures_from_one_address_refuse_it_but_not_another_address(app, accounts):
    attacker = Console(app.test_client(), address="203.0.113.9")
    for n in range(20):
        fail(attacker, f"guess{n}")
    assert attacker.login(*AGENT).status_code == 429
    assert Console(app.test_client(), address="198.51.100.7").login(*AGENT).status_code == 302


def test_the_refusal_ends_when_the_window_has_passed(client, accounts, clock):
    console = Console(client)
    fail(console, times=5)
    clock.tick(timedelta(minutes=14, seconds=59))
    assert console.login(*AGENT).status_code == 429
    clock.tick(timedelta(seconds=2))
    assert console.login(*AGENT).status_code == 302


def test_tries_counted_before_their_password_is_checked_cannot_slip_past_the_limit(app):
    policy, now = LoginPolicy(per_username=5), utcnow()
    with app.extensions["sessions"]() as s, s.begin():
        tries = [begin_attempt(s, username="li", address=f"10.0.0.{n}", now=now, policy=policy) for n in range(6)]
    assert all(isinstance(t, LoginAttempt) for t in tries[:5])  # none finished: pending ones count
    assert tries[5] == now + policy.window


def test_the_limits_come_from_the_configuration(database_url, monkeypatch, clock):
    app = app_with(database_url, monkeypatch, two_factor="none", login_limit={"per_username": 2, "window_minutes": 1})
    create_agent(app.test_cli_runner(), *AGENT)
    console = Console(app.test_client())
    fail(console, times=2)
    resp = console.login(*AGENT)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "60"
    app.extensions["engine"].dispose()


@pytest.mark.parametrize("limit, message", [
    ({"per_username": 0}, "per_username must be a whole number of at least 1"),
    ({"per_address": "20"}, "per_address must be a whole number"),
    ({"window": 15}, "login_limit.window: unknown"),
    (5, "login_limit must be a mapping"),
])
def test_a_bad_login_limit_is_refused_at_start(database_url, monkeypatch, limit, message):
    use_test_secrets(monkeypatch)
    with pytest.raises(ValueError, match=message):
        create_app({"database_url": database_url, "console": {"login_limit": limit}})


@pytest.mark.parametrize("public_base_url", [None, "https://hotline.qd.example"])
def test_the_address_is_the_one_the_trusted_proxy_forwards(database_url, monkeypatch, clock, public_base_url):
    use_test_secrets(monkeypatch)
    app = create_app({"database_url": database_url,
                      "twilio": {"trusted_proxies": 1, "public_base_url": public_base_url}})
    app.config["TESTING"] = True
    create_schema(app.extensions["engine"])
    client = app.test_client()
    html = client.get("/agent/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    client.post("/agent/login", data={"csrf_token": token, "username": "x", "password": "wrong-password"},
                headers={"X-Forwarded-For": "192.0.2.44"})
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(LoginAttempt.address)).all() == ["192.0.2.44"]
    app.extensions["engine"].dispose()


def test_an_unknown_username_costs_a_hash_of_the_same_method(app, client, accounts, monkeypatch):
    methods = []
    real = ivr.console.auth.check_password_hash

    def check(pwhash, password):
        methods.append(pwhash.split("$")[0])
        return real(pwhash, password)

    monkeypatch.setattr(ivr.console.auth, "check_password_hash", check)
    Console(client).login("nobody", "whatever-pass")
    Console(client).login(AGENT[0], "wrong-password")
    assert len(methods) == 2 and methods[0] == methods[1]


def test_an_admin_lifts_the_refusal_from_the_admin_page_and_it_is_audited(app, accounts):
    agent = Console(app.test_client())
    fail(agent, times=5)
    admin = Console(app.test_client(), address="192.0.2.1")
    assert admin.login(*ADMIN).status_code == 302
    page = admin.client.get("/agent/admin").get_data(as_text=True)
    assert "失败次数过多，暂停至" in page
    with app.extensions["sessions"]() as s:
        agent_id = s.scalars(select(AgentAccount.id).where(AgentAccount.username == AGENT[0])).one()
    resp = admin.post(f"/agent/admin/accounts/{agent_id}/lift", "/agent/admin")
    assert resp.status_code == 302 and resp.headers["Location"] == "/agent/admin"
    assert agent.login(*AGENT).status_code == 302
    with app.extensions["sessions"]() as s:
        made = AuditEvent.action == "account_create"  # by the accounts fixture, at the CLI
        assert [(e.agent, e.action, e.detail, e.address) for e in s.scalars(select(AuditEvent).where(~made))] == [
            *[(AGENT[0], "login_failed", "密码错误", "127.0.0.1")] * 5, (ADMIN[0], "login", "密码", "192.0.2.1"),
            (ADMIN[0], "lift_login_limit", AGENT[0], "192.0.2.1"), (AGENT[0], "login", "密码", "127.0.0.1")]


def test_only_an_admin_lifts_a_refusal(app, accounts):
    agent = Console(app.test_client())
    assert agent.login(*AGENT).status_code == 302
    assert agent.post("/agent/admin/accounts/1/lift", "/agent/").status_code == 403


def test_agent_unlock_lifts_the_refusal_and_is_audited(app, client, runner, accounts):
    console = Console(client)
    fail(console, times=5)
    result = runner.invoke(args=["agent", "unlock", AGENT[0]])
    assert result.exit_code == 0 and "5 failed tries no longer count" in result.output
    assert console.login(*AGENT).status_code == 302
    with app.extensions["sessions"]() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "lift_login_limit")).one()
    assert (event.action, event.detail) == ("lift_login_limit", AGENT[0]) and event.agent.startswith("cli:")


# -- 5. A logout, a password reset and a disable end every session of the account -------------------

def saved_cookie(client) -> str:
    """Return the session cookie's value as a browser would have saved it."""
    return client.get_cookie("session").value


def with_cookie(app, value):
    """A new browser holding a saved session cookie."""
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def test_a_cookie_saved_before_logout_no_longer_opens_the_console(app, accounts):
    console = Console(app.test_client())
    console.login(*AGENT)
    saved = saved_cookie(console.client)
    assert with_cookie(app, saved).get("/agent/").status_code == 200
    console.post("/agent/logout", "/agent/")
    assert with_cookie(app, saved).get("/agent/").status_code == 302


def test_a_logout_ends_the_accounts_session_in_another_browser(app, accounts):
    office, home = Console(app.test_client()), Console(app.test_client())
    office.login(*AGENT)
    home.login(*AGENT)
    home.post("/agent/logout", "/agent/")
    assert office.client.get("/agent/").status_code == 302
    assert office.login(*AGENT).status_code == 302 and office.client.get("/agent/").status_code == 200


def test_a_password_reset_ends_every_session(app, runner, accounts):
    console = Console(app.test_client())
    console.login(*AGENT)
    create_agent(runner, AGENT[0], "a-new-password-2")
    assert console.client.get("/agent/").status_code == 302


def test_a_disabled_then_enabled_account_does_not_get_its_old_sessions_back(app, runner, accounts):
    console = Console(app.test_client())
    console.login(*AGENT)
    saved = saved_cookie(console.client)
    assert runner.invoke(args=["agent", "disable", AGENT[0]]).exit_code == 0
    with app.extensions["sessions"]() as s, s.begin():  # enabled again by hand, password unchanged
        s.scalars(select(AgentAccount).where(AgentAccount.username == AGENT[0])).one().active = True
    assert with_cookie(app, saved).get("/agent/").status_code == 302


def test_another_accounts_session_goes_on(app, accounts):
    agent, admin = Console(app.test_client()), Console(app.test_client())
    agent.login(*AGENT)
    admin.login(*ADMIN)
    agent.post("/agent/logout", "/agent/")
    assert admin.client.get("/agent/").status_code == 200


def test_a_cookie_without_a_session_epoch_opens_nothing(app, accounts):
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "1"  # the form of the cookies before session epochs
        session["_fresh"] = True
    assert client.get("/agent/").status_code == 302


# -- 13. A 4xx, in Chinese, where a console page once answered 500 -----------------------------------

def test_revealing_a_holder_that_does_not_exist_is_a_404_and_audits_nothing(app, agent_console):
    resp = agent_console.post("/agent/holders/999/reveal", "/agent/")
    assert resp.status_code == 404 and "页面不存在" in resp.get_data(as_text=True)
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(AuditEvent.action).where(AuditEvent.action != "account_create")).all() == ["login"]


def test_clearing_the_pin_lock_of_a_holder_that_does_not_exist_is_a_404(app, accounts):
    admin = Console(app.test_client())
    admin.login(*ADMIN)
    assert admin.post("/agent/holders/999/unlock", "/agent/").status_code == 404


@pytest.mark.parametrize("target", [
    "/agent/\r\nSet-Cookie: stolen=1",
    "https://evil.example/agent/",
    "//evil.example/agent/",
    "/agent\\..\\evil",
    "/agentx",
    "/agent/\x00",
])
def test_a_login_next_that_leaves_the_console_or_breaks_a_header_is_a_400(client, accounts, target):
    assert client.get("/agent/login", query_string={"next": target}).status_code == 400
    token_page = client.get("/agent/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', token_page).group(1)
    resp = client.post("/agent/login", query_string={"next": target},
                       data={"csrf_token": token, "username": AGENT[0], "password": AGENT[1]})
    assert resp.status_code == 400 and "请求无效" in resp.get_data(as_text=True)
    assert client.get("/agent/").status_code == 302  # and no session was opened


@pytest.mark.parametrize("target", ["/agent/holders", "/agent/calls/CA1?x=1", "/agent/%0d%0a"])
def test_a_login_goes_on_to_the_console_page_asked_for(client, accounts, target):
    resp = Console(client).login(*AGENT, next=target)
    assert resp.status_code == 302 and resp.headers["Location"] == target


@pytest.mark.parametrize("path, status, title", [
    ("/agent/admin", 403, "没有权限"),
    ("/agent/no-such-page", 404, "页面不存在"),
    ("/agent/holders/999", 404, "页面不存在"),
    ("/agent/calls/CA-unknown", 404, "页面不存在"),
])
def test_console_error_pages_are_chinese_in_the_consoles_layout(agent_console, path, status, title):
    resp = agent_console.client.get(path)
    html = resp.get_data(as_text=True)
    assert resp.status_code == status
    assert f"<title>{title} · 社保卡热线</title>" in html and "坐席工作台" in html and 'lang="zh-CN"' in html


def test_a_refused_login_is_a_chinese_429(client, accounts):
    console = Console(client)
    fail(console, times=5)
    resp = console.login(*AGENT)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 429 and "请 15 分钟后再试" in html and "坐席登录" in html


def test_a_console_page_that_breaks_answers_a_chinese_500(app, agent_console, monkeypatch):
    import ivr.console.views

    def broken(*_args, **_kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(ivr.console.views, "rating_summary", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    resp = agent_console.client.get("/agent/")
    assert resp.status_code == 500 and "<title>系统出错 · 社保卡热线</title>" in resp.get_data(as_text=True)


def test_a_form_without_its_csrf_token_gets_a_chinese_400(agent_console):
    resp = agent_console.client.post("/agent/logout", data={})
    assert resp.status_code in (302, 400)  # logout ignores a bad token: it only redirects
    resp = agent_console.client.post("/agent/holders/1/reveal", data={})
    assert resp.status_code == 400 and "请求无效" in resp.get_data(as_text=True)


def test_errors_outside_the_console_keep_their_own_answer(client):
    resp = client.get("/no-such-page")
    assert resp.status_code == 404 and "坐席工作台" not in resp.get_data(as_text=True)
