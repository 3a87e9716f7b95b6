"""``/mercato/task/1.0.0``: quote, then run an agent on a provider for a signed receipt.

    user     -> TaskRequest(op="quote", agent="publisher/name", version, input_size)
    provider -> TaskResponse(quote)       a signed Quote: price, expected latency,
                                          load, release, and until when it holds
    user     -> TaskRequest(op="run", task, quote, input, max_price, payment)
    provider -> TaskResponse(output, receipt)
    user     -> TaskRequest(op="ack", agent, task, payment)    after a paid run's
    provider -> TaskResponse()                                  receipt checked out

The quote is signed by the provider (kind ``task-quote``) and carried back with
the run, so the provider keeps no state between the two and can check that the
quote is its own, for this user and not expired. Running it is accepting it.
The provider resolves the release, fetches the build if it lacks it, runs it in
its sandbox under the listing's limits, and signs a `Receipt` (kind
``task-receipt``). The user's node checks the signature against the provider's
peer id, and that the receipt names this task, this quote, this input and
exactly this output. A paid run carries ``payment`` (a `money.Payment`: the
channel's terms and a new payer-signed state), and its receipt names the
channel and the amount served on it so far (``cumulative``).

Each state commits, in a memo, to the receipts of that channel the user's node
has verified so far (their count and Merkle root; `mercato.settlement`). A
receipt arrives after the state that paid for it, so once the user's node has
checked it, it acknowledges it: an ``ack`` carries the same payouts signed
again with the commitment that includes it (``task`` names the run, for the
logs; ``agent`` is not checked against what the provider serves). It is sent
in the background, in order with the user's other states to that provider,
and never delays the run's answer; one that fails is logged, and the next
payment carries the commitment anyway. The provider keeps it as the channel's
latest state if it pays exactly what the latest state held pays and commits to
more receipts, and answers with an empty response; anything else (an unknown
channel, other amounts, no more receipts) is refused with ``bad_ack`` and
changes nothing. The state the provider closes with therefore names the
receipts it settles (``mercato tasks prove``).

A composite agent calls out (`SubCall`, ``_subcalls.py``). Its quote asks
with ``budget`` (the most the user pays in all) and states its own price and
``subcalls_max``, the most its sub-calls may cost; its receipt lists every
sub-call with the sub-provider's own signed receipt and ``subcalls_cost``,
what the successful ones cost. Once the user's node has checked them:

    user     -> TaskRequest(op="pay", agent, task, payment)   the sub-calls' cost
    provider -> TaskResponse()

A sub-call is itself a task whose request names its ``parent`` task and the
``depth`` of sub-calls still allowed below it; its receipt names the parent.
These fields are left out of the wire and of signed bodies when empty, so a
task without sub-calls reads exactly as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from mercato.p2p import (
    FrameError,
    Message,
    RequestProtocol,
    canonical_cbor,
    decode_canonical,
    public_key_of_peer,
    verify_signature,
)

from .._errors import NodeError

MAX_TASK_INPUT = 8 * 1024 * 1024
MAX_TASK_OUTPUT = 8 * 1024 * 1024
RECEIPT_KIND = "task-receipt"
QUOTE_KIND = "task-quote"
MAX_SIGNED = 4096
MAX_DEPTH = 8  # levels of sub-calls below a task, at most
MAX_SUBCALLS_BYTES = 48 * 1024  # a receipt's list of sub-calls, receipts included
MAX_RECEIPT = MAX_SUBCALLS_BYTES + MAX_SIGNED


class TaskError(NodeError):
    """A task could not run, or its answer does not hold up; the message says why."""


class BadReceipt(TaskError):
    """A provider's receipt or quote is forged or does not match the task, input or output."""


class UnknownAgent(TaskError):
    """No listing by that name, or no release in the range asked for."""


class TaskRefused(TaskError):
    """The task itself cannot run anywhere as asked (input too large, over the price cap)."""


class NoProvider(TaskError):
    """No provider could run the task; the message lists what each said."""

    def __init__(self, message: str, *, over_budget: bool = False, bad_receipts: bool = False):
        super().__init__(message)
        self.over_budget = over_budget
        """Every provider asked more than the task may pay."""
        self.bad_receipts = bad_receipts
        """Every answer came with a receipt that did not hold up."""


class KeyReused(TaskError):
    """An idempotency key came back with another request than it was first used for."""


