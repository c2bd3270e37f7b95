"""The hotline's log lines: readable text by default, one JSON object a line with IVR_LOG_FORMAT=json.

JSON lines carry `time` (ISO 8601, UTC, with its offset), `level`, `logger` and `message`; a line
logged while a webhook is answered also `call_sid`, `turn`, `state` and `duration_ms` (so far;
`ivr.monitoring.webhook`), and the one INFO line each webhook ends with (logger `ivr.webhook`,
JSON only: the text stays as it was, without a line per webhook) its `kind` and `outcome` too; a
traceback goes in `exception`. `create_app` sets the format up for the app, the CLI and,
under gunicorn, gunicorn's own lines (`deploy/gunicorn.conf.py` does it in the master too).

Both formats are masked as a last line of defence (the code logs no ID, PIN or full phone number
to begin with): a stand-alone run of 6 or more digits — a PIN, a phone number, an ID number with
its final X — keeps at most its prefix and last four digits (`+86139****5678`,
`**************0025`, `******`). Runs inside a word stay (a CallSid's hex, a card number), and so
do shorter ones (dates, times, durations) and a process id after `pid`. `ivr.callflow.redact.
mask_numbers`, made for what callers key and say, would also take every year and CallSid apart.
"""
from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from typing import IO, Any

from ivr.monitoring import webhook
from models.identity import mask_id, mask_phone

ENV = "IVR_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OURS = "_ivr_handler"  # marks the root handler create_app installed (set up again, not twice)
SECRET_RUN = re.compile(r"(?<![0-9A-Za-z+])(?<!pid )(?<!pid: )(?<!pid=)\+?\d{6,}(?:[Xx])?(?![0-9A-Za-z])")

log = logging.getLogger(__name__)


def mask(text: str) -> str:
    """Return the text with every stand-alone run of 6 or more digits masked."""
    return SECRET_RUN.sub(_masked, text) if text else text


def _masked(match: re.Match[str]) -> str:
    run = match.group()
    return mask_id(run) if len(run.lstrip("+")) >= 15 else mask_phone(run)


class TextFormatter(logging.Formatter):
    """The readable line (time level logger: message), masked, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line, masked."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        hook = webhook.current()
        if hook is not None:
            given = record.__dict__.get("duration_ms")
            line.update(call_sid=hook.call_sid, turn=hook.turn, state=hook.state,
                        duration_ms=round(hook.elapsed_ms(), 3) if given is None else given)
        for key in ("kind", "outcome"):
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exception"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = mask(record.exc_text)
        if record.stack_info:
            line["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(line)


def log_format() -> str:
    """Return the format IVR_LOG_FORMAT asks for: text (unset, empty or unknown) or json."""
    value = os.environ.get(ENV, "").strip().lower()
    return value if value in FORMATS else "text"


def formatter(fmt: str | None = None) -> logging.Formatter:
    """Return the formatter of a format (default: IVR_LOG_FORMAT's)."""
    return JsonFormatter() if (fmt or log_format()) == "json" else TextFormatter(TEXT_FORMAT)


def handler(stream: IO[str] | None = None, fmt: str | None = None) -> logging.Handler:
    """Return a stream handler (standard error by default) writing the format."""
    out = logging.StreamHandler(stream)
    out.setFormatter(formatter(fmt))
    return out


def configure() -> None:
    """Set up the root logger in IVR_LOG_FORMAT's format (INFO), unless something else did.

    A root logger with handlers of its own (pytest's, an embedding program's) is left alone, as
    logging.basicConfig would; the handler installed here is set up again on the next call.
    Under gunicorn its own loggers get the JSON format too. The line per webhook (`ivr.webhook`,
    INFO) is for JSON only: the readable text, the CLI's `sim` calls included, stays without it.
    """
    # JSON: the level of its parents (`ivr`, the root's INFO), so that a command may quiet the app's INFO lines.
    logging.getLogger(webhook.log.name).setLevel(logging.NOTSET if log_format() == "json" else logging.WARNING)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, OURS, False)]
    for h in ours:
        h.setFormatter(formatter())
    if not root.handlers:
        out = handler()
        setattr(out, OURS, True)
        root.addHandler(out)
        root.setLevel(logging.INFO)
    adopt(logging.getLogger("gunicorn.error"), logging.getLogger("gunicorn.access"))
    given = os.environ.get(ENV, "").strip()
    if given and given.lower() not in FORMATS:
        log.warning("%s=%s is neither text nor json: logging text", ENV, given[:20])


def adopt(*loggers: logging.Logger) -> None:
    """Give these loggers' handlers (gunicorn's) the JSON format when it is asked for; text stays theirs."""
    if log_format() != "json":
        return
    for logger in loggers:
        for h in logger.handlers:
            h.setFormatter(JsonFormatter())
