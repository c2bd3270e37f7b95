"""Put the hotline under load: many scenario calls at once, each with a cardholder of its own.

Before the clock starts, every call's fresh fixture identity (a valid ID number of its own, card
numbers of its own ending in the same four digits, address code 370299) is loaded into the
ledger, a batch at a time. Then N calls run C at a time, in threads; each webhook's latency is
measured where it is sent. With a pace, each caller waits that long (jittered) before each input,
as a person does: C is then the calls in flight at once, and their threads mostly sleep. Memory
stays bounded for any N: only the seeded choice of scenario
per call is kept (a call's personalised copy is made again by the worker that places it), and
latencies are kept as packed floats. Errors: one per failed call (any non-200, unparsable TwiML,
missed expectation), plus any status callback answered with other than 2xx.
"""
from __future__ import annotations

import copy
import random
import re
import statistics
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml

from ivr.sim import runner
from ivr.sim.phone import HttpTransport, Transport
from ivr.sim.scenario import LineList, LineLoader, Scenario, ScenarioError, collect, key_line, load
from models.identity import check_char, normalise_id

KEYED_ID = re.compile(r"[0-9]{17}[0-9*]")
FIXTURE_BATCH = 200
KEPT_ERRORS = 100  # messages kept for the report; all are counted


@dataclass
class LoadReport:
    """What a load run measured."""

    calls: int = 0
    failed_calls: int = 0
    bad_status_callbacks: int = 0
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    errors: list[str] = field(default_factory=list)  # the first KEPT_ERRORS messages

    @property
    def error_count(self) -> int:
        """One per failed call, plus each status callback answered with other than 2xx."""
        return self.failed_calls + self.bad_status_callbacks

    def note(self, message: str) -> None:
        """Keep an error message, up to KEPT_ERRORS of them."""
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(message)

    def percentile(self, q: float, ordered: list[float] | None = None) -> float:
        """Return the q-th percentile step latency in milliseconds."""
        ordered = sorted(self.latencies_ms) if ordered is None else ordered
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def lines(self) -> list[str]:
        """The report, as printed."""
        secs = max(self.seconds, 1e-9)
        ordered = sorted(self.latencies_ms)
        return [
            f"calls: {self.calls} in {self.seconds:.1f} s = {self.calls / secs:.1f} calls/s",
            f"webhook requests: {self.requests} = {self.requests / secs:.1f} requests/s",
            f"step latency ms: p50 {self.percentile(50, ordered):.1f}  p95 {self.percentile(95, ordered):.1f}  "
            f"p99 {self.percentile(99, ordered):.1f}  max {max(ordered, default=0):.1f}  "
            f"mean {statistics.fmean(self.latencies_ms) if self.latencies_ms else 0:.1f}",
            f"errors: {self.error_count} ({self.failed_calls} calls failed)",
        ]


