"""City-size imports: generated files, streamed in batches, merged in one transaction."""
from __future__ import annotations

import csv
import importlib.util
import io
import subprocess
import sys
import tracemalloc
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, select, text

from ivr import create_app
from models.cards import (
    IMPORT,
    REASON_FROM_IMPORT,
    REASON_IMPORTED,
    REASON_LOSS_LAPSED,
    REASON_LOSS_REPORTED,
    STATUSES,
    Actor,
    Card,
    CardEvent,
    Cardholder,
    CardState,
    History,
    LossPolicy,
)
from models.clock import utcnow
from models.identity import normalise_id, pin_matches
from models.ledger_io import SNIFF_BLOCK, ImportFileError, import_holders, load_rows, parse_row, read_csv
from models.phones import normalise_mobile
from models.storage.bulk import TEMP_TABLES
from models.storage.db import create_schema
from tests.support import ON_POSTGRES, counts

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_cardholders.py"
_spec = importlib.util.spec_from_file_location("make_cardholders", SCRIPT)
make_cardholders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_cardholders)


def generated(tmp_path: Path, n: int, seed: int = 12333, name: str = "holders.csv") -> Path:
    path = tmp_path / name
    with path.open("wb") as fh:
        make_cardholders.write(n, fh, seed=seed)
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def import_ok(runner, path: Path):
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code == 0, result.output
    return result



def dump(app) -> dict[str, list[tuple]]:
    """Every row of the ledger's three tables, in a fixed order (ids and card versions included)."""
    with app.extensions["sessions"]() as s:
        holders = [(h.id, h.id_number, h.id_key, h.name, h.mobile, h.pin_hash, h.created_at)
                   for h in s.scalars(select(Cardholder).order_by(Cardholder.id))]
        cards = [(c.id, c.holder_id, c.card_number, c.status, c.bank, c.applied_on, c.status_before_loss,
                  c.loss_reported_at, c.loss_expires_at, c.loss_scope, c.production_stage, c.version)
                 for c in s.scalars(select(Card).order_by(Card.id))]
        events = [(e.id, e.card_id, e.at, e.status_before, e.status_after, e.channel, e.actor, e.call_sid, e.reason)
                  for e in s.scalars(select(CardEvent).order_by(CardEvent.card_id, CardEvent.id))]
    return {"cardholders": holders, "cards": cards, "card_events": events}


@pytest.fixture
def sqlite_app(app, tmp_path):
    """A second app, always on a SQLite file, with the same secrets and clock as `app`."""
    other = create_app({"database_url": f"sqlite:///{tmp_path / 'other.db'}"})
    create_schema(other.extensions["engine"])
    yield other
    other.extensions["engine"].dispose()


# --- the generator --------------------------------------------------------------------------------

def test_the_generator_writes_valid_varied_synthetic_lines(tmp_path):
    path = generated(tmp_path, 3000)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert lines_of(path)[0] == "id_number,name,card_number,status,pin,mobile,bank,applied_on"
    assert len(rows) == 3000
    for i, row in enumerate(rows, start=2):
        parsed, problems = parse_row(i, row)
        assert problems == [] and parsed is not None
        assert normalise_id(row["id_number"]) == row["id_number"]
        assert row["id_number"][:6] in {f"3702{n}" for n in range(90, 99)}  # Qingdao prefix, no district
        assert not row["mobile"] or normalise_mobile(row["mobile"])
        assert not row["pin"] or (len(row["pin"]) == 6 and row["pin"].isdigit())
    statuses = {r["status"] for r in rows}
    assert statuses == set(STATUSES)
    assert sum(r["status"] == "normal" for r in rows) > 0.75 * len(rows)
    assert any(r["id_number"].endswith("X") for r in rows)
    per_holder: dict[str, int] = {}
    for r in rows:
        per_holder[r["id_number"]] = per_holder.get(r["id_number"], 0) + 1
    assert set(per_holder.values()) == {1, 2}
    assert len({r["card_number"] for r in rows}) == len(rows)


