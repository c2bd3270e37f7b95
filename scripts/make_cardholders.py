#!/usr/bin/env python3
"""Write a synthetic cardholder CSV for `flask --app wsgi ledger import`, for benchmarks and tests.

    python scripts/make_cardholders.py 1000000 > cardholders.csv
    python scripts/make_cardholders.py 6000 --seed 7 > small.csv

N is the number of lines (cards). The file has the import header
`id_number,name,card_number,status,pin,mobile,bank,applied_on` and is the same for the same N and
seed, byte for byte; it is written as it is made, so memory stays small whatever N is.

Nothing in it belongs to anyone: ID numbers carry valid GB 11643 check characters and plausible
birth dates, but address codes 370290-370298 — inside Qingdao's 3702 prefix, yet no district
(the real ones are 370202 市南区 … 370285 莱西市, and the simulator's fixtures use 370299) — so
no generated ID number is a real person's. Names are random pairings of common characters.
Mobiles are valid-shaped numbers in real operators' ranges, so some may be someone's: load this
file only into a test ledger, never into one whose SMS outbox is being sent.

The mix is roughly Qingdao's: most cards normal; some made but not activated
(pending_activation), in production, reported lost by phone (verbal_loss) or formally
(formal_loss), or cancelled; about 3 % of holders have a second card (the first lost formally or
cancelled, a newer one replacing it). A few holders have no PIN or no mobile on file.
"""
from __future__ import annotations

import argparse
import random
import sys
from bisect import bisect
from datetime import date, timedelta

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
# Inside Qingdao's prefix 3702 but assigned to no district (and not 370299, the simulator's).
ADDRESS_CODES = tuple(f"3702{n}" for n in range(90, 99))
# Birth years and how many of the city's residents were born in each decade (roughly).
DECADES = ((1930, 2), (1940, 5), (1950, 11), (1960, 16), (1970, 17), (1980, 17), (1990, 14),
           (2000, 10), (2010, 7), (2020, 1))
SLOTS = 365 * 1000  # per address code and birth year: day of the year x 3-digit sequence
STRIDE = 7919  # prime, coprime to SLOTS: k -> k * STRIDE mod SLOTS visits every slot once

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史黎贺顾毛郝龚邵万钱覃武戴孔汤庞樊兰殷施陶洪翟安颜倪严牛温芦季俞章鲁葛伍申尤毕聂柴焦向柳邢岳齐梅莫庄辛管祝左涂谷祁时舒耿牟卜詹关苗凌费纪靳盛童欧甄项曲成游阳裴席卫查屈鲍位覃霍翁隋植甘景薄单包司柏宁柯阮桂闵解强丰"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红娥玲芬燕鹏辉林建国志文海波宁晨浩宇欣怡子涵梓轩雨佳琪思远博文嘉俊凯乐心悦晓东立新春梅淑兰凤霞德胜永福振海晓明亚楠雪莹"
PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
            "155", "156", "157", "158", "159", "166", "175", "176", "177", "178", "180", "181", "182",
            "183", "185", "186", "187", "188", "189", "191", "198", "199")
BANKS = ("青岛银行", "青岛农商银行", "中国工商银行", "中国建设银行", "中国农业银行", "中国银行",
         "交通银行", "中国邮政储蓄银行", "招商银行")
BANK_WEIGHTS = (30, 20, 12, 12, 8, 8, 4, 4, 2)
# The status of a holder's only (or newest) card.
STATUSES = ("normal", "pending_activation", "in_production", "verbal_loss", "formal_loss", "cancelled")
STATUS_WEIGHTS = (880, 40, 25, 10, 15, 30)
# The newest card of a holder whose first card was lost or cancelled.
NEWER_STATUSES = ("normal", "pending_activation", "in_production")
NEWER_WEIGHTS = (80, 12, 8)
HEADER = "id_number,name,card_number,status,pin,mobile,bank,applied_on\n"
FIRST_CARDS = date(2009, 7, 1)  # Qingdao's first social security cards


def check_char(first17: str) -> str:
    """Return the GB 11643 check character (as models.identity does; kept here to stay standalone)."""
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def weighted(values: tuple, weights: tuple):
    """Return a function of one uniform draw in [0, 1) that picks a value by weight."""
    cum, total = [], 0
    for w in weights:
        total += w
        cum.append(total / sum(weights))
    return lambda u: values[bisect(cum, u)]


def part_sum(digits: str, start: int) -> int:
    """Return the weighted digit sum of a piece of the first 17 characters starting at start."""
    return sum(int(d) * w for d, w in zip(digits, WEIGHTS[start:], strict=False))


