"""What this node pays for the tasks it asks others to run, by UTC day.

The runner writes each price a task paid for (a run with a good receipt, a
second opinion, a price a provider used without answering) to the ``spending``
table as it counts it used, in the store's thread; `SpendLog.spent_since` sums
them. A price that bought nothing stays credit on its channel and is counted
when a later task uses it. A run in flight holds a `Budget`: the most it may
still pay, reserved in memory (`SpendLog.reserved`) so that two runs at once
cannot both pass a daily limit. Rows older than KEEP_S go as new ones come.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .._store import Database, Store

SCHEMA = """
CREATE TABLE spending (
    time      REAL NOT NULL,
    lamports  INTEGER NOT NULL,
    provider  TEXT NOT NULL,
    task      TEXT NOT NULL
);
CREATE INDEX spending_time ON spending(time);
"""

KEEP_S = 3 * 86_400.0


def day_start(now: float) -> float:
    """The start (00:00 UTC) of the UTC day of ``now``."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


@dataclass
class Budget:
    """What one run may pay in all (None: no limit), and what it has paid."""

    limit: int | None
    paid: int = 0

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.paid, 0)

    def allows(self, price: int) -> bool:
        return self.limit is None or self.paid + price <= self.limit


class SpendLog:
    """The durable record of what tasks paid, and the budgets of runs in flight."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._held: list[Budget] = []
        self.lock = trio.Lock()
        """Held to read what is spent and reserved and reserve more at once; payments
        are recorded under it too, so a reader never sees one in neither count."""

    @property
    def reserved(self) -> int:
        """Lamports the runs in flight may still pay."""
        return sum(b.left or 0 for b in self._held)

    def hold(self, budget: Budget) -> None:
        """Reserve ``budget`` until `release`."""
        self._held.append(budget)

    def release(self, budget: Budget) -> None:
        self._held = [b for b in self._held if b is not budget]

    async def record(self, lamports: int, provider: str, task: str, budget: Budget) -> None:
        """Count ``lamports`` as paid by ``task`` (durable once this returns)."""
        if lamports <= 0:
            return
        async with self.lock:
            try:
                await self._store.run(
                    _insert, self._store.db, time.time(), lamports, provider, task
                )
            finally:  # paid all the same
                budget.paid += lamports

    async def totals(self, now: float) -> tuple[int, int]:
        """(lamports paid on the UTC day of ``now``, lamports reserved); call it
        holding `lock`."""
        spent = await self._store.run(_sum, self._store.db, day_start(now))
        return spent, self.reserved


def _insert(db: Database, now: float, lamports: int, provider: str, task: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO spending (time, lamports, provider, task) VALUES (?, ?, ?, ?)",
            (now, lamports, provider, task),
        )
        conn.execute("DELETE FROM spending WHERE time < ?", (now - KEEP_S,))


def _sum(db: Database, start: float) -> int:
    (total,) = db.conn.execute(
        "SELECT coalesce(sum(lamports), 0) FROM spending WHERE time >= ?", (start,)
    ).fetchone()
    return int(total)
