"""Turn a recorded call into a scenario whose expectations are what that call actually heard.

The hotline records every webhook (keys for the ID number, PIN and a call-back number already
replaced by <id_number>, <pin> and <phone>, every number spoken or keyed elsewhere masked,
phone numbers masked) with the states it passed through and the card facts it read; the export
masks keys and speech once more (`ivr.callflow.redact`), for calls recorded before that. The
scenario re-keys those entries for a fixture cardholder, chosen by what the flow did with them
(a valid ID, a right, wrong or malformed PIN, the initial PIN), so no real identity reaches the
file. A call the hotline did not know from its first webhook (it started it again, and kept its
keys only as <digits>) cannot be replayed: export says so (NotReplayable).
"""
from __future__ import annotations

import itertools
from datetime import tzinfo
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.callflow.heard import heard_in_twiml
from ivr.callflow.redact import mask_numbers
from ivr.voice.prompts import Catalogue
from models.calls import CallEvent, CallState

FIXTURE_ID = "370299200001010028"  # address code 370299 is no district: never a real person
FIXTURE_PIN = "864209"
WRONG_PIN = "000000"
FIXTURE_CALLER = "+8613900000000"
FIXTURE_CALLBACK = "13800138000"  # a call-back number keyed by the caller: a made-up mobile


class NoSuchCall(LookupError):
    """No recorded call has that CallSid."""


class NotReplayable(ValueError):
    """A recorded call that no scenario can replay, and why."""


def after(path: list[str], state: str) -> str | None:
    """Return the state the path went to right after the given one."""
    for a, b in itertools.pairwise(path):
        if a == state:
            return b
    return None


# A check of keyed (or spoken) entry, and where it goes when the entry was valid.
VALID_AFTER = {
    "auth_id_check": ("auth_pin", "auth_id_heard"),
    "callback_number_check": ("callback_confirm",),
    "mobile_check": ("mobile_confirm",),
}


def checked(path: list[str]) -> bool:
    """Tell whether the path went through the check of an ID number or phone number entered."""
    return any(after(path, check) is not None for check in VALID_AFTER)


def valid_entry(path: list[str]) -> bool:
    """Tell whether the entry that took this path was valid, by where its check went."""
    for check, ok in VALID_AFTER.items():
        went = after(path, check)
        if went is not None:
            return went in ok
    return False


def _unkeyable(ev: CallEvent, value: str) -> NotReplayable:
    return NotReplayable(f"the input of turn {ev.turn} (in state {ev.state_before or 'none'}) was recorded only "
                         f"as {value}: no replay can enter the same kind of thing")


NEW_PIN = "864213"  # a new PIN none of the weak-PIN rules refuses for the fixture holder
OTHER_PIN = "975310"  # a second entry that differs from NEW_PIN
WEAK_PINS = {"bad_format": "1", "same_digits": "777777", "sequence": "234567", "birth_date": "000101"}


def rekey(ev: CallEvent, pin: str = FIXTURE_PIN, initial: str = "123456") -> str:
    """Return fixture keys that make the flow take the path the recorded keys took."""
    digits: str = ev.params.get("Digits", "")
    path = ev.path or []
    facts = ev.facts or {}
    if digits == "<pin>" and "new_pin" in facts:  # the new PIN of a PIN change
        weak = {**WEAK_PINS, "initial": initial, "same_as_old": pin}
        return (NEW_PIN if facts["new_pin"] == "ok" else weak.get(facts["new_pin"], "1")) + "#"
    if digits == "<pin>" and "pin_again" in facts:  # the new PIN keyed a second time
        return (NEW_PIN if facts["pin_again"] == "same" else OTHER_PIN) + "#"
    if digits == "<id_number>" and checked(path):
        return FIXTURE_ID + "#" if valid_entry(path) else "1#"
    if digits == "<phone>" and checked(path):
        return FIXTURE_CALLBACK + "#" if valid_entry(path) else "1#"
    if digits == "<pin>":
        kind = (ev.facts or {}).get("pin")
        if kind == "bad_format":
            return "1#"
        if kind == "initial":  # the initial PIN, whoever keyed it: the fixture holder is on it too
            return initial + "#"
        if kind in ("right", "wrong_or_locked"):
            return pin + "#" if kind == "right" else WRONG_PIN + "#"
        raise _unkeyable(ev, digits)
    masked = mask_numbers(digits)  # a call recorded before keys were masked in every state
    if digits.startswith("<") or masked != digits:
        raise _unkeyable(ev, masked)
    return digits


