"""The sandbox's side of the ``mercato`` host functions (`mercato.runtime._host`
states their contract): their wasmtime types and one run's `Session`.

Only the sandbox (in worker processes, or `mercato exec`) needs it: it imports
wasmtime, which the daemon itself never loads.
"""

from __future__ import annotations

import time

from wasmtime import Caller, FuncType, Memory, ValType

from ._host import (
    _U32,
    FUNCS,
    MAX_NOTED,
    MAX_PAYLOAD_BYTES,
    MAX_TARGET_BYTES,
    NO_HOST_MESSAGE,
    NOTED,
    HostCall,
    HostFunction,
    HostStatus,
    checked,
    failure,
    log,
    too_many,
)


def func_type(name: str) -> FuncType:
    """A new one each time: wasmtime ties a FuncType to the first engine it meets."""
    return FuncType([ValType.i32()] * FUNCS[name], [ValType.i32()])


def has_type(ty: FuncType, name: str) -> bool:
    """Whether ``ty`` is the type of the host function ``name``."""
    return [str(t) for t in ty.params] == ["i32"] * FUNCS[name] and [
        str(t) for t in ty.results
    ] == ["i32"]


class DeadlinePassed(Exception):
    """Raised out of a host function into wasmtime (a trap) when the run's wall clock
    ran out while the host worked: the sandbox ends the run as a timeout."""


class Session:
    """One run's side of the host functions: the guest's calls, its last result."""

    def __init__(self, host: HostFunction | None, max_calls: int, deadline: float) -> None:
        self.host = host
        self.max_calls = max_calls
        self.deadline = deadline
        """time.monotonic() at which the run's wall clock runs out."""
        self.calls = 0
        self.last = b""
        self.refused: list[tuple[str, int, str]] = []
        """Calls refused here, before the host (bad arguments, past max_calls): (op,
        status, message), the first MAX_NOTED of them (`RunResult.refused`)."""

    def request(self, caller: Caller, op: str, *args: int) -> int:
        """``call`` or ``infer`` from the guest."""
        ref_ptr, ref_len, in_ptr, in_len, out_ptr, out_cap = (a & _U32 for a in args)
        memory = caller.get("memory")
        if not isinstance(memory, Memory):
            return self._fail(op, HostStatus.BAD_ARGUMENTS, "the module exports no memory")
        size = memory.data_len(caller)
        if not (_fits(ref_ptr, ref_len, size) and _fits(in_ptr, in_len, size)):
            return self._fail(op, HostStatus.BAD_ARGUMENTS, "a pointer or length is outside memory")
        if not _fits(out_ptr, out_cap, size):
            return self._fail(op, HostStatus.BAD_ARGUMENTS, "the output buffer is outside memory")
        if not 0 < ref_len <= MAX_TARGET_BYTES:
            return self._fail(
                op, HostStatus.BAD_ARGUMENTS, f"a {op} name takes 1 to {MAX_TARGET_BYTES} bytes"
            )
        if in_len > MAX_PAYLOAD_BYTES:
            return self._fail(
                op, HostStatus.BAD_ARGUMENTS, f"a payload takes at most {MAX_PAYLOAD_BYTES} bytes"
            )
        try:
            target = bytes(memory.read(caller, ref_ptr, ref_ptr + ref_len)).decode()
        except UnicodeDecodeError:
            return self._fail(op, HostStatus.BAD_ARGUMENTS, f"the {op} name is not UTF-8")
        if self.host is None:
            return self._fail(op, HostStatus.NO_HOST, NO_HOST_MESSAGE)
        if self.calls >= self.max_calls:
            return self._fail(op, HostStatus.TOO_MANY, too_many(self.max_calls))
        self.calls += 1
        payload = bytes(memory.read(caller, in_ptr, in_ptr + in_len))
        try:
            answer: object = self.host(HostCall(op, target, payload))
        except Exception:  # the host's bug: the guest gets an answer, the log the story
            log.exception("a host function failed")
            answer = failure(HostStatus.UNAVAILABLE, "the node could not do it (an internal error)")
        if time.monotonic() >= self.deadline:
            # The epoch would stop the guest at its next check anyway; stopping it
            # here makes a slow host always end the run as a timeout.
            raise DeadlinePassed
        reply = checked(answer)
        self.last = reply.output
        if reply.status < 0:
            return reply.status
        if out_cap:
            memory.write(caller, reply.output[:out_cap], out_ptr)
        return len(reply.output)

    def result(self, caller: Caller, offset: int, out_ptr: int, out_cap: int) -> int:
        """``result`` from the guest: copy part of the last result."""
        offset, out_ptr, out_cap = offset & _U32, out_ptr & _U32, out_cap & _U32
        memory = caller.get("memory")
        if not isinstance(memory, Memory) or not _fits(out_ptr, out_cap, memory.data_len(caller)):
            return int(HostStatus.BAD_ARGUMENTS)  # the last result stays readable
        part = self.last[offset : offset + out_cap]
        if part:
            memory.write(caller, part, out_ptr)
        return len(part)

    def _fail(self, op: str, status: HostStatus, message: str) -> int:
        self.last = message.encode()
        # Kept for the run's receipt: the first refusals of each kind, not a
        # looping guest's every one.
        kinds = [r[1] for r in self.refused]
        if status in NOTED and len(self.refused) < MAX_NOTED and int(status) not in kinds[-1:]:
            self.refused.append((op, int(status), message))
        return int(status)


def _fits(ptr: int, length: int, size: int) -> bool:
    """Whether [ptr, ptr + length) lies in a memory of ``size`` bytes (empty ranges
    always do: nothing is read or written)."""
    return length == 0 or ptr + length <= size
