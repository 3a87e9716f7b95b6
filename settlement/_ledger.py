"""Ledgers: where channels open, close and refund. One interface, several adapters.

`Ledger` is what settlement needs of Solana: send a transaction, read an
account, a balance, a blockhash, the rent-exempt minimum, the ledger's clock,
and the history of an account (a receipt's proof finds its channel's close
there; the embedded ledger keeps no history).
`EmbeddedLedger` is the real SVM with the native programs, in this process
(solders' LiteSVM): the default, so a fresh machine needs no cluster. It is
private to its process, so it serves one node alone (and tests within one
process); nodes that trade need one shared ledger.

LiteSVM keeps its state in memory. The embedded ledger journals the accounts
each transaction touched (and each faucet grant) into its own SQLite file, in
a worker thread, before the call returns; on start it restores them, so a
restart loses no balance; it also counts blocks, because LiteSVM's blockhashes
are the same sequence in every process and a restarted ledger must move past
the ones its nonces were made in. Its clock follows the wall clock (it never
goes back), so lockups end when they should.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
from solders.account import Account
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import TransactionErrorFieldless, TransactionErrorType

from ._errors import BlockhashExpired, LedgerError, LockupInForce
from ._programs import STAKE_PROGRAM
from ._spl import TOKEN_PROGRAM, associated_token_address
from ._sqlite import open_durable
from ._testmint import (
    AUTHORITY_FLOOR,
    AUTHORITY_TOP_UP,
    TEST_MINT,
    TEST_MINT_AUTHORITY,
    TOKEN_AIRDROP,
    grant_transaction,
)

TransactionError = TransactionErrorType
AnyTransaction = Transaction | VersionedTransaction
"""Legacy or version 0: every ledger takes both."""

LOCKUP_IN_FORCE = 1  # the stake program's StakeError::LockupInForce
# Accounts the runtime owns: never journaled, never restored over the real ones.
RUNTIME_OWNERS = frozenset(
    Pubkey.from_string(k)
    for k in (
        "Sysvar1111111111111111111111111111111111111",
        "NativeLoader1111111111111111111111111111111",
        "BPFLoader1111111111111111111111111111111111",
        "BPFLoader2111111111111111111111111111111111",
        "BPFLoaderUpgradeab1e11111111111111111111111",
        "LoaderV411111111111111111111111111111111111",
    )
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    pubkey     TEXT PRIMARY KEY,
    lamports   INTEGER NOT NULL,
    data       BLOB NOT NULL,
    owner      TEXT NOT NULL,
    executable INTEGER NOT NULL,
    rent_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS landed (signature TEXT PRIMARY KEY);
"""
# One account for the journal: its pubkey, and its columns after pubkey (None: delete it).
HISTORY_LIMIT = 1000  # transactions of one account a history read goes back at most
NO_HISTORY = (
    "the embedded ledger keeps no transaction history, and a receipt's proof reads the "
    'close from it: trade on a ledger that does ([settlement] ledger = "localnet", served '
    'by `mercato localnet`, or "rpc" on a cluster)'
)
_JournalRow = tuple[str, tuple[int, bytes, str, int, int] | None]
History = Callable[[sqlite3.Connection], None]
"""More rows for the journal's transaction (the localnet's transaction history)."""


@dataclass(frozen=True)
class AccountInfo:
    lamports: int
    data: bytes
    owner: Pubkey


@dataclass(frozen=True)
class LandedTransaction:
    """A transaction the ledger took (its fee charged), as its history keeps it."""

    signature: str
    slot: int
    block_time: int | None
    transaction: VersionedTransaction
    succeeded: bool


