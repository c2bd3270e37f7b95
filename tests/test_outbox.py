"""SMS notifications: queued with the ledger change, sent by the worker once, through Twilio's own
HTTP-client seam (a fake `twilio.http.HttpClient`), never over the network."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from datetime import timedelta
from email.utils import format_datetime
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import select
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ivr import create_app
from ivr.commands import outbox as outbox_cli
from models import services
from models.cards import Actor, CardRuleError, holder_by_id_number
from models.clock import utcnow
from models.notifications import outbox as ob
from models.notifications import sender
from models.notifications.outbox import OutboxMessage
from models.storage.db import create_schema
from tests.support import ALICE, BOB, PIN_KEY, TOKEN, card_of, verified

ACCOUNT = "AC" + "0" * 31 + "1"
SENDER = "+8653212333"
MOBILE = "+8613800000001"  # the ledger helper's mobile for every holder
NATIONAL = "13800000001"
AGENT = Actor("agent", who="agent-7")
SMS = {"from": SENDER, "max_attempts": 3, "base_delay": 60, "max_delay": 600, "timeout": 5, "lease": 60,
       "poll": 0.01}


class FakeHttpClient(HttpClient):
    """Twilio's REST API as far as the worker uses it: create a message, list messages.

    `plan` scripts each POST: 201 (accepted), 429/500/400 (an error answer; "500+" and "timeout+"
    mean Twilio created the message but the answer was lost), timeout, connect (never connected).
    """

    def __init__(self, plan: list[str] | None = None, delay: float = 0.0):
        super().__init__(logging.getLogger("tests.fake_twilio"), False, None)
        self.plan = deque(plan or [])
        self.delay = delay
        self.requests: list[dict] = []
        self.messages: list[dict] = []  # what Twilio holds
        self.lock = threading.Lock()

    @property
    def posts(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST"]

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):
        with self.lock:
            self.requests.append(dict(method=method, uri=uri, params=dict(params or {}), data=dict(data or {}),
                                      auth=auth))
            outcome = self.plan.popleft() if method == "POST" and self.plan else "201"
        assert uri.startswith(f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
        if method == "GET":
            with self.lock:
                found = [m for m in reversed(self.messages) if m["to"] == params.get("To")]
            return Response(200, json.dumps({"messages": found, "next_page_uri": None, "page": 0,
                                             "page_size": 50, "uri": uri}))
        time.sleep(self.delay)
        if outcome in ("201", "500+", "timeout+"):
            with self.lock:
                sid = f"SM{len(self.messages) + 1:032x}"
                message = {"sid": sid, "account_sid": ACCOUNT, "to": data["To"], "from": data.get("From"),
                           "body": data["Body"], "status": "queued", "direction": "outbound-api",
                           "date_created": format_datetime(utcnow(), usegmt=True)}
                self.messages.append(message)
            if outcome == "201":
                return Response(201, json.dumps(message))
            outcome = outcome[:-1]
        if outcome == "timeout":
            raise requests.exceptions.ReadTimeout("read timed out")
        if outcome == "connect":
            raise requests.exceptions.ConnectTimeout("connect timed out")
        status = int(outcome)
        text = {400: f"The 'To' number {data['To']} is not a valid phone number.", 401: "Authenticate",
                429: "Too Many Requests", 500: "Internal Server Error"}[status]
        return Response(status, json.dumps({"code": {400: 21211, 401: 20003, 429: 20429, 500: 20500}[status],
                                            "message": text, "status": status}))


@pytest.fixture
def app(database_url, monkeypatch, clock):
    """The app of conftest, with an SMS sender and short retry timings."""
    for name in ("DATABASE_URL", "IVR_CONFIG", "TWILIO_SMS_FROM", "TWILIO_MESSAGING_SERVICE_SID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("IVR_PIN_KEY", PIN_KEY)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
    app = create_app({"database_url": database_url, "sms": SMS})
    app.config["TESTING"] = True
    create_schema(app.extensions["engine"])
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def fake(monkeypatch):
    """The fake Twilio the `outbox send` command talks to."""
    fake = FakeHttpClient()
    monkeypatch.setattr(outbox_cli, "make_http_client", lambda timeout: fake)
    return fake


def messages(app) -> list[OutboxMessage]:
    with app.extensions["sessions"]() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def ids_of(app, id_number: str) -> tuple[int, int]:
    with app.extensions["sessions"]() as s:
        holder = holder_by_id_number(s, id_number)
        return holder.id, holder.cards[0].id


def report(app, id_number: str = ALICE, **kw) -> None:
    """Report a card lost the way the agent console does: the shared service, one unit of work."""
    holder_id, card_id = ids_of(app, id_number)
    with app.extensions["sessions"]() as s, s.begin():
        services.report_verbal_loss(s, holder_id, card_id, now=utcnow(), actor=AGENT,
                                    policy=app.extensions["settings"].loss, **kw)


def deliver(app, client, **kw) -> sender.Round:
    return sender.deliver(app.extensions["sessions"], client, app.extensions["settings"].sms, worker="test", **kw)


def twilio(fake: FakeHttpClient) -> Client:
    return Client(ACCOUNT, TOKEN, http_client=fake)


# --- queued with the change -----------------------------------------------------------------------

def test_a_loss_report_by_phone_queues_exactly_one_text_with_the_change(call, ledger, app):
    ledger.add(ALICE)
    verified(call).press("1")
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    [m] = messages(app)
    assert (m.kind, m.to, m.status, m.attempts, m.holder_id) == ("loss_reported", MOBILE, "pending", 0,
                                                                 ids_of(app, ALICE)[0])
    assert m.body == ("【青岛人社】您尾号0025的社会保障卡已于2026年11月30日10:00办理口头挂失，"
                      "有效期至2026年12月7日10:00。"
                      "请在有效期内由本人携带有效身份证件到社保卡合作银行网点办理正式挂失和补卡。"
                      "如非本人操作，请立即致电12333。")
    assert m.created_at == ledger.card(card_of(ALICE)).events[-1].at  # written with the change


def test_the_console_path_queues_one_text_per_change_and_the_release_its_own(app, ledger):
    ledger.add(ALICE)
    report(app)
    holder_id, card_id = ids_of(app, ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        services.release_verbal_loss(s, holder_id, card_id, now=utcnow() + timedelta(hours=1), actor=AGENT,
                                     policy=app.extensions["settings"].loss)
    assert [(m.kind, m.to) for m in messages(app)] == [("loss_reported", MOBILE), ("loss_released", MOBILE)]
    assert messages(app)[1].body == ("【青岛人社】您尾号0025的社会保障卡已于2026年11月30日11:00解除口头挂失。"
                                     "如非本人操作，请立即致电12333。")


def test_the_local_time_in_a_text_comes_from_the_time_zone_passed(app, ledger):
    ledger.add(ALICE)
    report(app, tz=ZoneInfo("UTC"))
    assert "已于2026年11月30日02:00办理口头挂失，有效期至2026年12月7日02:00" in messages(app)[0].body


def test_a_rolled_back_change_queues_nothing(app, ledger):
    ledger.add(ALICE)
    holder_id, card_id = ids_of(app, ALICE)
    with app.extensions["sessions"]() as s:
        s.begin()
        services.report_verbal_loss(s, holder_id, card_id, now=utcnow(), actor=AGENT,
                                    policy=app.extensions["settings"].loss)
        assert s.scalars(select(OutboxMessage)).all()  # queued in the unit of work …
        s.rollback()  # … and gone with it
    assert messages(app) == []
    assert ledger.card(card_of(ALICE)).status == "normal"


def test_a_refused_change_queues_nothing(app, ledger):
    ledger.add(ALICE, status="cancelled")
    with pytest.raises(CardRuleError):
        report(app)
    assert messages(app) == []


def test_a_holder_without_a_mobile_gets_no_text(app, ledger):
    ledger.add(ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        holder_by_id_number(s, ALICE).mobile = None
    report(app)
    assert ledger.card(card_of(ALICE)).status == "verbal_loss"
    assert messages(app) == []


def test_a_mobile_change_tells_the_new_number_and_the_old_one(app, ledger):
    ledger.add(ALICE)
    holder_id, _ = ids_of(app, ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        assert services.change_mobile(s, holder_id, "139 0000 5678", now=utcnow(), actor=AGENT) == "+8613900005678"
    new, old = messages(app)
    assert (new.kind, new.to) == ("mobile_changed", "+8613900005678")
    assert new.body == ("【青岛人社】您的社会保障卡联系手机已于2026年11月30日10:00变更为本号码。"
                        "如非本人操作，请立即致电12333。")
    assert (old.kind, old.to) == ("mobile_changed_old", MOBILE)
    assert "变更为尾号5678的号码" in old.body and "13900005678" not in old.body
    assert old.body.endswith("如非本人操作，请立即致电12333。")


def test_a_first_mobile_is_told_alone(app, ledger):
    ledger.add(ALICE)
    holder_id, _ = ids_of(app, ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        s.get(services.Cardholder, holder_id).mobile = None
    with app.extensions["sessions"]() as s, s.begin():
        services.change_mobile(s, holder_id, "13900005678", now=utcnow(), actor=AGENT)
    assert [(m.kind, m.to) for m in messages(app)] == [("mobile_changed", "+8613900005678")]


# --- the worker ----------------------------------------------------------------------------------

def test_the_worker_sends_a_queued_text_once_with_the_right_to_from_and_body(app, ledger, runner, fake):
    ledger.add(ALICE)
    report(app)
    result = runner.invoke(args=["outbox", "send", "--once"])
    assert result.exit_code == 0, result.output
    assert "1 sent" in result.output
    [post] = fake.posts
    assert post["data"] == {"To": MOBILE, "From": SENDER, "Body": messages(app)[0].body}
    assert post["auth"] == (ACCOUNT, TOKEN)
    [m] = messages(app)
    assert (m.status, m.attempts, m.provider_sid, m.sent_at) == ("sent", 1, fake.messages[0]["sid"], utcnow())
    again = runner.invoke(args=["outbox", "send", "--once"])
    assert again.exit_code == 0 and "0 sent" in again.output
    assert len(fake.posts) == 1
    assert "1 sent" in runner.invoke(args=["outbox", "status"]).output


def test_a_messaging_service_sends_in_place_of_a_number(app, ledger, fake, monkeypatch):
    ledger.add(ALICE)
    report(app)
    policy = sender.SmsPolicy(messaging_service_sid="MG" + "a" * 32, timeout=5, lease=60)
    sender.deliver(app.extensions["sessions"], twilio(fake), policy, worker="t")
    assert fake.posts[0]["data"]["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in fake.posts[0]["data"]


def test_a_throttled_send_is_retried_with_exponential_backoff_then_failed(app, ledger, clock):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient(["429", "429", "429"])
    client = twilio(fake)
    r = deliver(app, client)
    [m] = messages(app)
    assert (r.retrying, m.status, m.attempts) == (1, "pending", 1)
    assert m.next_attempt_at == utcnow() + timedelta(seconds=60) and "HTTP 429" in m.last_error
    assert deliver(app, client).handled == 0  # not due yet: nothing sent
    clock.tick(timedelta(seconds=60))
    deliver(app, client)
    [m] = messages(app)
    assert (m.status, m.attempts, m.next_attempt_at) == ("pending", 2, utcnow() + timedelta(seconds=120))
    clock.tick(timedelta(seconds=120))
    r = deliver(app, client)
    [m] = messages(app)
    assert (r.failed, m.status, m.attempts, m.sent_at) == (1, "failed", 3, None)
    clock.tick(timedelta(days=1))
    deliver(app, client)
    assert len(fake.posts) == 3


def test_a_5xx_is_checked_with_twilio_then_sent_again_when_twilio_never_created_it(app, ledger, clock):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient(["500", "201"])
    client = twilio(fake)
    r = deliver(app, client)
    [m] = messages(app)
    assert (r.unsure, m.status, m.attempts) == (1, "sending", 1)
    assert m.last_error.startswith("outcome unknown: HTTP 500")
    assert m.next_attempt_at == utcnow() + timedelta(seconds=60)
    assert deliver(app, client).handled == 0
    clock.tick(timedelta(seconds=60))
    r = deliver(app, client)
    assert [q["method"] for q in fake.requests] == ["POST", "GET", "POST"]
    assert fake.requests[1]["params"]["To"] == MOBILE
    [m] = messages(app)
    assert (r.sent, m.status, m.attempts, m.provider_sid) == (1, "sent", 2, fake.messages[0]["sid"])


@pytest.mark.parametrize("lost_answer", ["500+", "timeout+"])
def test_a_send_twilio_accepted_but_whose_answer_was_lost_is_never_sent_again(app, ledger, clock, lost_answer):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient([lost_answer])
    client = twilio(fake)
    assert deliver(app, client).unsure == 1
    clock.tick(timedelta(seconds=60))
    r = deliver(app, client)
    assert (r.sent, r.found) == (1, 1)
    [m] = messages(app)
    assert (m.status, m.provider_sid, m.attempts) == ("sent", fake.messages[0]["sid"], 1)
    assert len(fake.posts) == 1 and len(fake.messages) == 1


def test_a_timeout_counts_as_unknown_and_a_connect_failure_as_unsent(app, ledger, clock):
    ledger.add(ALICE)
    ledger.add(BOB)
    report(app)
    report(app, BOB)
    fake = FakeHttpClient(["timeout", "connect"])
    r = deliver(app, twilio(fake))
    first, second = messages(app)
    assert (r.unsure, r.retrying) == (1, 1)
    assert (first.status, second.status) == ("sending", "pending")
    assert "ReadTimeout" in first.last_error and "ConnectTimeout" in second.last_error


def test_an_invalid_number_fails_at_once_and_the_error_kept_is_masked(app, ledger):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient(["400"])
    r = deliver(app, twilio(fake))
    [m] = messages(app)
    assert (r.failed, m.status, m.attempts) == (1, "failed", 1)
    assert "error 21211" in m.last_error and "+86138****0001" in m.last_error and NATIONAL not in m.last_error


def test_a_refused_account_stops_the_worker_and_spends_no_attempt(app, ledger, runner, fake):
    ledger.add(ALICE)
    ledger.add(BOB)
    report(app)
    report(app, BOB)
    fake.plan.extend(["401"])
    result = runner.invoke(args=["outbox", "send", "--once"])
    assert result.exit_code == 1 and "Twilio refused the account or the sender" in result.output
    assert len(fake.posts) == 1  # the round stopped: the second message was not tried
    assert [(m.status, m.attempts) for m in messages(app)] == [("pending", 0), ("pending", 0)]
    assert "HTTP 401 error 20003" in messages(app)[0].last_error
    assert runner.invoke(args=["outbox", "send", "--once"]).exit_code == 0  # fixed: both go
    assert [(m.status, m.attempts) for m in messages(app)] == [("sent", 1), ("sent", 1)]


def test_5xx_until_max_attempts_fails_after_checking_each_time(app, ledger, clock):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient(["500", "500", "500"])
    client = twilio(fake)
    for _ in range(6):
        deliver(app, client)
        clock.tick(timedelta(seconds=600))
    [m] = messages(app)
    assert (m.status, m.attempts) == ("failed", 3)
    assert len(fake.posts) == 3 and fake.messages == []


def test_a_worker_that_dies_after_twilio_accepted_leaves_it_to_the_check_not_to_a_resend(app, ledger, clock):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient()
    client, sessions, policy = twilio(fake), app.extensions["sessions"], app.extensions["settings"].sms
    claimed = sender.claim_next(sessions, policy=policy, worker="doomed")
    sender._create(client, policy, claimed)  # Twilio accepts … and the worker dies before its commit
    assert deliver(app, client).handled == 0  # in flight until the lease ends: nobody touches it
    clock.tick(timedelta(seconds=policy.lease))
    r = deliver(app, client)
    assert r.found == 1
    [m] = messages(app)
    assert (m.status, m.provider_sid) == ("sent", fake.messages[0]["sid"])
    assert len(fake.posts) == 1


def test_a_worker_that_dies_before_sending_is_sent_once_after_the_lease(app, ledger, clock):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient()
    client, sessions, policy = twilio(fake), app.extensions["sessions"], app.extensions["settings"].sms
    sender.claim_next(sessions, policy=policy, worker="doomed")  # claimed, then the worker dies
    clock.tick(timedelta(seconds=policy.lease))
    assert deliver(app, client).sent == 1
    [m] = messages(app)
    assert (m.status, m.attempts) == ("sent", 2)
    assert len(fake.posts) == 1


def test_a_lookup_that_fails_never_leads_to_a_resend(app, ledger, clock):
    ledger.add(ALICE)
    report(app)
    fake = FakeHttpClient(["500"])
    client = twilio(fake)
    deliver(app, client)
    clock.tick(timedelta(seconds=60))
    original = fake.request

    def broken(method, uri, **kw):
        if method == "GET":
            return Response(503, json.dumps({"code": 20503, "message": "Service Unavailable", "status": 503}))
        return original(method, uri, **kw)

    fake.request = broken
    r = deliver(app, client)
    [m] = messages(app)
    assert (r.unsure, m.status) == (1, "sending") and "look-up failed" in m.last_error
    assert len(fake.posts) == 1


def test_four_workers_on_threads_never_send_the_same_message_twice(app):
    sessions = app.extensions["sessions"]
    with sessions() as s, s.begin():
        for i in range(40):
            ob.enqueue(s, to=f"+86139{i:08d}", body=f"【青岛人社】测试{i}", kind="loss_reported", holder_id=None,
                       now=utcnow())
    fake = FakeHttpClient(delay=0.005)
    policy = app.extensions["settings"].sms
    done: list[tuple[str, sender.Round]] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            client = twilio(fake)
            while (r := sender.deliver(sessions, client, policy, worker=name, batch=5)).handled:
                done.append((name, r))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(f"host{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    bodies = [p["data"]["Body"] for p in fake.posts]
    assert len(bodies) == 40 and len(set(bodies)) == 40
    assert sum(r.sent for _, r in done) == 40
    assert len({name for name, r in done if r.sent}) >= 2  # they really did share the work
    rows = messages(app)
    assert {m.status for m in rows} == {"sent"} and len({m.provider_sid for m in rows}) == 40
    assert all(m.attempts == 1 for m in rows)


def test_the_loop_keeps_sending_until_stopped(app, ledger):
    ledger.add(ALICE)
    ledger.add(BOB)
    report(app)
    fake = FakeHttpClient()
    stop = threading.Event()
    loop = threading.Thread(target=outbox_cli.run, args=(app.extensions["sessions"], twilio(fake),
                                                         app.extensions["settings"].sms),
                            kwargs=dict(worker="loop", batch=1, stop=stop))
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while len(fake.posts) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        report(app, BOB)  # queued while the worker polls
        while len(fake.posts) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive()
    assert [p["data"]["To"] for p in fake.posts] == [MOBILE, MOBILE]
    assert {m.status for m in messages(app)} == {"sent"}


# --- without credentials ----------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"])
def test_without_credentials_nothing_is_sent_and_the_command_says_so(app, ledger, runner, fake, monkeypatch,
                                                                      missing):
    ledger.add(ALICE)
    report(app)
    monkeypatch.delenv(missing)
    result = runner.invoke(args=["outbox", "send", "--once"])
    assert result.exit_code != 0
    assert f"{missing} not set" in result.output and "Nothing was sent" in result.output
    assert "1 message(s) wait in the outbox" in result.output
    assert fake.requests == []
    assert [m.status for m in messages(app)] == ["pending"]


def test_without_a_sender_nothing_is_sent(database_url, monkeypatch, clock, fake):
    monkeypatch.delenv("IVR_CONFIG", raising=False)
    monkeypatch.delenv("TWILIO_SMS_FROM", raising=False)
    monkeypatch.delenv("TWILIO_MESSAGING_SERVICE_SID", raising=False)
    for name, value in (("TWILIO_AUTH_TOKEN", TOKEN), ("TWILIO_ACCOUNT_SID", ACCOUNT), ("IVR_PIN_KEY", PIN_KEY),
                        ("IVR_SECRET_KEY", "k")):
        monkeypatch.setenv(name, value)
    bare = create_app({"database_url": database_url})
    create_schema(bare.extensions["engine"])
    try:
        result = bare.test_cli_runner().invoke(args=["outbox", "send"])
        assert result.exit_code != 0 and "a sender (sms.from" in result.output
        assert fake.requests == []
    finally:
        bare.extensions["engine"].dispose()


def test_the_sender_may_come_from_the_environment(database_url, monkeypatch, clock):
    monkeypatch.delenv("IVR_CONFIG", raising=False)
    monkeypatch.setenv("TWILIO_SMS_FROM", "+8653200001111")
    for name in ("TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY"):
        monkeypatch.setenv(name, "x")
    bare = create_app({"database_url": database_url, "sms": SMS})
    assert bare.extensions["settings"].sms.sender == "+8653200001111"
    bare.extensions["engine"].dispose()


def test_a_lease_too_short_for_the_timeout_is_refused():
    with pytest.raises(ValueError, match="lease"):
        sender.SmsPolicy(timeout=30, lease=60)


# --- the full number never reaches a log --------------------------------------------------------------

def test_logs_never_hold_the_full_mobile_number(app, ledger, call, clock, caplog):
    caplog.set_level(logging.DEBUG)
    ledger.add(ALICE)
    verified(call).press("1")  # a loss report by phone
    holder_id, _ = ids_of(app, ALICE)
    with app.extensions["sessions"]() as s, s.begin():
        services.change_mobile(s, holder_id, "13900005678", now=utcnow(), actor=AGENT)
    fake = FakeHttpClient(["400", "500", "timeout", "429", "201", "201"])
    client = twilio(fake)
    for _ in range(6):
        deliver(app, client)
        clock.tick(timedelta(seconds=600))
    assert len(fake.posts) >= 4 and any(m.status == "sent" for m in messages(app))
    assert "sms" in caplog.text and "+86138****0001" in caplog.text
    for number in (NATIONAL, "13900005678"):
        assert number not in caplog.text
        assert all(number not in (m.last_error or "") for m in messages(app))


def test_the_real_twilio_http_client_is_quiet_below_warning():
    client = outbox_cli.make_http_client(5)
    assert client.timeout == 5
    assert not client.logger.isEnabledFor(logging.INFO)  # it would log a look-up's query: To=+86…
