"""The console's admin pages: accounts, their login limits, the audit trail (admin only)."""
from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, url_for
from sqlalchemy import select

from ivr.console import db, reader
from ivr.console.forms import ActionForm
from ivr.console.views import admin_required, audit, bp
from models.agents import AgentAccount, AuditEvent, lift_login_limit, refused_until
from models.clock import utcnow
from models.vocabulary import AuditAction


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
    audit(AuditAction.LIFT_LOGIN_LIMIT, detail=account.username)
    s.commit()
    flash(f"已解除 {account.username} 的登录限制。")
    return redirect(url_for("agent.admin"))
