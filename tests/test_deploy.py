"""deploy/: what a city's operations team installs, each file checked by the tool that will read it.

systemd-analyze (verify, security, calendar), systemd-sysusers and systemd-tmpfiles on the units,
their user and their folders; `nginx -t` on the site, then a real nginx on loopback ports in front
of a stand-in for gunicorn; promtool on the alert rules, their unit tests and the scrape job;
ivr.config.load_settings and the app itself on the production configuration and environment file.
A test whose tool is missing skips, saying how to install it (.ci/run installs them all).
"""
from __future__ import annotations

import datetime as dt
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ivr import create_app
from ivr.config import load_settings, unchecked_forwarding
from models.storage.db import create_schema
from tests.support import FORM, free_port, signed_post, use_test_secrets

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
SITE = DEPLOY / "nginx" / "ivr-hotline.conf"
RULES = DEPLOY / "prometheus-rules.yml"
RULE_TESTS = DEPLOY / "prometheus-rules.test.yml"
ENV_EXAMPLE = DEPLOY / "ivr-hotline.env.example"
PRODUCTION = DEPLOY / "config.production.yaml"
APP_DIR = "/srv/ivr-hotline"  # where the units expect the checkout (WorkingDirectory=)
UNITS = sorted(p for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer"))
SERVICES = [p for p in UNITS if p.suffix == ".service"]
LONG_RUNNING = ("ivr-hotline-web.service", "ivr-hotline-sms.service")
SECRETS = ("IVR_PIN_KEY", "IVR_SECRET_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "IVR_METRICS_TOKEN")
TOOL_TIMEOUT = 60


def tool(name: str, package: str) -> str:
    """Return the path of a command-line tool, or skip saying how to install it."""
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                       None)
    if not found:
        pytest.skip(f"{name} is not installed: apt-get install {package} (.ci/run installs it)")
    return found


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, bounded, capturing its output."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          env=env, cwd=cwd, check=False)


def unit_lines(path: Path) -> list[tuple[str, str, str]]:
    """Read a unit file as (section, key, value) in order (systemd allows a key more than once)."""
    section, out = "", []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_value(path: Path, key: str) -> str:
    """The single value of a key in a unit file."""
    values = [v for _, k, v in unit_lines(path) if k == key]
    assert len(values) == 1, f"{path.name}: {key} given {len(values)} times"
    return values[0]


def exec_paths(path: Path) -> list[str]:
    """The programs a unit runs (ExecStart=, ExecReload=, ...), without systemd's prefixes."""
    return [v.split()[0].lstrip("-@:+!") for _, k, v in unit_lines(path) if k.startswith("Exec")]


# --- systemd --------------------------------------------------------------------------------------

@pytest.fixture
def systemd_root(tmp_path):
    """A root for `systemd-analyze --root`: the host's systemd units, ours in /etc/systemd/system,
    and every program our units run, at its path. Programs under /srv/ivr-hotline are this
    checkout's own (a unit naming one the checkout lacks fails the test); others are the host's."""
    root = tmp_path / "root"
    for name in ("bin", "sbin", "lib", "lib64"):  # merged /usr, like the host
        if Path("/", name).is_symlink():
            link = os.readlink(Path("/", name))
            (root / name).parent.joinpath(link).mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(link)
    system = next((Path(p) for p in ("/usr/lib/systemd/system", "/lib/systemd/system")
                   if (Path(p) / "sysinit.target").exists()), None)
    if system is None:
        pytest.skip("systemd's own units are not installed: apt-get install systemd (.ci/run installs it)")
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, units / unit.name)
    for unit in UNITS:
        for program in exec_paths(unit):
            assert program.startswith("/"), f"{unit.name}: {program} is not an absolute path"
            if program.startswith(APP_DIR + "/"):
                source = ROOT / program.removeprefix(APP_DIR + "/")
                assert os.access(source, os.X_OK), f"{unit.name} runs {program}, but the checkout has no {source}"
            else:
                source = Path(program)
                assert os.access(source, os.X_OK), f"{unit.name} runs {program}, which this host lacks"
            target = root / program.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)  # follows links: a program, executable, at the unit's path
    return root


