"""Receipts a channel close settles: a Merkle tree over them, its root in a memo.

Every channel state carries one SPL Memo instruction (no accounts) with the
payer's commitment ``(count, root)``: the Merkle root of the signed task
receipts of that channel the payer has received and verified, in channel order
(by the receipt's cumulative amount). The payee's close submits the latest
state, so the closing transaction on the ledger names the receipts it settles,
and anyone holding one of them and its path can check it against the ledger.

    leaf   sha256(b"mercato/receipt-leaf/v1\\0" + signed receipt bytes)
    node   sha256(b"\\x01" + left + right)
    odd    a node without a sibling is promoted to the next level unchanged
    empty  the root of no leaves is 32 zero bytes
    memo   b"mercato/receipts/v1 <count> <root as 64 lowercase hex digits>"

The shape of the tree follows from ``count`` alone, so a path is just the
sibling hashes, leaf to root, and the leaf's index says on which side each is.
A leaf can never pass for an inner node (their first bytes differ).

`find_close` finds a channel's closing transaction in a ledger's history: the
one that advanced the channel's nonce and withdrew from its stake account.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from solders.instruction import CompiledInstruction, Instruction
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey

from ._errors import ChannelError
from ._programs import STAKE_PROGRAM

if TYPE_CHECKING:
    from ._channel import ChannelTerms
    from ._ledger import Ledger

MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
LEAF_PREFIX = b"mercato/receipt-leaf/v1\0"
NODE_PREFIX = b"\x01"
MEMO_PREFIX = b"mercato/receipts/v1 "
EMPTY_ROOT = bytes(32)
MAX_COUNT = 2**63 - 1
_MEMO = re.compile(rb"mercato/receipts/v1 (0|[1-9][0-9]{0,18}) ([0-9a-f]{64})")
ADVANCE_NONCE = 4  # the system program's AdvanceNonceAccount
STAKE_WITHDRAW = 4  # the stake program's Withdraw

Commitment = tuple[int, bytes]
"""``(count, root)``: how many receipts, and the Merkle root over them."""
AnyMessage = Message | MessageV0 | MessageV1


def receipt_leaf(signed_receipt: bytes) -> bytes:
    """The leaf of one signed receipt (its bytes exactly as the provider signed them)."""
    return hashlib.sha256(LEAF_PREFIX + signed_receipt).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _up(level: Sequence[bytes]) -> list[bytes]:
    return [
        _node(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
        for i in range(0, len(level), 2)
    ]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over ``leaves`` (EMPTY_ROOT for none)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _up(level)
    return level[0]


def commitment(leaves: Sequence[bytes]) -> Commitment:
    """``(count, root)`` over ``leaves``."""
    return len(leaves), merkle_root(leaves)


class Frontier:
    """The commitment of a list of leaves that only grows, in O(log n) per leaf:
    it keeps the roots of the list's perfect subtrees (its peaks), largest first.
    Pairing left to right keeps those subtrees whole at every level, so the root
    is the peaks folded from the right: `merkle_root` of the same leaves."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.count = 0
        self._peaks: list[tuple[int, bytes]] = []  # (height, root of that subtree)
        for leaf in leaves:
            self.append(leaf)

    def append(self, leaf: bytes) -> None:
        height, node = 0, leaf
        while self._peaks and self._peaks[-1][0] == height:
            node = _node(self._peaks.pop()[1], node)
            height += 1
        self._peaks.append((height, node))
        self.count += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            node = _node(left, node)
        return node

    def commitment(self) -> Commitment:
        return self.count, self.root()


def merkle_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes from leaf ``index`` up to the root (promoted levels have
    none). IndexError if there is no such leaf."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"no leaf {index} among {len(leaves)}")
    path: list[bytes] = []
    level, i = list(leaves), index
    while len(level) > 1:
        if i ^ 1 < len(level):
            path.append(level[i ^ 1])
        level, i = _up(level), i // 2
    return path


def verify_path(leaf: bytes, index: int, count: int, path: Sequence[bytes], root: bytes) -> bool:
    """Whether ``leaf`` is leaf ``index`` of a tree of ``count`` leaves with ``root``,
    by ``path`` (exactly the siblings `merkle_path` gives, no more)."""
    if not 0 <= index < count or not _hash(leaf) or not _hash(root):
        return False
    node, i, width, used = leaf, index, count, 0
    while width > 1:
        if i ^ 1 < width:
            if used >= len(path) or not _hash(path[used]):
                return False
            sibling = path[used]
            node = _node(sibling, node) if i & 1 else _node(node, sibling)
            used += 1
        i, width = i // 2, (width + 1) // 2
    return used == len(path) and hmac.compare_digest(node, root)


