"""The gossip mesh stays within its bounds while nodes join."""

from contextlib import AsyncExitStack
from dataclasses import replace

from mercato.p2p import GossipConfig, Keypair, open_overlay

from .conftest import overlay_config, wait_until

TOPIC = "mercato/test/mesh"


async def _ignore(message) -> None:
    pass


async def test_a_node_with_a_full_mesh_refuses_a_graft() -> None:
    # The victim keeps at most 2 mesh peers; three peers join it and a fourth,
    # grafting every peer it knows (the default degree of 6), is refused with a
    # PRUNE instead of being taken in and pruned (or not) at a later heartbeat.
    small = GossipConfig(degree=2, degree_low=1, degree_high=2)
    async with AsyncExitStack() as stack:
        victim = await stack.enter_async_context(
            open_overlay(Keypair.generate(), replace(overlay_config(), gossip=small))
        )
        others = [
            await stack.enter_async_context(open_overlay(Keypair.generate(), overlay_config()))
            for _ in range(4)
        ]
        honest, newcomer = others[:3], others[3]
        await victim.gossip.subscribe(TOPIC, _ignore)
        for node in honest:
            await node.host.connect(victim.host.listen_addrs()[0])
            await wait_until(
                lambda node=node: victim.peer_id in node.gossip.topic_peers(TOPIC),
                10,
                "the victim's subscription",
            )
            await node.gossip.subscribe(TOPIC, _ignore)
        await wait_until(lambda: len(victim.gossip.mesh_peers(TOPIC)) == 2, 10, "a full mesh")

        await newcomer.host.connect(victim.host.listen_addrs()[0])
        await wait_until(
            lambda: victim.peer_id in newcomer.gossip.topic_peers(TOPIC),
            10,
            "the victim's subscription",
        )
        await newcomer.gossip.subscribe(TOPIC, _ignore)  # grafts up to 6: the victim too
        await wait_until(
            lambda: victim.peer_id not in newcomer.gossip.mesh_peers(TOPIC), 10, "a PRUNE"
        )
        assert newcomer.peer_id not in victim.gossip.mesh_peers(TOPIC)
        assert len(victim.gossip.mesh_peers(TOPIC)) <= 2
