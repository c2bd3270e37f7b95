"""Finding the caller: one search box for the ID number, the name and last four, the mobile, the card number."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models.agents import AuditEvent
from models.search import parse_query
from tests.support import AGENT, ALICE, BOB, NOBODY, XENA, card_of

ZHANG_WEI_2 = "370203199203060025"  # another 张伟 whose ID number also ends 0025


@pytest.fixture
def holders(ledger, app):
    """Four holders: two 张伟 whose ID numbers end 0025, 李娜, 周敏 (an X at the end); by name → id."""
    ledger.add(ALICE, name="张伟")
    ledger.add(ZHANG_WEI_2, name="张伟")
    ledger.add(BOB, name="李娜")
    ledger.add(XENA, name="周敏")
    with app.extensions["sessions"]() as s:
        from models.cards import Cardholder

        return {h.id_number: h.id for h in s.scalars(select(Cardholder))}


def search(agent, text, method="get"):
    """Search as the page's form does (POST) or by the URL (GET); return the answer."""
    if method == "post":
        return agent.post("/agent/holders", "/agent/holders", q=text)
    return agent.client.get("/agent/holders", query_string={"q": text})


def listed(resp) -> list[int]:
    """Return the holder ids a results page lists, in order."""
    return [int(i) for i in re.findall(r'<tr id="holder-(\d+)">', resp.get_data(as_text=True))]


def message(resp) -> str:
    return re.sub(r"<[^>]+>", "", re.search(r'id="search-message">(.*?)</', resp.get_data(as_text=True), re.S).group(1))


@pytest.mark.parametrize("typed", [ALICE, f" {ALICE} ", "370202 19850312 0025"])
def test_a_full_id_number_goes_straight_to_the_one_holder(agent, holders, typed):
    resp = search(agent, typed)
    assert resp.status_code == 303 and resp.headers["Location"] == f"/agent/holders/{holders[ALICE]}"


@pytest.mark.parametrize("typed", [XENA, XENA.lower(), XENA[:-1] + "Ｘ"])
def test_an_id_number_ending_in_x_is_found_in_either_case(agent, holders, typed):
    resp = search(agent, typed)
    assert resp.headers["Location"] == f"/agent/holders/{holders[XENA]}"


@pytest.mark.parametrize("typed", ["370202198503120026", "370202198513120025"])  # check character, month 13
def test_a_mistyped_id_number_is_not_a_valid_id_number_rather_than_nobody(agent, holders, typed):
    resp = search(agent, typed)
    assert resp.status_code == 200 and listed(resp) == []
    assert message(resp) == f"**************{typed[-4:]} 不是有效的身份证号码，请核对后重新输入（校验位或出生日期不对）。"
    assert typed not in resp.get_data(as_text=True)


def test_a_valid_id_number_nobody_holds_is_not_found(agent, holders):
    resp = search(agent, NOBODY)
    assert listed(resp) == [] and message(resp) == "按身份证号码“**************0047”没有找到持卡人。"


@pytest.mark.parametrize("typed", ["张伟 0025", "张伟0025", "张伟\u30000025", " 张伟  0025 ", "张伟 ００２５"])
def test_a_name_and_the_last_four_list_every_holder_with_both(agent, holders, typed):
    resp = search(agent, typed)
    assert listed(resp) == [holders[ALICE], holders[ZHANG_WEI_2]]
    assert message(resp) == "按姓名加身份证后四位“张伟 0025”找到 2 位持卡人"


def test_a_name_and_the_last_four_find_the_one_holder(agent, holders):
    assert search(agent, "周敏 104x").headers["Location"] == f"/agent/holders/{holders[XENA]}"
    assert search(agent, "李娜 1015").headers["Location"] == f"/agent/holders/{holders[BOB]}"


def test_a_name_with_another_holders_last_four_finds_nobody(agent, holders):
    assert listed(search(agent, "李娜 0025")) == []
    assert message(search(agent, "张伟 1015")) == "按姓名加身份证后四位“张伟 1015”没有找到持卡人。"


def test_a_name_alone_is_not_enough(agent, holders):
    resp = search(agent, "张伟")
    assert listed(resp) == []
    assert message(resp) == "只凭姓名不能查询：请在姓名后加身份证号码后四位，如“张伟 0025”。"


@pytest.mark.parametrize("typed", ["13912345678", "+8613912345678", "139 1234 5678", "+86 139-1234-5678"])
def test_a_full_mobile_number_finds_the_holders_registered_with_it(agent, holders, ledger, app, typed):
    from models.cards import Cardholder

    with app.extensions["sessions"]() as s, s.begin():
        for h in s.scalars(select(Cardholder).where(Cardholder.id_number.in_([BOB, XENA]))):
            h.mobile = "+8613912345678"  # a couple sharing one mobile
    resp = search(agent, typed)
    assert listed(resp) == [holders[BOB], holders[XENA]]  # in the order the ledger learnt them
    assert message(resp) == "按手机号码“+86139****5678”找到 2 位持卡人"


def test_a_mobile_nobody_registered_finds_nobody(agent, holders):
    assert message(search(agent, "13700000000")) == "按手机号码“+86137****0000”没有找到持卡人。"


@pytest.mark.parametrize("typed", [card_of(BOB), card_of(BOB).lower()])
def test_a_card_number_finds_its_holder(agent, holders, typed):
    assert search(agent, typed).headers["Location"] == f"/agent/holders/{holders[BOB]}"


