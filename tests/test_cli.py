"""Operator commands: init-db, seed-demo, ledger import and ledger show."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import String, select, text

from models.cards import Cardholder
from models.identity import pin_matches
from models.storage.db import Base
from tests.support import ALICE, BOB, XENA, counts

HEADER = "id_number,name,card_number,status,pin,mobile,bank,applied_on"
# A PIN that appears in no other value of the file (ID numbers, card numbers, mobiles, dates).
SECRET_PIN = "918273"
GOOD_ROWS = [
    f"{ALICE},张伟,QD1000000001,normal,{SECRET_PIN},13800000001,青岛银行,2020-03-01",
    f"{ALICE},张伟,QD1000000002,pending_activation,{SECRET_PIN},13800000001,青岛银行,2026-11-20",
    f"{BOB},李娜,QD2000000001,verbal_loss,246802,+8613800000002,,2024-01-15",
    f"{XENA.lower()},周敏,QD3000000001,formal_loss,,,,",
]


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "holders.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path



def show(runner, id_number: str) -> dict:
    result = runner.invoke(args=["ledger", "show", id_number])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def imported(runner, path: Path):
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code == 0, result.output
    return result


# --- init-db and seed-demo ----------------------------------------------------------------

def init_db_twice(runner) -> None:
    for _ in range(2):
        result = runner.invoke(args=["init-db"])
        assert result.exit_code == 0, repr(result.exception)
        assert "database ready" in result.output


def seed_demo_twice(runner, app) -> None:
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, repr(first.exception)
    assert "(9 new cards)" in first.output
    after_first = counts(app)
    assert after_first == (8, 9, 9)
    second = runner.invoke(args=["seed-demo"])
    assert second.exit_code == 0, repr(second.exception)
    assert "(0 new cards)" in second.output
    assert counts(app) == after_first


def test_init_db_can_run_twice(runner):
    init_db_twice(runner)


def test_seed_demo_loads_once_then_skips(runner, app):
    seed_demo_twice(runner, app)


def test_seed_demo_cards_can_be_shown(runner, app):
    runner.invoke(args=["seed-demo"])
    cards = show(runner, "370203197311242038")["cards"]
    assert [(c["card_number"], c["status"]) for c in cards] == [
        ("QD0000000015", "in_production"), ("QD0000000005", "formal_loss")]


# --- ledger import and show ---------------------------------------------------------------

def test_import_loads_every_row_and_says_how_many(runner, app, tmp_path):
    result = imported(runner, write_csv(tmp_path, GOOD_ROWS))
    assert "imported 4 rows" in result.output
    assert counts(app) == (3, 4, 4)


def test_show_prints_the_cards_newest_first_with_their_history(runner, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    assert show(runner, ALICE) == {
        "id_number": ALICE,
        "cards": [
            {
                "card_number": "QD1000000002",
                "status": "pending_activation",
                "history": [{"status": "pending_activation", "at": "2026-11-30T10:00:00+08:00",
                             "channel": "import"}],
            },
            {
                "card_number": "QD1000000001",
                "status": "normal",
                "history": [{"status": "normal", "at": "2026-11-30T10:00:00+08:00", "channel": "import"}],
            },
        ],
    }


def test_show_accepts_the_id_number_as_a_caller_would_key_it(runner, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    assert show(runner, XENA[:17] + "*")["id_number"] == XENA
    assert show(runner, XENA.lower())["id_number"] == XENA


def test_import_stores_the_canonical_id_and_the_mobile_in_e164(runner, app, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    with app.extensions["sessions"]() as s:
        mobiles = dict(s.execute(select(Cardholder.id_number, Cardholder.mobile)).all())
    assert mobiles == {ALICE: "+8613800000001", BOB: "+8613800000002", XENA: None}


def test_history_is_oldest_first_after_later_changes(runner, tmp_path):
    path = write_csv(tmp_path, GOOD_ROWS)
    imported(runner, path)
    changed = [GOOD_ROWS[0].replace(",normal,", ",formal_loss,")]
    imported(runner, write_csv(tmp_path, changed, name="changed.csv"))
    card = show(runner, ALICE)["cards"][1]
    assert [(h["status"], h["channel"]) for h in card["history"]] == [
        ("normal", "import"), ("formal_loss", "import")]


def test_re_importing_the_same_file_duplicates_nothing(runner, app, tmp_path):
    path = write_csv(tmp_path, GOOD_ROWS)
    imported(runner, path)
    before = counts(app)
    imported(runner, path)
    assert counts(app) == before == (3, 4, 4)


def test_a_changed_status_on_re_import_writes_one_history_row(runner, app, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    changed = list(GOOD_ROWS)
    changed[1] = changed[1].replace(",pending_activation,", ",normal,")
    imported(runner, write_csv(tmp_path, changed, name="changed.csv"))
    assert counts(app) == (3, 4, 5)
    newest = show(runner, ALICE)["cards"][0]
    assert newest["status"] == "normal"
    assert [h["status"] for h in newest["history"]] == ["pending_activation", "normal"]


@pytest.mark.parametrize(
    "bad_row, problem",
    [
        pytest.param("370202198503120026,张伟,QD9,normal,123456,,,", "id_number", id="wrong check character"),
        pytest.param(f"{BOB},李娜,QD9,lost,123456,,,", "status", id="unknown status"),
        pytest.param(f"{BOB},李娜,QD9,normal,12345,,,", "pin", id="5-digit PIN"),
        pytest.param(f"{BOB},李娜,QD9,normal,1234567,,,", "pin", id="7-digit PIN"),
        pytest.param(f"{BOB},李娜,QD9,normal,123456,,,2026-02-30", "applied_on", id="impossible date"),
        pytest.param(f"{BOB},李娜,QD9,normal,123456,,,30/11/2026", "applied_on", id="date not ISO"),
        pytest.param(f"{BOB},李娜,QD9,normal,123456,1380000000,,", "mobile", id="10-digit mobile"),
        pytest.param(f"{BOB},李娜,QD9,normal,123456,053288888888,,", "mobile", id="landline"),
        pytest.param(f"{BOB},李娜,QD9,normal,123456,+12025550123,,", "mobile", id="foreign mobile"),
        pytest.param(f"{BOB},,QD9,normal,123456,,,", "name", id="no name"),
        pytest.param(f"{BOB},李娜,,normal,123456,,,", "card_number", id="no card number"),
        pytest.param(GOOD_ROWS[0].replace("QD1000000001", "QD1000000002"), "repeats line 3",
                     id="card number twice"),
    ],
)
def test_a_file_with_a_bad_row_is_refused_whole_naming_the_line(runner, app, tmp_path, bad_row, problem):
    rows = [GOOD_ROWS[0], GOOD_ROWS[1], GOOD_ROWS[2], bad_row, GOOD_ROWS[3]]
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, rows))])
    assert result.exit_code != 0
    assert "line 5" in result.output
    assert problem in result.output
    assert "line 2" not in result.output and "line 4:" not in result.output
    assert "nothing imported" in result.output
    assert counts(app) == (0, 0, 0)
    assert runner.invoke(args=["ledger", "show", ALICE]).exit_code != 0


def test_every_bad_line_of_a_file_is_named(runner, app, tmp_path):
    rows = [
        GOOD_ROWS[0],
        "370202198503120026,张伟,QD9,normal,123456,,,",
        GOOD_ROWS[2],
        f"{BOB},李娜,QD8,lost,12345,,,",
        f"{BOB},李娜,QD7,normal,123456,12345,,2026-13-01",
    ]
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, rows))])
    assert result.exit_code != 0
    for line in ("line 3:", "line 5:", "line 6:"):
        assert line in result.output
    assert "line 2:" not in result.output and "line 4:" not in result.output
    assert result.output.count("line 5:") == 2  # status and PIN
    assert result.output.count("line 6:") == 2  # mobile and date
    assert counts(app) == (0, 0, 0)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("id_number,name,card_number,status,pin,mobile,bank", id="column missing"),
        pytest.param("name,id_number,card_number,status,pin,mobile,bank,applied_on", id="columns swapped"),
        pytest.param("id,name,card_number,status,pin,mobile,bank,applied_on", id="column renamed"),
        pytest.param(HEADER + ",note", id="extra column"),
    ],
)
def test_a_file_with_a_wrong_header_is_refused_naming_line_1(runner, app, tmp_path, header):
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, GOOD_ROWS, header=header))])
    assert result.exit_code != 0
    assert "line 1" in result.output
    assert counts(app) == (0, 0, 0)


def test_a_refused_file_leaves_an_existing_ledger_untouched(runner, app, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    before = counts(app)
    shown = show(runner, ALICE)
    rows = [GOOD_ROWS[0].replace(",normal,", ",cancelled,"), f"{BOB},李娜,QD9,normal,12345,,,"]
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, rows, name="bad.csv"))])
    assert result.exit_code != 0
    assert counts(app) == before
    assert show(runner, ALICE) == shown


def test_a_file_with_a_byte_order_mark_is_read(runner, app, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("\n".join([HEADER, *GOOD_ROWS]) + "\n", encoding="utf-8-sig")
    imported(runner, path)
    assert counts(app) == (3, 4, 4)


@pytest.mark.parametrize("id_number", ["370211197809300047", "370202198503120026", "nonsense"])
def test_show_for_an_unknown_or_invalid_id_fails(runner, tmp_path, id_number):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    result = runner.invoke(args=["ledger", "show", id_number])
    assert result.exit_code != 0
    assert result.stdout == ""
    assert "no cardholder" in result.output


def test_the_stored_pin_is_a_keyed_hash_never_the_pin(runner, app, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    key = app.extensions["settings"].pin_key
    with app.extensions["sessions"]() as s:
        stored = s.scalars(select(Cardholder.pin_hash).where(Cardholder.id_number == ALICE)).one()
        xena = s.scalars(select(Cardholder.pin_hash).where(Cardholder.id_number == XENA)).one()
    assert stored != SECRET_PIN and SECRET_PIN not in stored
    assert pin_matches(key, ALICE, SECRET_PIN, stored)
    assert xena is None  # an empty PIN column stores no hash


def test_no_text_column_of_the_database_holds_a_pin_in_clear(runner, app, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    checked = 0
    with app.extensions["engine"].connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [c.name for c in table.columns if isinstance(c.type, String)]
            for column in columns:
                # Names from our own metadata, not input.
                for (value,) in conn.execute(text(f'SELECT "{column}" FROM "{table.name}"')):  # noqa: S608
                    checked += value is not None
                    assert SECRET_PIN not in str(value), f"{table.name}.{column}"
                    assert "246802" not in str(value), f"{table.name}.{column}"
    assert checked > 0
    with app.extensions["engine"].connect() as conn:
        names = [tuple(r) for r in conn.execute(text("SELECT * FROM cardholders"))]
    assert len(names) == 3 and not any(SECRET_PIN in str(v) for row in names for v in row)


def test_show_after_the_verbal_loss_expiry_shows_the_card_back_to_normal(runner, tmp_path, clock):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    assert show(runner, BOB)["cards"][0]["status"] == "verbal_loss"
    clock.tick(timedelta(days=8))
    card = show(runner, BOB)["cards"][0]
    assert card["status"] == "normal"
    assert card["history"] == [
        {"status": "verbal_loss", "at": "2026-11-30T10:00:00+08:00", "channel": "import"},
        {"status": "normal", "at": "2026-12-07T10:00:00+08:00", "channel": "system"},
    ]
    # Showing again does not lapse it twice.
    assert show(runner, BOB)["cards"][0]["history"] == card["history"]


def test_show_before_the_verbal_loss_expiry_changes_nothing(runner, tmp_path, clock):
    imported(runner, write_csv(tmp_path, GOOD_ROWS))
    clock.tick(timedelta(days=7, seconds=-1))
    card = show(runner, BOB)["cards"][0]
    assert card["status"] == "verbal_loss" and len(card["history"]) == 1


def test_a_superscript_digit_in_an_id_number_is_named_not_a_crash(runner, app, tmp_path):
    rows = [GOOD_ROWS[0], "²70202198503120025,张伟,QD9,normal,123456,,,"]
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, rows))])
    assert result.exit_code != 0
    assert "line 3" in result.output
    assert counts(app) == (0, 0, 0)


def test_an_id_number_keyed_wholly_in_full_width_digits_is_refused_naming_the_line(runner, app, tmp_path):
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in BOB)
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, [f"{full_width},李娜,QD9,normal,123456,,,"]))])
    assert result.exit_code != 0
    assert "line 2: id_number" in result.output
    assert counts(app) == (0, 0, 0)


def test_an_id_number_in_full_width_digits_is_refused_or_stored_in_ascii(runner, app, tmp_path):
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in XENA[:17]) + "X"
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, [f"{full_width},周敏,QD9,normal,123456,,,"]))])
    if result.exit_code == 0:
        assert show(runner, XENA)["id_number"] == XENA
    else:
        assert "line 2" in result.output and counts(app) == (0, 0, 0)


def test_a_card_number_of_another_holder_refuses_the_whole_file(runner, app, tmp_path):
    imported(runner, write_csv(tmp_path, GOOD_ROWS[:1]))
    before = counts(app)
    stolen = f"{BOB},李娜,QD1000000001,cancelled,246802,,,2024-01-15"
    result = runner.invoke(args=["ledger", "import", str(write_csv(tmp_path, [GOOD_ROWS[2], stolen], name="b.csv"))])
    assert result.exit_code != 0
    assert "line 3: card_number QD1000000001 belongs to another ID number" in result.output
    assert counts(app) == before
    assert show(runner, ALICE)["cards"][0]["status"] == "normal"


def test_reimporting_after_a_lapse_records_the_lapse_first(runner, app, tmp_path, clock):
    row = f"{BOB},李娜,QD2000000001,verbal_loss,246802,,,2024-01-15"
    imported(runner, write_csv(tmp_path, [row]))
    clock.tick(timedelta(days=8))
    imported(runner, write_csv(tmp_path, [row.replace("verbal_loss", "formal_loss")], name="again.csv"))
    history = show(runner, BOB)["cards"][0]["history"]
    assert [(h["status"], h["channel"]) for h in history] == [
        ("verbal_loss", "import"), ("normal", "system"), ("formal_loss", "import")]


def test_calls_purge_forgets_recorded_calls_older_than_the_retention(runner, app, call, clock):
    from models.calls import CallEvent, CallState

    old = call().dial().hang_up()
    clock.tick(timedelta(days=91))
    recent = call().dial().hang_up()
    result = runner.invoke(args=["calls", "purge"])
    assert result.exit_code == 0 and "purged 1 calls older than 90 days" in result.output
    with app.extensions["sessions"]() as s:
        assert [c.call_sid for c in s.scalars(select(CallState))] == [recent.call_sid]
        assert {e.call_sid for e in s.scalars(select(CallEvent))} == {recent.call_sid}
    assert old.call_sid != recent.call_sid
