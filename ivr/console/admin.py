"""The console's accounts and audit pages.

Admins (only) make accounts, disable and enable them, reset their passwords, change their role
and lift their login limits on `/agent/admin`, and read the audit trail on `/agent/admin/audit`.
The rules are models.agents' (create_account, set_active, set_password, set_role: the last active
admin is kept), the same that `flask --app wsgi agent ...` runs, and each change is audited.

Passwords: an admin never chooses nor learns the password an account works with. Making an
account or resetting its password generates a temporary one (models.passwords.temporary_password,
80 random bits), shown once on a page no cache keeps, for the admin to hand to its owner; the
account must then choose its own (`/agent/password`, the policy of models.passwords) before any
other page opens. A reset also ends the account's sessions. Every account can change its own
password there too.

Changes take two steps like the card changes: the button asks (a page saying what will happen),
the confirmation (`confirm=1`) does it. The password hash (scrypt, ~0.1 s) is computed before the
unit of work begins, so no write lock is held meanwhile on SQLite.
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.security import check_password_hash
from wtforms import PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from ivr.console import Agent, db, reader
from ivr.console.forms import ActionForm
from ivr.console.passwords import checked_hash
from ivr.console.query import BadQuery, day_arg
from ivr.console.views import admin_required, audit, bp, client_address
from models.agents import (
    ROLE_NAMES,
    ROLES,
    AccountProblem,
    AccountRefused,
    Actor,
    AgentAccount,
    AuditFilter,
    AuditRow,
    audit_count,
    audit_rows,
    begin_attempt,
    create_account,
    end_attempt,
    lift_login_limit,
    refused_until,
    set_active,
    set_password,
    set_role,
)
from models.clock import local_today, utcnow
from models.identity import mask_id
from models.passwords import MAX_LENGTH, MIN_LENGTH, PasswordProblem, temporary_password
from models.reports import Period
from models.vocabulary import AuditAction

AUDIT_PAGE = 50  # rows a page of the audit trail

REFUSALS = {
    PasswordProblem.TOO_SHORT: f"密码至少需要 {MIN_LENGTH} 个字符。可以用几个词连成一句短语，既够长又好记。",
    PasswordProblem.TOO_LONG: f"密码最多 {MAX_LENGTH} 个字符。",
    PasswordProblem.HAS_USERNAME: "密码不能包含用户名。",
    PasswordProblem.COMMON: "这个密码太常见或太容易被猜到（常见密码、键盘顺序、重复或连续的字符、用户名、"
                            "“qingdao”“12333”等词），请换一个更长、更不常见的密码。",
    AccountProblem.BAD_USERNAME: "用户名须为 3 到 64 个英文字母、数字、点、连字符或下划线，不能有空格。",
    AccountProblem.TAKEN: "已有同名的账号（不区分大小写），请换一个用户名。",
    AccountProblem.BAD_NAME: "姓名不能为空，最多 64 个字符。",
    AccountProblem.BAD_ROLE: "角色只能是坐席或管理员。",
    AccountProblem.LAST_ADMIN: "这是最后一个启用的管理员账号，不能停用或改为坐席。请先把另一个账号设为管理员。",
}
# The changes of an account the admin page offers: what the confirmation page says each does.
CHANGES = {
    "disable": ("停用账号", "停用后该账号不能再登录，已登录的会话立即结束。审计记录保留。"),
    "enable": ("启用账号", "启用后该账号可以重新登录（密码不变）。"),
    "reset": ("重设密码", "将生成一个新的临时密码，只显示一次，请当面或通过可靠渠道交给本人。该账号已登录的会话"
                          "立即结束；下次登录时必须先设置自己的新密码。"),
    "admin": ("改为管理员", "管理员可以管理账号、查看审计记录、解除电话服务密码锁定；按本系统设置，管理员登录须使用"
                           "二次验证，该账号下次打开页面时须先绑定身份验证器。"),
    "agent": ("改为坐席", "改为坐席后，该账号不能再进入管理页面，下次打开页面时生效。"),
}


class AccountForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """A new account: its username, the name shown, its role (the password is generated)."""

    username = StringField("用户名", validators=[DataRequired(), Length(max=64)])
    display_name = StringField("姓名", validators=[Length(max=64)])
    role = SelectField("角色", choices=[SelectChoice(r, ROLE_NAMES[r]) for r in ROLES], default="agent")


class PasswordForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """One's own new password, confirmed by the current one."""

    current = PasswordField("当前密码", validators=[DataRequired(), Length(max=256)])
    new = PasswordField("新密码", validators=[DataRequired(), Length(max=256)])
    repeat = PasswordField("再次输入新密码", validators=[DataRequired(), Length(max=256)])


def admin_actor() -> Actor:
    """Return the logged-in admin as the audit trail names them."""
    return Actor(current_user.username, client_address())


def refusal(err: AccountRefused) -> str:
    """Say in Chinese why an account change is refused."""
    return REFUSALS[err.problem]


