"""An empty database per test: a SQLite file, or a database of its own on TEST_DATABASE_URL's server."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

# TEST_DATABASE_URL=postgresql+psycopg://user@host:port/db runs the suite on PostgreSQL: each test
# gets a database of its own, made on that server and dropped afterwards. Unset: SQLite files.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
ON_POSTGRES = bool(TEST_DATABASE_URL and TEST_DATABASE_URL.startswith("postgresql"))


@contextmanager
def fresh_database(tmp_path: Path, name: str = "ledger") -> Iterator[str]:
    """Yield the URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path / name}.db"
        return
    url = make_url(TEST_DATABASE_URL)
    db = f"t_{name}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
    try:
        yield url.set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.dispose()
