"""runtime: WebAssembly execution of agent builds in a wasmtime sandbox with hard
limits, isolated from the daemon process.

`Sandbox` compiles and runs one module in the calling process (blocking);
`WorkerPool` runs modules in worker processes for the daemon, so that a crash,
abort or runaway in wasmtime cannot stop, block or corrupt the node. Every run
ends in a `RunResult` with an `Outcome` and its `Usage`. A module may import
the ``mercato`` host functions (`HOST_MODULE`: ``call``, ``infer``, ``result``;
runtime/examples/mercato.h): the daemon answers them through the `HostHandler`
it gives `WorkerPool.run`, with a `HostReply` or a negative `HostStatus`.

`Sandbox` and `ENGINE_KEY` are loaded when first used: importing this package
(as the daemon does) loads no wasmtime, which only the worker processes and
`mercato exec` need; `open_worker_pool` checks that wasmtime is installed.

May import p2p; must not import node, crdt or settlement.
"""

from typing import TYPE_CHECKING, Any

from ._errors import InputTooLarge as InputTooLarge
from ._errors import InvalidModule as InvalidModule
from ._errors import LimitsError as LimitsError
from ._errors import SandboxError as SandboxError
from ._host import HOST_MODULE as HOST_MODULE
from ._host import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from ._host import MAX_REPLY_BYTES as MAX_REPLY_BYTES
from ._host import MAX_TARGET_BYTES as MAX_TARGET_BYTES
from ._host import HostCall as HostCall
from ._host import HostFunction as HostFunction
from ._host import HostHandler as HostHandler
from ._host import HostReply as HostReply
from ._host import HostStatus as HostStatus
from ._limits import Limits as Limits
from ._limits import Outcome as Outcome
from ._limits import RunResult as RunResult
from ._limits import Usage as Usage
from ._pool import WorkerPool as WorkerPool
from ._pool import open_worker_pool as open_worker_pool
from ._source import module_key as module_key

if TYPE_CHECKING:
    from ._sandbox import ENGINE_KEY as ENGINE_KEY
    from ._sandbox import Sandbox as Sandbox

_SANDBOX = frozenset({"ENGINE_KEY", "Sandbox"})


def __getattr__(name: str) -> Any:
    """`Sandbox` and `ENGINE_KEY`, importing wasmtime on first use."""
    if name in _SANDBOX:
        from . import _sandbox

        return getattr(_sandbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENGINE_KEY",
    "HOST_MODULE",
    "MAX_PAYLOAD_BYTES",
    "MAX_REPLY_BYTES",
    "MAX_TARGET_BYTES",
    "HostCall",
    "HostFunction",
    "HostHandler",
    "HostReply",
    "HostStatus",
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
