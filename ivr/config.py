"""Configuration: config.yaml, overridden by the environment, with development secrets."""
from __future__ import annotations

import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from models.agents import LoginPolicy
from models.calendar import DEFAULT_FALLBACK_HOLIDAYS, WorkCalendar
from models.callbacks import CallbackPolicy
from models.cards import LossPolicy
from models.elders import ELDER_AGE
from models.hours import Hotline, parse_hotlines
from models.notifications.sender import SmsPolicy
from models.pins import PinPolicy

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOTLINES = {"numbers": {"+8653212333": {"name": "12333", "hours": "always"}}}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read the YAML configuration file."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the configuration must be a mapping")
    return data


def dev_secret(instance: Path, name: str) -> str:
    """Return a development secret kept in instance/dev-secrets/, generating it on first use.

    Created with O_EXCL, so workers starting together on a fresh checkout agree on one value.
    Says nothing: `load_settings` tells in one line which secrets are development values.
    """
    folder = instance / "dev-secrets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be writing it this instant
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty: delete it to generate a new development value") from None
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


_TOLD: set[tuple[Path, tuple[str, ...]]] = set()  # (folder, names) already told by this process


def tell_dev_secrets(instance: Path, names: list[str]) -> None:
    """Log one warning line naming the secrets that have development values, once per process
    (a command that builds a second app, `sim run`, says it once)."""
    told = (instance / "dev-secrets", tuple(names))
    if names and told not in _TOLD:
        _TOLD.add(told)
        log.warning("development secrets in %s/ (set %s in production)", told[0], ", ".join(names))


@dataclass(frozen=True)
class QueueSettings:
    """config.yaml `agent` for `leg: queue`: the queue per hotline and what a waiting caller hears."""

    name: str = "hotline-{hotline}"  # queue_name: the Twilio queue of a hotline ({hotline}: its name)
    music: str | None = None  # queue_music: a URL <Play>ed between announcements; None: silence
    pause_seconds: int = 25  # queue_pause_seconds: the silence between announcements (no music)
    takers: tuple[str, ...] = ()  # queue_takers: the From of calls that may take callers (/voice/queue/next)

    def of(self, hotline: str) -> str:
        """Return the name of a hotline's queue."""
        return self.name.format(hotline=hotline)


@dataclass(frozen=True)
class ElderSettings:
    """config.yaml `elder` (适老化): callers at least `age` on the day of the call hear slower speech
    (`rate` % of the normal rate), wait `extra_timeout` seconds longer at every <Gather>, and hear
    the agent option first in every menu while agents work, on the hotlines where it is on."""

    age: int = ELDER_AGE
    rate: int = 85  # percent: <prosody rate="85%">
    extra_timeout: int = 5  # seconds added to every <Gather timeout> of the flow
    off: frozenset[str] = frozenset()  # the names of the hotlines where elder mode is off

    def on(self, hotline: str) -> bool:
        """Tell whether elder mode is on for a hotline (by its name)."""
        return hotline not in self.off


@dataclass(frozen=True)
class Settings:
    """The values the hotline reads on every call, checked once at start-up."""

    database_url: str
    auth_token: str
    pin_key: bytes
    secret_key: str  # signs the agent console's session cookies
    public_base_url: str | None
    trusted_proxies: int
    catalogue: Path
    audio_dir: Path
    voice: str
    language: str
    menu_timeout: int
    entry_timeout: int
    reprompts: int
    id_attempts: int
    per_call_pin_failures: int
    initial_pin: str  # a card still on it cannot use self-service by phone
    speech_language: str
    speech_confidence: float
    pin: PinPolicy
    loss: LossPolicy
    issue_working_days: int
    agent_dial: str
    agent_leg: str  # number, sip or client: the <Dial> noun the agents are reached by; queue: <Enqueue>
    retention_days: int
    # config.yaml `recording.secrets_ttl_minutes`: a call not updated for this long loses its SECRET
    # fields (and is closed as ended if it has no end): for calls whose status callback never came.
    secrets_ttl_minutes: int
    secure_cookies: bool
    login_limit: LoginPolicy  # config.yaml `console.login_limit`: failed console logins allowed
    hotlines: dict[str, Hotline]
    default_hotline: str
    agent_timeout: int
    tz: ZoneInfo
    calendar: WorkCalendar
    raw: dict[str, Any]
    # SMS notifications (config.yaml `sms`; the sender may come from the environment). The Twilio
    # account SID and auth token the worker sends with are read from the environment when it starts.
    sms: SmsPolicy = SmsPolicy()
    # config.yaml `database.fast_path`: the hot statements on the driver's cursor (models.storage.fastpath),
    # or false: on plain SQLAlchemy Core.
    fast_path: bool = True
    # config.yaml `console.two_factor`: who must sign in to the console with a TOTP code: `admins`,
    # `all` or `none` (an account that enrolled is asked for its code whatever this says).
    two_factor: str = "admins"
    # config.yaml `reports.unended_after_minutes`: a call whose status callback never came counts as
    # ended this long after its last webhook (models.reports).
    unended_after_minutes: int = 30
    # config.yaml `metrics.enabled`: count webhooks and calls for GET /metrics (false: nothing counted, 404).
    metrics_enabled: bool = True
    # IVR_METRICS_TOKEN (environment only): a scraper that is not on loopback sends it as a bearer token.
    metrics_token: str | None = None
    # config.yaml `agent`: call-back items' due time and tries (callback_due_minutes, callback_attempts,
    # callback_retry_minutes), and the queue (leg: queue; queue_name, queue_music, queue_pause_seconds, queue_takers).
    callbacks: CallbackPolicy = CallbackPolicy()
    queue: QueueSettings = QueueSettings()
    # config.yaml `elder` (适老化): age, rate, extra_timeout, on or off per hotline.
    elder: ElderSettings = ElderSettings()

    def report_scope(self) -> dict[str, Any]:
        """Return what the call report needs of the settings (`models.reports.call_report`'s keywords)."""
        return {"names": {number: h.name for number, h in self.hotlines.items()},
                "default": self.hotlines[self.default_hotline].name,
                "unended_after": timedelta(minutes=self.unended_after_minutes)}


