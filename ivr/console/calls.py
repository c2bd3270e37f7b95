"""The console's page of one call."""
from __future__ import annotations

from typing import Any

from flask import abort, render_template

from ivr.console import reader
from ivr.console.views import bp
from models.calls import CallState


@bp.get("/calls/<call_sid>")
def call(call_sid: str) -> Any:
    """One transferred call's handoff context."""
    row = reader().get(CallState, call_sid) or abort(404)
    return render_template("agent/call.html", call=row)
