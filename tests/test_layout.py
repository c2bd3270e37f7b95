"""The rooms and what each may import (README "Layout"), read from the source, imports in functions too."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ivr.config import ROOT

WEB = ("flask", "flask_login", "flask_wtf", "werkzeug", "jinja2", "wtforms")
TWILIO = ("twilio",)
SQL = ("sqlalchemy", "alembic", "psycopg")

# Each room, and the imports it may never make (top-level names of packages or of our modules).
RULES = {
    "models": ("ivr", *WEB, *TWILIO, "tests", "bench"),
    "ivr/callflow": (*WEB, *TWILIO, *SQL, "ivr.voice", "ivr.console", "ivr.commands", "ivr.sim", "ivr.monitoring",
                     "tests"),
    "ivr/voice": ("ivr.console", "ivr.commands", "ivr.sim", "tests"),
    "ivr/console": ("ivr.voice", "ivr.commands", "ivr.sim", "tests"),
    "ivr/sim": ("ivr.console", "ivr.commands", "tests"),
    # Metrics and logs: ivr.voice counts into them; they know nothing of the rooms that use them.
    "ivr/monitoring": (*TWILIO, "ivr.voice", "ivr.console", "ivr.commands", "ivr.sim", "tests"),
    "ivr/commands": ("tests",),
    "ivr/config.py": (*WEB, *TWILIO, *SQL, "ivr.voice", "ivr.console", "ivr.commands", "ivr.sim", "ivr.monitoring"),
    "models/storage": ("models.services",),  # plumbing, below the use cases (it registers every table)
}
# Only the fast path may reach past SQLAlchemy's public API (its contract is in its docstring).
FAST_PATH = ROOT / "models" / "storage" / "fastpath.py"
INTERNALS = re.compile(r"dbapi_connection|driver_connection|\.bind_names|positiontup|escaped_bind_names|\.kw\[\"bind\"\]")


def sources(room: str) -> list[Path]:
    """Return the Python files of a room (a folder or one file)."""
    path = ROOT / room
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Return every module a file imports, wherever the import statement stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def breaks(name: str, forbidden: tuple[str, ...]) -> bool:
    """Tell whether a module name is one of the forbidden ones or inside one."""
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("room", RULES)
def test_each_room_imports_only_what_its_rules_allow(room):
    assert sources(room), f"{room} has no Python files"
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources(room) for name in imported(path) if breaks(name, RULES[room])
    }
    assert found == set()


def test_only_the_fast_path_reaches_past_sqlalchemys_public_api():
    found = {
        str(path.relative_to(ROOT))
        for room in ("ivr", "models", "bench")
        for path in sources(room)
        if path != FAST_PATH and INTERNALS.search(path.read_text(encoding="utf-8"))
    }
    assert found == set()


def test_the_rules_catch_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def later():\n    from flask import current_app\n    import sqlalchemy.orm\n")
    assert {n for n in imported(bad) if breaks(n, RULES["ivr/callflow"])} == {
        "flask", "flask.current_app", "sqlalchemy.orm"}


def test_tests_import_shared_helpers_from_tests_support_only():
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        for name in imported(path)
        if name.startswith("tests.") and not breaks(name, ("tests.support",))
    }
    assert found == set()


# The audit trail is append-only (models.agents.AuditEvent): no code may change or delete its rows.
AUDIT_CHANGE = re.compile(r"\b(update|delete)\(\s*AuditEvent\b|\b(UPDATE|DELETE\s+FROM|TRUNCATE(\s+TABLE)?)\s+\"?audit_events\b",
                          re.IGNORECASE)


def test_no_code_updates_or_deletes_audit_rows():
    found = {
        str(path.relative_to(ROOT))
        for room in ("ivr", "models", "bench", "scripts")
        for path in sources(room)
        if AUDIT_CHANGE.search(path.read_text(encoding="utf-8"))
    }
    assert found == set()


@pytest.mark.parametrize("line", ["s.execute(delete(AuditEvent).where(AuditEvent.id == 1))",
                                  "update( AuditEvent).values(detail='')", 'conn.execute(text("DELETE FROM audit_events"))',
                                  "UPDATE audit_events SET detail = ''", "TRUNCATE TABLE audit_events"])
def test_the_audit_check_catches_a_change(line):
    assert AUDIT_CHANGE.search(line)
