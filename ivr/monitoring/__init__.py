"""What the people who run the hotline watch: Prometheus metrics and structured logs.

- `webhook`: the webhook being answered (kind, call, turn, state, outcome), kept in a context
  variable while it runs: the logs read it, and its end is counted and logged once.
- `metrics`: the counters and histogram, across gunicorn's workers (prometheus_client's
  multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set), and the gauges read at scrape time.
- `logs`: the readable text (default) or one JSON object a line (IVR_LOG_FORMAT=json), masked.
- `views`: GET /metrics, for loopback or a bearer token.

No Flask except in `views`; nothing of ivr.voice, ivr.console, ivr.commands or ivr.sim.
"""
