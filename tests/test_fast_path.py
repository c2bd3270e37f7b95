"""The fast path and plain SQLAlchemy Core answer every call alike: the same TwiML, the same rows.

config.yaml `database.fast_path` switches the statements every webhook runs (models/storage/fastpath.py)
between the driver's cursor and plain SQLAlchemy Core. Two apps, one each way, on two fresh
databases under one frozen clock, get the same calls with the same call SIDs: the load mix
(tests/load-mix.yaml, each call with a cardholder of its own, as `sim load` places them) and every
regression scenario (tests/scenarios/, made unique to its call the same way). Then every answer
and every row of every table (call rows, recorded webhooks, card history, PIN counters …) must be
the same, but for surrogate ids and timings.
"""
from __future__ import annotations

import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import NullPool

from ivr import create_app
from ivr.config import load_settings
from ivr.sim import load, phone, runner
from ivr.sim.phone import ClientTransport
from ivr.sim.scenario import collect
from ivr.sim.scenario import load as load_scenario
from models import services
from models.cards import Actor, Cardholder, credentials_by_key, holder_by_id_number, verbal_loss_report
from models.clock import utcnow
from models.identity import id_key
from models.ledger_rows import ledger_rows
from models.notifications import outbox
from models.storage import fastpath
from models.storage.db import Base, create_schema
from tests.support import (
    ALICE,
    FORM,
    ON_POSTGRES,
    PIN_KEY,
    TOKEN,
    Ledger,
    card_of,
    fresh_database,
    signed_post,
    use_test_secrets,
)

HERE = Path(__file__).resolve().parent
LOAD_CALLS = 40
MIX = load.read_mix(HERE / "load-mix.yaml", [])
SCENARIOS = [load_scenario(p) for p in collect([HERE / "scenarios"])]
NOT_COMPARED = ("id", "elapsed_ms")  # surrogate keys, and the time a webhook took


def the_calls() -> list[Any]:
    """The load mix's calls (every scenario of it at least once), then the regression scenarios."""
    order = list(range(len(MIX))) + list(load.plan(MIX, LOAD_CALLS - len(MIX), seed=12333))
    calls = [load.personalise(MIX[i][0], n) for n, i in enumerate(order)]
    return calls + [load.personalise(sc, len(calls) + n) for n, sc in enumerate(SCENARIOS)]


@pytest.fixture
def make_app(tmp_path, monkeypatch, clock):
    """Build an app on a fresh database of its own, with the fast path on or off."""
    use_test_secrets(monkeypatch)
    apps = []
    with ExitStack() as stack:
        def make(fast: bool):
            url = stack.enter_context(fresh_database(tmp_path, f"fast_{fast}".lower()))
            app = create_app({"database_url": url, "database": {"fast_path": fast}})
            app.config["TESTING"] = True
            create_schema(app.extensions["engine"])
            apps.append(app)
            return app

        yield make
        for app in apps:
            app.extensions["engine"].dispose()


class SameSids:
    """The emulator's uuid4: the same call, account and recording SIDs, in order, for each app."""

    def __init__(self) -> None:
        self.n = 0

    def uuid4(self) -> uuid.UUID:
        self.n += 1
        return uuid.UUID(int=self.n)


class Recorder:
    """A transport that keeps every request and what the app answered."""

    def __init__(self, inner: ClientTransport):
        self.inner = inner
        self.exchanges: list[tuple[str, str, dict[str, str], int, str]] = []

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        status, body = self.inner.post(url, form, headers)
        self.exchanges.append(("POST", url, dict(form), status, body))
        return status, body

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str]:
        status, body = self.inner.get(url, headers)
        self.exchanges.append(("GET", url, {}, status, body))
        return status, body


def place(app, monkeypatch) -> tuple[list[Any], list[runner.Result]]:
    """Place every call on the app; return the exchanges and the scenarios' results."""
    monkeypatch.setattr(phone, "uuid", SameSids())
    target = runner.Target(app)
    recorder = Recorder(ClientTransport(app.test_client()))
    results = [runner.run(target, sc, recorder) for sc in the_calls()]
    return recorder.exchanges, results


