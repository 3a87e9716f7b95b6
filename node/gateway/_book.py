"""The gateway's book: x402 payments taken, and the royalties forwarded to creators.

Three tables of the node's SQLite file (node migrations 9 and 10):

- ``x402_payments``: one row per payment, keyed by the hash of its signed
  message (settlement's replay key), written before anything runs: a second
  call with the same payment finds the row and is refused, even while the
  first is in flight. ``claimed`` while it runs; ``settled`` once the ledger
  took it; ``unknown`` when the ledger could not say (the row is resolved
  later: by the transaction's status, once its blockhash expired). A call that
  settles nothing (its run failed, or the ledger refused the transaction, or
  it never landed) deletes its row: the same payment may be tried again.
- ``x402_results``: the answer (output and signed receipt) of a call whose
  payment was ``unknown`` when it ended: the buyer gets it by sending the same
  payment again once the ledger shows it landed (migration 10).
- ``x402_forwards``: the transfers that pay creators their royalties, stored
  with their signature and blockhash before they are sent (``sending``), so a
  crash neither loses one nor pays it twice: it is ``paid`` once the ledger has
  it, and dropped (its payments due again) once it can no longer land.

Every function here blocks: call it through `Store.run`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._store import Database

SCHEMA = """
CREATE TABLE x402_payments (
    message    TEXT PRIMARY KEY,
    signature  TEXT NOT NULL,
    payer      TEXT NOT NULL,
    agent      TEXT NOT NULL,
    asset      TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    creator    TEXT NOT NULL,
    royalty    INTEGER NOT NULL,
    blockhash  TEXT NOT NULL,
    status     TEXT NOT NULL,
    forward    TEXT,
    created    REAL NOT NULL
);
CREATE INDEX x402_payments_status ON x402_payments(status, forward);
CREATE TABLE x402_forwards (
    signature  TEXT PRIMARY KEY,
    creator    TEXT NOT NULL,
    asset      TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    blockhash  TEXT NOT NULL,
    status     TEXT NOT NULL,
    created    REAL NOT NULL
);
"""
RESULTS_SCHEMA = """
CREATE TABLE x402_results (
    message  TEXT PRIMARY KEY,
    output   BLOB NOT NULL,
    receipt  BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class PaymentRow:
    message: str
    """sha256 of the payment's signed message, hex: the key against replays."""
    signature: str
    """The co-signed transaction's signature (the fee payer's): what the ledger shows."""
    payer: str
    agent: str
    asset: str
    amount: int
    creator: str
    royalty: int
    """What the creator is owed once the payment is settled (0: nothing)."""
    blockhash: str
    status: str = "claimed"
    forward: str | None = None
    created: float = 0.0


@dataclass(frozen=True)
class Due:
    """Royalties owed to one creator in one asset, and the payments they come from."""

    creator: str
    asset: str
    amount: int
    payments: tuple[str, ...]


@dataclass(frozen=True)
class ForwardRow:
    signature: str
    creator: str
    asset: str
    amount: int
    blockhash: str
    created: float = 0.0


@dataclass(frozen=True)
class Stored:
    """A payment whose call ended before the ledger said, and that call's answer."""

    row: PaymentRow
    output: bytes
    receipt: bytes
    """The signed receipt."""


def claim(db: Database, row: PaymentRow) -> bool:
    """Record a payment before it runs; False if it was recorded before (a replay)."""
    with db.transaction() as conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO x402_payments VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.message, row.signature, row.payer, row.agent, row.asset, row.amount,
                row.creator, row.royalty, row.blockhash, "claimed", None, row.created,
            ),
        )  # fmt: skip
        return cursor.rowcount == 1


def release(db: Database, message: str) -> None:
    """Forget a payment that settled nothing (and its answer): it may be tried again."""
    with db.transaction() as conn:
        cursor = conn.execute(
            "DELETE FROM x402_payments WHERE message = ? AND status != 'settled'", (message,)
        )
        if cursor.rowcount:
            conn.execute("DELETE FROM x402_results WHERE message = ?", (message,))


