"""The hotline's phone tree (12333, and 12345's entry), declared in one place.

Read it top to bottom to draw the tree. Every menu also has, built in (see `ivr.machine`):
9 repeats what was said, 0 reaches an agent while agents work (outside staffed hours it says
when they do), * goes back to the main menu, silence and wrong keys re-prompt three times and
then lead to an agent; menus end by announcing those keys. Entries (ID number, PIN, a phone
number) take their keys as data and end with #. Actions are implemented in `ivr.actions`;
their outcomes pick the path. "agent" routes: staffed → a transfer, closed → a call-back offer.
"""
from __future__ import annotations

from ivr.machine import Action, Each, Entry, Go, Hangup, Machine, Menu, Record, Transfer
from models.ledger import STATUSES

NO_CARD = "no_card"


def by_status(default: str | Go, **special: str | Go) -> dict[str, str | Go]:
    """Map every card status (and having no card) to a transition; unnamed ones take default."""
    return {s: special.get(s, default) for s in (*STATUSES, NO_CARD)}


def after(*say: str) -> Go:
    """Say something and offer the after-service menu."""
    return Go("after_service", say)


def service(name: str, lookup: str) -> Action:
    """Start a card service: verify the caller first, once per call."""
    return Action(
        "start_service",
        {"verified": lookup, "unverified": "auth_id", "suspended": "auth_suspended"},
        arg=name,
    )


def confirm(prompts: tuple[str, ...], do: str) -> Menu:
    """A confirmation: 1 does it, any other key changes nothing."""
    return Menu(prompts=prompts, options={"1": do}, otherwise=after("common.nothing_changed"), announce=False)


