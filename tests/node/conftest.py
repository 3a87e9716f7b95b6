"""Fixtures of the node's tests."""

from collections.abc import AsyncIterator

import pytest
import trio

from mercato.node import DataDir, Node

from .test_control_api import loopback_config


@pytest.fixture
async def node(initialized: DataDir) -> AsyncIterator[Node]:
    """One node in this process on loopback, stopped after the test."""
    running = Node(initialized, loopback_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(running.run)
        yield running
        running.request_stop()
