"""Chinese phone numbers, checked with phonenumbers: contact mobiles and call-back numbers."""
from __future__ import annotations

import phonenumbers


def _parse(raw: str) -> phonenumbers.PhoneNumber | None:
    try:
        num = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException:
        return None
    if num.country_code != 86 or not phonenumbers.is_valid_number(num):
        return None
    return num


def normalise_phone(raw: str) -> str | None:
    """Return a Chinese number (mobile, or fixed line with its area code) in E.164, or None."""
    num = _parse(raw)
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164) if num else None


def normalise_mobile(raw: str) -> str | None:
    """Return a Chinese mobile number in E.164, or None when it is not one."""
    num = _parse(raw)
    if num is None or phonenumbers.number_type(num) != phonenumbers.PhoneNumberType.MOBILE:
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
