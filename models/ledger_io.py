"""Loading cardholders into the ledger from CSV, and showing a holder's cards as JSON."""
from __future__ import annotations

import codecs
import csv
import hashlib
import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from zoneinfo import ZoneInfo

from phonenumbers import PhoneMetadata
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.cards import STATUSES, Card, Cardholder, LossPolicy, holder_by_id_number, settle
from models.identity import id_key, is_pin_shape, normalise_id, pin_hash
from models.medical import KINDS as MEDICAL_KINDS
from models.medical import MedicalRecord
from models.phones import normalise_mobile
from models.storage.bulk import ForeignCards, Merged, StageRow, bulk_import, refresh_statistics

HEADER = ["id_number", "name", "card_number", "status", "pin", "mobile", "bank", "applied_on"]
MEDICAL_HEADER = ["id_number", "at", "kind", "amount", "institution", "balance"]
LIMITS = {"name": 64, "card_number": 32, "bank": 64}  # the ledger's column widths


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
    if meta is None:
        return ""  # no CN metadata at all: no fast path
    parts = [repr(meta.national_prefix_for_parsing), repr(meta.national_prefix_transform_rule)]
    for name in ("general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
                 "personal_number", "voip", "pager", "uan", "voicemail"):
        desc = getattr(meta, name)
        parts.append(repr(desc and (desc.national_number_pattern, desc.possible_length)))
    return hashlib.sha1("\n".join(parts).encode(), usedforsecurity=False).hexdigest()


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


# --- The file's text encoding --------------------------------------------------------------------
#
# Excel on Chinese Windows saves "CSV (逗号分隔)" in the ANSI code page, 936 (GBK); "CSV UTF-8"
# saves UTF-8 with a byte order mark; other tools write UTF-8 without one. The file is decoded
# strictly as UTF-8 first, then as GB18030 (a superset of GBK and GB2312). Text in another
# encoding, or not text at all, practically never passes strict UTF-8, which checks every
# multi-byte sequence, so the order decides nothing by guesswork. No statistical detector
# (charset-normalizer, chardet): on a file of short names and digits it guesses, and may guess Big5 or
# Shift-JIS for a GBK file; here the two possible answers are known and each can be checked exactly.

UTF8, GB18030 = "utf-8-sig", "gb18030"  # utf-8-sig: a byte order mark is dropped, none is fine
SAVE_AS = "in Excel, save it as \"CSV UTF-8(逗号分隔)(*.csv)\" (or \"CSV(逗号分隔)(*.csv)\")"
SNIFF_BLOCK = 1 << 20


@dataclass(frozen=True)
class CsvText:
    """A CSV file and the encoding its text was found to be in; `rows`: about how many data lines."""

    path: Path
    encoding: str
    rows: int

    def open(self) -> TextIO:
        """Open the file as text, for the csv module."""
        return self.path.open(newline="", encoding=self.encoding)


class _Scan(NamedTuple):
    bad_line: int | None  # the first line with bytes that are not text in the encoding; None: all are
    lines: int  # the file's lines, a last one without a newline counted


