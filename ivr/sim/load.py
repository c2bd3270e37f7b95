"""Put the hotline under load: many scenario calls at once, each with a cardholder of its own.

Before the clock starts, every call gets a fresh fixture identity (a valid ID number of its own,
card numbers of its own ending in the same four digits) loaded into the ledger, so concurrent
calls never step on each other's cards. Then N calls run C at a time, in threads; each webhook's
latency is measured where it is sent. Errors: any non-200, unparsable TwiML, missed expectation.
"""
from __future__ import annotations

import copy
import itertools
import random
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from ivr.sim import runner
from ivr.sim.phone import HttpTransport
from ivr.sim.scenario import Scenario, ScenarioError, collect, load
from models.identity import check_char, normalise_id

KEYED_ID = re.compile(r"[0-9]{17}[0-9*]")


@dataclass
class LoadReport:
    """What a load run measured."""

    calls: int = 0
    failed_calls: int = 0
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """Return the q-th percentile step latency in milliseconds."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def lines(self) -> list[str]:
        """The report, as printed."""
        secs = max(self.seconds, 1e-9)
        return [
            f"calls: {self.calls} in {self.seconds:.1f} s = {self.calls / secs:.1f} calls/s",
            f"webhook requests: {self.requests} = {self.requests / secs:.1f} requests/s",
            f"step latency ms: p50 {self.percentile(50):.1f}  p95 {self.percentile(95):.1f}  "
            f"p99 {self.percentile(99):.1f}  max {max(self.latencies_ms, default=0):.1f}  "
            f"mean {statistics.fmean(self.latencies_ms) if self.latencies_ms else 0:.1f}",
            f"errors: {len(self.errors)} ({self.failed_calls} calls failed)",
        ]


def read_mix(path: Path | None, default: list[Path]) -> list[tuple[Scenario, int]]:
    """Read a mix file (a list of {scenario: PATH, weight: N}, paths relative to it) or use files."""
    if path is None:
        return [(load(p), 1) for p in collect(default)]
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ScenarioError(path, None, f"bad YAML: {err}") from None
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(path, None, "a mix is a list of {scenario: PATH, weight: N}")
    mix = []
    for entry in entries:
        if not isinstance(entry, dict) or "scenario" not in entry:
            raise ScenarioError(path, None, f"mix entry without 'scenario': {entry!r}")
        mix.append((load((path.parent / entry["scenario"]).resolve()), int(entry.get("weight", 1))))
    return mix


def fresh_id(n: int) -> str:
    """Return the n-th synthetic ID number: valid check character, address code 370299 (none)."""
    year = 1950 + (n // 336_000) % 50
    body = f"370299{year}{(n // 1000) % 12 + 1:02d}{(n // 12_000) % 28 + 1:02d}{n % 1000:03d}"
    return body + check_char(body)


def personalise(sc: Scenario, n: int) -> Scenario:
    """Return a copy of the scenario with its cardholders' identities made unique to call n."""
    out = copy.deepcopy(sc)
    swaps: dict[str, str] = {}
    for i, holder in enumerate(out.cardholders):
        old = str(holder["id_number"]).upper()
        new = fresh_id(n * 4 + i)
        swaps[old] = new
        swaps[old[:17] + "*"] = new[:17] + ("*" if new[17] == "X" else new[17])
        holder["id_number"] = new
        for card in holder.get("cards") or []:
            number = str(card["card_number"])
            card["card_number"] = swaps[number] = f"LD{n:08d}{i}{number[-4:]}"
    extra = len(out.cardholders)
    for step in out.steps:
        if step.kind != "press":
            continue
        for keyed in KEYED_ID.findall(step.value):  # ID numbers with no fixture (unknown callers)
            if keyed not in swaps and normalise_id(keyed):
                new = fresh_id(n * 4 + extra)
                extra += 1
                swaps[keyed] = new[:17] + ("*" if new[17] == "X" else new[17])
        for old, new in swaps.items():
            step.value = step.value.replace(old, new)
    for key in ("cards", "history"):
        if key in out.expect:
            out.expect[key] = {swaps.get(str(k), k): v for k, v in out.expect[key].items()}
    return out


def run_load(target: runner.Target, mix: list[tuple[Scenario, int]], calls: int, concurrency: int,
             out: TextIO = sys.stderr, seed: int = 12333) -> LoadReport:
    """Place the calls and measure them; fixtures are loaded before timing starts."""
    rng = random.Random(seed)
    pool = [sc for sc, weight in mix for _ in range(max(weight, 0))]
    planned = [personalise(rng.choice(pool), n) for n in range(calls)]
    for chunk in _chunks(planned, 200):
        target.load_fixtures([h for sc in chunk for h in sc.cardholders])
    report = LoadReport()
    lock = threading.Lock()
    done = itertools.count(1)
    local = threading.local()

    def place(sc: Scenario) -> None:
        if not hasattr(local, "transport"):
            local.transport = _Timed(HttpTransport(), report, lock)
        sc.cardholders = []  # loaded already
        phone_result = runner.run(target, sc, local.transport)
        with lock:
            report.calls += 1
            if not phone_result.passed:
                report.failed_calls += 1
                report.errors.extend(f"{sc.name}: {f}" for f in phone_result.failures[:3])
            _progress(out, next(done), calls, report)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as ex:
        list(ex.map(place, planned))
    report.seconds = time.perf_counter() - started
    out.write("\n")
    return report


class _Timed:
    """A transport that times every request and counts non-200 answers as errors."""

    def __init__(self, inner: HttpTransport, report: LoadReport, lock: threading.Lock):
        self.inner, self.report, self.lock = inner, report, lock

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        t0 = time.perf_counter()
        try:
            status, body = self.inner.post(url, form, headers)
        except Exception as err:
            with self.lock:
                self.report.errors.append(f"POST {url}: {type(err).__name__}: {err}")
            raise
        ms = (time.perf_counter() - t0) * 1000
        with self.lock:
            self.report.requests += 1
            self.report.latencies_ms.append(ms)
            if status not in (200, 204):
                self.report.errors.append(f"POST {url} answered {status}")
        return status, body


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _progress(out: TextIO, done: int, total: int, report: LoadReport) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} calls, {len(report.errors)} errors")
    out.flush()
