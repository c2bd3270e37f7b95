"""Every console action writes one row of the audit trail (who, when, what, on which holder, card
or call, from which address); the admins' audit page filters and links it; `audit export` writes
it as CSV for Excel."""
from __future__ import annotations

import csv
import getpass
import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from models.agents import AgentAccount, AuditEvent, record_audit
from models.cards import Card
from models.clock import utcnow
from models.vocabulary import AuditAction
from tests.support import ADMIN, AGENT, ALICE, BOB, Console, card_of, create_agent, verified

AGENT_ADDRESS, ADMIN_ADDRESS = "198.51.100.7", "203.0.113.9"
CLI = f"cli:{getpass.getuser()}"  # the accounts fixture makes its accounts at the CLI
FIELDS = ("agent", "action", "holder_id", "card_id", "call_sid", "address", "detail")


def last_id(app) -> int:
    with app.extensions["sessions"]() as s:
        return s.scalar(select(func.max(AuditEvent.id))) or 0


def rows_after(app, after: int) -> list[tuple]:
    """Return the rows written since `after` (an id), oldest first, as FIELDS."""
    with app.extensions["sessions"]() as s:
        return [tuple(getattr(e, f) for f in FIELDS)
                for e in s.scalars(select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id))]


def account_id(app, username: str) -> int:
    with app.extensions["sessions"]() as s:
        return s.scalars(select(AgentAccount.id).where(AgentAccount.username == username)).one()


def ids(app, id_number=ALICE) -> tuple[int, int]:
    """Return the holder's id and their first card's id."""
    with app.extensions["sessions"]() as s:
        card = s.scalars(select(Card).where(Card.card_number == card_of(id_number))).one()
        return card.holder_id, card.id


@pytest.fixture
def agent(app, accounts):
    """A plain agent, logged in from AGENT_ADDRESS."""
    console = Console(app.test_client(), address=AGENT_ADDRESS)
    assert console.login(*AGENT).status_code == 302
    return console


@pytest.fixture
def admin(app, accounts):
    """An admin, logged in (two-factor enrolment on the way) from ADMIN_ADDRESS."""
    console = Console(app.test_client(), address=ADMIN_ADDRESS)
    assert console.login_with_code(*ADMIN).status_code == 200
    return console


# --- one row per action, with its holder, card and address -----------------------------------------

def test_an_agents_loss_report_is_in_the_audit_with_the_card_and_address(app, ledger, agent):
    ledger.add(ALICE)
    holder, card = ids(app)
    before = last_id(app)
    page = f"/agent/holders/{holder}"
    agent.post(f"{page}/cards/{card}/loss", page, confirm="1")
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    assert rows_after(app, before) == [(AGENT[0], "report_loss", holder, card, None, AGENT_ADDRESS, "")]


def test_a_release_is_audited_with_the_card(app, ledger, agent):
    ledger.add(ALICE, status="verbal_loss")
    holder, card = ids(app)
    before = last_id(app)
    page = f"/agent/holders/{holder}"
    agent.post(f"{page}/cards/{card}/release", page, confirm="1")
    assert rows_after(app, before) == [(AGENT[0], "release_loss", holder, card, None, AGENT_ADDRESS, "")]


def test_a_refused_loss_report_audits_nothing(app, ledger, agent):
    ledger.add(ALICE, status="cancelled")
    holder, card = ids(app)
    before = last_id(app)
    page = f"/agent/holders/{holder}"
    agent.post(f"{page}/cards/{card}/loss", page, confirm="1")
    assert ledger.card(card_of(ALICE)).status == "cancelled" and rows_after(app, before) == []


def test_a_mobile_change_is_audited_with_the_new_number_masked(app, ledger, agent):
    ledger.add(ALICE)
    holder, _ = ids(app)
    before = last_id(app)
    page = f"/agent/holders/{holder}"
    agent.post(f"{page}/mobile", page, mobile="139 1234 5678", confirm="1")
    assert rows_after(app, before) == [
        (AGENT[0], "change_mobile", holder, None, None, AGENT_ADDRESS, "改为 +86139****5678")]


