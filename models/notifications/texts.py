"""The texts the holder is sent after a change of their card or contact mobile (Mandarin, signed).

A text carries the card's last four digits only (never an ID or a full card number), local times
in the zone given, and tells the holder what to do if it was not them.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from models.clock import SHANGHAI

# What each text is about (`outbox_messages.kind`).
LOSS_REPORTED = "loss_reported"
LOSS_RELEASED = "loss_released"
MOBILE_CHANGED = "mobile_changed"  # to the new number
MOBILE_CHANGED_OLD = "mobile_changed_old"  # to the number it replaced: a change its owner may not have made

SIGNATURE = "【青岛人社】"
IF_NOT_YOU = "如非本人操作，请立即致电12333。"


def _when(moment: datetime, tz: ZoneInfo) -> str:
    t = moment.astimezone(tz)
    return f"{t.year}年{t.month}月{t.day}日{t:%H:%M}"


def loss_reported_text(last4: str, *, at: datetime, expires_at: datetime, tz: ZoneInfo = SHANGHAI) -> str:
    """The text after a verbal loss report: the card's last 4 digits and until when the report holds."""
    return (f"{SIGNATURE}您尾号{last4}的社会保障卡已于{_when(at, tz)}办理口头挂失，有效期至{_when(expires_at, tz)}。"
            f"请在有效期内由本人携带有效身份证件到社保卡合作银行网点办理正式挂失和补卡。{IF_NOT_YOU}")


def loss_released_text(last4: str, *, at: datetime, tz: ZoneInfo = SHANGHAI) -> str:
    """The text after a verbal loss report is released."""
    return f"{SIGNATURE}您尾号{last4}的社会保障卡已于{_when(at, tz)}解除口头挂失。{IF_NOT_YOU}"


def mobile_changed_text(*, at: datetime, tz: ZoneInfo = SHANGHAI) -> str:
    """The text to a newly registered contact mobile."""
    return f"{SIGNATURE}您的社会保障卡联系手机已于{_when(at, tz)}变更为本号码。{IF_NOT_YOU}"


def mobile_replaced_text(new_last4: str, *, at: datetime, tz: ZoneInfo = SHANGHAI) -> str:
    """The text to the contact mobile a change replaced: its owner must learn of it."""
    return (f"{SIGNATURE}您的社会保障卡联系手机已于{_when(at, tz)}变更为尾号{new_last4}的号码，"
            f"本号码将不再接收社保卡通知。{IF_NOT_YOU}")
