"""The console's cardholder pages: find a holder, see the cards, act on them through `models.services`."""
from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, url_for

from ivr.console import db, reader
from ivr.console.forms import ActionForm, LookupForm, MobileForm
from ivr.console.views import actor, admin_required, audit, bp
from models import services
from models.cards import Cardholder, CardRuleError, holder_by_id_number, lapse_outcome
from models.clock import utcnow
from models.identity import id_key, mask_id, mask_phone, normalise_id
from models.pins import PinGuard, clear_lock
from models.vocabulary import AuditAction, CardStatus


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
    audit(AuditAction.REVEAL_ID, holder_id=holder_id)
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
        audit(AuditAction.REPORT_LOSS if change == "loss" else AuditAction.RELEASE_LOSS,
              holder_id=holder_id, card_id=card_id)
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
        new = services.change_mobile(s, holder_id, form.mobile.data or "", now=utcnow(), actor=actor(),
                                     tz=current_app.extensions["settings"].tz)
        audit(AuditAction.CHANGE_MOBILE, holder_id=holder_id, detail=f"改为 {mask_phone(new)}")
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
    audit(AuditAction.CLEAR_PIN_LOCK, holder_id=holder_id)
    s.commit()
    flash("电话服务密码锁定已解除。")
    return redirect(url_for("agent.holder", holder_id=holder_id))