@dataclass(frozen=True)
class TaskRequest(Message):
    TYPE: ClassVar[str] = "task.request"
    op: str = field(metadata={"max_len": 8})  # "quote", "run" or "ack"
    agent: str = field(metadata={"max_len": 120})
    version: str = field(default="*", metadata={"max_len": 64})
    input_size: int = field(default=0, metadata={"min": 0, "max": MAX_TASK_INPUT})
    task: bytes = field(default=b"", metadata={"max_len": 16})
    quote: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})
    input: bytes = field(default=b"", metadata={"max_len": MAX_TASK_INPUT})
    max_price: int = field(default=0, metadata={"min": 0, "max": 10**15})
    payment: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})  # settlement
    licence: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})  # a LicenceUse
    # A composite agent's call tree: the most the task may cost in all (0: its
    # price, and no paid sub-calls), the levels of sub-calls allowed below it (a
    # sub-call's), and the task that made it (a sub-call's).
    budget: int = field(default=0, metadata={"min": 0, "max": 10**15})
    depth: int = field(default=0, metadata={"min": 0, "max": MAX_DEPTH})
    parent: bytes = field(default=b"", metadata={"max_len": 16})

    def to_wire(self) -> dict[str, Any]:
        return _without_empty(super().to_wire(), _TREE_FIELDS)


@dataclass(frozen=True)
class TaskResponse(Message):
    TYPE: ClassVar[str] = "task.response"
    quote: bytes = field(default=b"", metadata={"max_len": MAX_SIGNED})
    output: bytes = field(default=b"", metadata={"max_len": MAX_TASK_OUTPUT})
    receipt: bytes = field(default=b"", metadata={"max_len": MAX_RECEIPT})


_TREE_FIELDS = ("budget", "depth", "parent", "subcalls_max", "subcalls", "subcalls_cost")


