"""The overlay as a whole: many real hosts on loopback (slow; run alone with -m slow)."""

from collections import deque
from pathlib import Path

import pytest
import trio

from mercato.node import open_node_store
from mercato.node._peers import StoreAddressBook
from mercato.p2p import GossipConfig, Keypair, Verdict, make_record, open_overlay

from .conftest import overlay_config, wait_until

pytestmark = pytest.mark.slow
N = 20
TOPIC = "mercato/test/1"


def is_connected(nodes) -> bool:
    """True if the graph of connections reaches every node from the first."""
    ids = {n.peer_id: n for n in nodes}
    seen, todo = {nodes[0].peer_id}, deque([nodes[0]])
    while todo:
        for peer in todo.popleft().host.connected_peers():
            if peer in ids and peer not in seen:
                seen.add(peer)
                todo.append(ids[peer])
    return len(seen) == len(nodes)


async def test_twenty_nodes_form_one_overlay_that_gossips_and_looks_up(open_overlays) -> None:
    async with open_overlays(N) as nodes:
        assert is_connected(nodes)
        # Each joined through node 0 only; discovery dials the peers it learns of,
        # so no node stays a leaf of node 0 (one that node 0 prunes from its mesh
        # would hear messages only from node 0's occasional IHAVE).
        await wait_until(
            lambda: all(len(n.host.connected_peers()) >= 4 for n in nodes), 20, "peers beyond 0"
        )
        received: dict[str, list[bytes]] = {n.peer_id: [] for n in nodes}
        for node in nodes:

            async def handler(message, node=node) -> None:
                received[node.peer_id].append(message.data)

            await node.gossip.subscribe(TOPIC, handler)
        await wait_until(
            lambda: all(n.gossip.mesh_peers(TOPIC) for n in nodes), 20, "every node to have a mesh"
        )
        await nodes[7].gossip.publish(TOPIC, b"hello, network")
        others = [n for n in nodes if n is not nodes[7]]
        try:
            await wait_until(
                lambda: all(received[n.peer_id] == [b"hello, network"] for n in others),
                15,
                "the message to reach all nodes",
            )
        except AssertionError as exc:  # say who missed it, and how they were connected
            missed = {
                n.peer_id[-6:]: {
                    "got": received[n.peer_id],
                    "mesh": [p[-6:] for p in n.gossip.mesh_peers(TOPIC)],
                    "connected": len(n.host.connected_peers()),
                }
                for n in others
                if received[n.peer_id] != [b"hello, network"]
            }
            raise AssertionError(f"{exc}; missed by {missed}") from None

        owner = Keypair.generate()
        await nodes[3].dht.put(make_record(owner, "card", b"from node 3", ttl_s=60))
        for reader in (nodes[0], nodes[11], nodes[19]):
            record = await reader.dht.get(owner.address, "card")
            assert record is not None and record.data == b"from node 3"
        await nodes[5].dht.provide("agent:someone/echo")
        found = await nodes[17].dht.find_providers("agent:someone/echo")
        assert nodes[5].peer_id in [p.peer_id for p in found]

        # Meshes reshuffle (prune, graft) every heartbeat while they settle. Honest
        # nodes respect each other's backoff, so over the first heartbeats none
        # takes another for a GRAFT flood (penalties that cut a node off gossip).
        await trio.sleep(6 * GossipConfig().heartbeat_s)  # an observation window
        assert all(not n.gossip.graft_flood_penalties() for n in nodes)


async def test_a_restarted_node_rejoins_from_its_address_book(
    open_overlays, tmp_path: Path
) -> None:
    key = Keypair.generate()
    async with open_overlays(3) as others, open_node_store(tmp_path / "node.db") as store:
        book = StoreAddressBook(store)
        async with open_overlay(key, overlay_config(save_every_s=3600), book) as node:
            for other in others:
                await node.host.connect(other.host.listen_addrs()[0])
        # Closed: the book was saved on the way out. Restart with no bootstrap at all.
        assert len(await book.load()) == 3
        async with open_overlay(key, overlay_config(), book) as node:
            await wait_until(
                lambda: set(node.host.connected_peers()) >= {o.peer_id for o in others},
                10,
                "the restarted node to reconnect to its old peers",
            )


async def test_a_bootstrap_peer_that_appears_late_is_reached_with_backoff(open_overlays) -> None:
    async with open_overlays(1) as (bootstrap,):
        addr = bootstrap.host.listen_addrs()[0]
    # The bootstrap node is gone; a node that lists it keeps trying quietly.
    key = Keypair.generate()
    async with open_overlay(key, overlay_config(bootstrap=(addr,))) as node:
        await wait_until(lambda: node.discovery.bootstrap_status()[0].failures >= 1, 5, "a failure")
        assert not node.discovery.bootstrap_status()[0].connected


