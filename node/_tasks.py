"""``/mercato/task/1.0.0``: run an agent on a provider and get a signed receipt.

    user     -> TaskRequest(task, agent="publisher/name", version, input, max_price)
    provider -> TaskResponse(output, receipt)

The provider resolves the release in its registry, fetches the build if it
lacks it, runs it in its sandbox under the listing's limits, and signs a
`Receipt` with its node key (kind ``task-receipt``). The user's node checks the
signature against the provider's peer id, and that the receipt names this
task, this input and exactly this output. Paid tasks need settlement (a later
issue): until then a provider runs free listings only, and the messages
already carry ``max_price`` and ``price``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from p2p import (
    FrameError,
    Message,
    RequestProtocol,
    canonical_cbor,
    decode_canonical,
    public_key_of_peer,
    verify_signature,
)

from ._errors import NodeError

MAX_TASK_INPUT = 8 * 1024 * 1024
MAX_TASK_OUTPUT = 8 * 1024 * 1024
RECEIPT_KIND = "task-receipt"


class TaskError(NodeError):
    """A task could not run, or its answer does not hold up; the message says why."""


class BadReceipt(TaskError):
    """A provider's receipt is forged or does not match the task, input or output."""


@dataclass(frozen=True)
class TaskRequest(Message):
    TYPE: ClassVar[str] = "task.request"
    task: bytes = field(metadata={"max_len": 16})
    agent: str = field(metadata={"max_len": 120})
    version: str = field(default="*", metadata={"max_len": 64})
    input: bytes = field(default=b"", metadata={"max_len": MAX_TASK_INPUT})
    max_price: int = field(default=0, metadata={"min": 0, "max": 10**15})


@dataclass(frozen=True)
class TaskResponse(Message):
    TYPE: ClassVar[str] = "task.response"
    output: bytes = field(default=b"", metadata={"max_len": MAX_TASK_OUTPUT})
    receipt: bytes = field(default=b"", metadata={"max_len": 4096})


TASK = RequestProtocol(
    "/mercato/task/1.0.0",
    TaskRequest,
    TaskResponse,
    max_request_bytes=MAX_TASK_INPUT + 4096,
    max_response_bytes=MAX_TASK_OUTPUT + 8192,
    timeout_s=120.0,
    rate_per_s=400.0,  # tasks are small and many; the runtime's slots bound the work
)


@dataclass(frozen=True)
class Receipt:
    """What a provider signs for a task it ran."""

    task: bytes
    agent: str
    version: str
    cid: str
    input_hash: bytes
    output_hash: bytes
    outcome: str
    fuel: int
    wall_ms: int
    price: int
    provider: str
    user: str
    time: int

    def body(self) -> dict[str, Any]:
        return asdict(self)

    def sign(self, keypair: Any) -> bytes:
        return canonical_cbor(
            {"receipt": self.body(), "sig": keypair.sign(RECEIPT_KIND, self.body())}
        )

    @classmethod
    def verify(cls, data: bytes) -> Receipt:
        """Decode a signed receipt and check its signature against its provider's peer
        id; BadReceipt if either fails."""
        try:
            obj = decode_canonical(data)
            body, sig = obj["receipt"], obj["sig"]
            receipt = cls(**body)
            key = public_key_of_peer(receipt.provider)
        except (FrameError, KeyError, TypeError, ValueError):
            raise BadReceipt("the receipt does not decode") from None
        if not isinstance(sig, bytes) or not verify_signature(key, RECEIPT_KIND, body, sig):
            raise BadReceipt(f"the receipt is not signed by {receipt.provider}")
        return receipt

    def check(self, task: bytes, provider: str, stdin: bytes, output: bytes) -> None:
        """BadReceipt unless this receipt is ``provider``'s for ``task`` with exactly
        this input and output."""
        if self.task != task or self.provider != provider:
            raise BadReceipt("the receipt is for another task or from another provider")
        if self.input_hash != digest(stdin):
            raise BadReceipt("the receipt names another input")
        if self.output_hash != digest(output):
            raise BadReceipt("the output does not match the receipt's hash")


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
