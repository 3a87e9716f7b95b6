"""runtime: WebAssembly execution of agent builds in a wasmtime sandbox with hard
limits, isolated from the daemon process.

`Sandbox` compiles and runs one module in the calling process (blocking);
`WorkerPool` runs modules in worker processes for the daemon, so that a crash,
abort or runaway in wasmtime cannot stop, block or corrupt the node. Every run
ends in a `RunResult` with an `Outcome` and its `Usage`.

May import p2p; must not import node, crdt or settlement.
"""

from ._errors import InputTooLarge as InputTooLarge
from ._errors import InvalidModule as InvalidModule
from ._errors import LimitsError as LimitsError
from ._errors import SandboxError as SandboxError
from ._limits import Limits as Limits
from ._limits import Outcome as Outcome
from ._limits import RunResult as RunResult
from ._limits import Usage as Usage
from ._pool import WorkerPool as WorkerPool
from ._pool import open_worker_pool as open_worker_pool
from ._sandbox import ENGINE_KEY as ENGINE_KEY
from ._sandbox import Sandbox as Sandbox
from ._sandbox import module_key as module_key

__all__ = [
    "ENGINE_KEY",
    "InputTooLarge",
    "InvalidModule",
    "Limits",
    "LimitsError",
    "Outcome",
    "RunResult",
    "SandboxError",
    "Sandbox",
    "Usage",
    "WorkerPool",
    "module_key",
    "open_worker_pool",
]
