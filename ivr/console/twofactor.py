"""Two-factor sign-in for the console: a TOTP authenticator (RFC 6238) and single-use recovery codes.

Who must use it is `console.two_factor` (`admins`, `all`, `none`); an account that enrolled is asked
for its code whatever the setting says. Once the password is right, the login view calls
`after_password(account)`. For such an account the session is then only *half* logged in: the
account's id and the moment go in the signed session (`PENDING`, good for `PENDING_SECONDS`),
Flask-Login is not told, and the browser goes to the code page, or, for an account that must use a
second factor but has none, to the enrolment page. Only a right code (or recovery code) logs the
session in. Every console page checks (`gate`) that an enrolled account's session gave its code,
and sends an account that must enrol and has not to enrolment: it can do nothing else.

A code is accepted for the current 30-second step and the one either side, and never twice: the
last accepted step is kept, and a code of that step or an earlier one is refused (a replay). Each
code tried is a login attempt of the username from the address (models.agents.LoginAttempt,
counted before it is checked): wrong codes and wrong passwords share `console.login_limit`.

The secret is stored encrypted (Fernet, its key derived from IVR_SECRET_KEY with HKDF-SHA256): a
copy of the database alone does not give the codes. After IVR_SECRET_KEY changes the stored
secrets cannot be read: codes are refused until the account re-enrols or an admin resets it, while
recovery codes (kept as SHA-256 only) still work. Enrolment, disabling, new recovery codes, a
recovery code used and an admin's reset are written to the audit trail.

Units of work are short and commit before the page renders; reads use the read-only session
(on SQLite a page never holds the write lock the webhooks need).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import secrets
from datetime import datetime
from typing import Any, cast

import pyotp
import qrcode  # type: ignore[import-untyped]  # qrcode ships no type information
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import CursorResult, Update, delete, func, or_, select, update
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from ivr.console import Agent, login_manager, reader
from ivr.console.auth import safe_next
from ivr.console.forms import ActionForm
from ivr.console.views import admin_required, client_address
from ivr.console.views import bp as console
from models.agents import (
    AgentAccount,
    LoginPolicy,
    RecoveryCode,
    begin_attempt,
    end_attempt,
    end_sessions,
    record_audit,
    refused_until,
)
from models.clock import utcnow
from models.vocabulary import AuditAction

log = logging.getLogger(__name__)
bp = Blueprint("twofactor", __name__, url_prefix="/agent/2fa", template_folder="templates")

PENDING = "twofactor.pending"  # the half-logged-in state: {"id", "epoch" (session epoch), "at" (seconds), "next"}
PASSED = "twofactor.passed"  # [account id, enrolment stamp]: this session gave the account's code
ENROLLING = "twofactor.enrolling"  # the secret being enrolled, encrypted like the stored one
PENDING_SECONDS = 300
STEP_SECONDS = 30
RECOVERY_COUNT = 10
ISSUER = "社保卡热线坐席"
# Crockford's base32 (no i, l, o, u): 12 characters are 60 random bits, shown as xxxx-xxxx-xxxx.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RECOVERY_LENGTH = 12


class CodeForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """A one-time code from the authenticator, or a recovery code."""

    code = StringField("动态验证码", validators=[DataRequired(), Length(max=32)])


# --- who must use it -------------------------------------------------------------------------------

def must_use(account: AgentAccount) -> bool:
    """Tell whether the account may not work without a second factor (`console.two_factor`)."""
    who: str = current_app.extensions["settings"].two_factor
    return who == "all" or (who == "admins" and account.is_admin)


def asks_code(account: AgentAccount) -> bool:
    """Tell whether a right password alone does not log the account in."""
    return account.two_factor_enrolled or must_use(account)


# --- secrets, codes, recovery codes ---------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"ivr console: TOTP secrets").derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret: str) -> str:
    """Encrypt a TOTP secret for the database (or the session)."""
    return _fernet(current_app.extensions["settings"].secret_key).encrypt(secret.encode()).decode()


def unseal(token: str | None) -> str | None:
    """Decrypt a stored TOTP secret; None when there is none or it cannot be (IVR_SECRET_KEY changed)."""
    if token is None:
        return None
    try:
        return _fernet(current_app.extensions["settings"].secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        log.error("a TOTP secret cannot be decrypted: IVR_SECRET_KEY changed since it was enrolled")
        return None


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """Return the step, among the current one and one either side, whose code this is."""
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def normalise(entered: str) -> str:
    """Return what was typed without spaces and hyphens, lower case, Crockford's look-alikes mapped."""
    code = "".join(entered.split()).replace("-", "").lower()
    return code.translate(str.maketrans("oil", "011"))


