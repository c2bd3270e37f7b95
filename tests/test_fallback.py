"""POST /voice/fallback, the number's "primary handler fails" URL: it answers from the configuration
alone, with the database gone — a PostgreSQL server stopped, a SQLite file that cannot be opened."""
from __future__ import annotations

import logging
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import event

from ivr import create_app
from ivr.config import ROOT
from ivr.voice.fallback import MINIMAL_TWIML
from models.storage.db import create_schema
from tests.support import BASE, FORM, MONDAY_10AM, free_port, signed_post, use_test_secrets

MONDAY_NOON = "2026-11-30 04:00:00"  # 12:00 in Qingdao: the 12333 agents' lunch break
SATURDAY_10AM = "2026-12-05 02:00:00"
PG = ROOT / "scripts" / "pg.sh"
CITY = "+8653212345"  # 12345: staffed always (config.yaml)
ERROR = {"ErrorCode": "11200", "ErrorUrl": "https://ivr.example.gov.cn/voice/step?t=3"}


def document(*verbs: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


def says(app, *ids: str, **values) -> str:
    """The <Say>s of prompts, in the configured voice, as the catalogue words them."""
    catalogue = app.extensions["catalogue"]
    return "".join(f'<Say language="cmn-CN" voice="Polly.Zhiyu">{catalogue.text(pid, values)}</Say>' for pid in ids)


def apology_and_dial(app, nouns: str = "<Number>+8653200000000</Number>") -> str:
    return document(says(app, "fallback.apology", "agent.connecting"),
                    f'<Dial action="/voice/fallback/dial" method="POST" timeout="30">{nouns}</Dial>')


def closed_hours(app) -> str:
    hours = "工作日8:30至11:30、13:00至17:30"
    return document(says(app, "fallback.apology", "fallback.hours", "common.goodbye", hours_text=hours), "<Hangup />")


@contextmanager
def no_database_touched(app):
    """Fail if anything opens or uses a connection of the app's engine meanwhile."""
    engine, touched = app.extensions["engine"], []

    def note(*_args):
        touched.append("connection")

    event.listen(engine, "do_connect", note)
    event.listen(engine.pool, "checkout", note)
    try:
        yield
    finally:
        event.remove(engine, "do_connect", note)
        event.remove(engine.pool, "checkout", note)
    assert touched == [], "the fallback touched the database"


def fallback(app, form=None, path="/voice/fallback"):
    with no_database_touched(app):
        resp = signed_post(app.test_client(), path, {**FORM, **ERROR, **(form or {})})
    assert resp.status_code == 200 and resp.mimetype == "text/xml"
    return resp.data.decode()


def spoken_answer(app) -> str:
    """The normal webhook's answer to a new call (it needs the database)."""
    resp = signed_post(app.test_client(), "/voice", {**FORM, "CallSid": "CA" + "7" * 32})
    assert resp.status_code == 200
    return resp.data.decode()


# -- a PostgreSQL server, stopped --------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_postgres(tmp_path_factory):
    """An app built on a PostgreSQL server of the test's own (scripts/pg.sh), which is then stopped."""
    port = str(free_port())
    started = subprocess.run([str(PG), "start", port], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL server could be started: {started.stderr.strip()}")
    url = subprocess.run([str(PG), "url", port], capture_output=True, text=True, check=True).stdout.strip()
    with pytest.MonkeyPatch.context() as mp:
        try:
            use_test_secrets(mp)
            mp.setenv("DATABASE_URL", url)  # as an operator sets it
            app = create_app()
            create_schema(app.extensions["engine"])
            with freeze_time(MONDAY_10AM):
                assert says(app, "common.welcome") in spoken_answer(app)  # the greeting, while the server runs
        finally:
            subprocess.run([str(PG), "stop", port], check=True, timeout=120)
            shutil.rmtree(f"/tmp/ivr-pg-{port}", ignore_errors=True)
        yield app
        app.extensions["engine"].dispose()


def test_with_postgresql_stopped_the_fallback_apologises_and_dials_the_agents(stopped_postgres):
    with freeze_time(MONDAY_10AM):
        assert fallback(stopped_postgres) == apology_and_dial(stopped_postgres)


def test_with_postgresql_stopped_out_of_hours_the_fallback_says_the_hours_and_goodbye(stopped_postgres):
    with freeze_time(MONDAY_NOON):
        assert fallback(stopped_postgres) == closed_hours(stopped_postgres)


def test_with_postgresql_stopped_the_normal_webhook_still_apologises_and_transfers(stopped_postgres):
    with freeze_time(MONDAY_10AM):
        answer = spoken_answer(stopped_postgres)
    assert says(stopped_postgres, "common.system_error", "agent.connecting") in answer and "<Dial" in answer


# -- a SQLite file that cannot be opened -------------------------------------------------------------

@pytest.fixture
def unopenable(tmp_path, monkeypatch, clock):
    """An app whose SQLite database is a path under a plain file: it can never be opened."""
    (tmp_path / "not-a-folder").write_text("")
    use_test_secrets(monkeypatch)
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'not-a-folder' / 'hotline.db'}"})
    yield app
    app.extensions["engine"].dispose()


def test_with_the_sqlite_file_unopenable_the_fallback_apologises_and_dials_the_agents(unopenable):
    assert fallback(unopenable) == apology_and_dial(unopenable)


def test_with_the_sqlite_file_unopenable_on_a_saturday_the_fallback_says_the_hours(unopenable, clock):
    clock.move_to(SATURDAY_10AM)
    assert fallback(unopenable) == closed_hours(unopenable)


def test_with_the_sqlite_file_unopenable_the_normal_webhook_still_apologises_and_transfers(unopenable):
    answer = spoken_answer(unopenable)
    assert says(unopenable, "common.system_error", "agent.connecting") in answer and "<Dial" in answer


def test_the_always_staffed_12345_dials_the_agents_at_lunchtime(unopenable, clock):
    clock.move_to(MONDAY_NOON)
    assert fallback(unopenable, {"To": CITY}) == apology_and_dial(unopenable)


# -- after the fallback's <Dial> ----------------------------------------------------------------------

@pytest.mark.parametrize("status", ["completed", "answered"])
def test_after_an_agent_took_the_call_the_caller_hears_goodbye(unopenable, status):
    answer = fallback(unopenable, {"DialCallStatus": status}, path="/voice/fallback/dial")
    assert answer == document(says(unopenable, "common.goodbye"), "<Hangup />")


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled", ""])
def test_when_no_agent_answers_the_caller_is_told_to_call_again_later(unopenable, status):
    answer = fallback(unopenable, {"DialCallStatus": status}, path="/voice/fallback/dial")
    assert answer == document(says(unopenable, "agent.unavailable", "fallback.call_later", "common.goodbye"),
                              "<Hangup />")


# -- how the agents are reached -------------------------------------------------------------------

@pytest.fixture
def on(tmp_path, monkeypatch, clock):
    """A factory of apps with an `agent` section of the test's choosing, on an unopenable database."""
    (tmp_path / "file").write_text("")
    use_test_secrets(monkeypatch)
    return lambda **agent: create_app({"database_url": f"sqlite:///{tmp_path / 'file' / 'db'}", "agent": agent})


def test_a_sip_leg_is_dialled_as_sip(on):
    app = on(leg="sip", dial="sip:agents@pbx.example.gov.cn", timeout=20)
    assert fallback(app) == document(
        says(app, "fallback.apology", "agent.connecting"),
        '<Dial action="/voice/fallback/dial" method="POST" timeout="20"><Sip>sip:agents@pbx.example.gov.cn</Sip></Dial>')


def test_with_the_queue_leg_the_queue_takers_are_rung_directly_instead_of_a_queue(on):
    # <Enqueue>'s wait URL and /voice/queue/next read the database: the takers' phones ring at once.
    app = on(leg="queue", queue_takers=["+8653200000001", "client:li.agent", "sip:agent2@pbx.example.gov.cn"])
    assert fallback(app) == apology_and_dial(app, "<Number>+8653200000001</Number><Client><Identity>li.agent"
                                                  "</Identity></Client><Sip>sip:agent2@pbx.example.gov.cn</Sip>")


def test_with_the_queue_leg_and_no_takers_named_the_agents_number_rings(on):
    app = on(leg="queue", dial="+8653200000009")
    assert fallback(app) == apology_and_dial(app, "<Number>+8653200000009</Number>")


# -- the boundary ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/voice/fallback", "/voice/fallback/dial"])
def test_an_unsigned_or_badly_signed_fallback_is_refused_like_every_webhook(unopenable, path):
    client = unopenable.test_client()
    assert client.post(path, data=FORM, base_url=BASE).status_code == 403
    assert signed_post(client, path, FORM, token="not-our-token").status_code == 403


def test_twilios_error_code_and_url_are_logged_without_the_callers_number(unopenable, caplog):
    with caplog.at_level(logging.WARNING, logger="ivr.voice.fallback"):
        fallback(unopenable, {"ErrorUrl": "https://ivr.example.gov.cn/voice/step?t=3&n=13912345678"})
    line = next(r.getMessage() for r in caplog.records if r.name == "ivr.voice.fallback")
    assert "call CA" + "1" * 32 in line and "hotline 12333" in line and "Twilio error 11200" in line
    assert "https://ivr.example.gov.cn/voice/step?t=3" in line and "+86139****5678" in line
    assert "13912345678" not in line and "12345678" not in caplog.text


def test_when_even_the_catalogue_fails_the_caller_hears_the_fixed_apology(unopenable, monkeypatch):
    def broken(*_args, **_kw):
        raise KeyError("a prompt the catalogue cannot fill")

    monkeypatch.setattr(unopenable.extensions["catalogue"], "fill", broken)
    for path in ("/voice/fallback", "/voice/fallback/dial"):
        assert fallback(unopenable, path=path) == MINIMAL_TWIML
    assert "<Say" in MINIMAL_TWIML and "<Hangup />" in MINIMAL_TWIML


def test_the_fallback_prompts_are_in_the_catalogue():
    from ivr.voice.fallback import PROMPTS
    from ivr.voice.prompts import Catalogue

    assert Catalogue.load(Path(ROOT / "voice_prompts" / "zh-CN.yaml")).missing(PROMPTS) == set()
