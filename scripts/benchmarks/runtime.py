"""runtime: what starting and running agent builds costs.

- cold_p50_ms: a run of the `wordcount` example that must compile it first
  (no compiled module in memory or on disk);
- warm_inproc_p50_ms: a run of `wordcount` with the module ready, in this
  process (`Sandbox.run`);
- warm_isolated_p50_ms: the same through the daemon's worker processes
  (`WorkerPool.run`: a request over a pipe, the run, the reply);
- runs_per_s: runs of the `echo` example per second through a pool of 2 workers
  (2 cores), 4 callers at once;
- fuel_overhead_ratio: a compute loop (100 M iterations) with fuel metering over
  the same loop on an engine without it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from wasmtime import Config, Engine, Linker, Module, Store, WasiConfig, wat2wasm

from mercato.runtime import Limits, Sandbox, module_key, open_worker_pool

EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"
TEXT = b"the quick brown fox jumps over the lazy dog\n" * 100
COMPUTE = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32) (local $sum i64)
    (loop $next
      (local.set $sum (i64.add (local.get $sum) (i64.extend_i32_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 100000000))))))
"""


def _p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _cold_and_warm(wasm: bytes) -> tuple[float, float]:
    sandbox = Sandbox()
    cold = []
    for _ in range(10):
        sandbox._ready.clear()  # forget the compiled module: the next run compiles
        started = time.perf_counter()
        assert sandbox.run(wasm, TEXT, Limits()).ok
        cold.append(time.perf_counter() - started)
    key = module_key(wasm)
    warm = []
    for _ in range(300):
        started = time.perf_counter()
        sandbox.run(wasm, TEXT, Limits(), key=key)
        warm.append(time.perf_counter() - started)
    sandbox.close()
    return _p50_ms(cold), _p50_ms(warm)


async def _isolated(path: Path, echo: Path, key: str, echo_key: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cache:
        async with open_worker_pool(2, Path(cache)) as pool:
            await pool.run(path, TEXT, Limits(), key=key)  # start the worker, compile
            warm = []
            for _ in range(300):
                started = time.perf_counter()
                await pool.run(path, TEXT, Limits(), key=key)
                warm.append(time.perf_counter() - started)
            runs, seconds = 2000, 0.0

            async def caller(n: int) -> None:
                for _ in range(n):
                    result = await pool.run(echo, b"hello", Limits(), key=echo_key)
                    assert result.ok

            async with trio.open_nursery() as nursery:  # warm both workers
                for _ in range(2):
                    nursery.start_soon(caller, 5)
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(caller, runs // 4)
            seconds = time.perf_counter() - started
    return _p50_ms(warm), round(runs / seconds)


def _compute_seconds(consume_fuel: bool) -> float:
    config = Config()
    config.consume_fuel = consume_fuel
    config.epoch_interruption = True
    config.cranelift_opt_level = "speed"
    engine = Engine(config)
    module = Module(engine, wat2wasm(COMPUTE))
    linker = Linker(engine)
    linker.define_wasi()
    best = float("inf")
    for _ in range(3):
        store = Store(engine)
        if consume_fuel:
            store.set_fuel(10**13)
        store.set_epoch_deadline(10**9)
        store.set_wasi(WasiConfig())
        start = linker.instantiate(store, module).exports(store)["_start"]
        began = time.perf_counter()
        start(store)
        best = min(best, time.perf_counter() - began)
    return best


def run() -> dict[str, Any]:
    wordcount = EXAMPLES / "wordcount" / "wordcount.wasm"
    echo = EXAMPLES / "echo" / "echo.wasm"
    cold, warm_inproc = _cold_and_warm(wordcount.read_bytes())
    keys = module_key(wordcount.read_bytes()), module_key(echo.read_bytes())
    warm_isolated, runs_per_s = trio.run(_isolated, wordcount, echo, *keys)
    metered, free = _compute_seconds(True), _compute_seconds(False)
    return {
        "cold_p50_ms": cold,
        "warm_inproc_p50_ms": warm_inproc,
        "warm_isolated_p50_ms": warm_isolated,
        "runs_per_s": runs_per_s,
        "fuel_overhead_ratio": round(metered / free, 2),
        "compute_loop_s": {"metered": round(metered, 3), "unmetered": round(free, 3)},
        "targets": {"warm_inproc_p50_ms": 2, "warm_isolated_p50_ms": 5, "runs_per_s": 500},
    }
