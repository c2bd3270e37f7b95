"""GET /metrics: the Prometheus text exposition, for loopback or a bearer token, else 403.

The client address is the one the app sees after its ProxyFix: with `twilio.trusted_proxies: 0`
(the default) that is the connection's own peer, whatever X-Forwarded-For says; with N, the
address the N-th proxy from the app saw. Behind nginx on the same host, set trusted_proxies, or
every request looks like loopback. A request carrying a token that is not IVR_METRICS_TOKEN is
refused wherever it comes from.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging

from flask import Blueprint, Response, current_app, request

from ivr.monitoring.metrics import Metrics

bp = Blueprint("monitoring", __name__)
log = logging.getLogger(__name__)


def is_loopback(address: str | None) -> bool:
    """Tell whether a client address is loopback (127.0.0.0/8, ::1, or IPv4 loopback mapped in IPv6)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def allowed(address: str | None, authorization: str | None, token: str | None) -> bool:
    """Tell whether a scrape may read the metrics: the right bearer token, or none from loopback."""
    if authorization:
        scheme, _, given = authorization.partition(" ")
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), (token or "").encode())
    return is_loopback(address)


@bp.get("/metrics")
def metrics() -> Response:
    """Answer Prometheus' scrape."""
    found: Metrics = current_app.extensions["metrics"]
    if not found.enabled:
        return Response("metrics are switched off (config.yaml metrics.enabled)\n", status=404, mimetype="text/plain")
    if not allowed(request.remote_addr, request.headers.get("Authorization"), found.token):
        log.warning("refused a metrics scrape from %s", request.remote_addr)
        return Response("forbidden\n", status=403, mimetype="text/plain")
    try:
        body, content_type = found.exposition()
    except Exception:
        log.exception("metrics: the exposition failed")
        return Response("metrics unavailable\n", status=503, mimetype="text/plain")
    return Response(body, content_type=content_type)
