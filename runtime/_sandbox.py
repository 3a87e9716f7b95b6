"""The sandbox: compile and run one WebAssembly module under hard limits, in this process.

Blocking. The node never calls it on its event loop, nor in its own process:
`WorkerPool` runs it in worker processes. `mercato exec` and the benchmarks
use it directly too.

A run gets WASI preview 1 with stdin = the task input and stdout = the result,
both in memory (stdin through a private temporary file, as wasmtime-py wants a
path), argv = the build's name, and nothing else: no preopened directory, no
inherited environment, no network. Limits:

- fuel (wasmtime fuel metering: about one unit per instruction);
- wall-clock time (epoch interruption: a thread ticks the engine's epoch every
  TICK_S, and the store's deadline is the timeout in ticks);
- linear memory and table elements (store limits: ``memory.grow`` fails past
  the limit), one instance, one memory;
- input size (checked before the run) and output size (writes past the limit
  fail with EFBIG and the run ends as output_too_large).

Besides WASI, a module may import the ``mercato`` functions (`mercato.runtime._host`
states their contract, `mercato.runtime._session` answers them): ``call`` and
``infer`` go to the run's ``host`` function, at most ``max_calls`` times; without
one they return NO_HOST. The host functions are defined once on the shared
linker and find the current run through a thread-local `Session` (one run at a
time per thread), cleared when the run ends however it ends. Time in the host
counts against the run's wall clock (a host that returns past the deadline ends
the run as a timeout), not its fuel.

Every run ends in a `RunResult`; only a module that cannot run at all raises
(`InvalidModule`, `InputTooLarge`).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from wasmtime import (
    Caller,
    Config,
    Engine,
    ExitTrap,
    Func,
    FuncType,
    InstancePre,
    Linker,
    Memory,
    Module,
    Store,
    Trap,
    TrapCode,
    ValType,
    WasiConfig,
    WasmtimeError,
)

from ._cache import ModuleCache
from ._errors import InvalidModule, LimitsError
from ._host import FUNCS, HOST_MODULE, HostFunction, HostStatus
from ._limits import MIB, Limits, Outcome, RunResult, Usage
from ._session import DeadlinePassed, Session, func_type, has_type
from ._source import Source, module_key

WASI = "wasi_snapshot_preview1"
TICK_S = 0.005
MAX_STDERR = 16 * 1024
MAX_WASM_STACK = 512 * 1024
MEMORIES_CACHED = 32
ENGINE_FLAGS = f"fuel,epoch,stack={MAX_WASM_STACK},opt=speed"
ENGINE_KEY = (
    f"wasmtime-{importlib.metadata.version('wasmtime')}-"
    + hashlib.sha256(ENGINE_FLAGS.encode()).hexdigest()[:12]
)


class _Output:
    """A WASI output stream kept in memory, refusing writes past ``limit`` with EFBIG
    (and calling ``on_overflow`` the first time)."""

    def __init__(self, limit: int, on_overflow: Callable[[], None] | None = None) -> None:
        self.data = bytearray()  # one buffer: a million one-byte writes cost a megabyte
        self.size = 0
        self.limit = limit
        self.overflowed = False
        self._on_overflow = on_overflow

    def write(self, data: bytes) -> int:
        if self.size + len(data) > self.limit:
            if not self.overflowed and self._on_overflow is not None:
                self._on_overflow()
            self.overflowed = True
            return -errno.EFBIG
        self.data += data
        self.size += len(data)
        return len(data)

    def value(self) -> bytes:
        return bytes(self.data)


class Sandbox:
    """A wasmtime engine with the sandbox's configuration, its modules and its epoch clock."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        config = Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.max_wasm_stack = MAX_WASM_STACK
        config.cranelift_opt_level = "speed"
        self.engine = Engine(config)
        self._linker = Linker(self.engine)
        self._linker.define_wasi()
        # poll_oneoff sleeps in the host, where neither fuel nor the epoch reaches:
        # a module could sleep past its timeout. Agents have nothing to wait for.
        self._linker.allow_shadowing = True
        self._linker.define_func(
            WASI, "poll_oneoff", FuncType([ValType.i32()] * 4, [ValType.i32()]), _no_poll
        )
        for op in ("call", "infer"):
            self._linker.define_func(
                HOST_MODULE, op, func_type(op), self._request(op), access_caller=True
            )
        self._linker.define_func(
            HOST_MODULE, "result", func_type("result"), self._result, access_caller=True
        )
        self._runs = threading.local()  # .session: the Session of this thread's run
        self.cache = ModuleCache(cache_dir, self.engine, ENGINE_KEY) if cache_dir else None
        self._ready: OrderedDict[str, InstancePre] = OrderedDict()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()

    def remaining_s(self) -> float:
        """The wall-clock time left to the run in progress on this thread (for a host
        function that forwards a call: the wait it may allow); 0 outside a run."""
        session = self._session()
        return max(0.0, session.deadline - time.monotonic()) if session else 0.0

    def _session(self) -> Session | None:
        session: Session | None = getattr(self._runs, "session", None)
        return session

    def _request(self, op: str) -> Callable[..., int]:
        def request(caller: Caller, *args: int) -> int:
            session = self._session()
            if session is None:  # not reachable: a run always has one
                return int(HostStatus.NO_HOST)
            return session.request(caller, op, *args)

        return request

    def _result(self, caller: Caller, offset: int, out_ptr: int, out_cap: int) -> int:
        session = self._session()
        if session is None:
            return 0
        return session.result(caller, offset, out_ptr, out_cap)

    # -- modules ---------------------------------------------------------------

    def prepare(self, wasm: Source, key: str | None = None) -> InstancePre:
        """Compile (or take from the caches) and check a module; InvalidModule if it
        is not one the sandbox can run. ``wasm`` may be a function that reads the
        bytes: it is called only if the module is not cached."""
        if key is None:
            wasm = wasm() if callable(wasm) else wasm
            key = module_key(wasm)
        ready = self._ready.get(key)
        if ready is not None:
            self._ready.move_to_end(key)
            return ready
        module = self.cache.load(key) if self.cache else None
        cached = module is not None
        if module is None:
            data = wasm() if callable(wasm) else wasm
            if key.startswith("sha256-") and module_key(data) != key:
                raise InvalidModule("the build's bytes do not match its id (changed on disk?)")
            module = self._compile(data)
        ready = self._link(module)
        if self.cache and not cached:
            self.cache.save(key, module)  # only modules that can run
        self._ready[key] = ready
        if len(self._ready) > MEMORIES_CACHED:
            self._ready.popitem(last=False)
        return ready

    def _compile(self, wasm: bytes) -> Module:
        if not wasm.startswith(b"\0asm"):
            raise InvalidModule("not a WebAssembly module (it does not start with \\0asm)")
        try:
            return Module(self.engine, wasm)
        except WasmtimeError as exc:
            raise InvalidModule(f"not a valid WebAssembly module: {_first_line(exc)}") from exc

    def _link(self, module: Module) -> InstancePre:
        for item in module.imports:
            _check_import(item.module, item.name, item.type)
        start = next((e for e in module.exports if e.name == "_start"), None)
        if start is None or not isinstance(start.type, FuncType):
            raise InvalidModule("it has no WASI entry point: export a function _start")
        if start.type.params or start.type.results:
            raise InvalidModule("its _start must take no parameters and return nothing")
        try:
            return self._linker.instantiate_pre(module)
        except WasmtimeError as exc:
            raise InvalidModule(f"it cannot be linked: {_first_line(exc)}") from exc

    # -- runs ------------------------------------------------------------------

    def run(
        self,
        wasm: Source,
        stdin: bytes,
        limits: Limits,
        *,
        key: str | None = None,
        name: str = "agent",
        host: HostFunction | None = None,
        max_calls: int = 0,
    ) -> RunResult:
        """Run ``wasm`` once with ``stdin`` under ``limits``. Blocking. ``host``
        answers the module's ``mercato.call`` and ``mercato.infer``, at most
        ``max_calls`` times; it blocks the run while it works."""
        limits.admit(stdin)
        if type(max_calls) is not int or max_calls < 0:
            raise LimitsError("max_calls must be a whole number, 0 or more")
        ready = self.prepare(wasm, key)
        store = Store(self.engine)
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(max(1, math.ceil(limits.timeout_s / TICK_S)))
        deadline = time.monotonic() + limits.timeout_s
        store.set_limits(
            memory_size=limits.memory_mb * MIB,
            table_elements=limits.table_elements,
            instances=1,
            tables=1,
            memories=1,
        )
        fuel_left: list[int] = []

        def stop() -> None:
            # A module that ignores the failed write would run on to its limits:
            # take its fuel away (recording what it had) so it stops at once.
            fuel_left.append(store.get_fuel())
            store.set_fuel(0)

        stdout, stderr = _Output(limits.max_output_bytes, stop), _Output(MAX_STDERR)
        wasi = WasiConfig()
        wasi.argv = [name]
        fd, path = tempfile.mkstemp(prefix="mercato-stdin-")
        try:
            with os.fdopen(fd, "wb") as stdin_file:
                stdin_file.write(stdin)
            wasi.stdin_file = path  # opened here: the name can go at once
        finally:
            os.unlink(path)  # so that even a killed worker leaves nothing behind
        wasi.stdout_custom = stdout.write
        wasi.stderr_custom = lambda data: (stderr.write(data), len(data))[1]
        store.set_wasi(wasi)
        started = time.perf_counter()
        outer = self._session()  # a host function that runs a module (tests do)
        session = self._runs.session = Session(host, max_calls, deadline)
        try:
            outcome, detail, code, memory = self._start(ready, store, limits)
        finally:
            self._runs.session = outer
        wall_ms = (time.perf_counter() - started) * 1000
        if stdout.overflowed:
            outcome = Outcome.OUTPUT_TOO_LARGE
            detail = f"it wrote more than {limits.max_output_bytes} bytes to stdout"
        remaining = fuel_left[0] if fuel_left else store.get_fuel()
        # When the clock interrupts a run, wasmtime has not written its fuel back.
        used = None if outcome is Outcome.TIMEOUT else limits.fuel - remaining
        usage = Usage(fuel=used, wall_ms=round(wall_ms, 3), peak_memory_bytes=memory)
        return RunResult(
            outcome, stdout.value(), usage, detail, code, stderr.value(), tuple(session.refused)
        )

    def _start(
        self, ready: InstancePre, store: Store, limits: Limits
    ) -> tuple[Outcome, str, int | None, int]:
        """Instantiate (running any start function) and call ``_start``: both run
        guest code, and end the same ways."""
        instance = None

        def peak() -> int:
            # Linear memory never shrinks, so its size at the end is its peak.
            if instance is None:
                return 0
            exports = instance.exports(store).values()
            return sum(item.data_len(store) for item in exports if isinstance(item, Memory))

        try:
            instance = ready.instantiate(store)
            start = instance.exports(store)["_start"]
            assert isinstance(start, Func)  # load() checked that _start is a function
            start(store)
        except ExitTrap as exc:
            if exc.code == 0:
                return Outcome.OK, "", 0, peak()
            return self._failed(f"exited with status {exc.code}", peak(), limits, exc.code)
        except Trap as exc:
            if instance is None and _over_limits(str(exc)):
                return (
                    Outcome.MEMORY_LIMIT,
                    f"it needs more than its limits: {_reason(exc)}",
                    None,
                    0,
                )
            if exc.trap_code is TrapCode.OUT_OF_FUEL:
                return Outcome.OUT_OF_FUEL, f"used all {limits.fuel} fuel", None, peak()
            if exc.trap_code is TrapCode.INTERRUPT:
                return Outcome.TIMEOUT, f"ran past {limits.timeout_s:g} s", None, peak()
            return self._failed(_trap_text(exc), peak(), limits, None)
        except DeadlinePassed:  # raised by a host function, re-raised by wasmtime-py
            return Outcome.TIMEOUT, f"ran past {limits.timeout_s:g} s", None, peak()
        except WasmtimeError as exc:
            text = _reason(exc)
            if instance is None and _over_limits(text):
                return Outcome.MEMORY_LIMIT, f"it needs more than its limits: {text}", None, 0
            return self._failed(text, peak(), limits, None)
        return Outcome.OK, "", 0, peak()

    @staticmethod
    def _failed(
        detail: str, memory: int, limits: Limits, code: int | None
    ) -> tuple[Outcome, str, int | None, int]:
        # A module denied memory (memory.grow returned -1) usually fails right after:
        # a trap or an exit with its memory within an eighth of the limit reads as the
        # memory limit. wasmtime-py offers no hook to know exactly.
        limit = limits.memory_mb * MIB
        if memory > limit - limit // 8:
            return (
                Outcome.MEMORY_LIMIT,
                f"reached its {limits.memory_mb} MB memory limit ({detail})",
                code,
                memory,
            )
        return Outcome.TRAP, detail, code, memory


