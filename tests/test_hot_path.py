"""What every webhook runs, made cheap without changing what it does: prepared statements on the
driver, TwiML documents built once, one signature computation, no cookie session.

The call's statements are tried both ways: on the fast path and on plain SQLAlchemy Core
(config.yaml `database.fast_path: false`); tests/test_fast_path.py runs whole calls both ways."""
from __future__ import annotations

import os
from datetime import date, timedelta
from urllib.parse import urljoin

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm.exc import StaleDataError
from twilio.request_validator import RequestValidator

from ivr.callflow.machine import Hangup, Menu, Spoken, Turn
from ivr.voice.twiml import CACHED_DOCUMENTS, TURN_MARK
from ivr.voice.webhooks import Validator
from models import services
from models.calls import CallEvent, CallState
from models.cards import Actor, Cardholder, LossPolicy, mobile_change_event, release, verbal_loss_report
from models.clock import SHANGHAI, utcnow
from models.identity import id_key
from models.ledger_rows import HolderRow, history_of, ledger_rows
from models.notifications import outbox
from models.pins import OK, PinPolicy, check_pin, guard_and_credentials
from models.storage import fastpath
from models.storage.callrows import CallExists, CallRows
from models.storage.db import IDLE_PING_SECONDS
from tests.support import (
    ALICE,
    BASE,
    FORM,
    NOBODY,
    ON_POSTGRES,
    PIN,
    PIN_KEY,
    TOKEN,
    calls,
    card_of,
    events,
    signed_post,
    verified,
)

SID = "CA" + "7" * 32
BOTH_WAYS = pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain_core"])


def new_call(now):
    return {"call_sid": SID, "from_masked": "+86139****5678", "from_key": "a" * 64, "to_number": "+8653212333",
            "state": "", "turn": 0, "data": {}, "started_at": now, "updated_at": now}


def event(turn, kind="step", now=None):
    return {"call_sid": SID, "turn": turn, "kind": kind, "at": now or utcnow(), "params": {"Digits": "1"},
            "state_before": "main", "state_after": "status_menu", "path": ["main", "status_menu"],
            "facts": None, "twiml": "<Response/>", "elapsed_ms": 1.5}


@BOTH_WAYS
def test_the_prepared_call_statements_write_what_the_orm_reads_back(app, fast):
    engine = app.extensions["engine"]
    rows = CallRows(engine.dialect, fast=fast)
    now = utcnow()
    with engine.begin() as conn:
        assert rows.load_or_create(conn, SID, lambda: new_call(now)) == ("", 0, {})
        rows.save(conn, {"sid": SID, "state": "main", "next_turn": 1, "data": {"services": ["loss"], "n": 2},
                         "updated_at": now + timedelta(seconds=3)}, event(0, "incoming", now))
    with engine.begin() as conn:
        assert rows.load_or_create(conn, SID, lambda: pytest.fail("the call exists")) == (
            "main", 1, {"services": ["loss"], "n": 2})
        assert rows.answered(conn, SID, 0, "incoming") == "<Response/>"
        assert rows.answered(conn, SID, 0, "step") is None
    with app.extensions["sessions"]() as s:
        call = s.get(CallState, SID)
        assert (call.state, call.turn, call.data, call.updated_at) == (
            "main", 1, {"services": ["loss"], "n": 2}, now + timedelta(seconds=3))
        assert call.updated_at.tzinfo is not None  # aware UTC, as every ledger time
        recorded = s.scalars(select(CallEvent)).one()
        assert (recorded.turn, recorded.kind, recorded.at, recorded.params, recorded.path, recorded.facts) == (
            0, "incoming", now, {"Digits": "1"}, ["main", "status_menu"], None)


