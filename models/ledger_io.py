"""Loading cardholders into the ledger from CSV, and showing a holder's cards as JSON."""
from __future__ import annotations

import csv
import hashlib
import heapq
import itertools
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from phonenumbers import PhoneMetadata
from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from models.cards import STATUSES, Actor, Card, Cardholder, LossPolicy, holder_by_id_number, settle
from models.identity import id_key, is_pin_shape, normalise_id, pin_hash
from models.medical import KINDS as MEDICAL_KINDS
from models.medical import MedicalRecord
from models.phones import normalise_mobile
from models.storage.db import UTCDateTime

HEADER = ["id_number", "name", "card_number", "status", "pin", "mobile", "bank", "applied_on"]
MEDICAL_HEADER = ["id_number", "at", "kind", "amount", "institution", "balance"]
LIMITS = {"name": 64, "card_number": 32, "bank": 64}  # the ledger's column widths
IMPORT = Actor("import")


# The mobile check, fast for the shape nearly every line has. phonenumbers takes ~40 us a number,
# most of a line's checking. For eleven ASCII digits starting with 1, the CN metadata below makes
# the answer "+86" + the digits or None, depending on the first five digits only (the mobile
# pattern is at most five digits deep; no other CN number type matches 11 digits starting 1[1-9],
# and no national or carrier prefix is stripped from them). So each five-digit prefix is asked
# once, of the real number, and remembered (at most 10,000 of them). Any other shape, or other
# metadata than the one this was checked against, goes to phonenumbers every time.
_PLAIN_MOBILE = re.compile(r"1[0-9]{10}")
_CN_METADATA = "2eb2eaaea1cba6dbaa85613533b41e2a5e333747"  # sha1 of the CN patterns checked (phonenumbers 9.0.43)
_MOBILE_PREFIXES: dict[str, bool] = {}


def _cn_fingerprint() -> str:
    meta = PhoneMetadata.metadata_for_region("CN")
    parts = [repr(meta.national_prefix_for_parsing), repr(meta.national_prefix_transform_rule)]
    for name in ("general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
                 "personal_number", "voip", "pager", "uan", "voicemail"):
        desc = getattr(meta, name)
        parts.append(repr(desc and (desc.national_number_pattern, desc.possible_length)))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


MOBILE_FAST_PATH = _cn_fingerprint() == _CN_METADATA


def mobile_e164(raw: str) -> str | None:
    """Return a Chinese mobile number in E.164, or None: `normalise_mobile`, remembered by prefix."""
    if not (MOBILE_FAST_PATH and _PLAIN_MOBILE.fullmatch(raw)):
        return normalise_mobile(raw)
    known = _MOBILE_PREFIXES.get(raw[:5])
    if known is None:
        e164 = normalise_mobile(raw)
        _MOBILE_PREFIXES[raw[:5]] = e164 is not None
        return e164
    return "+86" + raw if known else None


class ImportFileError(Exception):
    """A file the importer refuses, with every bad line named."""


@dataclass(frozen=True)
class HolderRow:
    """One valid line of a cardholder CSV."""

    line: int
    id_number: str
    name: str
    card_number: str
    status: str
    pin: str
    mobile: str | None
    bank: str | None
    applied_on: date | None


def parse_row(line: int, row: dict[str, str]) -> tuple[HolderRow | None, list[str]]:
    """Check one CSV line; return the row or the problems found in it."""
    errors: list[str] = []
    get = lambda k: (row.get(k) or "").strip()  # noqa: E731
    id_number = normalise_id(get("id_number"))
    if id_number is None:
        errors.append("id_number is not a valid 18-character ID number")
    if not get("name"):
        errors.append("name is empty")
    if not get("card_number"):
        errors.append("card_number is empty")
    if get("status") not in STATUSES:
        errors.append(f"status must be one of {', '.join(STATUSES)}")
    if get("pin") and not is_pin_shape(get("pin")):
        errors.append("pin must be 6 digits")
    mobile = None
    if get("mobile"):
        mobile = mobile_e164(get("mobile"))
        if mobile is None:
            errors.append("mobile is not a Chinese mobile number")
    for field, limit in LIMITS.items():
        if len(get(field)) > limit:
            errors.append(f"{field} is longer than {limit} characters")
    applied_on = None
    if get("applied_on"):
        try:
            applied_on = date.fromisoformat(get("applied_on"))
        except ValueError:
            errors.append("applied_on must be a date YYYY-MM-DD")
    if errors:
        return None, [f"line {line}: {e}" for e in errors]
    return HolderRow(line, id_number or "", get("name"), get("card_number"), get("status"),
                     get("pin"), mobile, get("bank") or None, applied_on), []


