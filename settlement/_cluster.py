"""The localnet's ledger: an embedded ledger that keeps time and history as a
cluster does, so stock Solana clients work against it unchanged.

- **Slots on a clock**: the localnet calls `advance` every ``SLOT_S``; many
  transactions share a slot. A transaction may use any of the last ``WINDOW``
  blockhashes (its ``lastValidBlockHeight`` is the slot it was made in plus
  ``WINDOW``), or a durable nonce equal to what its nonce account holds. A
  transaction that initializes or advances a nonce ends its slot, so the next
  one may advance that nonce again at once (a cluster would make it wait for
  the next slot). Blockhashes survive a restart: LiteSVM makes the same
  sequence in every process, and the ledger counts its blocks.
- **Legacy and version-0 transactions** (address lookup tables resolved for
  the journal and the history).
- **History**: each transaction that landed (its fee charged, succeeded or
  not) is journaled with the accounts it changed, in the same SQLite
  transaction: wire bytes, slot, time, error, fee, logs, balances before and
  after, compute units. `transaction` and `signatures_for` read it back
  (`history` and `landed_transaction` too: the `Ledger` interface's reads).

Not a cluster: one node, no votes, no forks; every commitment level is the same.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionStatus,
)

from ._errors import LedgerError
from ._ledger import HISTORY_LIMIT, EmbeddedLedger, LandedTransaction, TransactionError

WINDOW = 150  # blockhashes a transaction may use, as on a cluster
SLOT_S = 0.4
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
ALT_PROGRAM = Pubkey.from_string("AddressLookupTab1e1111111111111111111111111")
NONCE_INSTRUCTIONS = frozenset({4, 6})  # AdvanceNonceAccount, InitializeNonceAccount
NONCE_HASH = slice(40, 72)  # the durable nonce in a nonce account's data
ALT_HEADER = 56  # bytes before a lookup table's addresses
MAX_SIGNATURES_PAGE = 1000
HISTORY = """
CREATE TABLE IF NOT EXISTS transactions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    signature  TEXT NOT NULL UNIQUE,
    slot       INTEGER NOT NULL,
    block_time INTEGER NOT NULL,
    tx         BLOB NOT NULL,
    meta       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_slot ON transactions(slot);
