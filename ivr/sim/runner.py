"""Run scenarios: put the fixtures in the ledger, place the call, check what was heard and done."""
from __future__ import annotations

import dataclasses
import difflib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from xml.etree import ElementTree as ET

from flask import Flask
from freezegun import freeze_time
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ivr.sim.phone import Agent, CallFailed, ClientTransport, HttpTransport, Phone, Transport
from ivr.sim.scenario import Scenario, ScenarioError, Step
from models.calls import CallEvent
from models.cards import Actor, Card, CardEvent, Cardholder, holder_by_id_number
from models.clock import utcnow
from models.identity import id_key, pin_hash
from models.medical import MedicalRecord
from models.pins import PinGuard

FIXTURE = Actor("import", who="scenario")


@dataclass
class Result:
    """How one scenario went."""

    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    seconds: float = 0.0
    call_sid: str = ""

    @property
    def passed(self) -> bool:
        """Tell whether every expectation held."""
        return not self.failures


class Target:
    """Where calls go (the app in-process, or a server by URL) and the ledger fixtures go."""

    def __init__(self, app: Flask, url: str | None = None):
        self.app = app
        self.url = url.rstrip("/") if url else None
        self.sessions = app.extensions["sessions"]
        self.settings = app.extensions["settings"]
        self.catalogue = app.extensions["catalogue"]

    def phone(self, scenario: Scenario, transport: Transport | None = None) -> Phone:
        """Return a phone for the scenario's call."""
        transport = transport or (HttpTransport() if self.url else ClientTransport(self.app.test_client()))
        return Phone(transport, self.settings.auth_token, base_url=self.url or "http://127.0.0.1:8000",
                     caller=scenario.caller, dialled=scenario.dialled, catalogue=self.catalogue,
                     call_duration=None)  # the status callback reports the seconds really elapsed

    def agent(self, phone: Phone) -> Agent:
        """Return an agent's phone taking callers from the queues the scenario's caller waits in."""
        takers = self.settings.queue.takers
        return Agent(phone.transport, phone.auth_token, phone.queues, base_url=phone.base_url,
                     number=takers[0] if takers else self.settings.agent_dial, catalogue=self.catalogue)

    @contextmanager
    def leg(self, leg: str | None) -> Iterator[None]:
        """Answer the calls in-process as the hotline configured with that agent leg (None, or
        against a server: as configured)."""
        turns = self.app.extensions.get("turns")
        if leg is None or self.url or turns is None or turns.settings.agent_leg == leg:
            yield
            return
        before = turns.settings
        turns.settings = turns.renderer.settings = dataclasses.replace(before, agent_leg=leg)
        try:
            yield
        finally:
            turns.settings = turns.renderer.settings = before

    def load_fixtures(self, holders: list[dict[str, Any]]) -> None:
        """Make the ledger hold exactly these cardholders.

        A holder already there with the same ID number is reset in place, never deleted: its row
        stays, so the audit trail's rows about it (agents' actions, append-only) and its own history
        rows keep pointing at it. What a scenario depends on becomes the fixture's: name, mobile,
        PIN and its failures, the cards (a card number already in the ledger is reset in place too,
        moved to this holder if it was another's; the holder's cards the fixture does not list go),
        each card's history, and the medical account records.
        """
        key = self.settings.pin_key
        now = utcnow()
        with self.sessions() as s, s.begin():
            for h in holders:
                id_number = str(h["id_number"]).upper()
                holder = holder_by_id_number(s, id_number, lock=True)
                if holder is None:
                    holder = Cardholder(id_number=id_number, created_at=now)
                    s.add(holder)
                else:
                    s.execute(delete(MedicalRecord).where(MedicalRecord.holder_id == holder.id))
                holder.id_key = id_key(key, id_number)
                holder.name = h.get("name", "测试")
                holder.mobile = h.get("mobile")
                holder.pin_hash = pin_hash(key, id_number, str(h["pin"])) if h.get("pin") else None
                cards = h.get("cards") or []
                listed = {str(c["card_number"]) for c in cards}
                for old in [c for c in holder.cards if c.card_number not in listed]:
                    holder.cards.remove(old)  # delete-orphan: the card and its history go
                for c in cards:
                    self._card(s, holder, c, now)
                if h.get("medical"):
                    s.flush()  # the holder's id, for its medical account records
                    s.add_all(MedicalRecord(holder_id=holder.id, at=_moment(r["at"]), kind=r["kind"],
                                            amount_fen=r["amount_fen"], institution=r["institution"],
                                            balance_fen=r["balance_fen"]) for r in h["medical"])
                guard = s.get(PinGuard, holder.id_key) or PinGuard(id_key=holder.id_key)
                guard.failures = int(h.get("pin_failures", 0))
                guard.locked_at = now if guard.failures >= self.settings.pin.max_failures else None
                s.add(guard)

    def _card(self, s: Session, holder: Cardholder, c: dict[str, Any], now: datetime) -> Card:
        """Give the holder the fixture's card: a new one, or the one with that number reset in place
        (its status, dates and bank the fixture's, its history exactly the fixture's)."""
        number = str(c["card_number"])
        card = s.scalars(select(Card).where(Card.card_number == number)).first()
        if card is None:
            card = Card(card_number=number)
            holder.cards.append(card)
        else:
            if card.holder is not holder:
                card.holder = holder  # another holder's card: now this one's
            card.events.clear()  # delete-orphan: the history becomes the fixture's
        card.status, card.bank, card.applied_on = c["status"], c.get("bank"), _date(c.get("applied_on"))
        card.status_before_loss = card.loss_reported_at = card.loss_expires_at = None
        card.loss_scope = card.production_stage = None
        history = c.get("history")
        if history is not None:  # given, even empty: exactly these rows (a card with no history)
            before = None
            for row in history:
                card.events.append(CardEvent(at=_moment(row.get("at")) or now, status_before=before,
                                             status_after=row["status"], channel=row.get("channel", "import"),
                                             reason="scenario fixture"))
                before = row["status"]
        else:
            card.open(c["status"], now=now, actor=FIXTURE, reason="scenario fixture", policy=self.settings.loss)
        if c.get("loss_expires_at"):
            card.loss_expires_at = _moment(c["loss_expires_at"])
            card.status_before_loss = c.get("status_before_loss") or "normal"
            card.loss_reported_at = card.loss_reported_at or now
        return card

    def paths(self, call_sids: list[str]) -> list[list[str]]:
        """Return the state paths the calls' recorded webhooks passed through."""
        with self.sessions() as s:
            q = select(CallEvent.path).where(CallEvent.call_sid.in_(call_sids))
            return [p for p in s.scalars(q) if p]


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _moment(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"date-time without a UTC offset: {value}")
    return moment


