"""A tiny per-worker cache: a value made at most once per `ttl` for each key, a few keys kept.

The console keeps one per app (`app.extensions["console_cache"]`), so each gunicorn worker has
its own and tests never share one. Time comes from the hotline's one clock (freezegun in tests).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    """Values by key, each reused for `ttl` after it was made; the oldest forgotten beyond `size`."""

    def __init__(self, ttl: timedelta, size: int = 16) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[Hashable, tuple[datetime, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: datetime, make: Callable[[], V]) -> tuple[V, datetime]:
        """Return the key's value and when it was made: the kept one if younger than `ttl`, else a new one."""
        with self._lock:
            kept = self._items.get(key)
        if kept is not None and timedelta(0) <= now - kept[0] < self.ttl:
            return kept[1], kept[0]
        value = make()  # outside the lock: two threads may both make it, neither waits on the other
        with self._lock:
            self._items[key] = (now, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value, now

    def forget(self, key: Hashable) -> None:
        """Drop a key's value (one that should be made again next time: a drawing that failed)."""
        with self._lock:
            self._items.pop(key, None)
