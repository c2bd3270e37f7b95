"""Operator commands as a newcomer meets them: calendar check, imports of Excel's files and what an
import says, `sim run --url` after agents worked the demo holders, and the commands' quiet output."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select
from werkzeug.serving import make_server

from ivr import create_app
from ivr.config import load_settings
from ivr.sim.runner import Target
from models.agents import AuditEvent
from models.cards import Cardholder, HolderEvent, holder_by_id_number
from models.medical import MedicalRecord
from models.storage.db import alembic_config, create_schema
from tests.support import AGENT, ALICE, BOB, PIN, PIN_KEY, TOKEN, XENA, Console, card_of, use_test_secrets

ROOT = Path(__file__).resolve().parent.parent
HEADER = "id_number,name,card_number,status,pin,mobile,bank,applied_on"
SAVE_AS = 'in Excel, save it as "CSV UTF-8(逗号分隔)(*.csv)" (or "CSV(逗号分隔)(*.csv)")'


@pytest.fixture
def app_with(database_url, monkeypatch, clock):
    """Build apps on the test database with extra configuration (the calendar, …)."""
    use_test_secrets(monkeypatch)
    built = []

    def build(**config):
        app = create_app({"database_url": database_url, **config})
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["engine"].dispose()


# --- calendar check -----------------------------------------------------------------------------

MISSING_2027 = ("the next 60 days reach 2027-01-30: add the State Council's 2027 holiday schedule to config.yaml "
                "(calendar.holidays and calendar.workdays, YYYY-MM-DD), or upgrade chinesecalendar once it has 2027\n")


def test_calendar_check_on_1_december_2026_says_to_add_2027_and_exits_1(runner, clock):
    clock.move_to("2026-12-01 02:00:00")  # 10:00 in Qingdao
    result = runner.invoke(args=["calendar", "check"])
    assert result.exit_code == 1
    assert result.stdout == "official calendar known until 2026-12-31 (30 days from 2026-12-01)\n"
    assert result.stderr == MISSING_2027


@pytest.mark.parametrize("utc, today, code", [
    ("2026-11-01 15:59:59", "2026-11-01", 0),  # 23:59:59 in Qingdao: the 60th day ahead is 31 December
    ("2026-11-01 16:00:00", "2026-11-02", 1),  # midnight in Qingdao (still 1 November in UTC): 1 January
])
def test_calendar_check_counts_60_days_from_today_in_the_configured_time_zone(runner, clock, utc, today, code):
    clock.move_to(utc)
    result = runner.invoke(args=["calendar", "check"])
    days = 60 if code == 0 else 59
    assert result.stdout == f"official calendar known until 2026-12-31 ({days} days from {today})\n"
    assert result.exit_code == code
    assert result.stderr == ("" if code == 0 else MISSING_2027.replace("2027-01-30", "2027-01-01"))


def test_calendar_check_passes_once_config_lists_the_2027_schedule(app_with, clock):
    clock.move_to("2026-12-01 02:00:00")
    app = app_with(calendar={"holidays": ["2027-01-01", "2027-02-06", "2027-02-07"], "workdays": ["2027-01-31"]})
    result = app.test_cli_runner().invoke(args=["calendar", "check"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "official calendar known until 2027-12-31 (395 days from 2026-12-01)\n", "")


def test_calendar_check_takes_another_horizon(runner, clock):
    clock.move_to("2026-12-01 02:00:00")
    result = runner.invoke(args=["calendar", "check", "--days", "30"])
    assert (result.exit_code, result.stderr) == (0, "")


# --- ledger import: the file's encoding -----------------------------------------------------------

ROWS = [
    f"{ALICE},张伟,QD1000000001,normal,{PIN},13800000001,青岛银行,2020-03-01",
    f"{BOB},李娜,QD2000000001,normal,246802,,中国工商银行,2024-01-15",
]


def write(tmp_path: Path, rows: list[str], encoding: str, name: str = "holders.csv") -> Path:
    path = tmp_path / name
    path.write_bytes("\r\n".join([HEADER, *rows, ""]).encode(encoding))  # Excel ends lines with CRLF
    return path


def names(app) -> dict[str, str]:
    with app.extensions["sessions"]() as s:
        return {h.id_number: h.name for h in s.scalars(select(Cardholder))}


def banks(app) -> set[str]:
    with app.extensions["sessions"]() as s:
        return {c.bank for h in s.scalars(select(Cardholder)) for c in h.cards}


def test_an_excel_gbk_file_imports_the_chinese_names(runner, app, tmp_path):
    path = write(tmp_path, ROWS, "gbk")  # Excel's "CSV (逗号分隔)" on Chinese Windows: code page 936
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert names(app) == {ALICE: "张伟", BOB: "李娜"}
    assert banks(app) == {"青岛银行", "中国工商银行"}


def test_a_gb18030_file_with_a_character_gbk_lacks_imports_it(runner, app, tmp_path):
    path = write(tmp_path, [ROWS[0].replace("张伟", "王䶮")], "gb18030")  # 䶮: CJK extension A, not in GBK
    assert runner.invoke(args=["ledger", "import", str(path)]).exit_code == 0
    assert names(app) == {ALICE: "王䶮"}


def test_an_excel_utf8_file_with_a_byte_order_mark_imports_the_chinese_names(runner, app, tmp_path):
    path = write(tmp_path, ROWS, "utf-8-sig")  # Excel's "CSV UTF-8 (逗号分隔)"
    assert runner.invoke(args=["ledger", "import", str(path)]).exit_code == 0
    assert names(app) == {ALICE: "张伟", BOB: "李娜"}


def test_a_gbk_medical_account_file_imports_the_institutions(runner, app, ledger, tmp_path):
    ledger.add(ALICE)
    path = tmp_path / "medical.csv"
    path.write_bytes("id_number,at,kind,amount,institution,balance\r\n"
                     f"{ALICE},2026-11-01 09:30,debit,32.80,青岛市立医院,647.70\r\n".encode("gbk"))
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert (result.exit_code, result.stdout) == (0, f"imported 1 row from {path}\n")
    with app.extensions["sessions"]() as s:
        assert [r.institution for r in s.scalars(select(MedicalRecord))] == ["青岛市立医院"]


@pytest.mark.parametrize("content, problem", [
    (bytes(range(128, 256)) * 8, "line 1: neither UTF-8 nor GB18030 (GBK) text"),
    ("\n".join([HEADER, *ROWS]).encode("utf-16"), 'UTF-16 text (Excel\'s "Unicode text"), not a CSV'),
    ("\n".join([HEADER, *ROWS]).encode("utf-16-le"), 'UTF-16 text (Excel\'s "Unicode text"), not a CSV'),
    (f"{HEADER}\n{ROWS[0]}\n".encode() + b"\xff\xfe\x80,\n", "line 3: neither UTF-8 nor GB18030 (GBK) text"),
], ids=["binary", "utf-16", "utf-16 without a byte order mark", "a line in neither"])
def test_a_file_in_neither_encoding_is_refused_in_one_line_saying_how_to_save_it(
        runner, app, tmp_path, content, problem):
    path = tmp_path / "holders.csv"
    path.write_bytes(content)
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.stderr == f"{path}: {problem}: {SAVE_AS}\n"
    assert result.stdout == ""
    assert names(app) == {}


# --- ledger import: what it says ----------------------------------------------------------------

def test_a_rerun_that_changes_nothing_says_so(runner, app, tmp_path):
    path = write(tmp_path, ROWS, "utf-8")
    first = runner.invoke(args=["ledger", "import", str(path)])
    assert first.stdout == (f"imported 2 rows from {path}: 2 cards added, 0 changed, 0 unchanged; "
                            "2 cardholders added, 0 changed\n")
    again = runner.invoke(args=["ledger", "import", str(path)])
    assert (again.exit_code, again.stdout) == (0, f"nothing changed: 2 rows already as in {path}\n")


def test_a_rerun_that_changes_rows_says_how_many_were_added_and_changed(runner, app, tmp_path):
    runner.invoke(args=["ledger", "import", str(write(tmp_path, ROWS, "utf-8"))])
    changed = write(tmp_path, [ROWS[0].replace(",normal,", ",formal_loss,"), ROWS[1].replace("李娜", "李娜娜"),
                               f"{XENA},周敏,QD3000000001,normal,,,,"], "utf-8", name="changed.csv")
    result = runner.invoke(args=["ledger", "import", str(changed)])
    assert (result.exit_code, result.stdout) == (0, (
        f"imported 3 rows from {changed}: 1 card added, 1 changed, 1 unchanged; 1 cardholder added, 1 changed\n"))


# --- sim run --url after agents worked a demo holder -------------------------------------------

SCENARIO = """\
name: the demo card reported lost again
cardholders:
  - id_number: "370202198503120025"
    pin: "135790"
    cards:
      - {card_number: QD0000000001, status: normal}
