"""`WorkerPool`: runs modules in worker processes, so nothing a module does can hurt the node.

Each of ``slots`` slots owns at most one worker process (`mercato.runtime._worker`),
started when first needed and kept for the next run. A run takes a free slot
(waiting for one if all are busy), sends its request and waits for the reply
on a trio pipe, so the event loop never blocks.

- A worker that dies mid-run (a fault in wasmtime, a kill) gives a `crashed`
  result, and the next run in that slot starts a new worker.
- A run that outlives its timeout by GRACE_S (the sandbox's own clock failed
  to stop it) has its worker killed: a `timeout` result.
- Cancelling the caller kills the worker at once (the run stops) and the
  cancellation propagates; the slot is free again. The same while a host
  handler is awaited: the handler is cancelled with the run.

Host calls (`mercato.runtime._host`): a run given a ``host`` handler gets its
module's ``call`` and ``infer`` as frames from the worker, each answered by
awaiting ``host(call)`` and sending the reply back; the worker itself answers
bad arguments, calls past ``max_calls`` and, without a handler, NO_HOST. A
handler gets what remains of the run's wall clock: past it, the guest gets
TIMEOUT (and the run ends as a timeout). A handler that raises is logged and
the guest gets UNAVAILABLE; a malformed reply, the same. Handlers never make a
healthy run look hung: they end before the timeout + GRACE_S guard.

Input larger than the limit raises InputTooLarge before any worker sees it;
InvalidModule and LimitsError come back from the worker as themselves.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import trio

from ._errors import InputTooLarge, InvalidModule, LimitsError, SandboxError
from ._host import (
    NO_HOST_MESSAGE,
    OPS,
    HostCall,
    HostHandler,
    HostReply,
    HostStatus,
    checked,
    failure,
    too_many,
)
from ._limits import Limits, Outcome, RunResult, Usage
from ._source import Source, module_key

log = logging.getLogger("mercato.runtime")

GRACE_S = 1.0
MAX_FRAME_BYTES = 128 * 1024 * 1024
WORKER_MODULE = "mercato.runtime._worker"
CHECK_TIMEOUT_S = 30.0  # to compile and link one module
OUT_OF_TIME = "the run's time ran out while waiting"
_ERRORS: dict[str, type[SandboxError]] = {
    "InvalidModule": InvalidModule,
    "InputTooLarge": InputTooLarge,
    "LimitsError": LimitsError,
}


class WorkerDied(Exception):
    """The worker's pipe closed before it replied."""


HostFrames = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Answers the worker's ``{"host": ...}`` frames during a run."""


