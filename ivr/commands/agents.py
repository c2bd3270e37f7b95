"""`flask --app wsgi agent ...`: console accounts (passwords hashed, never echoed).

The same rules as the console's admin page (models.agents: create_account, set_password,
set_active, set_role; the password policy of models.passwords), audited as `cli:<os user>`.
"""
from __future__ import annotations

import getpass
import sys

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from ivr.console.passwords import checked_hash
from models.agents import (
    AccountProblem,
    AccountRefused,
    Actor,
    AgentAccount,
    account_named,
    create_account,
    lift_login_limit,
    record_audit,
    set_active,
    set_display_name,
    set_password,
    set_role,
)
from models.clock import utcnow
from models.passwords import MAX_LENGTH, MIN_LENGTH, PasswordProblem
from models.storage.db import init_db
from models.vocabulary import AuditAction

agent = AppGroup("agent", help="Agent console accounts.")

REFUSALS = {
    PasswordProblem.TOO_SHORT: f"the password needs at least {MIN_LENGTH} characters",
    PasswordProblem.TOO_LONG: f"the password may have at most {MAX_LENGTH} characters",
    PasswordProblem.HAS_USERNAME: "the password may not contain the username",
    PasswordProblem.COMMON: "the password is too common or too easy to guess (common passwords, keyboard runs, "
                            "repeated or sequential characters, words of the username or the service): choose "
                            "a longer passphrase",
    AccountProblem.BAD_USERNAME: "a username is 3-64 letters, digits, dots, hyphens or underscores",
    AccountProblem.TAKEN: "another account has that username",
    AccountProblem.BAD_NAME: "the name must not be empty or longer than 64 characters",
    AccountProblem.BAD_ROLE: "the role is agent or admin",
    AccountProblem.LAST_ADMIN: "it is the last active admin: make another admin first",
}


def operator() -> Actor:
    """Return who runs the command, as the audit trail names them."""
    return Actor(f"cli:{os_user()}")


def refuse(err: AccountRefused) -> None:
    """Say in one line why the change is refused, and exit 2."""
    click.echo(REFUSALS[err.problem], err=True)
    sys.exit(2)


@agent.command("create")
@click.argument("username")
@click.option("--name", "display_name", help="the name shown in the console (default: the username)")
@click.option("--admin", is_flag=True, help="may manage accounts, clear PIN lockouts and see the audit trail")
@click.option("--temporary", is_flag=True, help="the owner must choose a new password at the first login")
@click.password_option(prompt="Password", help="asked for when not given (prefer the prompt)")
def create(username: str, display_name: str | None, admin: bool, temporary: bool, password: str) -> None:
    """Create an agent account, or reset its password, name and role (ending its open sessions).

    The password policy: at least 15 characters, not containing the username, not a common or
    easily guessed password."""
    role = "admin" if admin else "agent"
    init_db(current_app.extensions["engine"])
    with current_app.extensions["read_sessions"]() as r:
        existing = account_named(r, username)
    name = display_name or (existing.display_name if existing else username)
    try:
        password_hash = checked_hash(password, username=username, display_name=name)  # before any lock
        now, by = utcnow(), operator()
        with current_app.extensions["sessions"]() as s, s.begin():
            account = account_named(s, username)
            if account is None:
                create_account(s, username=username, display_name=name, role=role, password_hash=password_hash,
                               temporary=temporary, by=by, now=now)
            else:
                set_display_name(s, account, name)
                set_role(s, account, role, by=by, now=now)
                set_active(s, account, True, by=by, now=now)
                set_password(s, account, password_hash=password_hash, temporary=temporary, by=by, now=now)
    except AccountRefused as err:
        refuse(err)
    then = ", to choose a new password at the first login" if temporary else ""
    click.echo(f"agent {username} ready ({role}){then}")


def _change(username: str, change: str) -> None:
    """Disable or enable an account; exit 1 when there is none."""
    with current_app.extensions["sessions"]() as s, s.begin():
        account = account_named(s, username)
        if account is None:
            click.echo(f"no agent {username}", err=True)
            sys.exit(1)
        try:
            set_active(s, account, change == "enabled", by=operator(), now=utcnow())
        except AccountRefused as err:
            refuse(err)
    click.echo(f"agent {username} {change}")


@agent.command("disable")
@click.argument("username")
def disable(username: str) -> None:
    """Disable an account: it can no longer log in, and its open sessions end (not the last active admin)."""
    _change(username, "disabled")


@agent.command("enable")
@click.argument("username")
def enable(username: str) -> None:
    """Let a disabled account log in again."""
    _change(username, "enabled")


@agent.command("unlock")
@click.argument("username")
def unlock(username: str) -> None:
    """Let USERNAME log in to the console again at once after too many failed tries (audited)."""
    settings = current_app.extensions["settings"]
    now = utcnow()
    with current_app.extensions["sessions"]() as s, s.begin():
        lifted = lift_login_limit(s, username, now=now, policy=settings.login_limit)
        record_audit(s, AuditAction.LIFT_LOGIN_LIMIT, agent=operator().who, address="", now=now, detail=username)
    click.echo(f"agent {username}: logins allowed again ({lifted} failed tries no longer count)")


def os_user() -> str:
    """Name who ran the command, for the audit trail."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor in the password database
        return "unknown"


@agent.command("list")
def list_accounts() -> None:
    """List the accounts."""
    with current_app.extensions["sessions"]() as s:
        for a in s.scalars(select(AgentAccount).order_by(AgentAccount.username)):
            click.echo(f"{a.username}\t{a.display_name}\t{a.role}\t{'active' if a.active else 'disabled'}")