def _without_empty(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``body`` without the call tree's fields that are empty: older nodes know
    none of them, and a task without sub-calls keeps its exact bytes."""
    for name in names:
        if name in body and not body[name]:
            del body[name]
    return body


TASK = RequestProtocol(
    "/mercato/task/1.0.0",
    TaskRequest,
    TaskResponse,
    max_request_bytes=MAX_TASK_INPUT + 4096,
    max_response_bytes=MAX_TASK_OUTPUT + MAX_RECEIPT + 8192,
    timeout_s=120.0,
    rate_per_s=400.0,  # tasks are small and many; the runtime's slots bound the work
)


def _signed(kind: str, body: dict[str, Any], keypair: Any) -> bytes:
    return canonical_cbor({"body": body, "sig": keypair.sign(kind, body)})


def _verified(kind: str, data: bytes, what: str) -> dict[str, Any]:
    """The body of a signed ``kind`` object, checked against its ``provider``'s peer id."""
    try:
        obj = decode_canonical(data)
        body, sig = obj["body"], obj["sig"]
        key = public_key_of_peer(body["provider"])
    except (FrameError, KeyError, TypeError, ValueError) as exc:
        raise BadReceipt(f"the {what} does not decode") from exc
    if not isinstance(sig, bytes) or not verify_signature(key, kind, body, sig):
        raise BadReceipt(f"the {what} is not signed by {str(body['provider'])[:64]}")
    return body


_TYPES = {"bytes": bytes, "str": str, "int": int, "float": float}
_MAX_FIELD = 256
_LONG_FIELDS = {"subcalls": MAX_SUBCALLS_BYTES, "receipt": MAX_SUBCALLS_BYTES, "error": 512}
OUTCOMES = frozenset(
    ("ok", "trap", "out_of_fuel", "timeout", "memory_limit", "output_too_large", "crashed")
)


def _typed(cls: type, body: dict[str, Any], what: str) -> Any:
    """``cls(**body)`` if every field has its declared type and is in bounds, else
    BadReceipt: a signature proves who said it, not that it makes sense."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(body, dict) or not set(body) <= set(fields):
        raise BadReceipt(f"the {what} has unknown fields")
    for name, value in body.items():
        want = _TYPES[str(fields[name].type)]
        if want is float and type(value) is int:
            value = body[name] = float(value)
        if type(value) is not want:
            raise BadReceipt(f"the {what}'s {name} is not a {want.__name__}")
        # type(value) is want, so these test want too (and tell mypy what value is).
        if isinstance(value, (bytes, str)) and len(value) > _LONG_FIELDS.get(name, _MAX_FIELD):
            raise BadReceipt(f"the {what}'s {name} is too long")
        if isinstance(value, (int, float)) and not (0 <= value < 2**63):  # also refuses NaN
            raise BadReceipt(f"the {what}'s {name} is out of range")
    try:
        return cls(**body)
    except TypeError as exc:
        raise BadReceipt(f"the {what} lacks fields") from exc


@dataclass(frozen=True)
class Quote:
    """A provider's signed offer: this release, at this price, until ``expires``."""

    quote: bytes
    agent: str
    version: str
    cid: str
    price: int
    expected_ms: int
    load: float
    expires: float
    provider: str
    user: str
    payee: str = ""  # the provider's Solana address, for a paid task
    creator: str = ""  # who gets the royalty, and how much: both sides pay by these
    royalty_bps: int = 0
    licence: str = ""  # the licence's mint, for a listing sold by plan
    subcalls_max: int = 0  # a composite agent's: the most its sub-calls may cost

    def sign(self, keypair: Any) -> bytes:
        return _signed(QUOTE_KIND, _without_empty(asdict(self), _TREE_FIELDS), keypair)

    @property
    def most(self) -> int:
        """The most the task may cost in all: its price and its sub-calls."""
        return self.price + self.subcalls_max

    @classmethod
    def verify(cls, data: bytes) -> Quote:
        """Decode a signed quote and check its signature; BadReceipt if either fails."""
        return _typed(cls, _verified(QUOTE_KIND, data, "quote"), "quote")


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
    quote: bytes = b""
    channel: str = ""  # the payment channel and the amount paid on it so far (settlement)
    cumulative: int = 0
    parent: bytes = b""  # a sub-call's: the task that made it
    subcalls: bytes = b""  # a composite agent's: its `SubCall` list (`encode_subcalls`)
    subcalls_cost: int = 0  # what its successful sub-calls cost, owed on top of the price

    def body(self) -> dict[str, Any]:
        return _without_empty(asdict(self), _TREE_FIELDS)

    @property
    def cost(self) -> int:
        """What the task costs its user: its price and its sub-calls."""
        return self.price + self.subcalls_cost

    def sign(self, keypair: Any) -> bytes:
        return _signed(RECEIPT_KIND, self.body(), keypair)

    @classmethod
    def verify(cls, data: bytes) -> Receipt:
        """Decode a signed receipt and check its signature against its provider's peer
        id; BadReceipt if either fails."""
        receipt = _typed(cls, _verified(RECEIPT_KIND, data, "receipt"), "receipt")
        if receipt.outcome not in OUTCOMES:
            raise BadReceipt(f"the receipt's outcome {receipt.outcome[:40]!r} is not one")
        return receipt

    def check(
        self, task: bytes, quote: Quote, stdin: bytes, output: bytes, parent: bytes = b""
    ) -> None:
        """BadReceipt unless this receipt is the quoting provider's, for ``task`` under
        ``quote`` (its user, agent, release, build, price and sub-calls' most), made
        by ``parent`` (a sub-call's), with exactly this input and output."""
        if self.task != task or self.provider != quote.provider or self.quote != quote.quote:
            raise BadReceipt("the receipt is for another task or from another provider")
        if self.parent != parent:
            raise BadReceipt("the receipt names another calling task")
        if (self.user, self.agent, self.version) != (quote.user, quote.agent, quote.version):
            raise BadReceipt("the receipt names another user, agent or release than the quote")
        if (self.cid, self.price) != (quote.cid, quote.price):
            raise BadReceipt("the receipt names another build or price than the quote")
        if self.subcalls_cost > quote.subcalls_max:
            raise BadReceipt("the receipt charges its sub-calls more than the quote allows")
        if self.input_hash != digest(stdin):
            raise BadReceipt("the receipt names another input")
        if self.output_hash != digest(output):
            raise BadReceipt("the output does not match the receipt's hash")


SUBCALL_OPS = frozenset(("call", "infer"))
MAX_SUBCALLS = 64


@dataclass(frozen=True)
class SubCall:
    """One call out of a composite agent's run, as its receipt lists it."""

    op: str
    """``call`` (an agent, as a sub-task) or ``infer`` (a model)."""
    target: str
    """The listing called, PUBLISHER/NAME (as the guest named it, if it named none)."""
    status: int
    """0 if it succeeded, else the `mercato.runtime.HostStatus` the agent got."""
    error: str = ""
    receipt: bytes = b""
    """The sub-provider's own signed receipt (a `Receipt` or a model call's), if one came."""
    cost: int = 0
    """What the user pays for it: the receipt's price (and its own sub-calls'), if it
    succeeded; nothing otherwise."""


def encode_subcalls(calls: list[SubCall]) -> bytes:
    return canonical_cbor([asdict(c) for c in calls]) if calls else b""


def decode_subcalls(data: bytes) -> list[SubCall]:
    """The sub-calls a receipt lists; BadReceipt if they do not decode or hold
    fields of the wrong type or size."""
    if not data:
        return []
    try:
        items = decode_canonical(data)
    except FrameError as exc:
        raise BadReceipt("the receipt's sub-calls do not decode") from exc
    if not isinstance(items, list) or len(items) > MAX_SUBCALLS:
        raise BadReceipt(f"the receipt's sub-calls are not a list of at most {MAX_SUBCALLS}")
    calls = []
    for item in items:
        if not isinstance(item, dict):
            raise BadReceipt("a sub-call of the receipt is not a map")
        status = item.get("status")
        if type(status) is not int or not -64 <= status <= 0:
            raise BadReceipt("a sub-call's status is out of range")
        # _typed takes only numbers from 0: check the status apart.
        call = _typed(SubCall, {**item, "status": 0}, "sub-call")
        if call.op not in SUBCALL_OPS:
            raise BadReceipt(f"a sub-call's op {call.op[:20]!r} is neither call nor infer")
        calls.append(dataclasses.replace(call, status=status))
    return calls


# For other signed objects of the same form (a model call's receipt, node/models).
sign_object = _signed
verified_object = _verified
typed_object = _typed


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
