"""The benchmark's hotline side: a database of its own, the app for fixtures, the load runner."""
from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIX = ROOT / "tests" / "load-mix.yaml"  # the busy morning: menus, verification, the services
# One mix per service that changes the ledger: every call of it changes it (bench/mixes/NAME.yaml).
SERVICE_MIXES = ("loss_and_rating", "release_loss", "activate", "pin_change", "mobile_change")


def mix_path(name: str) -> Path:
    """Return the mix file of a name: "default" (tests/load-mix.yaml) or one of bench/mixes/."""
    return DEFAULT_MIX if name == "default" else ROOT / "bench" / "mixes" / f"{name}.yaml"


class HotlineDriver:
    """A fresh database (SQLite file or PostgreSQL database), migrated, and the app on it."""

    def __init__(self, db: str, token: str, holders: int = 0, socket: bool = True):
        self.folder = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
        self.pg_db = None
        if db == "sqlite":
            self.url = f"sqlite:///{self.folder / 'bench.db'}"
        else:
            subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start"], check=True)
            admin_url = subprocess.run([str(ROOT / "scripts" / "pg.sh"), "url"], check=True, capture_output=True,
                                       text=True).stdout.strip()
            self.pg_db = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self.pg_db}"')
            admin.dispose()
            self.admin_url = admin_url
            # The hotline on the database's host connects over its Unix socket (socket=False: TCP on loopback).
            hotline_url = subprocess.run([str(ROOT / "scripts" / "pg.sh"), "socket-url" if socket else "url"],
                                         check=True, capture_output=True, text=True).stdout.strip()
            self.url = make_url(hotline_url).set(database=self.pg_db).render_as_string(hide_password=False)
        cfg = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        cfg["hotlines"]["numbers"]["+8653212333"]["hours"] = "always"  # the same answers at any hour
        self.config = self.folder / "config.yaml"
        self.config.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
        self.token = token
        self.import_figures: tuple[int, float, float] | None = None
        os.environ.update(self.env())
        from ivr import create_app
        from models.storage.db import init_db

        self.app = create_app()
        init_db(self.app.extensions["engine"])
        if holders:
            self.preload(holders)

    def env(self) -> dict[str, str]:
        """The environment every process of this deployment shares."""
        return {**os.environ, "DATABASE_URL": self.url, "TWILIO_AUTH_TOKEN": self.token,
                "IVR_PIN_KEY": "bench-pin-key", "IVR_SECRET_KEY": "bench-secret", "IVR_CONFIG": str(self.config)}

    def preload(self, holders: int) -> None:
        """Fill the ledger with generated cardholders through the real importer."""
        csv_path = self.folder / "holders.csv"
        with csv_path.open("w") as out:
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_cardholders.py"), str(holders)],
                           stdout=out, check=True)
        seconds, peak_mb = run_measured([str(Path(sys.executable).with_name("flask")), "--app", "wsgi", "ledger",
                                         "import", str(csv_path)], env=self.env())
        self.import_figures = (holders, seconds, peak_mb)
        print(f"  ledger import of {holders:,} cardholders: {seconds:.0f} s, peak memory {peak_mb:.0f} MB",
              flush=True)
        if self.pg_db:  # set the hint bits now, not in the middle of the measure
            engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            with engine.connect() as conn:
                conn.exec_driver_sql("VACUUM")
            engine.dispose()

    def load(self, url: str, calls: int, concurrency: int, ready=None, mix: Path = DEFAULT_MIX,
             done=None) -> list[float]:
        """Place `calls` scenario calls of a mix, `concurrency` at a time; return the step latencies (ms).

        ready: called when the fixtures are loaded and the calls are about to start; done: when the
        last call is over, before the simulator checks the ledger after each (`ivr.sim.load`)."""
        report = self.run_load(url, calls, concurrency, ready=ready, mix=mix, done=done)
        if report.errors:
            raise RuntimeError(f"the hotline made errors under load: {list(report.errors)[:3]}")
        return list(report.latencies_ms)

    def run_load(self, url: str, calls: int, concurrency: int, ready=None, seconds: float | None = None,
                 mix: Path = DEFAULT_MIX, pace: float | None = None, done=None):
        """Run the simulator's load runner over a mix (default tests/load-mix.yaml); return its report."""
        from ivr.sim import load, runner

        scenarios = load.read_mix(mix, [])
        return load.run_load(runner.Target(self.app, url), scenarios, calls, concurrency, out=io.StringIO(),
                             seed=int(time.time()), ready=ready, seconds=seconds, pace=pace, done=done)

    def close(self) -> None:
        """Drop the benchmark's database."""
        self.app.extensions["engine"].dispose()
        if self.pg_db:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
            admin.dispose()


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a command to its end; return its wall seconds and peak resident memory (VmHWM) in MB."""
    t0 = time.perf_counter()
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:  # the high-water mark only grows: the last reading is the peak
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    if proc.returncode:
        errors.seek(0)
        sys.stderr.write(errors.read()[-4000:])
        raise subprocess.CalledProcessError(proc.returncode, command)
    return time.perf_counter() - t0, peak_kb / 1024


def pin_check_ms() -> tuple[float, float]:
    """Median time of the keyed PIN hash alone, and of check_pin with its counter row (SQLite)."""
    from models.cards import Cardholder
    from models.clock import utcnow
    from models.identity import id_key, pin_hash, pin_matches
    from models.pins import PinPolicy, check_pin
    from models.storage.db import create_schema, make_engine, make_sessionmaker

    key, id_number = b"bench-pin-key", "370202198503120025"
    stored = pin_hash(key, id_number, "135790")
    times = []
    for _ in range(2000):
        t0 = time.perf_counter()
        pin_matches(key, id_number, "135790", stored)
        times.append(time.perf_counter() - t0)
    hmac_ms = statistics.median(times) * 1000
    folder = Path(tempfile.mkdtemp(prefix="ivr-pin-"))
    engine = make_engine(f"sqlite:///{folder / 'pin.db'}")
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s, s.begin():
        s.add(Cardholder(id_number=id_number, id_key=id_key(key, id_number), name="基准", pin_hash=stored,
                         created_at=utcnow()))
    times = []
    for _ in range(2000):
        with sessions() as s, s.begin():
            holder = s.get(Cardholder, 1)
            t0 = time.perf_counter()
            check_pin(s, key=key, id_key=holder.id_key, holder=holder, pin="135790", now=utcnow(), policy=PinPolicy())
            s.flush()
            times.append(time.perf_counter() - t0)
    engine.dispose()
    return hmac_ms, statistics.median(times) * 1000
