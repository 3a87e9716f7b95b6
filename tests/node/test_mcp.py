"""The MCP server, with the official SDK's client: over streamable HTTP at /mcp on a
real node, and over stdio by spawning `mercato mcp`."""

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mercato.node import DataDir, Node, init_data_dir

from ..conftest import budget
from .test_control_api import loopback_config

TOOLS = {
    "search_listings", "show_listing", "list_providers", "quote", "run_agent", "list_tasks",
    "get_task", "wallet", "publish_listing", "release_build", "deprecate_listing",
}  # fmt: skip


@asynccontextmanager
async def http_client(node: Node, **options) -> AsyncIterator[Client]:
    """The SDK's client on the node's /mcp, with the API token."""
    token = node.datadir.token_file.read_text().strip()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=budget(60))
    transport = streamable_http_client(f"{node.api_url}/mcp", http_client=http)
    async with http, Client(transport, **options) as client:
        yield client


def stdio_params(datadir: DataDir) -> StdioServerParameters:
    """`mercato mcp` as a desktop client would start it."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mercato.cli", "mcp", "--data-dir", str(datadir.root)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def text_of(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
async def node(initialized: DataDir) -> AsyncIterator[Node]:
    running = Node(initialized, loopback_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(running.run)
        yield running
        running.request_stop()


async def test_mcp_over_http_serves_every_tool_and_refuses_bad_input(node: Node) -> None:
    async with http_client(node) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        assert all(t.description and t.input_schema for t in tools.values())
        templates = {
            r.uri_template for r in (await client.list_resource_templates()).resource_templates
        }
        assert templates == {"mercato://listing/{publisher}/{name}", "mercato://task/{task_id}"}

        found = await client.call_tool("search_listings", {"text": "nothing here"})
        assert not found.is_error and found.structured_content["results"] == []
        mine = await client.call_tool(
            "publish_listing",
            {"manifest": {"name": "echo", "kind": "agent", "title": "Echo",
                          "summary": "Says it back.", "price": 0, "royalty_bps": 0}},
        )  # fmt: skip
        assert not mine.is_error, text_of(mine)
        publisher = mine.structured_content["publisher"]
        shown = await client.call_tool("show_listing", {"publisher": publisher, "name": "echo"})
        assert shown.structured_content["title"] == "Echo"
        page = await client.call_tool("search_listings", {"text": "echo"})
        assert [r["name"] for r in page.structured_content["results"]] == ["echo"]
        read = await client.read_resource(f"mercato://listing/{publisher}/echo")
        assert json.loads(read.contents[0].text)["name"] == "echo"

        # Bad input: an error a model can act on, and the server goes on.
        refusals = {
            ("show_listing", (("publisher", publisher), ("name", "nope"))): "no such listing",
            ("get_task", (("task_id", "xyz"),)): "32 hex digits",
            ("publish_listing", (("manifest", (("name", "Bad Name!"),)),)): "field 'kind'",
            ("run_agent", (("agent", "a/b"), ("input_text", "x"), ("input_base64", "eA=="))):
                "not both",
            ("run_agent", (("agent", "a/b"), ("input_base64", "%%%"))): "not valid base64",
            ("release_build", (("name", "echo"), ("version", "1.0.0"))): "build_path",
        }  # fmt: skip
        for (tool, args), words in refusals.items():
            arguments = {k: dict(v) if isinstance(v, tuple) else v for k, v in args}
            result = await client.call_tool(tool, arguments)
            assert result.is_error and words in text_of(result), (tool, text_of(result))
        missing = await client.call_tool("show_listing", {"publisher": publisher})
        assert missing.is_error and "name" in text_of(missing)
        typed = await client.call_tool("list_tasks", {"limit": "many"})
        assert typed.is_error
        unknown = await client.call_tool("no_such_tool", {})
        assert unknown.is_error
        assert (await client.call_tool("list_tasks", {})).structured_content["tasks"] == []


async def test_mcp_without_the_token_gets_401(node: Node) -> None:
    async with httpx2.AsyncClient() as http:
        answer = await http.post(
            f"{node.api_url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert answer.status_code == 401


@pytest.mark.slow
async def test_mcp_over_stdio_without_a_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path / "idle")
    await trio.to_thread.run_sync(init_data_dir, datadir)
    with trio.fail_after(budget(60)):
        async with Client(stdio_params(datadir)) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            result = await client.call_tool("search_listings", {"text": "x"})
    assert result.is_error and "mercato node start" in text_of(result)
