"""``mercato localnet``: one embedded ledger served over Solana JSON-RPC on loopback.

Nodes in separate processes on one machine share it with ``[settlement]
ledger = "localnet"``. Its directory holds the ledger's journal (``ledger.db``,
so a restart keeps every balance and channel), a lock (one localnet per
directory) and ``url``, the address it serves, for scripts to read.

Stopping (SIGINT/SIGTERM or cancellation): no new requests are taken, the ones
in flight get their answer, and every transaction answered is journaled.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from mercato.settlement import MAX_RPC_BODY as MAX_BODY
from mercato.settlement import LedgerError, LocalnetRpc, open_embedded_ledger

from ._errors import DataDirLocked
from ._server import HttpListener

log = logging.getLogger("mercato.localnet")
DEFAULT_PORT = 8899  # Solana's own JSON-RPC port
STOP_GRACE_S = 5.0


def _lock(directory: Path) -> int:
    fd = os.open(directory / "localnet.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DataDirLocked(
            f"another localnet already serves {directory}; stop it, or use another --dir"
        ) from exc
    return fd


async def serve_localnet(
    directory: Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ledger journaled in ``directory`` until cancelled (or a signal);
    reports its URL once listening. DataDirLocked if another localnet serves it;
    OSError if the port is taken."""
    await trio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
    fd = _lock(directory)
    try:
        async with open_embedded_ledger(directory / "ledger.db") as ledger:
            rpc = LocalnetRpc(ledger)

            async def answer(body: bytes) -> bytes:
                reply = await rpc.answer(body)
                if ledger.broken:  # memory and journal differ: stop rather than go on
                    log.error("localnet stopping", extra={"why": ledger.broken})
                    server.close()
                return reply

            server = HttpListener(JsonRpcApp(answer), host, port, grace_s=STOP_GRACE_S)
            bound_host, bound_port = server.bind()
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            url = f"http://{shown}:{bound_port}"
            await trio.to_thread.run_sync(_write_url, directory, url)
            log.info("localnet serving", extra={"url": url, "dir": str(directory)})
            async with trio.open_nursery() as nursery:
                if handle_signals:
                    nursery.start_soon(_stop_on_signal, server, nursery.cancel_scope)
                task_status.started(url)
                await server.serve()
            if ledger.broken:
                raise LedgerError(ledger.broken)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: (directory / "url").unlink(missing_ok=True))
        os.close(fd)


def _write_url(directory: Path, url: str) -> None:
    """Atomically: a script polling for the file never reads half of it."""
    partial = directory / "url.partial"
    partial.write_text(url + "\n")
    os.replace(partial, directory / "url")


class JsonRpcApp:
    """A plain ASGI app: JSON-RPC bodies in with POST, ``answer``'s bytes out.

    Bodies over MAX_BODY get 413 without being read whole; other methods 405.
    """

    def __init__(self, answer: Callable[[bytes], Awaitable[bytes]]) -> None:
        self._answer = answer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _reply(send, 405, _error(-32600, "send JSON-RPC with POST"))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _reply(send, 413, _error(-32600, f"bodies are limited to {MAX_BODY} bytes"))
                return
            if not message.get("more_body", False):
                break
        await _reply(send, 200, await self._answer(bytes(body)))


def _error(code: int, message: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    ).encode()


async def _reply(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stop_on_signal(server: HttpListener, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("localnet stopping")
            server.close()
            scope.deadline = trio.current_time() + STOP_GRACE_S
            return
