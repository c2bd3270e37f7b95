"""The 12333 phone tree, declared in one place.

Read it top to bottom to draw the tree. Every menu also has, built in (see `ivr.machine`):
9 repeats what was said, 0 reaches an agent, * goes back to the main menu, silence and wrong
keys re-prompt three times and then lead to an agent. Entries (ID number, PIN) take their keys
as data and end with #. Actions are implemented in `ivr.actions`; their outcomes pick the path.
"""
from __future__ import annotations

from ivr.machine import Action, Each, Entry, Go, Hangup, Machine, Menu, Transfer
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


STATES = {
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
    "auth_locked": Menu(prompts=("auth.locked", "common.back_or_agent"), options={"1": "main"}),
    "auth_failed": Menu(prompts=("auth.too_many", "common.back_or_agent"), options={"1": "main"}),
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
    "loss_confirm": Menu(
        prompts=("card.readback", "loss.confirm"),
        options={"1": "loss_do"},
        otherwise=after("common.nothing_changed"),
    ),
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
    "release_confirm": Menu(
        prompts=("card.readback", "release.confirm"),
        options={"1": "release_do"},
        otherwise=after("common.nothing_changed"),
    ),
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
    # -- after a service, transfer and the end -------------------------------------------------
    "after_service": Menu(
        prompts=("common.after_service",), options={"1": "main"}, give_up="goodbye"
    ),
    "agent": Transfer(prompts=("agent.connecting",), answered="goodbye", unanswered="agent_unavailable"),
    "agent_unavailable": Hangup(prompts=("agent.unavailable",)),
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
    "common.system_error", "history.empty",
})


def build(reprompts: int = 3) -> Machine:
    """Build and validate the hotline's machine."""
    return Machine(
        states=STATES,
        start=Go("main", ("common.welcome",)),
        resume=Go("main", ("common.resumed",)),
        failure=Go("agent", ("common.system_error",), reason="system_error"),
        reprompts=reprompts,
        variants=VARIANTS,
        unrepeated=UNREPEATED,
    )
