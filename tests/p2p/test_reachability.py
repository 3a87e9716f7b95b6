"""The dial-back check (our AutoNAT) on loopback. A node "behind NAT" listens on
127.0.0.2 but dials out from 127.0.0.1: the address its peers see it at does
not answer, as with a NAT that has no port forwarded."""

from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial

import pytest
import trio

from mercato.p2p import (
    DhtConfig,
    DiscoveryConfig,
    HostConfig,
    Keypair,
    OverlayConfig,
    RelayConfig,
    open_overlay,
)
from mercato.p2p._reachability import DIALBACK, DialBackRequest
from mercato.p2p._requests import RemoteError

from .conftest import LOOPBACK, wait_until
from .test_relay import private_config, relay_config

NATTED = HostConfig(listen=("/ip4/127.0.0.2/tcp/0",))


def config(host: HostConfig = LOOPBACK, bootstrap: tuple[str, ...] = ()) -> OverlayConfig:
    return OverlayConfig(host=host, discovery=DiscoveryConfig(mdns=False, bootstrap=bootstrap))


def behind_nat(ip: str, relay: str) -> OverlayConfig:
    """A node "behind NAT" that keeps to its relay. On loopback any address answers
    a direct dial, so nothing may dial it directly: discovery dials no one but the
    relay (target_peers 1), and as a DHT client it is in no one's routing table, so
    no lookup dials it."""
    return OverlayConfig(
        host=HostConfig(listen=(f"/ip4/{ip}/tcp/0",)),
        discovery=DiscoveryConfig(mdns=False, bootstrap=(relay,), target_peers=1),
        dht=DhtConfig(mode="client"),
    )


async def test_peers_dial_a_listening_node_back_and_find_it_public() -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [
            await stack.enter_async_context(open_overlay(Keypair.generate(), config()))
            for _ in range(3)
        ]
        for other in (b, c):
            await a.host.connect(other.host.listen_addrs()[0])
        await wait_until(lambda: a.reachability() == "public", 10, "a found public")
        assert sorted(a.autonat.verdict.checked_by) == sorted([b.peer_id, c.peer_id])
        assert a.autonat.verdict.observed == ("127.0.0.1",)
        assert not a.relay.relayed_addrs()  # a public node takes no reservation


async def test_a_node_nobody_can_dial_back_is_unreachable_and_reserves_on_a_relay() -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_overlay(Keypair.generate(), relay_config()))
        there = relay.host.listen_addrs()[0]
        natted = await stack.enter_async_context(
            open_overlay(Keypair.generate(), behind_nat("127.0.0.2", there))
        )
        await wait_until(lambda: natted.reachability() == "relayed", 15, "a reservation")
        assert natted.autonat.verdict.state == "unreachable"
        assert natted.relay.status()["reservations"] == [there]
        relayed = f"{there}/p2p-circuit/p2p/{natted.peer_id}"
        assert natted.host.listen_addrs()[0] == relayed
        # A private node (it cannot dial 127.0.0.2's direct address: it has no
        # socket of its own to be dialed back on, but dials out as usual) reaches
        # the natted node through the relay, by the address the latter advertises.
        private = replace(
            private_config(there),
            discovery=DiscoveryConfig(mdns=False, target_peers=1),
            dht=DhtConfig(mode="client"),
        )
        other = await stack.enter_async_context(open_overlay(Keypair.generate(), private))
        assert await other.host.connect(relayed) == natted.peer_id
        assert other.host.is_relayed(natted.peer_id)
        assert other.host.peer_addrs(natted.peer_id)[0] == relayed  # how to redial it


async def test_a_port_that_is_not_a_libp2p_listener_does_not_count() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await stream.aclose()  # accepts, answers nothing

    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        other_port = listeners[0].socket.getsockname()[1]
        stack.callback(nursery.cancel_scope.cancel)
        a, b = [
            await stack.enter_async_context(open_overlay(Keypair.generate(), config()))
            for _ in range(2)
        ]
        await a.host.connect(b.host.listen_addrs()[0])
        own = a.autonat.ports()[0]
        answer = await a.requests.request(
            b.peer_id, DIALBACK, DialBackRequest(ports=[other_port, own, 1])
        )
        assert answer.observed == "127.0.0.1"
        assert answer.reached == [own]


async def test_a_dial_back_asked_through_a_relay_is_refused() -> None:
    """A relayed connection's socket is the relay's: dialing "back" would dial the relay."""
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_overlay(Keypair.generate(), relay_config()))
        there = relay.host.listen_addrs()[0]
        a, b = [
            await stack.enter_async_context(open_overlay(Keypair.generate(), private_config(there)))
            for _ in range(2)
        ]
        for node in (a, b):
            await wait_until(lambda n=node: n.relay.relayed_addrs(), 10, "a reservation")
        await a.host.connect(b.host.listen_addrs()[0])
        with pytest.raises(RemoteError) as refused:
            await a.requests.request(b.peer_id, DIALBACK, DialBackRequest(ports=[4001]))
        assert refused.value.code == "relayed"


async def test_a_relay_checks_itself_but_never_reserves() -> None:
    async with AsyncExitStack() as stack:
        hop = OverlayConfig(
            host=NATTED, discovery=DiscoveryConfig(mdns=False), relay=RelayConfig(hop=True)
        )
        relay = await stack.enter_async_context(open_overlay(Keypair.generate(), hop))
        peer = await stack.enter_async_context(open_overlay(Keypair.generate(), relay_config()))
        await relay.host.connect(peer.host.listen_addrs()[0])
        await wait_until(lambda: relay.reachability() == "unreachable", 10, "the verdict")
        assert not relay.relay.relayed_addrs()


async def test_two_unreachable_nodes_make_their_relayed_connection_direct() -> None:
    """DCUtR's first step on loopback: each side dials the other's direct addresses
    (127.0.0.2 and .3 answer locally), and the relayed connection is closed."""
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_overlay(Keypair.generate(), relay_config()))
        there = relay.host.listen_addrs()[0]
        a, b = [
            await stack.enter_async_context(open_overlay(Keypair.generate(), behind_nat(ip, there)))
            for ip in ("127.0.0.2", "127.0.0.3")
        ]
        for node in (a, b):
            await wait_until(lambda n=node: n.reachability() == "relayed", 15, "relayed")
        # On loopback every address answers, so a DHT lookup may already have
        # connected them directly: start from a relayed connection only.
        await b.host.disconnect(a.peer_id)
        await wait_until(lambda: a.peer_id not in b.host.connected_peers(), 10, "no connection")
        await b.host.connect(a.host.listen_addrs()[0])
        assert b.host.is_relayed(a.peer_id)
        made = lambda: a.relay.status()["made_direct"] + b.relay.status()["made_direct"]  # noqa: E731
        await wait_until(lambda: made() >= 1, 15, "a direct connection")
        assert not b.host.is_relayed(a.peer_id)
        await wait_until(
            lambda: all("/p2p-circuit" not in c for c in _conn_addrs(b, a.peer_id)),
            10,
            "the relayed connection closed",
        )
        assert await b.host.ping(a.peer_id, 1)  # and the direct one carries streams


def _conn_addrs(node, peer: str) -> list[str]:
    from libp2p.peer.id import ID

    conns = node.host.libp2p.get_network().connections.get(ID.from_base58(peer)) or []
    return [str(x) for c in conns for x in c.get_transport_addresses()]
