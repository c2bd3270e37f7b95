"""The card rules on the models themselves: loss reports, release, lapse, history, PIN guard."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from models.cards import (
    IMPORT,
    REASON_FROM_IMPORT,
    REASON_IMPORTED,
    REASON_LOSS_LAPSED,
    STATUSES,
    Actor,
    Card,
    Cardholder,
    CardRuleError,
    CardState,
    History,
    LossPolicy,
    activation,
    holder_by_id_number,
    import_change,
    import_opening,
    lapse_outcome,
    release,
    status_sync,
    verbal_loss_report,
)
from models.clock import utcnow
from models.identity import id_key
from models.pins import LOCKED, OK, WRONG, PinGuard, PinPolicy, check_pin, clear_lock
from tests.support import ALICE, BOB, NOBODY, PIN, card_of

IVR = Actor("ivr", call_sid="CA0123456789abcdef")
AGENT = Actor("agent", who="agent-07")
WEEK = LossPolicy(verbal_valid_days=7)
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the clock fixture's moment


@contextmanager
def card_in(app, card_number: str) -> Iterator[Card]:
    """Open a unit of work on one card and commit it at the end."""
    with app.extensions["sessions"]() as s, s.begin():
        yield s.scalars(select(Card).where(Card.card_number == card_number)).one()


def test_the_clock_fixture_is_the_moment_these_tests_assume(clock):
    assert utcnow() == NOW


# --- verbal loss report -------------------------------------------------------------------

@pytest.mark.parametrize("status", ["normal", "pending_activation"])
def test_a_verbal_loss_report_freezes_a_normal_or_pending_card(app, ledger, status):
    ledger.add(ALICE, status=status)
    with card_in(app, card_of(ALICE)) as card:
        expires = card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK)
    assert expires == NOW + timedelta(days=7)
    card = ledger.card(card_of(ALICE))
    assert card.status == "verbal_loss"
    assert card.status_before_loss == status
    assert card.loss_reported_at == NOW
    assert card.loss_expires_at == NOW + timedelta(days=7)
    assert card.loss_scope == "both"


def test_the_validity_of_a_verbal_loss_report_comes_from_the_policy(app, ledger):
    ledger.add(ALICE)
    with card_in(app, card_of(ALICE)) as card:
        expires = card.report_verbal_loss(now=NOW, actor=IVR, policy=LossPolicy(verbal_valid_days=15))
    assert expires == NOW + timedelta(days=15)


def test_a_verbal_loss_report_records_which_functions_it_froze(app, ledger):
    ledger.add(ALICE)
    with card_in(app, card_of(ALICE)) as card:
        card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK, scope="social_security")
    assert ledger.card(card_of(ALICE)).loss_scope == "social_security"


@pytest.mark.parametrize("status", ["in_production", "verbal_loss", "formal_loss", "cancelled"])
def test_a_verbal_loss_report_is_refused_from_any_other_status(app, ledger, status):
    ledger.add(ALICE, status=status)
    before = ledger.history(card_of(ALICE))
    with card_in(app, card_of(ALICE)) as card:
        with pytest.raises(CardRuleError) as refused:
            card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK)
    # The unit of work committed: the refusal itself must have left nothing behind.
    assert refused.value.status == status
    assert refused.value.change == "report_verbal_loss"
    assert ledger.card(card_of(ALICE)).status == status
    assert ledger.history(card_of(ALICE)) == before


# --- release ------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["normal", "pending_activation"])
def test_release_returns_the_card_to_the_status_before_the_loss(app, ledger, status):
    ledger.add(ALICE, status=status)
    with card_in(app, card_of(ALICE)) as card:
        card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK)
    with card_in(app, card_of(ALICE)) as card:
        back = card.release_verbal_loss(now=NOW + timedelta(hours=1), actor=AGENT)
    assert back == status
    card = ledger.card(card_of(ALICE))
    assert card.status == status
    assert (card.status_before_loss, card.loss_reported_at, card.loss_expires_at, card.loss_scope) == (
        None, None, None, None)
    assert ledger.history(card_of(ALICE))[-1] == ("verbal_loss", status, "agent", None)


@pytest.mark.parametrize("status", ["normal", "pending_activation", "in_production", "formal_loss", "cancelled"])
def test_release_is_refused_unless_the_card_is_under_a_verbal_loss_report(app, ledger, status):
    ledger.add(ALICE, status=status)
    before = ledger.history(card_of(ALICE))
    with card_in(app, card_of(ALICE)) as card:
        with pytest.raises(CardRuleError) as refused:
            card.release_verbal_loss(now=NOW, actor=IVR)
    assert refused.value.status == status
    assert ledger.card(card_of(ALICE)).status == status
    assert ledger.history(card_of(ALICE)) == before


def test_a_released_card_is_no_longer_lapsed_later(app, ledger):
    ledger.add(ALICE)
    with card_in(app, card_of(ALICE)) as card:
        card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK)
        card.release_verbal_loss(now=NOW, actor=IVR)
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=NOW + timedelta(days=30), policy=WEEK) is False
    assert len(ledger.history(card_of(ALICE))) == 3


# --- lapse at expiry ----------------------------------------------------------------------

def reported(app, ledger, status: str = "normal") -> datetime:
    """Put ALICE's card under a verbal loss report made at NOW; return the expiry."""
    ledger.add(ALICE, status=status)
    with card_in(app, card_of(ALICE)) as card:
        return card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK)