def _check_import(module: str, name: str | None, kind: object) -> None:
    """InvalidModule unless the import is one the sandbox offers, with its type."""
    if module == WASI:
        return  # the linker refuses what WASI lacks, naming it
    if module != HOST_MODULE:
        raise InvalidModule(
            f"it imports {module}.{name}, which the sandbox does not offer "
            f"(only {WASI} and {HOST_MODULE})"
        )
    if name not in FUNCS:
        raise InvalidModule(
            f"it imports {module}.{name}, which the sandbox does not offer "
            f"({HOST_MODULE} has {', '.join(FUNCS)})"
        )
    if not isinstance(kind, FuncType) or not has_type(kind, name):
        raise InvalidModule(
            f"it imports {module}.{name} with the wrong signature: see runtime/examples/mercato.h"
        )


def _over_limits(text: str) -> bool:
    """Whether instantiating failed because the module asks for more than its limits."""
    return ("memory" in text or "table" in text) and "limit" in text


def _no_poll(*_: int) -> int:
    return 58  # ENOTSUP


_TRAPS = {
    TrapCode.STACK_OVERFLOW: "stack overflow (recursion too deep)",
    TrapCode.UNREACHABLE: "reached unreachable code (a panic or an abort)",
    TrapCode.MEMORY_OUT_OF_BOUNDS: "out-of-bounds memory access",
    TrapCode.INTEGER_DIVISION_BY_ZERO: "integer division by zero",
}


def _trap_text(exc: Trap) -> str:
    code = exc.trap_code
    if code is None:
        return _reason(exc)
    return _TRAPS.get(code, code.name.lower().replace("_", " "))


def _reason(exc: BaseException) -> str:
    """The useful line of a wasmtime error: what follows "Caused by:", else the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "Caused by:" in lines and lines.index("Caused by:") + 1 < len(lines):
        return lines[lines.index("Caused by:") + 1].lstrip("0123456789: ")[:300]
    return lines[0][:300] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
