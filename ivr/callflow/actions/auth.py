"""Verification: the ID number, then the PIN, once per call."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

from ivr.callflow.actions import CallContext, Data, action, bump, completed, started, verified
from ivr.callflow.machine import Event
from ivr.callflow.speech import hear_number, known_confidence
from models import services
from models.cards import Credentials
from models.elders import is_elder
from models.identity import birth_date, id_key, is_pin_shape, normalise_id, pin_hash, pin_matches
from models.ledger_rows import HolderRow
from models.pins import INITIAL, LOCKED, OK, check_pin, guard_and_credentials
from models.vocabulary import Service

ELDER_BY_ID = "id"  # CallData.elder: the verified ID number's birth date makes the caller an elder


@action
def start_service(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Note the service the caller chose; verification comes first, once per call."""
    data.pending = arg
    if arg is not None:
        started(data, arg)
    if suspended(ctx, data):
        return "suspended"  # self-service stays stopped for the rest of this call, verified or not
    if data.holder_id:
        return "verified"
    return "unverified"


def suspended(ctx: CallContext, data: Data) -> bool:
    """Tell whether self-service has stopped for this call: too many wrong or malformed PINs
    (at verification or as the current PIN of a change), a lock, or the initial PIN keyed."""
    return (data.auth_failures >= ctx.settings.per_call_pin_failures
            or data.pin_format_errors >= ctx.settings.id_attempts or data.locked or data.initial_pin)


