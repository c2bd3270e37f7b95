#!/usr/bin/env python3
"""The hotline against the limit of its stack, measured in the same run. Prints figures.

    .venv/bin/python bench/run.py [--db sqlite|postgresql|both] [--rounds 3] [--calls 200]
                                  [--holders N[,N...]] [--soak SECONDS] [--quick] [--compare-metrics]
                                  [--pg-over socket|tcp] [--threads N]
                                  [--mixes default,loss_and_rating,release_loss,activate,pin_change,mobile_change]

For each database it starts two servers, each `gunicorn -w 2` on loopback: the limit
(bench/bare.py: signature check + a menu-sized TwiML from the twilio library, nothing else) and
the hotline (wsgi:app, with its ledger, call state, history and call recording doing real work).
PostgreSQL is scripts/pg.sh's server on IVR_PG_PORT (default 54329); only its processes are counted. The
hotline reaches it over its Unix socket, as a hotline on its database's host should (--pg-over tcp: TCP
on loopback, about 5 % more CPU a step on this machine: README "Performance").
Then three rounds, medians; in each, for each mix, the hotline's load, then the limit's (the
latencies, each alone), then both at once (the CPU figures):
  - server CPU ms per webhook step: user+system time of the gunicorn process tree (and, on
    PostgreSQL, of the postgres processes) from /proc, so the load generator's cost drops out
    (and its reads of the ledger: the clock stops before the simulator checks it after the calls).
    Measured with both loads side by side, at the same concurrency: the machine's speed drifts
    (a virtual machine's more: the limit alone read 0.72-1.07 ms in consecutive runs), and
    side by side it moves both alike;
  - steps per second, p50/p99 step latency at 16 and at 64 concurrent calls;
  - peak memory (VmHWM) per worker.
The hotline's load is the QA simulator's load runner with tests/load-mix.yaml (verification, loss
report, release, status and history: the "default" mix, at 16 and 64 calls at once) and, at 16,
one mix per service that changes the ledger (bench/mixes/: loss report + rating, release,
activation, PIN change, mobile change; --mixes chooses), each call with a fixture cardholder of
its own; the limit gets the same number of signed webhook requests at the same concurrency,
measured right after each.
The hotline runs as in production, `gunicorn -c deploy/gunicorn.conf.py` (the metrics summed
across workers). --compare-metrics starts a second hotline on the same database with
config.yaml `metrics.enabled: false` and measures it in every round beside the first, in turn
(the order alternating by round): the cost of the metrics is the ratio of the two.
Also: `ledger import` of --holders generated cardholders (time, peak memory), the step's cost with
each ledger size against the smallest, 200 concurrent calls held for --soak seconds (errors
counted), and the time of a PIN verification.
"""
from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twilio.request_validator import RequestValidator  # noqa: E402

TOKEN = "bench-token"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"  # the hotline's own: metrics across workers
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Return a process and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """Return user+system CPU seconds used so far by the processes (and their reaped children)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def postgres_pids() -> list[int]:
    """Return the processes of the benchmark's PostgreSQL server (scripts/pg.sh's, on IVR_PG_PORT):
    its postmaster, read from the data directory's postmaster.pid, and every backend under it.
    Not every process named postgres: on a shared machine other servers' work would be counted."""
    data = Path(f"/tmp/ivr-pg-{os.environ.get('IVR_PG_PORT', '54329')}")  # noqa: S108 (scripts/pg.sh's own)
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return []
    return children(postmaster)


def peak_rss_mb(pids: list[int]) -> float:
    """Return the largest VmHWM among the processes, in MB."""
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak / 1024


