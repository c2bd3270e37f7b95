"""Setting a console password: the policy (models.passwords), then Werkzeug's scrypt hash, for the
admin pages and `flask --app wsgi agent create` alike."""
from __future__ import annotations

from werkzeug.security import generate_password_hash

from models.agents import AccountRefused
from models.passwords import password_problem


def checked_hash(password: str, *, username: str, display_name: str = "") -> str:
    """Return the password's hash once the policy allows it; raise AccountRefused saying why not.

    Takes about 0.1 s of CPU (scrypt, Werkzeug's default, as the login checks it): call it before
    the unit of work's first statement, so that no write lock is held meanwhile on SQLite.
    """
    problem = password_problem(password, username=username, display_name=display_name)
    if problem is not None:
        raise AccountRefused(problem)
    return generate_password_hash(password)
