"""gunicorn's configuration for the hotline: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`.

Used by `python3 dev.py serve` and the systemd web unit. It sets up prometheus_client's
multiprocess mode, so that GET /metrics adds up the counts of every worker, whichever answers:

- PROMETHEUS_MULTIPROC_DIR is set here, before anything imports prometheus_client (which picks
  its mode when first imported): the environment's (systemd: /run/ivr-hotline/metrics), or else
  a fresh temporary folder, removed when the master exits. Every worker inherits it.
- When the master starts, the folder is emptied: counts from an earlier run would otherwise be
  added to this one's. (A HUP reloads this file but does not start the master again: the counts
  of the workers it replaces stay, as a counter's must.)
- When a worker exits, `mark_process_dead` drops its live gauges (the hotline has none; its
  gauges are read at scrape time); its counters stay in the sum.

It also gives gunicorn's own lines (the master's too) the JSON format when IVR_LOG_FORMAT=json.
The command line wins over anything here (`-w 4`, `--bind ...`).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the app's packages, wherever gunicorn was started from
    sys.path.insert(0, str(ROOT))

MADE = "IVR_METRICS_DIR_MADE"  # the folder this file made (a HUP runs the file again: still known)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[MADE] = tempfile.mkdtemp(prefix="ivr-metrics-")
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
Path(METRICS_DIR).mkdir(parents=True, exist_ok=True)
OWN_DIR = METRICS_DIR if os.environ.get(MADE) == METRICS_DIR else None

# Two sync workers a core: each waits on PostgreSQL for part of every request (bench/capacity.py,
# 2 cores: 4 workers held 1,000 paced calls with p99 63 ms where 2 reached 351 ms; README "Performance").
workers = int(os.environ.get("WEB_CONCURRENCY", str(max(2, 2 * (os.cpu_count() or 1)))))


def on_starting(server: Any) -> None:
    """Empty the metrics folder: this run counts from zero."""
    for stale in Path(METRICS_DIR).glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges (its counters stay in the sum)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)


def on_exit(server: Any) -> None:
    """Remove the temporary metrics folder this file made (a folder given in the environment stays)."""
    if OWN_DIR is not None:
        shutil.rmtree(OWN_DIR, ignore_errors=True)


class Logger(GunicornLogger):  # type: ignore[misc]  # gunicorn has no type information
    """gunicorn's logger, in the hotline's JSON lines when IVR_LOG_FORMAT=json (text: gunicorn's own)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if os.environ.get("IVR_LOG_FORMAT", "").strip().lower() == "json":
            from ivr.monitoring.logs import adopt

            adopt(self.error_log, self.access_log)


logger_class = Logger