class Server:
    """One `gunicorn -w 2` on loopback (sync workers, or gthread with `threads`)."""

    def __init__(self, app: str, env: dict[str, str], config: Path | None = None, threads: int = 0,
                 workers: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-gunicorn-", suffix=".log", delete=False)
        gunicorn = Path(sys.executable).with_name("gunicorn")
        conf = ["-c", str(config)] if config else []
        if threads:  # gunicorn's gthread workers: a worker waiting on the database serves another request
            conf += ["-k", "gthread", "--threads", str(threads)]
        self.proc = subprocess.Popen([str(gunicorn), *conf, "-w", str(workers), "-b", f"127.0.0.1:{self.port}", app],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120  # a busy machine takes a while to import the app
        while time.monotonic() < deadline:
            try:
                requests.post(f"{self.url}/voice", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{app} did not start: see {self.log.name}")

    def pids(self) -> list[int]:
        return children(self.proc.pid)

    def workers(self) -> list[int]:
        return [p for p in self.pids() if p != self.proc.pid]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


def bare_request(validator: RequestValidator, target: str, i: int) -> tuple[dict[str, str], dict[str, str]]:
    """Return the form and headers of the i-th signed webhook request to the limit."""
    form = {"CallSid": f"CA{i:032x}", "AccountSid": "AC" + "0" * 32, "From": "+8613900000000",
            "To": "+8653212333", "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01",
            "Digits": "1"}
    return form, {"X-Twilio-Signature": validator.compute_signature(target, form)}


def drive_bare(url: str, steps: int, concurrency: int) -> list[float]:
    """Send `steps` signed webhook requests, `concurrency` at a time; return latencies in ms."""
    validator = RequestValidator(TOKEN)
    target = f"{url}/voice/step?t=1"
    local = threading.local()
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        form, headers = bare_request(validator, target, i)
        t0 = time.perf_counter()
        r = local.s.post(target, data=form, headers=headers, timeout=30)
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            raise RuntimeError(f"bare answered {r.status_code}")
        with lock:
            latencies.append(ms)

    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, range(steps)))
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else 0.0


def measure(label: str, server: Server, run, on_postgres: bool) -> dict[str, float]:
    """Run a load against a server; return CPU ms per step, steps/s, p50, p99.

    `run(mark, stop)` calls `mark()` when its calls are about to start and `stop()` when the last
    is over (else its return stops the clock), so that loading the calls' fixture cardholders and
    checking the ledger after them (database work of the simulator, not of a webhook) are not counted.
    """
    start: dict[str, float] = {}
    end: dict[str, float] = {}

    def now() -> dict[str, float]:
        return {"cpu": cpu_seconds(server.pids() + (postgres_pids() if on_postgres else [])),
                "wall": time.perf_counter()}

    def mark() -> None:
        start.update(now())

    def stop() -> None:
        end.update(now())

    latencies = run(mark, stop)
    if not end:
        stop()
    wall = end["wall"] - start["wall"]
    cpu = end["cpu"] - start["cpu"]
    steps = len(latencies)
    return {"cpu_ms": cpu * 1000 / steps, "steps_s": steps / wall, "p50": pct(latencies, 50),
            "p99": pct(latencies, 99), "steps": steps}


def side_by_side(server: Server, bare: Server, run, concurrency: int, on_postgres: bool) -> tuple[float, float]:
    """Run the hotline's load and, at the same time and concurrency, signed requests to the limit
    until it is over; return the CPU ms per step of each over that same time (the hotline's with
    PostgreSQL's processes, as `measure`): the machine's speed, which drifts, moves both alike."""
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()
    marks: dict[str, tuple[float, float, int]] = {}
    failures: list[BaseException] = []

    def keep_asking() -> None:
        target = f"{bare.url}/voice/step?t=1"
        session = requests.Session()
        form, headers = bare_request(RequestValidator(TOKEN), target, threading.get_ident() % 2**64)
        try:
            while not stop.is_set():
                if session.post(target, data=form, headers=headers, timeout=30).status_code != 200:
                    raise RuntimeError("the limit answered other than 200")
                with lock:
                    done[0] += 1
        except Exception as err:  # noqa: BLE001 (raised below: a lost request would skew the figure)
            with lock:
                failures.append(err)
            stop.set()

    def now() -> tuple[float, float, int]:
        with lock:
            return (cpu_seconds(server.pids() + (postgres_pids() if on_postgres else [])), cpu_seconds(bare.pids()),
                    done[0])

    def mark() -> None:
        threads.extend(threading.Thread(target=keep_asking, daemon=True) for _ in range(concurrency))
        for t in threads:
            t.start()
        time.sleep(0.5)  # the limit's requests under way before the clock starts
        marks["start"] = now()

    def end() -> None:
        marks["end"] = now()
        stop.set()

    threads: list[threading.Thread] = []
    try:
        steps = len(run(mark, end))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    if failures:
        raise RuntimeError(f"the limit's load failed beside the hotline's: {failures[0]!r}")
    (h0, b0, n0), (h1, b1, n1) = marks["start"], marks["end"]
    return (h1 - h0) * 1000 / steps, (b1 - b0) * 1000 / max(n1 - n0, 1)


def main() -> int:
    from bench.driver import SERVICE_MIXES, HotlineDriver, mix_path  # the app and the load runner, per database

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200, help="hotline calls per measurement")
    parser.add_argument("--holders", default="0",
                        help="cardholders imported into the ledger first (`ledger import`, timed); a list such "
                             "as 1000,1000000 measures each and compares the step's cost")
    parser.add_argument("--soak", type=float, default=60,
                        help="then hold 200 concurrent calls for this many seconds and count errors (0: skip)")
    parser.add_argument("--quick", action="store_true", help="one round, 60 calls, no soak: a smoke run")
    parser.add_argument("--pg-over", choices=["socket", "tcp"], default="socket",
                        help="how the hotline reaches PostgreSQL on this host: its Unix socket (default, as "
                             "a hotline on its database's host should: deploy/ivr-hotline.env.example) or TCP "
                             "on loopback")
    parser.add_argument("--threads", type=int, default=0,
                        help="run the hotline on gunicorn's gthread workers with this many threads each "
                             "(default 0: sync workers, as deploy/gunicorn.conf.py)")
    parser.add_argument("--mixes", default=",".join(("default", *SERVICE_MIXES)),
                        help="the call mixes measured, in turn: default (tests/load-mix.yaml, at 16 and 64 calls "
                             "at once) and bench/mixes/NAME.yaml, one per ledger-changing service (at 16); "
                             f"default: all of them ({', '.join(SERVICE_MIXES)})")
    parser.add_argument("--compare-metrics", action="store_true",
                        help="also measure the hotline with metrics.enabled: false, in turn; print on / off")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.soak = 1, 60, 0
    sizes = [int(n.replace("_", "")) for n in args.holders.split(",")]
    mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    unknown = [m for m in mixes if not mix_path(m).is_file()]
    if unknown:
        parser.error(f"no such mix: {', '.join(unknown)} (default, or one of bench/mixes/)")
    plan = [(m, c) for m in mixes for c in ((16, 64) if m == "default" else (16,))]

    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(f"# bench {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · python {sys.version.split()[0]}"
          f" · hotline workers: {f'gthread, {args.threads} threads' if args.threads else 'sync'}"
          f" · PostgreSQL over {'its Unix socket' if args.pg_over == 'socket' else 'TCP on loopback'}")
    for db in databases:
        per_size: dict[int, dict] = {}
        for holders in sizes:
            hotline = HotlineDriver(db, TOKEN, holders, socket=args.pg_over == "socket")
            env = hotline.env()
            bare = Server("bench.bare:app", env)
            server = Server("wsgi:app", env, GUNICORN_CONF, threads=args.threads)
            off = Server("wsgi:app", {**env, "IVR_CONFIG": str(metrics_off(hotline.config))},
                         GUNICORN_CONF) if args.compare_metrics else None
            try:
                rows: dict[tuple[str, int], list[dict[str, float]]] = {}
                for rnd in range(args.rounds):
                    for mix, concurrency in plan:
                        def hotline_load(mark: Callable[[], None], stop: Callable[[], None], url: str = server.url,
                                         n: int = concurrency, driver: HotlineDriver = hotline, mix: str = mix) -> Any:
                            return driver.load(url, args.calls, n, mark, mix=mix_path(mix), done=stop)

                        def off_load(mark: Callable[[], None], stop: Callable[[], None],
                                     url: str = off.url if off else "", n: int = concurrency,
                                     driver: HotlineDriver = hotline, mix: str = mix) -> Any:
                            return driver.load(url, args.calls, n, mark, mix=mix_path(mix), done=stop)

                        tag = "" if mix == "default" else f"{mix}:"

                        def bare_load(mark: Callable[[], None], _stop: Callable[[], None], url: str = bare.url,
                                      steps: int = 0, n: int = concurrency) -> Any:
                            mark()
                            return drive_bare(url, steps, n)

                        compare = off is not None and mix == "default"
                        if compare and rnd % 2:  # the order alternates: neither always goes first
                            rows.setdefault(("hotline-off", concurrency), []).append(
                                measure("hotline-off", off, off_load, db == "postgresql"))
                        h = measure("hotline", server, hotline_load, db == "postgresql")
                        if compare and not rnd % 2:
                            rows.setdefault(("hotline-off", concurrency), []).append(
                                measure("hotline-off", off, off_load, db == "postgresql"))

                        b = measure("bare", bare, functools.partial(bare_load, steps=int(h["steps"])),
                                    db == "postgresql")
                        # The CPU figures: both at once, side by side, so that the machine's speed,
                        # which drifts (a virtual machine's more), moves both alike.
                        alone = h["cpu_alone"], b["cpu_alone"] = h["cpu_ms"], b["cpu_ms"]
                        h["cpu_ms"], b["cpu_ms"] = side_by_side(server, bare, hotline_load, concurrency,
                                                                db == "postgresql")
                        rows.setdefault((f"{tag}hotline", concurrency), []).append(h)
                        rows.setdefault((f"{tag}bare", concurrency), []).append(b)
                        off_ms = rows["hotline-off", concurrency][-1]["cpu_ms"] if compare else 0.0  # alone
                        print(f"  round {rnd + 1} · {db} · {mix} · {concurrency:>2} calls at once: hotline "
                              f"{h['cpu_ms']:.2f} CPU ms/step, bare {b['cpu_ms']:.2f} side by side; alone "
                              f"{alone[0]:.2f} and {alone[1]:.2f} "
                              f"({h['cpu_ms'] / b['cpu_ms']:.2f}×)"
                              + (f", metrics off {off_ms:.2f}" if compare else ""),
                              flush=True)
                per_size[holders] = report(db, rows, peak_rss_mb(bare.workers()), peak_rss_mb(server.workers()),
                                           holders, hotline.import_figures, mixes)
                if args.soak and holders == sizes[0]:
                    soak(hotline, server, args.soak)
            finally:
                bare.stop()
                server.stop()
                if off is not None:
                    off.stop()
                hotline.close()
        compare_sizes(db, per_size)
    pin_figures()
    return 0