class Ledger(Protocol):
    """What settlement needs of a Solana ledger."""

    name: str
    faucet: bool
    """Whether `airdrop` makes money (embedded and localnet ledgers only)."""

    async def airdrop(self, pubkey: Pubkey, lamports: int) -> str:
        """New lamports for ``pubkey``, on a ledger with a faucet; LedgerError otherwise."""
        ...

    async def send(self, tx: AnyTransaction) -> str:
        """Submit; the signature once it is final. LedgerError (LockupInForce) if refused."""
        ...

    async def simulate(self, tx: AnyTransaction) -> None:
        """Run without committing; LedgerError (LockupInForce) if it would fail. A
        close is simulated first: a failed durable-nonce transaction still spends
        the nonce on a real cluster."""
        ...

    async def account(self, pubkey: Pubkey) -> AccountInfo | None: ...

    async def balance(self, pubkey: Pubkey) -> int: ...

    async def blockhash(self) -> Hash: ...

    async def rent(self, size: int) -> int:
        """The rent-exempt minimum for an account of ``size`` bytes."""
        ...

    async def blockhash_expired(self, blockhash: Hash) -> bool | None:
        """Whether a transaction made on ``blockhash`` can no longer land (None: this
        ledger cannot tell now, such as an RPC that does not answer)."""
        ...

    async def now(self) -> int:
        """The ledger's clock, unix seconds: what lockups are measured against."""
        ...

    async def landed(self, signature: str) -> bool | None:
        """Whether the transaction ``signature`` landed and succeeded (False: it
        failed, or this ledger knows it never landed; None: the ledger has not seen
        it, or not confirmed it, yet). LedgerUnreachable if the ledger does not
        answer: that is never None."""
        ...

    async def history(self, address: Pubkey, limit: int = HISTORY_LIMIT) -> list[str]:
        """Signatures of the transactions that named ``address``, newest first (at
        most ``limit``). LedgerError if this ledger keeps no history."""
        ...

    async def landed_transaction(self, signature: str) -> LandedTransaction | None:
        """The transaction ``signature`` as the history keeps it; None if it has not
        landed. LedgerError if this ledger keeps no history."""
        ...


