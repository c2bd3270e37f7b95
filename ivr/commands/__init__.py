"""Every operator command group of `flask --app wsgi …`, registered in one place."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register every command group with the app."""
    from ivr.commands import agents, audit, flow, ledger, outbox, report, sim

    for command in (ledger.init_db_command, ledger.seed_demo_command, ledger.ledger, ledger.calls,
                    sim.sim, agents.agent, audit.audit, outbox.outbox, flow.flow, report.report):
        app.cli.add_command(command)
    from ivr.commands import calendar
    app.cli.add_command(calendar.calendar)
