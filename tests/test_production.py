"""Production shape: channels acting at once on shared cards, several servers, the expiry job."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from ivr import create_app
from ivr.sim.phone import HttpTransport, Phone
from models import services
from models.cards import Actor, Card, CardRuleError, LossPolicy, holder_by_id_number
from models.clock import utcnow
from models.identity import check_char
from models.ledger_io import load_rows, rows_from
from models.storage.db import create_schema
from tests.support import ON_POSTGRES, PIN, free_port, fresh_database

ROOT = Path(__file__).resolve().parent.parent
POLICY = LossPolicy(verbal_valid_days=7)
PUBLIC = "https://ivr.voice.turns.example"  # the load balancer's address, never resolved: the test maps it


def ids(n: int) -> list[str]:
    """n made-up valid ID numbers (address code 370299 is no district)."""
    out = []
    for i in range(n):
        body = f"37029919900101{i:03d}"
        out.append(body + check_char(body))
    return out


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """An app on a fresh database, real time, secrets set: what every host of a deployment has."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "prod-token")
    monkeypatch.setenv("IVR_PIN_KEY", "prod-pin-key")
    monkeypatch.setenv("IVR_SECRET_KEY", "prod-secret")
    monkeypatch.delenv("IVR_CONFIG", raising=False)
    with fresh_database(tmp_path, "shared") as url:
        app = create_app({"database_url": url, "hotlines": {"numbers": {"+8653212333": {"name": "12333",
                                                                                       "hours": "always"}}}})
        create_schema(app.extensions["engine"])
        yield app, url
        app.extensions["engine"].dispose()


