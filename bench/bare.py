"""The limit: a bare Flask app that checks Twilio's signature and answers a menu-sized TwiML.

No hotline logic, no database: what one webhook step costs on this stack at the least.
Served as `gunicorn bench.bare:app`, with TWILIO_AUTH_TOKEN in the environment.
"""
from __future__ import annotations

import os

from flask import Flask, Response, abort, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

app = Flask(__name__)
validator = RequestValidator(os.environ.get("TWILIO_AUTH_TOKEN", "bench-token"))
MENU = ("口头挂失请按1，解除口头挂失请按2，查询卡状态和办卡进度请按3，激活社保卡请按4，"
        "查询医保个人账户余额和明细请按5，修改联系电话请按6，修改服务密码请按7，办事指南请按8。")


def menu(turn: str) -> str:
    """Build the main menu's TwiML with the twilio library, as the hotline does."""
    r = VoiceResponse()
    g = r.gather(input="dtmf speech", num_digits=1, finish_on_key="", timeout=6, action=f"/voice/step?t={turn}",
                 method="POST", action_on_empty_result=False, language="cmn-Hans-CN", hints="挂失,解挂,查询,人工")
    g.say(MENU, voice="Polly.Zhiyu", language="cmn-CN")
    g.say("重听请按9，人工服务请按0。", voice="Polly.Zhiyu", language="cmn-CN")
    r.redirect(f"/voice/step?t={turn}&e=silence", method="POST")
    return r.to_xml()


@app.post("/voice")
@app.post("/voice/step")
def step() -> Response:
    """Check the signature, answer the menu."""
    url = request.url
    if not validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
        abort(403)
    return Response(menu(request.args.get("t", "1")), mimetype="text/xml")
