"""Twilio's voice webhooks: verify the signature, hand the form to the hotline, return TwiML."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, current_app, request
from twilio.request_validator import HMAC_SHA1, RequestValidator, compare, get_signature_algorithm

from ivr.monitoring import webhook
from ivr.monitoring.metrics import Metrics
from ivr.voice import fields
from ivr.voice.fallback import MINIMAL_TWIML, Fallback
from ivr.voice.turns import TurnService

bp = Blueprint("voice", __name__, url_prefix="/voice")
# Each route's kind, as the metrics and the logs name it.
KINDS = {"voice.incoming": "incoming", "voice.step": "step", "voice.dial_done": "dial",
         "voice.whisper": "whisper", "voice.status": "status", "voice.queue_wait": "queue_wait",
         "voice.queue_result": "queue_result", "voice.queue_next": "queue_next",
         "voice.fallback": "fallback", "voice.fallback_dial": "fallback"}
# The routes that answer from the configuration alone (ivr.voice.fallback): nothing on their way
# may touch the database, and when they fail they answer the fixed apology.
FALLBACK_ENDPOINTS = frozenset({"voice.fallback", "voice.fallback_dial"})


class Validator(RequestValidator):  # type: ignore[misc]  # twilio has no type information: the base is Any
    """Twilio's validator, trying the URL exactly as signed before its port variants.

    The library computes the signature twice on every request (with and without the port) and
    then compares; a request signed for the very URL we reconstruct needs one computation.
    Anything else (the other form of the URL, a body hash, another algorithm) goes to the library.
    """

    def validate(self, uri: str, params: Any, signature: str, algorithm: str | None = None) -> bool:
        if (algorithm or HMAC_SHA1).upper() == HMAC_SHA1 and not isinstance(params, str) and "bodySHA256" not in uri:
            if compare(self.compute_signature(uri, params or {}, algorithm), signature):
                return True
        valid: bool = super().validate(uri, params, signature, algorithm)
        return valid


def turns() -> TurnService:
    """Return the app's turn service: one webhook, one unit of work."""
    service: TurnService = current_app.extensions["turns"]
    return service


def twiml(xml: str) -> Response:
    """Wrap a TwiML document in a response with the right content type."""
    return Response(xml, mimetype="text/xml")


def signed_url() -> str:
    """Return the URL Twilio signed: the configured public base URL, or the request's own."""
    base = turns().settings.public_base_url or request.host_url.rstrip("/")
    query = request.query_string.decode("latin-1")
    return f"{base}{request.script_root}{request.path}" + (f"?{query}" if query else "")


@bp.before_request
def begin() -> None:
    """Start the webhook's accounting: its kind and clock (`ivr.monitoring.webhook`)."""
    webhook.begin(KINDS.get(request.endpoint or "", "other"))


@bp.before_request
def verify_signature() -> None:
    """Refuse any request not signed by Twilio with our auth token (403)."""
    signature = request.headers.get("X-Twilio-Signature", "")
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    validator: RequestValidator = current_app.extensions["validator"]
    if not signature or not validator.validate(signed_url(), request.form, signature, algorithm):
        current_app.logger.warning("refused unsigned or badly signed request to %s", request.path)
        webhook.refused()
        abort(403)


@bp.after_request
def finish(response: Response) -> Response:
    """Count the webhook (kind, outcome, time) and log its one line; never fails the answer."""
    metrics: Metrics = current_app.extensions["metrics"]
    webhook.finish(metrics)
    return response


@bp.teardown_request
def end(_error: BaseException | None) -> None:
    """Forget the webhook, whatever happened."""
    webhook.end()


def turn_number() -> int | None:
    """Return the turn number from the action URL, or None when absent or junk."""
    return fields.turn(request.args.get("t"))


def form() -> dict[str, str]:
    """Return Twilio's form as the hotline reads it (`ivr.voice.fields.form`: no NUL, bounded)."""
    return fields.form(request.form)


@bp.post("")
def incoming() -> Response:
    """A call comes in: greet and offer the main menu."""
    return twiml(turns().incoming(form()))


@bp.post("/step")
def step() -> Response:
    """The caller keyed something, or stayed silent."""
    silence = request.args.get("e") == "silence"
    return twiml(turns().step(form(), turn_number(), silence))


@bp.post("/dial")
def dial_done() -> Response:
    """The agent leg ended."""
    return twiml(turns().dial_done(form(), turn_number()))


@bp.post("/whisper")
def whisper() -> Response:
    """Twilio fetches this when an agent answers: a summary of the caller, before connecting."""
    return twiml(turns().whisper(form()))


@bp.post("/queue/wait")
def queue_wait() -> Response:
    """The <Enqueue waitUrl>, fetched again each time its document ends, and its <Gather>'s action:
    the caller's place and estimated wait; 1 leaves the queue for a call-back that keeps the place."""
    return twiml(turns().queue_wait(form()))


@bp.post("/queue/result")
def queue_result() -> Response:
    """The <Enqueue>'s action: how the wait ended (QueueResult), and what the caller hears next."""
    return twiml(turns().queue_done(form(), turn_number()))


@bp.post("/queue/next")
def queue_next() -> Response:
    """An agent's phone or Twilio Client takes the next caller: `?hotline=12333`, else the queue
    whose first caller has waited longest, else the default hotline's."""
    hotline = fields.text(request.args.get("hotline"), 32).strip() or None
    return twiml(turns().queue_next(form(), hotline))


@bp.post("/fallback")
def fallback() -> Response:
    """The number's "primary handler fails" URL: an apology, then the agents' <Dial> while they
    work, or the staffed hours and a goodbye; from the configuration alone, no database."""
    return twiml(_fallback(lambda service: service.answer(form())))


@bp.post("/fallback/dial")
def fallback_dial() -> Response:
    """The fallback <Dial>'s action: goodbye after an agent's call, else call again later."""
    return twiml(_fallback(lambda service: service.dial_done(form())))


def _fallback(answer: Callable[[Fallback], str]) -> str:
    """Run a fallback answer; if even that fails, the fixed Mandarin apology (never a 500)."""
    try:
        service: Fallback = current_app.extensions["fallback"]
        return answer(service)
    except Exception as exc:
        current_app.logger.exception("the fallback failed: the caller hears the fixed apology")
        webhook.failed(exc)
        return MINIMAL_TWIML


@bp.post("/status")
def status() -> Response:
    """Twilio reports the call's end: close its record."""
    turns().status(form())
    return Response("", status=204)


@bp.errorhandler(Exception)
def failed(error: Exception) -> Response:
    """Whatever broke, the caller hears an apology and reaches an agent, never a 500."""
    from werkzeug.exceptions import HTTPException

    if isinstance(error, HTTPException):
        return error  # type: ignore[return-value]
    current_app.logger.exception("voice webhook failed: %s", error)
    webhook.failed(error)
    if request.endpoint in FALLBACK_ENDPOINTS:
        return twiml(MINIMAL_TWIML)
    return twiml(turns().failure_twiml)


