"""Alembic's environment: the models' metadata, the connection handed over by init-db or the URL."""
from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from models.storage.db import Base, Migration, UTCDateTime, all_models

all_models()
config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj, autogen_context):
    """Write UTCDateTime as the plain DateTime it is stored as."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def run() -> None:
    """Run the migrations on the given connection, or on one made from sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is None:
        section = config.get_section(config.config_ini_section, {})
        url = context.get_x_argument(as_dictionary=True).get("url")  # -x url=... on the command line
        if url:
            section["sqlalchemy.url"] = url
        engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
        with engine.connect() as connection:
            migrate(connection)
    else:
        migrate(connection)


def note_applied(*, ctx, step, heads, run_args) -> None:
    """Tell init_db (models.storage.db) each migration run: its revision and docstring's first line."""
    applied = config.attributes.get("applied")
    if applied is not None and step.is_upgrade and not step.is_stamp:
        doc = step.up_revision.doc or ""  # the revision's message: its docstring's first paragraph
        applied.append(Migration(step.up_revision_id, " ".join(doc.split())))


def migrate(connection) -> None:
    """Configure the context (batch mode on SQLite, which cannot alter tables) and upgrade."""
    context.configure(connection=connection, target_metadata=target_metadata, render_item=render_item,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                      on_version_apply=note_applied)
    with context.begin_transaction():
        context.run_migrations()


run()