def test_the_generator_is_deterministic_and_streams_to_stdout(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), *a], capture_output=True, check=True)  # noqa: E731
    first, again, other = run("500"), run("500"), run("500", "--seed", "7")
    assert first.stdout == again.stdout != other.stdout
    assert first.stdout.decode().count("\n") == 501
    assert "500 cards of" in first.stderr.decode()
    assert first.stdout == generated(tmp_path, 500).read_bytes()


# --- importing generated files --------------------------------------------------------------------

def test_a_generated_file_imports_the_same_on_this_database_and_on_sqlite(app, runner, sqlite_app, tmp_path):
    path = generated(tmp_path, 3000)
    result = import_ok(runner, path)
    assert "imported 3000 rows" in result.stdout
    import_ok(sqlite_app.test_cli_runner(), path)
    ours, sqlite = dump(app), dump(sqlite_app)
    assert ours == sqlite  # on PostgreSQL (TEST_DATABASE_URL) this is PostgreSQL against SQLite
    holders = len({line.split(",")[0] for line in lines_of(path)[1:]})
    assert counts(app) == (holders, 3000, 3000)
    assert {e[-1] for e in ours["card_events"]} == {"imported"}


def test_a_city_file_saved_by_excel_in_gbk_imports_as_its_utf8_twin(app, runner, sqlite_app, tmp_path):
    lines = lines_of(generated(tmp_path, 20_000))
    for i in range(1, 18_000):  # more than a block of plain ASCII first: the GBK names come late
        f = lines[i].split(",")
        f[1], f[6] = f"holder {i}", ""
        lines[i] = ",".join(f)
    path = write_lines(tmp_path / "utf8.csv", lines)
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("\r\n".join([*lines, ""]).encode("gbk"))
    assert gbk.read_bytes()[:SNIFF_BLOCK].isascii() and not gbk.read_bytes().isascii()
    result = import_ok(runner, gbk)
    assert "20000/20000 rows" in result.stderr
    import_ok(sqlite_app.test_cli_runner(), path)
    assert dump(app) == dump(sqlite_app)


def test_rerunning_the_same_file_changes_nothing(app, runner, tmp_path):
    path = generated(tmp_path, 2000)
    import_ok(runner, path)
    before = dump(app)
    import_ok(runner, path)
    assert dump(app) == before  # no new holder, card or history row; no card rewritten (version)


def test_a_changed_status_writes_exactly_one_history_row(app, runner, tmp_path, clock):
    path = generated(tmp_path, 2000)
    import_ok(runner, path)
    lines = lines_of(path)
    n = next(i for i, line in enumerate(lines) if ",normal," in line and i > 1000)
    card_number = lines[n].split(",")[2]
    lines[n] = lines[n].replace(",normal,", ",formal_loss,")
    before = counts(app)
    clock.tick(timedelta(hours=1))
    import_ok(runner, write_lines(tmp_path / "changed.csv", lines))
    assert counts(app) == (before[0], before[1], before[2] + 1)
    with app.extensions["sessions"]() as s:
        card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
        history = [(e.status_before, e.status_after, e.channel, e.reason, e.at) for e in card.events]
        assert card.status == "formal_loss" and card.version == 2
    assert history == [(None, "normal", "import", "imported", history[0][4]),
                       ("normal", "formal_loss", "import", "status from import", utcnow())]


