"""`sim load`: a clear error for a bad mix, one error per failed call, memory bounded for large N."""
from __future__ import annotations

import gc
import io
import random
import threading
import time
import weakref
from array import array
from pathlib import Path

import pytest
from sqlalchemy import select, update

from ivr.sim import load, runner
from ivr.sim.phone import ClientTransport
from ivr.sim.scenario import ScenarioError
from models.cards import Card

ROOT = Path(__file__).resolve().parent.parent
MIX = ROOT / "tests" / "load-mix.yaml"
REPORT_LOSS = ROOT / "tests" / "scenarios" / "load" / "report_loss.yaml"


def mix_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(text.replace("REPORT_LOSS", str(REPORT_LOSS)), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, problem",
    [
        ("- {scenario: REPORT_LOSS, weight: lots}\n",
         "mix.yaml:1: weight must be a whole number of at least 0, not 'lots'"),
        ("- {scenario: REPORT_LOSS, weight: 1.5}\n",
         "mix.yaml:1: weight must be a whole number of at least 0, not 1.5"),
        ("- scenario: REPORT_LOSS\n  weight: 1\n- scenario: REPORT_LOSS\n  weight: -2\n",
         "mix.yaml:4: weight must be a whole number of at least 0, not -2"),
        ("- {scenario: REPORT_LOSS, weight: 0}\n- {scenario: REPORT_LOSS, weight: 0}\n",
         "mix.yaml:1: every weight is 0: no call to place"),
        ("- {weight: 2}\n", "mix.yaml:1: mix entry without 'scenario: PATH'"),
        ("- {scenario: REPORT_LOSS, weigth: 2}\n", "mix.yaml:1: unknown mix field 'weigth'"),
        ("- {scenario: nowhere.yaml}\n", "nowhere.yaml: cannot read: No such file or directory"),
        ("[{scenario: REPORT_LOSS\n", "mix.yaml:2: bad YAML"),
        ("scenario: REPORT_LOSS\n", "mix.yaml:1: a mix is a list of {scenario: PATH, weight: N}"),
    ],
)
def test_a_bad_mix_is_a_scenario_error_naming_the_file_and_line(tmp_path, text, problem):
    with pytest.raises(ScenarioError) as err:
        load.read_mix(mix_file(tmp_path, text), [])
    assert problem in str(err.value)


def test_a_missing_mix_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="missing.yaml: cannot read the mix: No such file or directory"):
        load.read_mix(tmp_path / "missing.yaml", [])


def test_sim_load_with_a_bad_mix_exits_2_with_the_problem_and_no_traceback(app, tmp_path):
    path = mix_file(tmp_path, "- {scenario: REPORT_LOSS, weight: -1}\n")
    result = app.test_cli_runner().invoke(args=["sim", "load", "--url", "http://127.0.0.1:9", "--mix", str(path)])
    assert result.exit_code == 2
    assert f"ERROR {path}:1: weight must be a whole number of at least 0, not -1" in result.output
    assert "Traceback" not in result.output


