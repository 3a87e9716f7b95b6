"""What a paid task carries: the `Payment` field of ``/mercato/task/1.0.0``'s run op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mercato.p2p import FrameError, canonical_cbor, decode_canonical
from mercato.settlement import ChannelError

VERSION = 3


@dataclass(frozen=True)
class Payment:
    """What a paid run carries in ``payment``: the channel's terms (so a provider
    that has not seen the channel can check it on the ledger) and the payer's
    new state, which pays everything owed so far plus this task.

    Version 2: a royalty owed under MIN_PAYOUT is paid to the provider in the
    state, which holds it for the creator and forwards it after the close
    (version 1 states left it out, and a close dropped it). The two cannot be
    mixed on a channel, so a version 1 payment is refused with that reason.

    Version 3: the state carries, in a memo, the payer's commitment to the
    receipts it verified on the channel so far (`mercato.settlement` receipts);
    a provider of version 2 would refuse such a state as one that does not pay
    what was agreed, so the version says it first. The acknowledgement of a
    receipt (the ``ack`` op) carries a `Payment` too: the same amounts, more
    receipts."""

    terms: dict[str, Any]
    owed: dict[str, int]  # the payer's account of everything owed, per recipient
    state: bytes

    def encode(self) -> bytes:
        return canonical_cbor(
            {"v": VERSION, "terms": self.terms, "owed": self.owed, "state": self.state}
        )

    @classmethod
    def decode(cls, data: bytes) -> Payment:
        try:
            obj = decode_canonical(data)
            terms, owed, state = obj["terms"], obj["owed"], obj["state"]
        except (FrameError, KeyError, TypeError, ValueError) as exc:
            raise ChannelError("the payment does not decode") from exc
        if obj.get("v") != VERSION:
            raise ChannelError(
                f"the payment is version {obj.get('v')!r}, this node takes version {VERSION}: "
                "one of the two nodes needs an upgrade"
            )
        if not isinstance(terms, dict) or not isinstance(state, bytes):
            raise ChannelError("the payment's terms or state are malformed")
        if (
            not isinstance(owed, dict)
            or len(owed) > 16
            or not all(isinstance(k, str) and type(v) is int for k, v in owed.items())
        ):
            raise ChannelError("the payment's owed amounts are malformed")
        return cls(terms, owed, state)
