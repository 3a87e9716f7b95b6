"""runtime: WebAssembly execution of agent builds in a wasmtime sandbox with hard
limits, isolated from the daemon process. Not built yet.

May import p2p; must not import node, crdt or settlement.
"""

__all__: list[str] = []
