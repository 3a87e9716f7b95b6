"""The channel book: every channel this node pays on or is paid on, kept on disk.

Both sides keep, per channel and per recipient (the payee, and the creators
whose royalties ride on it), what the latest state owes (``owed``) and how much
of it tasks have used (``settled``: receipts on the payer's side, tasks served
on the payee's). The difference is credit: a task that was paid for but did not
run (refused, timed out) leaves its price as credit, and the next task on the
channel uses it instead of paying again, so a payer loses at most the price of
the tasks in flight.

A royalty owed under MIN_PAYOUT (a new account could not receive it) rides in the
state as part of the payee's payout. When the channel closes the payee's book
records it as *held* for that creator, in the same transaction that marks the
channel closed, and `_forward` pays it on: at once if the creator's account
exists, or once what is held for it reaches MIN_PAYOUT. Nothing owed is dropped.

    payer:  book.pay(stake, amounts, payer_key)     -> the state to send (new if
                                                       the credit does not cover it)
            book.settle(stake, amounts, receipt)    on a good receipt, kept as a leaf
            book.acknowledge(stake, payer_key)      -> the same payouts re-signed with
                                                       the receipts since (or None)
    payee:  book.accept(stake, amounts, state, owed) the latest state is kept; the
                                                       task runs if its credit covers it
            book.take_ack(stake, owed, state)       the same payouts, more receipts
            book.unsettle(stake, amounts)           the task could not run after all
            book.closed(stake, held)                its close landed; royalties held
            book.due() / sending() / forwarded()    what `_forward` pays on, and when

Receipts (`_receipts`): every state the payer signs carries, in a memo, its
commitment to the receipts of that channel it has verified so far (their count
and Merkle root), so the close names the receipts it settles. The payer keeps
the leaves in order (``receipts`` table, written with the settle that counts
the task) and in memory only the `Frontier` of each channel. A state's count
never goes back: the payee refuses one that would.

Every change is stored durably (SQLite, synchronous=FULL, in a worker thread)
before the call returns, so a state is never acknowledged, and work never
served on it, unless it survives a crash. Calls on one channel are serialised;
a refused payment changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ._channel import (
    MIN_PAYOUT,
    ChannelTerms,
    check_recipients,
    check_state,
    sign_state,
    state_receipts,
)
from ._errors import ChannelError, LedgerError, PaymentShort
from ._receipts import Commitment, Frontier, receipt_leaf
from ._sqlite import open_durable

SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    stake    TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    peer     TEXT NOT NULL,
    terms    TEXT NOT NULL,
    nonce    TEXT NOT NULL,
    owed     TEXT NOT NULL,
    settled  TEXT NOT NULL,
    state    BLOB,
    status   TEXT NOT NULL,
    updated  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS held (
    stake     TEXT NOT NULL,
    recipient TEXT NOT NULL,
    payee     TEXT NOT NULL,
    amount    INTEGER NOT NULL,
    status    TEXT NOT NULL,
    signature TEXT,
    forward   BLOB,
    PRIMARY KEY (stake, recipient)
);
CREATE TABLE IF NOT EXISTS receipts (
    stake      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    cumulative INTEGER NOT NULL,
    leaf       BLOB NOT NULL,
    PRIMARY KEY (stake, seq)
);
"""
# held: due (waiting for the ledger to take it), sending (its forward, signed and
# kept in `forward`, may have landed: the ledger decides), paid.
STATUSES = ("opening", "open", "closing", "closed", "refunded", "failed")
# opening: recorded before its opening transaction is sent (a crash cannot lose a
# deposit), its nonce field holding that transaction's blockhash until it is open;
# failed if it can never land. closing: the payee's close is under way, and no
# more payments are taken on it.


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
    settled: dict[Pubkey, int] = field(default_factory=dict)  # used by tasks, per recipient
    updated: float = 0.0  # unix time of the last change

    def credit(self, recipient: Pubkey) -> int:
        return self.owed.get(recipient, 0) - self.settled.get(recipient, 0)

    @property
    def paid(self) -> int:
        return sum(self.owed.values())

    @property
    def receipts(self) -> Commitment | None:
        """The receipts commitment of the latest state (None: it carries none)."""
        return state_receipts(self.state) if self.state is not None else None

    @property
    def left(self) -> int:
        return self.terms.deposit - self.paid


@dataclass(frozen=True)
class Held:
    """A royalty the payee received for a creator at a close, and its forward."""

    stake: str
    recipient: Pubkey
    payee: Pubkey
    amount: int
    status: str  # due, sending, paid
    signature: str | None = None
    forward: bytes | None = None  # the signed forward while it is sending