class Maker:
    """Makes the lines, holder by holder, from one seeded random source."""

    def __init__(self, seed: int, as_of: date):
        self.rng = random.Random(seed)
        self.as_of = as_of
        years = [(y, w) for decade, w in DECADES for y in range(decade, decade + 10) if y < as_of.year]
        self.year = weighted(tuple(y for y, _ in years), tuple(w for _, w in years))
        self.issued: dict[tuple[str, int], int] = {}  # (address code, year) -> ID numbers made
        self.offset = {(c, y): self.rng.randrange(SLOTS) for c in ADDRESS_CODES for y, _ in years}
        self.code_sum = {c: part_sum(c, 0) for c in ADDRESS_CODES}
        self.seq_sum = [part_sum(f"{q:03d}", 14) for q in range(1000)]
        self.status = weighted(STATUSES, STATUS_WEIGHTS)
        self.newer = weighted(NEWER_STATUSES, NEWER_WEIGHTS)
        self.bank = weighted(BANKS, BANK_WEIGHTS)
        self.cards = 0

    def id_number(self) -> tuple[str, date]:
        """Return a fresh ID number (never one made before) and its birth date."""
        rnd = self.rng.random
        code = ADDRESS_CODES[int(rnd() * len(ADDRESS_CODES))]
        year = self.year(rnd())
        k = self.issued.get((code, year), 0)
        if k >= SLOTS:  # that year is full for that code (only for N in the tens of millions)
            return self.id_number()
        self.issued[(code, year)] = k + 1
        slot = (k * STRIDE + self.offset[(code, year)]) % SLOTS
        born = date(year, 1, 1) + timedelta(days=slot // 1000)  # years end before as_of's
        birth = f"{born:%Y%m%d}"
        seq = slot % 1000
        check = CHECK_CHARS[(self.code_sum[code] + part_sum(birth, 6) + self.seq_sum[seq]) % 11]
        return f"{code}{birth}{seq:03d}{check}", born

    def applied(self, born: date, lo: date, hi: date) -> date:
        """Return an application date between lo and hi, not before the holder was born."""
        lo = max(lo, born + timedelta(days=30))
        if lo >= hi:
            return hi
        return lo + timedelta(days=int(self.rng.random() * ((hi - lo).days + 1)))

    def card_number(self) -> str:
        self.cards += 1
        return f"QD{5_000_000_000 + self.cards:010d}"

    def holder(self, room: int) -> list[str]:
        """Return the lines of one holder: one card, or two when room allows."""
        rnd = self.rng.random
        id_number, born = self.id_number()
        given = GIVEN[int(rnd() * len(GIVEN))] + (GIVEN[int(rnd() * len(GIVEN))] if rnd() < 0.75 else "")
        name = SURNAMES[int(rnd() * len(SURNAMES))] + given
        pin = "" if rnd() < 0.02 else f"{int(rnd() * 1_000_000):06d}"
        mobile = "" if rnd() < 0.04 else f"{PREFIXES[int(rnd() * len(PREFIXES))]}{int(rnd() * 100_000_000):08d}"
        bank = "" if rnd() < 0.01 else self.bank(rnd())
        recent = self.as_of - timedelta(days=90)
        if room >= 2 and rnd() < 0.03:  # a lost or cancelled card and its replacement
            old = self.applied(born, FIRST_CARDS, self.as_of - timedelta(days=400))
            new_status = self.newer(rnd())
            lo = recent if new_status != "normal" else old + timedelta(days=60)
            new = self.applied(born, max(lo, old + timedelta(days=1)), self.as_of)
            first = "formal_loss" if rnd() < 0.5 else "cancelled"
            return [f"{id_number},{name},{self.card_number()},{first},{pin},{mobile},{bank},{old}\n",
                    f"{id_number},{name},{self.card_number()},{new_status},{pin},{mobile},{bank},{new}\n"]
        status = self.status(rnd())
        if status in ("pending_activation", "in_production"):
            on = self.applied(born, recent, self.as_of)
        else:
            on = self.applied(born, FIRST_CARDS, self.as_of - timedelta(days=30))
        applied_on = "" if rnd() < 0.005 else on.isoformat()
        return [f"{id_number},{name},{self.card_number()},{status},{pin},{mobile},{bank},{applied_on}\n"]


def write(n: int, out, *, seed: int = 12333, as_of: date = date(2026, 11, 1)) -> int:
    """Write the header and n lines to a binary stream; return how many holders they hold."""
    maker = Maker(seed, as_of)
    out.write(HEADER.encode())
    done = holders = 0
    chunk: list[str] = []
    while done < n:
        lines = maker.holder(n - done)
        chunk += lines
        done += len(lines)
        holders += 1
        if len(chunk) >= 10_000:
            out.write("".join(chunk).encode())
            chunk = []
    out.write("".join(chunk).encode())
    return holders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="how many lines (cards) to write")
    parser.add_argument("--seed", type=int, default=12333, help="random seed (default 12333)")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 11, 1),
                        help="the day the file describes the ledger at, YYYY-MM-DD (default 2026-11-01)")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("n must be 0 or more")
    holders = write(args.n, sys.stdout.buffer, seed=args.seed, as_of=args.as_of)
    sys.stdout.buffer.flush()
    print(f"{args.n} cards of {holders} cardholders", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
