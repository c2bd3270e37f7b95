"""The hotline's Prometheus metrics, right across every gunicorn worker.

Under gunicorn with `deploy/gunicorn.conf.py`, PROMETHEUS_MULTIPROC_DIR is set before anything
imports prometheus_client: each worker then writes its counts to files of its own there
(prometheus_client's multiprocess mode) and GET /metrics, whichever worker answers it, adds up
every worker's, those of workers gone included. Without it (the CLI, the tests, `flask run`, one
process) the counts live in the app's own registry. Which mode applies is read from the value
class prometheus_client chose when it was imported, never guessed from the environment later.

Every labelled child is created with the app: each label set shows from 0, a webhook's increment
looks nothing up, and in multiprocess mode the per-worker file reaches its size at start, not in
the middle of a call. The gauges read at scrape time (the outbox, the calendar) are a collector
beside the counters; a database that does not answer leaves the outbox gauge out and says
`ivr_metrics_database_up 0`, never an error page. Every method here logs its own failure and
returns: metrics never break a webhook.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from zoneinfo import ZoneInfo

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.calendar import WorkCalendar
from models.clock import local_today
from models.notifications.outbox import PENDING, SENDING, OutboxMessage
from models.storage.fastpath import READ_ONLY
from models.vocabulary import CallEnd, Service, TransferReason

log = logging.getLogger(__name__)

KINDS = ("incoming", "step", "dial", "whisper", "status", "queue_wait", "queue_result", "queue_next", "fallback")
OK, REFUSED, FAILED = "ok", "refused", "failed"
OUTCOMES = (OK, REFUSED, FAILED)
# From 1 ms (a retried webhook answered from its record) to 5 s (far past Twilio's patience).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def multiprocess() -> bool:
    """Tell whether prometheus_client writes to PROMETHEUS_MULTIPROC_DIR in this process."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class Instruments:
    """The counters and the histogram, with every labelled child made up front."""

    def __init__(self, registry: CollectorRegistry | None, hotlines: Iterable[str]):
        self.webhooks = Counter("ivr_webhooks", "Voice webhooks by kind and outcome: ok, refused (bad "
                                "signature, 403), failed (the caller got the apology and an agent)",
                                ("kind", "outcome"), registry=registry)
        self.seconds = Histogram("ivr_webhook_seconds", "Time to answer a voice webhook (refused ones not timed)",
                                 ("kind",), buckets=BUCKETS, registry=registry)
        self.calls_ended = Counter("ivr_calls_ended", "Calls closed by their status callback, by hotline and how "
                                   "they ended", ("hotline", "ended"), registry=registry)
        self.services = Counter("ivr_services_completed", "Services completed, counted when the call ends",
                                ("service",), registry=registry)
        self.transfers = Counter("ivr_transfers", "Callers put through to an agent, by reason", ("reason",),
                                 registry=registry)
        self.database_errors = Counter("ivr_database_errors", "Webhooks that met a database error (a dropped "
                                       "connection run again included)", registry=registry)
        self.by_outcome = {(k, o): self.webhooks.labels(kind=k, outcome=o) for k in KINDS for o in OUTCOMES}
        self.by_kind = {k: self.seconds.labels(kind=k) for k in KINDS}
        self.by_end: dict[tuple[str, str], Counter] = {}
        self.add_hotlines(hotlines)
        self.by_service = {s.value: self.services.labels(service=s.value) for s in Service}
        self.by_reason = {r.value: self.transfers.labels(reason=r.value) for r in TransferReason}

    def add_hotlines(self, hotlines: Iterable[str]) -> None:
        """Make the children of calls ended for these hotlines."""
        for hotline in hotlines:
            for end in CallEnd:
                if (hotline, end.value) not in self.by_end:
                    self.by_end[hotline, end.value] = self.calls_ended.labels(hotline=hotline, ended=end.value)


_SHARED: list[Instruments] = []  # multiprocess mode: one set per process (their files are the process's)