@BOTH_WAYS
def test_a_first_webhook_inserts_its_call_with_the_answer_and_a_second_insert_writes_nothing(app, fast):
    engine = app.extensions["engine"]
    rows = CallRows(engine.dialect, fast=fast)
    now = utcnow()
    with engine.begin() as conn:
        rows.create(conn, new_call(now) | {"state": "main", "turn": 1, "data": {"n": 1}}, event(0, "incoming", now))
    with engine.begin() as conn:  # Twilio's retry of the same first webhook, or its twin
        with pytest.raises(CallExists):
            rows.create(conn, new_call(now) | {"state": "agent", "turn": 1, "data": {"n": 2}, "handoff": {"x": 1}},
                        event(0, "incoming", now))
        assert conn.execute(text("SELECT count(*) FROM call_events")).scalar() == 1  # nothing written, not rolled back
        assert rows.load_or_create(conn, SID, lambda: pytest.fail("the call exists")) == ("main", 1, {"n": 1})
    with app.extensions["sessions"]() as s:
        call = s.scalars(select(CallState)).one()
        assert (call.turn, call.state, call.handoff) == (1, "main", None)
        assert [e.kind for e in s.scalars(select(CallEvent))] == ["incoming"]


@BOTH_WAYS
def test_ending_a_call_closes_its_row_and_records_the_callback_without_touching_its_turn(app, fast):
    engine = app.extensions["engine"]
    rows = CallRows(engine.dialect, fast=fast)
    now = utcnow()
    with engine.begin() as conn:
        rows.load_or_create(conn, SID, lambda: new_call(now))
        rows.save(conn, {"sid": SID, "state": "main", "next_turn": 4, "data": {"a": 1}, "updated_at": now,
                         "handoff": {"reason": "direct"}}, event(3, now=now))
    with engine.begin() as conn:
        assert rows.load_ending(conn, SID) == ("main", 4, {"a": 1}, {"reason": "direct"})
        assert rows.load_closing(conn, SID) == ("main", 4, {"a": 1}, {"reason": "direct"}, None)  # not ended yet
        rows.end(conn, {"sid": SID, "end_reason": "transferred", "ended_at": now, "data": {}, "duration_s": 42},
                 event(4, "status", now))
    with engine.begin() as conn:  # ended: a status callback again is looked for, and found
        assert rows.load_closing(conn, SID)[4] == now and rows.answered(conn, SID, 4, "status") == "<Response/>"
    with app.extensions["sessions"]() as s:
        call = s.get(CallState, SID)
        assert (call.turn, call.end_reason, call.duration_s, call.data, call.handoff) == (
            4, "transferred", 42, {}, {"reason": "direct"})
        assert [e.kind for e in s.scalars(select(CallEvent).order_by(CallEvent.id))] == ["step", "status"]


@BOTH_WAYS
def test_a_prepared_statement_refuses_a_missing_value_instead_of_writing_null(app, fast):
    engine = app.extensions["engine"]
    rows = CallRows(engine.dialect, fast=fast)
    # Refused before anything reaches the driver: by the fast path itself, or by SQLAlchemy.
    with engine.begin() as conn, pytest.raises(KeyError if fast else StatementError, match="next_turn"):
        rows.load_or_create(conn, SID, lambda: new_call(utcnow()))
        rows.save(conn, {"sid": SID, "state": "main", "data": {}, "updated_at": utcnow()}, event(0))


@pytest.mark.skipif(not ON_POSTGRES, reason="psycopg's cursors are kept; SQLite's are made for each statement")
def test_the_fast_path_keeps_one_cursor_a_connection_and_a_new_one_after_the_server_dropped_it(app):
    engine = app.extensions["engine"]
    rows = CallRows(engine.dialect, fast=True)

    def kept(conn):
        return conn.connection.info[fastpath.KEPT_CURSOR]

    with engine.begin() as conn:
        rows.load_or_create(conn, SID, lambda: new_call(utcnow()))
        first = kept(conn)
        rows.load(conn, SID)
        assert kept(conn) is first and first[0] is conn.connection.dbapi_connection
    cursors = {}
    for _ in range(6):  # later webhooks, on whichever pooled connection: each always with its own one cursor
        with engine.begin() as conn:
            rows.load(conn, SID)
            assert cursors.setdefault(id(conn.connection.dbapi_connection), kept(conn)) is kept(conn)
    killer = engine.connect()  # a connection of its own, checked out meanwhile
    with engine.begin() as conn:
        rows.load(conn, SID)
        first = kept(conn)
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")  # while it waits in the pool
    killer.commit()
    with pytest.raises(DBAPIError) as dropped, engine.begin() as conn:
        rows.load(conn, SID)
    assert dropped.value.connection_invalidated
    with engine.begin() as conn:  # a new connection, and a cursor of its own
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
        assert rows.load(conn, SID) == ("", 0, {})
        assert kept(conn) is not first and kept(conn)[0] is conn.connection.dbapi_connection
    killer.close()