def test_concurrent_channels_never_lose_an_update_and_keep_every_history_a_valid_chain(shared):
    app, _ = shared
    sessions, settings = app.extensions["sessions"], app.extensions["settings"]
    holders = ids(10)
    with sessions() as s, s.begin():
        load_rows(s, rows_from([dict(id_number=h, name="并发", card_number=f"CC{i:04d}", status="normal", pin=PIN,
                                     mobile="13800000001", bank="", applied_on="2024-01-01")
                                for i, h in enumerate(holders)]), key=settings.pin_key, now=utcnow(), policy=POLICY)
        targets = [(holder_by_id_number(s, h).id, holder_by_id_number(s, h).cards[0].id) for h in holders]
    changes = {card_id: 0 for _, card_id in targets}
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = time.monotonic() + 4

    def channel(seed: int) -> None:
        rng = random.Random(seed)
        actors = [Actor("ivr", call_sid=f"CA{seed}"), Actor("agent", who=f"agent-{seed}"), Actor("bank", who="teller")]
        for _ in range(150):
            if time.monotonic() > stop:
                break
            holder_id, card_id = rng.choice(targets)
            op = rng.choice(["loss", "release", "expire", "mobile"])
            try:
                with sessions() as s, s.begin():
                    if op == "loss":
                        services.report_verbal_loss(s, holder_id, card_id, now=utcnow(), actor=rng.choice(actors),
                                                    policy=POLICY)
                        done = 1
                    elif op == "release":
                        services.release_verbal_loss(s, holder_id, card_id, now=utcnow(), actor=rng.choice(actors),
                                                     policy=POLICY)
                        done = 1
                    elif op == "expire":
                        done = services.expire_due(s, now=utcnow() + timedelta(days=8), policy=POLICY)
                        card_id = None
                    else:
                        services.change_mobile(s, holder_id, f"1390000{rng.randint(1000, 9999)}", now=utcnow(),
                                               actor=rng.choice(actors))
                        done = 0
                with lock:
                    if card_id is not None:
                        changes[card_id] += done
                    else:
                        changes["expired"] = changes.get("expired", 0) + done
            except CardRuleError:
                pass
            except BaseException as err:  # noqa: BLE001 (reported below)
                errors.append(err)

    # 32 channels on PostgreSQL; SQLite serialises every unit of work, so fewer keep within its busy timeout.
    threads = [threading.Thread(target=channel, args=(i,)) for i in range(32 if ON_POSTGRES else 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total_rows = 0
    with sessions() as s:
        for _, card_id in targets:
            card = s.get(Card, card_id)
            rows = card.events
            for before, after in pairwise(rows):
                assert after.status_before == before.status_after, f"card {card_id}: left a status it was not in"
            assert rows[-1].status_after == card.status
            total_rows += len(rows) - 1  # the import row aside
            assert len(rows) - 1 - sum(1 for r in rows if r.channel == "system") == changes[card_id]
    assert total_rows > 0  # the channels did change cards: the checks above had rows to check
    assert total_rows == sum(changes.values())



def gunicorn(url: str, cfg: Path) -> tuple[subprocess.Popen, str]:
    """Start one more gunicorn host on the shared database; return it and its base URL."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "TWILIO_AUTH_TOKEN": "prod-token", "IVR_PIN_KEY": "prod-pin-key",
           "IVR_SECRET_KEY": "prod-secret", "IVR_CONFIG": str(cfg)}
    log = open(cfg.parent / f"gunicorn-{port}.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-w", "2", "-b", f"127.0.0.1:{port}",
                             "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError((cfg.parent / f"gunicorn-{port}.log").read_text())


class EachServerInTurn:
    """Sends each webhook of a call to the next server (like a load balancer with no stickiness)."""

    def __init__(self, bases: list[str]):
        self.bases, self.http, self.sent = bases, HttpTransport(), []

    def post(self, url, form, headers):
        base = self.bases[len(self.sent) % len(self.bases)]
        self.sent.append(base)
        path = url.split("://", 1)[1].split("/", 1)[1]
        return self.http.post(f"{base}/{path}", form, headers)


def test_two_servers_on_one_database_answer_one_call_in_turn(shared, tmp_path):
    import yaml

    app, url = shared
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    cfg["hotlines"]["numbers"]["+8653212333"]["hours"] = "always"
    cfg["twilio"]["public_base_url"] = PUBLIC  # behind the load balancer, both sign-check one address
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    holder = ids(1)[0]
    with app.extensions["sessions"]() as s, s.begin():
        load_rows(s, rows_from([dict(id_number=holder, name="两台", card_number="TWO0001", status="normal", pin=PIN,
                                     mobile="", bank="", applied_on="")]),
                  key=app.extensions["settings"].pin_key, now=utcnow(), policy=POLICY)
    servers = [gunicorn(url, cfg_path) for _ in range(2)]
    try:
        transport = EachServerInTurn([base for _, base in servers])
        # The URL Twilio signs is one public address; the load balancer sends it to either host.
        phone = Phone(transport, "prod-token", base_url=PUBLIC, catalogue=app.extensions["catalogue"])
        phone.dial().press("1").press(holder + "#").press(PIN + "#").press("1")
        assert phone.prompts == ["loss.done", "loss.result_menu", "keys.agent_back"]
        phone.hang_up()
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=10)
    with app.extensions["sessions"]() as s:
        card = s.scalars(select(Card).where(Card.card_number == "TWO0001")).one()
        assert card.status == "verbal_loss"
        assert [(e.status_after, e.channel) for e in card.events] == [("normal", "import"), ("verbal_loss", "ivr")]


def test_the_expiry_job_lapses_reports_once_even_run_on_several_hosts_at_once(shared):
    app, _ = shared
    sessions, settings = app.extensions["sessions"], app.extensions["settings"]
    holders = ids(30)
    with sessions() as s, s.begin():
        load_rows(s, rows_from([dict(id_number=h, name="到期", card_number=f"EX{i:04d}", status="verbal_loss", pin="",
                                     mobile="", bank="", applied_on="") for i, h in enumerate(holders)]),
                  key=settings.pin_key, now=utcnow(), policy=POLICY)
    lapsed: list[int] = []

    def host() -> None:
        total = 0
        while True:
            with sessions() as s, s.begin():
                n = services.expire_due(s, now=utcnow() + timedelta(days=8), policy=POLICY, batch=7)
            total += n
            if n == 0:
                break
        lapsed.append(total)

    threads = [threading.Thread(target=host) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(lapsed) == 30
    with sessions() as s:
        cards = s.scalars(select(Card)).all()
        assert {c.status for c in cards} == {"normal"}
        assert all([e.channel for e in c.events] == ["import", "system"] for c in cards)


def test_ledger_expire_is_a_command(runner, ledger, clock):
    from tests.support import ALICE, card_of

    ledger.add(ALICE, status="verbal_loss")
    assert "0 verbal loss reports lapsed" in runner.invoke(args=["ledger", "expire"]).output
    clock.tick(timedelta(days=7))
    assert "1 verbal loss reports lapsed" in runner.invoke(args=["ledger", "expire"]).output
    assert ledger.history(card_of(ALICE))[-1][:3] == ("verbal_loss", "normal", "system")


@pytest.mark.skipif(not ON_POSTGRES, reason="TEST_DATABASE_URL names no PostgreSQL server")
def test_the_suite_really_runs_on_postgresql(app):
    assert app.extensions["engine"].dialect.name == "postgresql"
