"""The Qingdao social security card hotline: a Flask app answering Twilio's voice webhooks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import Flask, Response, send_from_directory
from sqlalchemy import text
from werkzeug.middleware.proxy_fix import ProxyFix

from ivr.callflow import flow
from ivr.callflow.actions import ACTIONS
from ivr.config import ROOT, load_settings, unchecked_forwarding
from ivr.monitoring import logs
from ivr.monitoring.metrics import Metrics
from ivr.voice.fallback import PROMPTS as FALLBACK_SAYS
from ivr.voice.fallback import Fallback
from ivr.voice.prompts import Catalogue
from ivr.voice.turns import TurnService
from ivr.voice.twiml import Renderer
from models.storage.db import make_engine, make_sessionmaker


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings, database, the validated flow and catalogue, routes and CLI."""
    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    logs.configure()  # text, or JSON lines with IVR_LOG_FORMAT=json: the app's, the CLI's and gunicorn's
    settings = load_settings(Path(app.instance_path), test_config)
    engine = make_engine(settings.database_url, fast_path=settings.fast_path)
    sessions = make_sessionmaker(engine)
    machine = flow.build(settings.reprompts, settings.speech_confidence)
    catalogue = Catalogue.load(settings.catalogue, settings.audio_dir)
    missing = catalogue.missing(machine.prompt_ids() | FALLBACK_SAYS)
    if missing:
        raise RuntimeError(f"prompts missing from {settings.catalogue}: {sorted(missing)}")
    unknown = machine.action_names() - ACTIONS.keys()
    if unknown:
        raise RuntimeError(f"the flow names actions that do not exist: {sorted(unknown)}")
    from ivr import commands, console
    from ivr.monitoring import views as monitoring
    from ivr.voice import webhooks

    metrics = Metrics(hotlines=sorted({h.name for h in settings.hotlines.values()}), enabled=settings.metrics_enabled,
                      token=settings.metrics_token, engine=engine, calendar=settings.calendar, tz=settings.tz)

    renderer = Renderer(catalogue, settings)
    app.extensions.update(
        settings=settings,
        engine=engine,
        sessions=sessions,
        catalogue=catalogue,
        machine=machine,
        validator=webhooks.Validator(settings.auth_token),
        metrics=metrics,
        turns=TurnService(settings, machine, renderer, sessions, engine, metrics),
        fallback=Fallback(settings, renderer),  # POST /voice/fallback: the configuration alone, no database
    )
    if settings.trusted_proxies:
        # The client's address (the console's per-address login limit) always comes through the
        # trusted proxies; the scheme and host only when the signed URL is not configured.
        n, own_url = settings.trusted_proxies, settings.public_base_url is None
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n if own_url else 0,  # type: ignore[method-assign]
                                x_host=n if own_url else 0)
    warning = unchecked_forwarding(settings)
    if warning and click.get_current_context(silent=True) is None:  # a command (init-db) says it itself
        app.logger.warning(warning)

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(monitoring.bp)  # GET /metrics: loopback or IVR_METRICS_TOKEN
    console.init_app(app, no_csrf=(webhooks.bp,))  # Twilio's webhooks carry a signature instead
    commands.init_app(app)

    @app.get("/healthz")
    def healthz() -> Response:
        """Answer 200 when the database is reachable, 503 when it is not."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            app.logger.exception("health check: database unreachable")
            return Response("database unreachable\n", status=503, mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @app.get("/prompts/audio/<name>.wav")
    def prompt_audio(name: str) -> Response:
        """Serve a recorded prompt for <Play>."""
        return send_from_directory(settings.audio_dir, f"{name}.wav", mimetype="audio/wav")

    return app
