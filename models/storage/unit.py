"""One webhook's unit of work: its transaction's connection, and an ORM session opened on it when first asked.

Most steps (menus, keyed entries) never touch the ledger and so never pay for a session. The
session joins the transaction: it may roll it back, never commits it (whoever began it does).
"""
from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker


class UnitOfWork:
    """The connection a webhook's transaction runs on, and the ledger's session inside it."""

    def __init__(self, connection: Connection, sessions: sessionmaker[Session]):
        self.connection = connection
        self._sessions = sessions
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        """Return the ORM session of this transaction, opened when first asked."""
        if self._session is None:
            self._session = self._sessions(bind=self.connection, join_transaction_mode="rollback_only")
        return self._session

    @property
    def runs_on(self) -> Connection | Session:
        """Return what the unit's own statements run on: the session, once one was opened, else the connection.

        The fast path (`models.storage.fastpath`) flushes a session before it runs a statement on
        it, so what the ORM changed is written first, in the same transaction; nobody flushes by hand.
        """
        return self.connection if self._session is None else self._session

    def close(self) -> None:
        """Let go of the session, if one was opened (the transaction is not the unit's to end)."""
        if self._session is not None:
            self._session.close()
            self._session = None