def read_csv(path: Path) -> list[HolderRow]:
    """Read and check a whole cardholder CSV; raise naming every bad line."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != HEADER:
            raise ImportFileError(f"{path}: line 1: the header must be {','.join(HEADER)}")
        rows, errors = [], []
        seen_cards: dict[str, int] = {}
        for row in reader:
            parsed, problems = parse_row(reader.line_num, row)
            errors.extend(problems)
            if parsed:
                if parsed.card_number in seen_cards:
                    errors.append(f"line {parsed.line}: card_number repeats line {seen_cards[parsed.card_number]}")
                seen_cards[parsed.card_number] = parsed.line
                rows.append(parsed)
    if errors:
        raise ImportFileError(f"{path}: nothing imported.\n" + "\n".join(errors))
    return rows


def load_rows(
    session: Session, rows: Iterable[HolderRow], *, key: bytes, now: datetime, policy: LossPolicy
) -> int:
    """Write checked rows: new holders and cards, updated ones; return how many rows."""
    count = 0
    for r in rows:
        holder = holder_by_id_number(session, r.id_number, lock=True)
        if holder is None:
            holder = Cardholder(id_number=r.id_number, id_key=id_key(key, r.id_number), created_at=now)
            session.add(holder)
        holder.name = r.name
        holder.mobile = r.mobile or holder.mobile
        if r.pin:
            holder.pin_hash = pin_hash(key, r.id_number, r.pin)
        card = session.scalars(select(Card).where(Card.card_number == r.card_number)).first()
        if card is not None and card.holder_id != holder.id:
            raise ImportFileError(f"line {r.line}: card_number {r.card_number} belongs to another ID number")
        if card is None:
            card = Card(card_number=r.card_number, status=r.status, bank=r.bank, applied_on=r.applied_on)
            holder.cards.append(card)
            card.open(r.status, now=now, actor=IMPORT, reason="imported", policy=policy)
        else:
            card.bank, card.applied_on = r.bank or card.bank, r.applied_on or card.applied_on
            card.lapse_if_due(now=now, policy=policy)  # a lapse that time made comes first
            card.sync_status(r.status, now=now, actor=IMPORT, reason="status from import", policy=policy)
        session.flush()
        count += 1
    return count


def holder_json(holder: Cardholder, tz: ZoneInfo) -> dict[str, Any]:
    """Return the holder's cards and their history: newest card first, history oldest first."""
    return {
        "id_number": holder.id_number,
        "cards": [
            {
                "card_number": c.card_number,
                "status": c.status,
                "history": [
                    {"status": e.status_after, "at": e.at.astimezone(tz).isoformat(), "channel": e.channel}
                    for e in c.events
                ],
            }
            for c in holder.cards_newest_first()
        ],
    }


def show(session: Session, id_number: str, *, now: datetime, policy: LossPolicy, tz: ZoneInfo) -> dict[str, Any] | None:
    """Return a holder as JSON-ready data, after letting time do its changes; None if unknown."""
    canonical = normalise_id(id_number) or id_number.strip().upper()
    holder = holder_by_id_number(session, canonical)
    if holder is None:
        return None
    settle(holder, now=now, policy=policy)
    return holder_json(holder, tz)


def rows_from(records: Iterable[dict[str, str]]) -> Iterator[HolderRow]:
    """Check in-memory records shaped like CSV lines (for demo data); raise on a bad one."""
    for i, rec in enumerate(records, start=2):
        row, problems = parse_row(i, rec)
        if problems:
            raise ImportFileError("\n".join(problems))
        assert row is not None
        yield row


@dataclass(frozen=True)
class MedicalRow:
    """One valid line of a medical account CSV (amounts in fen)."""

    line: int
    id_number: str
    at: datetime
    kind: str
    amount_fen: int
    institution: str
    balance_fen: int


