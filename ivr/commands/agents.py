"""`flask --app wsgi agent ...`: console accounts (passwords hashed, never echoed)."""
from __future__ import annotations

import getpass
import sys

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from models.agents import AgentAccount, end_sessions, lift_login_limit, record_audit
from models.clock import utcnow
from models.storage.db import init_db
from models.vocabulary import AuditAction

agent = AppGroup("agent", help="Agent console accounts.")


@agent.command("create")
@click.argument("username")
@click.option("--name", "display_name", help="the name shown in the console (default: the username)")
@click.option("--admin", is_flag=True, help="may clear PIN lockouts and see the audit trail")
@click.password_option(prompt="Password", help="asked for when not given (prefer the prompt)")
def create(username: str, display_name: str | None, admin: bool, password: str) -> None:
    """Create an agent account, or reset its password, name and role (ending its open sessions)."""
    if len(password) < 8:
        click.echo("the password needs at least 8 characters", err=True)
        sys.exit(2)
    init_db(current_app.extensions["engine"])
    with current_app.extensions["sessions"]() as s, s.begin():
        account = s.scalars(select(AgentAccount).where(AgentAccount.username == username)).first()
        if account is None:
            account = AgentAccount(username=username, created_at=utcnow())
            s.add(account)
        else:
            end_sessions(s, account.id)  # a cookie from before the reset opens nothing
        account.display_name = display_name or account.display_name or username
        account.password_hash = generate_password_hash(password)
        account.role = "admin" if admin else "agent"
        account.active = True
    click.echo(f"agent {username} ready ({'admin' if admin else 'agent'})")


@agent.command("disable")
@click.argument("username")
def disable(username: str) -> None:
    """Disable an account: it can no longer log in, and its open sessions end."""
    with current_app.extensions["sessions"]() as s, s.begin():
        account = s.scalars(select(AgentAccount).where(AgentAccount.username == username)).first()
        if account is None:
            click.echo(f"no agent {username}", err=True)
            sys.exit(1)
        account.active = False
        end_sessions(s, account.id)
    click.echo(f"agent {username} disabled")


@agent.command("unlock")
@click.argument("username")
def unlock(username: str) -> None:
    """Let USERNAME log in to the console again at once after too many failed tries (audited)."""
    settings = current_app.extensions["settings"]
    now = utcnow()
    with current_app.extensions["sessions"]() as s, s.begin():
        lifted = lift_login_limit(s, username, now=now, policy=settings.login_limit)
        record_audit(s, AuditAction.LIFT_LOGIN_LIMIT, agent=f"cli:{os_user()}", address="", now=now, detail=username)
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
