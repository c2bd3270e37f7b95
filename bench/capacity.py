#!/usr/bin/env python3
"""How many calls at a caller's pace one host holds: paced load, more calls each level, until it fails.

    .venv/bin/python bench/capacity.py [--db sqlite|postgresql] [--levels 500,1000,2000,3000,4000]
                                       [--pace 5] [--seconds 60] [--threads 0] [--workers 2]
                                       [--mix default|NAME] [--generators 1] [--pg-over socket|tcp]

Starts the hotline as bench/run.py does (`gunicorn -c deploy/gunicorn.conf.py -w 2` on loopback;
--threads N: gthread workers with N threads), then for each level places paced calls
(`sim load --pace`: each caller waits the pace, jittered ±50 %, before each input) with that many
calls in flight for --seconds, and reports webhook p50/p99, errors, steps per second, the server's
CPU per step (the gunicorn tree, and PostgreSQL's processes) and the load generator's own CPU.
A level holds when p99 < 300 ms with 0 errors; the run stops after the first level that does not.
Also the figure on paper from the CPU per step: calls = cores / (CPU seconds per step / pace).
--generators G: the calls in flight are shared by G load generator processes (their CPU summed),
so that one Python process's threads and lock are not what bounds the level.
Loopback only; every level ends by itself.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.driver import HotlineDriver, mix_path  # noqa: E402
from bench.run import GUNICORN_CONF, TOKEN, Server, cpu_seconds, peak_rss_mb, postgres_pids  # noqa: E402

P99_LIMIT_MS = 300.0
CALL_SECONDS = 4.5  # inputs a call of the default mix waits for, about: the fixtures placed per level


def own_cpu() -> float:
    """This process's CPU seconds so far (the load generator: its threads, the fixtures' loading too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


BARRIER_SECONDS = 900  # loading a level's fixtures, or its calls, takes less than this: else the level fails