def recovery_hash(code: str) -> str:
    """Return the SHA-256 a recovery code is kept as (60 random bits: no slow hash is needed)."""
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def new_recovery_codes(s: Session, account: AgentAccount, now: datetime) -> list[str]:
    """Replace the account's recovery codes with new ones; return them (shown once, never stored)."""
    s.execute(delete(RecoveryCode).where(RecoveryCode.agent_id == account.id))
    codes = ["".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
             for _ in range(RECOVERY_COUNT)]
    s.add_all(RecoveryCode(agent_id=account.id, code_hash=recovery_hash(c), created_at=now) for c in codes)
    return ["-".join(c[i:i + 4] for i in range(0, RECOVERY_LENGTH, 4)) for c in codes]


def recovery_left(s: Session, account_id: int) -> int:
    """Return how many recovery codes the account has not used."""
    return s.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.agent_id == account_id, RecoveryCode.used_at.is_(None))) or 0


def clear(s: Session, account: AgentAccount) -> None:
    """Remove the account's second factor: the secret and the recovery codes."""
    account.totp_secret = account.totp_enrolled_at = account.totp_last_step = None
    s.execute(delete(RecoveryCode).where(RecoveryCode.agent_id == account.id))


def record(s: Session, username: str, action: AuditAction, detail: str = "") -> None:
    """Write an audit event by `username`, from the client's address, in the unit of work `s` (the
    console's `audit()` names the logged-in agent, and half logged in, nobody is)."""
    record_audit(s, action, agent=username, address=client_address(), now=utcnow(), detail=detail)


def writing() -> Session:
    """Return a new session for one short unit of work that writes (`with writing() as s, s.begin():`)."""
    s: Session = current_app.extensions["sessions"]()
    return s


# --- checking a code, within the login limit ------------------------------------------------------

class Locked(Exception):
    """Too many wrong passwords and codes for the username or from the address: refused until `until`."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until)
        self.until = until


def login_policy() -> LoginPolicy:
    """Return `console.login_limit`, which wrong codes count against like wrong passwords."""
    limit: LoginPolicy = current_app.extensions["settings"].login_limit
    return limit


def spent(s: Session, statement: Update) -> bool:
    """Run a conditional update that spends a code; tell whether this request was the one that did
    (two requests with one code at once: the database lets only one of them change the row)."""
    result = cast(CursorResult[Any], s.execute(statement.execution_options(synchronize_session=False)))
    return result.rowcount == 1


def check_code(account: AgentAccount, entered: str, *, logging_in: bool) -> tuple[str | None, int]:
    """Check a one-time code or a recovery code of an enrolled account.

    Each try is a login attempt, counted in a unit of its own before the code is checked. Return
    what was used, "totp" or "recovery" (that code is then spent), or None, and how many recovery
    codes are left; raise Locked when tries are refused. Audited with the outcome: a login or a
    failed one when `logging_in`; otherwise (a code confirming a change) only a wrong code, the
    change itself being audited by its view.
    """
    now, policy, address = utcnow(), login_policy(), client_address()
    with current_app.extensions["read_sessions"]() as r:  # a refusal only reads
        until = refused_until(r, now=now, policy=policy, username=account.username, address=address)
    if until is not None:
        raise Locked(until)
    with writing() as s, s.begin():
        attempt = begin_attempt(s, username=account.username, address=address, now=now, policy=policy)
        if isinstance(attempt, datetime):
            raise Locked(attempt)
        attempt_id = attempt.id
    code, used = normalise(entered), None
    with writing() as s, s.begin():
        row = s.get(AgentAccount, account.id) or abort(404)
        if code.isdigit() and len(code) == 6:
            secret = unseal(row.totp_secret)
            step = matching_step(secret, code, now) if secret else None
            if step is not None and spent(s, update(AgentAccount).where(  # a replay finds its step spent
                    AgentAccount.id == row.id,
                    or_(AgentAccount.totp_last_step.is_(None), AgentAccount.totp_last_step < step),
            ).values(totp_last_step=step)):
                used = "totp"
        else:
            kept = s.scalars(select(RecoveryCode.id).where(
                RecoveryCode.agent_id == row.id, RecoveryCode.code_hash == recovery_hash(code),
                RecoveryCode.used_at.is_(None))).first()
            if kept is not None and spent(s, update(RecoveryCode).where(
                    RecoveryCode.id == kept, RecoveryCode.used_at.is_(None)).values(used_at=now)):
                used = "recovery"
        left = recovery_left(s, account.id)
        if used is None:
            record(s, account.username, AuditAction.LOGIN_FAILED,
                   "动态验证码错误" if logging_in else "确认操作时动态验证码错误")
        elif logging_in:
            record(s, account.username, AuditAction.LOGIN,
                   "密码和动态验证码" if used == "totp" else f"密码和恢复码，剩余 {left} 个")
        end_attempt(s, attempt_id, ok=used is not None)
    return used, left


def refused(err: Locked) -> str:
    """Say until when tries are refused, in the hotline's time."""
    until = err.until.astimezone(current_app.extensions["settings"].tz).strftime("%H:%M")
    return f"密码或验证码错误次数过多，已暂停登录，请于 {until} 后再试，或请管理员解除限制。"


