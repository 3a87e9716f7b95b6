"""The request/response framework and its defences, over real hosts on loopback."""

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import trio

from mercato.p2p import (
    BadResponse,
    Message,
    PeerBanned,
    Refused,
    RemoteError,
    RequestProtocol,
    RequestTimeout,
)
from mercato.p2p._wire import FrameReader, encode_frame, encode_uvarint

from .conftest import wait_until


@dataclass(frozen=True)
class Echo(Message):
    TYPE: ClassVar[str] = "echo"
    text: str = field(metadata={"max_len": 64})


ECHO = RequestProtocol("/mercato/test-echo/1.0.0", Echo, Echo, max_request_bytes=256, timeout_s=2.0)


async def echo(peer: str, request: Echo) -> Echo:
    if request.text == "refuse":
        raise Refused("not_allowed", "this text is refused")
    if request.text == "crash":
        raise RuntimeError("bug in handler")
    return Echo(request.text.upper())


async def raw_exchange(client, server_peer: str, data: bytes) -> object:
    """Send raw bytes on the echo protocol and read the framed answer."""
    from mercato.p2p._requests import _StreamBytes

    stream = await client.host.open_stream(server_peer, ECHO.id)
    await stream.write(data)
    await stream.close()
    return await FrameReader(_StreamBytes(stream)).read(1 << 20)


async def test_info_answers_with_agent_and_addresses(open_overlays) -> None:
    async with open_overlays(2) as (a, b):
        info = await b.info(a.peer_id)
        assert info.agent == "mercato"
        assert info.listen_addrs == a.host.listen_addrs()


async def test_requests_errors_and_refusals(open_overlays) -> None:
    async with open_overlays(2) as (a, b):
        a.requests.serve(ECHO, echo)
        assert await b.requests.request(a.peer_id, ECHO, Echo("hi")) == Echo("HI")
        with pytest.raises(RemoteError) as err:
            await b.requests.request(a.peer_id, ECHO, Echo("refuse"))
        assert err.value.code == "not_allowed"
        with pytest.raises(RemoteError) as err:
            await b.requests.request(a.peer_id, ECHO, Echo("crash"))
        assert err.value.code == "internal"
        assert a.requests.statistics().served == 1
        # Every byte one side sent of this protocol, the other received (the
        # server counts an answer once its stream is closed, just after).
        sent, got = b.requests.statistics(), a.requests.statistics()
        assert sent.bytes_out[ECHO.id] == got.bytes_in[ECHO.id] > 0
        await wait_until(
            lambda: got.bytes_out.get(ECHO.id) == sent.bytes_in[ECHO.id] > 0, 5, "answers counted"
        )


async def test_garbage_gets_an_error_and_repeated_garbage_a_ban(open_overlays) -> None:
    async with open_overlays(3) as (server, bad, good):
        server.requests.serve(ECHO, echo)
        answer = await raw_exchange(bad, server.peer_id, b"\x05garbage-not-cbor")
        assert answer["err"]["code"] == "bad_request"
        answer = await raw_exchange(bad, server.peer_id, encode_uvarint(10**6) + b"x")
        assert answer["err"]["code"] == "too_large"
        # Keep misbehaving until the server cuts this peer off.
        for _ in range(10):
            if server.host.is_banned(bad.peer_id):
                break
            try:
                await raw_exchange(bad, server.peer_id, encode_frame({"t": "echo", "v": 9}, 256))
            except Exception:
                continue
        assert server.host.is_banned(bad.peer_id)
        await wait_until(lambda: bad.peer_id not in server.host.connected_peers(), 5, "disconnect")
        with pytest.raises(PeerBanned):
            await server.host.connect(bad.host.listen_addrs()[0])
        # Everyone else is still served.
        assert await good.requests.request(server.peer_id, ECHO, Echo("still")) == Echo("STILL")


async def test_a_request_flood_is_cut_off(open_overlays) -> None:
    async with open_overlays(3) as (server, flooder, good):
        server.requests.serve(ECHO, echo)
        busy = 0
        for _ in range(400):
            if server.host.is_banned(flooder.peer_id):
                break
            try:
                await flooder.requests.request(server.peer_id, ECHO, Echo("x"))
            except RemoteError as exc:
                busy += exc.code == "busy"
            except Exception:
                continue
        assert busy > 0 and server.host.is_banned(flooder.peer_id)
        assert await good.requests.request(server.peer_id, ECHO, Echo("ok")) == Echo("OK")


async def test_a_silent_server_times_out_and_a_lying_one_is_caught(open_overlays) -> None:
    async with open_overlays(2) as (server, client):

        async def silent(peer: str, stream) -> None:
            await trio.sleep(10)

        async def liar(peer: str, stream) -> None:
            await stream.write(encode_frame({"ok": {"t": "echo", "v": 1, "text": 5}}, 256))
            await stream.close()

        server.host.set_stream_handler("/mercato/silent/1.0.0", silent)
        server.host.set_stream_handler("/mercato/liar/1.0.0", liar)
        silent_proto = RequestProtocol("/mercato/silent/1.0.0", Echo, Echo, timeout_s=0.5)
        liar_proto = RequestProtocol("/mercato/liar/1.0.0", Echo, Echo)
        with pytest.raises(RequestTimeout):
            await client.requests.request(server.peer_id, silent_proto, Echo("x"))
        with pytest.raises(BadResponse, match="text"):
            await client.requests.request(server.peer_id, liar_proto, Echo("x"))


LONG = RequestProtocol("/mercato/test-long/1.0.0", Echo, Echo, max_request_bytes=256, timeout_s=120)


async def test_idle_streams_cost_seconds_not_the_protocol_timeout_and_get_their_peer_banned(
    open_overlays, monkeypatch
) -> None:
    import mercato.p2p._requests as requests_module
    from mercato.p2p._requests import _StreamBytes

    monkeypatch.setattr(requests_module, "FIRST_BYTE_S", 1.0)
    async with open_overlays(3) as (server, attacker, honest):
        server.requests.serve(LONG, echo)
        idle_answers = []

        async def hold_idle() -> None:
            stream = await attacker.host.open_stream(server.peer_id, LONG.id)
            answer = await FrameReader(_StreamBytes(stream)).read(1 << 16)  # sends nothing
            idle_answers.append(answer)

        with trio.fail_after(10):  # the protocol would have waited 120 s for each
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(hold_idle)
                # Meanwhile an honest peer is served.
                assert await honest.requests.request(server.peer_id, LONG, Echo("hi")) == Echo("HI")
        assert [a["err"]["code"] for a in idle_answers] == ["idle"] * 4
        with trio.fail_after(10):
            await hold_idle()  # the fifth idle stream: over 100 points in a minute
        await wait_until(lambda: server.host.is_banned(attacker.peer_id), 5, "the ban")
        assert not server.host.is_banned(honest.peer_id)
