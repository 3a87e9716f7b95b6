"""The control API's server under abusive and slow clients (in-process node, real sockets)."""

import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from wasmtime import wat2wasm

from mercato.node import Config, ControlClient, DataDir, Node

from ..conftest import budget, run_cli

MODULES = Path(__file__).parents[1] / "runtime" / "modules"
HEADER_TIMEOUT_S = 5.0  # node/_server.py's


def loopback_config(**runtime: float) -> Config:
    config = (
        Config().replace("api", port=0).replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False)
    )
    return config.replace("runtime", **runtime) if runtime else config


@pytest.fixture
async def node(initialized: DataDir) -> AsyncIterator[Node]:
    running = Node(initialized, loopback_config(max_timeout_s=120.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(running.run)
        yield running
        running.request_stop()


def address(datadir: DataDir) -> tuple[str, int]:
    info = json.loads(datadir.api_file.read_text())
    return info["host"], info["port"]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_a_connection_that_sends_no_whole_request_head_is_dropped(node: Node) -> None:
    host, port = address(node.datadir)
    silent = socket.create_connection((host, port))
    partial = socket.create_connection((host, port))
    partial.sendall(b"GET /v1/status HTTP/1.1\r\nHost: a\r\n")  # and never the blank line
    limit = HEADER_TIMEOUT_S + budget(5)
    for sock in (silent, partial):
        with sock:
            assert await trio.to_thread.run_sync(closed_within, sock, limit)


async def test_150_idle_connections_do_not_keep_status_from_answering(node: Node) -> None:
    host, port = address(node.datadir)
    idle = [socket.create_connection((host, port)) for _ in range(150)]
    try:
        client = ControlClient(node.datadir, timeout=budget(10))
        started = time.monotonic()
        status = await trio.to_thread.run_sync(client.status)
        elapsed = time.monotonic() - started
        assert status["peer_id"] == node.overlay.peer_id
        assert elapsed < budget(1.0), f"status took {elapsed:.2f} s behind 150 idle connections"
        shown = await trio.to_thread.run_sync(
            lambda: run_cli("node", "status", "--data-dir", str(node.datadir.root))
        )
        assert shown.returncode == 0 and node.overlay.peer_id in shown.stdout, shown.stderr
    finally:
        for sock in idle:
            sock.close()


async def test_oversized_request_heads_get_431(node: Node) -> None:
    host, port = address(node.datadir)
    head = b"GET /v1/health HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 20_000 + b"\r\n\r\n"

    def exchange() -> bytes:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(head)
            return sock.recv(65536)

    reply = await trio.to_thread.run_sync(exchange)
    assert reply.split(b" ", 2)[1] == b"431"


async def test_deeply_nested_json_is_a_400_not_a_500(node: Node) -> None:
    client = ControlClient(node.datadir)
    token = node.datadir.token_file.read_text().strip()
    host, port = address(node.datadir)
    body = b"[" * 100_000

    def exchange() -> bytes:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/keys HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return sock.recv(65536)

    reply = await trio.to_thread.run_sync(exchange)
    assert reply.split(b" ", 2)[1] == b"400", reply[:200]
    assert (await trio.to_thread.run_sync(client.health))["status"] == "ok"


@pytest.mark.slow
async def test_a_run_longer_than_a_minute_gets_its_answer(node: Node) -> None:
    """No server-side cap cuts a legitimate request: the old server's was 60 s."""
    client = ControlClient(node.datadir, timeout=budget(120))
    body = {
        "wasm": base64.b64encode(wat2wasm((MODULES / "loop.wat").read_text())).decode(),
        "limits": {"fuel": 10**13, "timeout_s": 62},
    }
    started = time.monotonic()
    answer = await trio.to_thread.run_sync(lambda: client.request("POST", "/v1/runtime/run", body))
    assert answer["outcome"] == "timeout"  # ran its whole 62 s and was answered
    assert time.monotonic() - started > 60
