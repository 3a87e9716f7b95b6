"""Circuit relay v2 on loopback: private nodes (no listening socket at all, so no
direct dial can reach them) reserve on a relay and reach each other through it."""

from contextlib import AsyncExitStack, suppress

import trio

from p2p import (
    DiscoveryConfig,
    HostConfig,
    Keypair,
    OverlayConfig,
    RelayConfig,
    open_overlay,
)

from .conftest import LOOPBACK, wait_until

ECHO = "/mercato-test/echo/1.0.0"


def relay_config(**limits) -> OverlayConfig:
    return OverlayConfig(
        host=LOOPBACK, discovery=DiscoveryConfig(mdns=False), relay=RelayConfig(hop=True, **limits)
    )


def private_config(relay_addr: str) -> OverlayConfig:
    return OverlayConfig(
        host=HostConfig(listen=(), private=True),
        discovery=DiscoveryConfig(mdns=False, bootstrap=(relay_addr,)),
        relay=RelayConfig(reserve_on=(relay_addr,)),
    )


async def echo(stream) -> None:
    while data := await stream.read(65536):
        await stream.write(data)
    await stream.close()


async def round_trip(node, peer: str, payload: bytes) -> bytes:
    stream = await node.host.open_stream(peer, ECHO)
    await stream.write(payload)
    got = b""
    with trio.fail_after(10):
        while len(got) < len(payload):
            chunk = await stream.read(65536)
            if not chunk:
                break
            got += chunk
    await stream.close()
    return got


async def test_two_private_nodes_reach_each_other_only_through_the_relay() -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_overlay(Keypair.generate(), relay_config()))
        there = relay.host.listen_addrs()[0]
        a, b = [
            await stack.enter_async_context(open_overlay(Keypair.generate(), private_config(there)))
            for _ in range(2)
        ]
        for node in (a, b):
            await wait_until(lambda n=node: n.relay.relayed_addrs(), 10, "a reservation")
            assert node.reachability() == "relayed"
            # Only relayed addresses are advertised: nothing listens to dial directly.
            assert node.host.listen_addrs() == [f"{there}/p2p-circuit/p2p/{node.peer_id}"]
        b.host.set_stream_handler(ECHO, lambda peer, stream: echo(stream))
        await a.host.connect(b.host.listen_addrs()[0])
        assert await round_trip(a, b.peer_id, b"through the relay") == b"through the relay"
        assert relay.reachability() == "public" and relay.relay.status()["hop"]


async def test_a_relay_over_its_limits_refuses_and_keeps_serving_the_others() -> None:
    limits = {"max_reservations": 1, "circuit_bytes": 64 * 1024}
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            open_overlay(Keypair.generate(), relay_config(**limits))
        )
        there = relay.host.listen_addrs()[0]
        first = await stack.enter_async_context(
            open_overlay(Keypair.generate(), private_config(there))
        )
        await wait_until(lambda: first.relay.relayed_addrs(), 10, "the first reservation")
        # The relay is full: a second private node is refused a reservation.
        second = await stack.enter_async_context(
            open_overlay(Keypair.generate(), private_config(there))
        )
        await wait_until(
            lambda: second.relay.status()["failing"].get(there, 0) >= 2, 10, "a second refusal"
        )
        assert second.reachability() == "private" and not second.relay.relayed_addrs()

        # A circuit that carries more than its byte limit is cut...
        first.host.set_stream_handler(ECHO, lambda peer, stream: echo(stream))
        dialer = await stack.enter_async_context(
            open_overlay(Keypair.generate(), relay_config())  # any node that can dial
        )
        await dialer.host.connect(first.host.listen_addrs()[0])
        big = b"x" * (256 * 1024)
        got = b""
        with suppress(Exception):  # the cut shows as a reset or an early end
            got = await round_trip(dialer, first.peer_id, big)
        assert len(got) < len(big)
        # ...and the relay goes on: the reservation holds, and a new circuit works.
        await dialer.host.disconnect(first.peer_id)
        await wait_until(
            lambda: first.peer_id not in dialer.host.connected_peers(), 10, "the cut circuit"
        )
        await dialer.host.connect(first.host.listen_addrs()[0])
        assert await round_trip(dialer, first.peer_id, b"still here") == b"still here"
