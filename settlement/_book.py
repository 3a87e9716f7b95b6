"""The channel book: every channel this node pays on or is paid on, kept on disk.

Both sides keep, per channel, the cumulative amount owed to each recipient (the
payee and the creators whose royalties ride on it) and the latest state. A
payout under MIN_PAYOUT to anyone but the payee waits in the owed amounts until
it reaches the minimum (a new account could not receive it); both sides apply
the same rule, so they expect the same transaction.

    payer:  book.pay(stake, {payee: 970, creator: 30}, payer_key)  -> state bytes
    payee:  book.accept(stake, {payee: 970, creator: 30}, state)   -> new totals

Both store the new state durably (SQLite, synchronous=FULL, in a worker
thread) before they return, so a state is never acknowledged, and work never
served on it, unless it survives a crash. Calls on one channel are serialised;
a refused state changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import trio
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ._channel import MIN_PAYOUT, ChannelTerms, check_state, sign_state
from ._errors import ChannelError, LedgerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    stake    TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    peer     TEXT NOT NULL,
    terms    TEXT NOT NULL,
    nonce    TEXT NOT NULL,
    owed     TEXT NOT NULL,
    state    BLOB,
    status   TEXT NOT NULL,
    updated  REAL NOT NULL
);
"""
STATUSES = ("open", "closed", "refunded")


@dataclass(frozen=True)
class Channel:
    """One channel as this node knows it."""

    terms: ChannelTerms
    role: str  # "payer" or "payee"
    peer: str  # the other side's peer id
    nonce: Hash  # the value every state of this channel uses until it closes
    owed: dict[Pubkey, int]  # cumulative, per recipient
    state: bytes | None  # the latest payer-signed state
    status: str

    @property
    def paid(self) -> int:
        return sum(self.owed.values())

    @property
    def left(self) -> int:
        return self.terms.deposit - self.paid


def payable(owed: dict[Pubkey, int], payee: Pubkey) -> dict[Pubkey, int]:
    """The payouts a state carries for ``owed``: all of it, but amounts under
    MIN_PAYOUT to anyone but the payee wait."""
    return {k: v for k, v in owed.items() if v and (k == payee or v >= MIN_PAYOUT)}


class ChannelBook:
    """Channels on disk and in memory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._limiter = trio.CapacityLimiter(1)
        self._locks: dict[str, trio.Lock] = {}
        self.channels: dict[str, Channel] = {}
        for row in self._db.execute("SELECT * FROM channels"):
            stake, role, peer, terms, nonce, owed, state, status, _ = row
            self.channels[stake] = Channel(
                ChannelTerms.from_wire(json.loads(terms)),
                role,
                peer,
                Hash.from_string(nonce),
                {Pubkey.from_string(k): v for k, v in json.loads(owed).items()},
                state,
                status,
            )

    def close(self) -> None:
        self._db.close()

    def get(self, stake: Pubkey | str) -> Channel:
        channel = self.channels.get(str(stake))
        if channel is None:
            raise ChannelError(f"no channel {stake} in this node's book")
        return channel

    def find(self, role: str, peer: str, status: str = "open") -> list[Channel]:
        return [
            c for c in self.channels.values() if (c.role, c.peer, c.status) == (role, peer, status)
        ]

    async def add(self, terms: ChannelTerms, role: str, peer: str, nonce: Hash) -> Channel:
        """Record a channel once it is open on the ledger."""
        if role not in ("payer", "payee"):
            raise ValueError(role)
        if str(terms.stake) in self.channels:
            raise ChannelError(f"channel {terms.stake} is in the book already")
        channel = Channel(terms, role, peer, nonce, {}, None, "open")
        await self._save(channel)
        return channel

    async def pay(
        self, stake: Pubkey, amounts: dict[Pubkey, int], payer: Keypair
    ) -> tuple[Channel, bytes]:
        """The payer's side: add ``amounts`` to what is owed, sign the state, store it,
        and return it to send. ChannelError if the deposit cannot cover it."""
        async with self._lock(stake):
            channel = self._open(stake, "payer")
            owed = _added(channel.owed, amounts)
            state = sign_state(
                channel.terms, channel.nonce, payable(owed, channel.terms.payee), payer
            )
            channel = replace(channel, owed=owed, state=state)
            await self._save(channel)
            return channel, state

    async def accept(
        self,
        stake: Pubkey,
        amounts: dict[Pubkey, int],
        state: bytes,
        claimed: dict[Pubkey, int] | None = None,
    ) -> Channel:
        """The payee's side: check that ``state`` pays what was owed plus ``amounts``,
        store it, and return the channel. ChannelError (nothing stored) otherwise.

        ``claimed`` is the payer's own account of what it owes in total. It may be
        more than this side counted (a payment the payer sent that never arrived,
        or was refused, stays owed on its side): the payee takes any state that
        owes each recipient at least what it should."""
        async with self._lock(stake):
            channel = self._open(stake, "payee")
            owed = _added(channel.owed, amounts)
            if claimed is not None:
                short = [k for k, v in owed.items() if claimed.get(k, 0) < v]
                if short or any(type(v) is not int or v < 0 for v in claimed.values()):
                    raise ChannelError("the payment owes less than is due")
                owed = dict(claimed)
            payouts = payable(owed, channel.terms.payee)
            await trio.to_thread.run_sync(check_state, channel.terms, channel.nonce, payouts, state)
            channel = replace(channel, owed=owed, state=state)
            await self._save(channel)
            return channel

    async def mark(self, stake: Pubkey, status: str) -> Channel:
        """Record that a channel was closed or refunded on the ledger."""
        if status not in STATUSES:
            raise ValueError(status)
        async with self._lock(stake):
            channel = replace(self.get(stake), status=status)
            await self._save(channel)
            return channel

    def _open(self, stake: Pubkey, role: str) -> Channel:
        channel = self.get(stake)
        if channel.role != role:
            raise ChannelError(
                f"this node is the {channel.role} of channel {stake}, not the {role}"
            )
        if channel.status != "open":
            raise ChannelError(f"channel {stake} is {channel.status}")
        return channel

    def _lock(self, stake: Pubkey) -> trio.Lock:
        return self._locks.setdefault(str(stake), trio.Lock())

    async def _save(self, channel: Channel) -> None:
        """Durable before it returns; shielded, so a cancelled caller cannot leave the
        memory and the disk apart."""
        row = (
            str(channel.terms.stake),
            channel.role,
            channel.peer,
            json.dumps(channel.terms.to_wire()),
            str(channel.nonce),
            json.dumps({str(k): v for k, v in channel.owed.items()}),
            channel.state,
            channel.status,
            time.time(),
        )
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(self._write, row, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise LedgerError(f"the channel book could not be written: {exc}") from None
        self.channels[str(channel.terms.stake)] = channel

    def _write(self, row: tuple[object, ...]) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO channels VALUES (?,?,?,?,?,?,?,?,?)", row)


def _added(owed: dict[Pubkey, int], amounts: dict[Pubkey, int]) -> dict[Pubkey, int]:
    if any(type(v) is not int or v < 0 for v in amounts.values()):
        raise ChannelError("a payment is a whole number of lamports, 0 or more")
    total = dict(owed)
    for recipient, amount in amounts.items():
        total[recipient] = total.get(recipient, 0) + amount
    return total


@asynccontextmanager
async def open_channel_book(path: Path) -> AsyncIterator[ChannelBook]:
    book = await trio.to_thread.run_sync(ChannelBook, path)
    try:
        yield book
    finally:
        book.close()
