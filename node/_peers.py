"""The p2p address book kept in the node's store (p2p's `AddressBook`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from ._store import Database, Store

MAX_PEERS = 1000
SCHEMA = """
CREATE TABLE peers (
    peer_id   TEXT PRIMARY KEY,
    addrs     TEXT NOT NULL,
    last_seen REAL NOT NULL
);
"""
"""The address book's table (node migration 2), so a restarted node reconnects."""


def _load(db: Database) -> list[tuple[str, list[str]]]:
    rows = db.conn.execute(
        "SELECT peer_id, addrs FROM peers ORDER BY last_seen DESC LIMIT ?", (MAX_PEERS,)
    )
    out = []
    for row in rows:
        try:
            addrs = [a for a in json.loads(row["addrs"]) if isinstance(a, str)]
        except ValueError:
            continue
        out.append((row["peer_id"], addrs))
    return out


def _save(db: Database, peers: Sequence[tuple[str, list[str]]]) -> None:
    now = time.time()
    with db.transaction() as conn:
        conn.executemany(
            "INSERT INTO peers(peer_id, addrs, last_seen) VALUES (?,?,?) ON CONFLICT(peer_id) "
            "DO UPDATE SET addrs = excluded.addrs, last_seen = excluded.last_seen",
            [(peer, json.dumps(addrs), now) for peer, addrs in peers],
        )
        conn.execute(
            "DELETE FROM peers WHERE peer_id NOT IN "
            "(SELECT peer_id FROM peers ORDER BY last_seen DESC LIMIT ?)",
            (MAX_PEERS,),
        )


class StoreAddressBook:
    """Known peers in the ``peers`` table; every call runs off the trio loop."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load(self) -> list[tuple[str, list[str]]]:
        return await self._store.run(_load, self._store.db)

    async def save(self, peers: Sequence[tuple[str, list[str]]]) -> None:
        await self._store.run(_save, self._store.db, list(peers))
