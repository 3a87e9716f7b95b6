"""Running a build once on this machine, outside the daemon: what `mercato exec` does."""

from __future__ import annotations

from pathlib import Path

import trio

from mercato.runtime import Limits, RunResult, open_worker_pool

from ._paths import DataDir


def run_build(
    wasm: Path, stdin: bytes, limits: Limits, datadir: DataDir | None = None
) -> RunResult:
    """Run ``wasm`` once in an isolated worker process, as a provider's node would.

    The data dir's compiled-module cache is used when the data dir exists (so a
    second run skips compiling). Blocking: starts and ends its own trio loop.
    Raises InvalidModule, InputTooLarge or LimitsError when no run can happen.
    """
    cache = datadir.module_cache_dir if datadir is not None and datadir.is_initialized() else None

    async def main() -> RunResult:
        async with open_worker_pool(1, cache) as pool:
            return await pool.run(wasm, stdin, limits, name=wasm.stem)

    return trio.run(main)