def run(target: Target, sc: Scenario, transport: Transport | None = None, *, ledger_later: bool = False) -> Result:
    """Place the scenario's call and check every expectation.

    ledger_later: leave out the checks of what the ledger says at the end, for the caller to run
    with `check_ledger` once the calls are over (`ivr.sim.load`: a benchmark's measure then counts
    the hotline's database work, not the simulator's reads)."""
    result = Result(sc)
    started = time.perf_counter()
    clock = freeze_time(sc.at) if sc.at is not None and target.url is None else None
    if clock:
        clock.start()
    phone = target.phone(sc, transport)
    result.call_sid = phone.call_sid
    leg = target.leg(sc.agent_leg)
    leg.__enter__()
    try:
        if sc.cardholders:
            target.load_fixtures(sc.cardholders)
        for step in sc.steps:
            act(phone, step, target)
            result.failures += [f"line {step.line} ({describe(step)}): {m}" for m in check_step(phone, step)]
        if phone.pending_keys:
            result.failures.append(f"at the end: keys typed but never used by the call: {phone.pending_keys!r}")
        end_checks = check_end(target, phone, sc, ledger=not ledger_later)
        if not phone.ended:
            phone.hang_up()
        result.failures += [f"at the end: {m}" for m in end_checks]
    except CallFailed as err:
        result.failures.append(f"the call broke: {err}")
    except Exception as err:  # a fixture or transport problem: report it, run the next scenario
        result.failures.append(f"{type(err).__name__}: {err}")
    finally:
        leg.__exit__(None, None, None)
        if clock:
            clock.stop()
    result.transcript = phone.transcript
    result.seconds = time.perf_counter() - started
    return result


def describe(step: Step) -> str:
    """Say a step the way the scenario file does."""
    if step.kind in ("dial", "hangup"):
        return step.kind
    if step.kind == "silence":
        return "silence"
    value = step.value[0] if step.kind == "speak" else step.value
    return f"{step.kind} {value}"


def act(phone: Phone, step: Step, target: Target | None = None) -> None:
    """Do what the step says."""
    if step.kind == "dial":
        phone.dial()
    elif step.kind == "press":
        phone.press(step.value)
    elif step.kind == "speak":
        phone.speak(*step.value)
    elif step.kind == "silence":
        for _ in range(step.value if isinstance(step.value, int) and step.value > 1 else 1):
            phone.silence()
    elif step.kind == "record":
        phone.record(int(step.value or 5))
    elif step.kind == "agent":
        phone.agent_leg_ends(str(step.value or "completed"))
    elif step.kind == "queue":
        if step.value in (None, "bridged") and phone.queued is not None and phone.queued.bridged is not None:
            phone.bridge_ends()  # an agent took the caller: the agent hangs up
        else:
            phone.leave_queue(str(step.value or "bridged"))
    elif step.kind == "wait":
        phone.wait(float(step.value))
    elif step.kind == "agent_takes":
        if target is None:
            raise CallFailed("agent_takes: no hotline to take the caller from")
        agent = target.agent(phone)
        if agent.take(step.value) is not phone:
            raise CallFailed("the agent did not get this caller from the queue")
        phone.agent_heard.extend(agent.heard)
    elif step.kind == "hangup":
        phone.hang_up()