def test_lapse_does_nothing_before_expiry(app, ledger):
    expires = reported(app, ledger)
    for moment in (NOW, NOW + timedelta(days=3), expires - timedelta(microseconds=1)):
        with card_in(app, card_of(ALICE)) as card:
            assert card.lapse_if_due(now=moment, policy=WEEK) is False
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    assert len(ledger.history(card_of(ALICE))) == 2


@pytest.mark.parametrize("status", ["normal", "pending_activation"])
def test_lapse_releases_exactly_at_expiry_with_a_system_history_row(app, ledger, status):
    from models.cards import CardEvent

    expires = reported(app, ledger, status)
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=expires, policy=WEEK) is True
    assert ledger.card(card_of(ALICE)).status == status
    assert ledger.history(card_of(ALICE))[-1] == ("verbal_loss", status, "system", None)
    with app.extensions["sessions"]() as s:
        last = s.scalars(select(CardEvent).order_by(CardEvent.id.desc())).first()
        assert last.at == expires


def test_a_late_lapse_is_dated_at_the_expiry_not_when_noticed(app, ledger):
    from models.cards import CardEvent

    expires = reported(app, ledger)
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=expires + timedelta(days=40), policy=WEEK) is True
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(CardEvent).order_by(CardEvent.id.desc())).first().at == expires


def test_lapse_happens_only_once(app, ledger):
    expires = reported(app, ledger)
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=expires, policy=WEEK) is True
        assert card.lapse_if_due(now=expires + timedelta(days=1), policy=WEEK) is False
    assert len(ledger.history(card_of(ALICE))) == 3


def test_with_a_cancel_policy_the_card_is_cancelled_at_expiry(app, ledger):
    expires = reported(app, ledger)
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=expires, policy=LossPolicy(at_expiry="cancel")) is True
    assert ledger.card(card_of(ALICE)).status == "cancelled"
    assert ledger.history(card_of(ALICE))[-1] == ("verbal_loss", "cancelled", "system", None)


def test_a_formal_loss_never_lapses(app, ledger):
    ledger.add(ALICE, status="formal_loss")
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=NOW + timedelta(days=3650), policy=WEEK) is False
    assert ledger.card(card_of(ALICE)).status == "formal_loss"


