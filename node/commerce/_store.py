"""What this node bought (`LicenceBook`) and what its creators sold (`SalesBook`).

Both are caches of the ledger, kept so that `mercato licences`, `sales` and a
task's choice of licence answer without a ledger round trip: the ledger stays
the truth, and providers read it, not these tables. A row is written before
the node says a purchase or sale succeeded, in the store's thread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, astuple, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from .._store import Store


def _table(name: str) -> str:
    return f"""
CREATE TABLE {name} (
    mint         TEXT PRIMARY KEY,
    agent        TEXT NOT NULL,
    plan         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    versions     TEXT NOT NULL,
    expires      INTEGER NOT NULL,
    refund_until INTEGER NOT NULL,
    price        INTEGER NOT NULL,
    party        TEXT NOT NULL,
    signature    TEXT NOT NULL,
    time         REAL NOT NULL,
    refunded     TEXT NOT NULL,
    pending      INTEGER NOT NULL,
    blockhash    TEXT NOT NULL
);"""


# The two tables have one shape (`LicenceRow`): bought, and sold.
SCHEMA = (
    _table("licences_held")
    + "\nCREATE INDEX licences_held_agent ON licences_held(agent, expires);"
    + _table("licences_sold")
    + "\nCREATE INDEX licences_sold_agent ON licences_sold(agent, plan);"
    + "\nCREATE INDEX licences_sold_buyer ON licences_sold(party, agent, plan);\n"
)


@dataclass(frozen=True)
class LicenceRow:
    """One licence bought or sold. ``party`` is the creator (bought) or the buyer
    (sold); ``refunded`` the refund's transaction signature, "" if none;
    ``pending`` 1 while its purchase was sent and not yet seen on the ledger, and
    ``blockhash`` the purchase's: once the ledger expires it, it cannot land."""

    mint: str
    agent: str
    plan: str
    kind: str
    versions: str
    expires: int
    refund_until: int
    price: int
    party: str
    signature: str
    time: float
    refunded: str = ""
    pending: int = 0
    blockhash: str = ""

    def state(self, now: float | None = None) -> str:
        """pending, active, expired or refunded (as this node last saw it)."""
        if self.pending:
            return "pending"
        if self.refunded:
            return "refunded"
        if self.expires and self.expires <= (time.time() if now is None else now):
            return "expired"
        return "active"

    def view(self) -> dict[str, Any]:
        shown = {k: v for k, v in asdict(self).items() if k != "blockhash"}
        return {**shown, "state": self.state()}


_COLUMNS = ", ".join(f.name for f in fields(LicenceRow))
_MARKS = ", ".join("?" for _ in fields(LicenceRow))


class _Book:
    TABLE = ""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, row: LicenceRow) -> None:
        """Record ``row``; durable on return. sqlite3.IntegrityError if its mint is
        there already."""

        def write() -> None:
            with self._store.db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO {self.TABLE} ({_COLUMNS}) VALUES ({_MARKS})", astuple(row)
                )

        await self._store.run(write)

    async def remove(self, mint: str) -> None:
        """Forget a row whose transaction the ledger refused."""

        def write() -> None:
            with self._store.db.transaction() as conn:
                conn.execute(f"DELETE FROM {self.TABLE} WHERE mint = ?", (mint,))

        await self._store.run(write)

    async def landed(self, mint: str, signature: str) -> None:
        """The purchase of ``mint`` is on the ledger: no longer pending."""

        def write() -> None:
            with self._store.db.transaction() as conn:
                conn.execute(
                    f"UPDATE {self.TABLE} SET pending = 0, signature = ? WHERE mint = ?",
                    (signature, mint),
                )

        await self._store.run(write)

    async def pending(self) -> list[LicenceRow]:
        return await self._select("WHERE pending = 1", ())

    async def refunded(self, mint: str, signature: str) -> None:
        """Record ``mint`` as refunded by ``signature`` ("" undoes it)."""

        def write() -> None:
            with self._store.db.transaction() as conn:
                conn.execute(
                    f"UPDATE {self.TABLE} SET refunded = ? WHERE mint = ?", (signature, mint)
                )

        await self._store.run(write)

    async def get(self, mint: str) -> LicenceRow | None:
        rows = await self._select("WHERE mint = ?", (mint,))
        return rows[0] if rows else None

    async def all(self, agent: str | None = None, limit: int = 1000) -> list[LicenceRow]:
        """Newest first."""
        if agent is None:
            return await self._select("ORDER BY time DESC LIMIT ?", (limit,))
        return await self._select("WHERE agent = ? ORDER BY time DESC LIMIT ?", (agent, limit))

    async def _select(self, where: str, args: tuple[Any, ...]) -> list[LicenceRow]:
        def read() -> list[LicenceRow]:
            conn: sqlite3.Connection = self._store.db.conn
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {self.TABLE} {where}", args)
            return [LicenceRow(*r) for r in rows.fetchall()]

        return await self._store.run(read)


class LicenceBook(_Book):
    """The licences this node's wallet bought."""

    TABLE = "licences_held"

    async def usable(self, agent: str, now: float | None = None) -> list[LicenceRow]:
        """Licences of ``agent`` neither refunded nor expired, newest first."""
        moment = time.time() if now is None else now
        return [r for r in await self.all(agent) if r.state(moment) == "active"]


class SalesBook(_Book):
    """The licences this node's creators sold."""

    TABLE = "licences_sold"

    async def latest_expiry(self, agent: str, plan: str, buyer: str) -> int:
        """When ``buyer``'s last unrefunded subscription to ``agent``'s ``plan`` ends (0: none)."""

        def read() -> int:
            row = self._store.db.conn.execute(
                "SELECT MAX(expires) FROM licences_sold "
                "WHERE party = ? AND agent = ? AND plan = ? AND refunded = '' AND pending = 0",
                (buyer, agent, plan),
            ).fetchone()
            return int(row[0] or 0)

        return await self._store.run(read)

    async def totals(self) -> list[dict[str, Any]]:
        """Per listing and plan: sales, lamports earned (refunds deducted), refunds;
        sales not yet seen on the ledger are left out."""

        def read() -> list[dict[str, Any]]:
            rows = self._store.db.conn.execute(
                "SELECT agent, plan, COUNT(*), "
                "SUM(CASE WHEN refunded = '' THEN price ELSE 0 END), "
                "SUM(CASE WHEN refunded = '' THEN 0 ELSE 1 END) "
                "FROM licences_sold WHERE pending = 0 GROUP BY agent, plan ORDER BY agent, plan"
            ).fetchall()
            keys = ("agent", "plan", "sales", "lamports", "refunds")
            return [dict(zip(keys, r, strict=True)) for r in rows]

        return await self._store.run(read)
