"""What the tests share: constants, the ledger helper, signed webhooks, the console driver, ports.

Tests import from here (`from tests.support import ALICE, verified`); no test imports another
test module or the conftest.
"""
from tests.support.calls import BASE, FORM, calls, events, signed_post, verified
from tests.support.console import ADMIN, AGENT, Console, create_agent
from tests.support.constants import ALICE, BOB, MONDAY_10AM, NOBODY, PIN, PIN_KEY, TOKEN, XENA
from tests.support.database import ON_POSTGRES, TEST_DATABASE_URL, fresh_database
from tests.support.ledger import Ledger, card_of, counts
from tests.support.net import free_port
from tests.support.secrets import use_test_secrets

__all__ = [
    "ADMIN", "AGENT", "ALICE", "BASE", "BOB", "FORM", "MONDAY_10AM", "NOBODY", "ON_POSTGRES", "PIN", "PIN_KEY",
    "TEST_DATABASE_URL", "TOKEN", "XENA", "Console", "Ledger", "calls", "card_of", "counts", "create_agent",
    "events", "fresh_database", "free_port", "signed_post", "use_test_secrets", "verified",
]