@pytest.mark.skipif(not ON_POSTGRES, reason="a server that can drop a connection")
@BOTH_WAYS
def test_a_connection_the_server_dropped_is_never_handed_out_again(app, fast):
    engine = app.extensions["engine"]
    rows = CallRows(engine.dialect, fast=fast)
    killer = engine.connect()
    with pytest.raises(DBAPIError) as dropped, engine.begin() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        killer.commit()
        try:
            rows.load_or_create(conn, SID, lambda: new_call(utcnow()))
        finally:
            assert conn.invalidated
    assert dropped.value.connection_invalidated  # what tells the turn service to run the webhook again
    killer.close()
    with engine.begin() as conn:  # a new connection, not the dead one
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid


@pytest.mark.skipif(not ON_POSTGRES, reason="a server that can drop a connection")
def test_a_connection_idle_for_a_while_is_checked_and_replaced_when_the_server_dropped_it(app, clock):
    engine = app.extensions["engine"]
    killer = engine.connect()  # a second connection, kept out of the pool
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")  # while it waits in the pool
    killer.invalidate()  # not back into the pool: the dead one is all it holds
    killer.close()
    clock.tick(IDLE_PING_SECONDS + 1)
    with engine.connect() as conn:  # pinged on checkout, found dead, replaced: no error
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid


def menu_turn(values=None, pid="status.detail.in_production"):
    return Turn(state="status_menu", spoken=[Spoken(pid, values or {}), Spoken("keys.agent_back", {})], kind=Menu,
                hints="查询,人工")


def test_a_kept_document_is_the_one_built_afresh_with_the_turn_number_in_its_urls(app):
    renderer = app.extensions["turns"].renderer
    turn = menu_turn({"expected_on": "2026-12-11", "production_stage": "making", "card_last4": "1234"})
    first = renderer.render(turn, 3)
    again = renderer.render(turn, 17)
    assert 'action="/voice/step?t=3"' in first and "t=3&amp;e=silence" in first
    assert again == first.replace("t=3", "t=17")
    assert again == renderer._build(turn, 17, False)


def test_a_kept_document_changes_with_the_values_its_prompts_say_and_only_those(app):
    renderer = app.extensions["turns"].renderer
    base = {"expected_on": "2026-12-11", "production_stage": "making"}
    one = renderer.render(menu_turn(base), 2)
    assert renderer.render(menu_turn({**base, "unrelated": "x"}), 2) == one
    assert "2026年12月18日" in renderer.render(menu_turn({**base, "expected_on": "2026-12-18"}), 2)
    assert "2026年12月11日" in one and "正在制作" in one
    assert "已受理，等待制卡" in renderer.render(menu_turn({**base, "production_stage": "accepted"}), 2)


def test_a_number_read_back_is_kept_apart_from_its_masked_copy(app):
    renderer = app.extensions["turns"].renderer
    turn = Turn(state="mobile_readback", spoken=[Spoken("mobile.readback", {"new_mobile": "13912345678"})],
                kind=Menu)
    heard = renderer.render(turn, 5)
    kept = renderer.render(turn, 5, masked=True)
    assert "5678" in heard and "5678" not in kept and "****" in kept
    assert renderer.render(turn, 5) == heard


def test_a_value_that_cannot_be_a_key_is_rendered_without_being_kept(app):
    renderer = app.extensions["turns"].renderer
    turn = Turn(state="bye", spoken=[Spoken("mobile.readback", {"new_mobile": ["13912345678"]})], kind=Hangup)
    assert renderer._key(turn, False) is None
    assert "<Hangup" in renderer.render(turn, 4)


