"""The console's cardholder pages: find a holder, see the cards, act on them through `models.services`.

Every change of a card or of the holder (a loss report, its release, an activation, a mobile change,
a PIN unlock) takes two steps: the holder page's button asks (a page saying what will happen, no
JavaScript needed), and only the confirmation (`confirm=1`) changes anything.
"""
from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from ivr.console import db, reader
from ivr.console.forms import ActionForm, LookupForm, MobileForm
from ivr.console.views import actor, admin_required, audit, bp
from models import services
from models.cards import ALLOWED_FROM, REASON_KEYS, Card, Cardholder, CardRuleError, lapse_outcome
from models.clock import utcnow
from models.identity import id_key, mask_id, mask_phone
from models.phones import normalise_mobile
from models.pins import PinGuard, clear_lock
from models.search import EMPTY, FOUND_BY, find_holders, parse_query
from models.vocabulary import AuditAction, CardStatus

# The card changes an agent makes: the rule each goes through, the use case, the audit action, what it says done.
CHANGES = {
    "loss": ("report_verbal_loss", services.report_verbal_loss, AuditAction.REPORT_LOSS, "已办理口头挂失。"),
    "release": ("release_verbal_loss", services.release_verbal_loss, AuditAction.RELEASE_LOSS, "已解除口头挂失。"),
    "activate": ("activate", services.activate, AuditAction.ACTIVATE, "社保卡已激活。"),
}
QUERY_WIDTH = 64  # more than any ID number, mobile, card number or name with its last four


@bp.route("/holders", methods=["GET", "POST"])
def lookup() -> Any:
    """Find a cardholder: one box for the ID number, the name and last four, the mobile or the card number.

    The page's own form posts (what was typed stays out of URLs and access logs); `?q=` works too,
    for a bookmark or a link. One holder found: their page. Any search is audited, masked.
    """
    form = LookupForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        text = form.q.data or ""
    elif "q" in request.args:
        text = request.args.get("q", "")
    else:
        return render_template("agent/lookup.html", form=form, query=None, holders=[])
    query = parse_query(text[:QUERY_WIDTH])
    settings = current_app.extensions["settings"]
    holders = find_holders(reader(), query, key=settings.pin_key) if query.kind in FOUND_BY else []
    if query.kind != EMPTY:
        kind = current_app.extensions["catalogue"].label("search", query.kind)
        audit(AuditAction.SEARCH, holder_id=holders[0].id if len(holders) == 1 else None,
              detail=f"{kind} {query.shown}：{len(holders)} 人")
        db().commit()
    if len(holders) == 1:
        return redirect(url_for("agent.holder", holder_id=holders[0].id), 303)
    now = utcnow()
    statuses = {card.id: lapsed.state.status if (lapsed := lapse_outcome(card.state, now=now, policy=settings.loss))
                else card.status for h in holders for card in h.cards}  # as a read sees them: a due lapse in
    page = render_template("agent/lookup.html", form=LookupForm(formdata=None), query=query, holders=holders,
                           statuses=statuses, mask_id=mask_id)
    return page, 200, {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


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
        note_keys=REASON_KEYS,
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


def confirmed() -> bool:
    """Tell whether the form is the confirmation (`confirm=1`), not the first click."""
    return request.form.get("confirm") == "1"


def confirm_page(holder: Cardholder, action: str, *, card: Card | None = None, status: str | None = None,
                 fields: dict[str, str] | None = None, shown: str = "") -> Any:
    """Ask the agent to confirm a change: what it is, on whom, what follows; the form posts it again with confirm=1."""
    return render_template("agent/confirm.html", holder=holder, id_masked=mask_id(holder.id_number), action=action,
                           card=card, status=status, fields=fields or {}, shown=shown, form=ActionForm(),
                           target=request.path), 200, {"Cache-Control": "no-store"}


def refusal(err: CardRuleError) -> str:
    """Say why the rules refuse a change, in Mandarin."""
    if err.status == "replaced":
        return "不能办理：该卡已有新卡替代。"
    return f"不能办理：卡状态为{current_app.extensions['catalogue'].label('status', err.status)}。"


@bp.post("/holders/<int:holder_id>/cards/<int:card_id>/<change>")
def card_change(holder_id: int, card_id: int, change: str) -> Any:
    """Report a card lost, release the report or activate the card, on the caller's behalf, through the
    ledger rules: the first post asks, the confirmation does it."""
    if not ActionForm().validate_on_submit():
        abort(400)
    if change not in CHANGES:
        abort(404)
    rule, operation, action, done = CHANGES[change]
    settings = current_app.extensions["settings"]
    now = utcnow()
    if not confirmed():
        card = reader().get(Card, card_id)
        if card is None or card.holder_id != holder_id:
            abort(404)
        lapse = lapse_outcome(card.state, now=now, policy=settings.loss)
        status = (lapse.state if lapse else card.state).status
        if status not in ALLOWED_FROM[rule]:
            flash(refusal(CardRuleError(rule, status)))
            return redirect(url_for("agent.holder", holder_id=holder_id))
        return confirm_page(card.holder, change, card=card, status=status)
    s = db()
    try:
        operation(s, holder_id, card_id, now=now, actor=actor(), policy=settings.loss, tz=settings.tz)
        audit(action, holder_id=holder_id, card_id=card_id)
        s.commit()
        flash(done)
    except services.NotFound:
        abort(404)
    except CardRuleError as err:
        s.rollback()
        flash(refusal(err))
    return redirect(url_for("agent.holder", holder_id=holder_id))


@bp.post("/holders/<int:holder_id>/mobile")
def mobile(holder_id: int) -> Any:
    """Change the contact mobile, checked as a Chinese mobile number: asked, then confirmed."""
    form = MobileForm()
    if not form.validate_on_submit():
        abort(400)
    raw = form.mobile.data or ""
    if not confirmed():
        holder = reader().get(Cardholder, holder_id) or abort(404)
        new = normalise_mobile(raw)
        if new is None:
            flash("不是有效的中国大陆手机号码。")
            return redirect(url_for("agent.holder", holder_id=holder_id))
        return confirm_page(holder, "mobile", fields={"mobile": new}, shown=mask_phone(new))
    s = db()
    try:
        new = services.change_mobile(s, holder_id, raw, now=utcnow(), actor=actor(),
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
    """Clear the phone PIN lockout after the caller's identity was checked (admin only): asked, then confirmed."""
    if not ActionForm().validate_on_submit():
        abort(400)
    if not confirmed():
        return confirm_page(reader().get(Cardholder, holder_id) or abort(404), "unlock")
    s = db()
    settings = current_app.extensions["settings"]
    holder = services.load_holder(s, holder_id, now=utcnow(), policy=settings.loss)
    clear_lock(s, id_key(settings.pin_key, holder.id_number))
    audit(AuditAction.CLEAR_PIN_LOCK, holder_id=holder_id)
    s.commit()
    flash("电话服务密码锁定已解除。")
    return redirect(url_for("agent.holder", holder_id=holder_id))
