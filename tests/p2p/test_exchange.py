"""Exchanges (a request, then frames both ways on one stream), over real hosts on loopback."""

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import trio

from mercato.p2p import (
    BadResponse,
    Exchange,
    ExchangeProtocol,
    Message,
    Refused,
    RemoteError,
    RequestFailed,
    RequestTimeout,
)
from mercato.p2p._wire import encode_frame


@dataclass(frozen=True)
class Count(Message):
    TYPE: ClassVar[str] = "count"
    upto: int = field(metadata={"min": 0, "max": 1000})


@dataclass(frozen=True)
class Tick(Message):
    TYPE: ClassVar[str] = "tick"
    n: int = field(metadata={"min": 0, "max": 10**6})


@dataclass(frozen=True)
class Thanks(Message):
    TYPE: ClassVar[str] = "thanks"
    total: int = field(metadata={"min": 0, "max": 10**9})


COUNT = ExchangeProtocol(
    "/mercato/test-count/1.0.0", Count, (Tick, Thanks), max_frame_bytes=256, idle_s=1.0
)


async def counting(peer: str, request: Count, exchange: Exchange) -> None:
    """Ticks 1..upto (in two writes), then waits for the asker's thanks and echoes it."""
    if request.upto == 0:
        raise Refused("nothing", "nothing to count")
    ticks = [Tick(n) for n in range(1, request.upto + 1)]
    await exchange.send_many(ticks[: len(ticks) // 2])
    await exchange.send_many(ticks[len(ticks) // 2 :])
    thanks = await exchange.receive()
    assert isinstance(thanks, Thanks)
    await exchange.send(Thanks(thanks.total + 1))


async def test_frames_go_both_ways_on_one_stream(open_overlays) -> None:
    async with open_overlays(2) as (a, b):
        a.requests.serve_exchange(COUNT, counting)
        async with b.requests.exchange(a.peer_id, COUNT, Count(5)) as exchange:
            got = [await exchange.receive() for _ in range(5)]
            assert got == [Tick(n) for n in range(1, 6)]
            await exchange.send(Thanks(15))
            assert await exchange.receive() == Thanks(16)
        assert a.requests.statistics().by_protocol[COUNT.id] == 1


async def test_a_refusal_an_idle_peer_and_garbage_each_end_the_exchange(open_overlays) -> None:
    async with open_overlays(2) as (a, b):
        a.requests.serve_exchange(COUNT, counting)
        async with b.requests.exchange(a.peer_id, COUNT, Count(0)) as exchange:
            with pytest.raises(RemoteError) as refused:
                await exchange.receive()
        assert refused.value.code == "nothing"
        # The server waits idle_s for the thanks, then gives up: the client hears so.
        async with b.requests.exchange(a.peer_id, COUNT, Count(1)) as exchange:
            assert await exchange.receive() == Tick(1)
            with pytest.raises((RemoteError, RequestFailed)):
                await exchange.receive(idle_s=5.0)

        # A client that waits on a silent server times out.
        async def silent(peer: str, request: Count, exchange: Exchange) -> None:
            await trio.sleep_forever()  # never answers

        a.requests.serve_exchange(COUNT, silent)
        async with b.requests.exchange(a.peer_id, COUNT, Count(1)) as exchange:
            with pytest.raises(RequestTimeout):
                await exchange.receive(idle_s=0.2)

        # A frame of a type the protocol does not declare is a bad frame, penalised.
        async def liar(peer: str, request: Count, exchange: Exchange) -> None:
            await exchange._stream.write(encode_frame({"ok": {"t": "other", "v": 1}}, 256))
            await exchange.receive()  # until the client hangs up

        a.requests.serve_exchange(COUNT, liar)
        assert a.peer_id not in b.host._conduct
        async with b.requests.exchange(a.peer_id, COUNT, Count(1)) as exchange:
            with pytest.raises(BadResponse):
                await exchange.receive()
        assert b.host._conduct[a.peer_id].points > 0  # the liar was penalised