def every_row(app) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in the order written, without surrogate ids and timings."""
    out = {}
    with app.extensions["engine"].connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.c if c.key not in NOT_COMPARED]
            order = list(table.primary_key.columns)
            out[table.name] = [dict(r._mapping) for r in conn.execute(select(*columns).order_by(*order))]
    return out


def cursor_statements(app) -> list[str]:
    """Start collecting the statements SQLAlchemy's cursor events see (the fast path's do not pass
    there) while the app answers a request (not the fixtures' loading, nor the scenarios' checks)."""
    seen: list[str] = []
    answering = [False]
    inner = app.wsgi_app

    def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
        answering[0] = True
        try:
            return list(inner(environ, start_response))
        finally:
            answering[0] = False

    app.wsgi_app = wsgi
    event.listen(app.extensions["engine"], "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement) if answering[0] else None)
    return seen


def test_every_call_gets_the_same_answers_and_rows_with_the_fast_path_off(make_app, monkeypatch):
    fast, plain = make_app(True), make_app(False)
    assert (fast.extensions["turns"].rows.fast, plain.extensions["turns"].rows.fast) == (True, False)
    assert fastpath.database_of(fast.extensions["engine"])[1] is True
    assert fastpath.database_of(plain.extensions["engine"])[1] is False
    seen = {"fast": cursor_statements(fast), "plain": cursor_statements(plain)}

    fast_exchanges, fast_results = place(fast, monkeypatch)
    plain_exchanges, plain_results = place(plain, monkeypatch)

    # The load mix's calls go as their scenarios say (the regression scenarios are made unique to
    # their call, so the few that expect a particular ID number's digits may not: alike both ways).
    loaded = len(the_calls()) - len(SCENARIOS)
    assert [r.failures for r in fast_results[:loaded]] == [[]] * loaded
    assert [(r.call_sid, r.failures) for r in fast_results] == [(r.call_sid, r.failures) for r in plain_results]
    assert len(fast_exchanges) == len(plain_exchanges) > 5 * len(fast_results)
    for mine, theirs in zip(fast_exchanges, plain_exchanges, strict=True):
        assert mine == theirs  # the same request, answered with the same status and TwiML

    rows, plain_rows = every_row(fast), every_row(plain)
    for table, written in rows.items():
        assert len(written) == len(plain_rows[table]), table
        for mine, theirs in zip(written, plain_rows[table], strict=True):
            assert mine == theirs, table
    # Not an empty comparison: every call, its webhooks, the ledger changes and the counters.
    assert len(rows["calls"]) == len(fast_results)
    assert {r["kind"] for r in rows["call_events"]} >= {"incoming", "step", "status", "dial"}
    assert any(r["handoff"] for r in rows["calls"]) and any(r["end_reason"] == "completed" for r in rows["calls"])
    assert {r["channel"] for r in rows["card_events"]} >= {"ivr"}
    assert any(r["failures"] for r in rows["pin_guards"]) and any(r["locked_at"] for r in rows["pin_guards"])
    # The steps that change the ledger, compared too: every card change with its history row, the
    # texts they queue, a holder's own change, the ratings (models.ledger_rows and its neighbours).
    assert {r["reason"] for r in rows["card_events"]} >= {"verbal loss report", "verbal loss report released",
                                                         "activated"}
    assert {r["kind"] for r in rows["outbox_messages"]} >= {"loss_reported", "mobile_changed",
                                                           "mobile_changed_old"}
    assert {r["kind"] for r in rows["holder_events"]} >= {"mobile_changed", "pin_changed"}
    assert rows["call_ratings"] and {r["rating"] for r in rows["call_ratings"]} >= {"satisfied"}
    # And the switch did switch: only plain Core's statements pass through the cursor events.
    recorded = "INSERT INTO call_events"
    assert not any(recorded in s for s in seen["fast"])
    assert sum(recorded in s for s in seen["plain"]) == len(rows["call_events"])
    for statement in ("FROM cardholders", "FROM cards", "UPDATE cards SET", "INSERT INTO card_events",
                      "UPDATE cardholders SET", "INSERT INTO holder_events", "INSERT INTO outbox_messages",
                      "INSERT INTO call_ratings"):
        assert not any(statement in s for s in seen["fast"]), statement  # no webhook's statement through the ORM
        assert any(statement in s for s in seen["plain"]), statement


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain_core"])
def test_the_boundary_flushes_a_session_before_its_statement_runs(make_app, fast):
    app = make_app(fast)
    key = id_key(PIN_KEY.encode(), ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        s.add(Cardholder(id_number=ALICE, id_key=key, name="测试", pin_hash="x", created_at=utcnow()))
        found = credentials_by_key(s, key)  # no flush by hand: the boundary's
        assert found is not None and found.id_number == ALICE
        s.rollback()


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain_core"])
def test_a_card_changed_under_a_use_case_is_refused_as_stale_and_nothing_is_written(make_app, fast, clock):
    app = make_app(fast)
    ledger = Ledger(app)
    ledger.add(ALICE)
    with app.extensions["sessions"]() as s:
        holder = holder_by_id_number(s, ALICE)
        holder_id, card_id = holder.id, holder.cards[0].id
    policy = app.extensions["settings"].loss
    with app.extensions["sessions"]() as s, s.begin():
        holder_row = services.load_holder(s, holder_id, now=utcnow(), policy=policy)
        card = holder_row.cards[0]
        s.execute(text("UPDATE cards SET version = version + 1 WHERE id = :id"), {"id": card_id})  # another writer
        change = verbal_loss_report(card.state, now=utcnow(), actor=Actor("ivr"), policy=policy)
        sms = outbox.queued(to="+8613900000000", body="口头挂失", kind=outbox.LOSS_REPORTED, holder_id=holder_id,
                            now=utcnow())
        with pytest.raises(StaleDataError):
            ledger_rows(s).apply(s, card, change, text=sms)
        assert s.scalar(select(func.count()).select_from(outbox.OutboxMessage)) == 0  # nor the SMS of it
        s.rollback()
    assert ledger.card(card_of(ALICE)).status == "normal" and len(ledger.card(card_of(ALICE)).events) == 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain_core"])
def test_a_statement_runs_only_inside_the_callers_transaction(make_app, fast):
    app = make_app(fast)
    rows = app.extensions["turns"].rows
    with app.extensions["engine"].connect() as conn, pytest.raises(RuntimeError, match="transaction"):
        rows.load(conn, "CA-nobody")


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain_core"])
def test_a_driver_error_is_wrapped_with_its_parameters_hidden(make_app, fast):
    app = make_app(fast)
    rows = app.extensions["turns"].rows
    engine = app.extensions["engine"]
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE call_events"))
    secret = "CA-" + ALICE
    with engine.begin() as conn, pytest.raises(DBAPIError) as err:
        rows.answered(conn, secret, 1, "step")
    assert ALICE not in str(err.value) and err.value.hide_parameters
    assert not err.value.connection_invalidated


@pytest.mark.parametrize("pooled", [1, 3])
@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain_core"])
def test_after_the_server_drops_connections_the_next_call_is_answered_either_way(make_app, fast, pooled):
    app = make_app(fast)
    engine = app.extensions["engine"]
    held = [engine.connect() for _ in range(pooled)]  # the pool's connections, idle a moment only: no ping
    pids = [c.exec_driver_sql("SELECT pg_backend_pid()").scalar() if ON_POSTGRES else None for c in held]
    for c in held:
        c.close()
    if ON_POSTGRES:  # a restart or failover: every one of them dropped
        outside = create_engine(engine.url, poolclass=NullPool)
        with outside.connect() as killer:
            for pid in pids:
                killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        outside.dispose()
    resp = signed_post(app.test_client(), "/voice", FORM)
    assert resp.status_code == 200 and "<Gather" in resp.text  # the greeting, not the apology and a transfer
    with engine.connect() as conn:
        assert conn.execute(text("SELECT kind FROM call_events")).scalars().all() == ["incoming"]


def test_the_switch_is_read_from_config_yaml_and_the_database_url_stays_where_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("IVR_CONFIG", raising=False)
    for name, value in (("TWILIO_AUTH_TOKEN", TOKEN), ("IVR_PIN_KEY", PIN_KEY), ("IVR_SECRET_KEY", "k")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/from-the-environment.db")
    settings = load_settings(tmp_path)
    assert settings.fast_path is True  # config.yaml's default
    assert settings.database_url == "sqlite:////tmp/from-the-environment.db"
    off = load_settings(tmp_path, {"database": {"fast_path": False}})
    assert off.fast_path is False and off.database_url == settings.database_url
    monkeypatch.delenv("DATABASE_URL")
    config = tmp_path / "config.yaml"
    config.write_text("database_url: sqlite:////tmp/from-the-file.db\ndatabase:\n  fast_path: false\n",
                      encoding="utf-8")
    monkeypatch.setenv("IVR_CONFIG", str(config))
    from_file = load_settings(tmp_path)
    assert (from_file.database_url, from_file.fast_path) == ("sqlite:////tmp/from-the-file.db", False)
    config.write_text("database:\n  fast_path: \"no\"\n", encoding="utf-8")
    with pytest.raises(ValueError, match="database.fast_path must be true or false"):
        load_settings(tmp_path)