@action
def accept_id(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Check the ID number's form and check character (keyed, or spoken) before any look-up."""
    # The birth date must be a real one up to the call's day (in the hotline's time zone).
    today = ctx.now.astimezone(ctx.settings.tz).date()
    id_number, certain = heard_number(event, lambda raw: normalise_id(raw, today=today), x_last=True)
    if id_number is None:
        return "too_many" if bump(data, "id_errors") >= ctx.settings.id_attempts else "invalid"
    data.id_errors = 0
    data.id_key = id_key(ctx.settings.pin_key, id_number)
    data.id_last4 = id_number[-4:]
    if not certain or unsure(event, ctx):
        data.say_id = id_number  # read back once; never stored with the call
        return "unsure"
    return "ok"


def pin_result(ctx: CallContext, data: Data, holder: Credentials | HolderRow | None, key: str, pin: str,
               initial: str | None = None, guard: tuple[int, datetime | None] | None = None) -> str:
    """Check keyed PIN digits: bad_format, or OK / WRONG / LOCKED (INITIAL when `initial` is given
    and was keyed) from the lockout counter (`guard`: its row, already read in this step)."""
    if not is_pin_shape(pin):
        ctx.facts["pin"] = "bad_format"  # what the keys were, for a replay to key the same kind
        return "bad_format"
    result = check_pin(ctx.uow.runs_on, key=ctx.settings.pin_key, id_key=key or "-", holder=holder, pin=pin,
                       now=ctx.now, policy=ctx.settings.pin, initial=initial, guard=guard)
    if initial is not None and pin == initial:
        ctx.facts["pin"] = "initial"  # the same whoever keyed it: the record tells no more than the caller heard
    else:
        ctx.facts["pin"] = "right" if result == OK else "wrong_or_locked"
    if result == LOCKED:
        data.locked = True
    return result


def pin_outcome(ctx: CallContext, data: Data, result: str) -> str:
    """Turn a failed PIN check into the flow's outcome, counting failures in this call."""
    if result == "bad_format":
        return "too_many" if bump(data, "pin_format_errors") >= ctx.settings.id_attempts else "bad_format"
    if result == LOCKED:
        return "locked"
    return "too_many" if bump(data, "auth_failures") >= ctx.settings.per_call_pin_failures else "wrong"


@action
def verify_pin(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Check the PIN against the entered ID number, counting failures across calls.

    The initial PIN is never a way in (anyone who knows the ID number knows it too), and keying it
    tells nothing about the ID number: whoever keys it hears the same and gets no self-service for
    the rest of the call, and it counts as a wrong PIN unless it really is the holder's PIN.
    """
    key = data.id_key or ""
    holder, guard = None, None
    if key and is_pin_shape(event.value):  # the counter row and the holder's credentials, read together
        guard, holder = guard_and_credentials(ctx.uow.runs_on, key)
    initial = ctx.settings.initial_pin
    result = pin_result(ctx, data, holder, key, event.value, initial=initial, guard=guard)
    if result == INITIAL or (result == LOCKED and event.value == initial):
        data.initial_pin = True
        return "initial"
    if result == OK and holder is not None:
        data.holder_id = holder.id
        data.auth_failures = 0
        if ctx.settings.elder.on(ctx.hotline.name):  # the verified ID's birth date decides from now on
            today = ctx.now.astimezone(ctx.settings.tz).date()
            data.elder = ELDER_BY_ID if is_elder(holder.id_number, today, ctx.settings.elder.age) else None
        return "ok"
    return pin_outcome(ctx, data, result)


@action
def resume_service(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Go on with the service chosen before verification."""
    return str(data.pending)


@action
def suspended_reason(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Say why self-service stays stopped for this call: the lock, or too many failures."""
    if data.initial_pin:
        return "initial"
    return "locked" if data.locked else "too_many"


def heard_number(event: Event, check: Callable[[str], str | None], *, x_last: bool = False,
                 phone: bool = False) -> tuple[str | None, bool]:
    """Return the number keyed or spoken as `check` accepts it (None when it accepts none), and
    whether it was heard for certain. Keys are certain. Speech with a word that reads two ways (双,
    俩: ivr.callflow.speech) is not: its first reading `check` accepts is used, read back first."""
    if event.kind != "speech":
        return check(event.value), True
    heard = hear_number(event.value, x_last=x_last, phone=phone)
    if heard is None:
        return None, False
    for reading in heard.readings:
        number = check(reading)
        if number is not None:
            return number, heard.certain
    return None, False


def unsure(event: Event, ctx: CallContext) -> bool:
    """Tell whether spoken input came with too little confidence to use without a read-back (an
    unknown confidence, none given or 0.0, is too little)."""
    if event.kind != "speech":
        return False
    level = known_confidence(event.extra.get("Confidence"))
    return level is None or level < ctx.settings.speech_confidence


def _verified_holder(ctx: CallContext, data: Data) -> HolderRow:
    """Return the verified caller's cardholder row (the PIN change runs only after verification)."""
    try:
        return services.verified_holder(ctx.uow.runs_on, verified(data))
    except services.NotFound:
        raise RuntimeError("the verified cardholder is no longer in the ledger") from None


@action
def check_old_pin(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Check the current PIN before a change, counting failures like any verification."""
    holder = _verified_holder(ctx, data)
    result = pin_result(ctx, data, holder, holder.id_key, event.value)
    if result == OK:
        return "ok"
    outcome = pin_outcome(ctx, data, result)
    if outcome in ("locked", "too_many"):
        data.holder_id = None  # no longer verified: self-service stops for the rest of this call
    return outcome


@action
def accept_new_pin(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Take a new PIN unless it is weak: say why (initial, equal digits, a run, the birth date)."""
    holder = _verified_holder(ctx, data)
    reason = weakness(event.value, holder, ctx.settings.initial_pin, ctx.settings.pin_key)
    ctx.facts["new_pin"] = reason or "ok"
    if reason:
        data.weak_reason = reason
        return "too_many" if bump(data, "weak_pins") >= ctx.settings.id_attempts else "weak"
    data.new_pin_hash = pin_hash(ctx.settings.pin_key, holder.id_number, event.value)
    return "ok"


def weakness(pin: str, holder: HolderRow, initial: str, key: bytes) -> str | None:
    """Return why a new PIN is refused, or None when it will do."""
    if not is_pin_shape(pin):
        return "bad_format"
    if pin == initial:
        return "initial"
    if len(set(pin)) == 1:
        return "same_digits"
    steps = {int(b) - int(a) for a, b in itertools.pairwise(pin)}
    if steps in ({1}, {-1}):
        return "sequence"
    born = birth_date(holder.id_number)
    yy, mm, dd = f"{born.year % 100:02d}", f"{born.month:02d}", f"{born.day:02d}"
    if pin in (yy + mm + dd, mm + dd + yy, dd + mm + yy, f"{born.year}{mm}"):
        return "birth_date"
    if pin_matches(key, holder.id_number, pin, holder.pin_hash):
        return "same_as_old"
    return None


@action
def confirm_new_pin(ctx: CallContext, arg: str | None, data: Data, event: Event) -> str:
    """Save the new PIN when it is keyed the same twice (kept as a keyed hash only)."""
    holder = _verified_holder(ctx, data)
    wanted, data.new_pin_hash = data.new_pin_hash, None
    if wanted is None or not pin_matches(ctx.settings.pin_key, holder.id_number, event.value, wanted):
        ctx.facts["pin_again"] = "different"
        return "mismatch"
    ctx.facts["pin_again"] = "same"
    services.change_pin(ctx.uow.runs_on, holder, wanted, now=ctx.now, actor=ctx.actor())
    completed(data, Service.PIN)
    return "ok"