def _agent_leg(leg: str) -> str:
    if leg not in ("number", "sip", "client", "queue"):
        raise ValueError("agent.leg must be number, sip, client or queue")
    return leg


def _callbacks(agent: dict[str, Any]) -> CallbackPolicy:
    """Read config.yaml `agent`'s call-back keys: when an item is due, how many tries it gets."""
    default = CallbackPolicy()
    return CallbackPolicy(
        due_minutes=_whole(agent.get("callback_due_minutes", default.due_minutes), "agent.callback_due_minutes", 1),
        attempts=_whole(agent.get("callback_attempts", default.attempts), "agent.callback_attempts", 1),
        retry_minutes=_whole(agent.get("callback_retry_minutes", default.retry_minutes),
                             "agent.callback_retry_minutes", 0),
    )


QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _queue(agent: dict[str, Any], hotlines: dict[str, Hotline]) -> QueueSettings:
    """Read config.yaml `agent`'s queue keys (used with `leg: queue`)."""
    default = QueueSettings()
    name = agent.get("queue_name", default.name)
    if not isinstance(name, str):
        raise ValueError("agent.queue_name must be a string, e.g. hotline-{hotline}")
    for hotline in hotlines.values():
        try:
            queue = name.format(hotline=hotline.name)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"agent.queue_name {name!r}: only {{hotline}} may be filled in ({err})") from None
        if not QUEUE_NAME.fullmatch(queue):
            raise ValueError(f"agent.queue_name gives {queue!r}: a queue name is 1-64 letters, digits, '.', '_', '-'")
    music = agent.get("queue_music")
    if music is not None and not (isinstance(music, str) and music.startswith(("https://", "http://", "/"))):
        raise ValueError("agent.queue_music must be null or the URL of an audio file (https://… or /path)")
    takers = agent.get("queue_takers")
    if takers is None:
        takers = [agent.get("dial", "")] if agent.get("dial") else []
    if not isinstance(takers, list) or not all(isinstance(t, str) for t in takers):
        raise ValueError('agent.queue_takers must be a list of quoted From values ("+8653200000000", "client:li")')
    return QueueSettings(
        name=name, music=music or None,
        pause_seconds=_whole(agent.get("queue_pause_seconds", default.pause_seconds), "agent.queue_pause_seconds", 1),
        takers=tuple("".join(t.split()) for t in takers if t.strip()),
    )


ELDER_KEYS = ("age", "rate", "extra_timeout", "hotlines")
RATE = re.compile(r"([0-9]{2,3}) ?%?")


