"""The agent console under /agent: login, live handoffs and call-backs, card operations, ratings, reports."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, Request, current_app, g
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.agents import AgentAccount
from models.storage.db import make_read_sessionmaker

login_manager = LoginManager()
login_manager.login_view = "agent.login"
login_manager.login_message = "请先登录。"
csrf = CSRFProtect()


@dataclass
class Agent(UserMixin):  # type: ignore[misc]  # Flask-Login has no type information: UserMixin is Any
    """The logged-in agent, detached from any database session."""

    id: int
    username: str
    display_name: str
    role: str
    epoch: int = 0  # the account's session epoch when the agent logged in

    @property
    def is_admin(self) -> bool:
        """Tell whether the agent may reach admin pages."""
        return self.role == "admin"

    def get_id(self) -> str:
        """Return what the session cookie keeps: the account and its session epoch ("7.2")."""
        return f"{self.id}.{self.epoch}"

    @classmethod
    def of(cls, account: AgentAccount) -> Agent:
        """Return the agent for an account row."""
        return cls(account.id, account.username, account.display_name, account.role, account.session_epoch)


def db() -> Session:
    """Return the request's session for work that writes (opened on first use, closed at teardown).

    On SQLite its first statement takes the write lock until the commit: commit before anything slow.
    """
    if "db" not in g:
        g.db = current_app.extensions["sessions"]()
    session: Session = g.db
    return session


def reader() -> Session:
    """Return the request's read-only session: no write lock on SQLite (closed at teardown)."""
    if "reader" not in g:
        g.reader = current_app.extensions["read_sessions"]()
    session: Session = g.reader
    return session


@login_manager.user_loader  # type: ignore[untyped-decorator]  # Flask-Login has no type information
def load_agent(token: str) -> Agent | None:
    """Return the agent of a session cookie, if the account is active and has not ended its sessions since."""
    agent_id, _, epoch = token.partition(".")
    if not (agent_id.isdigit() and epoch.isdigit()):
        return None  # a cookie from before session epochs, or not ours
    with current_app.extensions["read_sessions"]() as s:  # its own: no transaction left open after it
        account = s.scalars(select(AgentAccount).where(AgentAccount.id == int(agent_id), AgentAccount.active)).first()
    if account is None or account.session_epoch != int(epoch):
        return None
    return Agent.of(account)


class ConsoleSessions(SecureCookieSessionInterface):
    """Signed cookie sessions for the console; none for Twilio's webhooks, which carry no cookie.

    Flask would otherwise build a signing serializer for every webhook (about 0.07 ms each).
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        path = request.path
        if path in ("/voice", "/healthz") or path.startswith("/voice/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_app(app: Flask, *, no_csrf: tuple[Blueprint, ...] = ()) -> None:
    """Mount the console: sessions signed with the secret key, CSRF on every form (but `no_csrf`'s), login."""
    settings = app.extensions["settings"]
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        WTF_CSRF_TIME_LIMIT=8 * 3600,
    )
    from ivr.console import admin, auth, callbacks, calls, errors, holders, reports, twofactor, views  # noqa: F401  # pages on views.bp

    app.extensions["read_sessions"] = make_read_sessionmaker(app.extensions["engine"])
    reports.init_app(app)  # the per-worker caches of today's figures and the flow drawings
    app.session_interface = ConsoleSessions()
    csrf.init_app(app)
    for bp in no_csrf:
        csrf.exempt(bp)
    login_manager.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(twofactor.bp)  # /agent/2fa: the second step of logging in, enrolment
    errors.init_app(app)

    @app.teardown_appcontext
    def close_db(_exc: BaseException | None) -> None:
        for name in ("db", "reader"):
            session = g.pop(name, None)
            if session is not None:
                session.close()