def temporary_page(username: str, display_name: str, role: str, password: str, *, made: bool) -> ResponseReturnValue:
    """Show a temporary password, once: no cache may keep the page, no link may carry it away."""
    who = current_app.extensions["settings"].two_factor
    page = render_template("agent/account_password.html", username=username, display_name=display_name, role=role,
                           roles=ROLE_NAMES, password=password, made=made,
                           needs_code=who == "all" or (who == "admins" and role == "admin"))
    return page, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


# --- an account that must choose its own password first --------------------------------------------

@bp.before_request
def own_password_first() -> ResponseReturnValue | None:
    """An account with a temporary password (made or reset by an admin) opens nothing but the page
    that replaces it (and logging out)."""
    if request.endpoint in ("agent.login", "agent.logout", "agent.static", "agent.password"):
        return None
    if not current_user.is_authenticated:
        return None
    account = reader().get(AgentAccount, current_user.id)
    if account is not None and account.must_change_password:
        return redirect(url_for("agent.password"))
    return None


# --- the accounts page ----------------------------------------------------------------------------

@bp.get("/admin")
@admin_required
def admin() -> Any:
    """The accounts: role, state, paused logins, second factor, and what an admin can change."""
    return accounts_page(AccountForm(formdata=None))


def accounts_page(form: AccountForm, status: int = 200) -> Any:
    """Render the accounts page with the new-account form as given."""
    s = reader()
    now, policy = utcnow(), current_app.extensions["settings"].login_limit
    accounts = s.scalars(select(AgentAccount).order_by(AgentAccount.active.desc(), AgentAccount.username)).all()
    paused = {a.id: refused_until(s, now=now, policy=policy, username=a.username) for a in accounts}
    active_admins = sum(1 for a in accounts if a.active and a.is_admin)
    return render_template("agent/admin.html", accounts=accounts, paused=paused, form=ActionForm(),
                           account_form=form, roles=ROLE_NAMES, active_admins=active_admins,
                           min_length=MIN_LENGTH), status


@bp.post("/admin/accounts")
@admin_required
def create() -> Any:
    """Make an account with a generated temporary password, shown once (audited)."""
    form = AccountForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400)
        flash("请填写用户名。")
        return accounts_page(form, 400)
    username = (form.username.data or "").strip()
    display_name = (form.display_name.data or "").strip() or username
    password = temporary_password(username)
    try:
        password_hash = checked_hash(password, username=username, display_name=display_name)  # before the lock
        s = db()
        create_account(s, username=username, display_name=display_name, role=form.role.data,
                       password_hash=password_hash, temporary=True, by=admin_actor(), now=utcnow())
        s.commit()
    except AccountRefused as err:
        flash(refusal(err))
        return accounts_page(form, 400)
    return temporary_page(username, display_name, form.role.data, password, made=True)


@bp.post("/admin/accounts/<int:account_id>/<change>")
@admin_required
def change(account_id: int, change: str) -> Any:
    """Disable, enable, reset the password of, or change the role of an account: the first post asks,
    the confirmation (confirm=1) does it (audited)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    if change not in CHANGES:
        abort(404)
    account = reader().get(AgentAccount, account_id) or abort(404)
    if request.form.get("confirm") != "1":
        return render_template("agent/account_confirm.html", account=account, change=change, what=CHANGES[change],
                               roles=ROLE_NAMES, form=ActionForm()), 200, {"Cache-Control": "no-store"}
    password = temporary_password(account.username) if change == "reset" else ""
    password_hash = checked_hash(password, username=account.username) if password else ""  # before the lock
    s, now, by = db(), utcnow(), admin_actor()
    row = s.get(AgentAccount, account_id) or abort(404)
    try:
        if change == "reset":
            set_password(s, row, password_hash=password_hash, temporary=True, by=by, now=now)
        elif change in ("disable", "enable"):
            set_active(s, row, change == "enable", by=by, now=now)
        else:
            set_role(s, row, change, by=by, now=now)
        s.commit()
    except AccountRefused as err:
        s.rollback()
        flash(refusal(err))
        return redirect(url_for("agent.admin"))
    if change == "reset":
        return temporary_page(row.username, row.display_name, row.role, password, made=False)
    flash(f"{row.username}：已{CHANGES[change][0]}。")
    return redirect(url_for("agent.admin"))


@bp.post("/admin/accounts/<int:account_id>/lift")
@admin_required
def lift(account_id: int) -> Any:
    """Let an account log in again at once after too many failed tries (admin only, audited)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    s = db()
    account = s.get(AgentAccount, account_id) or abort(404)
    lift_login_limit(s, account.username, now=utcnow(), policy=current_app.extensions["settings"].login_limit)
    audit(AuditAction.LIFT_LOGIN_LIMIT, detail=account.username)
    s.commit()
    flash(f"已解除 {account.username} 的登录限制。")
    return redirect(url_for("agent.admin"))


# --- one's own password -----------------------------------------------------------------------------

