"""Logging in and out of the console: a few failed tries, then a pause; a logout ends every session.

The password hash takes about 0.1 s of CPU; on SQLite no transaction may be open meanwhile (a
write lock held that long silences the hotline's webhooks). So a login is three short units of
work: a read-only look-up (no lock), counting the try (a short write), then, after the hash,
recording its outcome (another).
"""
from __future__ import annotations

import math
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from ivr.console import Agent, db
from ivr.console.forms import ActionForm, LoginForm
from ivr.console.views import audit, bp, client_address
from models.agents import AgentAccount, begin_attempt, end_attempt, end_sessions, record_audit, refused_until
from models.clock import utcnow
from models.vocabulary import AuditAction

# Checked when the username is unknown, so that it costs what a known one costs: the same method
# and parameters as `agent create` (Werkzeug's default), a password nobody knows.
DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Log an agent in; after too many failed tries of a username or from an address, refuse (429)."""
    target = request.args.get("next", "")
    if target and not safe_next(target):
        abort(400)  # another site, or characters no address has (a CRLF would split the header)
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("agent/login.html", form=form)
    username, address = form.username.data or "", client_address()
    account, attempt = _begin_attempt(username, address)
    if isinstance(attempt, datetime):
        return _refused(form, attempt)  # not audited: a flood of refusals would fill the trail
    ok = _password_ok(account, form.password.data or "")  # no transaction open while it runs
    from ivr.console.twofactor import after_password, asks_code  # here: twofactor imports this module

    with current_app.extensions["sessions"]() as s, s.begin():
        end_attempt(s, attempt, ok=ok)
        # Audited with the attempt's outcome; a login that still needs its second factor is
        # audited when the code is given (ivr.console.twofactor.check_code).
        if not ok or account is None:
            record_audit(s, AuditAction.LOGIN_FAILED, agent=username, address=address, now=utcnow(),
                         detail="密码错误" if account is not None else "没有此账号或账号已停用")
        elif not asks_code(account):
            record_audit(s, AuditAction.LOGIN, agent=account.username, address=address, now=utcnow(),
                         detail="密码")
    if not ok or account is None:
        flash("用户名或密码错误。")
        return render_template("agent/login.html", form=form)
    return after_password(account) or _finish_login(account)  # a second factor, where one is asked for


def _begin_attempt(username: str, address: str) -> tuple[AgentAccount | None, int | datetime]:
    """Look the account up and count the try; or return until when tries are refused.

    The look-up and a refusal only read (no lock); counting the try is a short write, which
    checks the limit again so that tries made at once cannot slip past it together.
    """
    now, policy = utcnow(), current_app.extensions["settings"].login_limit
    with current_app.extensions["read_sessions"]() as s:
        account = s.scalars(select(AgentAccount).where(AgentAccount.username == username,
                                                       AgentAccount.active)).first()
        until = refused_until(s, now=now, policy=policy, username=username, address=address)
    if until is not None:
        return account, until
    with current_app.extensions["sessions"]() as s, s.begin():
        attempt = begin_attempt(s, username=username, address=address, now=now, policy=policy)
        return account, attempt if isinstance(attempt, datetime) else attempt.id


def _password_ok(account: AgentAccount | None, password: str) -> bool:
    """Check the password; an unknown username takes as long and is simply wrong."""
    if account is None:
        check_password_hash(DUMMY_HASH, password)
        return False
    return check_password_hash(account.password_hash, password)


def _finish_login(account: AgentAccount) -> Any:
    """Open the console session of an account whose login succeeded; go on to the page asked for."""
    login_user(Agent.of(account))
    target = request.args.get("next", "")
    return redirect(target if target and safe_next(target) else url_for("agent.dashboard"))


def _refused(form: LoginForm, until: datetime) -> Any:
    """Answer a refused login: 429, the login page saying how long to wait."""
    seconds = max(1, math.ceil((until - utcnow()).total_seconds()))
    flash(f"登录失败次数过多，已暂停登录。请 {math.ceil(seconds / 60)} 分钟后再试，或请管理员解除限制。")
    response = make_response(render_template("agent/login.html", form=form), 429)
    response.headers["Retry-After"] = str(seconds)
    return response


def safe_next(target: str) -> bool:
    """Tell whether a login's next= is a console page of this site, fit for a Location header."""
    if not (target == "/agent" or target.startswith("/agent/")):
        return False
    if any(c < " " or c in "\\\x7f" for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


@bp.post("/logout")
def logout() -> Any:
    """Log the agent out: every session of the account ends, in this browser and any other."""
    if ActionForm().validate_on_submit():
        s = db()
        end_sessions(s, current_user.id)
        audit(AuditAction.LOGOUT)
        s.commit()
        logout_user()
    return redirect(url_for("agent.login"))