def test_every_systemd_unit_passes_systemd_analyze_verify(systemd_root):
    analyze = tool("systemd-analyze", "systemd")
    names = [u.name for u in UNITS]
    assert {"ivr-hotline-web.service", "ivr-hotline-sms.service", "ivr-hotline-expire.service",
            "ivr-hotline-expire.timer", "ivr-hotline-purge.service", "ivr-hotline-purge.timer"} <= set(names)
    done = run(analyze, "verify", f"--root={systemd_root}", *names)
    # Unknown keys, bad values and missing programs are all reported; a warning fails too.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_every_service_is_hardened_as_systemd_analyze_security_measures(systemd_root):
    analyze = tool("systemd-analyze", "systemd")
    for service in SERVICES:
        done = run(analyze, "security", "--offline=yes", f"--root={systemd_root}", "--threshold=20", service.name)
        exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
        assert exposure, done.stdout + done.stderr
        # 0 is a service that can do nothing, 10 an unprotected one; 2 and below is "OK".
        assert done.returncode == 0 and float(exposure.group(1)) <= 2.0, f"{service.name}: {exposure.group(0)}"


def test_every_service_runs_as_the_hotline_user_with_one_hardening():
    first = None
    for service in SERVICES:
        lines = unit_lines(service)
        settings = {(k, v) for s, k, v in lines if s == "Service"}
        for needed in [("User", "ivr-hotline"), ("Group", "ivr-hotline"), ("WorkingDirectory", APP_DIR),
                       ("EnvironmentFile", "/etc/ivr-hotline/ivr-hotline.env"), ("NoNewPrivileges", "yes"),
                       ("ProtectSystem", "strict"), ("ReadWritePaths", f"{APP_DIR}/instance"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"), ("CapabilityBoundingSet", "")]:
            assert needed in settings, f"{service.name} lacks {needed[0]}={needed[1]}"
        text = service.read_text(encoding="utf-8")
        hardening = text[text.index("# Hardening"):].split("\n[")[0].strip()
        first = first or (service.name, hardening)
        assert hardening == first[1], f"{service.name}'s hardening differs from {first[0]}'s"
        if service.name in LONG_RUNNING:
            assert ("Restart", "on-failure") in settings, f"{service.name} is not restarted on failure"
            assert ("WantedBy", "multi-user.target") in {(k, v) for _, k, v in lines}


def test_the_web_unit_gives_gunicorn_a_fresh_metrics_folder_and_the_address_nginx_proxies_to():
    web = SYSTEMD / "ivr-hotline-web.service"
    assert unit_value(web, "RuntimeDirectory").split() == ["ivr-hotline", "ivr-hotline/metrics"]
    assert "PROMETHEUS_MULTIPROC_DIR=/run/ivr-hotline/metrics" in [v for _, k, v in unit_lines(web) if k == "Environment"]
    command = unit_value(web, "ExecStart").split()
    assert command[:3] == [f"{APP_DIR}/.venv/bin/gunicorn", "-c", "deploy/gunicorn.conf.py"] and command[-1] == "wsgi:app"
    bind = command[command.index("--bind") + 1]
    upstream = re.search(r"upstream ivr_hotline \{\s*server (\S+);", SITE.read_text(encoding="utf-8"))
    assert upstream and upstream.group(1) == bind


def test_the_web_unit_command_line_passes_gunicorn_check_config(tmp_path, monkeypatch):
    web = SYSTEMD / "ivr-hotline-web.service"
    command = unit_value(web, "ExecStart").split()
    command[0] = str(ROOT / command[0].removeprefix(APP_DIR + "/"))
    assert (ROOT / command[2]).is_file(), f"the web unit runs gunicorn with {command[2]}, which is missing"
    use_test_secrets(monkeypatch)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'check.db'}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    # The configuration file and the app are loaded (wsgi:app imported) exactly as the unit would.
    done = run(*command[:-1], "--check-config", command[-1], env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_flask_command_a_unit_runs_is_one_the_app_has(runner):
    commands = []
    for unit in SERVICES:
        for _, key, value in unit_lines(unit):
            if key == "ExecStart" and "/.venv/bin/flask" in value:
                words = value.split()
                assert words[1:3] == ["--app", "wsgi"], f"{unit.name}: {value}"
                commands.append(words[3:])
    assert sorted(commands) == [["calls", "purge"], ["init-db"], ["ledger", "expire"], ["outbox", "send"]]
    for words in commands:
        done = runner.invoke(args=[*words, "--help"])
        assert done.exit_code == 0 and "Usage:" in done.output, (words, done.output)
    assert runner.invoke(args=["ledger", "expires", "--help"]).exit_code != 0  # the check can fail


def test_the_timers_start_expiry_every_5_minutes_and_the_purge_daily_at_0315_beijing_time():
    analyze = tool("systemd-analyze", "systemd")
    expected = {"ivr-hotline-expire.timer": ("ivr-hotline-expire.service", dt.timedelta(minutes=5)),
                "ivr-hotline-purge.timer": ("ivr-hotline-purge.service", dt.timedelta(days=1))}
    for name, (service, step) in expected.items():
        timer = SYSTEMD / name
        assert unit_value(timer, "Unit") == service and (SYSTEMD / service).exists()
        done = run(analyze, "calendar", "--iterations=3", unit_value(timer, "OnCalendar"), env={**os.environ, "TZ": "UTC"})
        assert done.returncode == 0, done.stderr
        times = [dt.datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
                 for m in re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", done.stdout)]
        assert len(times) == 3 and {b - a for a, b in zip(times, times[1:], strict=False)} == {step}, done.stdout
        if name == "ivr-hotline-purge.timer":
            assert times[0].strftime("%H:%M") == "19:15"  # 03:15 in Asia/Shanghai (UTC+8), whatever the host's zone
            assert unit_value(timer, "Persistent") == "true"


def test_the_hotline_user_and_its_folders_are_made_by_sysusers_and_tmpfiles(tmp_path):
    sysusers = tool("systemd-sysusers", "systemd")
    tmpfiles = tool("systemd-tmpfiles", "systemd")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    done = run(sysusers, f"--root={root}", DEPLOY / "sysusers.d/ivr-hotline.conf")
    assert done.returncode == 0, done.stderr
    entry = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
                 if line.startswith("ivr-hotline:"))
    assert entry[5:] == [APP_DIR, "/usr/sbin/nologin"] and int(entry[2]) < 1000  # a system user, no login
    assert any(line.startswith("ivr-hotline:") for line in (root / "etc/group").read_text().splitlines())
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles sets owners: run as root to check the folders (CI does)")
    done = run(tmpfiles, "--create", f"--root={root}", DEPLOY / "tmpfiles.d/ivr-hotline.conf")
    assert done.returncode == 0, done.stderr
    uid, gid = int(entry[2]), int(entry[3])
    instance, etc = (root / APP_DIR.lstrip("/") / "instance").stat(), (root / "etc/ivr-hotline").stat()
    assert (instance.st_uid, instance.st_gid, instance.st_mode & 0o777) == (uid, gid, 0o750)
    assert (etc.st_uid, etc.st_gid, etc.st_mode & 0o777) == (0, gid, 0o750)
    # The one folder the services may write is the one tmpfiles makes theirs.
    for service in SERVICES:
        assert unit_value(service, "ReadWritePaths") == f"{APP_DIR}/instance"
        assert unit_value(service, "User") == entry[0]


# --- the environment file and the production configuration ----------------------------------------

def environment_file(path: Path) -> dict[str, str]:
    """Read KEY=value lines as systemd's EnvironmentFile= does (comments and blank lines skipped)."""
    values = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}:{number}: not KEY=value: {raw!r}"
        assert key not in values, f"{path.name}:{number}: {key} twice"
        values[key] = value
    return values


def test_the_environment_file_example_holds_placeholders_only():
    values = environment_file(ENV_EXAMPLE)
    assert set(values) == {"IVR_CONFIG", "DATABASE_URL", *SECRETS, "TWILIO_SMS_FROM",
                           "TWILIO_MESSAGING_SERVICE_SID", "IVR_LOG_FORMAT"}
    assert all(values[name] == "" for name in SECRETS), "a secret in the example must be left empty"
    assert "CHANGE-ME" in values["DATABASE_URL"] and values["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert values["IVR_LOG_FORMAT"] == "json" and values["IVR_CONFIG"] == "/etc/ivr-hotline/config.yaml"


def test_the_app_refuses_to_start_on_the_example_environment_until_its_secrets_are_filled_in(tmp_path, monkeypatch):
    use_test_secrets(monkeypatch)
    for name, value in environment_file(ENV_EXAMPLE).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IVR_CONFIG", str(PRODUCTION))  # the example's path, on the host
    with pytest.raises(SystemExit, match="must be set when DATABASE_URL is not SQLite"):
        load_settings(tmp_path)
    assert not (tmp_path / "dev-secrets").exists()  # nothing generated in their place


def test_the_production_configuration_is_accepted_and_trusts_nginx_alone(tmp_path, monkeypatch):
    use_test_secrets(monkeypatch)
    monkeypatch.setenv("IVR_CONFIG", str(PRODUCTION))
    monkeypatch.setenv("DATABASE_URL", environment_file(ENV_EXAMPLE)["DATABASE_URL"])
    settings = load_settings(tmp_path)
    assert settings.public_base_url == "https://ivr.example.gov.cn"
    assert settings.trusted_proxies == 1 and settings.secure_cookies is True and settings.two_factor == "admins"
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert unchecked_forwarding(settings) is None  # no warning at start
    assert {h.name for h in settings.hotlines.values()} == {"12333", "12345"}
    # The host Twilio calls is the one nginx answers for and Prometheus checks the certificate of.
    host = urlsplit(settings.public_base_url).hostname
    assert set(re.findall(r"server_name (\S+);", SITE.read_text(encoding="utf-8"))) == {host}
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))["scrape_configs"][0]
    assert scrape["tls_config"]["server_name"] == host


