"""Fixtures: an app on a fresh database, a frozen clock, a ledger helper and callers.

Helpers and constants live in `tests.support`; tests import them from there, never from here.
"""
from __future__ import annotations

from typing import Any

import pytest
from freezegun import freeze_time

from ivr import create_app
from ivr.sim.phone import ClientTransport, Phone
from models.storage.db import create_schema
from tests.support.console import ADMIN, AGENT, Console, create_agent
from tests.support.constants import MONDAY_10AM, TOKEN
from tests.support.database import fresh_database
from tests.support.ledger import Ledger
from tests.support.secrets import use_test_secrets


@pytest.fixture
def clock():
    """Pin time to a working Monday morning; tests move it with clock.move_to / tick."""
    with freeze_time(MONDAY_10AM) as frozen:
        yield frozen


@pytest.fixture
def database_url(tmp_path):
    """An empty database for one test."""
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture
def app(database_url, monkeypatch, clock):
    """Build the app on a fresh database with test secrets."""
    use_test_secrets(monkeypatch)
    app = create_app({"database_url": database_url})
    app.config["TESTING"] = True
    create_schema(app.extensions["engine"])
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def configured(database_url, monkeypatch, clock):
    """A factory of apps on the test's database, with config.yaml sections (and environment
    variables, `env=`) of the test's choosing."""
    use_test_secrets(monkeypatch)
    made = []

    def make(env=None, **sections):
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        app = create_app({"database_url": database_url, **sections})
        create_schema(app.extensions["engine"])
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["engine"].dispose()


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner for the app's commands."""
    return app.test_cli_runner()


@pytest.fixture
def ledger(app):
    """The ledger helper."""
    return Ledger(app)


@pytest.fixture
def call(app):
    """Return a factory of simulated calls against the app in-process."""

    def make(**kw: Any) -> Phone:
        kw.setdefault("base_url", "http://127.0.0.1:8000")
        return Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"], **kw)

    return make


@pytest.fixture
def accounts(runner):
    """An admin and an agent account of the console (made with the real CLI, neither enrolled in 2FA)."""
    create_agent(runner, *ADMIN, admin=True)
    create_agent(runner, *AGENT)


@pytest.fixture
def agent(client, accounts):
    """The console, logged in as a plain agent (the accounts made by `accounts`)."""
    console = Console(client)
    assert console.login(*AGENT).status_code == 302
    return console


def pytest_terminal_summary(terminalreporter):
    """Show the prompt budget's longest stretches and the loss report's figures (tests/test_prompt_budget.py)."""
    from tests.support.budget import REPORT

    if REPORT:
        terminalreporter.section("prompt budget")
        for line in REPORT:
            terminalreporter.write_line(line)