def header_of(path: Path) -> list[str]:
    """Return the first line of a CSV, split: it says which kind of file it is."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def fen(text: str) -> int:
    """Read an amount in yuan (up to two decimals) as fen."""
    value = Decimal(text)
    if value != value.quantize(Decimal("0.01")):
        raise InvalidOperation
    return int(value * 100)


def read_medical_csv(path: Path, tz: ZoneInfo) -> list[MedicalRow]:
    """Read and check a medical account CSV; raise naming every bad line."""
    rows, errors = [], []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        for rec in reader:
            line, get = reader.line_num, (lambda k: (rec.get(k) or "").strip())  # noqa: E731
            problems = []
            id_number = normalise_id(get("id_number"))
            if id_number is None:
                problems.append("id_number is not a valid 18-character ID number")
            try:
                at = datetime.fromisoformat(get("at"))
                at = at if at.tzinfo else at.replace(tzinfo=tz)  # local time when no offset is given
            except ValueError:
                problems.append("at must be a date-time YYYY-MM-DD HH:MM[:SS][+08:00]")
            if get("kind") not in MEDICAL_KINDS:
                problems.append(f"kind must be one of {', '.join(MEDICAL_KINDS)}")
            amounts = {}
            for name in ("amount", "balance"):
                try:
                    amounts[name] = fen(get(name))
                except (InvalidOperation, ValueError):
                    problems.append(f"{name} must be an amount in yuan, e.g. 12.50")
            if amounts.get("amount", 0) < 0:
                problems.append("amount must not be negative (kind says which way)")
            if not get("institution"):
                problems.append("institution is empty")
            if problems:
                errors += [f"line {line}: {p}" for p in problems]
                continue
            rows.append(MedicalRow(line, id_number or "", at, get("kind"), amounts["amount"],
                                   get("institution"), amounts["balance"]))
    if errors:
        raise ImportFileError(f"{path}: nothing imported.\n" + "\n".join(errors))
    return rows


def load_medical(session: Session, rows: Iterable[MedicalRow]) -> int:
    """Write checked medical records; one already in the ledger is not added twice."""
    count = 0
    for r in rows:
        holder = holder_by_id_number(session, r.id_number)
        if holder is None:
            raise ImportFileError(f"line {r.line}: no cardholder with that id_number")
        same = select(MedicalRecord.id).where(
            MedicalRecord.holder_id == holder.id, MedicalRecord.at == r.at, MedicalRecord.kind == r.kind,
            MedicalRecord.amount_fen == r.amount_fen, MedicalRecord.institution == r.institution)
        if session.scalars(same).first() is None:
            session.add(MedicalRecord(holder_id=holder.id, at=r.at, kind=r.kind, amount_fen=r.amount_fen,
                                      institution=r.institution, balance_fen=r.balance_fen))
            count += 1
    return count


# --- City-size imports ---------------------------------------------------------------------------
#
# `import_holders` streams a cardholder CSV of any size with bounded memory, in two phases:
#
# 1. Check and stage: one streaming pass parses and checks every line (`parse_row`, the same
#    checks as `read_csv`) and writes each good one, with its keyed hashes, into a temporary
#    staging table on the server (PostgreSQL: one COPY; SQLite: executemany in batches). Card
#    numbers repeated in the file are then found in the staging table, not in a dict of a
#    million entries. Any bad line: every one is reported and nothing is loaded.
# 2. Merge, in ONE transaction, set-based: refuse the file if a card belongs to another ID
#    number; update the holders that differ, insert the new ones; lock the existing cards that
#    change (and their holders, the lock every channel takes) and write, per card, the lapse of a
#    due verbal loss report first, then the status change, exactly as `load_rows` does; insert
#    the new cards with their first history row.
#
# On PostgreSQL both phases share one transaction (temporary tables ON COMMIT DROP). On SQLite
# the staging writes only the connection's temporary database, so the ledger's write lock
# (BEGIN IMMEDIATE) is held only while merging.

STAGE_COLUMNS = ("line", "id_number", "id_key", "name", "card_number", "status", "pin_hash", "mobile",
                 "bank", "applied_on")
STAGE_BATCH = 1000  # rows per executemany on SQLite (5000 would triple the peak memory, for nothing)


class Progress:
    """A plain-text progress bar on a text stream (standard error): rows done of the total, rows/s.

    On a terminal it redraws one line; elsewhere (a log, a pipe) it writes a line now and then.
    """

    def __init__(self, out: TextIO | None, total: int = 0, *, width: int = 30):
        self.out, self.total, self.width = out, total, width
        self.tty = bool(out is not None and getattr(out, "isatty", lambda: False)())
        self.interval = 0.25 if self.tty else 10.0
        self.start = self.last = time.monotonic()
        self.drawn = False

    def rows(self, done: int, *, final: bool = False) -> None:
        """Show how many rows are checked; at most every interval, unless final."""
        if self.out is None:
            return
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        total = max(self.total, done)
        filled = self.width * done // total if total else self.width
        rate = done / max(now - self.start, 1e-6)
        text = (f"checking [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} rows"
                f"  {rate:,.0f} rows/s  {now - self.start:.0f} s")
        self.out.write(f"\r{text}" if self.tty else f"{text}\n")
        if final and self.tty:
            self.out.write("\n")
        self.drawn = not final and self.tty
        self.out.flush()

    def step(self, text: str) -> None:
        """Write one line saying what was done."""
        if self.out is None:
            return
        self.out.write(("\n" if self.drawn else "") + text + "\n")
        self.drawn = False
        self.out.flush()


def count_rows(path: Path) -> int:
    """Return about how many data lines a CSV has (its line count less the header), for the bar."""
    newlines, last = 0, b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            newlines += block.count(b"\n")
            last = block[-1:]
    return max(newlines + (last != b"\n") - 1, 0)


class _Sql:
    """The few places where PostgreSQL and SQLite spell the merge differently."""

    def __init__(self, dialect: str):
        self.pg = dialect == "postgresql"
        self.ne = "IS DISTINCT FROM" if self.pg else "IS NOT"  # null-safe <>; SQLite < 3.39 lacks the former
        # The holder first, then the card: the order every channel takes them in (SQLite: BEGIN
        # IMMEDIATE has locked everything already).
        self.lock = " FOR UPDATE OF h, c" if self.pg else ""

    def temp(self, name: str, body: str) -> str:
        """CREATE a temporary table from a column list '(...)' or 'AS SELECT ...'."""
        drop = "ON COMMIT DROP" if self.pg else ""
        if body.lstrip().startswith("("):
            return f"CREATE TEMP TABLE {name} {body} {drop}"
        return f"CREATE TEMP TABLE {name} {drop} {body}"


STAGE_TABLE = """(line integer NOT NULL, id_number text NOT NULL, id_key text NOT NULL, name text NOT NULL,
    card_number text NOT NULL, status text NOT NULL, pin_hash text, mobile text, bank text, applied_on date)"""
TEMP_TABLES = ("import_stage", "import_holders", "import_plan", "import_new")


def _stage_row(r: HolderRow, key: bytes) -> tuple[Any, ...]:
    return (r.line, r.id_number, id_key(key, r.id_number), r.name, r.card_number, r.status,
            pin_hash(key, r.id_number, r.pin) if r.pin else None, r.mobile, r.bank,
            r.applied_on.isoformat() if r.applied_on else None)


def _checked_rows(reader: csv.DictReader, errors: list[tuple[int, str]]) -> Iterator[HolderRow]:
    """Yield each good line of the file; note each problem of a bad one as (line, message)."""
    for row in reader:
        parsed, problems = parse_row(reader.line_num, row)
        if parsed is None:
            errors.extend((reader.line_num, p) for p in problems)
            continue
        yield parsed


def _stage(conn: Connection, sql: _Sql, reader: csv.DictReader, key: bytes, progress: Progress,
           errors: list[tuple[int, str]]) -> int:
    """Check every line and write the good ones into import_stage; return how many were staged."""
    raw = conn.connection.driver_connection
    rows = _checked_rows(reader, errors)
    staged = 0
    if sql.pg:
        conn.exec_driver_sql(sql.temp("import_stage", STAGE_TABLE))
        with raw.cursor() as cur, cur.copy(f"COPY import_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
            for staged, r in enumerate(rows, start=1):  # noqa: B007 (the count is returned)
                copy.write_row(_stage_row(r, key))
                if staged % 1000 == 0:
                    progress.rows(reader.line_num - 1)
        progress.rows(reader.line_num - 1, final=True)
        conn.exec_driver_sql("CREATE INDEX ON import_stage (card_number, line)")
        conn.exec_driver_sql("CREATE UNIQUE INDEX ON import_stage (line)")
        conn.exec_driver_sql("ANALYZE import_stage")  # autovacuum never analyses temporary tables
        return staged
    # SQLite: outside any transaction of the ledger; each batch is a short one of the temp database.
    raw.execute(sql.temp("import_stage", STAGE_TABLE))
    insert = f"INSERT INTO import_stage VALUES ({', '.join('?' * len(STAGE_COLUMNS))})"
    while batch := [_stage_row(r, key) for r in itertools.islice(rows, STAGE_BATCH)]:
        raw.execute("BEGIN")
        raw.executemany(insert, batch)
        raw.execute("COMMIT")
        staged += len(batch)
        progress.rows(reader.line_num - 1)
    progress.rows(reader.line_num - 1, final=True)
    raw.execute("CREATE INDEX temp.import_stage_card ON import_stage (card_number, line)")
    raw.execute("CREATE UNIQUE INDEX temp.import_stage_line ON import_stage (line)")
    raw.execute("CREATE INDEX temp.import_stage_id ON import_stage (id_number)")
    return staged


def _repeats(conn: Connection, sql: _Sql) -> list[tuple[int, str]]:
    """Return (line, problem) for each card number that repeats an earlier line of the file."""
    # SQLite: on the driver's connection, so that no transaction of the ledger begins.
    execute = conn.exec_driver_sql if sql.pg else conn.connection.driver_connection.execute
    found = execute(
        "SELECT line, prev FROM (SELECT line, lag(line) OVER (PARTITION BY card_number ORDER BY line) AS prev"
        " FROM import_stage) d WHERE prev IS NOT NULL ORDER BY line")
    return [(line, f"line {line}: card_number repeats line {prev}") for line, prev in found]


def _merge(conn: Connection, sql: _Sql, *, now: datetime, policy: LossPolicy, progress: Progress) -> None:
    """Write the staged rows into the ledger (inside the caller's transaction)."""
    moments = {"now": now, "expires": now + timedelta(days=policy.verbal_valid_days)}

    def run(statement: str, what: str | None = None) -> int:
        started = time.monotonic()
        binds = [bindparam(name, value, type_=UTCDateTime()) for name, value in moments.items()
                 if f":{name}" in statement]
        result = conn.execute(text(statement).bindparams(*binds))
        if what:
            count = f": {result.rowcount}" if result.rowcount >= 0 and "TEMP TABLE" not in statement else ""
            progress.step(f"{what}{count} ({time.monotonic() - started:.1f} s)")
        return result.rowcount

    started = time.monotonic()
    theirs = conn.exec_driver_sql(
        "SELECT s.line, s.card_number FROM import_stage s JOIN cards c ON c.card_number = s.card_number"
        " JOIN cardholders h ON h.id = c.holder_id WHERE h.id_number <> s.id_number ORDER BY s.line").all()
    if theirs:
        raise ImportFileError("\n".join(f"line {line}: card_number {number} belongs to another ID number"
                                        for line, number in theirs))
    progress.step(f"card numbers checked against the ledger ({time.monotonic() - started:.1f} s)")

    # Holders: the last line of each ID number names them; the last mobile and PIN given count.
    run(sql.temp("import_holders", """AS
        SELECT g.id_number, g.id_key, g.first_line, n.name, m.mobile, p.pin_hash
        FROM (SELECT id_number, min(id_key) AS id_key, min(line) AS first_line, max(line) AS last_line,
                     max(CASE WHEN mobile IS NOT NULL THEN line END) AS mobile_line,
                     max(CASE WHEN pin_hash IS NOT NULL THEN line END) AS pin_line
              FROM import_stage GROUP BY id_number) g
        JOIN import_stage n ON n.line = g.last_line
        LEFT JOIN import_stage m ON m.line = g.mobile_line
        LEFT JOIN import_stage p ON p.line = g.pin_line"""), "cardholders of the file gathered")
    if sql.pg:
        run("ANALYZE import_holders")
    else:
        run("CREATE UNIQUE INDEX temp.import_holders_id ON import_holders (id_number)")
    run(f"""UPDATE cardholders SET name = src.name, mobile = COALESCE(src.mobile, cardholders.mobile),
                pin_hash = COALESCE(src.pin_hash, cardholders.pin_hash)
            FROM import_holders src
            WHERE cardholders.id_number = src.id_number
              AND (cardholders.name {sql.ne} src.name
                   OR COALESCE(src.mobile, cardholders.mobile) {sql.ne} cardholders.mobile
                   OR COALESCE(src.pin_hash, cardholders.pin_hash) {sql.ne} cardholders.pin_hash)""",
        "cardholders changed")
    run("""INSERT INTO cardholders (id_number, id_key, name, mobile, pin_hash, created_at)
           SELECT src.id_number, src.id_key, src.name, src.mobile, src.pin_hash, :now FROM import_holders src
           WHERE NOT EXISTS (SELECT 1 FROM cardholders h WHERE h.id_number = src.id_number)
           ORDER BY src.first_line
           ON CONFLICT (id_number) DO NOTHING""", "cardholders added")  # one a channel added this moment stands

    # Cards already in the ledger that change: what time did first (a due lapse), then the file.
    lapse = "(c.status = 'verbal_loss' AND c.loss_expires_at IS NOT NULL AND c.loss_expires_at <= :now)"
    back = "'cancelled'" if policy.at_expiry == "cancel" else "COALESCE(c.status_before_loss, 'normal')"
    mid = f"(CASE WHEN {lapse} THEN {back} ELSE c.status END)"  # the status once time has had its say
    syncs = f"s.status <> {mid}"
    def loss(field: str, new_loss: str) -> str:
        return (f"CASE WHEN {syncs} THEN (CASE WHEN s.status = 'verbal_loss' THEN {new_loss} END)"
                f" WHEN {lapse} THEN NULL ELSE c.{field} END AS {field}")
    run(sql.temp("import_plan", f"""AS
        SELECT c.id AS card_id, s.line AS line, {lapse} AS lapse, c.loss_expires_at AS lapse_at,
               {mid} AS status_mid, s.status AS status_new,
               COALESCE(s.bank, c.bank) AS bank, COALESCE(s.applied_on, c.applied_on) AS applied_on,
               {loss("status_before_loss", f"(CASE WHEN {mid} IN ('normal', 'pending_activation') THEN {mid} ELSE 'normal' END)")},
               {loss("loss_reported_at", ":now")}, {loss("loss_expires_at", ":expires")},
               {loss("loss_scope", "'both'")}
        FROM import_stage s JOIN cardholders h ON h.id_number = s.id_number
             JOIN cards c ON c.card_number = s.card_number AND c.holder_id = h.id
        WHERE {lapse} OR s.status <> c.status OR COALESCE(s.bank, c.bank) {sql.ne} c.bank
              OR COALESCE(s.applied_on, c.applied_on) {sql.ne} c.applied_on
        ORDER BY c.holder_id, c.id{sql.lock}"""), "cards that change found and locked")
    run("""INSERT INTO card_events (card_id, at, status_before, status_after, channel, actor, call_sid, reason)
           SELECT card_id, lapse_at, 'verbal_loss', status_mid, 'system', NULL, NULL, 'verbal loss report lapsed'
           FROM import_plan WHERE lapse ORDER BY line""", "verbal loss reports lapsed first")
    run("""INSERT INTO card_events (card_id, at, status_before, status_after, channel, actor, call_sid, reason)
           SELECT card_id, :now, status_mid, status_new, 'import', NULL, NULL, 'status from import'
           FROM import_plan WHERE status_new <> status_mid ORDER BY line""", "card statuses changed")
    run("""UPDATE cards SET status = p.status_new, bank = p.bank, applied_on = p.applied_on,
               status_before_loss = p.status_before_loss, loss_reported_at = p.loss_reported_at,
               loss_expires_at = p.loss_expires_at, loss_scope = p.loss_scope, version = cards.version + 1
           FROM import_plan p WHERE cards.id = p.card_id""", "cards updated")

    # New cards, in the order of the file, each with its first history row.
    run(sql.temp("import_new", """AS SELECT s.line FROM import_stage s
        WHERE NOT EXISTS (SELECT 1 FROM cards c WHERE c.card_number = s.card_number)"""), "new cards found")
    if sql.pg:
        run("ANALYZE import_new")
    verbal = "CASE WHEN s.status = 'verbal_loss' THEN {} END"
    run(f"""INSERT INTO cards (holder_id, card_number, status, bank, applied_on, status_before_loss,
                               loss_reported_at, loss_expires_at, loss_scope, version)
            SELECT h.id, s.card_number, s.status, s.bank, s.applied_on, {verbal.format("'normal'")},
                   {verbal.format(':now')}, {verbal.format(':expires')}, {verbal.format("'both'")}, 1
            FROM import_new n JOIN import_stage s ON s.line = n.line JOIN cardholders h ON h.id_number = s.id_number
            ORDER BY s.line""", "cards added")
    run("""INSERT INTO card_events (card_id, at, status_before, status_after, channel, actor, call_sid, reason)
           SELECT c.id, :now, NULL, s.status, 'import', NULL, NULL, 'imported'
           FROM import_new n JOIN import_stage s ON s.line = n.line JOIN cards c ON c.card_number = s.card_number
           ORDER BY s.line""", "first history rows")


def import_holders(engine: Engine, path: Path, *, key: bytes, now: datetime, policy: LossPolicy,
                   progress_to: TextIO | None = None) -> int:
    """Check a whole cardholder CSV and load it in one transaction; return how many rows it had.

    Raises ImportFileError naming every bad line (nothing loaded). Memory stays bounded whatever
    the size of the file; a progress bar goes to progress_to.
    """
    progress = Progress(progress_to, count_rows(path))
    sql = _Sql(engine.dialect.name)
    errors: list[tuple[int, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh, engine.connect() as conn:
        reader = csv.DictReader(fh)
        if reader.fieldnames != HEADER:
            raise ImportFileError(f"{path}: line 1: the header must be {','.join(HEADER)}")
        try:
            if sql.pg:
                with conn.begin():  # one transaction: staged, checked and merged, or nothing at all
                    n = _stage(conn, sql, reader, key, progress, errors)
                    _refuse_if_bad(path, errors, _repeats(conn, sql))
                    _merge_timed(conn, sql, path, now=now, policy=policy, progress=progress)
            else:
                n = _stage(conn, sql, reader, key, progress, errors)
                _refuse_if_bad(path, errors, _repeats(conn, sql))
                with conn.begin():  # BEGIN IMMEDIATE: the ledger's write lock, for the merge only
                    _merge_timed(conn, sql, path, now=now, policy=policy, progress=progress)
        finally:
            if not sql.pg:
                if conn.in_transaction():
                    conn.rollback()
                raw = conn.connection.driver_connection
                if raw.in_transaction:  # a staging batch cut short
                    raw.execute("ROLLBACK")
                for table in TEMP_TABLES:
                    raw.execute(f"DROP TABLE IF EXISTS temp.{table}")
    refresh_statistics(engine)
    return n


def refresh_statistics(engine: Engine) -> None:
    """Let the query planner see the new sizes: after a bulk load, stale statistics (a ledger it
    still thinks empty) make it scan a million rows where an index lookup would do."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "ANALYZE cardholders, cards, card_events")
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def _refuse_if_bad(path: Path, errors: list[tuple[int, str]], repeats: list[tuple[int, str]]) -> None:
    """Raise naming every bad line, in the order of the file, if there is any."""
    if errors or repeats:
        merged = heapq.merge(errors, repeats, key=lambda e: e[0])
        raise ImportFileError(f"{path}: nothing imported.\n" + "\n".join(message for _, message in merged))


def _merge_timed(conn: Connection, sql: _Sql, path: Path, *, now: datetime, policy: LossPolicy,
                 progress: Progress) -> None:
    started = time.monotonic()
    try:
        _merge(conn, sql, now=now, policy=policy, progress=progress)
    except ImportFileError as err:
        raise ImportFileError(f"{path}: nothing imported.\n{err}") from None
    progress.step(f"merged in {time.monotonic() - started:.1f} s")
