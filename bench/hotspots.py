#!/usr/bin/env python3
"""Where a webhook's time goes: the benchmark's call mix in-process, the server side profiled.

    .venv/bin/python bench/hotspots.py [--calls 300] [--db URL] [--sort tottime|cumtime] [--top 40]
                                      [--no-profile] [--clock wall|cpu] [--no-fast-path] [--no-metrics] [--mix NAME]

Places the simulator's calls (tests/load-mix.yaml, or --mix: one of bench/mixes/, a cardholder
each) through the app's WSGI interface in this process, and counts only what happens inside the
app: CPU milliseconds per webhook (without the profiler's overhead when --no-profile), the SQL
statements per webhook, by kind (the hot path's prepared statements included: they are counted from the driver), and a
cProfile table of the webhooks alone. The simulator's own work and loading the fixtures are left
out. --db: a database URL (default: a fresh SQLite file); a PostgreSQL database is emptied first.
--no-fast-path: the hot statements on plain SQLAlchemy Core (config.yaml `database.fast_path: false`).
--no-metrics: nothing counted (config.yaml `metrics.enabled: false`). With PROMETHEUS_MULTIPROC_DIR
set to an empty folder, the metrics are counted as under gunicorn (multiprocess mode, mmap files).
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.driver import SERVICE_MIXES, mix_path  # noqa: E402
from bench.run import cpu_seconds, postgres_pids  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumtime"])
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU time and the statements")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="what the profile's times count: wall time (waiting on the database included) "
                             "or this thread's CPU time (the hotline's own work only)")
    parser.add_argument("--no-fast-path", action="store_true",
                        help="the hot statements on plain SQLAlchemy Core (database.fast_path: false)")
    parser.add_argument("--no-metrics", action="store_true", help="count nothing (metrics.enabled: false)")
    parser.add_argument("--mix", default="default",
                        help="the calls placed: default (tests/load-mix.yaml) or a mix of bench/mixes/ "
                             f"({', '.join(SERVICE_MIXES)}), or the path of a mix file")
    args = parser.parse_args()
    mix_file = mix_path(args.mix) if not args.mix.endswith((".yaml", ".yml")) else Path(args.mix)
    if not mix_file.is_file():
        parser.error(f"no such mix: {args.mix}")

    import yaml
    from sqlalchemy import MetaData

    folder = Path(tempfile.mkdtemp(prefix="ivr-profile-"))
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    cfg["hotlines"]["numbers"]["+8653212333"]["hours"] = "always"  # the same answers at any hour
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    secrets = {"TWILIO_AUTH_TOKEN": "profile-token", "IVR_PIN_KEY": "profile-pin-key",
               "IVR_SECRET_KEY": "profile-secret"}  # a throwaway app's, never a real one's
    os.environ.update(secrets, IVR_CONFIG=str(folder / "config.yaml"))
    from ivr import create_app
    from ivr.sim import load, runner
    from models.storage.db import init_db

    app = create_app({"database_url": args.db or f"sqlite:///{folder / 'profile.db'}",
                      "database": {"fast_path": not args.no_fast_path},
                      "metrics": {"enabled": not args.no_metrics}})
    engine = app.extensions["engine"]
    if engine.dialect.name == "postgresql":
        meta = MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    init_db(engine)

    mix = load.read_mix(mix_file, [])
    rng = random.Random(12333)
    first = int(time.time()) % 100_000 * 1_000
    calls = [load.personalise(rng.choice([m for m, _ in mix]), first + n) for n in range(args.calls + 20)]
    target = runner.Target(app, None)

    profile = cProfile.Profile(time.thread_time) if args.clock == "cpu" else cProfile.Profile()
    inner = app.wsgi_app
    # measure: the calls after the warm-up; inside: a webhook is being answered (all that is counted)
    seen = {"measure": False, "inside": False, "cpu": 0.0, "webhooks": 0}
    paths: collections.Counter[str] = collections.Counter()
    statements: collections.Counter[str] = collections.Counter()

    def measured(environ, start_response):  # type: ignore[no-untyped-def]
        if not seen["measure"]:
            return inner(environ, start_response)
        seen["inside"] = True
        t0 = time.process_time()
        if not args.no_profile:
            profile.enable()
        try:
            body = list(inner(environ, start_response))
        finally:
            if not args.no_profile:
                profile.disable()
            seen["cpu"] += time.process_time() - t0
            seen["inside"] = False
            seen["webhooks"] += 1
            paths[environ["PATH_INFO"]] += 1
        return body

    app.wsgi_app = measured  # type: ignore[method-assign]
    if args.no_profile:  # counting costs time of its own: not while profiling
        count_statements(engine, seen, statements)
    for sc in calls[:20]:  # warm up: compiled statements, kept documents
        runner.run(target, sc)
    target.load_fixtures([h for sc in calls[20:] for h in sc.cardholders])
    server = postgres_pids() if engine.dialect.name == "postgresql" else []
    server_cpu = cpu_seconds(server)
    for sc in calls[20:]:
        sc.cardholders = []
        seen["measure"] = True
        runner.run(target, sc)
        seen["measure"] = False
    server_cpu = cpu_seconds(server) - server_cpu

    n = seen["webhooks"]
    print(f"{n} webhooks ({dict(paths)}), mix {args.mix}, on {engine.dialect.name}, "
          f"{'plain SQLAlchemy Core' if args.no_fast_path else 'fast path'}, "
          f"metrics {'off' if args.no_metrics else 'on'}: "
          f"{seen['cpu'] * 1000 / n:.3f} CPU ms a webhook{'' if args.no_profile else ' (under the profiler)'}")
    if server:
        print(f"PostgreSQL's processes: {server_cpu * 1000 / n:.3f} CPU ms a webhook (with the simulator's "
              f"few reads of the ledger between calls)")
    if statements:
        print("statements a webhook:")
    for sql, count in statements.most_common(25):
        print(f"  {count / n:5.2f}  {sql}")
    if not args.no_profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    return 0


LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


def count_statements(engine, seen, statements) -> None:  # type: ignore[no-untyped-def]
    """Count every statement the driver runs while a webhook is measured, by its first words."""
    def note(sql: str) -> None:
        if seen["inside"]:
            plain = LITERALS.sub("?", str(sql))  # SQLite's trace shows the values bound
            statements[" ".join(plain.split()[:4])[:72]] += 1

    if engine.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def trace(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.set_trace_callback(note)
        engine.dispose()  # connections made from now on are traced
    else:
        import psycopg

        original = psycopg.Cursor.execute

        def execute(self, query, params=None, **kw):  # type: ignore[no-untyped-def]
            note(query if isinstance(query, str) else str(query))
            return original(self, query, params, **kw)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
