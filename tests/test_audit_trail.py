"""The audit trail is append-only: the app's sessions refuse to change or delete a row, and so does
the database itself (triggers, on SQLite and PostgreSQL, made by create_schema and by migration 0007)."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DatabaseError

from models.agents import AuditEvent, AuditTrailIsAppendOnly, record_audit, scrub
from models.clock import utcnow
from models.storage.db import init_db, make_engine, make_sessionmaker
from models.vocabulary import AuditAction


def one_row(sessions) -> int:
    with sessions() as s, s.begin():
        row = record_audit(s, AuditAction.REVEAL_ID, agent="li.agent", address="192.0.2.7", now=utcnow(),
                           detail="370202198503120025 13800000001 135790")
        s.flush()
        return row.id


def the_row(sessions, row_id):
    with sessions() as s:
        row = s.get(AuditEvent, row_id)
        return (row.agent, row.action, row.address, row.detail)


def test_a_row_is_written_with_long_numbers_masked(app):
    sessions = app.extensions["sessions"]
    row_id = one_row(sessions)
    assert the_row(sessions, row_id) == ("li.agent", "reveal_id", "192.0.2.7", "**************0025 *******0001 135790")


def test_scrub_keeps_short_numbers_and_cuts_to_the_column():
    assert scrub("工号 10234 剩余 9 个 0532-88886666") == "工号 10234 剩余 9 个 0532-****6666"
    assert scrub("37020219860714104X") == "**************104X"
    assert len(scrub("字" * 300)) == 256


def test_the_session_refuses_to_change_a_row(app):
    sessions = app.extensions["sessions"]
    row_id = one_row(sessions)
    with sessions() as s, pytest.raises(AuditTrailIsAppendOnly):
        s.get(AuditEvent, row_id).detail = "nothing happened"
        s.flush()
    assert the_row(sessions, row_id)[3] == "**************0025 *******0001 135790"


def test_the_session_refuses_to_delete_a_row(app):
    sessions = app.extensions["sessions"]
    row_id = one_row(sessions)
    with sessions() as s, pytest.raises(AuditTrailIsAppendOnly):
        s.delete(s.get(AuditEvent, row_id))
        s.flush()
    assert the_row(sessions, row_id)[0] == "li.agent"


@pytest.mark.parametrize("statement", [
    update(AuditEvent).values(detail="x"),
    delete(AuditEvent),
    update(AuditEvent.__table__).values(detail="x"),
    delete(AuditEvent.__table__),
], ids=["orm-update", "orm-delete", "core-update", "core-delete"])
def test_the_session_refuses_bulk_updates_and_deletes(app, statement):
    sessions = app.extensions["sessions"]
    row_id = one_row(sessions)
    with sessions() as s, pytest.raises(AuditTrailIsAppendOnly):
        s.execute(statement)
    assert the_row(sessions, row_id)[0] == "li.agent"


@pytest.mark.parametrize("sql", ["UPDATE audit_events SET detail = 'x'", "DELETE FROM audit_events"])
def test_the_database_refuses_an_update_or_delete_past_the_app(app, sql):
    sessions = app.extensions["sessions"]
    row_id = one_row(sessions)
    with app.extensions["engine"].connect() as conn, pytest.raises(DatabaseError, match="append-only"):
        conn.execute(text(sql))
    assert the_row(sessions, row_id)[0] == "li.agent"


@pytest.mark.parametrize("sql", ["UPDATE audit_events SET detail = 'x'", "DELETE FROM audit_events"])
def test_the_migrated_database_refuses_an_update_or_delete_too(database_url, sql):
    engine = make_engine(database_url)
    init_db(engine)
    sessions = make_sessionmaker(engine)
    row_id = one_row(sessions)
    with engine.connect() as conn, pytest.raises(DatabaseError, match="append-only"):
        conn.execute(text(sql))
    assert the_row(sessions, row_id)[0] == "li.agent"
    engine.dispose()


def test_the_migrated_database_refuses_truncate_on_postgresql(database_url):
    engine = make_engine(database_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("TRUNCATE is PostgreSQL's (SQLite has none)")
    init_db(engine)
    one_row(make_sessionmaker(engine))
    with engine.connect() as conn, pytest.raises(DatabaseError, match="append-only"):
        conn.execute(text("TRUNCATE audit_events"))
    with engine.connect() as conn:
        assert conn.execute(select(AuditEvent.id)).scalars().all() != []
    engine.dispose()