def test_revealing_the_id_number_is_audited(app, ledger, agent):
    ledger.add(ALICE)
    holder, _ = ids(app)
    before = last_id(app)
    page = f"/agent/holders/{holder}"
    assert ALICE in agent.post(f"{page}/reveal", page).get_data(as_text=True)
    assert rows_after(app, before) == [(AGENT[0], "reveal_id", holder, None, None, AGENT_ADDRESS, "")]


def test_clearing_a_pin_lock_is_audited(app, ledger, admin, call):
    ledger.add(ALICE)
    for _ in range(6):
        call().dial().press("1").press(ALICE + "#").press("000000#")
    holder, _ = ids(app)
    before = last_id(app)
    page = f"/agent/holders/{holder}"
    admin.post(f"{page}/unlock", page, confirm="1")
    assert verified(call).prompts[:2] == ["card.readback", "loss.confirm"]
    assert rows_after(app, before) == [(ADMIN[0], "clear_pin_lock", holder, None, None, ADMIN_ADDRESS, "")]


def test_a_login_a_failed_login_and_a_logout_are_audited_with_the_address(app, accounts):
    console = Console(app.test_client(), address=AGENT_ADDRESS)
    before = last_id(app)
    console.login(AGENT[0], "not-the-password")
    console.login("nobody.here", "not-the-password")
    console.login(*AGENT)
    console.post("/agent/logout", "/agent/")
    assert rows_after(app, before) == [
        (AGENT[0], "login_failed", None, None, None, AGENT_ADDRESS, "密码错误"),
        ("nobody.here", "login_failed", None, None, None, AGENT_ADDRESS, "没有此账号或账号已停用"),
        (AGENT[0], "login", None, None, None, AGENT_ADDRESS, "密码"),
        (AGENT[0], "logout", None, None, None, AGENT_ADDRESS, ""),
    ]


def test_the_address_is_the_clients_behind_a_trusted_proxy(configured, runner):
    app = configured(twilio={"trusted_proxies": 1})
    create_agent(app.test_cli_runner(), *AGENT)
    client = app.test_client()
    before = last_id(app)
    console = Console(client, address="127.0.0.1")
    console.environ["HTTP_X_FORWARDED_FOR"] = AGENT_ADDRESS  # nginx overwrites it with the peer's address
    assert console.login(*AGENT).status_code == 302
    assert rows_after(app, before) == [(AGENT[0], "login", None, None, None, AGENT_ADDRESS, "密码")]


def test_an_admin_lifting_a_login_limit_and_resetting_a_second_factor_is_audited(app, admin):
    agent = Console(app.test_client(), address=AGENT_ADDRESS)
    for _ in range(5):
        agent.login(AGENT[0], "not-the-password")
    agent_id = account_id(app, AGENT[0])
    before = last_id(app)
    admin.post(f"/agent/admin/accounts/{agent_id}/lift", "/agent/admin")
    admin.post(f"/agent/2fa/reset/{agent_id}", "/agent/admin")
    assert rows_after(app, before) == [
        (ADMIN[0], "lift_login_limit", None, None, None, ADMIN_ADDRESS, AGENT[0]),
        (ADMIN[0], "twofactor_reset", None, None, None, ADMIN_ADDRESS, AGENT[0]),
    ]


# --- the audit page ----------------------------------------------------------------------------------

def worked_day(app, ledger, agent, clock):
    """The agent reports ALICE's card lost at 10:00 and BOB's at 10:05; the next day reveals ALICE's ID."""
    ledger.add(ALICE)
    ledger.add(BOB)
    for id_number in (ALICE, BOB):
        holder, card = ids(app, id_number)
        page = f"/agent/holders/{holder}"
        agent.post(f"{page}/cards/{card}/loss", page, confirm="1")
        clock.tick(timedelta(minutes=5))
    clock.tick(timedelta(days=1))
    holder, _ = ids(app, ALICE)
    agent.post(f"/agent/holders/{holder}/reveal", f"/agent/holders/{holder}")


