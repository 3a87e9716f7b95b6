"""A worker process: runs modules in a `Sandbox` for the daemon, one request at a time.

Started by `WorkerPool` as ``python -P -m mercato.runtime._worker [CACHE_DIR]``. Requests
and replies are frames on stdin and stdout: a 4-byte big-endian length, then
CBOR. A request is ``{"key", "path" or "wasm", "stdin", "limits", "name", "host",
"max_calls"}``; a reply ``{"result": RunResult}`` or ``{"error": kind, "message":
text}``. The worker exits when stdin closes (its daemon is gone). Anything else
that reaches stdout would corrupt the frames, so ``sys.stdout`` is pointed at stderr.

A run with ``"host": true`` forwards each of its module's host calls that the
sandbox lets through (arguments valid, within ``max_calls``) as a frame
``{"host": {"op", "target", "payload", "remaining_s"}}`` and blocks until the
daemon answers ``{"status", "output"}`` on stdin; then the run goes on, and its
``{"result"}`` still ends it. If stdin closes while it waits, the worker exits.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any, BinaryIO

import cbor2

from ._errors import SandboxError
from ._host import HostCall, HostFunction, HostReply, HostStatus, failure
from ._limits import Limits
from ._sandbox import Sandbox

MAX_REQUEST_BYTES = 128 * 1024 * 1024


def _read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_REQUEST_BYTES:
        raise SystemExit(f"request of {size} bytes is over the bound")
    body = stream.read(size)
    if len(body) < size:
        return None
    return cbor2.loads(body)


def _write_frame(stream: BinaryIO, value: Any) -> None:
    body = cbor2.dumps(value)
    stream.write(len(body).to_bytes(4, "big") + body)
    stream.flush()


def _forwarder(sandbox: Sandbox, requests: BinaryIO, replies: BinaryIO) -> HostFunction:
    """A host function that asks the daemon, on the worker's own pipes."""

    def forward(call: HostCall) -> HostReply:
        frame = {"op": call.op, "target": call.target, "payload": call.payload}
        try:
            _write_frame(replies, {"host": {**frame, "remaining_s": sandbox.remaining_s()}})
            answer = _read_frame(requests)
        except (OSError, ValueError) as exc:  # ValueError: a frame CBOR cannot read
            raise SystemExit(f"the daemon's pipe broke during a host call: {exc}") from exc
        if answer is None:
            raise SystemExit("the daemon went away during a host call")  # ends the worker
        try:
            return HostReply(int(answer["status"]), bytes(answer["output"]))
        except (TypeError, KeyError, ValueError):
            return failure(HostStatus.UNAVAILABLE, "the node gave a malformed answer")

    return forward


def _serve(
    sandbox: Sandbox, request: dict[str, Any], forward: HostFunction | None = None
) -> dict[str, Any]:
    def source() -> bytes:
        return bytes(request["wasm"]) if "wasm" in request else Path(request["path"]).read_bytes()

    try:
        if request.get("op") == "check":  # compile and link only (WorkerPool.check)
            sandbox.prepare(source, key=request["key"])
            return {"checked": True}
        result = sandbox.run(
            source,
            bytes(request["stdin"]),
            Limits.from_wire(request["limits"]),
            key=request["key"],
            name=request.get("name", "agent"),
            host=forward if request.get("host") else None,
            max_calls=request.get("max_calls", 0),
        )
    except SandboxError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    except OSError as exc:
        return {"error": "InvalidModule", "message": f"cannot read the build: {exc}"}
    except Exception as exc:  # a bad request must not take the worker down
        return {"error": "SandboxError", "message": f"the run failed: {exc!r}"[:500]}
    return {"result": result.to_wire()}


def main() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core dump
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr
    sandbox = Sandbox(Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None)
    forward = _forwarder(sandbox, requests, replies)
    while (request := _read_frame(requests)) is not None:
        _write_frame(replies, _serve(sandbox, request, forward))


if __name__ == "__main__":
    main()
