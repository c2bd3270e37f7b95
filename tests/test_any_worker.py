"""Call state is a database row: any worker can answer any webhook of a call."""
from __future__ import annotations

from ivr import create_app
from ivr.sim.phone import ClientTransport, Phone
from tests.support import ALICE, PIN, TOKEN, card_of


class Alternating:
    """Sends each webhook of a call to the next of several apps in turn."""

    def __init__(self, apps):
        self.transports = [ClientTransport(a.test_client()) for a in apps]
        self.used: list[int] = []

    def post(self, url, form, headers):
        i = len(self.used) % len(self.transports)
        self.used.append(i)
        return self.transports[i].post(url, form, headers)


def test_a_call_served_by_two_apps_in_turn_completes_as_if_served_by_one(app, ledger, tmp_path):
    other = create_app({"database_url": app.extensions["settings"].database_url})
    transport = Alternating([app, other])
    phone = Phone(transport, TOKEN, catalogue=app.extensions["catalogue"])
    ledger.add(ALICE)
    phone.dial().press("1").press(ALICE + "#").press(PIN + "#").press("1")
    # Alternating sends the ID number, the PIN and the confirmation each to the app that did not
    # answer the step before: each found what the other saved.
    assert transport.used == [0, 1, 0, 1, 0]
    assert phone.prompts == ["loss.done", "loss.result_menu", "keys.agent_back"]
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    assert ledger.history(card_of(ALICE))[-1] == ("normal", "verbal_loss", "ivr", phone.call_sid)
