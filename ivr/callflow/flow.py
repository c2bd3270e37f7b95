"""The hotline's phone tree (12333, and 12345's entry), declared in one place.

Read it top to bottom to draw the tree. Every menu also has, built in (see `ivr.callflow.machine`):
9 repeats what was said, 0 reaches an agent while agents work (outside staffed hours it says
when they do), * goes back to the main menu, silence and wrong keys re-prompt three times and
then lead to an agent; menus end by announcing those keys. Entries (ID number, PIN, a phone
number) take their keys as data and end with #. Actions are implemented in `ivr.callflow.actions`;
their outcomes pick the path. "agent" routes: staffed → a transfer, closed → a call-back offer.
"""
from __future__ import annotations

from collections.abc import Mapping

from ivr.callflow.machine import Action, Each, Entry, Go, Hangup, Machine, Menu, Record, State, Transfer
from models.vocabulary import CardStatus, Service, TransferReason

NO_CARD = "no_card"
# The guides (申领, 挂失后补卡, 注销, 激活), each in parts short enough to hear in one stretch
# (tests/test_prompt_budget.py): what to bring, where to go, how long it takes.
GUIDE_PARTS = {"apply": 8, "replace": 4, "cancel": 4, "activate": 4}
GUIDES = tuple(GUIDE_PARTS)
WEAK_REASONS = ("bad_format", "initial", "same_digits", "sequence", "birth_date", "same_as_old")
# The agent-first hotlines' greeting (12345): it waits the hotline's agent_first_seconds for the 1
# (ivr.voice.twiml), then puts the caller through.
AGENT_FIRST_GREETING = "city_entry"
# A new mobile or call-back number read back, answered by voice: 1 it is right, 2 key it again
# ("没错" is right: the longest word heard wins over 错).
YES_NO = {"1": ("对", "确认", "是的", "正确", "没错"), "2": ("不对", "错", "重说")}


def by_status(default: str | Go, **special: str | Go) -> dict[str, str | Go]:
    """Map every card status (and having no card) to a transition; unnamed ones take default."""
    return {s: special.get(s, default) for s in (*CardStatus, NO_CARD)}


def after(*say: str) -> Go:
    """Say something and offer the after-service menu."""
    return Go("after_service", say)


def service(name: Service, lookup: str) -> Action:
    """Start a card service: verify the caller first, once per call."""
    return Action(
        "start_service",
        {"verified": lookup, "unverified": "auth_id", "suspended": "auth_suspended"},
        arg=name,
    )


def readback(target: str, *lead: str) -> Go:
    """Go to a state that asks about the card: read back its last digits and status on the way."""
    return Go(target, (*lead, "card.readback"))


def status_read(*lead: str) -> Go:
    """The card's status and progress, then the status menu."""
    return Go("status_read", (*lead, "card.readback", "status.detail.{status_detail}"))


def locked() -> Go:
    return Go("auth_locked", ("auth.locked",))


def failed() -> Go:
    return Go("auth_failed", ("auth.too_many",))


def initial() -> Go:
    return Go("auth_initial", ("auth.initial_pin",))


HISTORY = Each("history.item", "history")
RECORDS = Each("account.record", "records")


def confirm(prompts: tuple[str, ...], do: str) -> Menu:
    """A confirmation: 1 does it, any other key changes nothing."""
    return Menu(prompts=prompts, options={"1": do}, otherwise=after("common.nothing_changed"), announce=False)