def test_sim_load_with_a_missing_mix_file_exits_2_saying_so(app, tmp_path):
    result = app.test_cli_runner().invoke(
        args=["sim", "load", "--url", "http://127.0.0.1:9", "--mix", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


class Refusing:
    """The app in-process, except that chosen paths answer 500."""

    def __init__(self, app, refuse: tuple[str, ...]):
        self.inner = ClientTransport(app.test_client())
        self.refuse = refuse

    def post(self, url, form, headers):
        if any(url.split("?")[0].endswith(p) for p in self.refuse):
            return 500, "boom"
        return self.inner.post(url, form, headers)


def in_process_load(app, refuse: tuple[str, ...] = (), calls: int = 3) -> load.LoadReport:
    mix = [(load.load(REPORT_LOSS), 1)]
    target = runner.Target(app, "http://127.0.0.1:8000")
    return load.run_load(target, mix, calls=calls, concurrency=1, out=io.StringIO(),
                         transport=lambda: Refusing(app, refuse))


def test_a_load_in_process_passes_and_keeps_latencies_packed(app):
    report = in_process_load(app)
    assert (report.calls, report.failed_calls, report.error_count, report.errors) == (3, 0, 0, [])
    assert isinstance(report.latencies_ms, array) and len(report.latencies_ms) == report.requests > 3 * 3


def test_a_failed_call_counts_as_one_error(app):
    report = in_process_load(app, refuse=("/voice/step",))
    assert (report.calls, report.failed_calls, report.error_count) == (3, 3, 3)
    assert report.lines()[3] == "errors: 3 (3 calls failed)"
    assert len(report.errors) == 3 and "answered 500" in report.errors[0]


def test_a_status_callback_answered_with_500_is_an_error_of_its_own(app):
    report = in_process_load(app, refuse=("/voice/status",))
    assert (report.failed_calls, report.bad_status_callbacks, report.error_count) == (0, 3, 3)
    assert report.errors[0].endswith("the status callback answered 500")


def test_with_an_end_mark_the_ledger_is_checked_after_it_and_a_failed_check_fails_its_call(app, monkeypatch):
    heard: list[str] = []
    checked: list[bool] = []  # for each ledger check: whether the end mark had come
    check_ledger = runner.check_ledger
    monkeypatch.setattr(load.runner, "check_ledger",
                        lambda *a: checked.append(bool(heard)) or check_ledger(*a))

    def done() -> None:  # the benchmark's end mark: then the ledger changes under the checks still to come
        with app.extensions["sessions"]() as s, s.begin():
            heard.append(s.scalars(select(Card.status)).all()[0])
            s.execute(update(Card).values(status="normal"))

    target = runner.Target(app, "http://127.0.0.1:8000")
    report = load.run_load(target, [(load.load(REPORT_LOSS), 1)], calls=2, concurrency=1, out=io.StringIO(),
                           transport=lambda: Refusing(app, ()), done=done)
    assert heard == ["verbal_loss"]  # the calls were over, their checks not yet run
    assert checked == [True, True]  # each call's ledger checked once, and only after the end mark
    assert (report.calls, report.failed_calls, report.error_count) == (2, 2, 2)
    assert "at the end: card" in report.errors[0] and "expected status verbal_loss, is normal" in report.errors[0]


def test_with_an_end_mark_it_is_called_once_and_calls_that_left_the_ledger_right_pass(app):
    done_calls: list[int] = []
    target = runner.Target(app, "http://127.0.0.1:8000")
    report = load.run_load(target, [(load.load(REPORT_LOSS), 1)], calls=2, concurrency=1, out=io.StringIO(),
                           transport=lambda: Refusing(app, ()), done=lambda: done_calls.append(1))
    assert (report.calls, report.failed_calls, done_calls) == (2, 0, [1])


class Slow(Refusing):
    """The app in-process, each request a little slow (real time: the load's threads run on it)."""

    def post(self, url, form, headers):
        time.sleep(0.02)
        return super().post(url, form, headers)


def test_a_load_for_a_time_stops_placing_calls_then_and_lets_the_last_ones_finish(app):
    mix = [(load.load(REPORT_LOSS), 1)]
    target = runner.Target(app, "http://127.0.0.1:8000")
    report = load.run_load(target, mix, calls=60, concurrency=2, out=io.StringIO(), seconds=0.5,
                           transport=lambda: Slow(app, ()))
    # Six requests of at least 20 ms a call, two calls at once: at most ten calls start in 0.5 s.
    assert 2 <= report.calls <= 10 and report.error_count == 0
    assert report.requests == len(report.latencies_ms) == report.calls * 6  # whole calls only


class Ledger:
    """A stand-in target that notes how many personalised scenarios are alive at each fixture load."""

    def __init__(self, made: list[weakref.ref]):
        self.made = made
        self.loads: list[tuple[int, int]] = []  # (cardholders loaded, scenarios alive)

    def load_fixtures(self, holders):
        gc.collect()
        self.loads.append((len(holders), sum(ref() is not None for ref in self.made)))


def test_fixtures_for_many_calls_are_loaded_in_batches_without_keeping_every_call(monkeypatch):
    made: list[weakref.ref] = []
    personalise = load.personalise

    def tracked(sc, n):
        out = personalise(sc, n)
        made.append(weakref.ref(out))
        return out

    placed: list[int] = []
    monkeypatch.setattr(load, "personalise", tracked)
    monkeypatch.setattr(load.runner, "run", lambda target, sc, transport, **_: placed.append(1) or runner.Result(sc))
    target = Ledger(made)
    report = load.run_load(target, [(load.load(REPORT_LOSS), 1)], calls=450, concurrency=4, out=io.StringIO())
    assert [n for n, _ in target.loads] == [200, 200, 50]
    assert max(live for _, live in target.loads) <= load.FIXTURE_BATCH
    assert report.calls == len(placed) == 450


def test_a_personalised_id_is_keyed_in_place_of_the_fixtures_and_an_x_as_star():
    from ivr.sim.load import personalise
    from ivr.sim.scenario import parse

    sc = parse(Path("x.yaml"), 'cardholders:\n  - id_number: "370202198503120025"\n    pin: "135790"\n'
                               'steps:\n  - press: "1"\n  - press: "370202198503120025#135790#"\n')
    plain, with_x = personalise(sc, 0), personalise(sc, 1)  # call 1's fresh ID ends in X
    holder = plain.cardholders[0]["id_number"]
    assert holder != "370202198503120025" and holder[17] != "X"
    assert plain.steps[-1].value == holder + "#135790#"
    holder = with_x.cardholders[0]["id_number"]
    assert holder.endswith("X")
    assert with_x.steps[-1].value == holder[:17] + "*#135790#"


class InFlight(Refusing):
    """The app in-process, counting the calls between their greeting and their status callback."""

    def __init__(self, app, counter: dict[str, int], lock: threading.Lock):
        super().__init__(app, ())
        self.counter, self.lock = counter, lock

    def post(self, url, form, headers):
        path = url.split("?")[0]
        with self.lock:
            if path.endswith("/voice"):
                self.counter["now"] += 1
                self.counter["most"] = max(self.counter["most"], self.counter["now"])
            elif path.endswith("/voice/status"):
                self.counter["now"] -= 1
        return super().post(url, form, headers)


def test_a_paced_load_waits_before_each_input_and_holds_every_call_in_flight_at_once(app, monkeypatch):
    counter, lock = {"now": 0, "most": 0}, threading.Lock()
    waits: list[float] = []
    sleep = time.sleep
    monkeypatch.setattr(load.time, "sleep", lambda s: waits.append(s) or sleep(s))  # really waits, noted
    target = runner.Target(app, "http://127.0.0.1:8000")
    report = load.run_load(target, [(load.load(REPORT_LOSS), 1)], calls=12, concurrency=12, out=io.StringIO(),
                           pace=0.2, transport=lambda: InFlight(app, counter, lock))
    assert (report.calls, report.error_count) == (12, 0)
    # Each call starts within one pace, then waits before each of its four inputs (the menu key, the
    # ID, the PIN, the confirmation) 0.1–0.3 s; the greeting and the status callback go at once.
    assert len(waits) == 12 * (1 + 4)
    assert sum(0.1 <= w <= 0.3 for w in waits) >= 12 * 4 and max(waits) <= 0.3
    assert counter["most"] == 12  # all twelve calls in flight together, each waiting on its caller


def test_the_pace_is_jittered_half_either_way_and_only_inputs_wait(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(load.time, "sleep", waits.append)
    sent: list[str] = []

    class Echo:
        def post(self, url, form, headers):
            sent.append(url)
            return 200, "<Response/>"

    paced = load.Paced(Echo(), 5.0, random.Random(1))
    paced.post("http://h/voice", {"CallSid": "CA1"}, {})
    paced.post("http://h/voice/step?t=1", {"Digits": "1"}, {})
    paced.post("http://h/voice/step?t=2", {"SpeechResult": "挂失"}, {})
    paced.post("http://h/voice/step?t=3&e=silence", {}, {})
    paced.post("http://h/voice/status", {"CallStatus": "completed"}, {})
    assert len(sent) == 5 and len(waits) == 3  # the greeting and the status callback at once
    assert all(2.5 <= w <= 7.5 for w in waits)
    many = [paced.wait() for _ in range(2000)]
    assert 2.5 <= min(many) < 2.6 and 7.4 < max(many) <= 7.5 and 4.9 < sum(many) / len(many) < 5.1


def test_sim_load_takes_pace_and_a_bare_pace_means_5_seconds(app, monkeypatch):
    seen: list[float | None] = []
    monkeypatch.setattr(load, "run_load", lambda *a, **kw: seen.append(kw["pace"]) or load.LoadReport())
    runner_cli = app.test_cli_runner()
    for args, expected in ((["--pace", "2.5"], 2.5), (["--pace"], 5.0), ([], None)):
        result = runner_cli.invoke(args=["sim", "load", "--url", "http://127.0.0.1:9", *args])
        assert result.exit_code == 0, result.output
        assert seen[-1] == expected
