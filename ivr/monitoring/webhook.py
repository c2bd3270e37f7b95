"""The webhook being answered, kept in a context variable while it runs.

`ivr.voice.webhooks` begins it (its kind) and finishes it (counted in the metrics, one INFO line
logged); `ivr.voice.turns.TurnService` notes what it learns on the way (the call, the turn, the
state) and how it went (failed, a database error met). The logs read it for every line logged
meanwhile (`ivr.monitoring.logs`). Outside a webhook (the CLI, a test calling the service
directly) there is none, and every function here does nothing.
"""
from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from ivr.monitoring.metrics import FAILED, OK, REFUSED, Metrics

log = logging.getLogger("ivr.webhook")


@dataclass(slots=True)
class Webhook:
    """One webhook request: what it is, which call and turn it answers, how it went."""

    kind: str  # incoming, step, dial, whisper, status
    started: float = field(default_factory=lambda: time.perf_counter())  # looked up each time (freezegun)
    call_sid: str | None = None
    turn: int | None = None
    state: str | None = None
    outcome: str = OK  # ok, refused (bad signature, 403), failed (the caller got the failure path)
    database_error: bool = False  # met a database error (a dropped connection run again included)

    def elapsed_ms(self) -> float:
        """Return the milliseconds since the webhook began."""
        return (time.perf_counter() - self.started) * 1000


_current: ContextVar[Webhook | None] = ContextVar("ivr_webhook", default=None)


def begin(kind: str) -> Webhook:
    """Start accounting for a webhook of this kind."""
    hook = Webhook(kind)
    _current.set(hook)
    return hook


def current() -> Webhook | None:
    """Return the webhook being answered, or None outside one."""
    return _current.get()


def annotate(*, call_sid: str | None = None, turn: int | None = None, state: str | None = None) -> None:
    """Note the call, the turn and the state the webhook has reached (for the logs)."""
    hook = _current.get()
    if hook is None:
        return
    if call_sid is not None:
        hook.call_sid = call_sid
    if turn is not None:
        hook.turn = turn
    if state is not None:
        hook.state = state


def refused() -> None:
    """The request was refused (its signature): 403."""
    hook = _current.get()
    if hook is not None:
        hook.outcome = REFUSED


def failed(error: BaseException | None = None) -> None:
    """The webhook's unit of work failed: the caller gets the failure path (or the call stays open)."""
    hook = _current.get()
    if hook is not None:
        hook.outcome = FAILED
        if isinstance(error, DBAPIError):
            hook.database_error = True


def database_error(error: BaseException) -> None:
    """Note a database error the webhook met and went on from (a dropped connection, the sweep)."""
    hook = _current.get()
    if hook is not None and isinstance(error, DBAPIError):
        hook.database_error = True


def finish(metrics: Metrics) -> None:
    """Count the webhook and log its one INFO line (kind, outcome, duration); then forget it.

    Never raises: a metrics or logging failure is logged and the webhook's answer goes out.
    """
    hook = _current.get()
    if hook is None:
        return
    try:
        seconds = time.perf_counter() - hook.started
        metrics.webhook(hook.kind, hook.outcome, seconds, database_error=hook.database_error)
        log.info("%s webhook %s in %.1f ms", hook.kind, hook.outcome, seconds * 1000,
                 extra={"kind": hook.kind, "outcome": hook.outcome, "duration_ms": round(seconds * 1000, 3)})
    except Exception:
        log.exception("could not account for a %s webhook", hook.kind)
    finally:
        _current.set(None)


def end() -> None:
    """Forget the webhook (after the request, whatever happened)."""
    _current.set(None)