SOAK_CONCURRENCY = 200


def soak(hotline, server: Server, seconds: float) -> None:
    """Hold 200 calls at once against the hotline for a while; print calls, steps and errors."""
    most = int(seconds * 150)  # each call's cardholder is loaded first: room for 150 calls a second
    report = hotline.run_load(server.url, most, SOAK_CONCURRENCY, seconds=seconds)
    print(f"\n{SOAK_CONCURRENCY} calls at once for {report.seconds:.0f} s: {report.calls:,} calls, "
          f"{report.requests:,} webhook steps ({report.requests / report.seconds:.0f}/s), "
          f"p50 {report.percentile(50):.0f} ms, p99 {report.percentile(99):.0f} ms, "
          f"errors: {report.error_count}" + (f" — {report.errors[:3]}" if report.errors else ""), flush=True)
    if report.calls >= most:
        print(f"  (every one of the {most:,} prepared calls was placed before the time was up)")


def compare_sizes(db: str, per_size: dict[int, dict]) -> None:
    """Print the step's cost with each ledger size against the smallest."""
    if len(per_size) < 2:
        return
    sizes = sorted(per_size)
    base = per_size[sizes[0]]
    for size in sizes[1:]:
        other = per_size[size]
        measured = [(key[:-len("hotline")], c) for key, c in base if key.endswith("hotline")]
        ratios = " · ".join(f"{m.rstrip(':') or 'default'} @{c} "
                            f"{other[(m + 'hotline', c)]['cpu_ms'] / base[(m + 'hotline', c)]['cpu_ms']:.2f}×"
                            for m, c in measured)
        print(f"\n{db}: a step with {size:,} cardholders costs {ratios} the step with {sizes[0]:,} (CPU ms per step)")


