"""Real overlays on 127.0.0.1 in one trio process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from mercato.p2p import DiscoveryConfig, HostConfig, Keypair, Overlay, OverlayConfig, open_overlay

LOOPBACK = HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))


def overlay_config(**discovery: Any) -> OverlayConfig:
    return OverlayConfig(host=LOOPBACK, discovery=DiscoveryConfig(mdns=False, **discovery))


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``condition``; fail naming ``what`` after ``within`` seconds.

    Polling, because py-libp2p offers no event for most of what tests wait on
    (a mesh formed, a peer dropped).
    """
    with trio.move_on_after(within):
        while not condition():  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {within} s waiting for {what}")


@asynccontextmanager
async def overlays(
    n: int, connect_to_first: bool = True, **discovery: Any
) -> AsyncIterator[list[Overlay]]:
    """``n`` overlays, each after the first dialing the first (a star to start from)."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_overlay(Keypair.generate(), overlay_config(**discovery))
            )
            for _ in range(n)
        ]
        if connect_to_first:
            for node in nodes[1:]:
                await node.host.connect(nodes[0].host.listen_addrs()[0])
        yield nodes


@pytest.fixture
def open_overlays():
    return overlays
