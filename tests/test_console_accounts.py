"""Admins manage the console's accounts on /agent/admin: create (a temporary password shown once,
replaced by its owner at the first login), disable, enable, reset the password (its sessions end),
change the role; the last active admin is kept; every change is audited; one password policy for
the console and `agent create`."""
from __future__ import annotations

import getpass
import re

import pytest
from sqlalchemy import func, select

from models.agents import AgentAccount, AuditEvent
from tests.support import ADMIN, AGENT, Console, create_agent

ADMIN_ADDRESS = "203.0.113.9"
CLI = f"cli:{getpass.getuser()}"
NEW = ("zhang.wei", "崂山的茶和八大关的秋天-1984")  # the password its owner chooses


@pytest.fixture
def admin(app, accounts):
    """An admin, logged in (two-factor enrolment on the way) from ADMIN_ADDRESS."""
    console = Console(app.test_client(), address=ADMIN_ADDRESS)
    assert console.login_with_code(*ADMIN).status_code == 200
    return console


def account(app, username: str) -> AgentAccount:
    with app.extensions["sessions"]() as s:
        return s.scalars(select(AgentAccount).where(AgentAccount.username == username)).one()


def last_id(app) -> int:
    with app.extensions["sessions"]() as s:
        return s.scalar(select(func.max(AuditEvent.id))) or 0


def audited_after(app, after: int) -> list[tuple[str, str, str, str]]:
    with app.extensions["sessions"]() as s:
        return [(e.agent, e.action, e.address, e.detail)
                for e in s.scalars(select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id))]


def temporary(resp) -> str:
    """Return the temporary password a page shows."""
    return re.search(r'id="temporary-password">([^<]+)<', resp.get_data(as_text=True)).group(1)


def create(admin, username: str, display_name: str = "", role: str = "agent"):
    return admin.post("/agent/admin/accounts", "/agent/admin", username=username, display_name=display_name, role=role)


def change(admin, app, username: str, what: str, confirm: bool = True):
    fields = {"confirm": "1"} if confirm else {}
    return admin.post(f"/agent/admin/accounts/{account(app, username).id}/{what}", "/agent/admin", **fields)


def flashed(console) -> str:
    return console.client.get("/agent/admin").get_data(as_text=True)


def set_own_password(console, current: str, new: str, repeat: str | None = None):
    return console.post("/agent/password", "/agent/password", current=current, new=new,
                        repeat=new if repeat is None else repeat)


# --- making an account ------------------------------------------------------------------------------

def test_an_admin_creates_an_account_with_a_temporary_password_shown_once(app, admin):
    before = last_id(app)
    resp = create(admin, NEW[0], "张伟")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Referrer-Policy"] == "no-referrer"
    password = temporary(resp)
    assert re.fullmatch(r"[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}", password)
    stored = account(app, NEW[0])
    assert (stored.display_name, stored.role, stored.active, stored.must_change_password) == ("张伟", "agent", True, True)
    assert password not in stored.password_hash and password not in admin.client.get("/agent/admin").get_data(as_text=True)
    assert audited_after(app, before) == [(ADMIN[0], "account_create", ADMIN_ADDRESS, "zhang.wei（张伟，坐席）")]


def test_the_new_agent_must_choose_a_password_before_anything_else(app, admin):
    password = temporary(create(admin, NEW[0], "张伟"))
    agent = Console(app.test_client())
    assert agent.login(NEW[0], password).headers["Location"] == "/agent/"
    for page in ("/agent/", "/agent/holders", "/agent/reports"):
        assert agent.client.get(page).headers["Location"] == "/agent/password"
    assert "您正在使用管理员给的临时密码" in agent.client.get("/agent/password").get_data(as_text=True)
    before = last_id(app)
    assert set_own_password(agent, password, NEW[1]).headers["Location"] == "/agent/"
    assert agent.client.get("/agent/").status_code == 200  # still logged in, now with its own password
    assert account(app, NEW[0]).must_change_password is False
    assert audited_after(app, before) == [(NEW[0], "account_reset", "127.0.0.1", "zhang.wei（本人首次登录设置）")]
    assert Console(app.test_client()).login(NEW[0], password).status_code == 200  # the temporary one is gone
    assert Console(app.test_client()).login(*NEW).headers["Location"] == "/agent/"


@pytest.mark.parametrize("new, repeat, message", [
    ("short-pass", None, "密码至少需要 15 个字符。"),
    ("zhang.wei-at-the-hotline", None, "密码不能包含用户名。"),
    ("ZHANG.WEI-at-the-hotline", None, "密码不能包含用户名。"),
    ("Password12345678", None, "这个密码太常见或太容易被猜到"),
    ("qwertyuiop123456", None, "这个密码太常见或太容易被猜到"),
    ("Qingdao12333hotline", None, "这个密码太常见或太容易被猜到"),
    ("海边的风吹过崂山-2026", "海边的风吹过崂山-2025", "两次输入的新密码不一致。"),
])
def test_the_password_policy_speaks_chinese(app, admin, new, repeat, message):
    password = temporary(create(admin, NEW[0], "张伟"))
    agent = Console(app.test_client())
    agent.login(NEW[0], password)
    resp = set_own_password(agent, password, new, repeat)
    assert resp.status_code == 200 and message in resp.get_data(as_text=True)
    assert account(app, NEW[0]).must_change_password is True


