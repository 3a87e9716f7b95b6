"""``/mercato/sale/1.0.0``: buying a licence from its creator's node, and refunds.

    buyer   -> SaleRequest(op="offer", agent, plan, buyer)
    creator -> SaleResponse(offer)        the terms it sells at now, signed by the
                                          creator's account key, good for OFFER_TTL_S
    buyer   -> SaleRequest(op="buy", offer, transaction)
                                          the purchase, signed by the buyer (the
                                          mint's address derives from the creator's
                                          key and a seed the buyer picked)
    creator -> SaleResponse(signature)    co-signed, and landed on the ledger
    buyer   -> SaleRequest(op="refund", refund)
                                          a refund request signed by the buyer's key
    creator -> SaleResponse(signature)    the price back and the licence burnt

The offer carries itself back, so the creator's node keeps nothing between
the two steps: it checks that the offer is its own and still holds, then that
the transaction is exactly the purchase of those terms (`check_purchase`).

Two more signed objects live here: the `LicenceUse` a buyer's node sends with
a task (the licence's holder says "this peer runs under my licence, at this
provider"), and the `RefundAsk`. Each is canonical CBOR signed by a Solana
account key over ``b"mercato/<kind>/v1\\0" + body``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from mercato.p2p import FrameError, Message, RequestProtocol, canonical_cbor, decode_canonical
from mercato.settlement import MAX_TRANSACTION_BYTES, LicenceError, LicenceTerms

from ._errors import BadSignedObject

MAX_SIGNED = 2048
OFFER_TTL_S = 120
REFUND_ASK_TTL_S = 300  # how far a refund request's clock may be from the creator's


@dataclass(frozen=True)
class SaleRequest(Message):
    TYPE: ClassVar[str] = "sale.request"
    op: str = field(metadata={"max_len": 8})  # offer, buy or refund
    agent: str = field(default="", metadata={"max_len": 120})
    plan: str = field(default="", metadata={"max_len": 32})
    buyer: str = field(default="", metadata={"max_len": 44})
    offer: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})
    transaction: bytes = field(default=b"", metadata={"max_len": MAX_TRANSACTION_BYTES})
    refund: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})


@dataclass(frozen=True)
class SaleResponse(Message):
    TYPE: ClassVar[str] = "sale.response"
    offer: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})
    signature: str = field(default="", metadata={"max_len": 100})


SALE = RequestProtocol(
    "/mercato/sale/1.0.0",
    SaleRequest,
    SaleResponse,
    max_request_bytes=8192,
    max_response_bytes=4096,
    timeout_s=60.0,  # a purchase waits for the ledger to confirm it
    rate_per_s=100.0,  # a purchase is two requests; concurrency is bounded per protocol
)


def _message(kind: str, body: dict[str, Any]) -> bytes:
    return f"mercato/{kind}/v1\0".encode() + canonical_cbor(body)


def sign_object(kind: str, body: dict[str, Any], key: Keypair) -> bytes:
    """``body`` signed by ``key`` (a Solana account key), as canonical CBOR."""
    sig = bytes(key.sign_message(_message(kind, body)))
    return canonical_cbor({"body": body, "sig": sig})


def open_object(kind: str, data: bytes, signer_field: str) -> dict[str, Any]:
    """The body of a signed ``kind`` object, checked against the account its
    ``signer_field`` names; BadSignedObject if it does not decode or verify."""
    try:
        obj = decode_canonical(data)
        body, sig = obj["body"], obj["sig"]
        signer = Pubkey.from_string(str(body[signer_field]))
        ok = Signature.from_bytes(sig).verify(signer, _message(kind, body))
    except (FrameError, KeyError, TypeError, ValueError) as exc:
        raise BadSignedObject(f"the {kind} does not decode") from exc
    if not ok:
        raise BadSignedObject(f"the {kind} is not signed by the account it names")
    if not isinstance(body, dict):
        raise BadSignedObject(f"the {kind} is not a map")
    return body


@dataclass(frozen=True)
class Offer:
    """The terms a creator's node sells at, until ``until`` (unix seconds)."""

    terms: LicenceTerms
    until: int

    def sign(self, creator: Keypair) -> bytes:
        return sign_object("sale-offer", self._body(), creator)

    def _body(self) -> dict[str, Any]:
        return {
            "terms": self.terms.to_wire(),
            "until": self.until,
            "creator": str(self.terms.creator),
        }

    @classmethod
    def verify(cls, data: bytes) -> Offer:
        body = open_object("sale-offer", data, "creator")
        try:
            terms = LicenceTerms.from_wire(body["terms"])
            until = body["until"]
        except (KeyError, TypeError, LicenceError) as exc:
            raise BadSignedObject(f"the offer's terms do not hold up: {exc}") from exc
        if type(until) is not int or str(terms.creator) != body["creator"]:
            raise BadSignedObject("the offer's expiry or creator is malformed")
        return cls(terms, until)


@dataclass(frozen=True)
class LicenceUse:
    """A licence holder's word that ``user`` (a peer) runs under its licence at
    ``provider``: what a provider checks before it quotes or runs."""

    mint: str
    holder: str
    provider: str
    user: str

    def sign(self, holder: Keypair) -> bytes:
        return sign_object("licence-use", asdict(self), holder)

    @classmethod
    def verify(cls, data: bytes) -> LicenceUse:
        body = open_object("licence-use", data, "holder")
        if set(body) != {"mint", "holder", "provider", "user"}:
            raise BadSignedObject("the licence use has other fields than expected")
        if not all(isinstance(v, str) and len(v) <= 100 for v in body.values()):
            raise BadSignedObject("the licence use's fields are not short text")
        return cls(**body)


@dataclass(frozen=True)
class RefundAsk:
    """A buyer's signed request to refund the licence ``mint``."""

    mint: str
    buyer: str
    time: int

    def sign(self, buyer: Keypair) -> bytes:
        return sign_object("refund-ask", asdict(self), buyer)

    @classmethod
    def verify(cls, data: bytes, now: float | None = None) -> RefundAsk:
        body = open_object("refund-ask", data, "buyer")
        if set(body) != {"mint", "buyer", "time"} or type(body["time"]) is not int:
            raise BadSignedObject("the refund request is malformed")
        if not isinstance(body["mint"], str) or len(body["mint"]) > 44:
            raise BadSignedObject("the refund request names no licence")
        if abs(body["time"] - (time.time() if now is None else now)) > REFUND_ASK_TTL_S:
            raise BadSignedObject("the refund request is too old (or from the future)")
        return cls(**body)