def test_the_production_configuration_names_every_setting_config_yaml_does():
    """IVR_CONFIG replaces config.yaml whole: a setting it lacks would silently take its default,
    and a misspelt one would be ignored."""
    def paths(tree, prefix=""):
        for key, value in tree.items():
            here = f"{prefix}{key}"
            yield here
            if isinstance(value, dict) and here != "hotlines.numbers":  # the city's own numbers
                yield from paths(value, here + ".")

    base = set(paths(yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))))
    production = set(paths(yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))))
    assert base - production == set(), "add these to deploy/config.production.yaml"
    assert production - base == set(), "config.yaml has no such settings"


@pytest.fixture
def production_app(database_url, monkeypatch, clock):
    """The app built from deploy/config.production.yaml, as the web unit builds it."""
    use_test_secrets(monkeypatch)
    monkeypatch.setenv("IVR_CONFIG", str(PRODUCTION))
    monkeypatch.setenv("IVR_METRICS_TOKEN", "test-metrics-token")
    app = create_app({"database_url": database_url})
    create_schema(app.extensions["engine"])
    yield app
    app.extensions["engine"].dispose()


def test_behind_nginx_the_production_app_accepts_twilio_and_knows_who_scrapes(production_app):
    """The headers nginx sets (checked against a real nginx below), replayed to the app."""
    client = production_app.test_client()
    public = "https://ivr.example.gov.cn"
    from_nginx = {"X-Forwarded-For": "192.0.2.10", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.gov.cn"}
    loopback = {"REMOTE_ADDR": "127.0.0.1"}
    # Twilio signs the URL it calls; nginx reaches gunicorn over plain http on loopback.
    answered = signed_post(client, "/voice", FORM, base=public, headers=from_nginx)
    assert answered.status_code == 200 and b"<Response>" in answered.data
    assert signed_post(client, "/voice", FORM, base="http://127.0.0.1:8000", headers=from_nginx).status_code == 403
    # The monitoring host is not mistaken for loopback: it needs the token.
    assert client.get("/metrics", base_url=public, headers=from_nginx, environ_base=loopback).status_code == 403
    scraped = client.get("/metrics", base_url=public, environ_base=loopback,
                         headers={**from_nginx, "Authorization": "Bearer test-metrics-token"})
    assert scraped.status_code == 200 and b"ivr_webhooks_total" in scraped.data
    # This host itself, through nginx (X-Forwarded-For 127.0.0.1) or straight to gunicorn, needs none.
    assert client.get("/metrics", base_url=public, environ_base=loopback,
                      headers={**from_nginx, "X-Forwarded-For": "127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base=loopback).status_code == 200


# --- nginx ----------------------------------------------------------------------------------------

def self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for host (EC P-256, a day)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def replaced(text: str, old: str, new: str, times: int = 1) -> str:
    """Replace a directive the site must hold exactly `times` times."""
    assert text.count(old) == times, f"the site should hold {old!r} {times} time(s)"
    return text.replace(old, new)


def nginx_prefix(tmp_path: Path, site: str) -> Path:
    """A prefix with an nginx.conf that includes the site as Debian's does (inside http {}),
    its certificate swapped for a self-signed one; returns the nginx.conf."""
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = self_signed(prefix, "ivr.example.gov.cn")
    site = replaced(site, "/etc/letsencrypt/live/ivr.example.gov.cn/fullchain.pem", str(cert))
    site = replaced(site, "/etc/letsencrypt/live/ivr.example.gov.cn/privkey.pem", str(key))
    site = replaced(site, "access_log /var/log/nginx/access.log ", f"access_log {prefix}/access.log ")
    (prefix / "ivr-hotline.conf").write_text(site, encoding="utf-8")
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    include {prefix}/ivr-hotline.conf;
}}
""", encoding="utf-8")
    return conf


def test_the_nginx_site_passes_nginx_t(tmp_path):
    nginx = tool("nginx", "nginx")
    conf = nginx_prefix(tmp_path, SITE.read_text(encoding="utf-8"))
    done = run(nginx, "-t", "-p", conf.parent, "-e", conf.parent / "error.log", "-c", conf)
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr
    assert not re.search(r"\[(warn|emerg|alert|crit)\]", done.stderr), done.stderr


class Backend(http.server.ThreadingHTTPServer):
    """Stands in for gunicorn: answers 200 with what it received, and keeps it."""

    daemon_threads = True

    def __init__(self):
        self.seen: list[dict] = []
        super().__init__(("127.0.0.1", 0), Echo)


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        seen = {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        self.server.seen.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = handle_one

    def log_message(self, *args):
        pass


@pytest.fixture
def nginx_in_front(tmp_path):
    """The site in a real nginx on loopback ports, in front of the stand-in for gunicorn.

    Only addresses change: ports for 80 and 443 (IPv4 loopback only), the backend's port for
    127.0.0.1:8000, and 127.0.0.2 as the monitoring network. Yields (https port, http port, backend).
    """
    nginx = tool("nginx", "nginx")
    backend = Backend()
    threading.Thread(target=backend.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    https, plain = free_port(), free_port()
    site = SITE.read_text(encoding="utf-8")
    site = replaced(site, "listen 80;", f"listen 127.0.0.1:{plain};")
    site = replaced(site, "listen [::]:80;", "")
    site = replaced(site, "listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;")
    site = replaced(site, "listen [::]:443 ssl;", "")
    site = replaced(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{backend.server_port};")
    site = replaced(site, "allow 192.0.2.0/24;", "allow 127.0.0.2;", times=2)
    conf = nginx_prefix(tmp_path, site)
    process = subprocess.Popen([nginx, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", https), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening within 10 s"
                time.sleep(0.05)
        yield https, plain, backend
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()
        backend.shutdown()
        backend.server_close()


def connect(port: int, source: str = "127.0.0.3", tls: bool = True) -> http.client.HTTPConnection:
    """A connection to nginx from a loopback source address (all of 127.0.0.0/8 is this host's)."""
    if not tls:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the test's own certificate
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10, source_address=(source, 0))


def request(port: int, method: str, path: str, *, source: str = "127.0.0.3", tls: bool = True,
            headers: dict[str, str] | None = None, body: bytes | None = None,
            connection: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to nginx for the hotline's host name (on a new connection unless given one)."""
    connection = connection or connect(port, source, tls)
    connection.request(method, path, body=body, headers={"Host": "ivr.example.gov.cn", **(headers or {})})
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_nginx_logs_the_holder_search_without_its_query_and_other_requests_in_full(nginx_in_front, tmp_path):
    https, _, backend = nginx_in_front
    searched, referrer = "370202198503120025", "https://ivr.example.gov.cn/agent/holders?q=13800000001"
    for path in (f"/agent/holders?q={searched}", f"/agent/holders/7?q={searched}"):
        assert request(https, "GET", path, headers={"Referer": referrer})[0] == 200
    assert request(https, "GET", "/voice/step?t=2&e=silence")[0] == 200
    assert [seen["path"] for seen in backend.seen] == [f"/agent/holders?q={searched}", f"/agent/holders/7?q={searched}",
                                                       "/voice/step?t=2&e=silence"]  # the app gets the query
    log = (tmp_path / "nginx" / "access.log").read_text(encoding="utf-8")
    lines = log.splitlines()
    assert '"GET /agent/holders HTTP/1.1" 200' in lines[0] and '"GET /agent/holders/7 HTTP/1.1" 200' in lines[1]
    assert searched not in log and "13800000001" not in log
    assert '"GET /voice/step?t=2&e=silence HTTP/1.1" 200' in lines[2]  # everything else: as nginx logs it


def test_nginx_redirects_plain_http_to_https(nginx_in_front):
    https, plain, backend = nginx_in_front
    status, headers, _ = request(plain, "GET", "/voice?t=1", tls=False)
    assert status == 301 and headers["location"] == "https://ivr.example.gov.cn/voice?t=1"
    assert backend.seen == []


def test_nginx_overwrites_the_forwarded_headers_a_client_sends_on_every_path_it_proxies(nginx_in_front):
    https, _, backend = nginx_in_front
    forged = {"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}
    for method, path, source in [("POST", "/voice", "127.0.0.3"), ("POST", "/voice/step?t=2&e=silence", "127.0.0.3"),
                                 ("POST", "/voice/status", "127.0.0.3"), ("GET", "/prompts/audio/main.menu.wav", "127.0.0.3"),
                                 ("GET", "/agent/", "127.0.0.3"), ("POST", "/agent/login", "127.0.0.3"),
                                 ("POST", "/agent/2fa/code", "127.0.0.3"), ("GET", "/metrics", "127.0.0.2"),
                                 ("GET", "/healthz", "127.0.0.2")]:
        status, headers, body = request(https, method, path, source=source, headers=forged, body=b"a=1")
        assert status == 200, (path, status, body)
        seen = json.loads(body)
        assert seen["path"] == path and seen["method"] == method
        assert seen["headers"]["X-Forwarded-For"] == source, path  # the client's own, not appended to the forged one
        assert seen["headers"]["X-Forwarded-Proto"] == "https", path
        assert seen["headers"]["X-Forwarded-Host"] == seen["headers"]["Host"] == "ivr.example.gov.cn", path
        assert headers["strict-transport-security"].startswith("max-age="), path
    assert len(backend.seen) == 9


def test_nginx_lets_only_the_monitoring_network_reach_metrics_and_passes_the_token_on(nginx_in_front):
    https, _, backend = nginx_in_front
    for path in ("/metrics", "/healthz"):
        assert request(https, "GET", path, source="127.0.0.3")[0] == 403
    assert backend.seen == []
    status, _, body = request(https, "GET", "/metrics", source="127.0.0.2", headers={"Authorization": "Bearer tok"})
    assert status == 200 and json.loads(body)["headers"]["Authorization"] == "Bearer tok"
    assert request(https, "GET", "/metrics", source="127.0.0.1")[0] == 200  # the host itself


def test_a_login_flood_is_stopped_by_nginx_before_it_reaches_gunicorn(nginx_in_front):
    https, _, backend = nginx_in_front
    connection = connect(https)
    statuses = []
    started = time.monotonic()
    for _ in range(40):  # as fast as one connection goes: far beyond 5 a second
        status, headers, body = request(https, "POST", "/agent/login", body=b"username=x&password=y",
                                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                                        connection=connection)
        statuses.append(status)
        if status == 429:
            assert "登录尝试过于频繁" in body.decode() and headers["retry-after"] == "60"
    elapsed = time.monotonic() - started
    logins = [s for s in backend.seen if s["path"] == "/agent/login"]
    # At most the burst (10) and 5 a second got through, however slow this machine is.
    assert len(logins) == statuses.count(200) <= 11 + 5 * elapsed + 1, (elapsed, statuses)
    assert statuses.count(429) == 40 - len(logins) > 0, statuses
    # The login page itself, the console and the webhooks are not limited.
    assert {request(https, "GET", "/agent/login")[0] for _ in range(25)} == {200}
    assert request(https, "POST", "/voice", body=b"CallSid=CA1")[0] == 200


def test_nginx_refuses_big_bodies_and_serves_nothing_but_the_hotline(nginx_in_front):
    https, _, backend = nginx_in_front
    connection = connect(https)
    connection.putrequest("POST", "/voice", skip_host=True)
    connection.putheader("Host", "ivr.example.gov.cn")
    connection.putheader("Content-Length", str(1024 * 1024))
    connection.endheaders()  # refused on its Content-Length, before a byte of the body
    assert connection.getresponse().status == 413
    for path in ("/", "/.env", "/voiceover", "/agentx", "/metrics/x"):
        assert request(https, "GET", path)[0] == 404, path
    status, headers, _ = request(https, "GET", "/agent")
    assert status == 301 and headers["location"].endswith("/agent/")
    assert backend.seen == []


# --- Prometheus -----------------------------------------------------------------------------------

def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def test_the_alert_rules_have_the_structure_prometheus_loads():
    """Checked whether or not promtool is here (the promtool tests below skip without it)."""
    alerts = rules()
    names = [rule["alert"] for rule in alerts]
    assert {"IvrWebhookSlow", "IvrDatabaseErrors", "IvrOutboxBacklog", "IvrContainmentDropped",
            "IvrCalendarDataEnding"} <= set(names) and len(names) == len(set(names))
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for rule in alerts:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["labels"]["service"] == "ivr-hotline"
        for text in (rule["annotations"]["summary"], rule["annotations"]["description"]):
            assert cjk.search(text) and " / " in text, f"{rule['alert']}: Chinese, then English after ' / '"
    # Every alert has a case that fires and one that stays quiet in the promtool unit tests.
    cases = [case for group in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
             for case in group["alert_rule_test"]]
    for name in names:
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires in a test"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} is never shown quiet"


def test_every_metric_the_alert_rules_read_is_one_the_app_exposes(client):
    exposed = set(re.findall(r"^# TYPE (\S+) ", client.get("/metrics").get_data(as_text=True), re.M))
    used = set()
    for rule in rules():
        used |= set(re.findall(r"\b(ivr_[a-z_]+)", rule["expr"]))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}  # a histogram's series
    assert families and families <= exposed, f"not exposed by /metrics: {sorted(families - exposed)}"


def test_the_alert_rules_pass_promtool_check_rules():
    promtool = tool("promtool", "prometheus")
    done = run(promtool, "check", "rules", RULES)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_each_alert_fires_on_its_synthetic_series_and_stays_quiet_on_a_healthy_one():
    promtool = tool("promtool", "prometheus")
    done = run(promtool, "test", "rules", RULE_TESTS, cwd=DEPLOY)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_the_prometheus_scrape_job_passes_promtool_check_config(tmp_path):
    promtool = tool("promtool", "prometheus")
    shutil.copy(DEPLOY / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "ivr-hotline-rules.yml")  # where the file says to put them
    (tmp_path / "ivr-hotline-metrics.token").write_text("not-the-real-token\n")
    done = run(promtool, "check", "config", tmp_path / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    job = yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["job_name"] == "ivr-hotline" and 'up{job="ivr-hotline"}' in rules()[0]["expr"]
    assert job["scheme"] == "https" and job["authorization"]["type"] == "Bearer"