STATES = {
    # -- the call comes in: 12333 greets with the menu, 12345 puts the caller through ----------
    "entry": Action(
        "entry",
        {
            "menu": Go("main", ("common.welcome",)),
            "menu_closed": Go("main", ("common.welcome", "common.closed_hours")),
            "agent_first": "city_entry",
        },
    ),
    "city_entry": Menu(
        prompts=("city.greeting",),
        options={"1": Go("main", ("city.self_service",))},
        back=None, announce=False, reprompts=0, give_up_say=(), give_up_reason="direct",
    ),
    # -- main menu ------------------------------------------------------------------------------
    "main": Menu(
        prompts=("main.menu",),
        options={"1": "loss", "2": "release", "3": "status"},
        back=None,
    ),
    "loss": service("loss", "loss_lookup"),
    "release": service("release", "release_lookup"),
    "status": service("status", "status_lookup"),
    # -- verification: ID number, then PIN --------------------------------------------------------
    "auth_id": Entry(prompts=("auth.ask_id",), next="auth_id_check", redact="id_number"),
    "auth_id_check": Action(
        "accept_id",
        {
            "ok": "auth_pin",
            "invalid": Go("auth_id", ("auth.bad_id",)),
            "too_many": Go("agent", ("auth.id_too_many",), reason="invalid_id_number"),
        },
    ),
    "auth_pin": Entry(prompts=("auth.ask_pin",), next="auth_pin_check", redact="pin"),
    "auth_pin_check": Action(
        "verify_pin",
        {
            "ok": "auth_ok",
            "bad_format": Go("auth_pin", ("auth.bad_pin_format",)),
            "wrong": Go("auth_id", ("auth.wrong",)),
            "locked": "auth_locked",
            "too_many": "auth_failed",
        },
    ),
    "auth_ok": Action(
        "resume_service",
        {"loss": "loss_lookup", "release": "release_lookup", "status": "status_lookup"},
    ),
    "auth_locked": Menu(prompts=("auth.locked", "common.back_to_main"), options={"1": "main"}),
    "auth_failed": Menu(prompts=("auth.too_many", "common.back_to_main"), options={"1": "main"}),
    "auth_suspended": Action(
        "suspended_reason", {"locked": "auth_locked", "too_many": "auth_failed"}
    ),
    # -- 1 verbal loss report (口头挂失) ----------------------------------------------------------
    "loss_lookup": Action(
        "load_card",
        by_status(
            "loss_confirm",
            in_production=after("loss.not_made"),
            verbal_loss=after("loss.already_verbal"),
            formal_loss=after("loss.already_formal"),
            cancelled=after("card.cancelled"),
            no_card=after("card.none"),
        ),
    ),
    "loss_confirm": confirm(("card.readback", "loss.confirm"), "loss_do"),
    "loss_do": Action(
        "report_loss",
        {"done": after("loss.done", "loss.at_expiry.{loss_at_expiry}", "loss.next_steps"), "refused": "loss_lookup"},
    ),
    # -- 2 release a verbal loss report (解挂) -----------------------------------------------------
    "release_lookup": Action(
        "load_card",
        by_status(
            after("release.not_lost"),
            verbal_loss="release_confirm",
            formal_loss=after("release.formal"),
            cancelled=after("card.cancelled"),
            no_card=after("card.none"),
        ),
    ),
    "release_confirm": confirm(("card.readback", "release.confirm"), "release_do"),
    "release_do": Action(
        "release_loss", {"done": after("release.done"), "refused": "release_lookup"}
    ),
    # -- 3 status and progress (状态查询) ---------------------------------------------------------
    "status_lookup": Action("load_card", by_status("status_read", no_card=after("card.none"))),
    "status_read": Menu(
        prompts=("card.readback", "status.detail.{status_detail}", "status.menu"),
        options={"1": "history_lookup", "2": "main"},
    ),
    "history_lookup": Action(
        "load_history", {"ok": "history_read", "empty": Go("status_read", ("history.empty",))}
    ),
    "history_read": Menu(
        prompts=("history.intro", Each("history.item", "history"), "history.menu"),
        options={"2": "main"},
    ),
    # -- agents: a transfer with context while they work, a call-back request otherwise -----------
    "agent": Action(
        "route_agent", {"staffed": "agent_dial", "closed": Go("callback_offer", ("common.closed_hours",))}
    ),
    "agent_dial": Transfer(
        prompts=("agent.connecting",),
        answered="rating",
        unanswered=Go("callback_offer", ("agent.unavailable",)),
    ),
    "callback_offer": Menu(
        prompts=("callback.offer",), options={"1": "callback_start"}, give_up="rating", give_up_say=()
    ),
    "callback_start": Action("callback_from", {"usable": "callback_use_from", "unusable": "callback_number"}),
    "callback_use_from": Menu(
        prompts=("callback.use_from",), options={"1": "callback_keep_from", "2": "callback_number"}
    ),
    "callback_keep_from": Action("callback_keep_from", {"ok": "callback_message_offer"}),
    "callback_number": Entry(
        prompts=("callback.ask_number",), next="callback_number_check", redact="phone", give_up="rating"
    ),
    "callback_number_check": Action(
        "callback_number",
        {
            "ok": "callback_confirm",
            "invalid": Go("callback_number", ("callback.bad_number",)),
            "too_many": Go("rating", ("callback.not_taken",)),
        },
    ),
    "callback_confirm": Menu(
        prompts=("callback.readback",), options={"1": "callback_message_offer", "2": "callback_number"}
    ),
    "callback_message_offer": Menu(
        prompts=("callback.message_offer",), options={"1": "callback_record", "2": "callback_save"}
    ),
    "callback_record": Record(prompts=("callback.record",), next="callback_save"),
    "callback_save": Action("callback_save", {"ok": Go("rating", ("callback.saved",))}),
    # -- the end: after a service, the rating (一次一评), goodbye ---------------------------------
    "after_service": Menu(
        prompts=("common.after_service",), options={"1": "main", "2": "rating"}, give_up="rating", give_up_say=()
    ),
    "rating": Menu(
        prompts=("rating.ask",),
        options={"1": "rate_1", "2": "rate_2", "3": "rate_3"},
        back=None, announce=False, reprompts=1, give_up="goodbye", give_up_say=(),
    ),
    **{f"rate_{k}": Action("rate", {"ok": Go("goodbye", ("rating.thanks",))}, arg=k) for k in "123"},
    "goodbye": Hangup(prompts=("common.goodbye",)),
}

# Prompt ids with placeholders take these values; the catalogue test expands them.
VARIANTS = {
    "status_detail": (*STATUSES, "in_production_undated"),
    "loss_at_expiry": ("release", "cancel"),
}


# Said on the way into a state, but not again when the caller presses 9 to repeat.
UNREPEATED = frozenset({
    "common.resumed", "common.no_input", "common.invalid_key", "common.too_many_misses",
    "common.system_error", "history.empty", "common.closed_hours",
})


def build(reprompts: int = 3) -> Machine:
    """Build and validate the hotline's machine."""
    return Machine(
        states=STATES,
        start=Go("entry"),
        resume=Go("main", ("common.resumed",)),
        failure=Go("agent_dial", ("common.system_error",), reason="system_error"),
        reprompts=reprompts,
        variants=VARIANTS,
        unrepeated=UNREPEATED,
    )
