"""What the console's report and audit pages read off a query string: local days, said wrong in Chinese."""
from __future__ import annotations

from datetime import date

from flask import request

FIRST_YEAR, LAST_YEAR = 2000, 2099  # the years a page may be asked about


class BadQuery(Exception):
    """A filter of a page that cannot be read (a date, a period, a hotline): the message says why, in Chinese."""


def day_arg(name: str, what: str) -> date | None:
    """Read a local day (YYYY-MM-DD) off the query string; None when absent; BadQuery when it is not one."""
    text = (request.args.get(name) or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"{what}“{text}”不是有效的日期，请按 年-月-日 填写，例如 2026-12-01。") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise BadQuery(f"{what}“{text}”超出可查询的范围（{FIRST_YEAR}年至{LAST_YEAR}年）。")
    return day