def test_a_verbal_loss_learnt_by_import_lapses_from_when_it_was_learnt(app, ledger):
    ledger.add(ALICE, status="verbal_loss")
    card = ledger.card(card_of(ALICE))
    assert card.loss_expires_at == NOW + timedelta(days=7)
    with card_in(app, card_of(ALICE)) as card:
        assert card.lapse_if_due(now=NOW + timedelta(days=7), policy=WEEK) is True
    assert ledger.card(card_of(ALICE)).status == "normal"


# --- history ------------------------------------------------------------------------------

def test_every_change_appends_a_history_row_saying_who_and_how(app, ledger, clock):
    from models.cards import CardEvent

    ledger.add(ALICE)
    with card_in(app, card_of(ALICE)) as card:
        card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK)
    with card_in(app, card_of(ALICE)) as card:
        card.release_verbal_loss(now=NOW + timedelta(minutes=5), actor=AGENT)
    with card_in(app, card_of(ALICE)) as card:
        card.report_verbal_loss(now=NOW + timedelta(minutes=9), actor=Actor("bank", who="teller 3"), policy=WEEK)
    with card_in(app, card_of(ALICE)) as card:
        card.lapse_if_due(now=NOW + timedelta(days=8), policy=WEEK)
    with app.extensions["sessions"]() as s:
        rows = [
            (e.status_before, e.status_after, e.channel, e.actor, e.call_sid, e.at)
            for e in s.scalars(select(CardEvent).order_by(CardEvent.id))
        ]
    assert rows == [
        (None, "normal", "import", None, None, NOW),
        ("normal", "verbal_loss", "ivr", None, "CA0123456789abcdef", NOW),
        ("verbal_loss", "normal", "agent", "agent-07", None, NOW + timedelta(minutes=5)),
        ("normal", "verbal_loss", "bank", "teller 3", None, NOW + timedelta(minutes=9)),
        ("verbal_loss", "normal", "system", None, None, NOW + timedelta(days=7, minutes=9)),
    ]


def test_history_rows_keep_their_reason(app, ledger):
    from models.cards import CardEvent

    reported(app, ledger)
    with app.extensions["sessions"]() as s:
        reasons = [e.reason for e in s.scalars(select(CardEvent).order_by(CardEvent.id))]
    assert reasons == ["imported", "verbal loss report"]


# --- one rule, one function: what the Card methods apply ----------------------------------
#
# Each rule is a pure function of a card's state (no session): the Card methods, and through
# them the phone and the console, apply what it returns, and `ledger import` writes what it
# returns (tests/test_bulk_import.py). A method adds nothing of its own: same state, same rows.

DAY = timedelta(days=1)
STATES = {
    **{status: CardState(status) for status in STATUSES if status != "verbal_loss"},
    "verbal loss, due": CardState("verbal_loss", "normal", NOW - 8 * DAY, NOW - DAY, "both"),
    "verbal loss when pending, due": CardState("verbal_loss", "pending_activation", NOW - 8 * DAY, NOW - DAY,
                                               "social_security"),
    "verbal loss, due at this moment": CardState("verbal_loss", "normal", NOW - 7 * DAY, NOW, "both"),
    "verbal loss, not due": CardState("verbal_loss", "normal", NOW, NOW + 7 * DAY, "financial"),
    "verbal loss, status before unknown": CardState("verbal_loss", None, NOW - 8 * DAY, NOW - DAY, "both"),
}
CANCEL = LossPolicy(at_expiry="cancel")
METHODS = {  # name: (the Card method, the rule function it applies)
    "report_verbal_loss": (lambda card: card.report_verbal_loss(now=NOW, actor=IVR, policy=WEEK, scope="financial"),
                           lambda state: verbal_loss_report(state, now=NOW, actor=IVR, policy=WEEK,
                                                            scope="financial")),
    "release_verbal_loss": (lambda card: card.release_verbal_loss(now=NOW, actor=AGENT),
                            lambda state: release(state, now=NOW, actor=AGENT)),
    "activate": (lambda card: card.activate(now=NOW, actor=IVR), lambda state: activation(state, now=NOW, actor=IVR)),
    "lapse_if_due": (lambda card: card.lapse_if_due(now=NOW, policy=WEEK),
                     lambda state: lapse_outcome(state, now=NOW, policy=WEEK)),
    "lapse_if_due, cancel at expiry": (lambda card: card.lapse_if_due(now=NOW, policy=CANCEL),
                                       lambda state: lapse_outcome(state, now=NOW, policy=CANCEL)),
    "sync_status": (lambda card: card.sync_status("formal_loss", now=NOW, actor=AGENT, reason="bank", policy=WEEK),
                    lambda state: status_sync(state, "formal_loss", now=NOW, actor=AGENT, reason="bank",
                                              policy=WEEK)),
    "take_import": (lambda card: card.take_import("normal", now=NOW, policy=CANCEL),
                    lambda state: import_change(state, "normal", now=NOW, policy=CANCEL)),
}


