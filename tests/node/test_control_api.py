"""The control API of an in-process Node, through the real HTTP client."""

import json
import re
import socket

import pytest
import trio
from fastapi.routing import APIRoute

from mercato.node import Config, ControlClient, ControlError, DaemonNotRunning, DataDir, Node
from mercato.node.control.routes import ROUTERS
from mercato.settlement import TEST_MINT, TOKEN_AIRDROP


def loopback_config() -> Config:
    """Loopback only, any free ports, no mDNS: tests must not touch the LAN."""
    return (
        Config().replace("api", port=0).replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False)
    )


async def call(fn, *args):
    """The client blocks, so it runs in a thread, as any outside caller would."""
    return await trio.to_thread.run_sync(fn, *args)


def raw_request(datadir: DataDir, data: bytes) -> tuple[int, bytes]:
    info = json.loads(datadir.api_file.read_text())
    with socket.create_connection((info["host"], info["port"]), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    return int(reply.split(b" ", 2)[1]), reply


async def test_status_answers_with_the_node_identity(node: Node) -> None:
    client = ControlClient(node.datadir)
    status = await call(client.status)
    assert status["peer_id"].startswith("12D3KooW")
    assert status["data_dir"] == str(node.datadir.root)
    assert status["services"] == [
        "store",
        "p2p",
        "registry",
        "builds",
        "runtime",
        "settlement",
        "commerce",
        "tasks",
        "models",
        "control-api",
    ]
    assert status["p2p"]["listen_addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert status["accounts"] == ["default"]
    assert status["events"]["count"] >= 4


async def test_requests_without_the_right_token_get_401(node: Node) -> None:
    client = ControlClient(node.datadir)
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("GET", "/v1/status", auth=False))
    assert err.value.status == 401
    node.datadir.token_file.write_text("wrong-token\n")
    with pytest.raises(ControlError) as err:
        await call(client.status)
    assert err.value.status == 401 and str(node.datadir.token_file) in str(err.value)
    health = await call(client.health)  # health needs no token
    assert health["status"] == "ok"


async def test_an_oversized_body_gets_413_and_changes_nothing(node: Node) -> None:
    client = ControlClient(node.datadir)
    before = await call(client.keys_list)
    name = "a" * 10
    body = json.dumps({"name": name, "pad": "x" * (2 * node.config.api.max_body_bytes)})
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("POST", "/v1/keys", json.loads(body)))
    assert err.value.status == 413
    assert await call(client.keys_list) == before


async def test_an_oversized_chunked_body_without_length_gets_413(node: Node) -> None:
    token = node.datadir.token_file.read_text().strip()
    size = node.config.api.max_body_bytes + 10
    chunk = b"x" * size
    request = (
        b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: Bearer {token}\r\n\r\n".encode()
        + f"{size:x}\r\n".encode()
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    status, _ = await call(raw_request, node.datadir, request)
    assert status == 413


async def test_garbage_gets_400_and_the_node_keeps_serving(node: Node) -> None:
    status, _ = await call(raw_request, node.datadir, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert status == 400
    assert (await call(ControlClient(node.datadir).health))["status"] == "ok"


async def test_keys_are_created_once_with_clear_errors(node: Node) -> None:
    client = ControlClient(node.datadir)
    key = await call(client.keys_new, "alice")
    assert key["name"] == "alice" and len(key["address"]) >= 32
    with pytest.raises(ControlError) as err:
        await call(client.keys_new, "alice")
    assert err.value.status == 409
    with pytest.raises(ControlError) as err:
        await call(client.keys_new, "Not Valid")
    assert err.value.status == 400 and "invalid account name" in str(err.value)
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("POST", "/v1/keys", ["alice"]))
    assert err.value.status == 400
    with pytest.raises(ControlError) as err:
        await call(client.keys_show, "nobody")
    assert err.value.status == 404
    with pytest.raises(ControlError) as err:
        await call(client.keys_show, "..%2F..%2Fetc")
    assert err.value.status == 400
    shown = await call(client.keys_show, "alice")
    assert shown == key
    kinds = [e["kind"] for e in (await call(client.events, 0, 1000))["events"]]
    assert kinds.count("key.created") == 3  # node, default, alice: each once


async def test_events_page_forward(node: Node) -> None:
    client = ControlClient(node.datadir)
    for name in ("a1", "a2", "a3"):
        await call(client.keys_new, name)
    first = await call(client.events, 0, 2)
    assert [e["seq"] for e in first["events"]] == [1, 2]
    second = await call(client.events, first["next"], 1000)
    assert second["events"][0]["seq"] == 3
    only = await call(client.events, 0, 1000, "key.created")
    assert {e["kind"] for e in only["events"]} == {"key.created"}
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("GET", "/v1/events?limit=lots"))
    assert err.value.status == 400
    assert (await call(client.events_verify))["ok"] is True