def test_the_kept_documents_are_bounded_and_the_least_recently_used_goes_first(app):
    renderer = app.extensions["turns"].renderer
    main = Turn(state="main", spoken=[Spoken("keys.agent", {})], kind=Menu, hints="人工")
    renderer.render(main, 2)
    for n in range(CACHED_DOCUMENTS + 50):
        day = (date(2026, 1, 1) + timedelta(days=n)).isoformat()
        renderer.render(menu_turn({"expected_on": day, "production_stage": "making"}), 2)
        if n % 1000 == 0:
            renderer.render(main, 3)  # in use: kept
    assert len(renderer._documents) == CACHED_DOCUMENTS
    assert renderer._key(main, False) in renderer._documents
    first = menu_turn({"expected_on": "2026-01-01", "production_stage": "making"})
    assert renderer._key(first, False) not in renderer._documents


def test_a_number_read_back_is_never_kept(app):
    renderer = app.extensions["turns"].renderer
    turn = Turn(state="id_heard", spoken=[Spoken("auth.id_heard", {"say_id": "370202198503120025"})], kind=Menu)
    assert "3702" in renderer.render(turn, 4) and "******" in renderer.render(turn, 4, masked=True)
    assert not any("370202198503120025" in repr(k) for k in renderer._documents)


def test_a_value_holding_the_turn_mark_is_said_as_it_is(app):
    renderer = app.extensions["turns"].renderer
    turn = menu_turn({"expected_on": "2026-12-11", "production_stage": "making"}, pid="status.detail.in_production")
    odd = Turn(state="x", spoken=[Spoken("callback.offer", {})], kind=Menu, hints=f"a{TURN_MARK}b")
    assert f"a{TURN_MARK}b" in renderer.render(odd, 5) and 't=5"' in renderer.render(odd, 5)
    assert renderer._key(odd, False) not in renderer._documents
    assert 't=6"' in renderer.render(turn, 6)


URL = BASE + "/voice/step?t=2"
PARAMS = {"CallSid": SID, "Digits": "1"}


def test_the_validator_takes_the_url_as_signed_and_the_librarys_port_variants():
    ours = Validator(TOKEN)
    signed = RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    assert ours.validate(URL, PARAMS, signed)
    with_port = RequestValidator(TOKEN).compute_signature("https://ivr.example.gov.cn:443/voice", PARAMS)
    assert ours.validate("https://ivr.example.gov.cn/voice", PARAMS, with_port)
    sha256 = RequestValidator(TOKEN).compute_signature(URL, PARAMS, "HMAC_SHA256")
    assert ours.validate(URL, PARAMS, sha256, "HMAC_SHA256") and not ours.validate(URL, PARAMS, sha256)


@pytest.mark.parametrize("signature", ["", "x", RequestValidator("another-token").compute_signature(URL, PARAMS)])
def test_the_validator_refuses_what_the_library_refuses(signature):
    assert not Validator(TOKEN).validate(URL, PARAMS, signature)
    assert not Validator(TOKEN).validate(URL, {**PARAMS, "Digits": "2"},
                                         RequestValidator(TOKEN).compute_signature(URL, PARAMS))


def test_webhooks_set_no_cookie_and_the_console_still_does(app, client):
    assert "Set-Cookie" not in signed_post(client, "/voice", FORM).headers
    assert "Set-Cookie" not in client.get("/healthz").headers
    page = client.get("/agent/login")
    assert page.status_code == 200 and "session=" in page.headers.get("Set-Cookie", "")