def loose_card(state: CardState) -> Card:
    """A card in the given state, of a holder, outside any session."""
    card = Card(card_number="QD-LOOSE")
    (card.status, card.status_before_loss, card.loss_reported_at, card.loss_expires_at, card.loss_scope) = state
    Cardholder(id_number=ALICE, cards=[card])
    return card


def rows_of(card: Card) -> list[History]:
    return [History(e.at, e.status_before, e.status_after, e.channel, e.actor, e.call_sid, e.reason)
            for e in card.events]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("start", STATES)
def test_each_card_method_records_exactly_what_its_rule_function_returns(start, method):
    apply, rule = METHODS[method]
    state, card = STATES[start], loose_card(STATES[start])
    try:
        decided = rule(state)
    except CardRuleError as refused:
        with pytest.raises(CardRuleError) as also:
            apply(card)
        assert (also.value.change, also.value.status) == (refused.change, refused.status)
        assert (card.state, card.events) == (state, [])
        return
    changes = decided if isinstance(decided, list) else [] if decided is None else [decided]
    apply(card)
    assert card.state == (changes[-1].state if changes else state)
    assert rows_of(card) == [change.history for change in changes]


@pytest.mark.parametrize("status", STATUSES)
def test_a_card_opened_by_import_starts_as_import_opening_says(status):
    card = Card(card_number="QD-NEW")
    card.open_from_import(status, now=NOW, policy=WEEK)
    opening = import_opening(status, now=NOW, policy=WEEK)
    assert (card.state, rows_of(card)) == (opening.state, [opening.history])
    assert opening.history[2:] == (status, "import", None, None, REASON_IMPORTED)


def test_a_verbal_loss_learnt_by_import_is_taken_as_reported_then_from_normal_for_a_week():
    opening = import_opening("verbal_loss", now=NOW, policy=WEEK)
    assert opening.state == CardState("verbal_loss", "normal", NOW, NOW + 7 * DAY, "both")
    synced = status_sync(CardState("pending_activation"), "verbal_loss", now=NOW, actor=IMPORT,
                         reason=REASON_FROM_IMPORT, policy=WEEK)
    assert synced is not None and synced.state.status_before_loss == "pending_activation"
    from_lost = status_sync(CardState("formal_loss"), "verbal_loss", now=NOW, actor=IMPORT,
                            reason=REASON_FROM_IMPORT, policy=WEEK)
    assert from_lost is not None and from_lost.state.status_before_loss == "normal"


def test_an_import_lets_a_due_report_lapse_at_its_expiry_before_taking_the_files_status():
    due = STATES["verbal loss when pending, due"]
    lapse, sync = import_change(due, "formal_loss", now=NOW, policy=WEEK)
    assert lapse.history == History(NOW - DAY, "verbal_loss", "pending_activation", "system", None, None,
                                    REASON_LOSS_LAPSED)
    assert sync.history == History(NOW, "pending_activation", "formal_loss", "import", None, None, REASON_FROM_IMPORT)
    assert sync.state == CardState("formal_loss")
    assert import_change(STATES["verbal loss, not due"], "verbal_loss", now=NOW, policy=WEEK) == []


