"""mcp: tool calls over streamable HTTP, as an AI agent's MCP client makes them.

Two nodes in this process on loopback: a provider serving the free `echo`
example, and a user whose registry holds 10,000 more listings (100
publishers). One client (the official SDK's, with the API token) on the user's
``/mcp``: ``search_listings`` with a word from the listings' vocabulary, then
``run_agent`` on echo, one call at a time. A run goes through the whole path:
the tool asks for a quote, then runs (the provider's sandbox, the signed
receipt checked, both task logs written). p50 over the calls after a warm-up.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ._nodes import running_nodes
from .registry import WORDS, _updates
from .task import ECHO, LISTING

LISTINGS = 10_000
SEARCHES = 200
RUNS = 100
WARM = 10


async def _run(root: Path) -> dict[str, Any]:
    async with running_nodes(root, 2) as (provider, user):
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        updates = _updates(LISTINGS, publishers=100)
        for i in range(0, LISTINGS, 500):
            await user.store.run(user.registry.replica.ingest_batch, updates[i : i + 500])
        shown = await provider.registry.publish("default", {**LISTING, "royalty_bps": 0})
        cid = (await provider.builds.add_file(ECHO)).cid
        release = {"name": "echo", "version": "1.0.0", "cid": cid, "size": ECHO.stat().st_size}
        await provider.registry.release("default", release)
        agent = f"{shown['publisher']}/echo"
        provider.tasks.serve_agents((agent,))
        with trio.fail_after(30):
            while True:
                known = await user.registry.show(shown["publisher"], "echo")
                if (known or {}).get("releases") and user.tasks.providers(agent):
                    break
                await trio.sleep(0.05)
        token = user.datadir.token_file.read_text().strip()
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        transport = streamable_http_client(f"{user.api_url}/mcp", http_client=http)
        async with http, Client(transport) as client:
            rng = random.Random(7)
            searches = await _timed(
                client, "search_listings", lambda: {"text": rng.choice(WORDS)}, SEARCHES
            )
            runs = await _timed(
                client, "run_agent", lambda: {"agent": agent, "input_text": "hello"}, RUNS
            )
    return {
        "listings": LISTINGS,
        "search_p50_ms": round(statistics.median(searches) * 1000, 2),
        "search_p99_ms": round(searches[int(0.99 * len(searches))] * 1000, 2),
        "run_p50_ms": round(statistics.median(runs) * 1000, 2),
        "run_p99_ms": round(runs[int(0.99 * len(runs))] * 1000, 2),
        "targets": {"search_p50_ms": 20, "run_p50_ms": 50},
    }


async def _timed(client: Client, tool: str, arguments: Any, count: int) -> list[float]:
    """Seconds per call (sorted), after WARM calls not counted."""
    times = []
    for i in range(WARM + count):
        started = time.perf_counter()
        result = await client.call_tool(tool, arguments())
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content}")
        if i >= WARM:
            times.append(time.perf_counter() - started)
    return sorted(times)


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-mcp-"))
    try:
        return trio.run(_run, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