steps:
  - dial:
  - press: "1"
  - press: "370202198503120025#"
  - press: "135790#"
    expect: {prompts: [card.readback, loss.confirm]}
  - press: "1"
    expect: {prompts_include: [loss.done]}
  - hangup:
expect:
  cards: {QD0000000001: verbal_loss}
  history:
    QD0000000001: [{status: normal, channel: import}, {status: verbal_loss, channel: ivr, this_call: true}]
"""


@pytest.fixture
def served(app):
    """The test app on a loopback port (what `sim run --url` calls), sharing the test's database."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_sim_run_url_resets_a_demo_holder_an_agent_worked_and_keeps_the_audit_trail(
        app, runner, client, accounts, served, tmp_path):
    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    agent = Console(client)
    assert agent.login(*AGENT).status_code == 302
    with app.extensions["sessions"]() as s:
        holder = holder_by_id_number(s, ALICE)
        page, card_id = f"/agent/holders/{holder.id}", holder.cards[0].id
    agent.post(f"{page}/reveal", page)  # audited
    agent.post(f"{page}/mobile", page, mobile="13912345678", confirm="1")  # a holder history row
    agent.post(f"{page}/cards/{card_id}/loss", page, confirm="1")  # a card history row by the agent
    with app.extensions["sessions"]() as s:
        audit = [(e.id, e.agent, e.action, e.holder_id) for e in s.scalars(select(AuditEvent))][2:]  # accounts made
        worked = [(e.id, e.kind, e.actor) for e in s.scalars(select(HolderEvent))]
    assert [a[2:] for a in audit] == [("login", None), ("reveal_id", holder.id), ("change_mobile", holder.id),
                                      ("report_loss", holder.id)] and len(worked) == 1

    scenario = tmp_path / "again.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    for _ in range(2):  # and again, over what the first run left
        result = runner.invoke(args=["sim", "run", "--url", served, str(scenario)])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "1 passed, 0 failed"
    with app.extensions["sessions"]() as s:
        assert [(e.id, e.agent, e.action, e.holder_id) for e in s.scalars(select(AuditEvent))][2:] == audit
        assert [(e.id, e.kind, e.actor) for e in s.scalars(select(HolderEvent))] == worked
        again = holder_by_id_number(s, ALICE)
        assert (again.id, again.mobile, [c.card_number for c in again.cards]) == (holder.id, None, ["QD0000000001"])


