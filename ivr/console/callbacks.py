"""The console's work lists: transferred calls, the live queue, and the call-backs (回电任务).

`/agent/callbacks` lists the open call-back items in due order (missed transfers, callers' requests,
call-backs from the queue), with the number to call in full (the agent must call it: shown on the
console's pages only, which need a login; masked everywhere else and in every log line) and the
call's context; the agent records what came of calling (models.callbacks.record_outcome), audited.
"""
from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import RadioField, StringField
from wtforms.validators import Length

from ivr.console import db, reader
from ivr.console.forms import ActionForm
from ivr.console.views import audit, bp
from models.agents import CallbackRequest
from models.callbacks import (
    NOTE_WIDTH,
    WORKED,
    CallbackKind,
    CallbackOutcome,
    Due,
    ItemClosed,
    NoSuchItem,
    Waiting,
    closed_items,
    in_due_order,
    open_items,
    overdue,
    record_outcome,
    tries,
    waiting_calls,
)
from models.calls import CallState
from models.clock import utcnow
from models.hours import Hotline
from models.identity import mask_phone
from models.vocabulary import AuditAction

SHOWS = ("open", "closed")


class CallbackOutcomeForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """What came of calling back, and a note."""

    outcome = RadioField("结果", choices=[str(o) for o in WORKED])
    note = StringField("备注", validators=[Length(max=NOTE_WIDTH)])
AREA_CODES_OF_TWO = ("10", "20", "21", "22", "23", "24", "25", "27", "28", "29")


@bp.get("/live")
def live() -> Any:
    """The live lists alone, for the dashboard to refresh itself."""
    return render_template("agent/_live.html", live=live_lists(), form=ActionForm())


@bp.get("/queue")
def queue() -> Any:
    """The live queue alone, for the call-backs page to refresh itself."""
    return render_template("agent/_queue.html", waiting=waiting_now(), now=utcnow())


def live_lists() -> dict[str, Any]:
    """Transferred calls (newest first), who waits in the queue, and the call-back items: the open
    ones in due order, then the last ones closed."""
    s = reader()
    transfers = s.scalars(select(CallState).where(CallState.handoff.is_not(None))
                          .order_by(CallState.updated_at.desc()).limit(30)).all()
    opened = list(s.scalars(in_due_order(select(CallbackRequest).where(CallbackRequest.done_at.is_(None))).limit(30)))
    closed = closed_items(s, limit=max(0, 50 - len(opened)))
    return {"transfers": transfers, "callbacks": opened + closed, "waiting": waiting_now(), "now": utcnow(),
            "queue_on": current_app.extensions["settings"].agent_leg == "queue"}


def waiting_now() -> list[Waiting]:
    """Return the callers waiting in a queue now, the longest waiting first."""
    machine = current_app.extensions["machine"]
    return waiting_calls(reader(), transfer_states=machine.transfer_names(), now=utcnow())


@bp.get("/callbacks")
def callbacks() -> Any:
    """回电任务: the open items in due order (overdue ones marked), or the closed ones (`show=closed`);
    `kind=` missed, requested or queue narrows the list."""
    show = request.args.get("show", "open")
    show = show if show in SHOWS else "open"
    kind = request.args.get("kind") or None
    kind = kind if kind in set(CallbackKind) else None
    s = reader()
    items = open_items(s, kind=kind) if show == "open" else closed_items(s, kind=kind)
    page = render_template(
        "agent/callbacks.html", items=items, tries=tries(s, [i.id for i in items]), show=show, kind=kind,
        kinds=list(CallbackKind), outcomes=WORKED, now=utcnow(), waiting=waiting_now(), overdue=overdue,
        policy=current_app.extensions["settings"].callbacks, form=CallbackOutcomeForm(), shown_number=shown_number,
        queue_on=current_app.extensions["settings"].agent_leg == "queue",
    )
    return page, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.post("/callbacks/<int:request_id>/outcome")
def callback_outcome(request_id: int) -> Any:
    """Record what came of calling back: reached, no answer (open for another try, up to
    agent.callback_attempts), wrong number or other, with a note; audited."""
    form = CallbackOutcomeForm()
    if not form.validate_on_submit() or form.outcome.data not in set(WORKED):
        abort(400)
    message = work(request_id, CallbackOutcome(form.outcome.data), form.note.data or "")
    flash(message)
    back = request.args.get("show")
    return redirect(url_for("agent.callbacks", show=back if back in SHOWS else None), 303)


@bp.post("/callbacks/<int:request_id>/done")
def callback_done(request_id: int) -> Any:
    """The dashboard's 标记已回电: the call-back reached the caller (recorded and audited like any outcome)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    flash(work(request_id, CallbackOutcome.REACHED, ""))
    return redirect(url_for("agent.dashboard"))


def work(request_id: int, outcome: CallbackOutcome, note: str) -> str:
    """Record an outcome on an item and audit it; return what to tell the agent."""
    settings = current_app.extensions["settings"]
    labels = current_app.extensions["catalogue"]
    s = db()
    item = s.get(CallbackRequest, request_id) or abort(404)
    due = Due(settings.callbacks, settings.calendar, settings.tz)
    try:
        done = record_outcome(s, request_id, outcome=outcome, note=note, agent=current_user.username, now=utcnow(),
                              hotline=hotline_named(item.hotline), due=due)
    except NoSuchItem:
        abort(404)
    except ItemClosed:
        s.rollback()
        return "这条回电任务已经结束（可能其他坐席刚刚处理），本次没有记录。"
    said = labels.label("callback_outcome", outcome)
    final = labels.label("callback_outcome", done.item.outcome)
    detail = (f"{labels.label('callback_kind', done.item.kind)} {mask_phone(done.item.number)}：{said}"
              + (f"（第{done.tries}次未接通，{final}）" if outcome == CallbackOutcome.NO_ANSWER and done.closed else "")
              + (f"（第{done.tries}次未接通）" if outcome == CallbackOutcome.NO_ANSWER and not done.closed else "")
              + (f"；备注：{done.attempt.note}" if done.attempt.note else ""))
    audit(AuditAction.CALLBACK_OUTCOME, call_sid=done.item.call_sid, detail=detail)
    s.commit()
    if not done.closed:
        return f"已记录：{said}（已尝试{done.tries}/{settings.callbacks.attempts}次），稍后再试。"
    if done.item.outcome == CallbackOutcome.UNREACHABLE:
        return f"已记录：{said}。已尝试{done.tries}次仍未接通，任务结束（{final}）。"
    return f"已记录：{said}，任务结束。"


def hotline_named(name: str) -> Hotline:
    """Return the hotline of that name (the default one when it is no longer configured)."""
    settings = current_app.extensions["settings"]
    found: Hotline | None = next((h for h in settings.hotlines.values() if h.name == name), None)
    default: Hotline = settings.hotlines[settings.default_hotline]
    return found or default


def shown_number(number: str) -> str:
    """Show a number to call in groups: a mobile 3-4-4, a fixed line its area code then the rest."""
    digits = (number or "").removeprefix("+86")
    if not digits.isdigit():
        return number
    if len(digits) == 11 and digits.startswith("1"):
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    area = 2 if digits[:2] in AREA_CODES_OF_TWO else 3
    return f"0{digits[:area]} {digits[area:]}"