class Metrics:
    """What the webhooks count, and what GET /metrics shows.

    enabled=False (config.yaml `metrics.enabled: false`): nothing is counted and /metrics is 404.
    """

    def __init__(self, *, hotlines: Iterable[str], enabled: bool = True, token: str | None = None,
                 engine: Engine | None = None, calendar: WorkCalendar | None = None, tz: ZoneInfo | None = None):
        self.enabled = enabled
        self.token = token  # IVR_METRICS_TOKEN: a scraper that is not on loopback sends it as a bearer token
        self.registry = CollectorRegistry()
        self.instruments: Instruments | None = None
        self.gauges: ScrapeGauges | None = None
        if not enabled:
            return
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: both modes alike
        if multiprocess():
            if not _SHARED:
                _SHARED.append(Instruments(None, hotlines))
            self.instruments = _SHARED[0]
            self.instruments.add_hotlines(hotlines)
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        else:
            self.instruments = Instruments(self.registry, hotlines)
        if engine is not None and calendar is not None and tz is not None:
            self.gauges = ScrapeGauges(engine, calendar, tz)
            self.registry.register(self.gauges)

    def webhook(self, kind: str, outcome: str, seconds: float, *, database_error: bool = False) -> None:
        """Count a webhook by kind and outcome; time it unless refused; count a database error met."""
        i = self.instruments
        if i is None:
            return
        try:
            (i.by_outcome.get((kind, outcome)) or i.webhooks.labels(kind=kind, outcome=outcome)).inc()
            if outcome != REFUSED:
                (i.by_kind.get(kind) or i.seconds.labels(kind=kind)).observe(seconds)
            if database_error:
                i.database_errors.inc()
        except Exception:
            log.exception("metrics: could not count the %s webhook", kind)

    def call_ended(self, hotline: str, ended: str, completed: Iterable[str]) -> None:
        """Count a call closed by its status callback, and the services it completed."""
        i = self.instruments
        if i is None:
            return
        try:
            (i.by_end.get((hotline, ended)) or i.calls_ended.labels(hotline=hotline, ended=ended)).inc()
            for service in completed:
                (i.by_service.get(service) or i.services.labels(service=service)).inc()
        except Exception:
            log.exception("metrics: could not count the end of a call")

    def transfer(self, reason: str) -> None:
        """Count a caller put through to an agent."""
        i = self.instruments
        if i is None:
            return
        try:
            (i.by_reason.get(reason) or i.transfers.labels(reason=reason)).inc()
        except Exception:
            log.exception("metrics: could not count a transfer")

    def exposition(self) -> tuple[bytes, str]:
        """Return the Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ScrapeGauges(Collector):
    """The gauges read when Prometheus scrapes: the SMS outbox's backlog and the calendar's horizon."""

    def __init__(self, engine: Engine, calendar: WorkCalendar, tz: ZoneInfo):
        # A plain (deferred) transaction on SQLite: a scrape never takes the write lock.
        self.engine = engine.execution_options(**{READ_ONLY: True})
        self.calendar = calendar
        self.tz = tz

    def describe(self) -> Iterable[Metric]:
        return []  # read at every scrape, never at registration

    def collect(self) -> Iterator[Metric]:
        try:
            days = GaugeMetricFamily("ivr_calendar_days_known", "Days from today (config timezone) to the last "
                                     "day the official calendar (package and config) has data for")
            days.add_metric([], (self.calendar.known_until() - local_today(self.tz)).days)
            yield days
        except Exception:
            log.exception("metrics: could not read the calendar's horizon")
        up = GaugeMetricFamily("ivr_metrics_database_up", "1 when the database answered this scrape, else 0")
        try:
            with self.engine.connect() as conn:
                waiting = conn.execute(select(func.count()).select_from(OutboxMessage)
                                       .where(OutboxMessage.status.in_((PENDING, SENDING)))).scalar_one()
        except Exception as exc:
            log.warning("metrics: the database did not answer the scrape (%s): the outbox gauge is left out",
                        type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        pending = GaugeMetricFamily("ivr_outbox_pending", "SMS in the outbox not sent yet: pending, or sending "
                                    "with the outcome not known yet")
        pending.add_metric([], waiting)
        yield pending
        up.add_metric([], 1)
        yield up