def test_a_wrong_current_password_is_refused_and_counts_as_a_failed_login(app, accounts):
    from models.agents import LoginAttempt

    agent = Console(app.test_client())
    agent.login(*AGENT)
    resp = set_own_password(agent, "not-my-password", NEW[1])
    assert "当前密码错误。" in resp.get_data(as_text=True)
    with app.extensions["sessions"]() as s:
        outcomes = s.scalars(select(LoginAttempt.outcome).where(LoginAttempt.username == AGENT[0])
                             .order_by(LoginAttempt.id)).all()
    assert outcomes == ["ok", "failed"]


def test_changing_ones_own_password_ends_the_other_sessions(app, accounts):
    here, there = Console(app.test_client()), Console(app.test_client())
    here.login(*AGENT)
    there.login(*AGENT)
    set_own_password(here, AGENT[1], NEW[1])
    assert here.client.get("/agent/").status_code == 200
    assert there.client.get("/agent/").headers["Location"].startswith("/agent/login")
    assert Console(app.test_client()).login(AGENT[0], NEW[1]).headers["Location"] == "/agent/"


@pytest.mark.parametrize("username, message", [
    ("张伟", "用户名须为 3 到 64 个英文字母、数字、点、连字符或下划线"),
    ("zw", "用户名须为 3 到 64 个英文字母、数字、点、连字符或下划线"),
    ("zhang wei", "用户名须为 3 到 64 个英文字母、数字、点、连字符或下划线"),
    ("LI.AGENT", "已有同名的账号（不区分大小写）"),
])
def test_a_bad_or_taken_username_is_refused_in_chinese_and_nothing_is_made(app, admin, username, message):
    before = last_id(app)
    resp = create(admin, username)
    assert resp.status_code == 400 and message in resp.get_data(as_text=True)
    with app.extensions["sessions"]() as s:
        assert s.scalar(select(func.count()).select_from(AgentAccount)) == 2
    assert audited_after(app, before) == []


# --- disable, enable, reset, role ------------------------------------------------------------------

def test_disabling_asks_first_then_ends_the_accounts_sessions_and_is_audited(app, admin):
    agent = Console(app.test_client())
    agent.login(*AGENT)
    before = last_id(app)
    asked = change(admin, app, AGENT[0], "disable", confirm=False)
    assert asked.status_code == 200 and "确认停用账号？" in asked.get_data(as_text=True)
    assert account(app, AGENT[0]).active and audited_after(app, before) == []
    assert change(admin, app, AGENT[0], "disable").headers["Location"] == "/agent/admin"
    assert "li.agent：已停用账号。" in flashed(admin)
    assert account(app, AGENT[0]).active is False
    assert agent.client.get("/agent/").headers["Location"].startswith("/agent/login")
    assert Console(app.test_client()).login(*AGENT).status_code == 200  # refused: 用户名或密码错误
    change(admin, app, AGENT[0], "enable")
    assert Console(app.test_client()).login(*AGENT).headers["Location"] == "/agent/"
    assert audited_after(app, before) == [(ADMIN[0], "account_disable", ADMIN_ADDRESS, AGENT[0]),
                                          (AGENT[0], "login_failed", "127.0.0.1", "没有此账号或账号已停用"),
                                          (ADMIN[0], "account_enable", ADMIN_ADDRESS, AGENT[0]),
                                          (AGENT[0], "login", "127.0.0.1", "密码")]


def test_a_reset_ends_the_sessions_and_the_old_password(app, admin):
    agent = Console(app.test_client())
    agent.login(*AGENT)
    before = last_id(app)
    resp = change(admin, app, AGENT[0], "reset")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    password = temporary(resp)
    assert agent.client.get("/agent/").headers["Location"].startswith("/agent/login")
    assert Console(app.test_client()).login(*AGENT).status_code == 200  # the old password: refused
    again = Console(app.test_client())
    assert again.login(AGENT[0], password).headers["Location"] == "/agent/"
    assert again.client.get("/agent/").headers["Location"] == "/agent/password"
    assert audited_after(app, before)[0] == (ADMIN[0], "account_reset", ADMIN_ADDRESS, AGENT[0])


def test_an_agent_made_admin_must_enrol_then_reaches_the_admin_pages(app, admin):
    agent = Console(app.test_client())
    agent.login(*AGENT)
    assert agent.client.get("/agent/admin").status_code == 403
    before = last_id(app)
    change(admin, app, AGENT[0], "admin")
    assert account(app, AGENT[0]).role == "admin"
    assert audited_after(app, before) == [(ADMIN[0], "account_role", ADMIN_ADDRESS, "li.agent：坐席 → 管理员")]
    assert agent.client.get("/agent/admin").headers["Location"] == "/agent/2fa/enrol"  # admins use a second factor
    agent.enrol()
    assert agent.client.get("/agent/admin").status_code == 200
    change(admin, app, AGENT[0], "agent")
    assert agent.client.get("/agent/admin").status_code == 403