STATES: dict[str, State] = {
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
        back=None, announce=False, reprompts=0, give_up_say=(), give_up_reason=TransferReason.DIRECT,
        elder_agent_first=False,  # the greeting puts the caller through already
    ),
    # -- main menu ------------------------------------------------------------------------------
    "main": Menu(
        prompts=("main.menu",),
        options={"1": "loss", "2": "release", "3": "status", "4": "activate", "5": "account",
                 "6": "contact", "7": "pin", "8": "guides"},
        back=None,
        words={"1": ("挂失", "丢了", "丢失", "口头挂失"), "2": ("解挂", "解除挂失", "找到了"),
               "3": ("查询", "状态", "进度", "办卡进度"), "4": ("激活",), "5": ("余额", "明细", "医保", "个人账户"),
               "6": ("改手机", "手机号", "联系方式", "地址", "个人信息"), "7": ("密码", "改密码"),
               "8": ("指南", "怎么办", "办事指南", "申领", "补卡", "注销")},
    ),
    "loss": service(Service.LOSS, "loss_lookup"),
    "release": service(Service.RELEASE, "release_lookup"),
    "status": service(Service.STATUS, "status_lookup"),
    "activate": service(Service.ACTIVATE, "activate_lookup"),
    "account": service(Service.ACCOUNT, "account_lookup"),
    "contact": service(Service.CONTACT, "contact_menu"),
    "pin": service(Service.PIN, "pin_old"),
    # -- verification: ID number, then PIN --------------------------------------------------------
    "auth_id": Entry(prompts=("auth.ask_id",), next="auth_id_check", redact="id_number", speech=True),
    "auth_id_check": Action(
        "accept_id",
        {
            "ok": "auth_pin",
            "unsure": Go("auth_id_heard", ("auth.id_heard",)),
            "invalid": Go("auth_id", ("auth.bad_id",)),
            "too_many": Go("agent", ("auth.id_too_many",), reason=TransferReason.INVALID_ID_NUMBER),
        },
    ),
    "auth_id_heard": Menu(  # spoken with low confidence: read back once (never stored), then used
        prompts=("auth.id_heard_menu",), options={"1": "auth_pin", "2": "auth_id"}, announce=False, repeat="auth_id",
        words={"1": ("对", "正确", "是的"), "2": ("不对", "错", "重说")},
    ),
    "auth_pin": Entry(prompts=("auth.ask_pin",), next="auth_pin_check", redact="pin"),
    "auth_pin_check": Action(
        "verify_pin",
        {
            "ok": "auth_ok",
            "bad_format": Go("auth_pin", ("auth.bad_pin_format",)),
            "wrong": Go("auth_id", ("auth.wrong",)),
            "locked": locked(),
            "too_many": failed(),
            "initial": initial(),
        },
    ),
    "auth_ok": Action(
        "resume_service",
        {"loss": "loss_lookup", "release": "release_lookup", "status": "status_lookup",
         "activate": "activate_lookup", "account": "account_lookup", "contact": "contact_menu", "pin": "pin_old"},
    ),
    # Still the initial PIN (anyone who knows the ID number knows it too): no self-service.
    # The result first; how to set a PIN of one's own, or have the lock lifted, on request.
    "auth_initial": Menu(prompts=("auth.initial_menu",), options={"1": "main", "2": after("auth.initial_how")}),
    "auth_locked": Menu(prompts=("auth.locked_menu",), options={"1": "main", "2": after("auth.locked_how")}),
    "auth_failed": Menu(prompts=("common.back_to_main",), options={"1": "main"}),
    "auth_suspended": Action(
        "suspended_reason", {"locked": locked(), "too_many": failed(), "initial": initial()}
    ),
    # -- 1 verbal loss report (口头挂失) ----------------------------------------------------------
    "loss_lookup": Action(
        "load_card",
        by_status(
            readback("loss_confirm"),
            in_production=after("loss.not_made"),
            verbal_loss=Go("loss_result", ("loss.already_verbal",)),
            formal_loss=after("loss.already_formal"),
            cancelled=after("card.cancelled"),
            no_card=after("card.none"),
        ),
    ),
    "loss_confirm": confirm(("loss.confirm",), "loss_do"),
    "loss_do": Action("report_loss", {"done": Go("loss_result", ("loss.done",)), "refused": "loss_lookup"}),
    # The result first (reported, valid until …); what to do next, and what happens at expiry, on request.
    "loss_result": Menu(
        prompts=("loss.result_menu",),
        options={"1": Go("loss_next", ("loss.next_steps",)), "2": "rating"},
        give_up="rating", give_up_say=(),
        words={"1": ("了解", "后续", "后续办理", "怎么办"), "2": ("结束", "结束服务")},
    ),
    "loss_next": Menu(
        prompts=("loss.next_menu",),
        options={"1": after("loss.at_expiry.{loss_at_expiry}", "loss.found"), "2": "rating"},
        give_up="rating", give_up_say=(),
        words={"1": ("继续", "继续听"), "2": ("结束", "结束服务")},
    ),
    # -- 2 release a verbal loss report (解挂) -----------------------------------------------------
    "release_lookup": Action(
        "load_card",
        by_status(
            after("release.not_lost"),
            verbal_loss=readback("release_confirm"),
            formal_loss=after("release.formal"),
            cancelled=after("card.cancelled"),
            no_card=after("card.none"),
        ),
    ),
    "release_confirm": confirm(("release.confirm",), "release_do"),
    "release_do": Action(
        "release_loss", {"done": after("release.done"), "refused": "release_lookup"}
    ),
    # -- 3 status and progress (状态查询) ---------------------------------------------------------
    # A card in production: its stage says where it is (the detail names the card itself).
    "status_lookup": Action(
        "load_card",
        by_status(status_read(), in_production=Go("status_read", ("status.detail.{status_detail}",)),
                  no_card=after("card.none")),
    ),
    "status_read": Menu(prompts=("status.menu",), options={"1": "history_lookup", "2": "main"}),
    "history_lookup": Action(
        "load_history", {"ok": Go("history_read", (HISTORY,)), "empty": Go("status_read", ("history.empty",))}
    ),
    # Two changes at a time, newest first; 1 for the earlier ones.
    "history_read": Menu(prompts=("history.menu",), options={"1": "history_more", "2": "main"}),
    "history_more": Action("more_history", {"ok": Go("history_read", (HISTORY,)), "end": after("history.no_more")}),
    # -- 4 activation (激活) ---------------------------------------------------------------------
    "activate_lookup": Action(
        "load_card",
        by_status(
            after("activate.not_needed"),
            pending_activation=readback("activate_confirm"),
            in_production=after("activate.not_made"),
            normal=after("activate.already"),
            cancelled=after("card.cancelled"),
            no_card=after("card.none"),
        ),
    ),
    "activate_confirm": confirm(("activate.confirm",), "activate_do"),
    "activate_do": Action("activate_card", {"done": after("activate.done"), "refused": "activate_lookup"}),
    # -- 5 medical insurance personal account (消费明细查询): the balance, then records one at a time --
    "account_lookup": Action(
        "load_account", {"ok": Go("account_balance", ("account.balance",)), "no_records": after("account.no_records")}
    ),
    "account_balance": Menu(
        prompts=("account.balance_menu",),
        options={"1": Go("account_page", (RECORDS,)), "2": "main"},
        words={"1": ("记录", "明细", "账户记录", "再听"), "2": ("主菜单",)},
    ),
    "account_page": Menu(
        prompts=("account.page_menu",),
        options={"1": "account_more", "2": "main"},
        words={"1": ("下一条", "下一页", "继续", "更多", "再听"), "2": ("主菜单",)},
    ),
    "account_more": Action("more_records", {"ok": Go("account_page", (RECORDS,)), "end": after("account.no_more")}),
    # -- 6 contact details (个人信息修改): the mobile by keypad, the address through an agent -------
    "contact_menu": Menu(
        prompts=("contact.menu",),
        options={"1": "mobile_new", "2": after("contact.address_by_agent")},
        words={"1": ("手机", "电话"), "2": ("地址", "住址")},
    ),
    "mobile_new": Entry(prompts=("mobile.ask",), next="mobile_check", redact="phone", speech=True),
    "mobile_check": Action(
        "accept_mobile",
        {"ok": Go("mobile_confirm", ("mobile.readback",)), "invalid": Go("mobile_new", ("mobile.invalid",)),
         "too_many": after("mobile.not_taken")},
    ),
    "mobile_confirm": Menu(
        prompts=("mobile.confirm_menu",), options={"1": "mobile_do", "2": "mobile_new"},
        otherwise=after("common.nothing_changed"), announce=False, words=YES_NO,
    ),
    "mobile_do": Action("change_mobile", {"done": after("mobile.done")}),
    # -- 7 PIN change: the old PIN, then the new one twice; weak PINs refused with the reason -----
    "pin_old": Entry(prompts=("pin.ask_old",), next="pin_old_check", redact="pin"),
    "pin_old_check": Action(
        "check_old_pin",
        {
            "ok": "pin_new",
            "bad_format": Go("pin_old", ("auth.bad_pin_format",)),
            "wrong": Go("pin_old", ("pin.old_wrong",)),
            "locked": locked(),
            "too_many": failed(),
        },
    ),
    "pin_new": Entry(prompts=("pin.ask_new",), next="pin_new_check", redact="pin"),
    "pin_new_check": Action(
        "accept_new_pin",
        {"ok": "pin_again", "weak": Go("pin_new", ("pin.weak.{weak_reason}",)), "too_many": after("pin.not_changed")},
    ),
    "pin_again": Entry(prompts=("pin.ask_again",), next="pin_again_check", redact="pin"),
    "pin_again_check": Action(
        "confirm_new_pin", {"ok": after("pin.done"), "mismatch": Go("pin_new", ("pin.mismatch",))}
    ),
    # -- 8 guides (办事指南): in short parts, 1 for the next, 9 to repeat, * back ----------------
    "guides": Menu(
        prompts=("guide.menu",),
        options={"1": "guide_apply", "2": "guide_replace", "3": "guide_cancel", "4": "guide_activate"},
        words={"1": ("申领", "办卡", "申请"), "2": ("补卡", "补办", "换卡"), "3": ("注销",), "4": ("激活",)},
    ),
    **{f"guide_{topic}": Action("guide_start", {"ok": Go("guide_read", ("guide.{guide_section}",))}, arg=topic)
       for topic in GUIDES},
    "guide_read": Menu(
        prompts=("guide.part_menu",),
        options={"1": "guide_next", "2": "guides"},
        words={"1": ("下一段", "继续", "下一"), "2": ("其他指南", "指南")},
    ),
    "guide_next": Action(
        "guide_next",
        {"ok": Go("guide_read", ("guide.{guide_section}",)), "end": Go("guides", ("guide.end.{guide_topic}",))},
    ),
    # -- agents: a transfer with context while they work, a call-back request otherwise -----------
    "agent": Action(
        "route_agent", {"staffed": "agent_dial", "closed": Go("callback_offer", ("common.closed_hours",))}
    ),
    # A <Dial> to the agents, or (agent.leg: queue) the hotline's queue, whose wait tells the caller
    # their place and offers 1 for a call-back that keeps it (ivr.voice.turns.TurnService.queue_wait).
    "agent_dial": Transfer(
        prompts=("agent.connecting",),
        answered="rating",
        unanswered="agent_missed",
        left="queue_callback",
    ),
    # Nobody answered (or the queue failed): the call becomes a call-back item by itself when its
    # number can be called back (models.callbacks.missed_call); the caller may still ask for one.
    "agent_missed": Action("missed_call", {"ok": Go("callback_offer", ("agent.unavailable",))}),
    "queue_callback": Action(
        "queue_callback",
        {"usable": Go("rating", ("queue.callback_saved",)), "unusable": Go("callback_number", ("queue.keep_place",))},
    ),
    "callback_offer": Menu(
        prompts=("callback.offer",), options={"1": "callback_start"}, give_up="rating", give_up_say=()
    ),
    "callback_start": Action(
        "callback_from", {"usable": Go("callback_use_from", ("callback.use_from",)), "unusable": "callback_number"}
    ),
    "callback_use_from": Menu(
        prompts=("callback.use_from_menu",), options={"1": "callback_keep_from", "2": "callback_number"}
    ),
    "callback_keep_from": Action("callback_keep_from", {"ok": "callback_message_offer"}),
    "callback_number": Entry(
        prompts=("callback.ask_number",), next="callback_number_check", redact="phone", give_up="rating",
        speech=True,
    ),
    "callback_number_check": Action(
        "callback_number",
        {
            "ok": Go("callback_confirm", ("callback.readback",)),
            "invalid": Go("callback_number", ("callback.bad_number",)),
            "too_many": Go("rating", ("callback.not_taken",)),
        },
    ),
    "callback_confirm": Menu(
        prompts=("callback.confirm_menu",), options={"1": "callback_message_offer", "2": "callback_number"},
        words=YES_NO,
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
        elder_agent_first=False,  # the end of the call, after an agent as often as not
    ),
    **{f"rate_{k}": Action("rate", {"ok": Go("goodbye", ("rating.thanks",))}, arg=k) for k in "123"},
    "goodbye": Hangup(prompts=("common.goodbye",)),
}

