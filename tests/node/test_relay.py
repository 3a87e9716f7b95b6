"""A relay node and two full nodes behind "NAT" (on loopback: nodes that listen on no
socket at all, so no direct dial can reach them). They find each other through the
relay, exchange registry updates, and one runs a task on the other through it."""

import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from mercato.node import Config, DataDir, Node, NotServed, init_data_dir

from .test_tasks import serve_an_agent, until

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


def config(**p2p) -> Config:
    return (
        Config()
        .replace("api", port=0)
        .replace("p2p", mdns=False, target_peers=4, **p2p)
        .replace("serve", heartbeat_s=0.5, card_ttl_s=5.0)
    )


async def start(stack: AsyncExitStack, nursery: trio.Nursery, root: Path, cfg: Config) -> Node:
    datadir = DataDir(root)
    await trio.to_thread.run_sync(init_data_dir, datadir)
    node = Node(datadir, cfg)
    await nursery.start(node.run)
    stack.callback(node.request_stop)
    return node


@pytest.mark.slow
async def test_private_nodes_trade_through_a_relay_that_runs_nothing_itself(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        relay = await start(
            stack,
            nursery,
            tmp_path / "relay",
            config(listen=LOOPBACK).replace("node", role="relay"),
        )
        there = relay.overlay.host.listen_addrs()[0]
        behind_nat = config(listen=(), private=True, bootstrap=(there,))
        provider = await start(stack, nursery, tmp_path / "provider", behind_nat)
        user = await start(stack, nursery, tmp_path / "user", behind_nat)

        # Each reserves on the relay and advertises only its relayed address.
        for node in (provider, user):

            async def reserved(n: Node = node) -> bool:
                return bool(n.overlay.relay.relayed_addrs())

            await until(reserved, 15, "a reservation on the relay")
            status = (await node.api.node.status()).p2p
            assert status["reachability"] == "relayed"
            assert status["listen_addrs"] == [f"{there}/p2p-circuit/p2p/{node.overlay.peer_id}"]

        async def verified() -> bool:  # its clients dialed its address back
            return (await relay.api.node.status()).p2p["reachability"] == "public"

        await until(verified, 15, "the relay found public")
        assert (await relay.api.node.status()).p2p["relay"]["hop"]

        # The provider publishes and serves an agent; its listing and card reach the user
        # through the relay (the only peer either of them can dial).
        agent = await serve_an_agent(provider, user)
        card = user.tasks.providers(agent)[0]
        assert all("/p2p-circuit/" in a for a in card["addrs"])

        done = await user.tasks.run_task(agent, "*", b"one two three four")
        assert json.loads(done["output"])["words"] == 4
        assert done["provider"] == provider.overlay.peer_id
        # The relay ran nothing and holds no build: it has neither service.
        with pytest.raises(NotServed):
            relay.tasks  # noqa: B018
        with pytest.raises(NotServed):
            relay.builds  # noqa: B018
        assert "tasks" not in relay.services and "runtime" not in relay.services


async def test_a_node_its_peers_cannot_dial_back_reserves_on_its_bootstrap_relay(
    tmp_path: Path,
) -> None:
    """Not `private`: the node finds out. It listens on 127.0.0.2 but dials from
    127.0.0.1, like a node behind NAT, so the relay's dial-back finds nothing."""
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        hop = config(listen=LOOPBACK).replace("node", role="relay")
        relay = await start(stack, nursery, tmp_path / "relay", hop)
        there = relay.overlay.host.listen_addrs()[0]
        natted = await start(
            stack,
            nursery,
            tmp_path / "natted",
            config(listen=("/ip4/127.0.0.2/tcp/0",), bootstrap=(there,)),
        )

        async def relayed() -> bool:
            return (await natted.api.node.status()).p2p["reachability"] == "relayed"

        try:
            await until(relayed, 15, "the node relayed after its check")
        except AssertionError as exc:  # say what it concluded, and from whom
            p2p = (await natted.api.node.status()).p2p
            seen = {k: p2p[k] for k in ("reachability", "dialback", "relay", "peers")}
            raise AssertionError(f"{exc}; {seen}") from None
        p2p = (await natted.api.node.status()).p2p
        assert p2p["dialback"]["state"] == "unreachable"
        assert p2p["dialback"]["observed"] == ["127.0.0.1"]
        assert p2p["relay"]["reservations"] == [there]
        # Its relayed address comes first: dialers try the first few.
        assert p2p["listen_addrs"][0] == f"{there}/p2p-circuit/p2p/{natted.overlay.peer_id}"