def test_the_last_active_admin_cannot_disable_or_demote_themselves(app, admin):
    page = admin.client.get("/agent/admin").get_data(as_text=True)
    own = page.split(f'id="account-{account(app, ADMIN[0]).id}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-change="disable" disabled title="最后一个启用的管理员账号"' in own
    before = last_id(app)
    for what in ("disable", "agent"):
        resp = change(admin, app, ADMIN[0], what)
        assert resp.headers["Location"] == "/agent/admin"
        assert "这是最后一个启用的管理员账号，不能停用或改为坐席。" in flashed(admin)
    stored = account(app, ADMIN[0])
    assert (stored.active, stored.role) == (True, "admin") and audited_after(app, before) == []


def test_with_a_second_admin_the_first_can_step_down(app, admin):
    change(admin, app, AGENT[0], "admin")
    change(admin, app, ADMIN[0], "agent")
    assert account(app, ADMIN[0]).role == "agent"
    assert admin.client.get("/agent/admin").status_code == 403


def test_an_agent_can_change_no_account(app, agent):
    for what in ("disable", "enable", "reset", "admin", "agent", "lift"):
        assert change(agent, app, ADMIN[0], what).status_code == 403
    assert create(agent, "sneaky.one").status_code == 403
    assert account(app, AGENT[0]).role == "agent"


def test_an_account_change_without_the_csrf_token_is_refused(app, admin):
    resp = admin.client.post(f"/agent/admin/accounts/{account(app, AGENT[0]).id}/disable", data={"confirm": "1"})
    assert resp.status_code == 400 and account(app, AGENT[0]).active
    assert admin.client.post("/agent/admin/accounts", data={"username": "x.y.z"}).status_code == 400


# --- the same rules at the CLI ------------------------------------------------------------------------

@pytest.mark.parametrize("password, message", [
    ("short-pass", "the password needs at least 15 characters"),
    ("li.agent-at-the-hotline", "the password may not contain the username"),
    ("Password12345678", "the password is too common or too easy to guess"),
])
def test_agent_create_applies_the_same_policy(app, runner, password, message):
    result = runner.invoke(args=["agent", "create", AGENT[0], "--password", password])
    assert result.exit_code == 2 and result.output.startswith(message)
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(AgentAccount)).all() == []


def test_agent_create_and_disable_are_audited_and_keep_the_last_admin(app, runner):
    create_agent(runner, *ADMIN, admin=True)
    result = runner.invoke(args=["agent", "disable", ADMIN[0]])
    assert (result.exit_code, result.output) == (2, "it is the last active admin: make another admin first\n")
    demoted = runner.invoke(args=["agent", "create", ADMIN[0], "--password", ADMIN[1]])
    assert demoted.exit_code == 2 and account(app, ADMIN[0]).role == "admin"
    create_agent(runner, *AGENT)
    assert runner.invoke(args=["agent", "disable", AGENT[0]]).output == "agent li.agent disabled\n"
    assert runner.invoke(args=["agent", "enable", AGENT[0]]).output == "agent li.agent enabled\n"
    temporary_made = runner.invoke(args=["agent", "create", "zhao.min", "--temporary", "--password", NEW[1]])
    assert temporary_made.output == "agent zhao.min ready (agent), to choose a new password at the first login\n"
    assert account(app, "zhao.min").must_change_password is True
    assert audited_after(app, 0) == [
        (CLI, "account_create", "", "wang.admin（wang.admin，管理员）"),
        (CLI, "account_create", "", "li.agent（li.agent，坐席）"),
        (CLI, "account_disable", "", AGENT[0]),
        (CLI, "account_enable", "", AGENT[0]),
        (CLI, "account_create", "", "zhao.min（zhao.min，坐席）"),
    ]


def test_agent_create_on_an_existing_account_resets_its_password_and_ends_its_sessions(app, runner, accounts):
    agent = Console(app.test_client())
    agent.login(*AGENT)
    before = last_id(app)
    assert runner.invoke(args=["agent", "create", AGENT[0], "--password", NEW[1]]).exit_code == 0
    assert agent.client.get("/agent/").headers["Location"].startswith("/agent/login")
    assert audited_after(app, before) == [(CLI, "account_reset", "", AGENT[0])]


def test_a_new_admin_enrols_then_chooses_a_password_and_stays_logged_in(app, admin):
    password = temporary(create(admin, NEW[0], "张伟", role="admin"))
    newcomer = Console(app.test_client())
    assert newcomer.login(NEW[0], password).headers["Location"] == "/agent/2fa/enrol"  # admins bind a phone first
    newcomer.enrol()
    assert newcomer.client.get("/agent/admin").headers["Location"] == "/agent/password"
    assert set_own_password(newcomer, password, NEW[1]).headers["Location"] == "/agent/"
    assert newcomer.client.get("/agent/admin").status_code == 200  # its second factor still given
