"""The prompt budget (issue 15): no stretch of speech between two inputs longer than 15 s (the main
menu with its eight services: 25 s, greeting included), and a verbal loss report in at most 60 s
listening to every prompt, 25 s keying ahead.

How a stretch is found and counted: tests/support/budget.py. `pytest tests/test_prompt_budget.py -s`
prints the longest stretches and the loss report's figures (a normal run prints them in the
terminal summary as well).
"""
from __future__ import annotations

from tests.support import ALICE, PIN, card_of
from tests.support.budget import KEY_SECONDS, LIMIT, MAIN_MENU_LIMIT, REPORT, heard_characters, seconds, walk

SHOWN = 12  # the longest stretches printed
LOSS_LISTENING = 60.0
LOSS_KEYING_AHEAD = 25.0

# The verbal loss report as the budget counts it: a caller of 12333 in staffed hours with a normal
# card dials, chooses 1 (口头挂失) at the main menu, keys the ID number and #, the PIN and #, confirms
# with 1, hears the result, ends the service with 2 (结束服务), rates it 1 (满意) and hears goodbye.
LOSS_ROUTE = ("1", f"{ALICE}#", f"{PIN}#", "1", "2", "1")

def report(line: str) -> None:
    print(line)
    REPORT.append(line)


def loss_report(call, ledger):
    """Place the loss report call; return its TwiML documents in order and the keys pressed."""
    ledger.add(ALICE)
    documents: list[str] = []
    phone = call(on_response=lambda url, status, body: documents.append(body) if "/voice/status" not in url else None)
    phone.dial()
    for keys in LOSS_ROUTE:
        phone.press(keys)
    assert phone.ended and not phone.transferred
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    return documents, "".join(LOSS_ROUTE)


def test_every_stretch_of_the_flow_is_within_the_budget(app):
    stretches = walk(app)
    assert len({s.state for s in stretches}) >= 30  # every waiting state of the flow, not a few
    longest = list({s.state: s for s in reversed(stretches)}.values())[::-1]  # the longest of each state
    longest.sort(key=lambda s: -s.seconds)
    report(f"prompt budget: {len(stretches)} stretches in {len(longest)} states; the longest of the {SHOWN} "
           f"longest states (limit {LIMIT:.0f} s, {MAIN_MENU_LIMIT:.0f} s with the main menu):")
    for s in longest[:SHOWN]:
        report("  " + s.line())
    over = [s.line() for s in stretches if s.over]
    assert not over, f"{len(over)} stretches over budget:\n" + "\n".join(over)


def test_the_main_menu_is_the_only_stretch_allowed_25_seconds(app):
    stretches = walk(app)
    long = [s for s in stretches if s.limit == MAIN_MENU_LIMIT]
    assert long and all(s.state == "main" and "main.menu" in s.prompts for s in long)
    assert {s.how.split(" > ")[0] for s in long} >= {"a new call", "a call the hotline lost track of"}


def test_a_verbal_loss_report_takes_60_seconds_listening_and_25_keying_ahead(call, ledger):
    documents, keys = loss_report(call, ledger)
    heard = [heard_characters(d) for d in documents]
    listening = seconds(sum(total for total, _ in heard))
    # Keying ahead: each key as soon as the <Gather> listens (a key stops its prompts), and whatever
    # is said outside a <Gather> heard in full.
    ahead = len(keys) * KEY_SECONDS + seconds(sum(outside for _, outside in heard))
    report(f"verbal loss report ({' '.join(LOSS_ROUTE[:1])}, ID#, PIN#, {' '.join(LOSS_ROUTE[3:])}): "
           f"{listening:.1f} s listening to every prompt (limit {LOSS_LISTENING:.0f} s), "
           f"{ahead:.1f} s keying ahead ({len(keys)} keys; limit {LOSS_KEYING_AHEAD:.0f} s)")
    report("  each answer: " + ", ".join(f"{seconds(total):.1f}" for total, _ in heard) + " s")
    assert listening <= LOSS_LISTENING
    assert ahead <= LOSS_KEYING_AHEAD


def test_the_walk_counts_what_a_real_call_hears(call, ledger, app):
    """The walk's stretches are the very TwiML a call gets: the same characters where nothing varies,
    at least as many where the walk takes the longest value (the call's date, 2026年12月7日, is a
    character shorter than the walk's 2026年12月28日)."""
    documents, _ = loss_report(call, ledger)
    walked = {(s.how, s.prompts): s.characters for s in walk(app)}
    heard = [heard_characters(d)[0] for d in documents]
    assert heard[0] == walked[("a new call > entry:menu", ("common.welcome", "main.menu", "keys.agent"))]
    assert heard[1] == walked[("main 1 > loss(loss):unverified", ("auth.ask_id",))]
    assert heard[2] == walked[("auth_id keyed > auth_id_check:ok", ("auth.ask_pin",))]
    result = walked[("loss_confirm 1 > loss_do:done", ("loss.done", "loss.result_menu", "keys.agent_back"))]
    assert heard[4] == result - 1
    assert heard[5:] == [walked[("loss_result 2", ("rating.ask",))],
                         walked[("rating 1 > rate_1(1):ok", ("rating.thanks", "common.goodbye"))]]