def audit_table(html: str) -> list[list[str]]:
    """Return the audit table's rows as their cells' text."""
    if '<table id="audit"' not in html:
        assert "没有符合条件的记录。" in html
        return []
    body = html.split('<table id="audit"', 1)[1].split("</table>", 1)[0]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr id=\"event-\d+\">(.*?)</tr>", body, re.S)]


def test_the_audit_page_is_for_admins_only(agent):
    assert agent.client.get("/agent/admin/audit").status_code == 403


def test_the_audit_page_shows_an_agents_loss_report_masked_and_linked(app, ledger, agent, admin, clock):
    worked_day(app, ledger, agent, clock)
    html = admin.client.get("/agent/admin/audit?action=report_loss").get_data(as_text=True)
    holder, _ = ids(app, ALICE)
    assert audit_table(html) == [
        ["2026-11-30 10:05:00", AGENT[0], "办理口头挂失", "**************1015", "尾号 1015", "", AGENT_ADDRESS, ""],
        ["2026-11-30 10:00:00", AGENT[0], "办理口头挂失", "**************0025", "尾号 0025", "", AGENT_ADDRESS, ""],
    ]
    assert f'<a href="/agent/holders/{holder}" class="holder">**************0025</a>' in html
    assert ALICE not in html and BOB not in html and "共 2 条" in html


def test_the_audit_page_filters_by_agent_action_and_local_days(app, ledger, agent, admin, clock):
    worked_day(app, ledger, agent, clock)

    def actions(query: str) -> list[str]:
        return [row[2] for row in audit_table(admin.client.get(f"/agent/admin/audit?{query}").get_data(as_text=True))]

    assert actions(f"agent={AGENT[0]}&from=2026-11-30&to=2026-11-30") == ["办理口头挂失", "办理口头挂失", "登录"]
    assert actions(f"agent={AGENT[0]}&from=2026-12-01") == ["查看完整身份证号码"]
    assert actions(f"agent={AGENT[0]}&to=2026-11-29") == []
    assert actions("action=reveal_id") == ["查看完整身份证号码"]
    assert actions(f"agent={ADMIN[0]}&action=report_loss") == []


def test_a_local_day_starts_at_midnight_in_qingdao_not_utc(app, admin):
    with app.extensions["sessions"]() as s, s.begin():  # 2026-11-30 23:30 and 2026-12-01 00:30 in Qingdao
        for hour in (15, 16):
            record_audit(s, AuditAction.SEARCH, agent="zhao.agent", address="192.0.2.1",
                         now=utcnow().replace(hour=hour, minute=30), detail=f"at {hour}:30 UTC")
    html = admin.client.get("/agent/admin/audit?agent=zhao.agent&from=2026-12-01&to=2026-12-01").get_data(as_text=True)
    assert [row[0] for row in audit_table(html)] == ["2026-12-01 00:30:00"]


def test_the_audit_page_links_a_call(app, admin):
    with app.extensions["sessions"]() as s, s.begin():
        record_audit(s, AuditAction.CALLBACK_OUTCOME, agent="li.agent", address="192.0.2.1", now=utcnow(),
                     call_sid="CA0123456789abcdef0123456789abcdef", detail="已联系上")
    html = admin.client.get("/agent/admin/audit?action=callback_outcome").get_data(as_text=True)
    assert ('<a href="/agent/calls/CA0123456789abcdef0123456789abcdef" class="call" '
            'title="CA0123456789abcdef0123456789abcdef">…89abcdef</a>') in html
    assert audit_table(html)[0][2:] == ["记录回电结果", "", "", "…89abcdef", "192.0.2.1", "已联系上"]