class EmbeddedLedger:
    """LiteSVM in this process, journaled to ``path`` (see the module docstring)."""

    name = "embedded"
    faucet = True

    def __init__(self, path: Path) -> None:
        self._svm = LiteSVM()
        self._db = open_durable(path, SCHEMA, "the embedded ledger's journal", LedgerError)
        self._limiter = trio.CapacityLimiter(1)
        self._broken = ""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self._clock = meta.get("clock", 0)  # it never goes back, restarts included
        self._blocks = meta.get("blocks", 0)
        # LiteSVM's blockhashes are the same sequence in every process: move past every
        # one used before, or a nonce made in one of them could not be used again.
        for block in range(1, self._blocks + 2):
            self._svm.expire_blockhash()
            self._made(block)
        self._blocks += 1
        self._restore_clock()
        for row in self._db.execute("SELECT * FROM accounts"):
            pubkey, lamports, data, owner, executable, rent_epoch = row
            self._svm.set_account(
                Pubkey.from_string(pubkey),
                Account(lamports, data, Pubkey.from_string(owner), bool(executable), rent_epoch),
            )

    def close(self) -> None:
        self._db.close()

    def _tick(self) -> None:
        now = max(int(time.time()), self._clock)
        if now != self._clock:
            clock = self._svm.get_clock()
            clock.unix_timestamp = now
            self._svm.set_clock(clock)
            self._clock = now

    def _restore_clock(self) -> None:
        clock = self._svm.get_clock()
        clock.unix_timestamp = self._clock
        self._svm.set_clock(clock)

    async def set_time(self, unix_seconds: int) -> None:
        """Move the clock forward (tests of lockups); it never goes back."""
        self._clock = max(self._clock, unix_seconds)
        self._restore_clock()
        self._expire()
        await self._journal([])

    def _expire(self) -> None:
        self._svm.expire_blockhash()
        self._blocks += 1
        self._made(self._blocks)

    def _made(self, block: int) -> None:
        """Block ``block`` begins, with LiteSVM's latest blockhash (a hook: the
        localnet's ledger keeps a window of them)."""

    @property
    def broken(self) -> str:
        """Why this ledger refuses everything until restarted ("" while it is sound)."""
        return self._broken

    def _check(self) -> None:
        if self._broken:
            raise LedgerError(self._broken)

    async def _journal(
        self, pubkeys: list[Pubkey], signature: str = "", history: History | None = None
    ) -> None:
        """Write what these accounts hold now (and the ``signature`` that landed).
        Shielded: once the ledger in memory has changed, the journal must follow,
        or a restart would undo it."""
        rows: list[_JournalRow] = []
        for pubkey in pubkeys:
            account = self._svm.get_account(pubkey)
            if account is not None and (account.executable or account.owner in RUNTIME_OWNERS):
                continue
            if account is None or account.lamports == 0:
                rows.append((str(pubkey), None))
            else:
                rows.append(
                    (
                        str(pubkey),
                        (
                            account.lamports,
                            bytes(account.data),
                            str(account.owner),
                            int(account.executable),
                            account.rent_epoch,
                        ),
                    )
                )
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(
                    self._write,
                    rows,
                    self._blocks,
                    self._clock,
                    signature,
                    history,
                    limiter=self._limiter,
                )
            except sqlite3.Error as exc:
                # Memory and disk now differ: refuse everything until a restart.
                self._broken = f"the ledger's journal could not be written ({exc}): restart it"
                raise LedgerError(self._broken) from exc

    def _write(
        self,
        rows: list[_JournalRow],
        blocks: int,
        clock: int,
        signature: str,
        history: History | None = None,
    ) -> None:
        with self._db:
            self._db.execute("BEGIN")
            if signature:
                self._db.execute("INSERT OR IGNORE INTO landed VALUES (?)", (signature,))
            if history is not None:
                history(self._db)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('blocks', ?)", (blocks,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clock', ?)", (clock,))
            for pubkey, values in rows:
                if values is None:
                    self._db.execute("DELETE FROM accounts WHERE pubkey = ?", (pubkey,))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO accounts VALUES (?,?,?,?,?,?)", (pubkey, *values)
                    )

    async def airdrop(self, pubkey: Pubkey, lamports: int) -> str:
        """The embedded ledger's faucet: new lamports for ``pubkey``, and test tokens
        where this ledger has the test mint (`_testmint`); the signature."""
        self._check()
        result = self._svm.airdrop(pubkey, lamports)
        if isinstance(result, FailedTransactionMetadata):
            raise LedgerError(f"the faucet failed: {result.err()}")
        self._expire()  # else the same grant twice would be "already processed"
        granted, failed = self._grant_test_tokens(pubkey)
        await self._journal([pubkey, *granted], str(result.signature()))
        if failed:
            raise LedgerError(f"the faucet sent the lamports but not the test tokens: {failed}")
        return str(result.signature())

    def _grant_test_tokens(self, owner: Pubkey) -> tuple[list[Pubkey], str]:
        """`TOKEN_AIRDROP` of the test mint to ``owner``, if this ledger has the
        mint; the mint authority pays the fee and the account's rent, and the
        faucet tops the authority up. Like a faucet's lamports, the grant is no
        transaction of the history. The accounts it changed, and why it failed ("")."""
        authority = TEST_MINT_AUTHORITY.pubkey()
        mint = self._svm.get_account(TEST_MINT)
        if mint is None or mint.owner != TOKEN_PROGRAM or owner == authority:
            return [], ""
        if (self._svm.get_balance(authority) or 0) < AUTHORITY_FLOOR:
            topped = self._svm.airdrop(authority, AUTHORITY_TOP_UP)
            if isinstance(topped, FailedTransactionMetadata):
                return [], str(topped.err())
        tx = grant_transaction(owner, TOKEN_AIRDROP, self._svm.latest_blockhash())
        result = self._svm.send_transaction(tx)
        changed = [authority, associated_token_address(owner, TEST_MINT), TEST_MINT]
        if isinstance(result, FailedTransactionMetadata):
            return [authority], str(result.err())
        return changed, ""

    async def send(self, tx: AnyTransaction) -> str:
        err, _ = await self.execute(tx)
        if err is not None:
            raise refusal(tx, err)
        return str(tx.signatures[0])

    async def simulate(self, tx: AnyTransaction) -> None:
        err, _ = await self.dry_run(tx)
        if err is not None:
            raise refusal(tx, err)

    async def execute(self, tx: AnyTransaction) -> tuple[TransactionError | None, list[str]]:
        """Run and commit ``tx``: (its error or None, its logs). A transaction that
        fails after its checks still pays its fee, as on a cluster."""
        self._check()
        self._tick()
        result = self._svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            await self._journal(list(tx.message.account_keys[:1]))
            return result.err(), list(result.meta().logs())
        # Each transaction is its own block: a nonce made in one can be used in the next.
        self._expire()
        await self._journal(list(tx.message.account_keys), str(tx.signatures[0]))
        return None, list(result.logs())

    async def dry_run(self, tx: AnyTransaction) -> tuple[TransactionError | None, list[str]]:
        """Run ``tx`` without committing: (its error or None, its logs)."""
        self._check()
        self._tick()
        result = self._svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            return result.err(), list(result.meta().logs())
        return None, list(result.meta().logs())

    def raw_account(self, pubkey: Pubkey) -> Account | None:
        """An account as the runtime holds it, sysvars included (for the localnet)."""
        self._check()
        self._tick()
        return self._svm.get_account(pubkey)

    @property
    def block(self) -> int:
        """Blocks made so far: the localnet's slot."""
        return self._blocks

    async def account(self, pubkey: Pubkey) -> AccountInfo | None:
        self._check()
        account = self._svm.get_account(pubkey)
        if account is None or account.lamports == 0:
            return None
        return AccountInfo(account.lamports, bytes(account.data), account.owner)

    async def balance(self, pubkey: Pubkey) -> int:
        self._check()
        return self._svm.get_balance(pubkey) or 0

    async def blockhash(self) -> Hash:
        return self._svm.latest_blockhash()

    async def rent(self, size: int) -> int:
        return self._svm.minimum_balance_for_rent_exemption(size)

    async def blockhash_expired(self, blockhash: Hash) -> bool:
        # The runtime takes only the latest blockhash, and never goes back to one.
        return blockhash != self._svm.latest_blockhash()

    async def now(self) -> int:
        self._tick()
        return self._clock

    async def landed(self, signature: str) -> bool:
        # Journaled with the accounts it changed: what a restart keeps, it knows.
        self._check()
        return await trio.to_thread.run_sync(self._landed, signature, limiter=self._limiter)

    def _landed(self, signature: str) -> bool:
        query = "SELECT 1 FROM landed WHERE signature = ?"
        return self._db.execute(query, (signature,)).fetchone() is not None

    async def history(self, address: Pubkey, limit: int = HISTORY_LIMIT) -> list[str]:
        raise LedgerError(NO_HISTORY)

    async def landed_transaction(self, signature: str) -> LandedTransaction | None:
        raise LedgerError(NO_HISTORY)


def refusal(tx: AnyTransaction, err: TransactionError) -> LedgerError:
    """The error to raise for a transaction the ledger refused with ``err``."""
    if err == TransactionErrorFieldless.BlockhashNotFound and tx.uses_durable_nonce():
        return LedgerError("the durable nonce has moved on: this state was closed or voided")
    if err == TransactionErrorFieldless.BlockhashNotFound:
        return BlockhashExpired("the transaction's blockhash is no longer valid: build it again")
    index = getattr(err, "index", None)
    code = getattr(getattr(err, "err", None), "code", None)
    if index is not None and code == LOCKUP_IN_FORCE and index < len(tx.message.instructions):
        program = tx.message.instructions[index].program_id(tx.message.account_keys)
        if program == STAKE_PROGRAM:
            return LockupInForce("the channel's lockup has not ended yet")
    return LedgerError(f"the ledger refused the transaction: {err}")


@asynccontextmanager
async def open_embedded_ledger(path: Path) -> AsyncIterator[EmbeddedLedger]:
    """An embedded ledger journaled at ``path``, closed on exit."""
    ledger = await trio.to_thread.run_sync(EmbeddedLedger, path)
    try:
        yield ledger
    finally:
        ledger.close()
