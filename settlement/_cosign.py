"""The second signature on a transaction another party signed and this node checked."""

from __future__ import annotations

from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import Transaction

from ._errors import SettlementError


def cosign(
    checked: Transaction, key: Keypair, error: type[SettlementError], role: str, what: str
) -> Transaction:
    """``checked`` with ``key``'s signature added: ready to submit. ``error`` (saying
    that ``key`` is not the ``role`` of that ``what``) if it has no place in it, or
    if a signature is still missing after it."""
    tx = Transaction.populate(checked.message, list(checked.signatures))
    try:
        tx.partial_sign([key], tx.message.recent_blockhash)
    except Exception as exc:
        raise error(f"this key is not the {role} of that {what}") from exc
    if Signature.default() in tx.signatures:
        raise error(f"the {what} needs a signature this node cannot give")
    return tx