def _elder(elder: Any, hotlines: dict[str, Hotline]) -> ElderSettings:
    """Read config.yaml `elder`: age, rate (a percentage of the normal rate: 85 or "85%"),
    extra_timeout, and `hotlines` (each hotline's name: true or false; a hotline not named is on)."""
    if not isinstance(elder, dict):
        raise ValueError("elder must be a mapping (age, rate, extra_timeout, hotlines)")
    unknown = set(elder) - set(ELDER_KEYS)
    if unknown:
        raise ValueError(f"elder.{sorted(unknown)[0]}: unknown ({', '.join(ELDER_KEYS)})")
    default = ElderSettings()
    rate = elder.get("rate", default.rate)
    found = RATE.fullmatch(str(rate).strip()) if not isinstance(rate, bool) else None
    if found is None or not 20 <= int(found.group(1)) <= 100:
        raise ValueError(f"elder.rate must be a percentage from 20 to 100 (slower than normal), not {rate!r}")
    names = {h.name for h in hotlines.values()}
    switches = elder.get("hotlines") or {}
    if not isinstance(switches, dict):
        raise ValueError('elder.hotlines must map hotline names to true or false, e.g. {"12333": true}')
    for name, value in switches.items():
        _flag(value, f"elder.hotlines.{name}")
        if str(name) not in names:  # a hotline taken out of hotlines.numbers, or a misspelt name
            log.warning("elder.hotlines.%s: no hotline of that name (hotlines.numbers.<To>.name); ignored", name)
    return ElderSettings(
        age=_whole(elder.get("age", default.age), "elder.age", 1),
        rate=int(found.group(1)),
        extra_timeout=_whole(elder.get("extra_timeout", default.extra_timeout), "elder.extra_timeout", 0),
        off=frozenset(str(name) for name, value in switches.items() if value is False),
    )


def _sms(sms: dict[str, Any], env: Any) -> SmsPolicy:
    """Read config.yaml `sms`; TWILIO_SMS_FROM and TWILIO_MESSAGING_SERVICE_SID override the sender."""
    def num(key: str, default: float) -> float:
        value = sms.get(key)
        return float(default if value is None else value)

    if sms.get("from") is not None and not isinstance(sms["from"], str):
        raise ValueError('sms.from must be a quoted string, e.g. "+8653212333" (unquoted, YAML drops the +)')
    return SmsPolicy(
        sender=env.get("TWILIO_SMS_FROM") or sms.get("from") or None,
        messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID") or sms.get("messaging_service_sid") or None,
        max_attempts=int(num("max_attempts", 5)),
        base_delay=num("base_delay", 30),
        max_delay=num("max_delay", 3600),
        timeout=num("timeout", 30),
        lease=num("lease", 600),
        poll=num("poll", 5),
        batch=int(num("batch", 50)),
    )


def _two_factor(value: Any) -> str:
    if value not in ("admins", "all", "none"):
        raise ValueError(f"console.two_factor must be admins, all or none, not {value!r}")
    return str(value)


def _whole(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}")
    return value


def unchecked_forwarding(settings: Settings) -> str | None:
    """Return the warning for a shared database served without `twilio.public_base_url` or
    `twilio.trusted_proxies` (signatures are then checked against the URL as this host sees it),
    or None."""
    if settings.database_url.startswith("sqlite") or settings.public_base_url or settings.trusted_proxies:
        return None
    return ("neither twilio.public_base_url nor twilio.trusted_proxies is set: Twilio's signatures are checked "
            "against the URL this host sees; behind a proxy, set public_base_url to the URL Twilio calls")


