"""Loopback helpers for the tests that run real servers."""
from __future__ import annotations

import socket


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
