"""The actions the call flow names: verification, card services, agents, guides — over the ledger.

Each action takes the call's context, its argument, the call's data and the event, may change
the ledger through `models.services` (the same code the agent console runs), and returns the
outcome that `ivr.callflow.flow` maps to a path. The call's data (`ivr.callflow.calldata.CallData`)
never receives an ID number or a PIN: only keyed hashes and last digits; what it may keep, and
for how long, its fields' marks say.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ivr.callflow.calldata import CallData
from ivr.callflow.machine import Event
from ivr.config import Settings
from models.cards import Actor
from models.hours import Hotline
from models.storage.unit import UnitOfWork
from models.vocabulary import Channel, Service

Data = CallData
ActionFn = Callable[["CallContext", str | None, CallData, Event], str]
ACTIONS: dict[str, ActionFn] = {}


@dataclass
class CallContext:
    """What an action may use: the unit of work, the settings, the call and the clock."""

    uow: UnitOfWork  # the webhook's transaction; `uow.session` is the ledger's session in it
    settings: Settings
    call_sid: str
    now: datetime
    hotline: Hotline
    caller: str = ""  # the From number, as Twilio sent it
    # What the ledger looked like, kept with the recorded webhook so QA can replay the call.
    facts: dict[str, Any] = field(default_factory=dict)

    def actor(self) -> Actor:
        """Return who changes the ledger from this call."""
        return Actor(Channel.IVR, call_sid=self.call_sid)

    def run(self, name: str, arg: str | None, data: CallData, event: Event) -> str:
        """Run a named action: the machine's hook."""
        return ACTIONS[name](self, arg, data, event)


def action(fn: ActionFn) -> ActionFn:
    """Register a function as an action of the flow, by its name."""
    ACTIONS[fn.__name__] = fn
    return fn


def bump(data: CallData, counter: str) -> int:
    """Add one to a counter of the call and return it."""
    value: int = getattr(data, counter) + 1
    setattr(data, counter, value)
    return value


def started(data: CallData, service: str) -> None:
    """Note a service the caller chose (verified or not), for the call's record and the reports."""
    if service not in data.services:
        data.services.append(service)


def completed(data: CallData, service: Service) -> None:
    """Note a service the caller completed, for the call's record."""
    if service not in data.completed:
        data.completed.append(service)


def verified(data: CallData) -> int:
    """Return the verified cardholder's id (the flow only runs a ledger action after verification)."""
    if data.holder_id is None:
        raise RuntimeError("a ledger action ran before the caller was verified")
    return data.holder_id


def take_number(ctx: CallContext, data: CallData, number: str | None, key: str) -> str:
    """Keep a checked phone number under `key` (a SECRET field) until confirmed; count the ones that were not."""
    if number is None:
        return "too_many" if bump(data, "number_errors") >= ctx.settings.id_attempts else "invalid"
    data.number_errors = 0
    setattr(data, key, number)  # until the caller confirms it (or the call ends: then dropped)
    return "ok"


# The modules below register their actions with @action when imported.
from ivr.callflow.actions import account, auth, cards, guides, handoff  # noqa: E402,F401
from ivr.callflow.actions.handoff import handoff_context  # noqa: E402,F401