def several(generators: int, url: str, most: int, level: int, args: argparse.Namespace,
            mark: Callable[[], None], stop: Callable[[], None]) -> tuple[Any, float]:
    """Run one level from several load generator processes, each with its share of the calls in
    flight and call numbers of its own; return the merged report and their CPU seconds while the
    calls ran (each generator's own clock, between the shared start and end marks)."""
    from ivr.sim.load import LoadReport

    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each: no pool or thread inherited
    # ready: the fixtures are in; done: the calls are over; counted: the parent has read the clocks,
    # and only then do the generators check the ledger (their reads are not the server's work).
    ready, done, counted = (spawn.Barrier(generators + 1) for _ in range(3))
    results = spawn.Queue()
    shares = [level // generators + (k < level % generators) for k in range(generators)]
    procs = [spawn.Process(target=generate, name=f"load-generator-{k}", daemon=True, args=(
        url, str(mix_path(args.mix)), most // generators + 1, share, args.seconds, args.pace,
        k * (most // generators + 1), int(time.time()) + k, ready, done, counted, results))
        for k, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    try:
        ready.wait(BARRIER_SECONDS)
        mark()
        done.wait(BARRIER_SECONDS + args.seconds)
        stop()
        counted.wait(BARRIER_SECONDS)
        parts = [results.get(timeout=BARRIER_SECONDS) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
    report = LoadReport()
    own = 0.0
    for part in parts:
        report.latencies_ms.frombytes(part["latencies"])
        report.requests += part["requests"]
        report.calls += part["calls"]
        report.failed_calls += part["failed_calls"]
        report.bad_status_callbacks += part["bad_status_callbacks"]
        for message in part["errors"]:
            report.note(message)
        own += part["cpu"]
    return report, own


def generate(url: str, mix: str, calls: int, concurrency: int, seconds: float, pace: float, first: int, seed: int,
             ready: Any, done: Any, counted: Any, results: Any) -> None:
    """One load generator process: its calls, numbered from `first`, placed as `sim load --pace` does."""
    from ivr import create_app
    from ivr.sim import load, runner

    app = create_app()  # the benchmark's environment, inherited: its database, token and config
    clock: dict[str, float] = {}

    def started() -> None:
        ready.wait(BARRIER_SECONDS)
        clock["cpu"] = own_cpu()

    def ended() -> None:
        clock["cpu"] = own_cpu() - clock["cpu"]
        done.wait(BARRIER_SECONDS)
        counted.wait(BARRIER_SECONDS)

    report = load.run_load(runner.Target(app, url), load.read_mix(Path(mix), []), calls, concurrency,
                           out=io.StringIO(), seed=seed, ready=started, seconds=seconds, pace=pace, done=ended,
                           first=first)
    results.put({"latencies": report.latencies_ms.tobytes(), "requests": report.requests, "calls": report.calls,
                 "failed_calls": report.failed_calls, "bad_status_callbacks": report.bad_status_callbacks,
                 "errors": report.errors[:3], "cpu": clock.get("cpu", 0.0)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--levels", default="500,1000,2000,3000,4000")
    parser.add_argument("--pace", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=0, help="gthread workers with this many threads (0: sync)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mix", default="default")
    parser.add_argument("--pg-over", choices=["socket", "tcp"], default="socket",
                        help="how the hotline reaches PostgreSQL on this host (as bench/run.py)")
    parser.add_argument("--generators", type=int, default=1,
                        help="load generator processes sharing the calls in flight (1: this process alone)")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    hotline = HotlineDriver(args.db, TOKEN, socket=args.pg_over == "socket")
    env = {**hotline.env(), "WEB_CONCURRENCY": str(args.workers)}
    server = Server("wsgi:app", env, GUNICORN_CONF, threads=args.threads, workers=args.workers)
    on_pg = args.db == "postgresql"
    cores = os.cpu_count() or 1
    print(f"# capacity {time.strftime('%Y-%m-%d %H:%M')} · {cores} cores · {args.db} · {args.workers} workers "
          f"{f'gthread × {args.threads}' if args.threads else 'sync'} · pace {args.pace:g} s ±50 % · "
          f"{args.seconds:g} s a level · mix {args.mix}", flush=True)
    print("| calls in flight | steps/s | p50 ms | p99 ms | errors | server CPU ms/step | server CPU % of cores "
          "| load generator CPU % of cores | on paper (calls) |")
    print("|---|---|---|---|---|---|---|---|---|")
    start: dict[str, float] = {}
    end: dict[str, float] = {}

    def now() -> dict[str, float]:
        return {"server": cpu_seconds(server.pids() + (postgres_pids() if on_pg else [])), "own": own_cpu(),
                "wall": time.perf_counter()}

    def mark() -> None:
        start.update(now())

    def stop() -> None:  # before the simulator checks the ledger after each call: its reads are not the server's
        end.update(now())

    try:
        for level in levels:
            most = int(level * (1 + args.seconds / (CALL_SECONDS * args.pace))) + level

            if args.generators > 1:
                report, own = several(args.generators, server.url, most, level, args, mark, stop)
            else:
                report = hotline.run_load(server.url, most, level, ready=mark, seconds=args.seconds, pace=args.pace,
                                          mix=mix_path(args.mix), done=stop)
                own = end["own"] - start["own"]
            wall = end["wall"] - start["wall"]
            server_cpu = end["server"] - start["server"]
            steps = max(report.requests, 1)
            per_step = server_cpu / steps
            paper = cores / (per_step / args.pace) if per_step else 0.0
            p99 = report.percentile(99)
            print(f"| {level:,} | {steps / wall:.0f} | {report.percentile(50):.0f} | {p99:.0f} | {report.error_count} "
                  f"| {per_step * 1000:.2f} | {server_cpu / wall / cores * 100:.0f} % "
                  f"| {own / wall / cores * 100:.0f} % | {paper:,.0f} |", flush=True)
            if report.errors:
                print(f"  errors: {report.errors[:3]}", flush=True)
            if report.error_count or p99 >= P99_LIMIT_MS:
                print(f"  {level:,} calls in flight do not hold (p99 < {P99_LIMIT_MS:.0f} ms, 0 errors); stopping.")
                break
        print(f"peak memory per worker MB: {peak_rss_mb(server.workers()):.0f}; load generator "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        server.stop()
        hotline.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