def test_an_unknown_card_number_finds_nobody(agent, holders):
    assert message(search(agent, "QD9999999999")) == "按社保卡卡号“********9999”没有找到持卡人。"


def test_the_pages_own_form_posts_and_finds_the_same(agent, holders):
    assert search(agent, ALICE, "post").headers["Location"] == f"/agent/holders/{holders[ALICE]}"
    assert listed(search(agent, "张伟 0025", "post")) == [holders[ALICE], holders[ZHANG_WEI_2]]


def test_the_search_form_needs_its_csrf_token(agent, holders):
    assert agent.client.post("/agent/holders", data={"q": ALICE}).status_code == 400


def test_results_show_only_masked_fields(agent, holders):
    html = search(agent, "张伟 0025").get_data(as_text=True)
    for id_number in (ALICE, ZHANG_WEI_2):
        assert id_number not in html and id_number[-10:] not in html
    assert html.count("**************0025") == 2 and "+86138****0001" in html and "13800000001" not in html
    assert f'href="/agent/holders/{holders[ALICE]}"' in html


def test_the_search_box_is_on_the_holders_page_and_in_the_nav(agent):
    html = agent.client.get("/agent/").get_data(as_text=True)
    assert '<a href="/agent/holders">查询持卡人</a>' in html
    page = agent.client.get("/agent/holders").get_data(as_text=True)
    assert re.search(r'<form method="post" action="/agent/holders" id="lookup"', page)
    assert re.search(r'<input [^>]*id="q" [^>]*name="q"', page)


def test_a_search_never_puts_what_was_typed_back_on_the_page(agent, holders):
    for typed in (ALICE, "13800000001", card_of(ALICE)):
        resp = agent.post("/agent/holders", "/agent/holders", q=typed)
        assert typed not in agent.client.get("/agent/holders").get_data(as_text=True)
        if resp.status_code == 200:
            assert typed not in resp.get_data(as_text=True)


def test_every_search_is_audited_masked(agent, holders, app):
    search(agent, ALICE)
    search(agent, "张伟 0025")
    search(agent, "370202198503120026")
    with app.extensions["sessions"]() as s:
        rows = [(e.agent, e.action, e.holder_id, e.detail) for e in
                s.scalars(select(AuditEvent).where(AuditEvent.action == "search").order_by(AuditEvent.id))]
    assert rows == [
        (AGENT[0], "search", holders[ALICE], "身份证号码 **************0025：1 人"),
        (AGENT[0], "search", None, "姓名加身份证后四位 张伟 0025：2 人"),
        (AGENT[0], "search", None, "无效的身份证号码 **************0026：0 人"),
    ]


def test_an_empty_search_asks_for_something_and_audits_nothing(agent, holders, app):
    assert message(search(agent, "  ")) == "请输入要查询的内容。"
    with app.extensions["sessions"]() as s:
        assert s.scalars(select(AuditEvent).where(AuditEvent.action == "search")).all() == []


@pytest.mark.parametrize("typed, kind", [
    ("370202198503120025", "id_number"), ("37020219860714104x", "id_number"), ("370202198503120026", "invalid_id"),
    ("张伟 0025", "name_last4"), ("张伟0025", "name_last4"), ("Li Na 0025", "name_last4"),
    ("13912345678", "mobile"), ("+8613912345678", "mobile"), ("QD0000000001", "card_number"),
    ("12345678901", "card_number"), ("张伟", "name_only"), ("", "empty"),
])
def test_what_is_typed_says_what_it_is(typed, kind):
    assert parse_query(typed).kind == kind


def test_holders_loaded_by_ledger_import_are_found_by_name_and_the_last_four(agent, runner, tmp_path, app):
    path = tmp_path / "holders.csv"
    path.write_text("id_number,name,card_number,status,pin,mobile,bank,applied_on\n"
                    f"{ALICE},张伟,QD1,normal,135790,13800000001,青岛银行,2024-03-01\n"
                    f"{ZHANG_WEI_2},张伟,QD2,normal,135790,,青岛银行,2024-03-01\n"
                    f"{XENA},周敏,QD3,normal,135790,,青岛银行,2024-03-01\n", encoding="utf-8")
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code == 0, result.output
    with app.extensions["sessions"]() as s:
        from models.cards import Cardholder

        ids = {h.id_number: (h.id, h.id_last4) for h in s.scalars(select(Cardholder))}
    assert sorted(last4 for _id, last4 in ids.values()) == ["0025", "0025", "104X"]
    assert listed(search(agent, "张伟 0025")) == [ids[ALICE][0], ids[ZHANG_WEI_2][0]]
    assert search(agent, "周敏 104X").headers["Location"] == f"/agent/holders/{ids[XENA][0]}"


def test_the_migration_fills_the_last_four_of_the_holders_already_in_the_ledger(database_url):
    from alembic import command
    from sqlalchemy import text

    from models.storage.db import alembic_config, make_engine

    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0007_audit_trail")
        conn.execute(text("INSERT INTO cardholders (id_number, id_key, name, mobile, created_at) "
                          "VALUES (:a, 'k1', '张伟', NULL, :t), (:x, 'k2', '周敏', '+8613912345678', :t)"),
                     {"a": ALICE, "x": XENA, "t": "2026-11-30 02:00:00"})
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0008_holder_search")
        rows = conn.execute(text("SELECT name, id_last4 FROM cardholders ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("张伟", "0025"), ("周敏", "104X")]