def read_mix(path: Path | None, default: list[Path]) -> list[tuple[Scenario, int]]:
    """Read a mix file (a list of {scenario: PATH, weight: N}, paths relative to it) or use files.

    Raises ScenarioError for any problem: a missing or unreadable file, bad YAML, an entry
    without a scenario, a weight that is not a whole number of at least 0, all weights 0.
    """
    if path is None:
        return [(load(p), 1) for p in collect(default)]
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ScenarioError(path, None, f"cannot read the mix: {err.strerror}") from None
    try:
        entries = yaml.load(data.decode("utf-8"), Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except UnicodeDecodeError:
        raise ScenarioError(path, None, "the mix is not UTF-8 text") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ScenarioError(path, mark.line + 1 if mark else None, f"bad YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ScenarioError(path, None, f"bad YAML: {err}") from None
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(path, getattr(entries, "line", None), "a mix is a list of {scenario: PATH, weight: N}")
    assert isinstance(entries, LineList)  # LineLoader reads every YAML sequence as one
    mix = []
    for i, entry in enumerate(entries):
        line = entries.lines[i] if i < len(entries.lines) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("scenario"), str):
            raise ScenarioError(path, line, f"mix entry without 'scenario: PATH': {entry!r}")
        unknown = [k for k in entry if k not in ("scenario", "weight")]
        if unknown:
            raise ScenarioError(path, key_line(entry, unknown[0], line),
                                f"unknown mix field {unknown[0]!r} (expected scenario, weight)")
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ScenarioError(path, key_line(entry, "weight", line),
                                f"weight must be a whole number of at least 0, not {weight!r}")
        mix.append((load((path.parent / entry["scenario"]).resolve()), weight))
    if not any(weight for _, weight in mix):
        raise ScenarioError(path, entries.line, "every weight is 0: no call to place")
    return mix


def fresh_id(n: int) -> str:
    """Return the n-th synthetic ID number: valid check character, address code 370299 (none),
    born 1970-2009: younger than an elder caller (config.yaml elder.age), as the scenarios expect."""
    year = 1970 + (n // 336_000) % 40
    body = f"370299{year}{(n // 1000) % 12 + 1:02d}{(n // 12_000) % 28 + 1:02d}{n % 1000:03d}"
    return body + check_char(body)


def personalise(sc: Scenario, n: int) -> Scenario:
    """Return a copy of the scenario with its cardholders' identities made unique to call n."""
    out = copy.deepcopy(sc)
    swaps: dict[str, str] = {}
    for i, holder in enumerate(out.cardholders):
        old = str(holder["id_number"]).upper()
        new = fresh_id(n * 4 + i)
        swaps[old] = new[:17] + ("*" if new[17] == "X" else new[17])  # as keyed: X is *
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


def plan(mix: list[tuple[Scenario, int]], calls: int, seed: int) -> array[int]:
    """Return, for each call, the index in the mix of the scenario it places (seeded)."""
    rng = random.Random(seed)
    weights = [max(weight, 0) for _, weight in mix]
    return array("I", rng.choices(range(len(mix)), weights=weights, k=calls))


def run_load(target: runner.Target, mix: list[tuple[Scenario, int]], calls: int, concurrency: int,
             out: TextIO | None = None, seed: int = 12333,
             transport: Callable[[], Transport] = HttpTransport,
             ready: Callable[[], None] | None = None, seconds: float | None = None,
             pace: float | None = None, done: Callable[[], None] | None = None, first: int = 0) -> LoadReport:
    """Place the calls and measure them; fixtures are loaded before timing starts.

    out: where the progress bar goes (standard error); transport: makes each thread's transport;
    ready: called once the fixtures are in, just before the first call (a benchmark's start mark);
    seconds: stop placing new calls once this long has passed (calls under way finish): then
    `calls` is only the most that may be placed, each with its fixture loaded beforehand;
    pace: seconds a caller waits before each input (keys, speech), as a person does: uniformly
    jittered ±50 % (`Paced`), so `concurrency` calls are in flight at once, mostly waiting; the
    calls start spread over one pace. Without it, each input follows the answer at once.
    done: called once every call is over (a benchmark's end mark); the checks of what the ledger
    says after each call are then run after it, not during the calls, so that a measure of the
    database's work counts the hotline's, not the simulator's reads (a failed check still fails
    its call: each call has a cardholder of its own, so nothing after it changes what they read).
    first: the number of the first call (its identities are made from it, `personalise`): several
    load generators at once each take numbers of their own.
    """
    if pace is not None and pace < 0:
        raise ValueError("the pace is a number of seconds, at least 0")
    out = sys.stderr if out is None else out
    choices = plan(mix, calls, seed)
    for start in range(0, calls, FIXTURE_BATCH):  # a batch's copies are dropped once loaded
        batch = (personalise(mix[choices[n]][0], first + n) for n in range(start, min(start + FIXTURE_BATCH, calls)))
        target.load_fixtures([h for sc in batch for h in sc.cardholders])
    report = LoadReport()
    lock = threading.Lock()
    counter = iter(range(calls))
    ledger_later: list[tuple[int, str, bool]] = []  # (call, its SID, failed already), with `done`
    if ready is not None:
        ready()

    def worker(i: int) -> None:
        timed: Transport = _Timed(transport(), report, lock)
        if pace:
            rng = random.Random(seed * 1_000_003 + i)
            timed = Paced(timed, pace, rng)
            time.sleep(rng.uniform(0, pace))  # the calls start spread out, not all at the same instant
        deadline = None if seconds is None else time.perf_counter() + seconds  # each thread on its own clock
        while True:
            with lock:
                n = next(counter, None)
            if n is None or (deadline is not None and time.perf_counter() >= deadline):
                return
            sc = personalise(mix[choices[n]][0], first + n)
            sc.cardholders = []  # loaded already
            _timed_of(timed).bad_status = None
            sid = ""
            try:
                result = runner.run(target, sc, timed, ledger_later=done is not None)
                failures, sid = result.failures, result.call_sid
            except Exception as err:  # noqa: BLE001 (whatever it was, it is this call's failure)
                failures = [f"{type(err).__name__}: {err}"]
            with lock:
                if done is not None and sid and runner.checks_ledger(sc):
                    ledger_later.append((n, sid, bool(failures)))
                report.calls += 1
                if failures:
                    report.failed_calls += 1
                    report.note(f"{sc.name}: " + "; ".join(f.splitlines()[0] for f in failures[:3]))
                bad_status = _timed_of(timed).bad_status
                if bad_status is not None:
                    report.bad_status_callbacks += 1
                    report.note(f"{sc.name}: the status callback answered {bad_status}")
                _progress(out, report.calls, calls, report)

    started = time.perf_counter()
    # Paced, most threads only wait: a small stack each lets thousands of calls be in flight cheaply.
    stack = threading.stack_size(PACED_STACK) if pace else None
    try:
        threads = [threading.Thread(target=worker, args=(i,), name=f"sim-load-{i}", daemon=True)
                   for i in range(min(concurrency, calls))]
        for t in threads:
            t.start()
    finally:
        if stack is not None:
            threading.stack_size(stack)
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - started
    if done is not None:
        done()
        for n, sid, failed in ledger_later:
            sc = personalise(mix[choices[n]][0], first + n)
            try:
                failures = runner.check_ledger(target, sid, sc)
            except Exception as err:  # noqa: BLE001 (as above: this call's failure)
                failures = [f"{type(err).__name__}: {err}"]
            if failures:
                report.failed_calls += not failed
                report.note(f"{sc.name}: " + "; ".join(f"at the end: {f.splitlines()[0]}" for f in failures[:3]))
    out.write("\n")
    return report


PACED_STACK = 512 * 1024  # bytes of stack per paced call's thread (the default is 8 MB of address space)
PACED_INPUTS = ("Digits", "SpeechResult", "RecordingUrl")  # the form fields of a caller's input


class Paced:
    """A transport that waits, before each request carrying a caller's input (keys, speech, a
    recording), the pace in seconds, jittered uniformly ±50 %: what a person takes to listen and
    answer. The greeting, redirects, Twilio's callbacks and the status callback are not delayed,
    and the wait is not part of the measured latency (the timed transport is inside)."""

    def __init__(self, inner: Transport, pace: float, rng: random.Random):
        self.inner, self.pace, self.rng = inner, pace, rng

    def wait(self) -> float:
        """Return the next pause in seconds: pace × uniform(0.5, 1.5)."""
        return self.pace * self.rng.uniform(0.5, 1.5)

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        if any(form.get(k) for k in PACED_INPUTS) or "e=silence" in url:
            time.sleep(self.wait())
        return self.inner.post(url, form, headers)

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str]:
        """Send a GET at once (a queue's wait music, not an input)."""
        status, body = self.inner.get(url, headers)  # type: ignore[attr-defined]
        return int(status), str(body)


def _timed_of(transport: Transport) -> _Timed:
    return transport.inner if isinstance(transport, Paced) else transport  # type: ignore[return-value]


class _Timed:
    """A transport that times every request; it notes a status callback answered with other than
    2xx (the phone goes on regardless). Any other failure fails the call, counted once there."""

    def __init__(self, inner: Transport, report: LoadReport, lock: threading.Lock):
        self.inner, self.report, self.lock = inner, report, lock
        self.bad_status: int | None = None

    def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        return self._timed(url, lambda: self.inner.post(url, form, headers))

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str]:
        """Send a GET, timed."""
        return self._timed(url, lambda: self.inner.get(url, headers))  # type: ignore[attr-defined]

    def _timed(self, url: str, send: Any) -> tuple[int, str]:
        t0 = time.perf_counter()
        status, body = send()
        ms = (time.perf_counter() - t0) * 1000
        with self.lock:
            self.report.requests += 1
            self.report.latencies_ms.append(ms)
        if urlsplit(url).path.endswith("/voice/status") and not 200 <= status < 300:
            self.bad_status = status
        return status, body


def _progress(out: TextIO, done: int, total: int, report: LoadReport) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} calls, {report.error_count} errors")
    out.flush()
