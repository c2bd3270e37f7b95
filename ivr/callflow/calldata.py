"""What a call carries from one webhook to the next, declared: every field, its type, how long it lives.

The call's row keeps this as JSON (`calls.data`). Each field is marked with how long it may live,
and whatever stores, records, exports or shows a call reads the marks, never a list of names:

- `CALL`: saved with the call turn after turn, and kept in its record when it ends (counters,
  the services chosen, keyed hashes and last digits, the values prompts read back);
- `SECRET`: saved turn after turn only while the call lasts (a number keyed and not yet
  confirmed); never in a recorded webhook or an export, and dropped when the call ends;
- `TURN`: this answer only (a number read back, the machine's own flags); never saved.

No field ever holds an ID number or a PIN as keyed: only the keyed hash and the last four digits.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Keep(Enum):
    """How long a field of the call's data lives."""

    CALL = "call"
    SECRET = "secret"  # noqa: S105 (the name of a mark, not a secret)
    TURN = "turn"


def _kept(default: Any = None, *, keep: Keep = Keep.CALL) -> Any:
    """Declare a field with its default and its mark (a list default is a fresh list per call)."""
    if isinstance(default, list):
        return field(default_factory=list, metadata={"keep": keep})
    return field(default=default, metadata={"keep": keep})


@dataclass
class CallData:
    """The state of one call beyond its position in the flow."""

    # -- facts of this moment, set by the turn service on every webhook
    hotline: str = _kept("")  # which hotline was dialled (12333, 12345)
    staffed: bool = _kept(True)  # whether agents work now
    hours_text: str = _kept("")  # when they work, as the prompts say it
    # -- elder mode (适老化, config.yaml elder): why the caller is treated as an elder, or None:
    # "mobile" (calling from the registered mobile of exactly one cardholder that old, decided at the
    # call's first webhook) or "id" (the verified ID number's birth date, which decides from then on)
    elder: str | None = _kept()
    # -- the machine's own bookkeeping
    misses: int = _kept(0)  # silences or wrong keys in a row at this state
    entry_said: list[str] = _kept([])  # what the caller heard on entering the state (9 says it again)
    transfer_reason: str | None = _kept()  # why the caller is being put through (vocabulary.TransferReason)
    missed: bool = _kept(False, keep=Keep.TURN)  # this step was a miss: keep counting
    reprompt: bool = _kept(False, keep=Keep.TURN)  # this step says the state again: keep what it first said
    # -- services (vocabulary.Service)
    pending: str | None = _kept()  # the service chosen, waiting for verification
    services: list[str] = _kept([])  # every service chosen, in order
    completed: list[str] = _kept([])  # every service completed
    agent: str | None = _kept()  # the agent leg that answered (for the rating)
    # -- the line to an agent: the caller's place, and the queue (config.yaml agent.leg: queue)
    queued_at: str | None = _kept()  # when first put through or queued (ISO, UTC): a call-back keeps this place
    queue: str | None = _kept()  # the Twilio queue the caller was put in (hotline-12333)
    queue_result: str | None = _kept()  # how the wait ended (Twilio's QueueResult); None while waiting
    queue_seconds: int | None = _kept()  # how long the wait was (Twilio's QueueTime)
    queue_taken_at: str | None = _kept()  # when an agent's <Dial><Queue> took the caller (ISO, UTC)
    queue_left: bool = _kept(False)  # the caller pressed 1 while waiting: a call-back that keeps the place
    # -- verification
    id_key: str | None = _kept()  # keyed hash of the ID number entered
    id_last4: str | None = _kept()
    say_id: str | None = _kept(keep=Keep.TURN)  # a spoken ID number read back once
    id_errors: int = _kept(0)
    holder_id: int | None = _kept()  # set once verified
    auth_failures: int = _kept(0)  # wrong PINs in this call
    pin_format_errors: int = _kept(0)
    locked: bool = _kept(False)
    initial_pin: bool = _kept(False)
    # -- PIN change
    weak_reason: str | None = _kept()
    weak_pins: int = _kept(0)
    new_pin_hash: str | None = _kept(keep=Keep.SECRET)  # keyed once, waiting to be keyed again
    # -- phone numbers keyed for a change or a call-back, until confirmed
    new_mobile: str | None = _kept(keep=Keep.SECRET)
    callback_number: str | None = _kept(keep=Keep.SECRET)
    number_errors: int = _kept(0)
    from_last4: str | None = _kept()
    # -- the card acted on, as the prompts read it back
    card_id: int | None = _kept()
    card_last4: str | None = _kept()
    card_status: str | None = _kept()
    status_detail: str | None = _kept()
    loss_expires_on: str | None = _kept()
    loss_at_expiry: str | None = _kept()
    expected_on: str | None = _kept()
    production_stage: str | None = _kept()
    history: list[dict[str, Any]] = _kept([])  # the changes read now (a page)
    history_offset: int = _kept(0)
    # -- the medical insurance account, a page at a time
    balance: str | None = _kept()
    records: list[dict[str, Any]] = _kept([])
    account_offset: int = _kept(0)
    # -- guides
    guide_topic: str | None = _kept()
    guide_part: str | None = _kept()
    guide_section: str | None = _kept()  # <topic>.<part>: the prompt guide.<topic>.<part> read now

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> CallData:
        """Return the data saved with a call (fields a newer or older release does not know are dropped)."""
        if not row:
            return cls()
        return cls(**{k: v for k, v in row.items() if k in SAVED})

    def to_row(self) -> dict[str, Any]:
        """Return what is saved with the call between webhooks: CALL and SECRET fields that are set."""
        values = self.__dict__
        return {name: values[name] for name, empty in SAVED.items() if values[name] != empty}

    def to_record(self) -> dict[str, Any]:
        """Return what the call's record keeps when it ends: CALL fields only."""
        values = self.__dict__
        return {name: values[name] for name, empty in SAVED.items() if name in KEPT and values[name] != empty}

    def values(self) -> dict[str, Any]:
        """Return every field by name: what prompt placeholders read ("{card_last4:digits}")."""
        return dict(self.__dict__)


def _default(f: dataclasses.Field[Any]) -> Any:
    return [] if f.default_factory is not dataclasses.MISSING else f.default


FIELDS: dict[str, Keep] = {f.name: f.metadata["keep"] for f in dataclasses.fields(CallData)}
# The saved fields with the value that means "not set" (not saved).
SAVED: dict[str, Any] = {f.name: _default(f) for f in dataclasses.fields(CallData) if FIELDS[f.name] is not Keep.TURN}
KEPT = frozenset(name for name, keep in FIELDS.items() if keep is Keep.CALL)
SECRETS = frozenset(name for name, keep in FIELDS.items() if keep is Keep.SECRET)