CREATE TABLE IF NOT EXISTS address_signatures (
    address TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (address, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    slot       INTEGER PRIMARY KEY,
    blockhash  TEXT NOT NULL,
    block_time INTEGER NOT NULL
);
"""

AnyTransaction = Transaction | VersionedTransaction


@dataclass(frozen=True)
class Outcome:
    """What running a transaction gave."""

    err: TransactionError | None
    logs: list[str]
    units: int
    fee: int
    slot: int
    accounts: list[Account | None] | None = None  # after it, when a simulation asked
    landed: bool = False  # its fee was charged: it is in the history


def error_json(err: TransactionError | None) -> Any:
    """A transaction error as a cluster writes it in JSON (``null`` for none)."""
    if err is None:
        return None
    status = TransactionStatus(0, None, None, err, TransactionConfirmationStatus.Finalized)
    return json.loads(status.to_json())["err"]


class ClusterLedger(EmbeddedLedger):
    """An `EmbeddedLedger` with slots on a clock, a blockhash window and history."""

    name = "localnet"

    def __init__(self, path: Path) -> None:
        self._recent: deque[tuple[Hash, int]] = deque(maxlen=WINDOW)
        self._ready = False
        super().__init__(path)
        self._db.executescript(HISTORY)
        self._svm.with_blockhash_check(False)  # the window below is the check
        self._slot_changed = trio.Event()
        self._ready = True
        self._sync_sysvars()

    # -- slots and blockhashes ------------------------------------------------------

    def _made(self, block: int) -> None:
        self._recent.append((self._svm.latest_blockhash(), block))
        if self._ready:
            self._sync_sysvars()

    def _sync_sysvars(self) -> None:
        """Clock and SlotHashes name this ledger's slots, as programs expect (an
        address lookup table is made for a recent slot)."""
        when = self._svm.get_clock().unix_timestamp
        self._svm.warp_to_slot(self._blocks)
        clock = self._svm.get_clock()
        clock.unix_timestamp = when
        self._svm.set_clock(clock)
        self._svm.set_slot_hashes([(slot, h) for h, slot in reversed(self._recent)])

    async def advance(self) -> int:
        """End the current slot (the localnet's clock calls it); the new slot."""
        self._check()
        self._tick()
        self._expire()
        await self._journal([], history=self._block_row())
        return self._blocks

    def _block_row(self) -> Any:
        """Writes the current slot's row (its blockhash and time), for getBlock."""
        slot, blockhash, when = self._blocks, str(self._svm.latest_blockhash()), self._clock

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO blocks VALUES (?, ?, ?)", (slot, blockhash, when))

        return write

    def hash_of(self, slot: int) -> Hash | None:
        """The blockhash of a recent slot (within the window), else None."""
        for known, block in self._recent:
            if block == slot:
                return known
        return None

    def _expire(self) -> None:
        super()._expire()
        self._slot_changed.set()
        self._slot_changed = trio.Event()

    async def wait_slot(self, after: int) -> int:
        """Return the slot once it is past ``after``."""
        while self._blocks <= after:
            await self._slot_changed.wait()
        return self._blocks

    def valid_until(self, blockhash: Hash) -> int | None:
        """The last block height at which ``blockhash`` is accepted; None if expired."""
        for known, block in self._recent:
            if known == blockhash:
                return block + WINDOW
        return None

    async def blockhash_expired(self, blockhash: Hash) -> bool:
        return self.valid_until(blockhash) is None

    def _acceptable(self, tx: AnyTransaction) -> bool:
        """Its blockhash is in the window, or it is a nonce's and matches the nonce."""
        blockhash = tx.message.recent_blockhash
        if not tx.uses_durable_nonce():
            return self.valid_until(blockhash) is not None
        first = tx.message.instructions[0]
        keys = tx.message.account_keys
        if not first.accounts or first.accounts[0] >= len(keys):
            return False
        nonce = self._svm.get_account(keys[first.accounts[0]])
        if nonce is None or nonce.owner != SYSTEM_PROGRAM or len(nonce.data) < NONCE_HASH.stop:
            return False
        return bytes(nonce.data[NONCE_HASH]) == bytes(blockhash)

    @staticmethod
    def _ends_slot(tx: AnyTransaction) -> bool:
        keys = tx.message.account_keys
        for ix in tx.message.instructions:
            program = keys[ix.program_id_index] if ix.program_id_index < len(keys) else None
            data = bytes(ix.data)
            nonce = len(data) >= 4 and int.from_bytes(data[:4], "little") in NONCE_INSTRUCTIONS
            if program == SYSTEM_PROGRAM and nonce:
                return True
        return False

    # -- accounts a transaction names ----------------------------------------------

    def loaded(self, tx: AnyTransaction) -> tuple[list[Pubkey], list[Pubkey]]:
        """The addresses its lookup tables add: (writable, read-only)."""
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        lookups = getattr(tx.message, "address_table_lookups", None) or []
        for lookup in lookups:
            table = self._svm.get_account(lookup.account_key)
            if table is None or table.owner != ALT_PROGRAM:
                continue
            data = bytes(table.data)
            addresses = [
                Pubkey.from_bytes(data[i : i + 32]) for i in range(ALT_HEADER, len(data) - 31, 32)
            ]
            writable += [addresses[i] for i in lookup.writable_indexes if i < len(addresses)]
            readonly += [addresses[i] for i in lookup.readonly_indexes if i < len(addresses)]
        return writable, readonly

    def all_keys(self, tx: AnyTransaction) -> list[Pubkey]:
        writable, readonly = self.loaded(tx)
        return [*tx.message.account_keys, *writable, *readonly]

    # -- running transactions ---------------------------------------------------------

    async def execute(self, tx: AnyTransaction) -> tuple[TransactionError | None, list[str]]:
        outcome = await self.run(tx)
        return outcome.err, outcome.logs

    async def run(self, tx: AnyTransaction) -> Outcome:
        """Run and commit ``tx``; journal it (accounts and history) if it landed."""
        self._check()
        self._tick()
        slot = self._blocks
        if not self._acceptable(tx):
            return Outcome(TransactionErrorFieldless.BlockhashNotFound, [], 0, 0, slot)
        keys = self.all_keys(tx)
        before = [self._svm.get_balance(k) or 0 for k in keys]
        result = self._svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            meta, err = result.meta(), result.err()
            if meta.fee() == 0:  # refused before its fee: it never landed
                return Outcome(err, list(meta.logs()), 0, 0, slot)
        else:
            meta, err = result, None
        outcome = Outcome(
            err, list(meta.logs()), meta.compute_units_consumed(), meta.fee(), slot, landed=True
        )
        after = [self._svm.get_balance(k) or 0 for k in keys]
        history = self._history_row(tx, outcome, keys, before, after)
        changed = keys if err is None else keys[:1]  # a failure charges the fee payer only
        await self._journal(changed, str(tx.signatures[0]), history)
        if err is None and self._ends_slot(tx):
            self._expire()
        return outcome

    async def simulate_full(
        self,
        tx: AnyTransaction,
        *,
        sig_verify: bool = False,
        any_blockhash: bool = False,
        accounts: list[Pubkey] = (),  # type: ignore[assignment]
    ) -> Outcome:
        """Run ``tx`` without committing, as a cluster's simulateTransaction does."""
        self._check()
        self._tick()
        slot = self._blocks
        if sig_verify and not all(tx.verify_with_results()):  # a cluster checks these first
            return Outcome(TransactionErrorFieldless.SignatureFailure, [], 0, 0, slot)
        if not any_blockhash and not self._acceptable(tx):
            return Outcome(TransactionErrorFieldless.BlockhashNotFound, [], 0, 0, slot)
        self._svm.with_sigverify(sig_verify)
        try:
            result = self._svm.simulate_transaction(tx)
        finally:
            self._svm.with_sigverify(True)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Outcome(result.err(), list(meta.logs()), meta.compute_units_consumed(), 0, slot)
        meta = result.meta()
        post = dict(result.post_accounts())
        shown = [post.get(k, self._svm.get_account(k)) for k in accounts] if accounts else None
        return Outcome(
            None, list(meta.logs()), meta.compute_units_consumed(), meta.fee(), slot, shown
        )

    async def dry_run(self, tx: AnyTransaction) -> tuple[TransactionError | None, list[str]]:
        outcome = await self.simulate_full(tx, sig_verify=True)
        return outcome.err, outcome.logs

    # -- history --------------------------------------------------------------------

    def _history_row(
        self,
        tx: AnyTransaction,
        outcome: Outcome,
        keys: list[Pubkey],
        before: list[int],
        after: list[int],
    ) -> Any:
        writable, readonly = self.loaded(tx)
        meta = {
            "err": error_json(outcome.err),
            "fee": outcome.fee,
            "logs": outcome.logs,
            "units": outcome.units,
            "pre": before,
            "post": after,
            "loaded": {
                "writable": [str(k) for k in writable],
                "readonly": [str(k) for k in readonly],
            },
        }
        row = (str(tx.signatures[0]), outcome.slot, self._clock, bytes(tx), json.dumps(meta))
        addresses = sorted({str(k) for k in keys})
        block = self._block_row()  # the slot it landed in has a block

        def write(db: sqlite3.Connection) -> None:
            block(db)
            cur = db.execute(
                "INSERT OR IGNORE INTO transactions (signature, slot, block_time, tx, meta)"
                " VALUES (?, ?, ?, ?, ?)",
                row,
            )
            if cur.rowcount == 1:
                db.executemany(
                    "INSERT OR IGNORE INTO address_signatures VALUES (?, ?)",
                    [(a, cur.lastrowid) for a in addresses],
                )

        return write

    async def transaction(self, signature: str) -> dict[str, Any] | None:
        """A landed transaction: slot, block_time, tx (bytes), meta (dict); or None."""
        return await trio.to_thread.run_sync(self._transaction, signature, limiter=self._limiter)

    def _transaction(self, signature: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT slot, block_time, tx, meta FROM transactions WHERE signature = ?", (signature,)
        ).fetchone()
        if row is None:
            return None
        return {"slot": row[0], "block_time": row[1], "tx": row[2], "meta": json.loads(row[3])}

    async def signatures_for(
        self, address: str, limit: int, before: str | None, until: str | None
    ) -> list[dict[str, Any]]:
        """Transactions naming ``address``, newest first (Solana's paging)."""
        return await trio.to_thread.run_sync(
            self._signatures_for, address, limit, before, until, limiter=self._limiter
        )

    def _seq_of(self, signature: str | None) -> int | None:
        if signature is None:
            return None
        row = self._db.execute(
            "SELECT seq FROM transactions WHERE signature = ?", (signature,)
        ).fetchone()
        return int(row[0]) if row else -1

    def _signatures_for(
        self, address: str, limit: int, before: str | None, until: str | None
    ) -> list[dict[str, Any]]:
        high, low = self._seq_of(before), self._seq_of(until)
        rows = self._db.execute(
            "SELECT t.signature, t.slot, t.block_time, t.meta FROM address_signatures a"
            " JOIN transactions t ON t.seq = a.seq WHERE a.address = ?"
            " AND a.seq < ? AND a.seq > ? ORDER BY a.seq DESC LIMIT ?",
            (address, high if high is not None else 2**62, low or 0, limit),
        ).fetchall()
        return [
            {
                "signature": sig,
                "slot": slot,
                "err": json.loads(meta)["err"],
                "memo": None,
                "blockTime": when,
                "confirmationStatus": "finalized",
            }
            for sig, slot, when, meta in rows
        ]

    async def history(self, address: Pubkey, limit: int = HISTORY_LIMIT) -> list[str]:
        rows = await self.signatures_for(str(address), limit, None, None)
        return [row["signature"] for row in rows]

    async def landed_transaction(self, signature: str) -> LandedTransaction | None:
        found = await self.transaction(signature)
        if found is None:
            return None
        try:
            tx = VersionedTransaction.from_bytes(found["tx"])
        except ValueError as exc:
            raise LedgerError(f"the history's copy of {signature} does not decode") from exc
        succeeded = found["meta"]["err"] is None
        return LandedTransaction(signature, found["slot"], found["block_time"], tx, succeeded)

    async def block_at(self, slot: int) -> dict[str, Any] | None:
        """Slot ``slot``'s blockhash, time and transactions (signature order); None if unknown."""
        own, before = self.hash_of(slot), self.hash_of(slot - 1)  # here: the window changes
        return await trio.to_thread.run_sync(self._block, slot, own, before, limiter=self._limiter)

    def _block(self, slot: int, own: Hash | None, before: Hash | None) -> dict[str, Any] | None:
        head = self._db.execute(
            "SELECT blockhash, block_time FROM blocks WHERE slot = ?", (slot,)
        ).fetchone()
        txs = self._db.execute(
            "SELECT signature, block_time, tx, meta FROM transactions WHERE slot = ? ORDER BY seq",
            (slot,),
        ).fetchall()
        if head is None and not txs:
            return None
        parent = self._db.execute(
            "SELECT blockhash FROM blocks WHERE slot = ?", (slot - 1,)
        ).fetchone()
        when = head[1] if head else txs[0][1]
        return {
            "slot": slot,
            "blockhash": head[0] if head else str(own or Hash.default()),
            "previousBlockhash": parent[0] if parent else str(before or Hash.default()),
            "block_time": when,
            "transactions": [
                {"signature": s, "tx": tx, "meta": json.loads(meta)} for s, _, tx, meta in txs
            ],
        }

    async def transaction_count(self) -> int:
        def count() -> int:
            return int(self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])

        return await trio.to_thread.run_sync(count, limiter=self._limiter)

    @property
    def slot(self) -> int:
        return self._blocks


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(data: bytes) -> str:
    """Base58 (Bitcoin's alphabet), as Solana writes instruction data."""
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _B58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


@asynccontextmanager
async def open_cluster_ledger(path: Path) -> AsyncIterator[ClusterLedger]:
    """The localnet's ledger journaled at ``path``, closed on exit."""
    ledger = await trio.to_thread.run_sync(ClusterLedger, path)
    try:
        yield ledger
    finally:
        ledger.close()
