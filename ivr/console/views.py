"""The console's pages. Card operations call `models.services`, the same code the phone runs.

A page that only reads runs on `reader()` (on SQLite: no write lock, so it never holds up a
webhook); one that changes something on `db()`, committed before it renders.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import NotFound

from ivr.console import db, login_manager, reader
from ivr.console.errors import console_error
from ivr.console.forms import ActionForm, LookupForm, MobileForm
from ivr.console.stats import rating_summary
from models import services
from models.agents import AgentAccount, AuditEvent, CallbackRequest, lift_login_limit, refused_until
from models.calls import CallState
from models.cards import Actor, Cardholder, CardRuleError, holder_by_id_number, lapse_outcome
from models.clock import utcnow
from models.identity import id_key, mask_id, mask_phone, normalise_id
from models.pins import PinGuard, clear_lock
from models.vocabulary import CardStatus, Channel

bp = Blueprint("agent", __name__, url_prefix="/agent", template_folder="templates", static_folder="static")
P = ParamSpec("P")
R = TypeVar("R")


@bp.before_request
def require_login() -> Any:
    """Refuse every console page to anyone not logged in (the login page aside)."""
    if request.endpoint in ("agent.login", "agent.static"):
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # the one LoginManager, set on the app by init_app
    return None


@bp.errorhandler(services.NotFound)
def no_such_holder(_error: services.NotFound) -> Any:
    """A cardholder or card that does not exist: 404, whichever page asked for it."""
    return console_error(NotFound())


def admin_required(view: Callable[P, R]) -> Callable[P, R]:
    """Refuse a page to agents without the admin role (403)."""
    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapped


@bp.app_context_processor
def names() -> dict[str, Any]:
    """Give every template the status and reason names and the maskers."""
    return {"label": current_app.extensions["catalogue"].label, "mask_phone": mask_phone, "local": local}


def local(moment: datetime | None) -> str:
    """Show a moment in the hotline's time zone."""
    if moment is None:
        return ""
    return moment.astimezone(current_app.extensions["settings"].tz).strftime("%Y-%m-%d %H:%M")


def actor() -> Actor:
    """Return who changes the ledger from the console: the logged-in agent."""
    return Actor(Channel.AGENT, who=current_user.username)


def audit(action: str, holder_id: int | None = None, detail: str = "") -> None:
    """Record an accountable console action in the audit trail (committed with the request's work)."""
    db().add(AuditEvent(at=utcnow(), agent=current_user.username, action=action, holder_id=holder_id, detail=detail))


@bp.get("/")
def dashboard() -> Any:
    """Today's figures, the live lists and today's ratings."""
    from ivr.console.reports import today_context  # the report pages sit on this blueprint: imported after it

    settings = current_app.extensions["settings"]
    return render_template("agent/dashboard.html", live=live_lists(), form=ActionForm(),
                           ratings=rating_summary(reader(), now=utcnow(), tz=settings.tz), **today_context())


@bp.get("/live")
def live() -> Any:
    """The live lists alone, for the dashboard to refresh itself."""
    return render_template("agent/_live.html", live=live_lists(), form=ActionForm())


def live_lists() -> dict[str, Any]:
    """Transferred calls and call-back requests with their context, newest first."""
    s = reader()
    transfers = s.scalars(select(CallState).where(CallState.handoff.is_not(None))
                          .order_by(CallState.updated_at.desc()).limit(30)).all()
    callbacks = s.scalars(select(CallbackRequest).order_by(
        CallbackRequest.done_at.is_not(None), CallbackRequest.created_at.desc()).limit(50)).all()
    return {"transfers": transfers, "callbacks": callbacks}


@bp.post("/callbacks/<int:request_id>/done")
def callback_done(request_id: int) -> Any:
    """Mark a call-back request done."""
    if not ActionForm().validate_on_submit():
        abort(400)
    s = db()
    cb = s.get(CallbackRequest, request_id) or abort(404)
    if cb.done_at is None:
        cb.done_at, cb.done_by = utcnow(), current_user.username
        s.commit()
    return redirect(url_for("agent.dashboard"))


@bp.get("/calls/<call_sid>")
def call(call_sid: str) -> Any:
    """One transferred call's handoff context."""
    row = reader().get(CallState, call_sid) or abort(404)
    return render_template("agent/call.html", call=row)


@bp.route("/holders", methods=["GET", "POST"])
def lookup() -> Any:
    """Find a cardholder by ID number."""
    form = LookupForm()
    if form.validate_on_submit():
        id_number = normalise_id(form.id_number.data or "")
        holder = holder_by_id_number(reader(), id_number) if id_number else None
        if holder is not None:
            return redirect(url_for("agent.holder", holder_id=holder.id))
        flash("身份证号码无效或没有找到持卡人。")
    return render_template("agent/lookup.html", form=form)


