"""`GET /v1/registry/digest`: nodes holding the same signed updates show the same
fingerprint, and one update more changes it (what scripts/chaos.py compares)."""

from pathlib import Path

import trio

from mercato.node import ControlClient

from ..conftest import budget
from .test_registry_network import manifest, running_nodes


def digest(node) -> dict:
    return ControlClient(node.datadir, timeout=30).request("GET", "/v1/registry/digest")


async def test_the_digest_tells_converged_replicas_from_diverged_ones(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (a, b):
        empty = await trio.to_thread.run_sync(digest, a)
        assert empty == await trio.to_thread.run_sync(digest, b)
        assert empty["feeds"] == 0
        await a.registry.publish("default", manifest("one"))
        ahead = await trio.to_thread.run_sync(digest, a)
        assert ahead["feeds"] == 1 and ahead["digest"] != empty["digest"]
        await b.overlay.host.connect(a.overlay.host.listen_addrs()[0])
        with trio.fail_after(budget(30)):
            while True:  # anti-entropy pulls it within a sync interval
                if await trio.to_thread.run_sync(digest, b) == ahead:
                    break
                await trio.sleep(0.2)
        await b.registry.publish("default", manifest("two"))
        with trio.fail_after(budget(30)):
            while True:
                seen = [await trio.to_thread.run_sync(digest, n) for n in (a, b)]
                if seen[0] == seen[1]:
                    break
                await trio.sleep(0.2)
        assert seen[0]["feeds"] == 2 and seen[0]["digest"] != ahead["digest"]