def pending(db: Database, message: str, output: bytes, receipt: bytes) -> None:
    """A payment the ledger could not confirm yet (``unknown``), with its call's
    answer, kept for the buyer's retry."""
    with db.transaction() as conn:
        conn.execute("UPDATE x402_payments SET status = 'unknown' WHERE message = ?", (message,))
        conn.execute(
            "INSERT OR REPLACE INTO x402_results VALUES (?,?,?)", (message, output, receipt)
        )


def stored(db: Database, message: str) -> Stored | None:
    """The payment ``message`` and its kept answer, if its call kept one."""
    found = db.conn.execute(
        "SELECT p.*, r.output, r.receipt FROM x402_payments p "
        "JOIN x402_results r ON r.message = p.message WHERE p.message = ?",
        (message,),
    ).fetchone()
    if found is None:
        return None
    return Stored(PaymentRow(*found[:-2]), found[-2], found[-1])


def mark(db: Database, message: str, status: str) -> None:
    """``settled`` (the ledger took it) or ``unknown`` (it could not say)."""
    with db.transaction() as conn:
        conn.execute("UPDATE x402_payments SET status = ? WHERE message = ?", (status, message))


def unresolved(db: Database) -> list[PaymentRow]:
    """Payments neither settled nor released: in flight, or left by a crash, or
    whose transaction the ledger could not confirm."""
    rows = db.conn.execute(
        "SELECT * FROM x402_payments WHERE status IN ('claimed', 'unknown')"
    ).fetchall()
    return [PaymentRow(*row) for row in rows]


def due(db: Database) -> list[Due]:
    """Royalties of settled payments that no forward pays yet, by creator and asset."""
    rows = db.conn.execute(
        "SELECT creator, asset, royalty, message FROM x402_payments "
        "WHERE status = 'settled' AND royalty > 0 AND forward IS NULL ORDER BY created"
    ).fetchall()
    grouped: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for creator, asset, royalty, message in rows:
        grouped.setdefault((creator, asset), []).append((royalty, message))
    return [
        Due(creator, asset, sum(r for r, _ in items), tuple(m for _, m in items))
        for (creator, asset), items in grouped.items()
    ]


def start_forward(db: Database, forward: ForwardRow, payments: tuple[str, ...], now: float) -> None:
    """Store a signed forward before it is sent, and the payments it pays."""
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO x402_forwards VALUES (?,?,?,?,?,'sending',?)",
            (forward.signature, forward.creator, forward.asset, forward.amount,
             forward.blockhash, now),
        )  # fmt: skip
        conn.executemany(
            "UPDATE x402_payments SET forward = ? WHERE message = ?",
            [(forward.signature, message) for message in payments],
        )


def sending(db: Database) -> list[ForwardRow]:
    rows = db.conn.execute(
        "SELECT signature, creator, asset, amount, blockhash, created FROM x402_forwards "
        "WHERE status = 'sending'"
    ).fetchall()
    return [ForwardRow(*row) for row in rows]


def forward_paid(db: Database, signature: str) -> None:
    with db.transaction() as conn:
        conn.execute("UPDATE x402_forwards SET status = 'paid' WHERE signature = ?", (signature,))


def forward_dropped(db: Database, signature: str) -> None:
    """A forward that can no longer land: its payments' royalties are due again."""
    with db.transaction() as conn:
        conn.execute("DELETE FROM x402_forwards WHERE signature = ?", (signature,))
        conn.execute("UPDATE x402_payments SET forward = NULL WHERE forward = ?", (signature,))


def owed(db: Database) -> int:
    """Royalties of settled payments not yet paid to their creators (base units)."""
    (unpaid,) = db.conn.execute(
        "SELECT COALESCE(SUM(p.royalty), 0) FROM x402_payments p "
        "LEFT JOIN x402_forwards f ON f.signature = p.forward "
        "WHERE p.status = 'settled' AND p.royalty > 0 AND (f.status IS NULL OR f.status != 'paid')"
    ).fetchone()
    return int(unpaid)
