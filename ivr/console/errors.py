"""The console's error pages, in Chinese, in the console's own layout; other paths keep Flask's."""
from __future__ import annotations

from typing import Any

from flask import Flask, current_app, render_template, request
from werkzeug.exceptions import HTTPException

# status → (title, what the agent can do about it)
MESSAGES = {
    400: ("请求无效", "页面已过期或提交的内容有误，请返回重新操作。"),
    403: ("没有权限", "您的账号不能使用此功能；如需使用，请联系管理员。"),
    404: ("页面不存在", "没有找到要查看的内容，可能已被删除或地址有误。"),
    405: ("请求方式不正确", "请从工作台的页面上操作。"),
    429: ("尝试过于频繁", "请稍后再试；如需立即使用，请联系管理员解除。"),
    500: ("系统出错", "系统暂时出现问题，请稍后再试；问题持续时请联系管理员。"),
}


def init_app(app: Flask) -> None:
    """Answer every error under /agent with the console's page (403, 404, 429, 500 …)."""
    app.register_error_handler(HTTPException, console_error)


def console_error(error: HTTPException) -> Any:
    """Render a console error page; outside /agent, the error as Flask would answer it."""
    if not (request.path == "/agent" or request.path.startswith("/agent/")):
        return error
    code = error.code or 500
    title, hint = MESSAGES.get(code) or MESSAGES[500 if code >= 500 else 400]
    # What the error says beyond its page: a 405's Allow, a 429's Retry-After.
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    try:
        return render_template("agent/error.html", code=code, title=title, hint=hint), code, headers
    except Exception:  # the page itself failed (the database is down, say): plain text, still Chinese
        current_app.logger.exception("the console's error page failed")
        return f"{code} {title}\n{hint}\n", code, headers | {"Content-Type": "text/plain; charset=utf-8"}