class _Worker:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def call(
        self, request: dict[str, Any], on_host: HostFrames | None = None
    ) -> dict[str, Any]:
        """Send a request and return its reply, answering host frames on the way."""
        await self._send(request)
        while True:
            reply = await self._receive()
            if "host" not in reply:
                return reply
            if on_host is None:
                raise WorkerDied("a host call outside a run")
            await self._send(await on_host(reply["host"]))

    async def _send(self, frame: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        body = cbor2.dumps(frame)
        try:
            await self.process.stdin.send_all(len(body).to_bytes(4, "big") + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WorkerDied(str(exc)) from exc

    async def _receive(self) -> dict[str, Any]:
        try:
            size = int.from_bytes(await self._read(4), "big")
            if size > MAX_FRAME_BYTES:
                raise WorkerDied(f"a reply of {size} bytes")
            reply = cbor2.loads(await self._read(size))
        except (trio.BrokenResourceError, trio.ClosedResourceError, cbor2.CBORDecodeError) as exc:
            raise WorkerDied(str(exc)) from exc
        if not isinstance(reply, dict):
            raise WorkerDied("a reply that is not a map")
        return reply

    async def _read(self, n: int) -> bytes:
        assert self.process.stdout is not None
        while len(self._buffer) < n:
            chunk = await self.process.stdout.receive_some(max(n - len(self._buffer), 65536))
            if not chunk:
                raise WorkerDied("the worker exited")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def stop(self) -> None:
        """Kill the process and reap it (closing its pipes); shielded, and quick."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    await pipe.aclose()
            await self.process.wait()


class WorkerPool:
    """Runs modules in ``slots`` worker processes; see the module docstring."""

    def __init__(self, slots: int = 2, cache_dir: Path | None = None) -> None:
        if slots < 1:
            raise LimitsError("the runtime needs at least one slot")
        self.slots = slots
        self._cache_dir = cache_dir
        self._free = trio.Semaphore(slots)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self.runs = 0
        self.crashes = 0
        self.waiting = 0
        """Runs waiting for a free slot."""
        self.host_calls = 0
        """Host calls handed to runs' handlers, in all."""

    @property
    def busy(self) -> int:
        """Slots running a module now."""
        return self.slots - self._free.value

    def worker_pids(self) -> list[int]:
        """The pids of the live workers (for operators and tests)."""
        return [w.pid for w in self._all if w.process.returncode is None]

    async def _spawn(self) -> _Worker:
        # -P: the working directory is not put on sys.path, so a folder named
        # mercato/ or runtime/ where the daemon was started is never imported.
        command = [sys.executable, "-P", "-m", WORKER_MODULE, str(self._cache_dir or "")]
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        worker = _Worker(process)
        self._all.add(worker)
        return worker

    async def run(
        self,
        wasm: Source | Path,
        stdin: bytes,
        limits: Limits,
        *,
        key: str | None = None,
        name: str = "agent",
        host: HostHandler | None = None,
        max_calls: int = 0,
    ) -> RunResult:
        """Run a module (bytes, or a path to its file) in a worker. ``host`` answers
        its host calls, at most ``max_calls`` of them. See the module docstring."""
        limits.admit(stdin)
        if type(max_calls) is not int or max_calls < 0:
            raise LimitsError("max_calls must be a whole number, 0 or more")
        request: dict[str, Any] = {
            "stdin": stdin,
            "limits": limits.to_wire(),
            "name": name,
            "host": host is not None,
            "max_calls": max_calls,
        }
        if isinstance(wasm, Path):
            request["path"] = str(wasm)
            request["key"] = key or module_key(await trio.to_thread.run_sync(wasm.read_bytes))
        else:
            data = wasm() if callable(wasm) else wasm
            request["wasm"] = data
            request["key"] = key or module_key(data)
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        try:
            worker = await self._take_worker()
            return await self._run_on(worker, request, limits, host, max_calls)
        finally:
            self._free.release()

    async def check(
        self, wasm: Source | Path, *, key: str | None = None, timeout_s: float = CHECK_TIMEOUT_S
    ) -> None:
        """Compile and link a module in a worker, as a run would, and run nothing:
        InvalidModule if it is not a module this sandbox can run (not WebAssembly,
        no ``_start``, imports beyond WASI, over the engine's limits). The compiled
        module lands in the cache, so its first run starts warm."""
        request: dict[str, Any] = {"op": "check", "stdin": b"", "limits": {}}
        if isinstance(wasm, Path):
            request["path"] = str(wasm)
            request["key"] = key or module_key(await trio.to_thread.run_sync(wasm.read_bytes))
        else:
            data = wasm() if callable(wasm) else wasm
            request["wasm"] = data
            request["key"] = key or module_key(data)
        await self._free.acquire()
        try:
            reply = await self._call_on(await self._take_worker(), request, timeout_s)
        finally:
            self._free.release()
        if reply is None:
            raise InvalidModule(f"the sandbox could not compile it within {timeout_s:g} s")
        if "error" in reply:
            raise _ERRORS.get(str(reply["error"]), SandboxError)(str(reply.get("message", "")))

    async def _call_on(
        self, worker: _Worker, request: dict[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """One request on a worker; None if it did not answer in time or died (the
        worker is then stopped)."""
        healthy = False
        try:
            with trio.move_on_after(timeout_s):
                reply: dict[str, Any] = await worker.call(request)
                healthy = True
        except WorkerDied:
            return None
        finally:
            if healthy:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
                await worker.stop()
        return reply if healthy else None

    async def _take_worker(self) -> _Worker:
        """An idle worker that is still alive, or a new one."""
        while self._idle:
            worker = self._idle.pop()
            if worker.process.poll() is None:
                return worker
            self._all.discard(worker)  # died while idle: not this run's fault
            await worker.stop()
        return await self._spawn()

    async def _run_on(
        self,
        worker: _Worker,
        request: dict[str, Any],
        limits: Limits,
        host: HostHandler | None,
        max_calls: int,
    ) -> RunResult:
        started = time.perf_counter()
        # Handlers end by this time, so the worker has half the grace left to finish.
        last_answer = trio.current_time() + limits.timeout_s + GRACE_S / 2
        calls = 0

        async def on_host(frame: Any) -> dict[str, Any]:
            nonlocal calls
            call, remaining_s = _host_call(frame)
            # The worker's own clock started the run (after compiling): its
            # remaining time is the run's; the guard's bounds it, for safety.
            wait = min(remaining_s, last_answer - trio.current_time())
            if host is None:  # the worker answers these itself: only a confused one asks
                reply = failure(HostStatus.NO_HOST, NO_HOST_MESSAGE)
            elif calls >= max_calls:
                reply = failure(HostStatus.TOO_MANY, too_many(max_calls))
            elif wait <= 0:
                reply = failure(HostStatus.TIMEOUT, OUT_OF_TIME)
            else:
                calls += 1
                self.host_calls += 1
                reply = await _answer(host, dataclasses.replace(call, remaining_s=wait), wait)
            return {"status": reply.status, "output": reply.output}

        healthy = False
        try:
            with trio.move_on_after(limits.timeout_s + GRACE_S):
                reply = await worker.call(request, on_host)
                healthy = True
            wall_ms = round((time.perf_counter() - started) * 1000, 3)
            if not healthy:
                log.warning("killing a worker that ran past its run's timeout")
                return RunResult(
                    Outcome.TIMEOUT,
                    usage=Usage(fuel=None, wall_ms=wall_ms),
                    detail=f"ran past {limits.timeout_s:g} s (stopped by killing its worker)",
                )
        except WorkerDied as exc:
            self.crashes += 1
            log.error("a runtime worker died", extra={"why": str(exc)})
            return RunResult(
                Outcome.CRASHED,
                usage=Usage(fuel=None, wall_ms=round((time.perf_counter() - started) * 1000, 3)),
                detail="the worker running it died; the next run gets a new one",
            )
        finally:
            if healthy:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
                await worker.stop()
        self.runs += 1
        if "error" in reply:
            raise _ERRORS.get(str(reply["error"]), SandboxError)(str(reply.get("message", "")))
        return RunResult.from_wire(reply["result"])

    async def aclose(self) -> None:
        """Stop every worker (they also exit on their own when the daemon goes away)."""
        for worker in list(self._all):
            await worker.stop()
        self._all.clear()
        self._idle.clear()


def _host_call(frame: Any) -> tuple[HostCall, float]:
    """The call in a worker's host frame, and the wall-clock time its run has left."""
    try:
        op, target, payload = frame["op"], frame["target"], frame["payload"]
        remaining_s = float(frame["remaining_s"])
    except (TypeError, KeyError, ValueError) as exc:
        raise WorkerDied("a malformed host frame") from exc
    if not remaining_s >= 0:  # NaN too
        raise WorkerDied("a malformed host frame")
    if op not in OPS or not isinstance(target, str) or not isinstance(payload, bytes):
        raise WorkerDied("a malformed host frame")
    return HostCall(op, target, payload), remaining_s


async def _answer(host: HostHandler, call: HostCall, wait: float) -> HostReply:
    """The handler's reply, bounded by ``wait`` seconds; never an exception but
    cancellation."""
    reply: object = None
    with trio.move_on_after(wait) as scope:
        try:
            reply = await host(call)
        except Exception:  # the daemon's bug: the guest gets an answer, the log the story
            log.exception("a host handler failed", extra={"op": call.op})
            return failure(HostStatus.UNAVAILABLE, "the node could not do it (an internal error)")
    if scope.cancelled_caught:
        return failure(HostStatus.TIMEOUT, OUT_OF_TIME)
    return checked(reply)


@asynccontextmanager
async def open_worker_pool(
    slots: int = 2, cache_dir: Path | None = None
) -> AsyncIterator[WorkerPool]:
    """A `WorkerPool` whose workers are all stopped when the block exits.

    ModuleNotFoundError if wasmtime is not installed: the workers run it, and the
    node says so as it starts, not at its first run."""
    if importlib.util.find_spec("wasmtime") is None:
        raise ModuleNotFoundError(
            "wasmtime is not installed, and the runtime's worker processes run agents "
            "with it: install mercato's dependencies again (pip install 'wasmtime>=50,<51')",
            name="wasmtime",
        )
    pool = WorkerPool(slots, cache_dir)
    try:
        yield pool
    finally:
        await pool.aclose()