def test_a_bad_line_late_in_a_big_file_loads_nothing(app, runner, tmp_path):
    lines = lines_of(generated(tmp_path, 6000))
    bad = lines[4999].split(",")  # line 5000: a status nobody knows
    lines[4999] = ",".join(bad[:3] + ["lost"] + bad[4:])
    again = lines[5499].split(",")  # line 5500: the card number of line 11
    lines[5499] = ",".join(again[:2] + [lines[10].split(",")[2]] + again[3:])
    result = runner.invoke(args=["ledger", "import", str(write_lines(tmp_path / "bad.csv", lines))])
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert problems == ["line 5000: status must be one of " + ", ".join(STATUSES),
                        "line 5500: card_number repeats line 11"]
    assert "nothing imported" in result.stderr and "imported 6000" not in result.output
    assert counts(app) == (0, 0, 0)


def test_a_bad_line_leaves_a_loaded_ledger_as_it_was(app, runner, tmp_path):
    path = generated(tmp_path, 3000)
    import_ok(runner, path)
    before = dump(app)
    lines = lines_of(path)
    lines[100] = lines[100].replace(",normal,", ",cancelled,")
    id_number, rest = lines[2900].split(",", 1)
    wrong = "1" if id_number[-1] != "1" else "2"
    lines[2900] = f"{id_number[:-1]}{wrong},{rest}"  # line 2901: a wrong check character
    result = runner.invoke(args=["ledger", "import", str(write_lines(tmp_path / "bad.csv", lines))])
    assert result.exit_code == 1 and "line 2901: id_number" in result.stderr
    assert dump(app) == before


def test_cards_of_another_holder_are_all_named_and_nothing_is_loaded(app, runner, tmp_path):
    path = generated(tmp_path, 1000)
    import_ok(runner, path)
    before = dump(app)
    lines = lines_of(path)
    other = [line for line in lines[1:] if line.split(",")[0] != lines[1].split(",")[0]][-1].split(",")[0]
    for n in (1, 700):
        fields = lines[n].split(",")
        if fields[0] == other:
            continue
        lines[n] = ",".join([other, *fields[1:]])
    result = runner.invoke(args=["ledger", "import", str(write_lines(tmp_path / "stolen.csv", lines))])
    assert result.exit_code == 1
    assert "line 2: card_number" in result.stderr and "line 701: card_number" in result.stderr
    assert "belongs to another ID number" in result.stderr
    assert dump(app) == before


# --- the card rules: the same functions as the phone and the console ------------------------------
#
# The import decides nothing itself: `import_change` (a due lapse, then the file's status) and
# `import_opening` decide, the very functions the `Card` methods apply. These tests put cards in
# every state through the `Card` methods, import, and check each card's new history rows and
# state against what the `Card` methods make of a copy of it.

# How each card starts: its status in the first file, and after how many days a phone call
# reports it lost (None: never). The import comes 8 days later: the reports of day 0 are due.
STARTS = {
    "in_production": ("in_production", None),
    "pending_activation": ("pending_activation", None),
    "normal": ("normal", None),
    "formal_loss": ("formal_loss", None),
    "cancelled": ("cancelled", None),
    "verbal loss learnt by import, due": ("verbal_loss", None),
    "verbal loss reported when normal, due": ("normal", 0),
    "verbal loss reported when pending, due": ("pending_activation", 0),
    "verbal loss reported when normal, not due": ("normal", 5),
    "verbal loss reported when pending, not due": ("pending_activation", 5),
}


def with_statuses(lines: list[str], statuses: list[str]) -> list[str]:
    out = [lines[0]]
    for line, status in zip(lines[1:], statuses, strict=True):
        f = line.split(",")
        out.append(",".join(f[:3] + [status] + f[4:]))
    return out


def load_with(app, loader: str, path: Path, policy: LossPolicy) -> None:
    settings = app.extensions["settings"]
    if loader == "bulk":
        import_holders(app.extensions["engine"], path, key=settings.pin_key, now=utcnow(), policy=policy)
        return
    with app.extensions["sessions"]() as s, s.begin():
        load_rows(s, read_csv(path), key=settings.pin_key, now=utcnow(), policy=policy)


