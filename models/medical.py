"""The medical insurance personal account (医保个人账户): credits, spending, refunds, the balance."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.storage.db import Base, UTCDateTime

KINDS = ("credit", "debit", "refund")  # 划入, 消费, 退款


class MedicalRecord(Base):
    """One movement of a holder's medical account, with the balance after it (amounts in fen)."""

    __tablename__ = "medical_records"
    __table_args__ = (Index("ix_medical_records_holder_at", "holder_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("cardholders.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(8))
    amount_fen: Mapped[int] = mapped_column(Integer)  # always positive; kind says which way
    institution: Mapped[str] = mapped_column(String(128))  # the hospital, pharmacy or fund
    balance_fen: Mapped[int] = mapped_column(Integer)


def recent(session: Session, holder_id: int, *, offset: int, limit: int) -> list[MedicalRecord]:
    """Return a page of a holder's records, the most recent first."""
    q = (select(MedicalRecord).where(MedicalRecord.holder_id == holder_id)
         .order_by(MedicalRecord.at.desc(), MedicalRecord.id.desc()).offset(offset).limit(limit))
    return list(session.scalars(q))


def yuan_jiao(fen: int) -> str:
    """Say an amount the way Mandarin prompts do: 123元4角5分 (zero parts left out, 0元 for none)."""
    yuan, rest = divmod(abs(fen), 100)
    jiao, fen_left = divmod(rest, 10)
    text = f"{yuan}元" if yuan or not rest else ""
    text += f"{jiao}角" if jiao else ""
    text += f"{fen_left}分" if fen_left else ""
    return ("负" if fen < 0 else "") + text
