"""A publisher's key on two nodes (a second device, a backup restored): real nodes
see the fork, settle on one history, and the entries of the other are not lost."""

import shutil
from pathlib import Path

import pytest
import trio

from mercato.node import Node
from mercato.node._events import list_events

from ..conftest import budget
from .test_registry_network import manifest, running_nodes

pytestmark = pytest.mark.slow


def same_key(source: Node, target: Node) -> None:
    """Give ``target`` the default account key of ``source`` (a restored backup)."""
    for node in (source, target):
        assert (node.datadir.accounts_dir / "default.key").exists()
    shutil.copy(
        source.datadir.accounts_dir / "default.key", target.datadir.accounts_dir / "default.key"
    )


async def names(node: Node, publisher: str) -> set[str]:
    def listed() -> set[str]:
        feed = node.registry.replica.registry.feeds.get(publisher)
        return set(feed.listing_names()) if feed else set()

    return await node.store.run(listed)


async def heads(node: Node, publisher: str) -> tuple[bytes, bytes] | None:
    return (await node.store.run(node.registry.replica.heads)).get(publisher)


async def events(node: Node, kind: str) -> list:
    return await node.store.run(lambda: list_events(node.store.db, kind=kind))


async def test_a_key_restored_offline_forks_its_feed_and_the_network_heals_it(
    tmp_path: Path,
) -> None:
    async with running_nodes(tmp_path, 3) as (laptop, restored, watcher):
        same_key(laptop, restored)
        await watcher.overlay.host.connect(laptop.overlay.host.listen_addrs()[0])
        publisher = (await laptop.registry.publish("default", manifest("alpha")))["publisher"]
        # The restored node is alone: it has nothing to catch up from, and writes
        # the feed's first update again, with other content.
        shown = await restored.registry.publish("default", manifest("betas"))
        assert shown["publisher"] == publisher
        assert await heads(restored, publisher) != await heads(laptop, publisher)
        await restored.overlay.host.connect(laptop.overlay.host.listen_addrs()[0])
        with trio.fail_after(budget(60)):
            while True:
                now = [await heads(n, publisher) for n in (laptop, restored, watcher)]
                everywhere = [await names(n, publisher) for n in (laptop, restored, watcher)]
                if now[0] == now[1] == now[2] and all(e == {"alpha", "betas"} for e in everywhere):
                    break
                await trio.sleep(0.1)
        # The fork is on record as the publisher's, where it was seen.
        seen = [await events(n, "registry.fork") for n in (laptop, restored, watcher)]
        assert any(seen)
        assert all(e.data["publisher"] == publisher for found in seen for e in found)


async def test_a_restored_key_fetches_its_feed_before_it_writes(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (laptop, restored):
        same_key(laptop, restored)
        publisher = (await laptop.registry.publish("default", manifest("alpha")))["publisher"]
        await laptop.registry.publish("default", manifest("gamma"))
        await restored.overlay.host.connect(laptop.overlay.host.listen_addrs()[0])
        # Its first write comes at once: before it, the node fetches the feed.
        await restored.registry.publish("default", manifest("betas"))
        assert await names(restored, publisher) == {"alpha", "gamma", "betas"}
        with trio.fail_after(budget(30)):
            while True:
                if await heads(laptop, publisher) == await heads(restored, publisher):
                    break
                await trio.sleep(0.1)
        assert await names(laptop, publisher) == {"alpha", "gamma", "betas"}
        for node in (laptop, restored):
            assert await events(node, "registry.fork") == []
            assert await events(node, "registry.equivocation") == []
