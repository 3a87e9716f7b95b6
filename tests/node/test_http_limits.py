"""The control API's HTTP server under abusive clients (in-process, real sockets)."""

import socket

import trio

from mercato.node._http import MAX_CONNECTIONS, MAX_HEADER_BYTES, HttpServer, Request, Response


async def answer(request: Request) -> Response:
    return Response.json(200, {"path": request.path})


async def start(nursery: trio.Nursery, **kwargs) -> tuple[str, int]:
    server = HttpServer(answer, "127.0.0.1", 0, max_body=4096, **kwargs)
    return await nursery.start(server.serve)


def exchange(addr: tuple[str, int], data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


async def test_a_client_that_never_finishes_its_request_gets_408() -> None:
    async with trio.open_nursery() as nursery:
        addr = await start(nursery, request_timeout=0.3)
        reply = await trio.to_thread.run_sync(exchange, addr, b"GET /x HTTP/1.1\r\nHost: a\r\n")
        assert status_of(reply) == 408
        nursery.cancel_scope.cancel()


async def test_oversized_headers_in_one_write_get_431() -> None:
    async with trio.open_nursery() as nursery:
        addr = await start(nursery)
        big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n"
        reply = await trio.to_thread.run_sync(exchange, addr, big)
        assert status_of(reply) == 431
        nursery.cancel_scope.cancel()


async def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    request = Request("POST", "/", {}, {}, b"[" * 100_000)
    try:
        request.json()
    except Exception as exc:
        assert getattr(exc, "status", None) == 400
    else:
        raise AssertionError("nested JSON was accepted")


async def test_idle_connections_cannot_lock_the_api_out() -> None:
    async with trio.open_nursery() as nursery:
        addr = await start(nursery, request_timeout=0.5)
        idle = []
        for _ in range(MAX_CONNECTIONS + 20):  # more than every slot, all silent
            sock = socket.create_connection(addr)
            idle.append(sock)
        try:
            reply = await trio.to_thread.run_sync(
                exchange, addr, b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            assert status_of(reply) == 200 and b'"/ok"' in reply
        finally:
            for sock in idle:
                sock.close()
        nursery.cancel_scope.cancel()