@bp.route("/password", methods=["GET", "POST"])
def password() -> Any:
    """Change one's own password (the current one first; the policy of models.passwords). An account
    with a temporary password is sent here until it has chosen its own. The account's other
    sessions end; this one stays logged in."""
    account = reader().get(AgentAccount, current_user.id) or abort(404)
    form = PasswordForm()
    forced = account.must_change_password
    if form.validate_on_submit():
        new = form.new.data or ""
        if new != form.repeat.data:
            flash("两次输入的新密码不一致。")
        elif not current_password_ok(account, form.current.data or ""):
            flash("当前密码错误。")
        elif new == form.current.data:
            flash("新密码不能与当前密码相同。")
        else:
            try:
                password_hash = checked_hash(new, username=account.username, display_name=account.display_name)
                s = db()
                row = s.get(AgentAccount, account.id) or abort(404)
                set_password(s, row, password_hash=password_hash, temporary=False,
                             by=Actor(account.username, client_address()), now=utcnow(),
                             detail=f"{account.username}（本人{'首次登录设置' if forced else '修改'}）")
                s.commit()
            except AccountRefused as err:
                flash(refusal(err))
            else:
                stay_logged_in(row)
                flash("密码已修改。其他设备上已登录的会话已结束。")
                return redirect(url_for("agent.dashboard"))
    return render_template("agent/password.html", form=form, forced=forced, min_length=MIN_LENGTH), \
        200, {"Cache-Control": "no-store"}


def current_password_ok(account: AgentAccount, password: str) -> bool:
    """Check the current password as a login try (counted in `console.login_limit`, so a session
    left open cannot be used to guess it); a refusal counts as wrong."""
    now, policy, address = utcnow(), current_app.extensions["settings"].login_limit, client_address()
    with current_app.extensions["sessions"]() as s, s.begin():
        attempt = begin_attempt(s, username=account.username, address=address, now=now, policy=policy)
        if isinstance(attempt, datetime):
            return False
        attempt_id = attempt.id
    ok = check_password_hash(account.password_hash, password)  # no transaction open while it runs
    with current_app.extensions["sessions"]() as s, s.begin():
        end_attempt(s, attempt_id, ok=ok)
    return ok


def stay_logged_in(account: AgentAccount) -> None:
    """Keep this session logged in after its account's sessions ended (a new session epoch); the
    second factor it gave stays given."""
    passed = session.get("twofactor.passed")
    login_user(Agent.of(account))
    if passed is not None:
        session["twofactor.passed"] = passed


# --- the audit trail ----------------------------------------------------------------------------------

def audit_filter() -> AuditFilter:
    """Read the audit page's filters: agent, action, from and to (local days, both included)."""
    tz = current_app.extensions["settings"].tz
    start, end = day_arg("from", "开始日期"), day_arg("to", "结束日期")
    if start and end and end < start:
        raise BadQuery(f"结束日期 {end} 早于开始日期 {start}。")
    action = (request.args.get("action") or "").strip() or None
    if action is not None and action not in set(AuditAction):
        raise BadQuery(f"没有“{action}”这种操作。")
    return AuditFilter(since=Period(start, start, tz).since if start else None,
                       until=Period(end, end, tz).until if end else None,
                       agent=(request.args.get("agent") or "").strip()[:64] or None, action=action)


@bp.get("/admin/audit")
@admin_required
def audit_trail() -> Any:
    """The audit trail, newest first, 50 a page, filtered by agent, action and local days."""
    values = {k: request.args.get(k, "") for k in ("agent", "action", "from", "to")}
    s = reader()
    usernames = s.scalars(select(AgentAccount.username).order_by(AgentAccount.username)).all()
    context = {"values": values, "usernames": usernames, "actions": list(AuditAction),
               "today": local_today(current_app.extensions["settings"].tz)}
    try:
        where = audit_filter()
    except BadQuery as err:
        return render_template("agent/audit.html", error=str(err), rows=[], total=0, page=1, pages=1,
                               **context), 400
    total = audit_count(s, where)
    pages = max(1, math.ceil(total / AUDIT_PAGE))
    page = min(max(1, request.args.get("page", 1, type=int) or 1), pages)
    rows = list(audit_rows(s, where, offset=(page - 1) * AUDIT_PAGE, limit=AUDIT_PAGE))
    return render_template("agent/audit.html", error=None, rows=rows, total=total, page=page, pages=pages,
                           shown=shown_row, when=local_seconds, **context)


def local_seconds(moment: datetime) -> str:
    """Show a moment of the trail in the hotline's time, to the second."""
    return moment.astimezone(current_app.extensions["settings"].tz).strftime("%Y-%m-%d %H:%M:%S")


def shown_row(row: AuditRow) -> dict[str, Any]:
    """What the page shows of a row: the holder's ID masked, the card's last four digits."""
    return {"holder": mask_id(row.id_number) if row.id_number else "",
            "card": row.card_number[-4:] if row.card_number else ""}