def report_lost(app, card_numbers: list[str]) -> None:
    with app.extensions["sessions"]() as s, s.begin():
        for card in s.scalars(select(Card).where(Card.card_number.in_(card_numbers))):
            card.report_verbal_loss(now=utcnow(), actor=Actor("ivr"), policy=app.extensions["settings"].loss)


def history_of(event: CardEvent) -> History:
    return History(event.at, event.status_before, event.status_after, event.channel, event.actor,
                   event.call_sid, event.reason)


def copy_of(card: Card) -> Card:
    """A card outside any session, in the state of `card`, for the Card methods to work on."""
    copy = Card(card_number=card.card_number)
    (copy.status, copy.status_before_loss, copy.loss_reported_at, copy.loss_expires_at, copy.loss_scope) = card.state
    return copy


@pytest.mark.parametrize("loader", ["bulk", "row by row"])
@pytest.mark.parametrize("at_expiry", ["release", "cancel"])
def test_an_import_changes_each_card_as_a_lapse_then_a_status_sync_by_the_card_methods_would(
        app, tmp_path, clock, loader, at_expiry):
    starts = list(STARTS.values())
    targets = [status for _ in starts for status in STATUSES]  # every start to every status
    lines = lines_of(generated(tmp_path, len(targets), seed=5))
    first = with_statuses(lines, [status for status, _ in starts for _ in STATUSES])
    numbers = [line.split(",")[2] for line in lines[1:]]
    settings = app.extensions["settings"]
    load_with(app, "bulk", write_lines(tmp_path / "first.csv", first), settings.loss)
    for day in (0, 5):
        if day:
            clock.tick(timedelta(days=day))
        report_lost(app, [n for i, n in enumerate(numbers) if starts[i // len(STATUSES)][1] == day])
    clock.tick(timedelta(days=3))
    policy = LossPolicy(verbal_valid_days=settings.loss.verbal_valid_days, at_expiry=at_expiry)

    # What the Card methods make of a copy of each card, as the importer's rules are stated.
    expected: dict[str, tuple[list[History], CardState, int]] = {}
    with app.extensions["sessions"]() as s:
        last_event = s.scalar(select(func.max(CardEvent.id)))
        for card in s.scalars(select(Card).where(Card.card_number.in_(numbers))):
            copy = copy_of(card)
            copy.lapse_if_due(now=utcnow(), policy=policy)  # what time did comes first
            copy.sync_status(targets[numbers.index(card.card_number)], now=utcnow(), actor=IMPORT,
                             reason=REASON_FROM_IMPORT, policy=policy)
            expected[card.card_number] = ([history_of(e) for e in copy.events], copy.state, card.version)

    load_with(app, loader, write_lines(tmp_path / "second.csv", with_statuses(lines, targets)), policy)

    with app.extensions["sessions"]() as s:
        for card in s.scalars(select(Card).where(Card.card_number.in_(numbers))):
            written = s.scalars(select(CardEvent).where(CardEvent.card_id == card.id, CardEvent.id > last_event)
                                .order_by(CardEvent.id))
            history, state, version = expected[card.card_number]
            assert ([history_of(e) for e in written], card.state) == (history, state), card.card_number
            assert (card.version > version) == bool(history)  # an unchanged card is not rewritten
    chains = [tuple(h.reason for h in history) for history, _, _ in expected.values()]
    assert chains.count((REASON_LOSS_LAPSED,)) == 3  # lapsed, the file agreeing with the lapse
    assert chains.count((REASON_LOSS_LAPSED, REASON_FROM_IMPORT)) == 15  # lapsed, then the file's status
    assert chains.count(()) == 7  # the file agrees, or says verbal_loss of a report not yet due
    lapsed_to = {history[0].status_after for history, _, _ in expected.values() if history
                 and history[0].reason == REASON_LOSS_LAPSED}
    assert lapsed_to == ({"cancelled"} if at_expiry == "cancel" else {"normal", "pending_activation"})


@pytest.mark.parametrize("loader", ["bulk", "row by row"])
def test_a_new_card_starts_as_card_open_starts_it_for_every_status(app, tmp_path, loader):
    lines = lines_of(generated(tmp_path, len(STATUSES), seed=6))
    policy = LossPolicy(verbal_valid_days=15)
    load_with(app, loader, write_lines(tmp_path / "new.csv", with_statuses(lines, list(STATUSES))), policy)
    with app.extensions["sessions"]() as s:
        for line in lines[1:]:
            card = s.scalars(select(Card).where(Card.card_number == line.split(",")[2])).one()
            opened = Card(card_number=card.card_number)
            opened.open(card.status, now=utcnow(), actor=IMPORT, reason=REASON_IMPORTED, policy=policy)
            assert card.state == opened.state
            assert [history_of(e) for e in card.events] == [history_of(e) for e in opened.events]
            assert card.version == 1


def test_a_verbal_loss_reported_when_pending_lapses_back_to_pending_on_import(app, runner, tmp_path, clock):
    lines = lines_of(generated(tmp_path, 1, seed=8))
    path = write_lines(tmp_path / "one.csv", with_statuses(lines, ["pending_activation"]))
    import_ok(runner, path)
    report_lost(app, [lines[1].split(",")[2]])
    clock.tick(timedelta(days=8))
    import_ok(runner, path)
    with app.extensions["sessions"]() as s:
        card = s.scalars(select(Card)).one()
        chain = [(e.status_before, e.status_after, e.channel, e.reason) for e in card.events]
    assert card.state == CardState("pending_activation")
    assert chain[1:] == [("pending_activation", "verbal_loss", "ivr", REASON_LOSS_REPORTED),
                         ("verbal_loss", "pending_activation", "system", REASON_LOSS_LAPSED)]


# --- what the file says of holders and cards besides the status -----------------------------------

def holder_row(app, id_number: str) -> tuple:
    with app.extensions["sessions"]() as s:
        h = s.scalars(select(Cardholder).where(Cardholder.id_number == id_number)).one()
        return (h.name, h.mobile, h.pin_hash)


def card_row(app, card_number: str) -> tuple:
    with app.extensions["sessions"]() as s:
        c = s.scalars(select(Card).where(Card.card_number == card_number)).one()
        return (c.bank, c.applied_on, c.version, len(c.events))


def test_an_empty_pin_mobile_bank_or_application_date_keeps_what_the_ledger_has(app, runner, tmp_path):
    lines = lines_of(generated(tmp_path, 1, seed=9))
    id_number, _, card_number, *_ = lines[1].split(",")
    assert all(lines[1].split(",")[4:])  # the first file gives a PIN, a mobile, a bank and a date
    import_ok(runner, write_lines(tmp_path / "full.csv", lines))
    holder, card = holder_row(app, id_number), card_row(app, card_number)
    f = lines[1].split(",")
    import_ok(runner, write_lines(tmp_path / "empty.csv", [lines[0], ",".join(f[:4] + ["", "", "", ""])]))
    assert holder_row(app, id_number) == holder
    assert card_row(app, card_number) == card  # not rewritten: nothing changed


def test_a_new_bank_or_application_date_rewrites_the_card_without_a_history_row(app, runner, tmp_path):
    lines = lines_of(generated(tmp_path, 2, seed=10))
    import_ok(runner, write_lines(tmp_path / "a.csv", lines))
    first, second = (line.split(",") for line in lines[1:])
    assert first[6] != "招商银行" and second[7] != "2026-10-01"
    first[6], second[7] = "招商银行", "2026-10-01"
    import_ok(runner, write_lines(tmp_path / "b.csv", [lines[0], ",".join(first), ",".join(second)]))
    assert card_row(app, first[2])[0] == "招商银行" and card_row(app, first[2])[2:] == (2, 1)
    assert card_row(app, second[2])[1] == date(2026, 10, 1) and card_row(app, second[2])[2:] == (2, 1)


def test_the_last_line_of_an_id_number_names_the_holder_and_the_last_pin_and_mobile_given_count(
        app, runner, tmp_path):
    lines = lines_of(generated(tmp_path, 1, seed=11))
    f = lines[1].split(",")
    assert f[4] and f[5] and f[1] != "改名"
    second = [f[0], "改名", "QD9999999999", "normal", "", "", "", ""]  # a new card, no PIN or mobile given
    import_ok(runner, write_lines(tmp_path / "two.csv", [lines[0], lines[1], ",".join(second)]))
    name, mobile, pin = holder_row(app, f[0])
    assert (name, mobile) == ("改名", normalise_mobile(f[5]))
    assert pin_matches(app.extensions["settings"].pin_key, f[0], f[4], pin)
    assert counts(app) == (1, 2, 2)


def test_pins_and_id_keys_are_keyed_hashes(app, runner, tmp_path):
    path = generated(tmp_path, 200)
    import_ok(runner, path)
    row = next(r for r in csv.DictReader(path.open(encoding="utf-8")) if r["pin"])
    key = app.extensions["settings"].pin_key
    with app.extensions["sessions"]() as s:
        holder = s.scalars(select(Cardholder).where(Cardholder.id_number == row["id_number"])).one()
    assert pin_matches(key, row["id_number"], row["pin"], holder.pin_hash)
    assert row["pin"] not in holder.pin_hash and len(holder.id_key) == 64


def test_the_progress_bar_goes_to_standard_error(app, runner, tmp_path):
    result = import_ok(runner, generated(tmp_path, 1200))
    assert "1200/1200 rows" in result.stderr and "rows/s" in result.stderr
    assert "cards added: 1200" in result.stderr
    assert result.stdout.strip() == (f"imported 1200 rows from {tmp_path / 'holders.csv'}: 1200 cards added, "
                                     "0 changed, 0 unchanged; 1168 cardholders added, 0 changed")


def test_a_terminal_sees_one_redrawn_line():
    from models.ledger_io import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = Progress(out, total=10)
    bar.interval = 0
    for done in range(1, 11):
        bar.rows(done)
    bar.rows(10, final=True)
    assert out.getvalue().count("\r") == 11 and out.getvalue().endswith("rows/s  0 s\n")
    assert "[" + "#" * 30 + "] 10/10 rows" in out.getvalue()


# --- bounded memory -------------------------------------------------------------------------------

BUDGET_MB = 8  # measured: about 2 MB, whatever the size of the file


def test_memory_stays_bounded_for_a_50k_row_file(app, tmp_path):
    path = generated(tmp_path, 50_000)
    settings = app.extensions["settings"]
    engine = app.extensions["engine"]
    load = lambda p: import_holders(engine, p, key=settings.pin_key, now=utcnow(), policy=settings.loss)  # noqa: E731
    load(write_lines(tmp_path / "warm.csv", lines_of(path)[:101]))  # first use: caches, metadata, statements

    # What a list of every row would hold: measure 1000 parsed rows, scale to the file.
    sample = []
    tracemalloc.start()
    for i, row in enumerate(csv.DictReader(path.open(encoding="utf-8"))):
        if i == 1000:
            break
        sample.append(parse_row(i + 2, row)[0])
    per_row = tracemalloc.get_traced_memory()[0] / 1000
    tracemalloc.stop()
    assert per_row * 50_000 > 3 * BUDGET_MB * 2**20  # a list of all rows would need over three budgets
    del sample

    def peak_of(p: Path) -> int:
        tracemalloc.start()
        try:
            assert load(p).rows == 50_000
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    first = peak_of(path)
    assert counts(app)[1] == 50_000
    assert first < BUDGET_MB * 2**20, f"peak {first / 2**20:.1f} MB"
    # A rerun where 10,000 cards change: each is read, decided and written back, in chunks.
    lines = lines_of(path)
    for i in range(1, len(lines), 5):
        f = lines[i].split(",")
        f[3] = "formal_loss" if f[3] != "formal_loss" else "normal"
        lines[i] = ",".join(f)
    before = counts(app)[2]
    rerun = peak_of(write_lines(tmp_path / "changed.csv", lines))
    assert counts(app)[2] == before + 10_000
    assert rerun < BUDGET_MB * 2**20, f"peak {rerun / 2**20:.1f} MB"


def test_import_holders_refuses_a_wrong_header(app, tmp_path):
    path = write_lines(tmp_path / "x.csv", ["id,name", "1,2"])
    settings = app.extensions["settings"]
    with pytest.raises(ImportFileError, match="line 1: the header must be"):
        import_holders(app.extensions["engine"], path, key=settings.pin_key, now=utcnow(), policy=settings.loss)


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL only: the staging tables live in the transaction")
def test_no_staging_table_outlives_an_import_on_postgresql(app, runner, tmp_path):
    import_ok(runner, generated(tmp_path, 100))
    bad = lines_of(generated(tmp_path, 100, name="b.csv"))
    bad[50] = bad[50].replace(",normal,", ",lost,")
    assert runner.invoke(args=["ledger", "import", str(write_lines(tmp_path / "bad.csv", bad))]).exit_code == 1
    with app.extensions["engine"].connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM pg_class WHERE relname IN :names")
                            .bindparams(bindparam("names", TEMP_TABLES, expanding=True))).scalar()
    assert left == 0 and "import_stage" in TEMP_TABLES


def test_a_value_wider_than_its_column_is_a_bad_line_on_every_database(app, runner, tmp_path):
    lines = lines_of(generated(tmp_path, 50))
    fields = lines[20].split(",")
    lines[20] = ",".join([fields[0], "张" * 65, *fields[2:]])
    result = runner.invoke(args=["ledger", "import", str(write_lines(tmp_path / "wide.csv", lines))])
    assert result.exit_code == 1
    assert "line 21: name is longer than 64 characters" in result.stderr
    assert counts(app) == (0, 0, 0)


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL only: row locks between two connections")
def test_an_import_waits_for_a_channel_holding_the_holder_and_starts_from_its_change(app, runner, tmp_path):
    import threading

    from models import services
    from models.cards import Actor

    path = generated(tmp_path, 300)
    import_ok(runner, path)
    lines = lines_of(path)
    n = next(i for i, line in enumerate(lines) if ",normal," in line)
    card_number = lines[n].split(",")[2]
    lines[n] = lines[n].replace(",normal,", ",formal_loss,")
    changed = write_lines(tmp_path / "changed.csv", lines)
    settings, sessions = app.extensions["settings"], app.extensions["sessions"]
    with sessions() as s:
        card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
        holder_id, card_id = card.holder_id, card.id

    done: list[int] = []
    with sessions() as s, s.begin():  # a phone call reports the card lost; the import starts meanwhile
        services.report_verbal_loss(s, holder_id, card_id, now=utcnow(), actor=Actor("ivr"),
                                    policy=settings.loss, notify=False)
        worker = threading.Thread(target=lambda: done.append(import_holders(
            app.extensions["engine"], changed, key=settings.pin_key, now=utcnow(), policy=settings.loss)))
        worker.start()
        worker.join(1.0)  # the import blocks on the holder's lock (it would not be wrong to be later)
    worker.join()
    assert [(d.rows, d.merged.cards_changed) for d in done] == [(300, 1)]
    with sessions() as s:
        card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
        chain = [(e.status_before, e.status_after, e.channel) for e in card.events]
    assert chain == [(None, "normal", "import"), ("normal", "verbal_loss", "ivr"),
                     ("verbal_loss", "formal_loss", "import")]
    assert card.status == "formal_loss" and card.loss_expires_at is None
