"""The hotline's words, spelled once: services, transfer reasons, card statuses, channels, call ends.

Each is a `StrEnum`, so a member is its own code string: it is what the database, the recorded
calls, the call flow and the reports store and compare. The Mandarin a person reads or hears for
each (the console's labels, the whisper) comes from the prompt catalogue
(`voice_prompts/zh-CN.yaml`, `label.<kind>.<code>`), never from here; a test checks that every
member has its label.
"""
from __future__ import annotations

from enum import StrEnum


class Service(StrEnum):
    """What a caller can do on the phone (chosen from the main menu, or after a transfer)."""

    LOSS = "loss"  # 口头挂失
    RELEASE = "release"  # 解除口头挂失
    STATUS = "status"  # 卡状态和办卡进度
    ACTIVATE = "activate"  # 激活
    ACCOUNT = "account"  # 医保个人账户
    CONTACT = "contact"  # 联系电话
    PIN = "pin"  # 服务密码
    GUIDES = "guides"  # 办事指南
    CALLBACK = "callback"  # 预约回电


# The services chosen from the main menu that need the caller verified first.
VERIFIED_SERVICES = (Service.LOSS, Service.RELEASE, Service.STATUS, Service.ACTIVATE, Service.ACCOUNT,
                     Service.CONTACT, Service.PIN)


class TransferReason(StrEnum):
    """Why a caller was put through to an agent (told to the agent, counted in reports)."""

    CALLER_REQUEST = "caller_request"  # pressed 0, or chose an agent from a menu
    NO_INPUT = "no_input"  # silence, again and again
    WRONG_KEYS = "wrong_keys"  # wrong keys, again and again
    INVALID_ID_NUMBER = "invalid_id_number"  # the ID number did not pass its check, again and again
    SYSTEM_ERROR = "system_error"  # the hotline failed; an agent takes over
    DIRECT = "direct"  # the 12345 city line puts callers through first


class CardStatus(StrEnum):
    """A social security card's status in the ledger (shared with every channel)."""

    IN_PRODUCTION = "in_production"  # 制卡中
    PENDING_ACTIVATION = "pending_activation"  # 已制卡、待激活 (封存)
    NORMAL = "normal"  # 正常
    VERBAL_LOSS = "verbal_loss"  # 口头挂失
    FORMAL_LOSS = "formal_loss"  # 书面挂失
    CANCELLED = "cancelled"  # 已注销


class Channel(StrEnum):
    """Through which channel a change of the ledger was made (every history row says it)."""

    IVR = "ivr"  # this hotline's self-service
    AGENT = "agent"  # a call-centre agent in the console
    IMPORT = "import"  # `ledger import` from the card system's files
    SYSTEM = "system"  # time alone: a verbal loss report lapsing
    BANK = "bank"  # a bank counter
    WEB = "web"  # the website
    APP = "app"  # the app


class CallEnd(StrEnum):
    """How a call ended, as its record keeps it."""

    COMPLETED = "completed"  # at least one service done, no agent
    TRANSFERRED = "transferred"  # put through to an agent
    HUNG_UP = "hung_up"  # the caller left before any service was done


class Rating(StrEnum):
    """How a caller rated a call at its end (一次一评), by the key they pressed."""

    SATISFIED = "satisfied"  # 1
    BASICALLY_SATISFIED = "basically_satisfied"  # 2
    DISSATISFIED = "dissatisfied"  # 3


class AuditAction(StrEnum):
    """What the audit trail records an agent (or an operator at the CLI) doing (models.agents.AuditEvent)."""

    SEARCH = "search"  # looked for a cardholder
    REVEAL_ID = "reveal_id"  # showed a holder's full ID number
    REPORT_LOSS = "report_loss"  # 口头挂失 on the caller's behalf
    RELEASE_LOSS = "release_loss"  # 解除口头挂失
    ACTIVATE = "activate"  # 激活
    CHANGE_MOBILE = "change_mobile"  # the holder's contact mobile
    CLEAR_PIN_LOCK = "clear_pin_lock"  # the phone PIN lockout lifted (admin)
    CALLBACK_OUTCOME = "callback_outcome"  # a call-back worked: reached, no answer, ...
    ACCOUNT_CREATE = "account_create"  # a console account made
    ACCOUNT_DISABLE = "account_disable"
    ACCOUNT_ENABLE = "account_enable"
    ACCOUNT_RESET = "account_reset"  # a password set anew (by an admin, or the account's own change)
    ACCOUNT_ROLE = "account_role"  # agent <-> admin
    LIFT_LOGIN_LIMIT = "lift_login_limit"  # failed logins no longer count (admin, or `agent unlock`)
    TWOFACTOR_ENROL = "twofactor_enrol"
    TWOFACTOR_DISABLE = "twofactor_disable"
    TWOFACTOR_RESET = "twofactor_reset"  # an admin removed someone's second factor
    TWOFACTOR_RECOVERY_CODES = "twofactor_recovery_codes"  # new recovery codes
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"  # a wrong password or one-time code
    LOGOUT = "logout"


# Every kind of word, by the name its labels take in the catalogue: `label.<kind>.<code>`.
VOCABULARIES: dict[str, type[StrEnum]] = {
    "service": Service,
    "reason": TransferReason,
    "status": CardStatus,
    "channel": Channel,
    "end": CallEnd,
    "rating": Rating,
    "audit": AuditAction,
}


def label_id(kind: str, code: str) -> str:
    """Return the catalogue id of the Mandarin label for one code of a vocabulary."""
    return f"label.{kind}.{code}"