# --- the session: half logged in, then logged in with the code ------------------------------------

def after_password(account: AgentAccount) -> Response | None:
    """Called by the login view once the password is right. None: log the account in as before.
    Otherwise the session is half logged in, and the answer sends the browser to the second step."""
    if not asks_code(account):
        return None
    target = request.args.get("next", "")
    session.pop(PASSED, None)
    session.pop(ENROLLING, None)
    session[PENDING] = {"id": account.id, "epoch": account.session_epoch, "at": int(utcnow().timestamp()),
                        "next": target if target and safe_next(target) else ""}
    return redirect(url_for("twofactor.code" if account.two_factor_enrolled else "twofactor.enrol"))


def pending_account() -> AgentAccount | None:
    """Return the account of a half-logged-in session still within its time; else forget it."""
    pending = session.get(PENDING)
    if not isinstance(pending, dict):
        return None
    age = int(utcnow().timestamp()) - int(pending.get("at", 0))
    account = reader().get(AgentAccount, int(pending.get("id", 0))) if 0 <= age <= PENDING_SECONDS else None
    if account is None or not account.active or account.session_epoch != pending.get("epoch"):
        session.pop(PENDING, None)  # gone, disabled, or its password reset (or sessions ended) meanwhile
        return None
    return account


def stamp(account: AgentAccount) -> list[int]:
    """What a session that gave the account's code keeps: a new enrolment makes it stale."""
    enrolled = account.totp_enrolled_at
    return [account.id, round(enrolled.timestamp() * 1_000_000) if enrolled else 0]


def finish_login(account: AgentAccount) -> str:
    """Log the half-logged-in session in for good; return the page it was going to."""
    pending = session.pop(PENDING, None) or {}
    login_user(Agent.of(account))
    session[PASSED] = stamp(account)
    target = str(pending.get("next") or "")
    return target if target and safe_next(target) else url_for("agent.dashboard")


@console.before_request
def gate() -> ResponseReturnValue | None:
    """Every console page: an enrolled account's session must have given its code, and an account
    that must use a second factor but has none goes to enrolment (it can do nothing else)."""
    if request.endpoint in ("agent.login", "agent.static", "agent.logout") or not current_user.is_authenticated:
        return None
    account = reader().get(AgentAccount, current_user.id)
    if account is None:
        return None
    if account.two_factor_enrolled:
        if session.get(PASSED) != stamp(account):
            logout_user()
            flash("请重新登录并输入动态验证码。")
            return redirect(url_for("agent.login"))
    elif must_use(account):
        return redirect(url_for("twofactor.enrol"))
    return None