def _login_limit(limit: Any) -> LoginPolicy:
    """Read config.yaml `console.login_limit`: failed logins per username and per address in a window."""
    if not isinstance(limit, dict):
        raise ValueError("console.login_limit must be a mapping, e.g. {per_username: 5, per_address: 20}")
    default = LoginPolicy()
    values = {"per_username": default.per_username, "per_address": default.per_address,
              "window_minutes": int(default.window.total_seconds() // 60)}
    for key, value in limit.items():
        if key not in values:
            raise ValueError(f"console.login_limit.{key}: unknown (per_username, per_address, window_minutes)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"console.login_limit.{key} must be a whole number of at least 1, not {value!r}")
        values[key] = value
    return LoginPolicy(per_username=values["per_username"], per_address=values["per_address"],
                       window=timedelta(minutes=values["window_minutes"]))


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value


def _dates(values: list[Any] | None) -> list[date]:
    return [v if isinstance(v, date) else date.fromisoformat(str(v)) for v in values or ()]


def load_settings(instance: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from IVR_CONFIG (or config.yaml), the environment and overrides."""
    cfg = load_yaml(os.environ.get("IVR_CONFIG") or ROOT / "config.yaml")
    for key, value in (overrides or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    env = os.environ
    # An explicit override (tests, the scenario runner's own database) wins over the environment.
    url = (
        (overrides or {}).get("database_url")
        or env.get("DATABASE_URL")
        or cfg.get("database_url")
        or f"sqlite:///{instance / 'hotline.db'}"
    )
    # Secrets come from the environment only, never from a file in the repository. A shared
    # database (anything but the embedded SQLite) means several hosts: they must share them.
    if not url.startswith("sqlite"):
        for name in ("TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY"):
            if not env.get(name):
                raise SystemExit(f"{name} must be set when DATABASE_URL is not SQLite: every host must "
                                 f"share it (a generated development value would differ per host)")
    token = env.get("TWILIO_AUTH_TOKEN") or dev_secret(instance, "TWILIO_AUTH_TOKEN")
    pin_key = env.get("IVR_PIN_KEY") or dev_secret(instance, "IVR_PIN_KEY")
    secret_key = env.get("IVR_SECRET_KEY") or dev_secret(instance, "IVR_SECRET_KEY")
    tell_dev_secrets(instance, [n for n in ("TWILIO_AUTH_TOKEN", "IVR_PIN_KEY", "IVR_SECRET_KEY") if not env.get(n)])
    twilio, voice, gather = cfg.get("twilio", {}), cfg.get("voice", {}), cfg.get("gather", {})
    pin, loss, cal, agent = cfg.get("pin", {}), cfg.get("loss", {}), cfg.get("calendar", {}), cfg.get("agent", {})
    hotlines, default_hotline = parse_hotlines(cfg.get("hotlines") or DEFAULT_HOTLINES)
    if loss.get("at_expiry", "release") not in ("release", "cancel"):
        raise ValueError("loss.at_expiry must be release or cancel")
    return Settings(
        database_url=url,
        auth_token=token,
        pin_key=pin_key.encode(),
        secret_key=secret_key,
        secure_cookies=bool(cfg.get("console", {}).get("secure_cookies", False)),
        login_limit=_login_limit((cfg.get("console") or {}).get("login_limit") or {}),
        public_base_url=(twilio.get("public_base_url") or "").rstrip("/") or None,
        # 0 (the default): no X-Forwarded-* header is trusted.
        trusted_proxies=_whole(twilio.get("trusted_proxies") or 0, "twilio.trusted_proxies", 0),
        catalogue=ROOT / voice.get("catalogue", "voice_prompts/zh-CN.yaml"),
        audio_dir=ROOT / voice.get("audio_dir", "voice_prompts/audio"),
        voice=voice.get("voice", "Polly.Zhiyu"),
        language=voice.get("language", "cmn-CN"),
        menu_timeout=int(gather.get("menu_timeout", 6)),
        entry_timeout=int(gather.get("entry_timeout", 10)),
        reprompts=int(gather.get("reprompts", 3)),
        id_attempts=int(gather.get("id_attempts", 3)),
        per_call_pin_failures=int(pin.get("per_call_failures", 3)),
        initial_pin=str(pin.get("initial", "123456")),
        speech_language=str(cfg.get("speech", {}).get("language", "cmn-Hans-CN")),
        speech_confidence=float(cfg.get("speech", {}).get("min_confidence", 0.5)),
        pin=PinPolicy(max_failures=int(pin.get("max_failures", 6)), lock_hours=pin.get("lock_hours")),
        loss=LossPolicy(
            verbal_valid_days=int(loss.get("verbal_valid_days", 7)),
            at_expiry=loss.get("at_expiry", "release"),
        ),
        issue_working_days=int(cfg.get("card", {}).get("issue_working_days", 7)),
        agent_dial=str(agent.get("dial", "")),
        agent_leg=_agent_leg(agent.get("leg", "number")),
        hotlines=hotlines,
        default_hotline=default_hotline,
        retention_days=int(cfg.get("recording", {}).get("retention_days", 90)),
        secrets_ttl_minutes=_whole(cfg.get("recording", {}).get("secrets_ttl_minutes", 60),
                                   "recording.secrets_ttl_minutes", 1),
        agent_timeout=int(agent.get("timeout", 30)),
        tz=ZoneInfo(cfg.get("timezone", "Asia/Shanghai")),
        calendar=WorkCalendar(
            holidays=_dates(cal.get("holidays")),
            workdays=_dates(cal.get("workdays")),
            fallback_holidays=cal.get("fallback_holidays", DEFAULT_FALLBACK_HOLIDAYS),
        ),
        raw=cfg,
        sms=_sms(cfg.get("sms") or {}, env),
        fast_path=_flag((cfg.get("database") or {}).get("fast_path", True), "database.fast_path"),
        two_factor=_two_factor((cfg.get("console") or {}).get("two_factor", "admins")),
        unended_after_minutes=_whole((cfg.get("reports") or {}).get("unended_after_minutes", 30),
                                     "reports.unended_after_minutes", 1),
        metrics_enabled=_flag((cfg.get("metrics") or {}).get("enabled", True), "metrics.enabled"),
        metrics_token=env.get("IVR_METRICS_TOKEN") or None,
        callbacks=_callbacks(agent),
        queue=_queue(agent, hotlines),
        elder=_elder(cfg.get("elder") or {}, hotlines),
    )