def _hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def receipts_memo(count: int, root: bytes) -> bytes:
    """The memo of a commitment. ValueError unless it is one (no receipts: EMPTY_ROOT)."""
    if type(count) is not int or not 0 <= count <= MAX_COUNT or not _hash(root):
        raise ValueError("a receipts commitment is a count from 0 and a 32-byte root")
    if (count == 0) != (root == EMPTY_ROOT):
        raise ValueError("the root of no receipts is 32 zero bytes, and only theirs")
    return MEMO_PREFIX + b"%d %s" % (count, root.hex().encode())


def parse_receipts_memo(memo: bytes) -> Commitment | None:
    """``(count, root)`` from a memo `receipts_memo` made; None for anything else
    (another prefix, a leading zero, upper-case hex, a space too many, ...)."""
    if not isinstance(memo, bytes):
        return None
    found = _MEMO.fullmatch(memo)
    if found is None:
        return None
    count, root = int(found[1]), bytes.fromhex(found[2].decode())
    if count > MAX_COUNT or (count == 0) != (root == EMPTY_ROOT):
        return None
    return count, root


def memo_instruction(receipts: Commitment) -> Instruction:
    """The SPL Memo instruction that carries ``receipts`` (no accounts, so no signer)."""
    return Instruction(MEMO_PROGRAM, receipts_memo(*receipts), [])


def message_receipts(message: AnyMessage) -> Commitment | None:
    """The commitment a transaction's message carries, None if it has no memo.
    ChannelError if it has more than one, or one that is not a receipts memo."""
    keys = list(message.account_keys)
    memos = [
        bytes(ix.data)
        for ix in message.instructions
        if ix.program_id_index < len(keys) and keys[ix.program_id_index] == MEMO_PROGRAM
    ]
    if not memos:
        return None
    parsed = parse_receipts_memo(memos[0]) if len(memos) == 1 else None
    if parsed is None:
        raise ChannelError("the state's memo is not one receipts commitment")
    return parsed


# -- on the ledger ---------------------------------------------------------------


@dataclass(frozen=True)
class Close:
    """A channel's closing transaction as the ledger keeps it."""

    signature: str
    slot: int
    block_time: int | None
    receipts: Commitment | None  # None: the close carried no receipts memo
    memo_error: str = ""  # why a memo it carried is not a commitment


def closes(message: AnyMessage, terms: ChannelTerms) -> bool:
    """Whether ``message`` is a close of the channel: it advances the channel's nonce
    and withdraws from its stake account (a refund does the latter only)."""
    keys = list(message.account_keys)

    def account(ix: CompiledInstruction, n: int) -> Pubkey | None:
        accounts = bytes(ix.accounts)
        return keys[accounts[n]] if len(accounts) > n and accounts[n] < len(keys) else None

    advanced = withdrew = False
    for ix in message.instructions:
        if ix.program_id_index >= len(keys) or len(bytes(ix.data)) < 4:
            continue
        program, tag = keys[ix.program_id_index], int.from_bytes(bytes(ix.data)[:4], "little")
        if program == SYSTEM_PROGRAM and tag == ADVANCE_NONCE:
            advanced = advanced or account(ix, 0) == terms.nonce
        elif program == STAKE_PROGRAM and tag == STAKE_WITHDRAW:
            withdrew = withdrew or account(ix, 0) == terms.stake
    return advanced and withdrew


async def find_close(ledger: Ledger, terms: ChannelTerms) -> Close | None:
    """The channel's close in ``ledger``'s history, None if it has none (yet).
    LedgerError if the ledger keeps no history (the embedded one)."""
    for signature in await ledger.history(terms.stake):
        landed = await ledger.landed_transaction(signature)
        if landed is None or not landed.succeeded:
            continue
        message = landed.transaction.message
        if not closes(message, terms):
            continue
        try:
            receipts, why = message_receipts(message), ""
        except ChannelError as exc:
            receipts, why = None, str(exc)
        return Close(signature, landed.slot, landed.block_time, receipts, why)
    return None
