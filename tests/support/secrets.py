"""The test secrets, put in the environment the way an operator sets the real ones."""
from __future__ import annotations

from tests.support.constants import PIN_KEY, TOKEN


def use_test_secrets(monkeypatch) -> None:
    """Set the test secrets and clear what would point the app elsewhere (a database, a config file)."""
    for name in ("DATABASE_URL", "IVR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", PIN_KEY)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