async def test_a_gossip_flooder_is_cut_off_and_the_rest_keep_working(open_overlays) -> None:
    async with open_overlays(3) as (victim, flooder, good):
        got: list[bytes] = []

        async def handler(message) -> None:
            got.append(message.data)

        async def validator(message) -> Verdict:
            return Verdict.REJECT if message.data.startswith(b"bad") else Verdict.ACCEPT

        victim.gossip._config = victim.gossip._config.__class__(origin_rate_per_s=5, origin_burst=5)
        for node in (victim, flooder, good):
            await node.gossip.subscribe(TOPIC, handler if node is victim else _ignore, validator)
        await wait_until(lambda: flooder.peer_id in victim.gossip.mesh_peers(TOPIC), 10, "a mesh")
        with trio.move_on_after(20):
            i = 0
            while not victim.host.is_banned(flooder.peer_id):
                await flooder.gossip.publish(TOPIC, b"flood %d" % i)
                i += 1
                if i % 20 == 0:
                    await trio.sleep(0.01)
        assert victim.host.is_banned(flooder.peer_id)
        await wait_until(
            lambda: flooder.peer_id not in victim.host.connected_peers(), 5, "disconnect"
        )
        before = len(got)
        await good.gossip.publish(TOPIC, b"from a good peer")
        await wait_until(lambda: b"from a good peer" in got[before:], 10, "the good message")


async def _ignore(message) -> None:
    pass


async def test_nodes_on_one_lan_find_each_other_by_mdns() -> None:
    config = overlay_config()
    config = config.__class__(host=config.host, discovery=config.discovery.__class__(mdns=True))
    async with (
        open_overlay(Keypair.generate(), config) as a,
        open_overlay(Keypair.generate(), config) as b,
    ):
        await wait_until(lambda: b.peer_id in a.host.connected_peers(), 15, "mDNS discovery")


async def test_a_node_that_does_not_listen_still_dials_out(open_overlays) -> None:
    from mercato.p2p import DhtConfig, DiscoveryConfig, HostConfig, OverlayConfig

    config = OverlayConfig(
        host=HostConfig(listen=()),
        dht=DhtConfig(mode="client"),
        discovery=DiscoveryConfig(mdns=False),
    )
    async with open_overlays(1) as (server,), open_overlay(Keypair.generate(), config) as client:
        assert client.host.listen_addrs() == []
        peer = await client.host.connect(server.host.listen_addrs()[0])
        assert len(await client.host.ping(peer, count=1)) == 1
        assert (await client.info(peer)).agent == "mercato"


async def test_a_node_restarts_at_once_on_the_same_fixed_port() -> None:
    import socket

    from mercato.p2p import DiscoveryConfig, HostConfig, OverlayConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = OverlayConfig(
        host=HostConfig(listen=(f"/ip4/127.0.0.1/tcp/{port}",)),
        discovery=DiscoveryConfig(mdns=False),
    )
    key = Keypair.generate()
    async with open_overlay(Keypair.generate(), overlay_config()) as other:
        async with open_overlay(key, config) as node:
            await other.host.connect(node.host.listen_addrs()[0])  # leaves TIME_WAIT behind
        async with open_overlay(key, config) as node:
            assert node.host.listen_addrs()[0].startswith(f"/ip4/127.0.0.1/tcp/{port}/")


async def test_a_peer_whose_identify_failed_is_identified_again(open_overlays) -> None:
    from libp2p.peer.id import ID

    async with open_overlays(2) as (a, b):
        peer = b.host.peer_id
        await wait_until(lambda: a.host.protocols_of(peer), 10, "the first identify")
        # What a failed identify leaves behind: a connection with no known protocols.
        a.host.libp2p.get_peerstore().set_protocols(ID.from_base58(peer), [])
        assert a.host.protocols_of(peer) == []
        await wait_until(
            lambda: any("/meshsub/" in p for p in a.host.protocols_of(peer)), 10, "re-identify"
        )
        assert peer in a.host.connected_peers()


async def test_a_protocol_served_after_connecting_is_announced_to_peers(open_overlays) -> None:
    async with open_overlays(2) as (a, b):
        peer = b.host.peer_id
        await wait_until(lambda: a.host.protocols_of(peer), 10, "the first identify")
        assert "/mercato/test/late/1.0.0" not in a.host.protocols_of(peer)

        async def handler(peer_id, stream) -> None:
            await stream.close()

        b.host.set_stream_handler("/mercato/test/late/1.0.0", handler)
        await wait_until(
            lambda: "/mercato/test/late/1.0.0" in a.host.protocols_of(peer), 10, "the push"
        )
