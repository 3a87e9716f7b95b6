"""Worker processes: a dying worker, a cancelled caller or a stuck run never hurts the pool."""

import os
import signal
import subprocess
import sys

import pytest
import trio

from mercato.runtime import InvalidModule, Limits, Outcome, open_worker_pool
from mercato.runtime._pool import WORKER_MODULE

from .conftest import example, module

FOREVER = Limits(fuel=10**13, timeout_s=30)


async def wait_for_workers(pool, n: int) -> list[int]:
    for _ in range(1000):  # polled: the pool has no event for this
        if len(pool.worker_pids()) >= n:
            return pool.worker_pids()
        await trio.sleep(0.01)
    raise AssertionError(f"{n} workers did not start within 10 s")


async def test_runs_happen_in_other_processes_and_reuse_them(tmp_path) -> None:
    async with open_worker_pool(2, tmp_path) as pool:
        first = await pool.run(example("wordcount"), b"one two", Limits())
        assert first.ok and b'"words": 2' in first.output
        (pid,) = pool.worker_pids()
        assert pid != os.getpid()
        again = await pool.run(example("wordcount"), b"three", Limits())
        assert again.ok and pool.worker_pids() == [pid]
    assert pool.worker_pids() == []


async def test_a_worker_that_dies_is_replaced_and_the_next_run_succeeds() -> None:
    async with open_worker_pool(1) as pool, trio.open_nursery() as nursery:

        async def kill_the_worker() -> None:
            (pid,) = await wait_for_workers(pool, 1)
            os.kill(pid, signal.SIGKILL)

        nursery.start_soon(kill_the_worker)
        crashed = await pool.run(module("loop"), b"", FOREVER)
        assert crashed.outcome is Outcome.CRASHED
        after = await pool.run(module("echo"), b"still here", Limits())
        assert after.ok and after.output == b"still here"
        assert pool.crashes == 1


async def test_a_worker_that_died_while_idle_costs_no_run() -> None:
    async with open_worker_pool(1) as pool:
        assert (await pool.run(module("echo"), b"one", Limits())).ok
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        for _ in range(500):  # until the pool can see it died (polled: no event for it)
            if pid not in pool.worker_pids():
                break
            await trio.sleep(0.01)
        assert (await pool.run(module("echo"), b"two", Limits())).output == b"two"
        assert pool.crashes == 0


async def test_cancelling_the_caller_stops_the_run_and_frees_the_slot() -> None:
    async with open_worker_pool(1) as pool:
        with trio.move_on_after(0.5):
            await pool.run(module("loop"), b"", FOREVER)
        assert pool.worker_pids() == []  # killed, not left running
        assert (await pool.run(module("echo"), b"next", Limits())).output == b"next"


async def test_errors_come_back_typed_and_the_worker_stays() -> None:
    async with open_worker_pool(1) as pool:
        with pytest.raises(InvalidModule, match="_start"):
            await pool.run(module("no_start"), b"", Limits())
        assert (await pool.run(module("echo"), b"ok", Limits())).ok
        assert len(pool.worker_pids()) == 1


async def test_runaway_runs_never_block_the_event_loop() -> None:
    async with open_worker_pool(2) as pool, trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(pool.run, module("loop"), b"", Limits(fuel=10**13, timeout_s=2))
        await wait_for_workers(pool, 2)
        worst = 0.0
        for _ in range(50):  # the loop keeps its pace while both workers spin
            before = trio.current_time()
            await trio.sleep(0.01)
            worst = max(worst, trio.current_time() - before - 0.01)
        assert worst < 0.1


def test_a_worker_process_loads_neither_libp2p_nor_pynacl() -> None:
    """The worker starts as the pool starts it; -X importtime lists every module it
    imported before it saw its stdin close."""
    command = [sys.executable, "-P", "-X", "importtime", "-m", WORKER_MODULE, ""]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    assert "mercato.runtime._sandbox" in imported  # the listing is real
    heavy = {m for m in imported if m.split(".")[0] in {"libp2p", "nacl", "solders", "pycrdt"}}
    assert not heavy, sorted(heavy)
