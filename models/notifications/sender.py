"""The SMS worker: sends what the outbox holds through Twilio, never a message twice.

A card change and the text telling the holder about it are one unit of work: `enqueue` adds an
`OutboxMessage` to the caller's session, so the message exists exactly when the change commits (a
rolled-back change leaves nothing to send). `deliver` sends what is due through Twilio's Messages
API, one message per short claim transaction, and never sends a message twice:

* pending -> sending: a worker claims one due message (SELECT ... FOR UPDATE SKIP LOCKED on
  PostgreSQL; SQLite's BEGIN IMMEDIATE serialises the claim) and commits it as `sending` with a
  claim token and a lease before it talks to Twilio. No other worker, on any host, picks up a
  `sending` message until its lease runs out.
* sending -> sent: Twilio accepted it; its message SID is stored (unique) under the same claim token.
* sending -> pending (retry with exponential backoff) only when Twilio certainly did not create the
  message (HTTP 429, no connection made); -> failed at once for any other 4xx about the message
  (invalid or unsubscribed number), and after `max_attempts`. A refusal of the account or sender
  (401, 403, a bad From) puts it back untouched and stops the worker.
* An answer that leaves the outcome unknown (timeout, 5xx, a dropped connection, a worker that died
  after sending, a commit that failed) keeps the message `sending`. When its check time comes, a
  worker asks Twilio's message list for a message to that number with that text created since the
  message was queued and not already recorded: found, it is marked sent with that SID; not found, it
  is sent again. See README "Notifications (SMS)" for the window that remains.

Full mobile numbers are needed to send, so they are stored; every log line and stored error masks
them. No Flask here, and nothing of ivr/.
"""
from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.clock import utcnow
from models.identity import mask_phone
from models.notifications.outbox import FAILED, PENDING, SENDING, SENT, STATUSES, OutboxMessage

log = logging.getLogger(__name__)

# Twilio errors that are the account's or the sender's, not the message's: invalid From (21212),
# From not an SMS-capable number of the account (21606, 21659, 21660), the destination region not
# enabled (21408). They stop the worker; the messages wait, their attempts not spent.
ACCOUNT_ERRORS = frozenset({21212, 21408, 21606, 21659, 21660})
# A provider message counts as ours when created no earlier than this before the row was queued.
CLOCK_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class SmsPolicy:
    """How the worker sends (config.yaml `sms`; the sender may come from the environment)."""

    sender: str | None = None  # From: an E.164 number or an alphanumeric sender ID
    messaging_service_sid: str | None = None  # MG…: used instead of `sender` when set
    max_attempts: int = 5  # sends tried before a message is failed
    base_delay: float = 30.0  # seconds before the first retry, doubled for each one after
    max_delay: float = 3600.0
    timeout: float = 30.0  # HTTP timeout of one request to Twilio
    lease: float = 600.0  # seconds a claimed message counts as in flight before its outcome is checked
    poll: float = 5.0  # seconds the loop sleeps when nothing is due
    batch: int = 50  # messages handled per round

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay <= 0 or self.timeout <= 0 or self.batch < 1:
            raise ValueError("sms: max_attempts and batch must be at least 1, base_delay and timeout positive")
        if self.lease < 4 * self.timeout:
            # The lease is what keeps a second worker from checking (and resending) a message whose
            # first send may still be on the wire: it must outlast any request by a wide margin.
            raise ValueError("sms.lease must be at least four times sms.timeout")

    def delay(self, attempts: int) -> timedelta:
        """Return the wait after the given number of attempts: base, 2×base, 4×base …, capped."""
        return timedelta(seconds=min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0)))

    @property
    def can_send_from(self) -> bool:
        """Tell whether a sender (number or messaging service) is configured."""
        return bool(self.sender or self.messaging_service_sid)


@dataclass(frozen=True)
class Claimed:
    """What a worker holds of a claimed message, outside any transaction."""

    id: int
    to: str
    body: str
    kind: str
    attempts: int
    created_at: datetime
    claim: str
    claimed_at: datetime
    check: bool  # True: a send's outcome is unknown; ask Twilio before anything else


@dataclass
class Round:
    """What one round of the worker did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    unsure: int = 0  # outcome unknown: checked with Twilio later
    found: int = 0  # an unsure send Twilio turned out to have accepted

    @property
    def handled(self) -> int:
        return self.sent + self.retrying + self.failed + self.unsure

    def summary(self) -> str:
        return (f"{self.sent} sent, {self.retrying} to retry, {self.failed} failed, "
                f"{self.unsure} awaiting a check with Twilio")


class SendingRefused(RuntimeError):
    """Twilio refuses the account or the sender (credentials, From, permissions): stop sending."""


class Abandon(Exception):
    """The claim went stale before the send (the worker was paused): leave it to the check."""


def scrub(text: str, number: str | None = None) -> str:
    """Mask phone numbers in a provider's error text (Twilio quotes the To number in some)."""
    if number:
        for form in (number, number.lstrip("+"), number[3:] if number.startswith("+86") else None):
            if form:
                text = text.replace(form, mask_phone(number))
    return re.sub(r"\+?\d{7,}", lambda m: mask_phone(m.group()), text)[:500]


