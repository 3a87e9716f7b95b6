"""``mercato localnet``: one embedded ledger served over Solana JSON-RPC on loopback.

Nodes in separate processes on one machine share it with ``[settlement]
ledger = "localnet"``. Its directory holds the ledger's journal (``ledger.db``,
so a restart keeps every balance and channel), a lock (one localnet per
directory) and ``url``, the address it serves, for scripts to read.

It has the test SPL mint (``mercato.settlement.TEST_MINT``, 6 decimals, made
at the first start), and its faucet (requestAirdrop) grants 1,000 of its
tokens to the recipient's associated token account with the lamports, at the
faucet's cost: x402 buyers and gateways pay and are paid in it.

Solana's PubSub (WebSocket subscriptions: signatureSubscribe, accountSubscribe,
...) is served on the HTTP port + 1, as on a cluster (clients derive it so):
``ws://HOST:PORT+1``, written to ``ws_url``. With port 0 the HTTP port is one
whose next port is free too.

Stopping (SIGINT/SIGTERM or cancellation): no new requests are taken, the ones
in flight get their answer, and every transaction answered is journaled; on a
signal the WebSockets are closed with 1001 (going away), on cancellation dropped.
"""

from __future__ import annotations

import errno
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
from mercato.settlement import (
    LedgerError,
    LocalnetRpc,
    PubSubHub,
    ensure_test_mint,
    open_cluster_ledger,
)

from ._errors import DataDirLocked
from ._localnet_ws import Listener, PubSubApp, WsListener

log = logging.getLogger("mercato.localnet")
DEFAULT_PORT = 8899  # Solana's own JSON-RPC port
STOP_GRACE_S = 5.0
BIND_TRIES = 8  # port 0: HTTP ports tried until the next one is free for the WebSocket


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
    reports its URL once listening (its WebSocket is on the port after it).
    DataDirLocked if another localnet serves it; OSError if the port, or the
    one after it, is taken."""
    await trio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
    fd = _lock(directory)
    try:
        async with open_cluster_ledger(directory / "ledger.db") as ledger:
            await ensure_test_mint(ledger)  # so its faucet grants test tokens too
            rpc = LocalnetRpc(ledger)
            hub = PubSubHub(rpc.answer)  # subscriptions read through the JSON-RPC

            async def answer(body: bytes) -> bytes:
                reply = await rpc.answer(body)
                if ledger.broken:  # memory and journal differ: stop rather than go on
                    log.error("localnet stopping", extra={"why": ledger.broken})
                    stop()
                if _may_change_ledger(body):
                    hub.notify()  # signatureSubscribe hears of it now, not a poll later
                return reply

            def stop() -> None:
                server.close()
                ws_server.close()
                hub.close()  # every WebSocket closed with 1001

            server, ws_server, url, ws_url = _bind(JsonRpcApp(answer), hub, host, port)
            # ws_url first: a script that sees url finds ws_url too
            await trio.to_thread.run_sync(_write_url, directory, ws_url, "ws_url")
            await trio.to_thread.run_sync(_write_url, directory, url)
            where = {"url": url, "ws_url": ws_url, "dir": str(directory)}
            log.info("localnet serving", extra=where)
            async with trio.open_nursery() as nursery:
                if handle_signals:
                    nursery.start_soon(_stop_on_signal, stop, nursery.cancel_scope)
                nursery.start_soon(rpc.run_clock)  # slots advance like a cluster's
                await nursery.start(hub.run)
                async with trio.open_nursery() as servers:
                    servers.start_soon(ws_server.serve)
                    task_status.started(url)
                    await server.serve()
                    stop()  # whatever stopped the HTTP side stops the WebSockets too
                nursery.cancel_scope.cancel()  # the clock and the signal watcher
            if ledger.broken:
                raise LedgerError(ledger.broken)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_urls, directory)
        os.close(fd)


def _write_url(directory: Path, url: str, name: str = "url") -> None:
    """Atomically: a script polling for the file never reads half of it."""
    partial = directory / f"{name}.partial"
    partial.write_text(url + "\n")
    os.replace(partial, directory / name)


def _remove_urls(directory: Path) -> None:
    for name in ("url", "ws_url"):
        (directory / name).unlink(missing_ok=True)


def _may_change_ledger(body: bytes) -> bool:
    """Whether a request (or a batch) may have changed the ledger: a cheap look,
    never wrong the other way (a false yes costs one early poll)."""
    return b"sendTransaction" in body or b"requestAirdrop" in body


def _bind(
    app: JsonRpcApp, hub: PubSubHub, host: str, port: int
) -> tuple[Listener, WsListener, str, str]:
    """Listeners bound on ``port`` and ``port + 1`` (port 0: a free pair, after at
    most BIND_TRIES tries), and their URLs; OSError if either port is taken."""
    for attempt in range(1 if port else BIND_TRIES):
        server = Listener(app, host, port, grace_s=STOP_GRACE_S)
        bound_host, bound_port = server.bind()
        ws_server = WsListener(
            PubSubApp(hub), host, bound_port + 1, max_frame=hub.limits.max_frame,
            grace_s=STOP_GRACE_S,
        )  # fmt: skip
        try:
            if bound_port == 65535:
                raise OSError(errno.EADDRNOTAVAIL, "there is no port after 65535")
            ws_server.bind()
        except OSError as exc:
            server.release()
            if port or attempt == BIND_TRIES - 1:
                raise OSError(
                    exc.errno,
                    f"cannot listen on {host}:{bound_port + 1} for the WebSocket (the HTTP "
                    f"port + 1): {exc.strerror}",
                ) from exc
            continue
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return server, ws_server, f"http://{shown}:{bound_port}", f"ws://{shown}:{bound_port + 1}"
    raise AssertionError("unreachable: the last try raises")


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


async def _stop_on_signal(stop: Callable[[], None], scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("localnet stopping")
            stop()
            scope.deadline = trio.current_time() + STOP_GRACE_S
            return
