"""Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from ivr import create_app
from models.storage.db import Base, all_models, init_db, make_engine


def test_the_migrations_build_the_schema_the_models_declare(database_url):
    engine = make_engine(database_url)
    init_db(engine)
    all_models()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_init_db_twice_changes_nothing(database_url):
    engine = make_engine(database_url)
    init_db(engine)
    with engine.connect() as conn:
        first = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    init_db(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == first
        assert "cardholders" in inspect(conn).get_table_names()
    engine.dispose()


def test_a_database_with_the_tables_but_no_migration_history_is_refused_with_advice(database_url):
    engine = make_engine(database_url)
    all_models()
    Base.metadata.create_all(engine)
    with pytest.raises(RuntimeError, match="no migration history"):
        init_db(engine)
    engine.dispose()


@pytest.mark.parametrize("missing", ["TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY"])
def test_a_shared_database_needs_shared_secrets(monkeypatch, missing):
    for name in ("TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY"):
        monkeypatch.setenv(name, "set")
    monkeypatch.delenv(missing)
    with pytest.raises(SystemExit, match=f"{missing} must be set"):
        create_app({"database_url": "postgresql+psycopg://hotline@db.invalid/hotline"})
