"""Reputation: what this node has seen of each provider, decaying, kept in SQLite.

Reputation is local: each node scores providers from its own experience only
(nothing a peer says about another is believed). Every task attempt adds
weight to a provider's good or bad side; both sides decay with a half-life, so
old behaviour fades and a provider can earn its way back:

    ok            good += 1      a run whose receipt and output held up
    refused       bad  += 0.25   it said no (stale card, busy, cannot fetch the build)
    failed        bad  += 1      timed out, dropped the connection, or broke off
    bad_receipt   bad  += 5      a forged or mismatched quote or receipt
    wrong         bad  += 10     an output that a second opinion proved wrong

    score = (good + 1) / (good + bad + 2)     in (0, 1); 0.5 for a stranger

Latency is an exponentially weighted mean of round trips of ok runs. Standings
are cached in memory; the task log commits the ones a task changed together
with the task's record.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, astuple, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from .._store import Database

SCHEMA = """
CREATE TABLE reputation (
    provider   TEXT PRIMARY KEY,
    good       REAL NOT NULL,
    bad        REAL NOT NULL,
    updated    REAL NOT NULL,
    latency_ms REAL,
    ok         INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    refused    INTEGER NOT NULL,
    bad_receipt INTEGER NOT NULL,
    wrong      INTEGER NOT NULL
);
"""

WEIGHTS = {"ok": 1.0, "refused": 0.25, "failed": 1.0, "bad_receipt": 5.0, "wrong": 10.0}
LATENCY_ALPHA = 0.2
MAX_PROVIDERS = 100_000


@dataclass(frozen=True)
class Standing:
    """One provider's record as this node has seen it."""

    provider: str
    good: float = 0.0
    bad: float = 0.0
    updated: float = 0.0
    latency_ms: float | None = None
    ok: int = 0
    failed: int = 0
    refused: int = 0
    bad_receipt: int = 0
    wrong: int = 0

    def decayed(self, now: float, half_life_s: float) -> Standing:
        if self.updated <= 0 or now <= self.updated:
            return self
        factor = math.pow(0.5, (now - self.updated) / half_life_s)
        return replace(self, good=self.good * factor, bad=self.bad * factor, updated=now)

    @property
    def score(self) -> float:
        return (self.good + 1.0) / (self.good + self.bad + 2.0)

    def counted(self, event: str, now: float, latency_ms: float | None) -> Standing:
        if event not in WEIGHTS:
            raise ValueError(f"unknown reputation event {event!r}")
        changes: dict[str, Any] = {event: getattr(self, event) + 1, "updated": now}
        if event == "ok":
            changes["good"] = self.good + WEIGHTS[event]
            if latency_ms is not None:
                changes["latency_ms"] = (
                    latency_ms
                    if self.latency_ms is None
                    else (1 - LATENCY_ALPHA) * self.latency_ms + LATENCY_ALPHA * latency_ms
                )
        else:
            changes["bad"] = self.bad + WEIGHTS[event]
        return replace(self, **changes)

    def view(self, now: float, half_life_s: float) -> dict[str, Any]:
        """What `mercato providers` shows: the decayed score and the plain counts."""
        current = self.decayed(now, half_life_s)
        out = asdict(current)
        out["score"] = round(current.score, 4)
        out["good"], out["bad"] = round(current.good, 3), round(current.bad, 3)
        if current.latency_ms is not None:
            out["latency_ms"] = round(current.latency_ms, 2)
        return out


class ReputationBook:
    """Standings of every provider this node has dealt with; in memory, loaded once."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._standings: dict[str, Standing] = {}

    def load(self, db: Database) -> None:
        """Read every standing (runs in the store's thread)."""
        rows = db.conn.execute(
            "SELECT provider, good, bad, updated, latency_ms, ok, failed, refused,"
            " bad_receipt, wrong FROM reputation ORDER BY updated DESC LIMIT ?",
            (MAX_PROVIDERS,),
        ).fetchall()
        self._standings = {row[0]: Standing(*row) for row in rows}

    def get(self, provider: str, now: float | None = None) -> Standing:
        now = time.time() if now is None else now
        return self._standings.get(provider, Standing(provider)).decayed(now, self.half_life_s)

    def current(self, provider: str) -> Standing:
        """The standing as last recorded (not decayed to now): what is persisted."""
        return self._standings.get(provider, Standing(provider))

    def score(self, provider: str) -> float:
        return self.get(provider).score

    def record(self, provider: str, event: str, latency_ms: float | None = None) -> Standing:
        """Count one event; returns the new standing, which the caller persists with `save`."""
        now = time.time()
        standing = self.get(provider, now).counted(event, now, latency_ms)
        self._standings[provider] = standing
        if len(self._standings) > MAX_PROVIDERS:  # forget the one unseen the longest
            oldest = min(self._standings.values(), key=lambda s: s.updated)
            del self._standings[oldest.provider]
        return standing


def save(conn: sqlite3.Connection, standings: list[Standing]) -> None:
    """Write standings back, inside the caller's transaction (in the store's thread)."""
    conn.executemany(
        "INSERT OR REPLACE INTO reputation (provider, good, bad, updated, latency_ms, ok,"
        " failed, refused, bad_receipt, wrong) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [astuple(s) for s in standings],
    )