def holder_page(holder_id: int, revealed: bool = False) -> Any:
    """Render a cardholder with cards, history and the forms that act on them (404 if there is none)."""
    s = reader()
    settings = current_app.extensions["settings"]
    now = utcnow()
    holder = s.get(Cardholder, holder_id) or abort(404)
    if any(lapse_outcome(card.state, now=now, policy=settings.loss) for card in holder.cards):
        # A lapse that time made is written like any read would write it, in a short unit of its
        # own; then read again, the lapse in (a rollback forgets what was loaded).
        w = db()
        services.load_holder(w, holder_id, now=now, policy=settings.loss)
        w.commit()
        s.rollback()
    guard = s.get(PinGuard, holder.id_key)
    locked = bool(guard and guard.is_locked(now, settings.pin))
    return render_template(
        "agent/holder.html", holder=holder, cards=holder.cards_newest_first(), locked=locked,
        failures=guard.failures if guard else 0, id_shown=holder.id_number if revealed else mask_id(holder.id_number),
        revealed=revealed, form=ActionForm(), mobile_form=MobileForm(), statuses=tuple(CardStatus),
    )


@bp.get("/holders/<int:holder_id>")
def holder(holder_id: int) -> Any:
    """A cardholder, ID number masked."""
    return holder_page(holder_id)


@bp.post("/holders/<int:holder_id>/reveal")
def reveal(holder_id: int) -> Any:
    """Show the full ID number once; the reveal is audited."""
    if not ActionForm().validate_on_submit():
        abort(400)
    s = db()
    if s.get(Cardholder, holder_id) is None:
        abort(404)  # nobody to reveal, nothing to audit
    audit("reveal_id", holder_id)
    s.commit()
    return holder_page(holder_id, revealed=True)


@bp.post("/holders/<int:holder_id>/cards/<int:card_id>/<change>")
def card_change(holder_id: int, card_id: int, change: str) -> Any:
    """Report a card lost or release the report, on the caller's behalf, through the ledger rules."""
    if not ActionForm().validate_on_submit():
        abort(400)
    operations = {"loss": services.report_verbal_loss, "release": services.release_verbal_loss}
    if change not in operations:
        abort(404)
    s = db()
    settings = current_app.extensions["settings"]
    try:
        operations[change](s, holder_id, card_id, now=utcnow(), actor=actor(), policy=settings.loss, tz=settings.tz)
        s.commit()
        flash("已办理口头挂失。" if change == "loss" else "已解除口头挂失。")
    except services.NotFound:
        abort(404)
    except CardRuleError as err:
        s.rollback()
        flash(f"不能办理：卡状态为{current_app.extensions['catalogue'].label('status', err.status)}。")
    return redirect(url_for("agent.holder", holder_id=holder_id))


@bp.post("/holders/<int:holder_id>/mobile")
def mobile(holder_id: int) -> Any:
    """Change the contact mobile, checked as a Chinese mobile number."""
    form = MobileForm()
    if not form.validate_on_submit():
        abort(400)
    s = db()
    try:
        services.change_mobile(s, holder_id, form.mobile.data or "", now=utcnow(), actor=actor(),
                               tz=current_app.extensions["settings"].tz)
        s.commit()
        flash("联系手机已修改。")
    except services.NotFound:
        abort(404)
    except services.InvalidMobile:
        flash("不是有效的中国大陆手机号码。")
    return redirect(url_for("agent.holder", holder_id=holder_id))


@bp.post("/holders/<int:holder_id>/unlock")
@admin_required
def unlock(holder_id: int) -> Any:
    """Clear the phone PIN lockout after the caller's identity was checked (admin only)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    s = db()
    settings = current_app.extensions["settings"]
    holder = services.load_holder(s, holder_id, now=utcnow(), policy=settings.loss)
    clear_lock(s, id_key(settings.pin_key, holder.id_number))
    audit("clear_pin_lock", holder_id)
    s.commit()
    flash("电话服务密码锁定已解除。")
    return redirect(url_for("agent.holder", holder_id=holder_id))


@bp.get("/admin")
@admin_required
def admin() -> Any:
    """Agent accounts, their paused logins and the audit trail (admin only)."""
    s = reader()
    now, policy = utcnow(), current_app.extensions["settings"].login_limit
    accounts = s.scalars(select(AgentAccount).order_by(AgentAccount.username)).all()
    paused = {a.id: refused_until(s, now=now, policy=policy, username=a.username) for a in accounts}
    events = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)).all()
    return render_template("agent/admin.html", accounts=accounts, paused=paused, events=events, form=ActionForm())


@bp.post("/admin/accounts/<int:account_id>/lift")
@admin_required
def lift(account_id: int) -> Any:
    """Let an account log in again at once after too many failed tries (admin only, audited)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    s = db()
    account = s.get(AgentAccount, account_id) or abort(404)
    lift_login_limit(s, account.username, now=utcnow(), policy=current_app.extensions["settings"].login_limit)
    audit("lift_login_limit", detail=account.username)
    s.commit()
    flash(f"已解除 {account.username} 的登录限制。")
    return redirect(url_for("agent.admin"))