# --- which card the phone acts on ---------------------------------------------------------

def test_newest_card_skips_cancelled_cards_and_picks_the_newest_application(app, ledger):
    ledger.add(ALICE, card="QD-2025-CANCELLED", status="cancelled", applied_on=date(2025, 6, 1))
    ledger.add(ALICE, card="QD-2020-NORMAL", status="normal", applied_on=date(2020, 1, 1))
    ledger.add(ALICE, card="QD-2023-FORMAL", status="formal_loss", applied_on=date(2023, 5, 1))
    ledger.add(ALICE, card="QD-2021-PENDING", status="pending_activation", applied_on=date(2021, 1, 1))
    with app.extensions["sessions"]() as s:
        holder = holder_by_id_number(s, ALICE)
        assert holder.newest_card().card_number == "QD-2023-FORMAL"
        assert [c.card_number for c in holder.cards_newest_first()] == [
            "QD-2025-CANCELLED", "QD-2023-FORMAL", "QD-2021-PENDING", "QD-2020-NORMAL"]


def test_newest_card_is_the_later_entry_when_application_dates_tie(app, ledger):
    ledger.add(ALICE, card="QD-FIRST", applied_on=date(2024, 1, 1))
    ledger.add(ALICE, card="QD-SECOND", applied_on=date(2024, 1, 1))
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).newest_card().card_number == "QD-SECOND"


def test_a_card_without_application_date_counts_as_the_oldest(app, ledger):
    ledger.add(ALICE, card="QD-DATED", applied_on=date(2001, 1, 1))
    ledger.add(ALICE, card="QD-UNDATED", applied_on=None)
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).newest_card().card_number == "QD-DATED"


def test_a_holder_with_only_cancelled_cards_has_no_card_to_act_on(app, ledger):
    ledger.add(ALICE, card="QD-A", status="cancelled", applied_on=date(2020, 1, 1))
    ledger.add(ALICE, card="QD-B", status="cancelled", applied_on=date(2024, 1, 1))
    with app.extensions["sessions"]() as s:
        assert holder_by_id_number(s, ALICE).newest_card() is None


# --- PIN guard ----------------------------------------------------------------------------

class Keypad:
    """Enters PINs for ID numbers, each attempt in its own unit of work (like separate calls)."""

    def __init__(self, app, policy: PinPolicy | None = None):
        self.app = app
        self.key = app.extensions["settings"].pin_key
        self.policy = policy or PinPolicy()

    def enter(self, id_number: str, pin: str) -> str:
        with self.app.extensions["sessions"]() as s, s.begin():
            return check_pin(s, key=self.key, id_key=id_key(self.key, id_number),
                             holder=holder_by_id_number(s, id_number), pin=pin, now=utcnow(),
                             policy=self.policy)

    def guard(self, id_number: str) -> PinGuard | None:
        with self.app.extensions["sessions"]() as s:
            return s.get(PinGuard, id_key(self.key, id_number))


WRONG_PIN = "000000"


def test_the_right_pin_passes(app, ledger):
    ledger.add(ALICE)
    assert Keypad(app).enter(ALICE, PIN) == OK


def test_the_sixth_consecutive_wrong_pin_locks(app, ledger):
    ledger.add(ALICE)
    keypad = Keypad(app)
    assert [keypad.enter(ALICE, WRONG_PIN) for _ in range(6)] == [WRONG] * 5 + [LOCKED]
    assert keypad.guard(ALICE).locked_at == NOW


def test_a_locked_id_refuses_even_the_right_pin(app, ledger, clock):
    ledger.add(ALICE)
    keypad = Keypad(app)
    for _ in range(6):
        keypad.enter(ALICE, WRONG_PIN)
    clock.tick(timedelta(days=30))
    assert keypad.enter(ALICE, PIN) == LOCKED
    assert keypad.enter(ALICE, WRONG_PIN) == LOCKED