def test_a_fixture_takes_a_card_number_from_another_holder(app, ledger):
    ledger.add(BOB)
    target = Target(app)
    target.load_fixtures([{"id_number": ALICE, "pin": PIN, "cards": [{"card_number": card_of(BOB), "status": "normal"}]}])
    with app.extensions["sessions"]() as s:
        assert [c.card_number for c in holder_by_id_number(s, ALICE).cards] == [card_of(BOB)]
        assert holder_by_id_number(s, BOB).cards == []


# --- quiet commands -------------------------------------------------------------------------------

def migrations() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [f"migrated {r.revision}: {' '.join((r.doc or '').split())}" for r in reversed(list(script.walk_revisions()))]


def test_init_db_says_each_migration_once_then_only_that_the_database_is_ready(app_with, caplog):
    app = app_with()  # an empty database
    cli = app.test_cli_runner()
    with caplog.at_level(logging.INFO):
        first, second = cli.invoke(args=["init-db"]), cli.invoke(args=["init-db"])
    assert first.output.splitlines() == [*migrations(), "database ready"]
    assert len(migrations()) >= 6
    assert second.output == "database ready\n"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_a_schema_created_for_tests_logs_nothing_of_alembic(app_with, caplog):
    app = app_with()
    with caplog.at_level(logging.INFO):
        create_schema(app.extensions["engine"])
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_unset_secrets_are_told_in_one_line_once(tmp_path, monkeypatch, caplog):
    use_test_secrets(monkeypatch)
    for name in ("TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY"):
        monkeypatch.delenv(name)
    with caplog.at_level(logging.INFO):
        load_settings(tmp_path, {"database_url": "sqlite://"})
        load_settings(tmp_path, {"database_url": "sqlite://"})  # a second app of the same process: `sim run`
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"development secrets in {tmp_path / 'dev-secrets'}/ "
                    "(set TWILIO_AUTH_TOKEN, IVR_PIN_KEY, IVR_SECRET_KEY in production)")]


def test_only_the_unset_secrets_are_named(tmp_path, monkeypatch, caplog):
    use_test_secrets(monkeypatch)
    monkeypatch.delenv("IVR_SECRET_KEY")
    with caplog.at_level(logging.INFO):
        load_settings(tmp_path, {"database_url": "sqlite://"})
    assert [r.getMessage() for r in caplog.records] == [
        f"development secrets in {tmp_path / 'dev-secrets'}/ (set IVR_SECRET_KEY in production)"]


def flask(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("flask")), "--app", "wsgi", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_commands_print_what_they_did_and_nothing_else(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}", "TWILIO_AUTH_TOKEN": TOKEN,
           "IVR_PIN_KEY": PIN_KEY, "IVR_SECRET_KEY": "test-secret-key"}
    env.pop("IVR_CONFIG", None)
    first, second = flask("init-db", env=env), flask("init-db", env=env)
    assert (first.returncode, first.stderr, first.stdout.splitlines()) == (0, "", [*migrations(), "database ready"])
    assert (second.returncode, second.stderr, second.stdout) == (0, "", "database ready\n")
    shown = flask("ledger", "show", ALICE, env=env)
    assert (shown.returncode, shown.stderr, shown.stdout) == (1, "no cardholder with that ID number\n", "")
    ran = flask("sim", "run", "tests/scenarios/loss/refused_when_verbal_loss.yaml", env=env)  # in-process
    assert (ran.returncode, ran.stderr, ran.stdout.splitlines()[-1]) == (0, "", "1 passed, 0 failed")


def test_sim_run_in_process_shows_the_calls_not_the_apps_log_of_each_webhook(runner, caplog):
    with caplog.at_level(logging.INFO):
        result = runner.invoke(args=["sim", "run", str(ROOT / "tests/scenarios/loss/refused_when_verbal_loss.yaml")])
    assert result.output.splitlines()[-1] == "1 passed, 0 failed"
    assert [r.getMessage() for r in caplog.records if r.levelno < logging.WARNING] == []
