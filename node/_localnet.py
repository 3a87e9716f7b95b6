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
import logging
import os
import signal
from pathlib import Path

import trio

from mercato.settlement import MAX_RPC_BODY as MAX_BODY
from mercato.settlement import LedgerError, LocalnetRpc, open_embedded_ledger

from ._errors import DataDirLocked
from ._http import HttpServer, Request, Response

log = logging.getLogger("mercato.localnet")
DEFAULT_PORT = 8899  # Solana's own JSON-RPC port
STOP_GRACE_S = 5.0


def _lock(directory: Path) -> int:
    fd = os.open(directory / "localnet.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(
            f"another localnet already serves {directory}; stop it, or use another --dir"
        ) from None
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

            async def handle(request: Request) -> Response:
                if request.method != "POST":
                    return Response.error(405, "method_not_allowed", "send JSON-RPC with POST")
                answer = await rpc.answer(request.body)
                if ledger.broken:  # memory and journal differ: stop rather than go on
                    log.error("localnet stopping", extra={"why": ledger.broken})
                    server.close()
                return Response(200, answer)

            server = HttpServer(handle, host, port, max_body=MAX_BODY)
            bound_host, bound_port = await server.bind()
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


async def _stop_on_signal(server: HttpServer, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("localnet stopping")
            server.close()
            scope.deadline = trio.current_time() + STOP_GRACE_S
            return