def payable(owed: dict[Pubkey, int], payee: Pubkey) -> dict[Pubkey, int]:
    """The payouts a state carries for ``owed``: each recipient its amount, but an
    amount under MIN_PAYOUT to anyone else than the payee goes to the payee, which
    holds it for them (`held`): a new account could not receive it."""
    payouts: dict[Pubkey, int] = {}
    for recipient, amount in owed.items():
        if amount:
            to = recipient if recipient == payee or amount >= MIN_PAYOUT else payee
            payouts[to] = payouts.get(to, 0) + amount
    return payouts


def held(owed: dict[Pubkey, int], payee: Pubkey) -> dict[Pubkey, int]:
    """What the payee receives for others in a state for ``owed`` (see `payable`)."""
    return {k: v for k, v in owed.items() if k != payee and 0 < v < MIN_PAYOUT}


def payable_v1(owed: dict[Pubkey, int], payee: Pubkey) -> dict[Pubkey, int]:
    """The payouts of states signed before version 2 payments, which left amounts
    under MIN_PAYOUT out: a channel opened then still closes with its last one."""
    return {k: v for k, v in owed.items() if v and (k == payee or v >= MIN_PAYOUT)}


class ChannelBook:
    """Channels on disk and in memory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._db = open_durable(path, SCHEMA, "the channel book", ChannelError)
        self._limiter = trio.CapacityLimiter(1)
        self._writing = trio.Lock()
        self._batch = _Batch()
        self._locks: dict[str, trio.Lock] = {}
        self._close_locks: dict[str, trio.Lock] = {}
        self.channels: dict[str, Channel] = {}
        self.held: dict[tuple[str, Pubkey], Held] = {}
        self.receipts: dict[str, Frontier] = {}  # the payer's, per channel
        for stake, leaf in self._db.execute("SELECT stake, leaf FROM receipts ORDER BY stake, seq"):
            self.receipts.setdefault(stake, Frontier()).append(leaf)
        for stake, recipient, payee, amount, status, signature, forward in self._db.execute(
            "SELECT * FROM held"
        ):
            key = Pubkey.from_string(recipient)
            self.held[stake, key] = Held(
                stake, key, Pubkey.from_string(payee), amount, status, signature, forward
            )
        for row in self._db.execute("SELECT * FROM channels"):
            stake, role, peer, terms, nonce, owed, settled, state, status, updated = row
            self.channels[stake] = Channel(
                ChannelTerms.from_wire(json.loads(terms)),
                role,
                peer,
                Hash.from_string(nonce),
                _amounts(owed),
                state,
                status,
                _amounts(settled),
                updated,
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

    def uses_nonce(self, nonce: Pubkey) -> bool:
        return any(c.terms.nonce == nonce for c in self.channels.values())

    async def add(
        self, terms: ChannelTerms, role: str, peer: str, nonce: Hash, status: str = "open"
    ) -> Channel:
        """Record a channel: ``open`` once it is on the ledger; ``opening`` (the
        payer, before sending its opening transaction) until `opened`."""
        if role not in ("payer", "payee") or status not in ("opening", "open"):
            raise ValueError(role, status)
        if str(terms.stake) in self.channels or self.uses_nonce(terms.nonce):
            raise ChannelError(f"channel {terms.stake} or its nonce is in the book already")
        channel = Channel(terms, role, peer, nonce, {}, None, status)
        await self._save(channel)
        return channel

    async def opened(self, stake: Pubkey, nonce: Hash) -> Channel:
        """An ``opening`` channel is on the ledger, its nonce holding ``nonce``."""
        async with self._lock(stake):
            channel = self.get(stake)
            if channel.status == "open" and channel.nonce == nonce:
                return channel  # the watcher found it first
            if channel.status not in ("opening", "failed"):
                raise ChannelError(f"channel {stake} is {channel.status}, not opening")
            channel = replace(channel, nonce=nonce, status="open")
            await self._save(channel)
            return channel

    async def pay(
        self, stake: Pubkey, amounts: dict[Pubkey, int], payer: Keypair
    ) -> tuple[Channel, bytes, dict[Pubkey, int]]:
        """The payer's side: the state to send for a task owing ``amounts``, and the
        credit it relies on. The credit left by tasks that did not run is used
        first; only the rest is added to what is owed, in a new signed state,
        stored before it returns. ChannelError if the deposit cannot cover it."""
        async with self._lock(stake):
            channel = self._open(stake, "payer")
            used = {r: min(max(channel.credit(r), 0), a) for r, a in amounts.items()}
            used = {r: v for r, v in used.items() if v > 0}
            short = {r: a - used.get(r, 0) for r, a in amounts.items()}
            short = {r: v for r, v in short.items() if v > 0}
            receipts = self.commitment(stake)
            if not short and channel.state is not None and channel.receipts == receipts:
                return channel, channel.state, used
            channel = await self._signed(channel, _added(channel.owed, short), receipts, payer)
            return channel, channel.state or b"", used

    async def acknowledge(self, stake: Pubkey, payer: Keypair) -> Channel | None:
        """The payer's side, after a good receipt: its latest payouts signed again
        with the receipts verified since (stored before it returns), for the payee
        to keep instead; None if the latest state commits to them all already."""
        async with self._lock(stake):
            channel = self._open(stake, "payer")
            receipts = self.commitment(stake)
            if channel.state is None or channel.receipts == receipts:
                return None
            return await self._signed(channel, channel.owed, receipts, payer)

    async def _signed(
        self, channel: Channel, owed: dict[Pubkey, int], receipts: Commitment, payer: Keypair
    ) -> Channel:
        check_recipients(channel.terms, owed)
        payouts = payable(owed, channel.terms.payee)
        state = sign_state(channel.terms, channel.nonce, payouts, payer, receipts=receipts)
        channel = replace(channel, owed=owed, state=state)
        await self._save(channel)
        return channel

    def commitment(self, stake: Pubkey | str) -> Commitment:
        """The payer's commitment to the receipts it verified on a channel."""
        return self.receipts.get(str(stake), Frontier()).commitment()

    async def leaves(self, stake: Pubkey | str) -> list[bytes]:
        """The leaves of the receipts the payer verified on a channel, in order."""
        return await trio.to_thread.run_sync(self._leaves, str(stake), limiter=self._limiter)

    def _leaves(self, stake: str) -> list[bytes]:
        rows = self._db.execute("SELECT leaf FROM receipts WHERE stake = ? ORDER BY seq", (stake,))
        return [leaf for (leaf,) in rows]

    async def settle(
        self,
        stake: Pubkey,
        amounts: dict[Pubkey, int],
        receipt: bytes | None = None,
        cumulative: int = 0,
    ) -> Channel:
        """Count ``amounts`` as used: by a task with a good ``receipt`` (payer; the
        signed receipt's leaf is kept with it, next in the channel's order, and
        ``cumulative`` is what it says was paid so far), or by a task about to run
        (payee, inside `accept`)."""
        async with self._lock(stake):
            channel = self.get(stake)
            channel = replace(channel, settled=_added(channel.settled, amounts))
            if receipt is None:
                await self._save(channel)
                return channel
            leaf = receipt_leaf(receipt)
            frontier = self.receipts.get(str(stake), Frontier())
            row = (str(stake), frontier.count, cumulative, leaf)
            await self._save(channel, rows=[(_RECEIPT_ROW, row)])
            frontier.append(leaf)
            self.receipts[str(stake)] = frontier
            return channel

    async def unsettle(self, stake: Pubkey, amounts: dict[Pubkey, int]) -> Channel:
        """The payee's side: a task accepted did not run; its price is credit again."""
        async with self._lock(stake):
            channel = self.get(stake)
            settled = {r: channel.settled.get(r, 0) - amounts.get(r, 0) for r in channel.settled}
            channel = replace(channel, settled={r: v for r, v in settled.items() if v > 0})
            await self._save(channel)
            return channel

    async def accept(
        self,
        stake: Pubkey,
        amounts: dict[Pubkey, int],
        state: bytes,
        claimed: dict[Pubkey, int] | None = None,
    ) -> Channel:
        """The payee's side of a task owing ``amounts``: keep ``state`` if it is newer
        than the one held (it owes ``claimed``, at least as much to everyone, and
        checks out), then count the task as served if the credit covers it.
        ChannelError, with nothing stored, if the state is bad or the credit short.

        States of tasks in flight may arrive in any order: an older one is simply
        covered by the newer one already held."""
        async with self._lock(stake):
            channel = self._open(stake, "payee")
            if claimed is None:
                claimed = _added(channel.owed, amounts)
            if any(type(v) is not int or v < 0 for v in claimed.values()):
                raise ChannelError("the payment's amounts are not amounts")
            check_recipients(channel.terms, claimed)
            newer = all(claimed.get(r, 0) >= v for r, v in channel.owed.items())
            if newer and claimed != channel.owed:
                payouts = payable(claimed, channel.terms.payee)
                receipts = _not_back(channel, state)
                # One signature check (about 50 us) costs less than a thread hop.
                check_state(channel.terms, channel.nonce, payouts, state, receipts=receipts)
                channel = replace(channel, owed=dict(claimed), state=state)
            elif not newer and not all(channel.owed.get(r, 0) >= v for r, v in claimed.items()):
                raise ChannelError("the payment's amounts contradict the state held")
            elif claimed == channel.owed and state != channel.state and channel.state:
                # The payouts held, with more receipts: an acknowledgement that did
                # not arrive. Kept if it checks out; the payment stands either way.
                with suppress(ChannelError):
                    channel = _acked(channel, state)
            if any(channel.credit(r) < a for r, a in amounts.items()):
                raise PaymentShort("the payment does not cover this task: send a new state")
            channel = replace(channel, settled=_added(channel.settled, amounts))
            await self._save(channel)
            return channel

    async def take_ack(self, stake: Pubkey, claimed: dict[Pubkey, int], state: bytes) -> Channel:
        """The payee's side of an acknowledgement: ``state`` pays exactly what the
        latest state held pays (``claimed`` owed) and commits to more receipts; it
        is kept as the latest state. ChannelError, with nothing stored, otherwise."""
        async with self._lock(stake):
            channel = self._open(stake, "payee")
            if claimed != channel.owed or channel.state is None:
                raise ChannelError(
                    "the acknowledgement pays other amounts than the latest state this "
                    "node holds: the next payment carries the receipts instead"
                )
            channel = _acked(channel, state)
            await self._save(channel)
            return channel

    async def begin_close(self, stake: Pubkey) -> Channel:
        """The payee's close starts: no payment is accepted from now on, so the state
        returned is the last one. `mark` it closed, or open again if it failed."""
        async with self._lock(stake):
            channel = self.get(stake)
            if channel.role != "payee" or channel.status not in ("open", "closing"):
                raise ChannelError(
                    f"only the payee closes an open channel (this node is its {channel.role}, "
                    f"and it is {channel.status})"
                )
            channel = replace(channel, status="closing")
            await self._save(channel)
            return channel

    async def mark(self, stake: Pubkey, status: str) -> Channel:
        """Record what became of a channel on the ledger (closed, refunded, failed)."""
        if status not in STATUSES:
            raise ValueError(status)
        async with self._lock(stake):
            channel = replace(self.get(stake), status=status)
            await self._save(channel)
            return channel

    async def closed(self, stake: Pubkey, held: dict[Pubkey, int]) -> Channel:
        """The payee's close landed: the channel is closed and what its state paid
        the payee for others (``held``) is recorded as due to them, together."""
        async with self._lock(stake):
            channel = replace(self.get(stake), status="closed")
            rows = [
                Held(str(stake), r, channel.terms.payee, v, "due")
                for r, v in held.items()
                if (str(stake), r) not in self.held
            ]
            await self._save(channel, rows)
            return channel

    def due(self, payee: Pubkey) -> list[Held]:
        """Royalties ``payee`` holds for others and has not forwarded yet."""
        return [h for h in self.held.values() if h.payee == payee and h.status == "due"]

    def sending_now(self) -> dict[str, list[Held]]:
        """Forwards sent (or about to be) whose outcome is not recorded yet, by signature."""
        pending: dict[str, list[Held]] = {}
        for h in self.held.values():
            if h.status == "sending" and h.signature:
                pending.setdefault(h.signature, []).append(h)
        return pending

    async def sending(self, rows: list[Held], signature: str, forward: bytes) -> None:
        """``forward`` pays ``rows``: stored before it is sent, so a crash cannot
        send it twice (the ledger tells later whether it landed)."""
        await self._save_held(
            [replace(h, status="sending", signature=signature, forward=forward) for h in rows]
        )

    async def forwarded(self, signature: str) -> None:
        """The forward ``signature`` landed: its royalties are paid."""
        rows = self.sending_now().get(signature, [])
        await self._save_held([replace(h, status="paid", forward=None) for h in rows])

    async def unsend(self, signature: str) -> None:
        """The forward ``signature`` never landed and never will: due again."""
        rows = self.sending_now().get(signature, [])
        await self._save_held(
            [replace(h, status="due", signature=None, forward=None) for h in rows]
        )

    async def _save_held(self, rows: list[Held]) -> None:
        with trio.CancelScope(shield=True):
            await self._commit([_held_statement(h) for h in rows])
        for h in rows:
            self.held[h.stake, h.recipient] = h

    def _open(self, stake: Pubkey, role: str) -> Channel:
        channel = self.get(stake)
        if channel.role != role:
            raise ChannelError(
                f"this node is the {channel.role} of channel {stake}, not the {role}"
            )
        if channel.status != "open":
            raise ChannelError(f"channel {stake} is {channel.status}")
        return channel

    def closing_lock(self, stake: Pubkey) -> trio.Lock:
        """Held around a whole close, so that two closes never overlap."""
        return self._close_locks.setdefault(str(stake), trio.Lock())

    def _lock(self, stake: Pubkey) -> trio.Lock:
        return self._locks.setdefault(str(stake), trio.Lock())

    async def _save(
        self,
        channel: Channel,
        held: list[Held] | None = None,
        rows: list[_Statement] | None = None,
    ) -> None:
        """Durable before it returns (with ``held`` and ``rows``, in one transaction);
        shielded, so a cancelled caller cannot leave the memory and the disk apart."""
        channel = replace(channel, updated=time.time())
        row = (
            str(channel.terms.stake),
            channel.role,
            channel.peer,
            json.dumps(channel.terms.to_wire()),
            str(channel.nonce),
            json.dumps({str(k): v for k, v in channel.owed.items()}),
            json.dumps({str(k): v for k, v in channel.settled.items()}),
            channel.state,
            channel.status,
            channel.updated,
        )
        statements = [
            (_CHANNEL_ROW, row),
            *(_held_statement(h) for h in held or ()),
            *(rows or ()),
        ]
        with trio.CancelScope(shield=True):
            await self._commit(statements)
        self.channels[str(channel.terms.stake)] = channel
        for h in held or ():
            self.held[h.stake, h.recipient] = h

    async def _commit(self, statements: list[_Statement]) -> None:
        """Group commit: rows saved while a write is in flight go together in the next
        transaction (one fsync for all), each caller returning once its row is on
        disk. The first caller of a batch writes it."""
        batch = self._batch
        batch.rows.append(statements)
        if batch.leader:
            await batch.done.wait()
        else:
            batch.leader = True
            async with self._writing:
                self._batch = _Batch()  # later rows wait for the next transaction
                try:
                    await trio.to_thread.run_sync(self._write, batch.rows, limiter=self._limiter)
                except BaseException as exc:  # every row of the batch failed with it
                    batch.error = f"the channel book could not be written: {exc}"
                    if not isinstance(exc, sqlite3.Error):
                        raise
                finally:
                    batch.done.set()
        if batch.error:
            raise LedgerError(batch.error)

    def _write(self, rows: list[list[_Statement]]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for statements in rows:
                for sql, params in statements:
                    self._db.execute(sql, params)


_Statement = tuple[str, tuple[object, ...]]
_CHANNEL_ROW = "INSERT OR REPLACE INTO channels VALUES (?,?,?,?,?,?,?,?,?,?)"
_RECEIPT_ROW = "INSERT OR REPLACE INTO receipts VALUES (?,?,?,?)"


def _not_back(channel: Channel, state: bytes) -> Commitment | None:
    """The receipts commitment ``state`` claims, if it does not go back on the one
    the latest state held (the payer's word: any count not lower is taken)."""
    claimed, held = state_receipts(state), channel.receipts
    if held is not None and (claimed is None or claimed[0] < held[0]):
        count = "none" if claimed is None else claimed[0]
        raise ChannelError(
            f"the state commits to {count} receipts, fewer than the {held[0]} the latest state held"
        )
    return claimed


def _acked(channel: Channel, state: bytes) -> Channel:
    """``channel`` with ``state`` as its latest: the same payouts, signed by the
    payer, committing to more receipts than the state held. ChannelError if not."""
    claimed, held = state_receipts(state), channel.receipts
    if claimed is None or claimed[0] <= (held[0] if held else 0):
        raise ChannelError(
            "the acknowledgement commits to no more receipts than the latest state held"
        )
    payouts = payable(channel.owed, channel.terms.payee)
    check_state(channel.terms, channel.nonce, payouts, state, receipts=claimed)
    return replace(channel, state=state)


def _held_statement(h: Held) -> _Statement:
    return (
        "INSERT OR REPLACE INTO held VALUES (?,?,?,?,?,?,?)",
        (h.stake, str(h.recipient), str(h.payee), h.amount, h.status, h.signature, h.forward),
    )


@dataclass
class _Batch:
    rows: list[list[_Statement]] = field(default_factory=list)
    leader: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    error: str = ""


def _amounts(text: str) -> dict[Pubkey, int]:
    return {Pubkey.from_string(k): v for k, v in json.loads(text).items()}


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
        # A task of a longer-lived nursery may still be writing in its thread:
        # closing the connection under it crashes the process. Wait for it; later
        # writes fail with a LedgerError (a closed database), never a crash.
        with trio.CancelScope(shield=True):
            async with book._writing:
                book.close()
