"""The console's work lists: transferred calls and call-back requests, refreshed by the dashboard."""
from __future__ import annotations

from typing import Any

from flask import abort, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from ivr.console import db, reader
from ivr.console.forms import ActionForm
from ivr.console.views import bp
from models.agents import CallbackRequest
from models.calls import CallState
from models.clock import utcnow


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