def test_a_right_pin_before_the_limit_resets_the_count(app, ledger):
    ledger.add(ALICE)
    keypad = Keypad(app)
    assert [keypad.enter(ALICE, WRONG_PIN) for _ in range(5)] == [WRONG] * 5
    assert keypad.enter(ALICE, PIN) == OK
    assert keypad.guard(ALICE).failures == 0
    assert [keypad.enter(ALICE, WRONG_PIN) for _ in range(5)] == [WRONG] * 5
    assert keypad.enter(ALICE, WRONG_PIN) == LOCKED


def test_the_lock_is_counted_per_id_number(app, ledger):
    ledger.add(ALICE)
    ledger.add(BOB)
    keypad = Keypad(app)
    for _ in range(6):
        keypad.enter(ALICE, WRONG_PIN)
    assert keypad.enter(BOB, PIN) == OK


def test_an_unknown_id_number_counts_and_locks_exactly_like_a_wrong_pin(app, ledger):
    ledger.add(ALICE)
    keypad = Keypad(app)
    known = [keypad.enter(ALICE, WRONG_PIN) for _ in range(7)]
    unknown = [keypad.enter(NOBODY, PIN) for _ in range(7)]
    assert unknown == known == [WRONG] * 5 + [LOCKED] * 2
    assert keypad.guard(NOBODY).failures == keypad.guard(ALICE).failures


def test_a_holder_without_a_pin_never_passes(app, ledger):
    ledger.add(ALICE, pin="")
    assert Keypad(app).enter(ALICE, "") == WRONG
    assert Keypad(app).enter(ALICE, PIN) == WRONG


def test_the_limit_comes_from_the_policy(app, ledger):
    ledger.add(ALICE)
    keypad = Keypad(app, PinPolicy(max_failures=3))
    assert [keypad.enter(ALICE, WRONG_PIN) for _ in range(3)] == [WRONG, WRONG, LOCKED]


def test_with_lock_hours_the_lock_lifts_after_that_many_hours(app, ledger, clock):
    ledger.add(ALICE)
    keypad = Keypad(app, PinPolicy(lock_hours=24))
    for _ in range(6):
        keypad.enter(ALICE, WRONG_PIN)
    clock.tick(timedelta(hours=24, seconds=-1))
    assert keypad.enter(ALICE, PIN) == LOCKED
    clock.move_to(NOW + timedelta(hours=24))
    assert keypad.enter(ALICE, PIN) == OK


def test_after_an_automatic_unlock_the_count_starts_again(app, ledger, clock):
    ledger.add(ALICE)
    keypad = Keypad(app, PinPolicy(lock_hours=24))
    for _ in range(6):
        keypad.enter(ALICE, WRONG_PIN)
    clock.tick(timedelta(hours=25))
    assert [keypad.enter(ALICE, WRONG_PIN) for _ in range(6)] == [WRONG] * 5 + [LOCKED]


def test_without_lock_hours_only_an_agent_lifts_the_lock(app, ledger, clock):
    ledger.add(ALICE)
    keypad = Keypad(app)
    for _ in range(6):
        keypad.enter(ALICE, WRONG_PIN)
    clock.tick(timedelta(days=365))
    assert keypad.enter(ALICE, PIN) == LOCKED
    with app.extensions["sessions"]() as s, s.begin():
        clear_lock(s, id_key(keypad.key, ALICE))
    assert keypad.enter(ALICE, PIN) == OK


def test_a_verbal_loss_cannot_be_released_once_a_replacement_was_applied_for(app, ledger):
    ledger.add(ALICE, status="verbal_loss", card="QD-OLD", applied_on=date(2020, 1, 1))
    ledger.add(ALICE, status="in_production", card="QD-NEW", applied_on=date(2026, 11, 29))
    with card_in(app, "QD-OLD") as card:
        with pytest.raises(CardRuleError) as refused:
            card.release_verbal_loss(now=NOW, actor=IVR)
    assert refused.value.status == "replaced"
    assert ledger.card("QD-OLD").status == "verbal_loss"