async def test_unknown_routes_and_methods(node: Node) -> None:
    client = ControlClient(node.datadir)
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("GET", "/v1/nothing"))
    assert err.value.status == 404
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("DELETE", "/v1/keys"))
    assert err.value.status == 405


async def test_metrics_are_prometheus_text(node: Node) -> None:
    client = ControlClient(node.datadir)
    await call(client.status)
    text = await call(client.metrics)
    assert 'mercato_build_info{version="' in text
    assert 'mercato_api_requests_total{route="/v1/status",status="200"}' in text
    assert "process_resident_memory_bytes" in text


def routed() -> set[tuple[str, str]]:
    """(method, path) of every route the control API's app includes."""
    return {
        (method, route.path.replace(":path}", "}"))
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


async def test_the_openapi_document_describes_every_route_and_nothing_else(node: Node) -> None:
    client = ControlClient(node.datadir)
    served = await call(lambda: client.request("GET", "/openapi.json", auth=False))
    assert served["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert described == routed()
    # Every described GET without path parameters is routed (not 404/405); one
    # that needs query parameters answers 400 without them.
    for method, path in described:
        if method == "GET" and "{" not in path:
            try:
                assert await call(lambda p=path: client.request("GET", p, raw=True))
            except ControlError as exc:
                assert exc.status == 400, f"GET {path}: {exc}"
    docs = await call(lambda: client.request("GET", "/docs", auth=False, raw=True))
    assert "/openapi.json" in docs and "https://" not in docs  # nothing from a CDN
    assets = re.findall(r'"(/docs/[^"]+)"', docs)
    assert len(assets) == 2  # Swagger UI's script and style, served by the node
    for asset in assets:
        assert (
            len(await call(lambda a=asset: client.request("GET", a, auth=False, raw=True))) > 1000
        )


async def test_shutdown_answers_then_the_node_stops(initialized: DataDir) -> None:
    running = Node(initialized, loopback_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(running.run)
        answer = await call(ControlClient(initialized).shutdown)
        assert answer == {"status": "stopping"}
    assert not initialized.api_file.exists()
    with pytest.raises(DaemonNotRunning):
        await call(ControlClient(initialized).health)


async def test_peers_and_ping_answer_and_refuse_bad_peers(node: Node, initialized: DataDir) -> None:
    client = ControlClient(node.datadir)
    assert (await call(client.peers)) == {"peers": [], "banned": []}
    with pytest.raises(ControlError) as err:
        await call(client.ping, "not a peer!")
    assert err.value.status == 400
    with pytest.raises(ControlError) as err:
        await call(client.ping, "12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG")
    assert err.value.status == 502  # well-formed, but nobody is there
    with pytest.raises(ControlError) as err:
        await call(
            client.connect,
            "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG",
        )
    assert err.value.status == 502
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("POST", "/v1/ping", {"peer": 5}))
    assert err.value.status == 400


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/registry/publish", {"listing": ["not", "a", "table"]}),
        ("/v1/registry/publish", {"account": 5, "listing": {}}),
        ("/v1/registry/release", {}),
        ("/v1/registry/deprecate", {"name": {"nested": True}}),
    ],
)
async def test_registry_writes_refuse_malformed_bodies(node: Node, path: str, body: dict) -> None:
    client = ControlClient(node.datadir)
    with pytest.raises(ControlError) as err:
        await call(lambda: client.request("POST", path, body))
    assert err.value.status == 400 and err.value.code == "bad_body"


async def test_task_routes_refuse_bad_input_with_clear_errors(node: Node) -> None:
    client = ControlClient(node.datadir)
    refusals = [
        (client.run_task, ("nobody/nothing", "*", b"x"), "no agent nobody/nothing", 404),
        (client.run_task, ("no-slash", "*", b"x"), "PUBLISHER/NAME", 400),
        (client.run_task, ("a/b", "not a range", b"x"), "range", 400),
        (client.tasks, (10, "nobody"), "role", 400),
        (client.task, ("zz",), "32 hex digits", 400),
        (client.task, ("0" * 32,), "no task", 404),
        (client.providers, ("no-slash",), "PUBLISHER/NAME", 400),
    ]
    for fn, args, says, status in refusals:
        with pytest.raises(ControlError, match=says) as refused:
            await call(fn, *args)
        assert refused.value.status == status
    bad_price = {"agent": "a/b", "max_price": -1}
    with pytest.raises(ControlError, match="max_price"):
        await call(client.request, "POST", "/v1/tasks/run", bad_price)
    assert (await call(client.tasks))["tasks"] == []  # nothing ran, nothing recorded


async def test_the_wallet_is_the_account_key_funded_on_the_embedded_ledger(node: Node) -> None:
    client = ControlClient(node.datadir)
    wallet = await call(client.wallet)
    account = await call(client.request, "GET", "/v1/keys/default")
    assert wallet["address"] == account["address"]
    assert (wallet["ledger"], wallet["balance"]) == ("embedded", 10_000_000_000)
    # With 1,000 tokens of the ledger's test mint (x402), the faucet paying their account.
    test_tokens = {"mint": str(TEST_MINT), "amount": TOKEN_AIRDROP, "decimals": 6}
    assert wallet["tokens"] == [test_tokens]
    assert (await call(client.channels))["channels"] == []


