"""Loading cardholders into the ledger from CSV, and showing a holder's cards as JSON."""
from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.identity import id_key, is_pin_shape, normalise_id, pin_hash
from models.phones import normalise_mobile
from models.ledger import STATUSES, Actor, Card, Cardholder, LossPolicy, holder_by_id_number, settle
from models.medical import KINDS as MEDICAL_KINDS
from models.medical import MedicalRecord

HEADER = ["id_number", "name", "card_number", "status", "pin", "mobile", "bank", "applied_on"]
MEDICAL_HEADER = ["id_number", "at", "kind", "amount", "institution", "balance"]
IMPORT = Actor("import")


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
        mobile = normalise_mobile(get("mobile"))
        if mobile is None:
            errors.append("mobile is not a Chinese mobile number")
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