def _scan(path: Path, encoding: str) -> _Scan:
    """Decode the whole file strictly, a block at a time, counting its lines."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    newlines, last = 0, b"\n"
    with path.open("rb") as fh:
        while True:
            block = fh.read(SNIFF_BLOCK)
            pending = len(decoder.getstate()[0])  # the start of a character the last block cut
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                return _Scan(newlines + block[:max(err.start - pending, 0)].count(b"\n") + 1, 0)
            if not block:
                return _Scan(None, newlines + (last != b"\n"))
            newlines, last = newlines + block.count(b"\n"), block[-1:]


def sniff(path: Path) -> CsvText:
    """Find the text encoding of a CSV: UTF-8 (with or without a byte order mark), else GB18030.

    Raises ImportFileError, in one line saying how to save the file, for anything else (UTF-16,
    Excel's "Unicode text", a spreadsheet or other binary file). Reads the file once or twice, a
    block at a time: memory stays flat whatever its size.
    """
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BLOCK)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
        raise ImportFileError(f"{path}: UTF-16 text (Excel's \"Unicode text\"), not a CSV: {SAVE_AS}")
    encoding, scan = UTF8, _scan(path, UTF8)
    if scan.bad_line is not None:
        not_utf8, (encoding, scan) = scan.bad_line, (GB18030, _scan(path, GB18030))
        if scan.bad_line is not None:  # the first line that is not UTF-8 is the one to look at
            raise ImportFileError(f"{path}: line {not_utf8}: neither UTF-8 nor GB18030 (GBK) text: {SAVE_AS}")
    return CsvText(path, encoding, max(scan.lines - 1, 0))


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


def _field_of(row: dict[str, str]) -> Callable[[str], str]:
    """Return a reader of a CSV line's fields, stripped ("" for a missing one)."""
    return lambda name: (row.get(name) or "").strip()


def parse_row(line: int, row: dict[str, str]) -> tuple[HolderRow | None, list[str]]:
    """Check one CSV line; return the row or the problems found in it."""
    errors: list[str] = []
    get = _field_of(row)
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


def _text(source: Path | CsvText) -> CsvText:
    return source if isinstance(source, CsvText) else sniff(source)


def _records(reader: csv.DictReader[str], path: Path) -> Iterator[dict[str, str]]:
    """Yield the lines of a CSV; a line the csv module cannot read is named, not a traceback."""
    try:
        yield from reader
    except csv.Error as err:
        raise ImportFileError(f"{path}: line {reader.line_num}: {err}") from None


def _fieldnames(reader: csv.DictReader[str], path: Path) -> list[str] | None:
    try:
        return list(reader.fieldnames) if reader.fieldnames is not None else None
    except csv.Error as err:
        raise ImportFileError(f"{path}: line 1: {err}") from None


def read_csv(source: Path | CsvText) -> list[HolderRow]:
    """Read and check a whole cardholder CSV; raise naming every bad line."""
    text = _text(source)
    path = text.path
    with text.open() as fh:
        reader = csv.DictReader(fh)
        if _fieldnames(reader, path) != HEADER:
            raise ImportFileError(f"{path}: line 1: the header must be {','.join(HEADER)}")
        rows, errors = [], []
        seen_cards: dict[str, int] = {}
        for row in _records(reader, path):
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
            card.open_from_import(r.status, now=now, policy=policy)
        else:
            card.bank, card.applied_on = r.bank or card.bank, r.applied_on or card.applied_on
            card.take_import(r.status, now=now, policy=policy)  # a due lapse first, then the file's status
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


def header_of(source: Path | CsvText) -> list[str]:
    """Return the first line of a CSV, split: it says which kind of file it is."""
    text = _text(source)
    with text.open() as fh:
        return _fieldnames(csv.DictReader(fh), text.path) or []


def fen(text: str) -> int:
    """Read an amount in yuan (up to two decimals) as fen."""
    value = Decimal(text)
    if value != value.quantize(Decimal("0.01")):
        raise InvalidOperation
    return int(value * 100)


def read_medical_csv(source: Path | CsvText, tz: ZoneInfo) -> list[MedicalRow]:
    """Read and check a medical account CSV; raise naming every bad line."""
    rows, errors = [], []
    text = _text(source)
    path = text.path
    with text.open() as fh:
        reader = csv.DictReader(fh)
        for rec in _records(reader, path):
            line, get = reader.line_num, _field_of(rec)
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
# `import_holders` streams a cardholder CSV of any size with bounded memory: one pass parses and
# checks every line (`parse_row`, the same checks as `read_csv`) and hands each good one, with its
# keyed hashes, to `models.storage.bulk`, which stages it on the server and then merges the whole
# file in one transaction, set-based, writing what the card rules of `models.cards` decide. Any
# bad line: every one is reported and nothing is loaded.


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


def _staged(reader: csv.DictReader[str], path: Path, key: bytes, errors: list[tuple[int, str]],
            progress: Progress) -> Iterator[StageRow]:
    """Yield each good line of the file as it is staged; note each problem of a bad one as (line, message)."""
    staged = 0
    for row in _records(reader, path):
        parsed, problems = parse_row(reader.line_num, row)
        if parsed is None:
            errors.extend((reader.line_num, p) for p in problems)
            continue
        yield StageRow(parsed.line, parsed.id_number, id_key(key, parsed.id_number), parsed.name,
                       parsed.card_number, parsed.status,
                       pin_hash(key, parsed.id_number, parsed.pin) if parsed.pin else None, parsed.mobile,
                       parsed.bank, parsed.applied_on.isoformat() if parsed.applied_on else None)
        staged += 1
        if staged % 1000 == 0:
            progress.rows(reader.line_num - 1)
    progress.rows(reader.line_num - 1, final=True)


@dataclass(frozen=True)
class Imported:
    """What an import did: how many rows the file had, and what the merge added and changed."""

    rows: int
    merged: Merged


def import_holders(engine: Engine, source: Path | CsvText, *, key: bytes, now: datetime, policy: LossPolicy,
                   progress_to: TextIO | None = None) -> Imported:
    """Check a whole cardholder CSV (UTF-8 or GB18030, `sniff`) and load it in one transaction;
    return how many rows it had and how many holders and cards it added and changed.

    Raises ImportFileError naming every bad line (nothing loaded). Memory stays bounded whatever
    the size of the file; a progress bar goes to progress_to.
    """
    text = _text(source)
    path = text.path
    progress = Progress(progress_to, text.rows)
    errors: list[tuple[int, str]] = []
    with text.open() as fh:
        reader = csv.DictReader(fh)
        if _fieldnames(reader, path) != HEADER:
            raise ImportFileError(f"{path}: line 1: the header must be {','.join(HEADER)}")
        with bulk_import(engine) as job:
            n = job.stage(_staged(reader, path, key, errors, progress))
            _refuse_if_bad(path, errors, [(line, f"line {line}: card_number repeats line {prev}")
                                          for line, prev in job.repeats()])
            started = time.monotonic()
            try:
                merged = job.merge(now=now, policy=policy, step=progress.step)
            except ForeignCards as err:
                raise ImportFileError(f"{path}: nothing imported.\n" + "\n".join(
                    f"line {line}: card_number {number} belongs to another ID number"
                    for line, number in err.cards)) from None
            progress.step(f"merged in {time.monotonic() - started:.1f} s")
    refresh_statistics(engine)
    return Imported(n, merged)


def _refuse_if_bad(path: Path, errors: list[tuple[int, str]], repeats: list[tuple[int, str]]) -> None:
    """Raise naming every bad line, in the order of the file, if there is any."""
    if errors or repeats:
        merged = heapq.merge(errors, repeats, key=lambda e: e[0])
        raise ImportFileError(f"{path}: nothing imported.\n" + "\n".join(message for _, message in merged))