def test_the_audit_page_shows_50_rows_a_page_newest_first(app, admin, clock):
    with app.extensions["sessions"]() as s, s.begin():
        for n in range(120):
            record_audit(s, AuditAction.SEARCH, agent="zhao.agent", address="192.0.2.1",
                         now=utcnow() + timedelta(seconds=n), detail=f"第 {n} 次")
    first = admin.client.get("/agent/admin/audit?agent=zhao.agent").get_data(as_text=True)
    third = admin.client.get("/agent/admin/audit?agent=zhao.agent&page=3").get_data(as_text=True)
    assert [row[7] for row in audit_table(first)] == [f"第 {n} 次" for n in range(119, 69, -1)]
    assert [row[7] for row in audit_table(third)] == [f"第 {n} 次" for n in range(19, -1, -1)]
    assert "第 1 / 3 页" in first and 'href="/agent/admin/audit?page=2&amp;agent=zhao.agent' in first
    assert "共 120 条" in first


@pytest.mark.parametrize("query, message", [
    ("from=2026-13-01", "开始日期“2026-13-01”不是有效的日期"),
    ("from=2026-12-02&to=2026-12-01", "结束日期 2026-12-01 早于开始日期 2026-12-02。"),
    ("action=delete_everything", "没有“delete_everything”这种操作。"),
])
def test_a_bad_filter_says_why_in_chinese(admin, query, message):
    resp = admin.client.get(f"/agent/admin/audit?{query}")
    assert resp.status_code == 400 and message in resp.get_data(as_text=True)


# --- audit export ---------------------------------------------------------------------------------------

def test_audit_export_writes_the_days_as_csv_with_a_bom(app, ledger, agent, runner, clock, tmp_path):
    worked_day(app, ledger, agent, clock)
    out = tmp_path / "audit.csv"
    result = runner.invoke(args=["audit", "export", "--from", "2026-11-30", "--to", "2026-11-30", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"5 audit rows from 2026-11-30 to 2026-11-30 written to {out}\n"
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    _, alice_card = ids(app, ALICE)
    assert list(csv.reader(io.StringIO(raw.decode("utf-8-sig")))) == [
        ["at", "agent", "action", "action_label", "holder", "card", "call_sid", "address", "detail"],
        ["2026-11-30T10:00:00+08:00", CLI, "account_create", "创建账号", "", "", "", "", "wang.admin（wang.admin，管理员）"],
        ["2026-11-30T10:00:00+08:00", CLI, "account_create", "创建账号", "", "", "", "", "li.agent（li.agent，坐席）"],
        ["2026-11-30T10:00:00+08:00", AGENT[0], "login", "登录", "", "", "", AGENT_ADDRESS, "密码"],
        ["2026-11-30T10:00:00+08:00", AGENT[0], "report_loss", "办理口头挂失", "**************0025", "0025", "",
         AGENT_ADDRESS, ""],
        ["2026-11-30T10:05:00+08:00", AGENT[0], "report_loss", "办理口头挂失", "**************1015", "1015", "",
         AGENT_ADDRESS, ""],
    ]
    assert b"\r\n" in raw  # Excel's line ends


def test_audit_export_to_standard_output_includes_both_days(app, ledger, agent, runner, clock):
    worked_day(app, ledger, agent, clock)
    result = runner.invoke(args=["audit", "export", "--from", "2026-11-30", "--to", "2026-12-01"])
    assert result.exit_code == 0
    lines = result.stdout_bytes.decode("utf-8-sig").splitlines()
    assert len(lines) == 7 and lines[-1].split(",")[2] == "reveal_id"


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-11-31", "--to", "2026-12-01"], "audit export: --from '2026-11-31' is not a date: use YYYY-MM-DD\n"),
    (["--from", "2026-12-01", "--to", "yesterday"], "audit export: --to 'yesterday' is not a date: use YYYY-MM-DD\n"),
    (["--from", "2026-12-02", "--to", "2026-12-01"], "audit export: --to 2026-12-01 is before --from 2026-12-02\n"),
])
def test_audit_export_refuses_bad_dates_in_one_line(runner, args, message):
    result = runner.invoke(args=["audit", "export", *args])
    assert (result.exit_code, result.output) == (2, message)