@BOTH_WAYS
def test_verification_touches_the_pin_counter_only_when_it_changes(app, ledger, fast):
    ledger.add(ALICE)
    key = id_key(PIN_KEY.encode(), ALICE)
    statements = []
    engine = app.extensions["engine"]
    fastpath.set_fast_path(engine, fast)  # check_pin finds the switch by its session's engine
    with app.extensions["sessions"]() as s, s.begin():
        holder = s.scalars(select(Cardholder)).one()
        conn = s.connection()
        traced = conn.connection.driver_connection  # what the driver itself runs, either way
        if not ON_POSTGRES:
            traced.set_trace_callback(statements.append)
        assert check_pin(s, key=PIN_KEY.encode(), id_key=key, holder=holder, pin=PIN, now=utcnow(),
                         policy=PinPolicy()) == OK
        if not ON_POSTGRES:
            traced.set_trace_callback(None)
            assert [st.split()[0] for st in statements] == ["INSERT"]  # upserted and read back; no UPDATE
    with engine.connect() as conn:
        assert conn.execute(text("SELECT failures FROM pin_guards")).scalar() == 0


def test_a_worker_answering_webhooks_never_loads_the_password_checkers_word_lists(tmp_path):
    """zxcvbn's dictionaries are ~12 MB of a worker's memory: loaded when a password is set, not before."""
    import subprocess
    import sys

    from ivr.config import ROOT

    script = ("import sys\nfrom ivr import create_app\nfrom tests.support.calls import FORM, signed_post\n"
              f"app = create_app({{'database_url': 'sqlite:///{tmp_path}/w.db'}})\n"
              "from models.storage.db import create_schema\ncreate_schema(app.extensions['engine'])\n"
              "assert signed_post(app.test_client(), '/voice', FORM).status_code == 200\n"
              "print('zxcvbn' in sys.modules)\n"
              "from models.passwords import password_problem\n"
              "password_problem('correct horse battery staple', username='agent1')\n"
              "print('zxcvbn' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "IVR_CONFIG": str(ROOT / "config.yaml"), "TWILIO_AUTH_TOKEN": TOKEN,
                               "IVR_PIN_KEY": PIN_KEY, "IVR_SECRET_KEY": "k"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


@pytest.fixture
def traced(monkeypatch):
    """The SQL of every statement the boundary (`models.storage.fastpath`) runs, either way, in order."""
    seen: list[str] = []
    fast_run, plain_run = fastpath.Prepared.run, fastpath.Plain.run

    def on_driver(self, unit, values):
        seen.append(" ".join(self.sql.split()))
        return fast_run(self, unit, values)

    def through_core(self, unit, values):
        seen.append(" ".join(str(self.statement.compile(dialect=self.dialect)).split()))
        return plain_run(self, unit, values)

    monkeypatch.setattr(fastpath.Prepared, "run", on_driver)
    monkeypatch.setattr(fastpath.Plain, "run", through_core)
    return seen


def _holder_reads(statements):
    """The reads of a holder's row by its id (`LedgerRows.holder_for_update`: locked on PostgreSQL)."""
    return [st for st in _reads_of(statements, "cardholders") if "WHERE cardholders.id =" in st]


def _reads_of(statements, table):
    return [st for st in statements if st.startswith(("SELECT", "WITH")) and f"FROM {table} " in f"{st} "]


@BOTH_WAYS
def test_a_read_back_reads_the_cards_and_their_history_in_one_statement_and_locks_no_holder(
        app, ledger, call, traced, fast, clock):
    fastpath.set_fast_path(app.extensions["engine"], fast)
    ledger.add(ALICE)
    verified(call).press("1")  # reported lost: a second history row
    clock.tick(timedelta(hours=1))
    phone = call().dial().press("3").press(ALICE + "#")
    traced.clear()
    phone.press(PIN + "#")
    assert phone.prompts == ["card.readback", "status.detail.verbal_loss", "status.menu", "keys.agent"]
    cards = _reads_of(traced, "cards")
    assert len(cards) == 1 and "card_events" in cards[0] and "FOR UPDATE" not in cards[0]
    assert not _reads_of(traced, "card_events")[1:]  # the history came with the cards
    assert not _holder_reads(traced)  # neither read nor locked by id: verification read the credentials by key
    history = ledger.history(card_of(ALICE))
    said = events(app, phone.call_sid)[-1].facts["card"]["history"]
    assert [(h["status"], h["channel"]) for h in said] == [(after, channel) for _, after, channel, _ in history]


def test_a_lapsed_loss_report_is_settled_under_the_holders_lock_before_it_is_read_back(app, ledger, call, traced,
                                                                                        clock):
    ledger.add(ALICE)
    verified(call).press("1")
    clock.tick(timedelta(days=8))
    phone = call().dial().press("3").press(ALICE + "#")
    traced.clear()
    phone.press(PIN + "#")
    assert phone.prompts == ["card.readback", "status.detail.normal", "status.menu", "keys.agent"]
    locked = _holder_reads(traced)
    assert len(locked) == 1 and ("FOR UPDATE" in locked[0]) == ON_POSTGRES  # SQLite: the unit's write lock
    assert len(_reads_of(traced, "cards")) == 2  # read unlocked first, then again under the lock, settled
    assert ledger.history(card_of(ALICE))[-1] == ("verbal_loss", "normal", "system", None)
    said = events(app, phone.call_sid)[-1].facts["card"]["history"]
    assert [h["status"] for h in said][-1] == "normal"  # the history read after the lapse was written


@BOTH_WAYS
def test_the_pin_counter_and_the_credentials_are_read_by_the_same_statements_for_a_known_or_unknown_id(
        app, ledger, traced, fast):
    engine = app.extensions["engine"]
    fastpath.set_fast_path(engine, fast)
    ledger.add(ALICE)
    runs = {}
    for who in (ALICE, NOBODY):
        traced.clear()
        with engine.begin() as conn:
            guard, holder = guard_and_credentials(conn, id_key(PIN_KEY.encode(), who))
        runs[who] = list(traced)
        assert guard == (0, None)
        assert (holder is not None) == (who == ALICE)
    assert runs[ALICE] == runs[NOBODY]
    assert len(runs[ALICE]) == (1 if ON_POSTGRES else 2)  # PostgreSQL: the upsert and the read in one WITH
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pin_guards")).scalar() == 2


@BOTH_WAYS
def test_a_card_read_with_its_history_reads_it_again_once_changed(app, ledger, traced, fast):
    engine = app.extensions["engine"]
    fastpath.set_fast_path(engine, fast)
    ledger.add(ALICE)
    with engine.begin() as conn:
        rows = ledger_rows(conn)
        holder_id = conn.execute(text("SELECT id FROM cardholders")).scalar()
        (card,) = rows.cards_to_read(conn, holder_id, 5)
        assert [h.status_after for h in card.history] == ["normal"]
        traced.clear()
        assert [h.status_after for h in history_of(conn, card, 5)] == ["normal"]
        assert [h.status_after for h in history_of(conn, card, 3)] == ["normal"]
        assert traced == []  # read with the card
        assert history_of(conn, card, 6) and len(traced) == 1  # more than was read: read now
        now = utcnow()
        rows.apply(conn, card, verbal_loss_report(card.state, now=now, actor=Actor("ivr"),
                                                  policy=LossPolicy()))
        assert card.history is None
        assert [h.status_after for h in history_of(conn, card, 5)] == ["verbal_loss", "normal"]


@BOTH_WAYS
def test_a_mobile_change_its_history_row_and_both_texts_are_one_statement_on_postgresql(app, ledger, traced, fast):
    engine = app.extensions["engine"]
    fastpath.set_fast_path(engine, fast)
    ledger.add(ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        holder_id = s.scalars(select(Cardholder.id)).one()
        traced.clear()
        services.change_mobile(s, holder_id, "139 0000 5678", now=utcnow(), actor=Actor("ivr", None, SID))
    kinds = [st.split()[0] for st in traced]
    assert kinds == (["SELECT", "WITH"] if ON_POSTGRES else ["SELECT", "UPDATE", "INSERT", "INSERT", "INSERT"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT mobile FROM cardholders")).scalar() == "+8613900005678"
        assert conn.execute(text("SELECT kind, call_sid FROM holder_events")).all() == [("mobile_changed", SID)]
        assert conn.execute(text('SELECT kind, "to" FROM outbox_messages ORDER BY id')).all() == [
            ("mobile_changed", "+8613900005678"), ("mobile_changed_old", "+8613800000001")]


@BOTH_WAYS
def test_a_change_of_a_holder_no_longer_there_writes_neither_history_nor_texts(app, traced, fast):
    engine = app.extensions["engine"]
    fastpath.set_fast_path(engine, fast)
    gone = HolderRow(404, ALICE, "k" * 64, "测试", "+8613800000001", None)
    texts = outbox.mobile_changed(404, "+8613900005678", gone.mobile, now=utcnow(), tz=SHANGHAI)
    with engine.begin() as conn:
        with pytest.raises(StaleDataError):
            ledger_rows(conn).change_holder(conn, gone, "mobile", "+8613900005678", texts=texts,
                                            event=mobile_change_event(gone.mobile, "+8613900005678", now=utcnow(),
                                                                      actor=Actor("ivr")))
        # Counted in the same transaction: nothing was written, not merely rolled back.
        assert conn.execute(text("SELECT count(*) FROM holder_events")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM outbox_messages")).scalar() == 0


@BOTH_WAYS
def test_a_read_back_gives_each_card_its_newest_rows_up_to_the_limit_and_a_card_without_history_none(
        app, ledger, fast):
    engine = app.extensions["engine"]
    fastpath.set_fast_path(engine, fast)
    ledger.add(ALICE)
    ledger.add(ALICE, card="QD-SECOND", applied_on=date(2025, 1, 1))
    actor, now = Actor("agent", "agent-7"), utcnow()
    with engine.begin() as conn:
        rows = ledger_rows(conn)
        holder_id = conn.execute(text("SELECT id FROM cardholders")).scalar()
        first, second = rows.cards_of(conn, holder_id)
        for i in range(4):  # eight rows more on the first card
            at = now + timedelta(minutes=2 * i)
            rows.apply(conn, first, verbal_loss_report(first.state, now=at, actor=actor, policy=LossPolicy()))
            rows.apply(conn, first, release(first.state, now=at + timedelta(minutes=1), actor=actor))
        conn.execute(text("DELETE FROM card_events WHERE card_id = :card"), {"card": second.id})
        read = rows.cards_to_read(conn, holder_id, 5)
        assert [card.id for card in read] == [first.id, second.id]  # the ledger's order
        assert list(read[0].history or ()) == rows.recent_history(conn, first.id, 5)
        assert [h.status_after for h in read[0].history or ()] == ["normal", "verbal_loss"] * 2 + ["normal"]
        assert read[1].history == () and read[1].history_read == 5
        assert read[0].siblings == read


@BOTH_WAYS
def test_a_wrong_pin_for_a_known_id_runs_the_very_statements_of_an_unknown_id(app, ledger, call, traced, fast):
    fastpath.set_fast_path(app.extensions["engine"], fast)
    ledger.add(ALICE)
    runs = {}
    for who in (ALICE, NOBODY):
        phone = call().dial().press("3").press(who + "#")
        traced.clear()
        phone.press("975318#")
        assert phone.prompts[0] == "auth.wrong"
        runs[who] = list(traced)
    assert runs[ALICE] == runs[NOBODY]


@BOTH_WAYS
def test_a_first_webhook_writes_its_row_with_the_answer_and_its_retry_replays_it(app, call, traced, fast):
    fastpath.set_fast_path(app.extensions["engine"], fast)
    traced.clear()
    phone = call().dial()
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    writes = [st.split()[0] for st in traced if not st.startswith("SELECT")]
    assert writes == (["WITH"] if ON_POSTGRES else ["INSERT", "INSERT"])  # the row made with its answer, recorded
    first = phone.twiml
    status, again = phone._send(urljoin(phone.base_url, "/voice"), {"CallStatus": "ringing"})  # Twilio's retry
    assert status == 200 and again == first
    (row,) = calls(app)
    assert (row.state, row.turn) == ("main", 1)
    assert [(e.turn, e.kind) for e in events(app, phone.call_sid)] == [(0, "incoming")]
