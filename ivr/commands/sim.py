"""`flask --app wsgi sim ...`: a softphone, scenario runs, call export, coverage and load."""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import cast

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from werkzeug.local import LocalProxy

from ivr.sim import coverage, load, record, runner, softphone
from ivr.sim.phone import Agent, ClientTransport, HttpTransport, Phone
from ivr.sim.scenario import ScenarioError, collect
from ivr.sim.scenario import load as load_scenario
from models.calls import CallEvent
from models.storage.db import quieted

sim = AppGroup("sim", help="Place simulated calls: softphone, scenarios, recorded calls, load.")


def _app() -> Flask:
    """Return the running app itself, not the context-local proxy to it (which Flask types as the app)."""
    return cast("LocalProxy[Flask]", current_app)._get_current_object()




@contextmanager
def isolated_app() -> Iterator[Flask]:
    """Build the same app on a fresh SQLite file, so scenario fixtures never touch the ledger;
    the file and its folder are removed afterwards."""
    from ivr import create_app
    from models.storage.db import init_db

    folder = tempfile.mkdtemp(prefix="ivr-sim-")
    app = None
    try:
        app = create_app({"database_url": f"sqlite:///{folder}/scenarios.db"})
        init_db(app.extensions["engine"])
        yield app
    finally:
        if app is not None:
            app.extensions["engine"].dispose()
        shutil.rmtree(folder, ignore_errors=True)


@sim.command("call")
@click.option("--url", help="a running hotline, e.g. http://127.0.0.1:8000 (default: this app in-process)")
@click.option("--from", "caller", default="+8613900000000", show_default=True, help="the caller's number")
@click.option("--to", "dialled", default="+8653212333", show_default=True, help="the number dialled")
@click.option("--speak", is_flag=True, help="also speak the prompts through espeak-ng")
@click.option("--agent-takes-after", "agent_after", type=click.FloatRange(0, 3600), default=None,
              help="in the queue (agent.leg: queue): an agent takes the call after this many seconds of waiting")
@click.option("--agent-from", default=None,
              help="the agent's number taking callers from the queue (default: the first of agent.queue_takers)")
def call_command(url: str | None, caller: str, dialled: str, speak: bool, agent_after: float | None,
                 agent_from: str | None) -> None:
    """Place an interactive call in the terminal."""
    app = _app()
    settings = app.extensions["settings"]
    transport = HttpTransport() if url else ClientTransport(app.test_client())
    base = url or "http://127.0.0.1:8000"
    phone = Phone(transport, settings.auth_token, base_url=base,
                  caller=caller, dialled=dialled, catalogue=app.extensions["catalogue"], call_duration=None)
    taker = agent_from or (settings.queue.takers[0] if settings.queue.takers else settings.agent_dial)
    agent = Agent(transport, settings.auth_token, phone.queues, base_url=base, number=taker,
                  catalogue=app.extensions["catalogue"])
    with nullcontext() if url else quieted("ivr"):
        softphone.talk(phone, speak=speak, agent=agent, agent_after=agent_after)


@sim.command("run")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--url", help="run against a running server (fixtures go to this app's DATABASE_URL)")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), help="also write a JUnit XML report")
@click.option("--coverage", "show_coverage", is_flag=True, help="list the states and transitions no scenario reached")
def run_command(paths: tuple[Path, ...], url: str | None, junit_file: str | None, show_coverage: bool) -> None:
    """Run scenario files or folders; print failures with transcripts and a summary."""
    with nullcontext(_app()) if url else isolated_app() as app, nullcontext() if url else quieted("ivr"):
        code = _run_scenarios(app, paths, url, junit_file, show_coverage)
    sys.exit(code)


def _run_scenarios(app: Flask, paths: tuple[Path, ...], url: str | None, junit_file: str | None,
                   show_coverage: bool) -> int:
    target = runner.Target(app, url)
    results: list[runner.Result] = []
    broken: list[ScenarioError] = []
    for path in collect(list(paths)):
        try:
            sc = load_scenario(path)
        except ScenarioError as err:
            broken.append(err)
            click.echo(f"ERROR {err}")
            continue
        res = runner.run(target, sc)
        results.append(res)
        if res.passed:
            click.echo(f"ok    {sc.name}  ({path})")
        else:
            click.echo(f"FAIL  {sc.name}  ({path})")
            for f in res.failures:
                click.echo("      " + f.replace("\n", "\n      "))
            click.echo("      transcript:")
            for line in res.transcript:
                click.echo("        " + line)
    if junit_file:
        runner.junit(results, junit_file, broken)
    cov = coverage.measure(app.extensions["machine"], target.paths([r.call_sid for r in results]))
    click.echo(cov.summary())
    if show_coverage:
        for line in cov.missing():
            click.echo("  " + line)
    failed = sum(not r.passed for r in results) + len(broken)
    click.echo(f"{len(results) - failed + len(broken)} passed, {failed} failed")
    return 1 if failed or not results else 0


@sim.command("record")
@click.argument("call_sid")
def record_command(call_sid: str) -> None:
    """Print a recorded call as a scenario (identity replaced by fixtures): sim record SID > x.yaml."""
    app = _app()
    settings = app.extensions["settings"]
    with app.extensions["sessions"]() as s:
        try:
            scenario = record.export(s, call_sid, app.extensions["catalogue"], settings.pin.max_failures, settings.tz,
                                     settings.initial_pin)
        except record.NoSuchCall:
            click.echo(f"no recorded call {call_sid}", err=True)
            sys.exit(1)
        except record.NotReplayable as err:
            click.echo(str(err), err=True)
            sys.exit(1)
    click.echo(record.to_yaml(scenario), nl=False)


@sim.command("coverage")
def coverage_command() -> None:
    """Show which states and transitions the calls recorded in the database went through."""
    app = _app()
    with app.extensions["sessions"]() as s:
        paths = [p for p in s.scalars(select(CallEvent.path)) if p]
    cov = coverage.measure(app.extensions["machine"], paths)
    click.echo(cov.summary())
    for line in cov.missing():
        click.echo("  " + line)


@sim.command("load")
@click.option("--url", required=True, help="the running hotline to load, e.g. http://127.0.0.1:8000")
@click.option("--calls", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 20_000),
              help="calls at once (with --pace: calls in flight, each a thread that mostly waits)")
@click.option("--mix", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML list of {scenario: PATH, weight: N} (default: tests/load-mix.yaml)")
@click.option("--duration", type=click.FloatRange(1, 3600), default=None,
              help="stop placing calls after this many seconds (then --calls is the most placed)")
@click.option("--pace", type=click.FloatRange(0, 120), default=None, is_flag=False, flag_value=5.0,
              help="seconds a caller waits before each input, as a person does (jittered uniformly ±50%; "
                   "--pace alone: 5)")
def load_command(url: str, calls: int, concurrency: int, mix: Path | None, duration: float | None,
                 pace: float | None) -> None:
    """Place N scenario calls, C at a time, against a server; report rates, latency and errors."""
    app = _app()
    default = Path(__file__).resolve().parents[2] / "tests" / "load-mix.yaml"
    try:
        scenarios = load.read_mix(mix or default, [])
    except ScenarioError as err:
        click.echo(f"ERROR {err}", err=True)
        sys.exit(2)
    report = load.run_load(runner.Target(app, url), scenarios, calls, concurrency, seconds=duration, pace=pace)
    for line in report.lines():
        click.echo(line)
    for message in report.errors[:10]:
        click.echo("  " + message)
    sys.exit(1 if report.error_count else 0)