def metrics_off(config: Path) -> Path:
    """Write a copy of the benchmark's config.yaml with the metrics switched off; return its path."""
    import yaml

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg["metrics"] = {**(cfg.get("metrics") or {}), "enabled": False}
    off = config.with_name("config-metrics-off.yaml")
    off.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return off


def report(db: str, rows, bare_mb: float, hot_mb: float, holders: int, imported, mixes: list[str]) -> dict:
    """Print the medians of the rounds: the limit, the hotline and their ratio; return the medians."""
    med = {k: {m: statistics.median(r.get(m, r["cpu_ms"]) for r in v)
               for m in ("cpu_ms", "cpu_alone", "steps_s", "p50", "p99")}
           for k, v in rows.items()}
    print(f"\n## {db}" + (f" · {holders:,} cardholders in the ledger" if holders else ""))
    services = [m for m in mixes if m != "default"]
    if services:
        print("| mix @16 calls at once | limit CPU ms/step | hotline CPU ms/step | hotline / limit "
              "| p99 ms: hotline / limit |")
        print("|---|---|---|---|---|")
        for m in mixes:
            tag = "" if m == "default" else f"{m}:"
            b, h = med[(f"{tag}bare", 16)], med[(f"{tag}hotline", 16)]
            print(f"| {m} | {b['cpu_ms']:.2f} | {h['cpu_ms']:.2f} | {h['cpu_ms'] / b['cpu_ms']:.2f}× "
                  f"| {h['p99']:.0f} / {b['p99']:.0f} ({h['p99'] / b['p99']:.2f}×) |")
        print()
    if "default" not in mixes:
        print(f"peak memory per worker MB: limit {bare_mb:.0f}, hotline {hot_mb:.0f}")
        return med
    print("| measure (default mix) | limit (bare Flask) | hotline | hotline / limit |")
    print("|---|---|---|---|")
    for c in (16, 64):
        b, h = med[("bare", c)], med[("hotline", c)]
        cpu, steps = h["cpu_ms"] / b["cpu_ms"], h["steps_s"] / b["steps_s"]
        print(f"| server CPU ms per step @{c} | {b['cpu_ms']:.2f} | {h['cpu_ms']:.2f} | {cpu:.2f}× |")
        print(f"| steps per second @{c} | {b['steps_s']:.0f} | {h['steps_s']:.0f} | {steps:.2f}× |")
        print(f"| p50 step latency ms @{c} | {b['p50']:.1f} | {h['p50']:.1f} | {h['p50'] / b['p50']:.2f}× |")
        print(f"| p99 step latency ms @{c} | {b['p99']:.1f} | {h['p99']:.1f} | {h['p99'] / b['p99']:.2f}× |")
    print(f"| peak memory per worker MB | {bare_mb:.0f} | {hot_mb:.0f} | |")
    if ("hotline-off", 16) in med:
        print("\n| metrics on / off (same run, in turn) | metrics off | metrics on | on / off |")
        print("|---|---|---|---|")
        for c in (16, 64):
            o, h = med[("hotline-off", c)], med[("hotline", c)]  # each alone, in turn
            print(f"| server CPU ms per step @{c} | {o['cpu_ms']:.3f} | {h['cpu_alone']:.3f} | "
                  f"{h['cpu_alone'] / o['cpu_ms']:.3f}× |")
            print(f"| p50 step latency ms @{c} | {o['p50']:.1f} | {h['p50']:.1f} | {h['p50'] / o['p50']:.2f}× |")
            print(f"| p99 step latency ms @{c} | {o['p99']:.1f} | {h['p99']:.1f} | {h['p99'] / o['p99']:.2f}× |")
    if imported:
        n, seconds, peak = imported
        print(f"`ledger import` of {n:,} generated cardholders: {seconds:.0f} s, peak memory {peak:.0f} MB")
    return med


def pin_figures() -> None:
    """Time a PIN verification: the keyed hash alone, and check_pin with its database round trip."""
    from bench.driver import pin_check_ms

    hmac_ms, check_ms = pin_check_ms()
    print(f"\nPIN verification: keyed hash {hmac_ms * 1000:.1f} µs; check_pin with its counter row on SQLite "
          f"{check_ms:.3f} ms (median of 2,000)")


if __name__ == "__main__":
    sys.exit(main())