@bp.before_request
def own_pages() -> ResponseReturnValue | None:
    """The code and enrolment pages serve half-logged-in sessions; the others need a full login."""
    if request.endpoint in ("twofactor.code", "twofactor.enrol"):
        return None
    if not current_user.is_authenticated:
        answer: ResponseReturnValue = login_manager.unauthorized()
        return answer
    return gate()


@bp.app_context_processor
def two_factor_names() -> dict[str, Any]:
    """Give the console's templates (the admin page) who must use a second factor."""
    return {"two_factor_required": must_use}


@bp.after_request
def no_store(response: Response) -> Response:
    """Secrets and recovery codes are on these pages: no cache may keep them."""
    response.headers["Cache-Control"] = "no-store"
    return response


# --- pages -----------------------------------------------------------------------------------------

def timed_out() -> Response:
    """Send a half-logged-in session whose time ran out back to the password."""
    flash("登录已超时，请重新输入用户名和密码。")
    return redirect(url_for("agent.login"))


@bp.route("/code", methods=["GET", "POST"])
def code() -> ResponseReturnValue:
    """The second step of logging in: the authenticator's code, or a recovery code."""
    account = pending_account()
    if account is None:
        return timed_out()
    if not account.two_factor_enrolled:
        return redirect(url_for("twofactor.enrol"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            used, left = check_code(account, form.code.data or "", logging_in=True)
        except Locked as err:
            flash(refused(err))
            return render_template("agent/twofactor_code.html", form=form, issuer=ISSUER), 429
        if used is not None:
            target = finish_login(account)
            if used == "recovery":
                soon = "请尽快在“二次验证”页面生成新的恢复码。" if left < 3 else ""
                flash(f"已使用一个恢复码，还剩 {left} 个。{soon}")
            return redirect(target)
        flash("验证码错误或已使用过，请输入验证器上新的验证码。")
    return render_template("agent/twofactor_code.html", form=form, issuer=ISSUER)


def enrolling_account() -> tuple[AgentAccount | None, bool]:
    """Return the account enrolling and whether it is half logged in (True) or logged in."""
    if current_user.is_authenticated:
        return reader().get(AgentAccount, current_user.id), False
    account = pending_account()
    return account, account is not None


@bp.route("/enrol", methods=["GET", "POST"])
def enrol() -> ResponseReturnValue:
    """Bind an authenticator: a QR code of a new secret, confirmed by a code from it; then the
    recovery codes, shown once."""
    account, half = enrolling_account()
    if account is None:
        return timed_out()
    if account.two_factor_enrolled:
        return redirect(url_for("twofactor.code" if half else "twofactor.settings"))
    secret = unseal(session.get(ENROLLING))
    if secret is None:
        secret = pyotp.random_base32()
        session[ENROLLING] = seal(secret)
    form = CodeForm()
    if form.validate_on_submit():
        now = utcnow()
        step = matching_step(secret, normalise(form.code.data or ""), now)
        if step is not None:
            with writing() as s, s.begin():
                row = s.get(AgentAccount, account.id) or abort(404)
                if row.two_factor_enrolled:  # enrolled meanwhile, in another tab
                    return redirect(url_for("twofactor.code" if half else "twofactor.settings"))
                row.totp_secret, row.totp_enrolled_at, row.totp_last_step = seal(secret), now, step
                codes = new_recovery_codes(s, row, now)
                record(s, row.username, AuditAction.TWOFACTOR_ENROL)
                if half:  # the enrolment's code is the login's second factor
                    record(s, row.username, AuditAction.LOGIN, "密码和新绑定的动态验证码")
            session.pop(ENROLLING, None)
            target = finish_login(row) if half else url_for("twofactor.settings")
            session[PASSED] = stamp(row)
            return render_template("agent/twofactor_recovery.html", codes=codes, target=target, enrolled=True)
        flash("验证码不对：请确认手机时间准确，并输入验证器上当前显示的 6 位数字。")
    uri = pyotp.TOTP(secret, interval=STEP_SECONDS).provisioning_uri(name=account.username, issuer_name=ISSUER)
    return render_template("agent/twofactor_enrol.html", form=form, qr=qr_svg(uri), uri=uri,
                           required=must_use(account), username=account.username,
                           secret=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4)))