def due_count(session: Session) -> dict[str, int]:
    """Return how many messages the outbox holds in each status."""
    rows = session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
    counts = {s: 0 for s in STATUSES}
    counts.update({status: n for status, n in rows})
    return counts


def claim_next(sessions: sessionmaker[Session], *, policy: SmsPolicy, worker: str) -> Claimed | None:
    """Claim one due message in a transaction of its own, or return None when none is due."""
    now = utcnow()
    with sessions() as s, s.begin():
        q = (select(OutboxMessage)
             .where(OutboxMessage.status.in_((PENDING, SENDING)), OutboxMessage.next_attempt_at <= now)
             .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
             .limit(1).with_for_update(skip_locked=True))
        msg = s.scalars(q).first()
        if msg is None:
            return None
        check = msg.status == SENDING
        msg.claim = f"{worker}:{uuid.uuid4().hex[:12]}"
        if not check:
            msg.status = SENDING
            msg.attempts += 1
            msg.claimed_at = now
        msg.next_attempt_at = now + timedelta(seconds=policy.lease)
        return Claimed(msg.id, msg.to, msg.body, msg.kind, msg.attempts, msg.created_at, msg.claim,
                       msg.claimed_at or now, check)


def _finish(sessions: sessionmaker[Session], c: Claimed, **values: Any) -> bool:
    """Record an outcome, only while this worker's claim still holds the message."""
    try:
        with sessions() as s, s.begin():
            res = s.execute(update(OutboxMessage)
                            .where(OutboxMessage.id == c.id, OutboxMessage.claim == c.claim,
                                   OutboxMessage.status == SENDING)
                            .values(**values))
            return cast("CursorResult[Any]", res).rowcount == 1  # an UPDATE's result is a CursorResult
    except IntegrityError:
        # Another row already holds that provider SID (two identical texts to one number, checked
        # at once): record nothing; this message stays `sending` and is checked again.
        log.warning("sms %d: provider SID already recorded for another message; checked again later", c.id)
        return False


def _classify(err: BaseException) -> tuple[str, str]:
    """Return (retry | unsure | fatal | config, a description) for a failed send."""
    import requests
    from urllib3.exceptions import NewConnectionError

    status = getattr(err, "status", None)
    if isinstance(status, int):  # TwilioRestException, TwilioServiceException: Twilio answered
        code = getattr(err, "code", None)
        text = getattr(err, "msg", None) or getattr(err, "detail", None) or getattr(err, "title", "") or ""
        desc = f"HTTP {status}" + (f" error {code}" if code else "") + (f": {text}" if text else "")
        if status in (401, 403) or code in ACCOUNT_ERRORS:
            return "config", desc  # our account or sender is wrong: no message's fault
        if status == 429:
            return "retry", desc  # throttled: nothing was created
        if status >= 500:
            return "unsure", desc  # a gateway may fail after the message was created
        return "fatal", desc  # invalid or unsubscribed number …: retrying cannot help
    desc = f"{type(err).__name__}: {err}"
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "retry", desc  # never connected
    if isinstance(err, requests.exceptions.ConnectionError):
        reason = err.args[0] if err.args else None
        if isinstance(getattr(reason, "reason", reason), NewConnectionError):
            return "retry", desc  # refused or unresolved: the request never left
    return "unsure", desc  # read timeouts, resets, anything else: it may have been accepted


def _create(client: Any, policy: SmsPolicy, c: Claimed) -> str:
    sender = ({"messaging_service_sid": policy.messaging_service_sid} if policy.messaging_service_sid
              else {"from_": policy.sender})
    sid: str = client.messages.create(to=c.to, body=c.body, **sender).sid  # the client is twilio's: untyped
    return sid


def _lookup(client: Any, c: Claimed) -> list[str]:
    """Return the SIDs of messages Twilio holds that may be this one (newest first)."""
    since = c.created_at - CLOCK_SLACK
    found = []
    for m in client.messages.list(to=c.to, limit=50):
        created = m.date_created
        # `in`: a trial account prefixes the text Twilio stores.
        if (m.body and c.body in m.body and (created is None or created >= since)
                and str(m.direction or "").startswith("outbound")):
            found.append(m.sid)
    return found