async def test_channel_and_wallet_routes_refuse_bad_input_and_change_nothing(node: Node) -> None:
    client = ControlClient(node.datadir)
    peer = node.overlay.peer_id  # a real peer id (this node's own)
    other = "11111111111111111111111111111111"  # a valid Solana address
    refusals = [
        (client.channel_open, ("not a peer", 10**8, 86_400, other), "peer id", 400),
        (client.channel_open, (peer, 0, 86_400, other), "deposit_lamports", 400),
        (client.channel_open, (peer, 10**8, 60, other), "duration_s", 400),
        (client.channel_open, (peer, 10**8, 7_200, other), "at least", 409),
        (client.channel_open, (peer, 10**8, 86_400, "xyz"), "base58", 400),
        (client.channel_open, (peer, 10**8, 86_400), "agent card", 404),
        (client.channel_open, (peer, 10**8, 86_400, node.settlement.address), "own", 409),
        (client.channel, ("nope",), "no channel", 404),
        (client.channel_close, ("nope",), "no channel", 404),
        (client.channel_refund, ("nope",), "no channel", 404),
        (client.airdrop, (0,), "lamports", 400),
        (client.airdrop, (10**30,), "lamports", 400),
    ]
    for fn, args, says, status in refusals:
        with pytest.raises(ControlError, match=says) as refused:
            await call(fn, *args)
        assert refused.value.status == status, (args, refused.value)
    assert (await call(client.channels))["channels"] == []
    wallet = await call(client.wallet)
    assert wallet["balance"] == 10_000_000_000  # nothing spent
    granted = await call(client.airdrop, 5 * 10**8)
    assert granted["balance"] == wallet["balance"] + 5 * 10**8 and granted["signature"]
    assert granted["tokens"][0]["amount"] == wallet["tokens"][0]["amount"] + TOKEN_AIRDROP


TINY_MODEL = {
    "family": "llama",
    "parameters": 1_200_000,
    "quantisation": "F16",
    "context_length": 4096,
    "input_price": 100,
    "output_price": 300,
}


async def test_a_model_listing_releases_without_a_build_and_an_agent_cannot(node: Node) -> None:
    client = ControlClient(node.datadir)
    tiny = {"name": "tiny-chat", "kind": "model", "title": "Tiny chat",
            "summary": "A tiny test model", "royalty_bps": 500, "model": TINY_MODEL}  # fmt: skip
    published = await call(client.publish, tiny)
    assert published["model"] == {**TINY_MODEL, "weights": ""} and published["price"] == 0
    released = await call(client.release, {"name": "tiny-chat", "version": "1.0.0"})
    assert released["releases"] == [
        {"name": "tiny-chat", "version": "1.0.0", "cid": "", "size": 0, "dependencies": {}}
    ]
    shown = await node.api.registry.show(published["publisher"], "tiny-chat")  # in process
    assert shown.model is not None and shown.model.output_price == 300
    (found,) = (await call(lambda: client.search(kind="model")))["results"]
    assert found["kind"] == "model" and found["model"] == published["model"]
    echo = {"name": "echo", "kind": "agent", "title": "Echo", "summary": "Says it back.",
            "price": 0, "royalty_bps": 0}  # fmt: skip
    assert (await call(client.publish, echo))["model"] is None
    with pytest.raises(ControlError) as err:
        await call(client.release, {"name": "echo", "version": "1.0.0"})
    assert err.value.status == 400 and err.value.code == "invalid_listing"
    assert "'cid'" in str(err.value) and "an agent's release names its build" in str(err.value)
    with pytest.raises(ControlError) as err:
        await call(client.publish, {**tiny, "price": 5})
    assert err.value.status == 400 and "set [model] input_price and output_price" in str(err.value)


def test_the_effective_config_shows_served_models_without_secrets() -> None:
    """NodeOps reads only the node's config here: a fake node holding just that."""
    from types import SimpleNamespace

    from mercato.node._config import ServedModel
    from mercato.node.control._api import NodeOps

    served = ServedModel(
        name="tiny",
        listing="8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/tiny-chat",
        backend="https://user:secret@engine.example:8443/v1?token=secret",
        api_key_env="ENGINE_KEY",
    )
    text = NodeOps(SimpleNamespace(config=Config(models=(served,)))).config_text()  # type: ignore[arg-type]
    table = text.split("[models.tiny]\n", 1)[1]
    assert 'backend = "https://engine.example:8443/v1"\n' in table and "secret" not in text
    assert 'engine_model = "tiny-chat"' in table and 'api_key_env = "ENGINE_KEY"' in table
    assert "# input_price: not set" in table
