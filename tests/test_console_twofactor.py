"""Two-factor sign-in for the console: TOTP enrolment with a QR code, the code after the password,
recovery codes, replays and wrong codes refused, every change audited."""
from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select

from models.agents import AgentAccount, AuditEvent
from tests.support import ADMIN, AGENT, ON_POSTGRES, Console, create_agent

PAGES = ["/agent/", "/agent/live", "/agent/holders", "/agent/admin", "/agent/2fa/"]


@pytest.fixture
def admin(app, accounts):
    """An admin who has enrolled and logged in (a client of its own), at the frozen clock's step:
    tests move the clock on before they need a code of their own."""
    console = Console(app.test_client())
    assert console.login_with_code(*ADMIN).status_code == 200
    return console


def policy(app, who):
    """Set `console.two_factor` for the running app."""
    app.extensions["settings"] = replace(app.extensions["settings"], two_factor=who)


def account(app, username):
    with app.extensions["sessions"]() as s:
        return s.scalars(select(AgentAccount).where(AgentAccount.username == username)).one()


def audit_trail(app):
    with app.extensions["sessions"]() as s:
        return [(e.agent, e.action, e.detail) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def recovery_rows(app, username):
    from models.agents import RecoveryCode

    with app.extensions["sessions"]() as s:
        agent_id = s.scalars(select(AgentAccount.id).where(AgentAccount.username == username)).one()
        return s.scalars(select(RecoveryCode).where(RecoveryCode.agent_id == agent_id).order_by(RecoveryCode.id)).all()


def fresh(app, console):
    """Another browser with the same authenticator (the console's client is its cookies)."""
    other = Console(app.test_client())
    other.secret, other.last_step = console.secret, console.last_step
    return other


def qr_matrix(svg):
    """Read the QR code's modules back from the inline SVG's path (runs of dark modules)."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    rows = [[False] * size for _ in range(size)]
    for x, y, n in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", re.search(r' d="([^"]+)"', svg).group(1)):
        for i in range(int(n)):
            rows[int(y)][int(x) + i] = True
    return rows


# --- who is asked --------------------------------------------------------------------------------

def test_an_admin_with_the_right_password_is_not_logged_in_before_the_second_step(client, accounts):
    resp = Console(client).login(*ADMIN)
    assert resp.status_code == 302 and resp.headers["Location"] == "/agent/2fa/enrol"
    for page in PAGES:
        assert client.get(page).headers["Location"].startswith("/agent/login"), page


@pytest.mark.parametrize(("who", "admin_asked", "agent_asked"), [
    ("admins", True, False), ("all", True, True), ("none", False, False)])
def test_console_two_factor_says_who_is_asked_after_the_password(app, accounts, who, admin_asked, agent_asked):
    policy(app, who)
    for (username, password), asked in ((ADMIN, admin_asked), (AGENT, agent_asked)):
        resp = Console(app.test_client()).login(username, password)
        assert resp.headers["Location"] == ("/agent/2fa/enrol" if asked else "/agent/"), username


def test_an_account_that_enrolled_is_asked_for_its_code_whatever_the_setting(app, accounts, clock):
    policy(app, "none")
    console = Console(app.test_client())
    assert console.login(*AGENT).headers["Location"] == "/agent/"
    console.enrol()
    clock.tick(timedelta(seconds=30))
    again = fresh(app, console)
    assert again.login(*AGENT).headers["Location"] == "/agent/2fa/code"
    assert again.client.get("/agent/").headers["Location"].startswith("/agent/login")
    resp = again.post("/agent/2fa/code", "/agent/2fa/code", code=again.code())
    assert resp.status_code == 302 and resp.headers["Location"] == "/agent/"
    assert again.client.get("/agent/").status_code == 200


def test_the_setting_is_read_from_config_yaml_and_checked(tmp_path, monkeypatch):
    from ivr.config import load_settings

    monkeypatch.setenv("IVR_SECRET_KEY", "k")
    assert load_settings(tmp_path).two_factor == "admins"
    assert load_settings(tmp_path, {"console": {"two_factor": "all"}}).two_factor == "all"
    with pytest.raises(ValueError, match="console.two_factor must be admins, all or none"):
        load_settings(tmp_path, {"console": {"two_factor": "agents"}})


# --- enrolment -----------------------------------------------------------------------------------

def test_enrolment_shows_a_qr_code_of_the_secret_drawn_on_the_page(client, accounts):
    import qrcode

    console = Console(client)
    console.login(*ADMIN)
    resp = client.get("/agent/2fa/enrol")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert "本账号必须使用二次验证" in html
    secret = re.search(r'id="secret">([A-Z2-7 ]+)<', html).group(1).replace(" ", "")
    assert len(secret) == 32
    svg = re.search(r'<svg class="qr".*?</svg>', html, re.S).group(0)
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from outside
    assert "<img" not in html and "<script" not in html
    expected = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    expected.add_data(pyotp.TOTP(secret).provisioning_uri(name=ADMIN[0], issuer_name="社保卡热线坐席"))
    expected.make(fit=True)
    assert qr_matrix(svg) == expected.get_matrix()
    again = client.get("/agent/2fa/enrol").get_data(as_text=True)
    assert secret.replace(" ", "") in again.replace(" ", "")  # a reload shows the same secret


def test_enrolling_logs_in_shows_ten_recovery_codes_once_and_keeps_only_hashes(app, client, accounts):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    console = Console(client)
    console.login(*ADMIN)
    resp = console.enrol()
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert "每个恢复码只能使用一次" in resp.get_data(as_text=True)
    assert len(console.recovery_codes) == 10 and len(set(console.recovery_codes)) == 10
    assert all(re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", c) for c in console.recovery_codes)
    assert client.get("/agent/").status_code == 200
    stored = account(app, ADMIN[0])
    assert stored.totp_secret is not None and console.secret not in stored.totp_secret
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ivr console: TOTP secrets").derive(
        b"test-secret-key")
    assert Fernet(base64.urlsafe_b64encode(key)).decrypt(stored.totp_secret.encode()).decode() == console.secret
    hashes_kept = sorted(r.code_hash for r in recovery_rows(app, ADMIN[0]))
    assert hashes_kept == sorted(hashlib.sha256(c.replace("-", "").encode()).hexdigest() for c in console.recovery_codes)
    assert audit_trail(app)[-2:] == [(ADMIN[0], "twofactor_enrol", ""), (ADMIN[0], "login", "密码和新绑定的动态验证码")]
    assert "剩余恢复码 10 个" in client.get("/agent/2fa/").get_data(as_text=True)
    assert not any(c in client.get("/agent/2fa/").get_data(as_text=True) for c in console.recovery_codes)


def test_a_wrong_code_does_not_enrol(app, client, accounts):
    console = Console(client)
    console.login(*ADMIN)
    html = client.get("/agent/2fa/enrol").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    resp = client.post("/agent/2fa/enrol", data={"csrf_token": token, "code": "000000"})
    assert resp.status_code == 200 and "验证码不对" in resp.get_data(as_text=True)
    assert account(app, ADMIN[0]).totp_secret is None
    assert client.get("/agent/").headers["Location"].startswith("/agent/login")


def test_an_account_that_must_enrol_can_reach_nothing_else_until_it_has(app, accounts):
    policy(app, "none")
    console = Console(app.test_client())
    console.login(*ADMIN)
    assert console.client.get("/agent/").status_code == 200  # logged in without a second factor
    policy(app, "admins")  # the setting changed while the session lasts
    for page in PAGES:
        assert console.client.get(page).headers["Location"] == "/agent/2fa/enrol", page
    console.enrol()
    assert console.client.get("/agent/admin").status_code == 200


def test_an_agent_may_enrol_from_the_console_when_not_required(app, client, accounts):
    console = Console(client)
    console.login(*AGENT)
    assert "未启用" in client.get("/agent/2fa/").get_data(as_text=True)
    console.enrol()
    assert account(app, AGENT[0]).totp_enrolled_at is not None
    assert client.get("/agent/").status_code == 200


# --- the code after the password -----------------------------------------------------------------

def test_an_enrolled_admin_is_logged_in_only_by_the_code(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    console = fresh(app, admin)
    resp = console.login(*ADMIN)
    assert resp.headers["Location"] == "/agent/2fa/code"
    for page in PAGES:
        assert console.client.get(page).headers["Location"].startswith("/agent/login"), page
    page = console.client.get("/agent/2fa/code")
    assert page.status_code == 200 and "动态验证码" in page.get_data(as_text=True)
    wrong = console.post("/agent/2fa/code", "/agent/2fa/code", code="123456")
    assert wrong.status_code == 200 and "验证码错误" in wrong.get_data(as_text=True)
    assert console.client.get("/agent/").headers["Location"].startswith("/agent/login")
    resp = console.post("/agent/2fa/code", "/agent/2fa/code", code=console.code())
    assert resp.status_code == 302 and resp.headers["Location"] == "/agent/"
    assert console.client.get("/agent/admin").status_code == 200


def test_the_code_page_goes_on_to_the_page_first_asked_for(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    console = fresh(app, admin)
    assert console.client.get("/agent/holders").headers["Location"].startswith("/agent/login?next=")
    html = console.client.get("/agent/login?next=/agent/holders").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    resp = console.client.post("/agent/login?next=/agent/holders",
                               data={"csrf_token": token, "username": ADMIN[0], "password": ADMIN[1]})
    assert resp.headers["Location"] == "/agent/2fa/code"
    resp = console.post("/agent/2fa/code", "/agent/2fa/code", code=console.code())
    assert resp.headers["Location"] == "/agent/holders"


def test_the_half_logged_in_state_lasts_five_minutes(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    console = fresh(app, admin)
    console.login(*ADMIN)
    page = console.client.get("/agent/2fa/code").get_data(as_text=True)
    clock.tick(timedelta(seconds=301))
    console.last_step = None
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    resp = console.client.post("/agent/2fa/code", data={"csrf_token": token, "code": console.code()})
    assert resp.status_code == 302 and resp.headers["Location"] == "/agent/login"
    assert "登录已超时" in console.client.get("/agent/login").get_data(as_text=True)
    assert console.client.get("/agent/").headers["Location"].startswith("/agent/login")


def test_a_password_reset_ends_a_half_login(app, admin, runner, clock):
    clock.tick(timedelta(seconds=60))
    console = fresh(app, admin)
    console.login(*ADMIN)
    token = csrf_token(console, "/agent/2fa/code")
    create_agent(runner, ADMIN[0], "a-new-password-2", admin=True)
    resp = console.client.post("/agent/2fa/code", data={"csrf_token": token, "code": console.code()})
    assert resp.status_code == 302 and resp.headers["Location"] == "/agent/login"
    assert console.client.get("/agent/").headers["Location"].startswith("/agent/login")


@pytest.mark.parametrize(("offset", "accepted"), [(-60, False), (-30, True), (0, True), (30, True), (60, False)])
def test_a_code_of_the_step_before_or_after_is_accepted_two_away_is_not(app, admin, clock, offset, accepted):
    clock.tick(timedelta(seconds=120))
    console = fresh(app, admin)
    console.login(*ADMIN)
    step = int(time.time()) // 30 + offset // 30
    resp = console.post("/agent/2fa/code", "/agent/2fa/code", code=pyotp.TOTP(console.secret).generate_otp(step))
    assert (resp.status_code == 302) is accepted
    assert (console.client.get("/agent/").status_code == 200) is accepted


def test_a_code_is_refused_the_second_time_within_its_window(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    first, second = fresh(app, admin), fresh(app, admin)
    code = first.code()
    first.login(*ADMIN)
    assert first.post("/agent/2fa/code", "/agent/2fa/code", code=code).status_code == 302
    second.login(*ADMIN)
    replay = second.post("/agent/2fa/code", "/agent/2fa/code", code=code)
    assert replay.status_code == 200 and "已使用过" in replay.get_data(as_text=True)
    assert second.client.get("/agent/").headers["Location"].startswith("/agent/login")
    earlier = pyotp.TOTP(admin.secret).generate_otp(first.last_step - 1)  # older than one accepted: refused too
    assert second.post("/agent/2fa/code", "/agent/2fa/code", code=earlier).status_code == 200


def csrf_token(console, page):
    html = console.client.get(page).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def test_one_code_sent_by_two_browsers_at_once_logs_in_only_one(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    first, second = fresh(app, admin), fresh(app, admin)
    code = first.code()
    tokens = {}
    for console in (first, second):
        console.login(*ADMIN)
        tokens[console] = csrf_token(console, "/agent/2fa/code")
    together, answers = threading.Barrier(2), []

    def send(console):
        together.wait()
        answers.append(console.client.post("/agent/2fa/code", data={"csrf_token": tokens[console], "code": code}))

    threads = [threading.Thread(target=send, args=(c,)) for c in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [200, 302]


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's write lock")
def test_the_code_and_enrolment_pages_open_while_another_worker_holds_the_write_lock(app, accounts):
    enrolling, coding = Console(app.test_client()), Console(app.test_client())
    enrolling.login(*ADMIN)
    coding.login(*AGENT)
    coding.enrol()
    coding.client.post("/agent/logout", data={"csrf_token": csrf_token(coding, "/agent/")})
    coding.login(*AGENT)
    other = sqlite3.connect(app.extensions["engine"].url.database, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker's unit of work, mid-way
    try:
        assert enrolling.client.get("/agent/2fa/enrol").status_code == 200
        assert coding.client.get("/agent/2fa/code").status_code == 200
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_recovery_code_logs_in_once_and_is_audited(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    code = admin.recovery_codes[3]
    console = fresh(app, admin)
    console.login(*ADMIN)
    resp = console.post("/agent/2fa/code", "/agent/2fa/code", code=code.upper().replace("-", " "))
    assert resp.status_code == 302
    assert "已使用一个恢复码，还剩 9 个" in console.client.get("/agent/").get_data(as_text=True)
    assert audit_trail(app)[-1] == (ADMIN[0], "login", "密码和恢复码，剩余 9 个")
    assert [r.used_at is not None for r in recovery_rows(app, ADMIN[0])].count(True) == 1
    again = fresh(app, admin)
    again.login(*ADMIN)
    assert again.post("/agent/2fa/code", "/agent/2fa/code", code=code).status_code == 200
    assert again.client.get("/agent/").headers["Location"].startswith("/agent/login")


def test_wrong_codes_count_like_failed_logins(app, admin, clock):
    from models.agents import LoginAttempt

    clock.tick(timedelta(seconds=60))
    console = fresh(app, admin)
    console.login(*ADMIN)
    for _ in range(5):
        assert console.post("/agent/2fa/code", "/agent/2fa/code", code="000000").status_code == 200
    refused = console.post("/agent/2fa/code", "/agent/2fa/code", code=console.code())
    assert refused.status_code == 429 and "错误次数过多" in refused.get_data(as_text=True)
    assert console.client.get("/agent/").headers["Location"].startswith("/agent/login")
    with app.extensions["sessions"]() as s:
        outcomes = s.scalars(select(LoginAttempt.outcome).where(LoginAttempt.username == ADMIN[0])
                             .order_by(LoginAttempt.id)).all()
    assert outcomes[-6:] == ["ok"] + ["failed"] * 5
    assert Console(app.test_client()).login(*ADMIN).status_code == 429  # the password is refused too now


def test_a_session_that_never_gave_the_code_is_logged_out_once_the_account_enrols(app, accounts):
    before = Console(app.test_client())
    before.login(*AGENT)
    assert before.client.get("/agent/").status_code == 200
    enrolling = Console(app.test_client())
    enrolling.login(*AGENT)
    enrolling.enrol()
    assert before.client.get("/agent/").headers["Location"] == "/agent/login"
    assert enrolling.client.get("/agent/").status_code == 200


# --- changes to one's own second factor, and an admin's reset ------------------------------------

def test_new_recovery_codes_replace_the_old_ones_and_are_audited(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    old = list(admin.recovery_codes)
    resp = admin.post("/agent/2fa/recovery", "/agent/2fa/", code=admin.code())
    new = re.findall(r"<li><code>([0-9a-z-]+)</code></li>", resp.get_data(as_text=True))
    assert resp.status_code == 200 and len(new) == 10 and not set(new) & set(old)
    assert audit_trail(app)[-1] == (ADMIN[0], "twofactor_recovery_codes", "以动态验证码确认")
    console = fresh(app, admin)
    console.login(*ADMIN)
    assert console.post("/agent/2fa/code", "/agent/2fa/code", code=old[0]).status_code == 200
    assert console.post("/agent/2fa/code", "/agent/2fa/code", code=new[0]).status_code == 302


def test_disabling_needs_a_code_is_audited_and_an_admin_must_then_enrol_again(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    wrong = admin.post("/agent/2fa/disable", "/agent/2fa/", code="000000")
    assert wrong.headers["Location"] == "/agent/2fa/"
    assert account(app, ADMIN[0]).totp_secret is not None
    resp = admin.post("/agent/2fa/disable", "/agent/2fa/", code=admin.code())
    assert resp.headers["Location"] == "/agent/2fa/enrol"
    stored = account(app, ADMIN[0])
    assert (stored.totp_secret, stored.totp_enrolled_at, stored.totp_last_step) == (None, None, None)
    assert recovery_rows(app, ADMIN[0]) == []
    assert audit_trail(app)[-2:] == [(ADMIN[0], "login_failed", "确认操作时动态验证码错误"),
                                  (ADMIN[0], "twofactor_disable", "以动态验证码确认")]
    assert admin.client.get("/agent/").headers["Location"] == "/agent/2fa/enrol"


def test_an_agent_who_disables_logs_in_with_the_password_alone_again(app, accounts, clock):
    console = Console(app.test_client())
    console.login(*AGENT)
    console.enrol()
    clock.tick(timedelta(seconds=60))
    assert console.post("/agent/2fa/disable", "/agent/2fa/", code=console.code()).headers["Location"] == "/agent/2fa/"
    assert Console(app.test_client()).login(*AGENT).headers["Location"] == "/agent/"


def test_an_admin_resets_an_agents_second_factor_and_it_is_audited(app, admin, accounts, clock):
    policy(app, "all")
    agent = Console(app.test_client())
    agent.login_with_code(*AGENT)
    assert agent.client.get("/agent/").status_code == 200
    assert agent.post(f"/agent/2fa/reset/{account(app, ADMIN[0]).id}", "/agent/").status_code == 403
    assert account(app, ADMIN[0]).totp_secret is not None
    admin_page = admin.client.get("/agent/admin").get_data(as_text=True)
    assert "重置二次验证" in admin_page
    resp = admin.post(f"/agent/2fa/reset/{account(app, AGENT[0]).id}", "/agent/admin")
    assert resp.headers["Location"] == "/agent/admin"
    assert account(app, AGENT[0]).totp_secret is None and recovery_rows(app, AGENT[0]) == []
    assert audit_trail(app)[-1] == (ADMIN[0], "twofactor_reset", AGENT[0])
    assert agent.client.get("/agent/").headers["Location"].startswith("/agent/login")  # its sessions ended
    assert Console(app.test_client()).login(*AGENT).headers["Location"] == "/agent/2fa/enrol"


def test_a_changed_secret_key_refuses_codes_but_not_recovery_codes(app, admin, clock):
    clock.tick(timedelta(seconds=60))
    app.extensions["settings"] = replace(app.extensions["settings"], secret_key="another-secret-key")
    console = fresh(app, admin)
    console.login(*ADMIN)
    assert console.post("/agent/2fa/code", "/agent/2fa/code", code=console.code()).status_code == 200
    assert console.post("/agent/2fa/code", "/agent/2fa/code", code=admin.recovery_codes[0]).status_code == 302
    assert "系统密钥已更换" in console.client.get("/agent/2fa/").get_data(as_text=True)
