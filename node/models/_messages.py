"""``/mercato/infer/1.0.0``: a chat completion on a provider's model, streamed, paid per token.

One exchange (`mercato.p2p.ExchangeProtocol`) per call::

    user     -> InferRequest   the model listing, the OpenAI chat body (JSON), the
                               prices per 1,000 tokens the user accepts, its cap on
                               output tokens, and (for a priced model) a `Payment`
                               that shows the channel it will pay on: its terms and
                               latest state, paying nothing new
    provider -> InferChunk ... one per chunk the engine streamed (its JSON, as sent)
    provider -> InferEnd       the signed `InferReceipt`: the request's hash, the
                               hash of every chunk sent, the engine's token counts
                               and what they cost; an error if the engine failed
    user     -> InferPay       a `Payment` for exactly that cost (priced models)
    provider -> InferPaid      the payment is kept

Payment follows delivery, so the user pays for the tokens it got and no more.
The provider's risk is one call: it serves a user only while the channel shown
has room for the call's most (every prompt token and ``max_tokens`` output
tokens at its prices) and the user owes it nothing unpaid, and a user that
does not pay is refused until it does (``unpaid``).

The user's node checks the receipt against what arrived: the provider's
signature, this call, this request, exactly these chunks, prices no higher
than accepted, and counts it can bound without the model's tokenizer: output
tokens at most ``max_tokens`` and at most the tokens it received, that is the
tokens the engine listed in ``logprobs`` (which the provider always asks for)
or, where more, the bytes of text (a token is at least one byte; llama.cpp
merges tokens that are not yet whole UTF-8 into one chunk and lists one of
them), plus one for the stop token; input tokens at most the prompt's UTF-8
bytes plus the chat template's allowance per message. So a provider can
over-count only within those bounds, never past what the call could hold. A
receipt that fails is a bad receipt, penalised like a cheat on a task, and is
not paid.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from mercato.p2p import ExchangeProtocol, Message

from .._errors import NodeError
from ..tasks import BadReceipt, sign_object, typed_object, verified_object

MAX_REQUEST_BODY = 1024 * 1024
MAX_CHUNK = 64 * 1024
RECEIPT_KIND = "infer-receipt"
CALL_ID_BYTES = 16
OUTCOMES = frozenset(("ok", "failed"))
TEMPLATE_TOKENS_PER_MESSAGE = 64
"""What a chat template may add per message, in tokens, on top of its text."""
TEMPLATE_TOKENS = 64


class ModelError(NodeError):
    """A model call could not be made or its answer does not hold up; the message says why."""


class NoModel(ModelError):
    """No listing by that name is a model, or no live provider serves it."""


class BadModelRequest(ModelError):
    """The chat request itself is wrong (malformed, over the context): no provider can take it."""

    def __init__(self, message: str, code: str = "invalid_request", param: str = "") -> None:
        super().__init__(message)
        self.code, self.param = code, param


class ModelUnavailable(ModelError):
    """Every provider asked failed or refused before it streamed; the message lists why."""


@dataclass(frozen=True)
class InferRequest(Message):
    TYPE: ClassVar[str] = "infer.request"
    call: bytes = field(metadata={"max_len": CALL_ID_BYTES})
    model: str = field(metadata={"max_len": 120})  # PUBLISHER/NAME of a model listing
    body: bytes = field(metadata={"max_len": MAX_REQUEST_BODY})  # OpenAI chat JSON
    max_tokens: int = field(metadata={"min": 1, "max": 10**7})
    input_price: int = field(metadata={"min": 0, "max": 10**15})  # the most, per 1,000
    output_price: int = field(metadata={"min": 0, "max": 10**15})
    payment: bytes = field(default=b"", metadata={"max_len": 4096})
    parent: bytes = field(default=b"", metadata={"max_len": 16})  # the task calling (an agent's)

    def to_wire(self) -> dict[str, Any]:
        out = super().to_wire()
        if not self.parent:  # older nodes know no parent
            del out["parent"]
        return out


@dataclass(frozen=True)
class InferChunk(Message):
    TYPE: ClassVar[str] = "infer.chunk"
    data: bytes = field(metadata={"max_len": MAX_CHUNK})


@dataclass(frozen=True)
class InferEnd(Message):
    TYPE: ClassVar[str] = "infer.end"
    receipt: bytes = field(metadata={"max_len": 4096})
    error: str = field(default="", metadata={"max_len": 512})  # the engine failed mid-stream


@dataclass(frozen=True)
class InferPay(Message):
    TYPE: ClassVar[str] = "infer.pay"
    payment: bytes = field(metadata={"max_len": 4096})


@dataclass(frozen=True)
class InferPaid(Message):
    TYPE: ClassVar[str] = "infer.paid"


INFER = ExchangeProtocol(
    "/mercato/infer/1.0.0",
    InferRequest,
    (InferChunk, InferEnd, InferPay, InferPaid),
    max_request_bytes=MAX_REQUEST_BODY + 8192,
    max_frame_bytes=MAX_CHUNK + 1024,
    idle_s=120.0,  # a long prompt may take the engine that long before its first token
    timeout_s=1800.0,
    rate_per_s=100.0,
)


@dataclass(frozen=True)
class InferReceipt:
    """What a provider signs for a model call it served."""

    call: bytes
    model: str
    provider: str
    user: str
    request_hash: bytes
    output_hash: bytes
    chunks: int
    input_tokens: int
    output_tokens: int
    input_price: int
    output_price: int
    price: int  # lamports: `cost` of the counts at the prices
    outcome: str
    wall_ms: int
    time: int
    channel: str = ""
    cumulative: int = 0
    parent: bytes = b""  # the task whose agent made the call, if an agent made it

    def sign(self, keypair: Any) -> bytes:
        body = asdict(self)
        if not self.parent:  # a call without one keeps the form it always had
            del body["parent"]
        return sign_object(RECEIPT_KIND, body, keypair)

    @classmethod
    def verify(cls, data: bytes) -> InferReceipt:
        """Decode a signed receipt and check its signature against its provider's
        peer id; BadReceipt if either fails."""
        receipt: InferReceipt = typed_object(
            cls, verified_object(RECEIPT_KIND, data, "receipt"), "receipt"
        )
        if receipt.outcome not in OUTCOMES:
            raise BadReceipt(f"the receipt's outcome {receipt.outcome[:40]!r} is not one")
        return receipt


def cost(input_tokens: int, output_tokens: int, input_price: int, output_price: int) -> int:
    """Lamports for these counts at these prices per 1,000 tokens, rounded up."""
    return math.ceil((input_tokens * input_price + output_tokens * output_price) / 1000)


class StreamHash:
    """The hash a receipt names for the chunks of a call: SHA-256 over each chunk's
    length (4 bytes, big-endian) and bytes, in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.chunks = 0

    def add(self, data: bytes) -> None:
        self._h.update(len(data).to_bytes(4, "big") + data)
        self.chunks += 1

    def digest(self) -> bytes:
        return self._h.digest()


def request_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()
