"""Runs asked with an idempotency key: each runs and pays once, whatever the retries.

`RunKeys.once` keeps, per key, a hash of the request and the result of the
first run that succeeded, in the ``run_keys`` table (node migration 7), for
KEEP_S. A retry with the same key and request gets that result; one that
comes while the first is still running waits for it; the same key with
another request is `KeyReused`. A run that fails is not kept, so a retry runs
again (the waiters too: the first of them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._messages import KeyReused

if TYPE_CHECKING:
    from .._store import Database, Store

SCHEMA = """
CREATE TABLE run_keys (
    key       TEXT PRIMARY KEY,
    request   TEXT NOT NULL,
    result    TEXT NOT NULL,
    created   REAL NOT NULL
);
CREATE INDEX run_keys_created ON run_keys(created);
"""

KEEP_S = 86_400.0

log = logging.getLogger("mercato.tasks")


@dataclass
class _Flight:
    request: str
    done: trio.Event
    result: str | None = None


class RunKeys:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._flights: dict[str, _Flight] = {}

    async def once(self, key: str, request: str, run: Callable[[], Awaitable[str]]) -> str:
        """The result of the first run under ``key`` that succeeded, running
        ``run()`` if there is none (yet). ``request`` identifies what was asked
        (a hash of the arguments). KeyReused if ``key`` went with another one."""
        while (flight := self._flights.get(key)) is not None:
            _same(key, flight.request, request)
            await flight.done.wait()
            if flight.result is not None:
                return flight.result
        flight = self._flights[key] = _Flight(request, trio.Event())
        try:
            kept = await self._store.run(_get, self._store.db, key, time.time() - KEEP_S)
            if kept is not None:
                _same(key, kept[0], request)
                flight.result = kept[1]
                return kept[1]
            result = await run()
            flight.result = result
            with trio.CancelScope(shield=True):
                try:
                    await self._store.run(_put, self._store.db, key, request, result, time.time())
                except Exception as exc:  # the run is done: the caller still gets it
                    log.warning("could not keep a run's result: %s", exc, extra={"key": key})
            return result
        finally:
            del self._flights[key]
            flight.done.set()


def _same(key: str, kept: str, request: str) -> None:
    if kept != request:
        raise KeyReused(
            f"idempotency key {key!r} was used for another request (other agent, input, "
            "provider or max_price) in the last 24 h: use a new key for a new run"
        )


def _get(db: Database, key: str, since: float) -> tuple[str, str] | None:
    row = db.conn.execute(
        "SELECT request, result FROM run_keys WHERE key = ? AND created >= ?", (key, since)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _put(db: Database, key: str, request: str, result: str, now: float) -> None:
    with db.transaction() as conn:
        conn.execute("DELETE FROM run_keys WHERE created < ?", (now - KEEP_S,))
        conn.execute(
            "INSERT OR REPLACE INTO run_keys (key, request, result, created) VALUES (?, ?, ?, ?)",
            (key, request, result, now),
        )
