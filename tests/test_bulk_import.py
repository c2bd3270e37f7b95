"""City-size imports: generated files, streamed in batches, merged in one transaction."""
from __future__ import annotations

import csv
import importlib.util
import io
import subprocess
import sys
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr import create_app
from models.cards import STATUSES, Card, CardEvent, Cardholder
from models.clock import utcnow
from models.identity import normalise_id, pin_matches
from models.ledger_io import ImportFileError, import_holders, load_rows, parse_row, read_csv
from models.phones import normalise_mobile
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



def dump(app, *, event_ids: bool = True, versions: bool = True) -> dict[str, list[tuple]]:
    """Every row of the ledger's three tables, in a fixed order (ids included).

    versions=False keeps of a card's version counter only whether the card was ever rewritten.
    """
    with app.extensions["sessions"]() as s:
        holders = [(h.id, h.id_number, h.id_key, h.name, h.mobile, h.pin_hash, h.created_at)
                   for h in s.scalars(select(Cardholder).order_by(Cardholder.id))]
        cards = [(c.id, c.holder_id, c.card_number, c.status, c.bank, c.applied_on, c.status_before_loss,
                  c.loss_reported_at, c.loss_expires_at, c.loss_scope, c.production_stage,
                  c.version if versions else c.version > 1)
                 for c in s.scalars(select(Card).order_by(Card.id))]
        events = [((e.id,) if event_ids else ()) + (e.card_id, e.at, e.status_before, e.status_after, e.channel,
                                                     e.actor, e.call_sid, e.reason)
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


def test_the_bulk_merge_follows_the_rules_of_the_row_by_row_load(app, runner, tmp_path, clock):
    """Every rule of load_rows — lapse first, loss fields, last line wins, PIN/mobile kept when empty."""
    reference = create_app({"database_url": f"sqlite:///{tmp_path / 'reference.db'}"})
    create_schema(reference.extensions["engine"])
    settings = reference.extensions["settings"]

    def by_rows(path: Path) -> None:
        with reference.extensions["sessions"]() as s, s.begin():
            load_rows(s, read_csv(path), key=settings.pin_key, now=utcnow(), policy=settings.loss)

    first = lines_of(generated(tmp_path, 1500, seed=3))
    first[1::7] = [line.replace(line.split(",")[3], "verbal_loss") for line in first[1::7]]  # more to lapse
    statuses = list(STATUSES)
    second = [first[0]]
    for i, line in enumerate(first[1:], start=1):
        f = line.split(",")
        if i % 5 == 0:
            f[3] = statuses[(statuses.index(f[3]) + i) % len(statuses)]  # a status change, any to any
        if i % 9 == 0:
            f[3] = "verbal_loss"
        if i % 11 == 0:
            f[6] = "" if i % 2 else "招商银行"
        if i % 13 == 0:
            f[5] = "" if i % 2 else "13912345678"
        if i % 17 == 0:
            f[1], f[4] = "改名", ""
        if i % 23 == 0:
            f[7] = "" if i % 2 else "2026-10-01"
        second.append(",".join(f))
    for j in range(40):  # new cards: of holders already there, and of new holders
        f = first[1 + j * 30].split(",")
        second.append(",".join([f[0], f[1], f"NEW{j:07d}", statuses[j % len(statuses)], f[4], f[5], "", ""]))
    fresh = lines_of(generated(tmp_path, 60, seed=4, name="fresh.csv"))[1:]
    second += [line.replace(",QD", ",NQ") for line in fresh]
    a = write_lines(tmp_path / "a.csv", first)
    b = write_lines(tmp_path / "b.csv", second)

    by_rows(a)
    import_ok(runner, a)
    assert dump(app) == dump(reference)
    clock.tick(timedelta(days=8))  # the verbal loss reports of the first file are now due
    by_rows(b)
    import_ok(runner, b)
    # Event ids interleave differently (set-based: lapses, then changes, then new cards), and the
    # ORM may bump a card's version twice in one change (autoflush, then the history collection);
    # each card's history, its order, whether it was rewritten and everything else are the same.
    ours, theirs = (dump(a, event_ids=False, versions=False) for a in (app, reference))
    assert ours == theirs
    histories: dict[int, list[str]] = {}
    for card_id, _at, _before, _after, channel, *_ in ours["card_events"]:
        histories.setdefault(card_id, []).append(channel)
    assert sum(h[1:] == ["system"] for h in histories.values()) >= 5  # lapsed, the file agreeing
    assert sum(h[1:] == ["system", "import"] for h in histories.values()) > 10  # lapsed, then changed
    reference.extensions["engine"].dispose()


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
    assert result.stdout.strip() == f"imported 1200 rows from {tmp_path / 'holders.csv'}"


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

    tracemalloc.start()
    try:
        n = load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 50_000
    assert counts(app)[1] == 50_000
    assert peak < BUDGET_MB * 2**20, f"peak {peak / 2**20:.1f} MB"


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
        left = conn.exec_driver_sql("SELECT count(*) FROM pg_class WHERE relname IN"
                                    " ('import_stage', 'import_holders', 'import_plan', 'import_new')").scalar()
    assert left == 0


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
    assert done == [300]
    with sessions() as s:
        card = s.scalars(select(Card).where(Card.card_number == card_number)).one()
        chain = [(e.status_before, e.status_after, e.channel) for e in card.events]
    assert chain == [(None, "normal", "import"), ("normal", "verbal_loss", "ivr"),
                     ("verbal_loss", "formal_loss", "import")]
    assert card.status == "formal_loss" and card.loss_expires_at is None
