"""Turn a recorded call into a scenario whose expectations are what that call actually heard.

The hotline records every webhook (keys for the ID number and PIN already replaced by
<id_number> and <pin>, phone numbers masked) with the states it passed through and the card
facts it read. The scenario re-keys those entries for a fixture cardholder, chosen by what the
flow did with them (a valid ID, a right or wrong PIN), so no real identity reaches the file.
"""
from __future__ import annotations

from datetime import tzinfo
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.prompts import Catalogue
from ivr.sim.phone import heard_in_twiml
from models.calls import CallEvent, CallState

FIXTURE_ID = "370299200001010028"  # address code 370299 is no district: never a real person
FIXTURE_PIN = "864209"
WRONG_PIN = "000000"
FIXTURE_CALLER = "+8613900000000"


class NoSuchCall(LookupError):
    """No recorded call has that CallSid."""


def after(path: list[str], state: str) -> str | None:
    """Return the state the path went to right after the given one."""
    for a, b in zip(path, path[1:]):
        if a == state:
            return b
    return None


def rekey(ev: CallEvent) -> str:
    """Return fixture keys that make the flow take the path the recorded keys took."""
    digits = ev.params.get("Digits", "")
    path = ev.path or []
    if digits == "<id_number>":
        return FIXTURE_ID + "#" if after(path, "auth_id_check") == "auth_pin" else "1#"
    if digits == "<pin>":
        kind = (ev.facts or {}).get("pin")
        if kind == "bad_format":
            return "1#"
        return FIXTURE_PIN + "#" if kind == "right" else WRONG_PIN + "#"
    return digits


def export(session: Session, call_sid: str, catalogue: Catalogue, max_failures: int, tz: tzinfo) -> dict[str, Any]:
    """Build the scenario of one recorded call."""
    call = session.get(CallState, call_sid)
    if call is None:
        raise NoSuchCall(call_sid)
    events = list(session.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid).order_by(CallEvent.id)))
    steps: list[dict[str, Any]] = []
    first_card = last_card = None
    pin_failures = 0
    locked = False
    no_card = False
    for ev in events:
        facts = ev.facts or {}
        if "card" in facts and facts["card"] is None and first_card is None:
            no_card = True
        first_card = first_card or facts.get("card")
        last_card = facts.get("card_after") or last_card
        outcome = after(ev.path or [], "auth_pin_check")
        if outcome in ("auth_id", "auth_failed", "auth_locked"):
            pin_failures += 1
            locked = locked or outcome == "auth_locked"
        steps.append(step_of(ev, catalogue))
    at = call.started_at.astimezone(tz).isoformat()
    scenario: dict[str, Any] = {
        "name": f"replay of recorded call {call_sid}",
        "caller": FIXTURE_CALLER,
        "dialled": call.to_number or "+8653212333",
        "at": at,
        "cardholders": [holder_fixture(first_card, prior_failures(locked, pin_failures, max_failures), no_card)],
        "steps": steps,
    }
    end: dict[str, Any] = {"transferred": any(ev.kind == "dial" for ev in events) or bool(call.handoff)}
    final = last_card or first_card
    if final:
        end["cards"] = {card_number(final): final["status"]}
    scenario["expect"] = end
    return scenario


def prior_failures(locked: bool, failures_in_call: int, max_failures: int) -> int:
    """Return the wrong PINs before the call that make the replay lock where the call did."""
    if not locked:
        return 0
    return max(max_failures - failures_in_call, 0) if failures_in_call else max_failures


def step_of(ev: CallEvent, catalogue: Catalogue) -> dict[str, Any]:
    """Return the scenario step for one recorded webhook, expecting what it answered."""
    if ev.kind == "incoming":
        step: dict[str, Any] = {"dial": None}
    elif ev.kind == "dial":
        step = {"agent": ev.params.get("DialCallStatus", "completed")}
    elif ev.kind == "status":
        return {"hangup": None}
    elif ev.params.get("Digits"):
        step = {"press": rekey(ev)}
    else:
        step = {"silence": None}
    heard = heard_in_twiml(ev.twiml, catalogue) if ev.twiml else []
    step["expect"] = {"prompts": [h.prompt for h in heard], "text": [h.text for h in heard]}
    return step


def card_number(card: dict[str, Any]) -> str:
    """Return the fixture card number: made up, but ending in the real card's last four digits."""
    return "RP00000000" + card["last4"]


def holder_fixture(card: dict[str, Any] | None, failures: int, no_card: bool = False) -> dict[str, Any]:
    """Return the fixture cardholder standing in for the caller."""
    holder: dict[str, Any] = {"id_number": FIXTURE_ID, "pin": FIXTURE_PIN, "name": "回放", "pin_failures": failures}
    if card:
        fixture = {"card_number": card_number(card), "status": card["status"], "applied_on": card.get("applied_on"),
                   "history": card.get("history") or None}
        if card.get("loss_expires_at"):
            fixture["loss_expires_at"] = card["loss_expires_at"]
            fixture["status_before_loss"] = card.get("status_before_loss")
        holder["cards"] = [{k: v for k, v in fixture.items() if v is not None}]
    else:  # the call read no card: the holder had none, or the call never got that far
        holder["cards"] = [] if no_card else [{"card_number": "RP000000000000", "status": "normal"}]
    return holder


def to_yaml(scenario: dict[str, Any]) -> str:
    """Write a scenario as readable YAML (Chinese left as it is)."""
    return yaml.safe_dump(scenario, allow_unicode=True, sort_keys=False, width=120)
