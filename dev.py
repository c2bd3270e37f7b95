#!/usr/bin/env python3
"""Set up and run the hotline with nothing but Python: `python3 dev.py serve` or `python3 dev.py test`.

serve: create .venv, install requirements.txt, create the SQLite schema, load the demo
       cardholders and serve the hotline with gunicorn on http://127.0.0.1:8000
       (HOST and PORT in the environment change that).
test:  create .venv, install requirements.txt and run the whole test suite (extra arguments go
       to pytest).
lint:  create .venv, install requirements.txt, then ruff (pyproject.toml's rule set) and mypy
       (strict on ivr/ and models/); CI runs it before the tests.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
REQS = ROOT / "requirements.txt"


def run(*cmd: str | Path, **kw) -> None:
    """Run a command from the project folder; stop on failure."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True, **kw)


def ensure_venv() -> None:
    """Create the virtualenv and install the pinned requirements when they changed."""
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        run(BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", REQS)
        stamp.write_text(digest)


def main(argv: list[str]) -> int:
    """Dispatch serve, test or lint."""
    if not argv or argv[0] not in ("serve", "test", "lint"):
        print(__doc__)
        return 2
    ensure_venv()
    if argv[0] == "test":
        return subprocess.run([str(BIN / "python"), "-m", "pytest", *argv[1:]], cwd=ROOT).returncode
    if argv[0] == "lint":
        ruff = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT).returncode
        mypy = subprocess.run([str(BIN / "mypy")], cwd=ROOT).returncode
        return ruff or mypy
    flask = [BIN / "flask", "--app", "wsgi"]
    run(*flask, "init-db")
    run(*flask, "seed-demo")
    bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
    os.chdir(ROOT)
    # deploy/gunicorn.conf.py: the metrics of every worker added up (prometheus_client's multiprocess mode).
    os.execv(str(BIN / "gunicorn"), ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--workers", "2", "--bind", bind,
                                     "wsgi:app", *argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
