"""Small helpers shared by the whole-call tests."""
from __future__ import annotations

from tests.conftest import ALICE, PIN


def verified(call, key: str = "1", id_number: str = ALICE, pin: str = PIN, **kw):
    """Dial, choose a service and pass verification."""
    return call(**kw).dial().press(key).press(id_number + "#").press(pin + "#")