def check_step(phone: Phone, step: Step) -> list[str]:
    """Compare what was heard after a step with what the scenario expects."""
    e, problems = step.expect, []
    if "prompts" in e and phone.prompts != list(e["prompts"]):
        problems.append(f"expected prompts {list(e['prompts'])}, heard {phone.prompts}")
    for pid in e.get("prompts_include", []):
        if pid not in phone.prompts:
            problems.append(f"expected to hear {pid}, heard {phone.prompts}")
    if "heard" in e and str(e["heard"]) not in phone.text():
        problems.append(f"expected to hear {e['heard']!r}, heard {phone.text()!r}")
    if "heard_regex" in e and not re.search(str(e["heard_regex"]), phone.text()):
        problems.append(f"expected to hear /{e['heard_regex']}/, heard {phone.text()!r}")
    if "text" in e:
        want = e["text"] if isinstance(e["text"], list) else [e["text"]]
        got = [h.text for h in phone.last]
        if want != got:
            diff = "\n".join(difflib.unified_diff(want, got, "expected", "heard now", lineterm="", n=1))
            problems.append("what the caller hears changed:\n" + diff)
    for flag in ("transferred", "ended"):
        if flag in e and bool(getattr(phone, flag)) != bool(e[flag]):
            problems.append(f"expected {flag}={e[flag]}, was {getattr(phone, flag)}")
    if "agent_heard" in e:
        agent_text = "".join(h.text for h in phone.agent_heard)
        if str(e["agent_heard"]) not in agent_text:
            problems.append(f"expected the agent to hear {e['agent_heard']!r}, heard {agent_text!r}")
    return problems


def check_end(target: Target, phone: Phone, sc: Scenario, *, ledger: bool = True) -> list[str]:
    """Check the final expectations: how the call ended and (ledger) what the ledger now says."""
    e, problems = sc.expect, []
    for flag in ("transferred", "ended"):
        if flag in e and bool(getattr(phone, flag)) != bool(e[flag]):
            problems.append(f"expected {flag}={e[flag]}, was {getattr(phone, flag)}")
    for pid in e.get("prompts_heard", []):
        if pid not in phone.all_prompts:
            problems.append(f"expected {pid} to be heard during the call")
    return problems + (check_ledger(target, phone.call_sid, sc) if ledger else [])


def checks_ledger(sc: Scenario) -> bool:
    """Tell whether a scenario expects anything of the ledger at the end."""
    return bool(sc.expect.get("cards") or sc.expect.get("history"))


def check_ledger(target: Target, call_sid: str, sc: Scenario) -> list[str]:
    """Check what the ledger says of the scenario's cards after its call: status, last history rows."""
    e, problems = sc.expect, list[str]()
    if not checks_ledger(sc):
        return problems
    with target.sessions() as s:
        for number, want in (e.get("cards") or {}).items():
            card = s.scalars(select(Card).where(Card.card_number == str(number))).first()
            if card is None:
                problems.append(f"card {number} is not in the ledger")
            elif card.status != want:
                problems.append(f"card {number}: expected status {want}, is {card.status}")
        for number, rows in (e.get("history") or {}).items():
            card = s.scalars(select(Card).where(Card.card_number == str(number))).first()
            got = [_row(ev, call_sid) for ev in (card.events if card else [])][-len(rows):]
            want = [dict(r) for r in rows]
            if [{k: g.get(k) for k in w} for g, w in zip(got, want, strict=False)] != want or len(got) != len(want):
                problems.append(f"card {number}: expected last history rows {want}, found {got}")
    return problems


def _row(ev: CardEvent, call_sid: str) -> dict[str, Any]:
    return {"status": ev.status_after, "before": ev.status_before, "channel": ev.channel,
            "this_call": ev.call_sid == call_sid, "reason": ev.reason}


def junit(results: list[Result], path: str, broken: list[ScenarioError] | tuple[ScenarioError, ...] = ()) -> None:
    """Write the results as a JUnit XML report; files that could not be read count as errors."""
    suite = ET.Element("testsuite", name="scenarios", tests=str(len(results) + len(broken)),
                       failures=str(sum(not r.passed for r in results)), errors=str(len(broken)),
                       time=f"{sum(r.seconds for r in results):.3f}")
    for err in broken:
        case = ET.SubElement(suite, "testcase", classname=err.path, name=err.path, time="0.000")
        ET.SubElement(case, "error", message=str(err), type="ScenarioError").text = str(err)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=str(r.scenario.path), name=r.scenario.name,
                             time=f"{r.seconds:.3f}")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.failures[0].splitlines()[0])
            failure.text = "\n".join(r.failures) + "\n\n" + "\n".join(r.transcript)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
