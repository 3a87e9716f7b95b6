"""The ``mercato`` import module: an agent's one narrow, metered way out of its sandbox.

A module may import, besides WASI, exactly these functions (all i32; pointers
and lengths are into its exported memory named ``memory``, read as unsigned)::

    (import "mercato" "call"   (func (param i32 i32 i32 i32 i32 i32) (result i32)))
        call(ref_ptr, ref_len, in_ptr, in_len, out_ptr, out_cap)
        run the listing ``ref`` (UTF-8) on the input, as a paid sub-task
    (import "mercato" "infer"  (func (param i32 i32 i32 i32 i32 i32) (result i32)))
        infer(model_ptr, model_len, req_ptr, req_len, out_ptr, out_cap)
        a chat completion (OpenAI-style request JSON) on the model ``model``
    (import "mercato" "result" (func (param i32 i32 i32) (result i32)))
        result(offset, out_ptr, out_cap)

``call`` and ``infer`` return the full length of the result (>= 0) and write its
first ``min(length, out_cap)`` bytes at ``out_ptr``; or a negative `HostStatus`,
writing nothing, with the host's message (UTF-8) as the last result. ``result``
copies the last result (or failure message) from ``offset`` into ``out_ptr``, at
most ``out_cap`` bytes, and returns how many it copied (0 at or past the end):
a guest reads a result longer than its buffer, or why a call failed.
runtime/examples/mercato.h is the same contract for C.

Arguments are checked in the sandbox (`mercato.runtime._session`, the wasmtime
side of these functions: this module needs no wasmtime, so the daemon imports
it freely), before anything leaves it: a range outside memory, a name that is
empty, not UTF-8 or over MAX_TARGET_BYTES, a payload over MAX_PAYLOAD_BYTES, no
exported memory: BAD_ARGUMENTS, never a trap. Then a run without a host gets
NO_HOST, and a run past its ``max_calls`` gets TOO_MANY; neither reaches the
host. The host (`HostHandler` in the daemon, a plain
function for `Sandbox`) decides everything else.

Time in the host counts against the run's wall clock, never its fuel: a call
that returns after the run's deadline ends the run there as a timeout. An
exception from a synchronous host function is logged and answers UNAVAILABLE.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("mercato.runtime")

HOST_MODULE = "mercato"
MAX_TARGET_BYTES = 200  # a listing reference
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024  # an input or a request body
MAX_REPLY_BYTES = 8 * 1024 * 1024 + 65536
OPS = ("call", "infer")
NO_HOST_MESSAGE = "this sandbox has no way out: run it on a node"
MAX_NOTED = 8

_U32 = 0xFFFF_FFFF


class HostStatus(enum.IntEnum):
    """What a host function returns to the guest when it fails (always negative)."""

    UNDECLARED = -1
    """The listing is not among the release's dependencies."""
    OVER_BUDGET = -2
    """It could cost more than the run's budget has left; nothing was sent."""
    TOO_DEEP = -3
    """Past the depth limit of the call tree."""
    TOO_MANY = -4
    """The run's bound on sub-calls is reached."""
    BAD_ARGUMENTS = -5
    """A pointer or length outside memory, a name not UTF-8 or too long, a payload too large."""
    UNAVAILABLE = -6
    """No provider could do it (none, refused, never answered)."""
    BAD_RECEIPT = -7
    """The answer came with a receipt that does not verify (nothing paid)."""
    FAILED = -8
    """The sub-agent ran and did not end ok / the model call broke off."""
    TIMEOUT = -9
    """The run's wall-clock ran out while waiting."""
    REFUSED = -10
    """The request itself is wrong (a malformed model request, over the context)."""
    NO_HOST = -11
    """This sandbox has no way out (``mercato exec``, a run without a handler)."""


NOTED = frozenset((HostStatus.BAD_ARGUMENTS, HostStatus.TOO_MANY))
"""Refusals of the sandbox's own that a run reports (`RunResult.refused`)."""


@dataclass(frozen=True)
class HostCall:
    op: str
    """"call" or "infer"."""
    target: str
    """The listing reference as the guest wrote it (UTF-8, at most MAX_TARGET_BYTES)."""
    payload: bytes
    """The input (call) or the request JSON (infer)."""
    remaining_s: float = field(default=float("inf"), compare=False)
    """The wall-clock time the run has left (set by the pool): what the host may wait."""


@dataclass(frozen=True)
class HostReply:
    status: int = 0
    """0: ok; else a negative HostStatus."""
    output: bytes = b""
    """The result; on failure, a UTF-8 message saying why (for the guest to read)."""


HostHandler = Callable[[HostCall], Awaitable[HostReply]]
"""The daemon's side of host calls, given to `WorkerPool.run`."""
HostFunction = Callable[[HostCall], HostReply]
"""The same, synchronous, given to `Sandbox.run`."""

FUNCS = {"call": 6, "infer": 6, "result": 3}
"""The host functions and how many i32 they take (each returns one i32)."""


def failure(status: HostStatus, message: str) -> HostReply:
    return HostReply(int(status), message.encode())


def too_many(max_calls: int) -> str:
    return f"this run may make at most {max_calls} host calls"


def checked(reply: object) -> HostReply:
    """The reply if it is one a guest may get, else UNAVAILABLE (a host's bug is not
    the guest's fault, and must not reach its memory)."""
    if (
        isinstance(reply, HostReply)
        and isinstance(reply.status, int)
        and not isinstance(reply.status, bool)
        and min(HostStatus) <= reply.status <= 0
        and isinstance(reply.output, bytes | bytearray)
        and len(reply.output) <= MAX_REPLY_BYTES
    ):
        return HostReply(int(reply.status), bytes(reply.output))  # a HostStatus is an int
    log.error("a host handler gave a malformed reply", extra={"reply": repr(reply)[:200]})
    return failure(HostStatus.UNAVAILABLE, "the node gave a malformed answer")
