"""Circuit relay v2 on loopback: private nodes (no listening socket at all, so no
direct dial can reach them) reserve on a relay and reach each other through it."""

from contextlib import AsyncExitStack

import trio

from mercato.p2p import (
    DiscoveryConfig,
    HostConfig,
    Keypair,
    Overlay,
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


async def echo_behind_a_relay(stack: AsyncExitStack, **limits) -> tuple[Overlay, Overlay]:
    """A relay with ``limits`` and a private node reserved on it that echoes ECHO."""
    relay = await stack.enter_async_context(
        open_overlay(Keypair.generate(), relay_config(**limits))
    )
    there = relay.host.listen_addrs()[0]
    target = await stack.enter_async_context(
        open_overlay(Keypair.generate(), private_config(there))
    )
    await wait_until(lambda: target.relay.relayed_addrs(), 10, "a reservation")
    target.host.set_stream_handler(ECHO, lambda peer, stream: echo(stream))
    return relay, target


async def plain_node(stack: AsyncExitStack) -> Overlay:
    """A node that runs no relay handler of its own."""
    plain = OverlayConfig(host=LOOPBACK, discovery=DiscoveryConfig(mdns=False))
    return await stack.enter_async_context(open_overlay(Keypair.generate(), plain))


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
        # The relay's own address was dialed back by the nodes it serves.
        await wait_until(lambda: relay.reachability() == "public", 10, "the relay verified")
        assert relay.relay.status()["hop"]


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
        plain = OverlayConfig(host=LOOPBACK, discovery=DiscoveryConfig(mdns=False))
        dialer = await stack.enter_async_context(  # no relay handlers of its own
            open_overlay(Keypair.generate(), plain)
        )
        await dialer.host.connect(first.host.listen_addrs()[0])
        chunk, echoed = b"x" * 4096, 0
        with trio.fail_after(20):  # cut, not hung
            for _ in range(64):  # 256 KB in all, four times the limit
                try:
                    if await round_trip(dialer, first.peer_id, chunk) != chunk:
                        break
                except Exception:
                    break
                echoed += len(chunk)
        assert 0 < echoed < 64 * 1024  # some went through, then the circuit was cut
        # ...and the relay goes on: the reservation holds, and a new circuit works.
        await dialer.host.disconnect(first.peer_id)
        await wait_until(
            lambda: first.peer_id not in dialer.host.connected_peers(), 10, "the cut circuit"
        )
        await dialer.host.connect(first.host.listen_addrs()[0])
        assert await round_trip(dialer, first.peer_id, b"still here") == b"still here"


async def test_a_peer_cannot_take_reservations_in_other_peers_names() -> None:
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            open_overlay(Keypair.generate(), relay_config(max_reservations=2))
        )
        there = relay.host.listen_addrs()[0]
        plain = OverlayConfig(host=LOOPBACK, discovery=DiscoveryConfig(mdns=False))
        spoofer = await stack.enter_async_context(open_overlay(Keypair.generate(), plain))
        relay_id = await spoofer.host.connect(there)
        for _ in range(5):  # each names a made-up peer
            stream = await spoofer.host.libp2p.new_stream(ID.from_base58(relay_id), [HOP])
            made_up = Keypair.generate().peer_id
            reserve = HopMessage(type=HopMessage.RESERVE)
            reserve.peer.id = ID.from_base58(made_up).to_bytes()
            await write_delimited_msg(stream, reserve)
            with trio.fail_after(5):
                await read_delimited_msg(stream, HopMessage)
            await stream.close()
        # All five counted as the spoofer's one reservation: a real peer still gets one.
        honest = await stack.enter_async_context(
            open_overlay(Keypair.generate(), private_config(there))
        )
        await wait_until(lambda: honest.relay.relayed_addrs(), 10, "the honest reservation")


async def test_circuits_end_on_their_own_and_idle_ones_at_their_deadline() -> None:
    async with AsyncExitStack() as stack:
        _, target = await echo_behind_a_relay(stack, circuit_s=3)
        first, second = [await plain_node(stack) for _ in range(2)]
        address = target.host.listen_addrs()[0]
        for user in (first, second):
            await user.host.connect(address)
            assert await round_trip(user, target.peer_id, b"hello") == b"hello"
        # One user leaving ends its own circuit, not the other user's: watched over
        # two seconds (the relay tears the circuit down at its own pace).
        await first.host.disconnect(target.peer_id)
        await trio.sleep(2)  # an observation window
        assert target.peer_id in second.host.connected_peers()
        assert await round_trip(second, target.peer_id, b"still on") == b"still on"
        # The circuit ends at its deadline (3 s), busy or idle.
        await wait_until(
            lambda: target.peer_id not in second.host.connected_peers(), 10, "the idle cut"
        )


async def test_a_peer_that_leaves_frees_its_reservation() -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            open_overlay(Keypair.generate(), relay_config(max_reservations=1))
        )
        there = relay.host.listen_addrs()[0]
        async with open_overlay(Keypair.generate(), private_config(there)) as first:
            await wait_until(lambda: first.relay.relayed_addrs(), 10, "the first reservation")
        # The relay was full; the first peer has gone, so the next one gets its place
        # (on its first retry, not after the hour the reservation would have lasted).
        second = await stack.enter_async_context(
            open_overlay(Keypair.generate(), private_config(there))
        )
        await wait_until(lambda: second.relay.relayed_addrs(), 15, "the freed reservation")


async def test_a_relay_holds_all_its_circuits_to_its_bandwidth_cap() -> None:
    """100 KB/s with one second of burst: an echo of 100 KB crosses the relay twice
    (200 KB), so it cannot take less than about a second. Without the cap it takes
    milliseconds on loopback."""
    async with AsyncExitStack() as stack:
        _, target = await echo_behind_a_relay(stack, bandwidth_bytes_s=100_000)
        user = await plain_node(stack)
        await user.host.connect(target.host.listen_addrs()[0])
        payload = bytes(range(256)) * 400  # 100 KB
        started = trio.current_time()
        assert await round_trip(user, target.peer_id, payload) == payload
        assert trio.current_time() - started >= 0.8