def respeak(ev: CallEvent) -> str:
    """Return fixture words that make the flow take the path the recorded speech took.

    Speech at a menu is replayed as it was recorded, every number in it masked: a placeholder is
    never a menu choice, just as the number it stands for was not.
    """
    said: str = ev.params.get("SpeechResult", "")
    path = ev.path or []
    if said == "<id_number>" and checked(path):
        return FIXTURE_ID if valid_entry(path) else "一"
    if said == "<phone>" and checked(path):
        return FIXTURE_CALLBACK if valid_entry(path) else "一"
    return mask_numbers(said)  # also for a call recorded before speech was masked in every state


def export(session: Session, call_sid: str, catalogue: Catalogue, max_failures: int, tz: tzinfo,
           initial_pin: str = "123456") -> dict[str, Any]:
    """Build the scenario of one recorded call."""
    call = session.get(CallState, call_sid)
    if call is None:
        raise NoSuchCall(call_sid)
    # The agent's whisper is the agent leg's own request, not a step of the caller: the replay's
    # agent step fetches it again. From a queue it is the agent taking the caller (agent_takes);
    # the queue's wait documents are fetched again by the replay itself (a key pressed while
    # waiting is a step, with what followed it: the <Leave> and the <Enqueue> action's answer).
    recorded = list(session.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid).order_by(CallEvent.id)))
    events = [ev for ev in recorded
              if (ev.kind != "whisper" or from_queue(ev)) and (ev.kind != "queue_wait" or ev.params.get("Digits"))
              and not (ev.kind == "queue_result" and ev.params.get("QueueResult") == "hangup")]
    if not events or events[0].kind != "incoming":
        first = f"a {events[0].kind} webhook" if events else "nothing"
        raise NotReplayable(
            f"call {call_sid} cannot be replayed: its first recorded webhook is {first}, not the incoming call "
            "(the hotline did not know the call and started it again, so the keys it was sent were not kept)")
    steps: list[dict[str, Any]] = []
    first_card = last_card = None
    pin_failures = 0
    locked = False
    no_card = False
    # A caller stopped for still having the initial PIN keyed that PIN: the fixture has it too.
    pin = initial_pin if any("auth_initial" in (ev.path or []) for ev in events) else FIXTURE_PIN
    queued = any(ev.kind in ("queue_wait", "queue_result") or from_queue(ev) for ev in events)
    for i, ev in enumerate(events):
        if ev.kind == "queue_result" and i > 0 and events[i - 1].kind == "queue_wait":
            continue  # the <Leave> after a key pressed while waiting: that step's answer (below)
        facts = ev.facts or {}
        if "card" in facts and facts["card"] is None and first_card is None:
            no_card = True
        first_card = first_card or facts.get("card")
        last_card = facts.get("card_after") or last_card
        outcome = after(ev.path or [], "auth_pin_check")
        if outcome in ("auth_id", "auth_failed", "auth_locked"):
            pin_failures += 1
            locked = locked or outcome == "auth_locked"
        left = events[i + 1] if ev.kind == "queue_wait" and i + 1 < len(events) else None
        step = step_of(left if left is not None and left.kind == "queue_result" else ev, catalogue, pin,
                       initial_pin, keys=ev.params.get("Digits") if ev.kind == "queue_wait" else None)
        if "<Enqueue" in (ev.twiml or ""):  # put in the queue: the first wait document is heard at once
            wait = next((w for w in recorded if w.kind == "queue_wait" and w.id > ev.id), None)
            if wait is not None and "expect" in step:  # the place and the estimate depend on other callers
                step["expect"] = {"prompts_include": step["expect"]["prompts"] + [
                    h.prompt for h in heard_in_twiml(wait.twiml, catalogue)
                    if h.prompt not in ("queue.position", "queue.next_in_line", "queue.estimate")]}
        steps.append(step)
    at = call.started_at.astimezone(tz).isoformat()
    scenario: dict[str, Any] = {
        "name": f"replay of recorded call {call_sid}",
        "caller": fixture_caller(events[0].params.get("From", "")),
        "dialled": call.to_number or "+8653212333",
        "at": at,
        **({"agent_leg": "queue"} if queued else {}),
        "cardholders": [holder_fixture(first_card, prior_failures(locked, pin_failures, max_failures), no_card, pin)],
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


def fixture_caller(masked: str) -> str:
    """Return the fixture caller's number, ending like the recorded one (masked: +86139****5678)
    so that what the call read back of it (尾号5678) is heard the same on replay."""
    last4 = masked[-4:]
    return FIXTURE_CALLER[:-4] + last4 if len(masked) >= 8 and last4.isdigit() else FIXTURE_CALLER


def from_queue(ev: CallEvent) -> bool:
    """Tell whether a whisper was fetched for a caller an agent took from a queue."""
    return ev.kind == "whisper" and bool(ev.params.get("DequeingCallSid") or ev.params.get("QueueSid"))


def step_of(ev: CallEvent, catalogue: Catalogue, pin: str = FIXTURE_PIN, initial: str = "123456",
            keys: str | None = None) -> dict[str, Any]:
    """Return the scenario step for one recorded webhook, expecting what it answered (`keys`: the
    key pressed while waiting in a queue, answered by `ev`, the <Enqueue> action that followed)."""
    if keys:
        step: dict[str, Any] = {"press": keys}
    elif ev.kind == "incoming":
        step = {"dial": None}
    elif ev.kind == "dial":
        step = {"agent": ev.params.get("DialCallStatus") or "completed"}
    elif from_queue(ev):
        return {"agent_takes": None, "expect": {"prompts": ["queue.connecting"]}}
    elif ev.kind == "queue_result":
        step = {"queue": ev.params.get("QueueResult") or "bridged"}
    elif ev.kind == "queue_wait":
        step = {"press": ev.params.get("Digits") or "1"}
    elif ev.kind == "status":
        return {"hangup": None}
    elif ev.params.get("RecordingUrl"):
        seconds = ev.params.get("RecordingDuration", "")
        step = {"record": max(int(seconds), 1) if seconds.isdigit() else None}
    elif ev.params.get("Digits"):
        step = {"press": rekey(ev, pin, initial)}
    elif ev.params.get("SpeechResult"):
        step = {"speak": respeak(ev)}
        confidence = ev.params.get("Confidence", "")
        try:
            step["confidence"] = min(max(round(float(confidence), 2), 0.0), 1.0)
        except ValueError:
            pass  # none recorded: the scenario's default
    else:
        step = {"silence": None}
    heard = heard_in_twiml(ev.twiml, catalogue) if ev.twiml else []
    step["expect"] = {"prompts": [h.prompt for h in heard]}
    if not any(h.prompt and catalogue.is_secret(h.prompt) for h in heard):
        # A number read back was kept hidden in the record: the replay hears the fixture's in full.
        step["expect"]["text"] = [h.text for h in heard]
    return step


def card_number(card: dict[str, Any]) -> str:
    """Return the fixture card number: made up, but ending in the real card's last four digits."""
    last4: str = card["last4"]
    return "RP00000000" + last4


def holder_fixture(card: dict[str, Any] | None, failures: int, no_card: bool = False,
                   pin: str = FIXTURE_PIN) -> dict[str, Any]:
    """Return the fixture cardholder standing in for the caller."""
    holder: dict[str, Any] = {"id_number": FIXTURE_ID, "pin": pin, "name": "回放", "pin_failures": failures}
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