def _send_one(sessions: sessionmaker[Session], client: Any, policy: SmsPolicy, c: Claimed, r: Round) -> None:
    who = f"sms {c.id} ({c.kind}) to {mask_phone(c.to)}"
    if c.check:
        try:
            candidates = _lookup(client, c)
        except Exception as err:  # noqa: BLE001 — cannot tell: keep it unsent, ask again later
            desc = scrub(_classify(err)[1], c.to)
            _finish(sessions, c, next_attempt_at=utcnow() + policy.delay(c.attempts),
                    last_error=f"outcome unknown; Twilio look-up failed: {desc}"[:500])
            log.warning("%s: outcome of the last send unknown and Twilio's message list failed (%s); "
                        "will ask again, never resending before it answers", who, desc)
            r.unsure += 1
            return
        with sessions() as s:
            known = set(s.scalars(select(OutboxMessage.provider_sid)
                                  .where(OutboxMessage.provider_sid.in_(candidates)))) if candidates else set()
        mine = [sid for sid in candidates if sid not in known]
        if mine:
            if _finish(sessions, c, status=SENT, provider_sid=mine[-1], sent_at=utcnow(), claim=None,
                       last_error=None):
                log.info("%s: Twilio had accepted the last send as %s: marked sent, not resent", who, mine[-1])
                r.sent += 1
                r.found += 1
            return
        if c.attempts >= policy.max_attempts:
            _finish(sessions, c, status=FAILED, claim=None)
            log.error("%s: failed after %d attempts (the last never reached Twilio)", who, c.attempts)
            r.failed += 1
            return
        # Twilio never created it, and no request of ours is still on the wire: send it again,
        # under the same claim, counted as a new attempt.
        now = utcnow()
        if not _finish(sessions, c, attempts=c.attempts + 1, claimed_at=now,
                       next_attempt_at=now + timedelta(seconds=policy.lease)):
            return
        log.info("%s: the last send never reached Twilio; sending again", who)
        c = replace(c, attempts=c.attempts + 1, claimed_at=now, check=False)
    try:
        if (utcnow() - c.claimed_at).total_seconds() > policy.lease - 2 * policy.timeout:
            raise Abandon()
        sid = _create(client, policy, c)
    except Abandon:
        log.warning("%s: claim went stale before sending (worker paused?); left for the check", who)
        return
    except Exception as err:  # every failure is recorded; none may stop the round
        kind, desc = _classify(err)
        desc = scrub(desc, c.to)
        now = utcnow()
        if kind == "config":
            _finish(sessions, c, status=PENDING, attempts=c.attempts - 1, next_attempt_at=now, claim=None,
                    last_error=desc)
            log.error("%s: Twilio refuses our account or sender (%s); stopping, the outbox waits", who, desc)
            raise SendingRefused(desc) from err
        if kind == "fatal" or (kind == "retry" and c.attempts >= policy.max_attempts):
            _finish(sessions, c, status=FAILED, claim=None, last_error=desc)
            log.error("%s: failed after %d attempt(s): %s", who, c.attempts, desc)
            r.failed += 1
        elif kind == "retry":
            at = now + policy.delay(c.attempts)
            _finish(sessions, c, status=PENDING, next_attempt_at=at, claim=None, last_error=desc)
            log.warning("%s: attempt %d failed (%s); next at %s", who, c.attempts, desc, at.isoformat())
            r.retrying += 1
        else:
            # Ask no sooner than a request could still be taking effect at Twilio.
            at = now + max(policy.delay(c.attempts), timedelta(seconds=policy.timeout))
            _finish(sessions, c, next_attempt_at=at, last_error=f"outcome unknown: {desc}"[:500])
            log.warning("%s: attempt %d outcome unknown (%s); asking Twilio at %s before any resend",
                        who, c.attempts, desc, at.isoformat())
            r.unsure += 1
        return
    if _finish(sessions, c, status=SENT, provider_sid=sid, sent_at=utcnow(), claim=None, last_error=None):
        log.info("%s sent as %s", who, sid)
    else:  # the lease ran out and a check already recorded it (it found this very SID)
        log.warning("%s sent as %s, but its claim had lapsed; the check records it", who, sid)
    r.sent += 1


def deliver(sessions: sessionmaker[Session], client: Any, policy: SmsPolicy, *, worker: str, batch: int | None = None,
            stop: Callable[[], bool] = lambda: False) -> Round:
    """Handle up to `batch` due messages, one claim transaction each; return what happened."""
    r = Round()
    for _ in range(batch or policy.batch):
        if stop():
            break
        c = claim_next(sessions, policy=policy, worker=worker)
        if c is None:
            break
        _send_one(sessions, client, policy, c, r)
    return r
