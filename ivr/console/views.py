"""The console's pages. Card operations call `models.services`, the same code the phone runs.

A page that only reads runs on `reader()` (on SQLite: no write lock, so it never holds up a
webhook); one that changes something on `db()`, committed before it renders.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user
from werkzeug.exceptions import NotFound

from ivr.console import db, login_manager, reader
from ivr.console.errors import console_error
from ivr.console.forms import ActionForm
from ivr.console.stats import rating_summary
from models import services
from models.agents import record_audit
from models.cards import Actor
from models.clock import utcnow
from models.identity import mask_phone
from models.vocabulary import AuditAction, Channel

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


def client_address() -> str:
    """Return the address a request comes from: the client's, after ProxyFix (`twilio.trusted_proxies`)."""
    return (request.remote_addr or "")[:64]


def audit(action: AuditAction, *, holder_id: int | None = None, card_id: int | None = None,
          call_sid: str | None = None, detail: str = "") -> None:
    """Record a console action of the logged-in agent in the audit trail, with the client's address.

    Added to the request's writing session (`db()`): it is committed with the work it records, and
    rolled back with it. `detail` is what a reader of the trail needs beyond the action and its
    holder, card and call: mask what you put in it (mask_id, mask_phone); never a PIN. Runs of 7
    digits or more are masked anyway (models.agents.scrub).
    """
    record_audit(db(), action, agent=current_user.username, address=client_address(), now=utcnow(),
                 holder_id=holder_id, card_id=card_id, call_sid=call_sid, detail=detail)


@bp.get("/")
def dashboard() -> Any:
    """Today's figures, the live lists and today's ratings."""
    from ivr.console.callbacks import live_lists  # the pages of other modules sit on this blueprint: imported after it
    from ivr.console.reports import today_context

    settings = current_app.extensions["settings"]
    return render_template("agent/dashboard.html", live=live_lists(), form=ActionForm(),
                           ratings=rating_summary(reader(), now=utcnow(), tz=settings.tz), **today_context())