@bp.get("/")
def settings() -> ResponseReturnValue:
    """The agent's own second factor: enrolled since, recovery codes left; new codes, disabling."""
    account = reader().get(AgentAccount, current_user.id) or abort(404)
    enrolled = account.two_factor_enrolled
    return render_template("agent/twofactor.html", account=account, required=must_use(account), form=CodeForm(),
                           left=recovery_left(reader(), account.id) if enrolled else 0,
                           readable=not enrolled or unseal(account.totp_secret) is not None)


def own_enrolled_account() -> AgentAccount:
    """Return the logged-in agent's account, which has a second factor (404 if it has none)."""
    account = reader().get(AgentAccount, current_user.id)
    if account is None or not account.two_factor_enrolled:
        abort(404)
    return account


def confirmed(account: AgentAccount) -> str | None:
    """Check the code a change of one's own second factor is confirmed with (flashing why not);
    return how it was confirmed, for the change's audit detail, or None when it was not."""
    form = CodeForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        used, left = check_code(account, form.code.data or "", logging_in=False)
        if used is not None:
            return "以动态验证码确认" if used == "totp" else f"以恢复码确认，剩余 {left} 个"
        flash("验证码错误或已使用过。")
    except Locked as err:
        flash(refused(err))
    return None


@bp.post("/recovery")
def recovery() -> ResponseReturnValue:
    """New recovery codes for one's own account (the old ones stop working), confirmed by a code."""
    account = own_enrolled_account()
    how = confirmed(account)
    if how is None:
        return redirect(url_for("twofactor.settings"))
    with writing() as s, s.begin():
        codes = new_recovery_codes(s, account, utcnow())
        record(s, account.username, AuditAction.TWOFACTOR_RECOVERY_CODES, how)
    return render_template("agent/twofactor_recovery.html", codes=codes, target=url_for("twofactor.settings"),
                           enrolled=False)


@bp.post("/disable")
def disable() -> ResponseReturnValue:
    """Remove one's own second factor, confirmed by a code. An account that must use one is then
    sent to enrol again: how an agent moves to a new phone."""
    account = own_enrolled_account()
    how = confirmed(account)
    if how is None:
        return redirect(url_for("twofactor.settings"))
    with writing() as s, s.begin():
        clear(s, s.get(AgentAccount, account.id) or abort(404))
        record(s, account.username, AuditAction.TWOFACTOR_DISABLE, how)
    session.pop(PASSED, None)
    if must_use(account):
        flash("二次验证已停用。本账号必须使用二次验证：请重新绑定身份验证器。")
        return redirect(url_for("twofactor.enrol"))
    flash("二次验证已停用。")
    return redirect(url_for("twofactor.settings"))


@bp.post("/reset/<int:agent_id>")
@admin_required
def reset(agent_id: int) -> ResponseReturnValue:
    """An admin removes someone's second factor (a lost phone): that account's sessions end, and it
    enrols again at its next login where it must use one."""
    if not ActionForm().validate_on_submit():
        abort(400)
    with writing() as s, s.begin():
        account = s.get(AgentAccount, agent_id) or abort(404)
        clear(s, account)
        end_sessions(s, account.id)
        record(s, current_user.username, AuditAction.TWOFACTOR_RESET, account.username)
    flash(f"已重置 {account.username} 的二次验证。")
    return redirect(url_for("agent.admin"))


def qr_svg(text: str) -> Markup:
    """Draw `text` as a QR code in inline SVG: the qrcode package's modules as one path, drawn on the
    page itself (no image file, nothing fetched from anywhere)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    rows: list[list[bool]] = qr.get_matrix()
    size = len(rows)
    runs = []
    for y, row in enumerate(rows):
        x = 0
        while x < size:
            if not row[x]:
                x += 1
                continue
            start = x
            while x < size and row[x]:
                x += 1
            runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    return Markup(  # noqa: S704  (numbers only: nothing of the text goes into the markup)
        f'<svg class="qr" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size * 5}" '
        f'height="{size * 5}" shape-rendering="crispEdges" role="img" aria-label="绑定用二维码">'
        f'<rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{"".join(runs)}"/></svg>')
