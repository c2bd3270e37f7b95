"""The SMS worker: `flask --app wsgi outbox send [--once] [--batch N]` and `outbox status`.

Sends the outbox's due messages through Twilio's Messages API (models.notifications.outbox.deliver). Safe to run
on every host at once: each message is claimed in a transaction of its own before it is sent.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from models.notifications import outbox as ob
from models.notifications import sender

log = logging.getLogger(__name__)
outbox = AppGroup("outbox", help="SMS notifications waiting in the outbox, and the worker that sends them.")


def make_http_client(timeout: float) -> Any:
    """Return the HTTP client the Twilio client sends with (tests put a fake in its place).

    Its logger stays quiet below WARNING: at INFO the twilio library logs query strings, and a
    message look-up's query holds the full mobile number.
    """
    from twilio.http.http_client import TwilioHttpClient

    quiet = logging.getLogger("ivr.commands.outbox.twilio_http")
    quiet.setLevel(logging.WARNING)
    return TwilioHttpClient(timeout=timeout, logger=quiet)


def _waiting(sessions: Any) -> int:
    with sessions() as s:
        counts = sender.due_count(s)
    return counts[ob.PENDING] + counts[ob.SENDING]


@outbox.command("send")
@click.option("--once", is_flag=True, help="handle one batch of due messages, then exit")
@click.option("--batch", type=click.IntRange(1), default=None, help="messages per round (default: sms.batch)")
def send_command(once: bool, batch: int | None) -> None:
    """Send due SMS through Twilio; without --once, keep polling until interrupted."""
    from twilio.rest import Client

    settings = current_app.extensions["settings"]
    sessions = current_app.extensions["sessions"]
    policy: sender.SmsPolicy = settings.sms
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    missing = [n for n, v in (("TWILIO_ACCOUNT_SID", sid), ("TWILIO_AUTH_TOKEN", token)) if not v]
    if not policy.can_send_from:
        missing.append("a sender (sms.from in config.yaml, TWILIO_SMS_FROM or TWILIO_MESSAGING_SERVICE_SID)")
    if missing:
        click.echo(f"not sending: {', '.join(missing)} not set. Nothing was sent; "
                   f"{_waiting(sessions)} message(s) wait in the outbox and will be sent once it is "
                   f"configured (README: Notifications (SMS)).", err=True)
        sys.exit(2)
    client = Client(sid, token, http_client=make_http_client(policy.timeout))
    worker = f"{socket.gethostname()}:{os.getpid()}"[:80]
    if once:
        try:
            r = sender.deliver(sessions, client, policy, worker=worker, batch=batch)
        except sender.SendingRefused as err:
            click.echo(f"Twilio refused the account or the sender ({err}): check TWILIO_ACCOUNT_SID, "
                       f"TWILIO_AUTH_TOKEN and the sender; the messages wait in the outbox.", err=True)
            sys.exit(1)
        click.echo(r.summary())
        return
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"sending SMS from the outbox every {policy.poll:g} s when idle; Ctrl-C or SIGTERM stops")
    try:
        run(sessions, client, policy, worker=worker, batch=batch, stop=stop)
    except KeyboardInterrupt:
        pass
    click.echo("stopped")


def run(sessions: Any, client: Any, policy: sender.SmsPolicy, *, worker: str, batch: int | None,
        stop: threading.Event) -> None:
    """Deliver round after round until stopped; sleep `sms.poll` when a round found too little."""
    size = batch or policy.batch
    while not stop.is_set():
        try:
            r = sender.deliver(sessions, client, policy, worker=worker, batch=size, stop=stop.is_set)
            if r.handled:
                log.info("outbox round: %s", r.summary())
            busy = r.handled >= size
        except sender.SendingRefused:  # logged: the account or sender needs fixing; try again later
            stop.wait(max(policy.poll, policy.base_delay))
            continue
        except Exception:  # noqa: BLE001 — a database hiccup must not end the worker
            log.exception("outbox round failed; trying again after %s s", policy.poll)
            busy = False
        if not busy:
            stop.wait(policy.poll)


@outbox.command("status")
def status_command() -> None:
    """Print how many messages are pending, sending, sent and failed."""
    with current_app.extensions["sessions"]() as s:
        counts = sender.due_count(s)
    click.echo(", ".join(f"{n} {status}" for status, n in counts.items()))
