"""Demo data for trying the hotline: the README's cardholders and a believable year of medical records."""
from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from models.medical import MedicalRecord

# Made-up ID numbers with valid check characters, listed in the README.
# (ID number, name, card number, status, PIN, mobile, days from today the card was applied for)
HOLDERS = [
    ("370202198503120025", "张伟", "QD0000000001", "normal", "135790", "13800000001", -700),
    ("370203199005171015", "李娜", "QD0000000002", "pending_activation", "246802", "13800000002", -20),
    ("370211197809300047", "王芳", "QD0000000003", "in_production", "358024", "13800000003", -2),
    ("370202196201011529", "刘洋", "QD0000000004", "verbal_loss", "471836", "13800000004", -900),
    ("370203197311242038", "陈静", "QD0000000005", "formal_loss", "582947", "13800000005", -1200),
    ("370203197311242038", "陈静", "QD0000000015", "in_production", "582947", "13800000005", -1),
    ("370211195508080061", "赵磊", "QD0000000006", "cancelled", "693058", "13800000006", -3000),
    ("37020219860714104X", "周敏", "QD0000000007", "normal", "804169", "13800000007", -400),
    ("370203198807070019", "孙丽", "QD0000000008", "normal", "123456", "13800000008", -300),
]
PHARMACIES = ["青岛市立医院", "青岛大学附属医院", "漱玉平民大药房（市南店）", "国药控股青岛大药房", "青岛市中心医院",
              "市北区社区卫生服务中心", "同仁堂青岛药店"]
FUND = "青岛市医疗保障局"


def medical_year(holder_id: int, id_number: str, today: date, tz: ZoneInfo) -> list[MedicalRecord]:
    """A year of a holder's medical account: a monthly credit, spending at pharmacies and hospitals,
    now and then a refund; the same every time for the same ID number."""
    rng = random.Random(id_number)
    balance = rng.randint(20_000, 150_000)
    records: list[MedicalRecord] = []
    day = today - timedelta(days=365)
    while day <= today:
        moment = datetime.combine(day, time(rng.randint(8, 20), rng.randint(0, 59)), tzinfo=tz)
        if day.day == 5:
            amount = rng.randint(15_000, 32_000)
            balance += amount
            records.append(MedicalRecord(holder_id=holder_id, at=moment, kind="credit", amount_fen=amount,
                                         institution=FUND, balance_fen=balance))
        elif rng.random() < 0.06 and balance > 5_000:
            amount = min(balance, rng.randint(1_200, 48_000))
            balance -= amount
            place = rng.choice(PHARMACIES)
            records.append(MedicalRecord(holder_id=holder_id, at=moment, kind="debit", amount_fen=amount,
                                         institution=place, balance_fen=balance))
            if rng.random() < 0.08:
                back = amount // 2
                balance += back
                records.append(MedicalRecord(holder_id=holder_id, at=moment + timedelta(days=1), kind="refund",
                                             amount_fen=back, institution=place, balance_fen=balance))
        day += timedelta(days=1)
    return records
