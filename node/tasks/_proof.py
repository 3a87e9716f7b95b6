"""Proof of a paid task's receipt, on the ledger.

Every state the user's node signs commits (in a memo) to the receipts it has
verified on that channel so far: their count and the Merkle root over them
(`mercato.settlement` receipts). After each good receipt the runner sends the
provider the same payouts signed again with the new commitment (the ``ack``
op of ``/mercato/task/1.0.0``), so the state the provider closes with commits
to every receipt that reached the user before the close.

`prove` (the user's side) takes a task from the task log, its signed receipt,
and the ordered leaves the channel book kept for its channel; it finds the
channel's closing transaction in the ledger's history, reads the commitment in
its memo, and checks the receipt's Merkle path against it. It needs a ledger
that keeps history (a localnet or a cluster; not the embedded one).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from mercato.settlement import find_close, merkle_path, receipt_leaf, verify_path

from ..money import SettlementService
from ._log import TaskLog
from ._messages import Receipt, TaskError


class NoProof(TaskError):
    """A task's receipt cannot be proven against the ledger (yet); the message says why."""


async def prove(
    tasklog: TaskLog,
    money: SettlementService,
    task_id: str,
    read: Callable[[bytes], Any] = Receipt.verify,
) -> dict[str, Any]:
    """The proof of the user's receipt for ``task_id``: ``{task, channel, signature,
    slot, block_time, root, count, index, leaf, path, verified, reason}`` (hashes
    in hex; ``reason`` says why it is not verified). NoProof if there is nothing
    to prove it against: an unknown or free task, a channel still open. ``read``
    checks the signed receipt and returns it (anything with a ``channel``): a
    task's `Receipt` by default, or a model call's."""
    records = await tasklog.get(task_id)
    signed = next((r.receipt for r in records if r.role == "user" and r.receipt), None)
    if signed is None:
        if any(r.role == "provider" for r in records):
            raise NoProof(
                "this node ran that task for someone else: the proof is on the user's node, "
                "which kept the receipts it committed to"
            )
        raise NoProof(f"this node has no receipt for task {task_id} (see `mercato tasks show`)")
    receipt = read(signed)  # checked again: the file could have been tampered with
    stake = receipt.channel
    if not stake:
        raise NoProof("that task was free: no channel paid for it, so no close settles it")
    channel = money.book.channels.get(stake)
    if channel is None or channel.role != "payer":
        raise NoProof(f"this node pays on no channel {stake}: it kept no receipts for it")
    leaf = receipt_leaf(signed)
    leaves = await money.book.leaves(stake)
    if leaf not in leaves:
        raise NoProof(
            "this node kept no leaf for that receipt (it was checked before receipts were "
            "committed to): it cannot be proven"
        )
    index = leaves.index(leaf)
    close = await find_close(money.ledger, channel.terms)
    if close is None:
        ends = datetime.datetime.fromtimestamp(channel.terms.expires, datetime.UTC)
        raise NoProof(
            f"channel {stake} is still open on the {money.ledger.name} ledger: prove works "
            f"once the channel is closed (its provider runs `mercato channel close {stake}`, "
            f"or closes it on its own before the lockup ends at {ends:%Y-%m-%d %H:%M} UTC)"
        )
    if close.receipts is None:
        raise NoProof(
            f"the close of channel {stake} ({close.signature}) carries no receipts "
            f"commitment: {close.memo_error or 'its state was signed before receipts were'}"
        )
    count, root = close.receipts
    path = merkle_path(leaves[:count], index) if index < count else []
    verified = verify_path(leaf, index, count, path, root)
    reason = ""
    if index >= count:
        reason = (
            f"the close commits to the channel's first {count} receipts and this is receipt "
            f"{index + 1}: the provider closed before its acknowledgement reached it"
        )
    elif not verified:
        reason = (
            "the receipt's path does not lead to the root the close commits to: the "
            "receipts this node kept differ from the ones it signed for"
        )
    return {
        "task": task_id,
        "channel": stake,
        "signature": close.signature,
        "slot": close.slot,
        "block_time": close.block_time,
        "root": root.hex(),
        "count": count,
        "index": index,
        "leaf": leaf.hex(),
        "path": [h.hex() for h in path],
        "verified": verified,
        "reason": reason,
    }