# Prompt ids with placeholders take these values; the catalogue test expands them.
VARIANTS = {
    "status_detail": (*CardStatus, "in_production_undated", "in_production_replacement",
                      "in_production_replacement_undated"),
    "weak_reason": WEAK_REASONS,
    "guide_topic": GUIDES,
    "guide_section": tuple(f"{topic}.{part}" for topic, parts in GUIDE_PARTS.items() for part in range(1, parts + 1)),
    "loss_at_expiry": ("release", "cancel"),
}


# Said on the way into a state, but not again when the caller presses 9 to repeat.
UNREPEATED = frozenset({
    "common.resumed", "common.restart", "common.no_input", "common.invalid_key", "common.too_many_misses",
    "common.system_error", "history.empty", "common.closed_hours",
})


# States renamed by a release, old name → new name: a call saved in the old state before the
# deploy resumes in the new one with its data. Keep an entry at least a day after the release that
# renamed it (`flask --app wsgi flow check --calls` lists the calls still in it). A state removed,
# not renamed, needs nothing here: its calls hear common.restart and the main menu.
RENAMED: dict[str, str] = {}


def build(reprompts: int = 3, speech_confidence: float = 0.5, renamed: Mapping[str, str] | None = None) -> Machine:
    """Build and validate the hotline's machine (`renamed`: RENAMED unless given)."""
    return Machine(
        states=STATES,
        start=Go("entry"),
        resume=Go("main", ("common.resumed",)),
        failure=Go("agent_dial", ("common.system_error",), reason=TransferReason.SYSTEM_ERROR),
        restart=Go("main", ("common.restart",)),
        reprompts=reprompts,
        variants=VARIANTS,
        unrepeated=UNREPEATED,
        speech_confidence=speech_confidence,
        renamed=dict(RENAMED if renamed is None else renamed),
    )
