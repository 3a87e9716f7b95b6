"""Publishing and searching through real daemons, as creators and users do."""

import json
import textwrap
from pathlib import Path

import pytest

from mercato.node import DataDir

from ..conftest import run_cli, wait_for

MANIFEST = textwrap.dedent(
    """
    name = "wordcount"
    kind = "agent"
    title = "Word count"
    summary = "Counts words, lines and bytes of a text."
    tags = ["text"]
    capabilities = ["text.stats"]
    price = 1000
    royalty_bps = 500
    """
)


def cli(datadir: DataDir, *args: str):
    return run_cli(*args, "--data-dir", str(datadir.root))


def search_names(datadir: DataDir, *args: str) -> list[str]:
    result = cli(datadir, "search", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [r["name"] for r in json.loads(result.stdout)["results"]]


def test_publish_release_search_show_deprecate(tmp_path, datadir: DataDir, start_daemon) -> None:
    start_daemon(datadir)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST)
    published = cli(datadir, "publish", str(manifest), "--set", "price=2000", "--json")
    assert published.returncode == 0, published.stderr
    listing = json.loads(published.stdout)
    assert listing["price"] == 2000
    ref = f"{listing['publisher']}/wordcount"
    assert (
        cli(
            datadir, "release", "wordcount", "1.0.0", "--cid", "b3-" + "a" * 20, "--size", "77"
        ).returncode
        == 0
    )
    assert search_names(datadir, "word") == ["wordcount"]
    assert search_names(datadir, "--capability", "text.stats", "--max-price", "2000") == [
        "wordcount"
    ]
    assert search_names(datadir, "--max-price", "1999") == []
    shown = json.loads(cli(datadir, "show", ref, "--json").stdout)
    assert [r["version"] for r in shown["releases"]] == ["1.0.0"]
    assert cli(datadir, "deprecate", "wordcount").returncode == 0
    assert search_names(datadir, "word") == []
    events = cli(datadir, "events", "--kind", "registry.published").stdout
    assert "wordcount" in events


def test_bad_manifests_and_searches_are_clear_errors(
    tmp_path, datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST.replace("price = 1000", "price = -5"))
    bad = cli(datadir, "publish", str(manifest))
    assert bad.returncode == 1 and "field 'price'" in bad.stderr and "Traceback" not in bad.stderr
    assert cli(datadir, "publish", str(tmp_path / "missing.toml")).returncode == 2
    release = cli(datadir, "release", "ghost", "1.0.0", "--cid", "b3-" + "a" * 20, "--size", "1")
    assert release.returncode == 1 and "before releasing" in release.stderr
    assert cli(datadir, "search", "--sort", "popular").returncode == 2
    unnamed = cli(datadir, "show", "not-a-ref")  # a name no listing has
    assert unnamed.returncode == 2 and "no listing is named 'not-a-ref'" in unnamed.stderr


MODEL_MANIFEST = textwrap.dedent(
    """
    name = "tiny-chat"
    kind = "model"
    title = "Tiny chat"
    summary = "A tiny test model"
    royalty_bps = 500
    license = "MIT"

    [model]
    family = "llama"
    parameters = 1_200_000
    quantisation = "F16"
    context_length = 4096
    input_price = 100
    output_price = 300
    """
)


def test_a_model_is_released_without_a_build_and_shown_with_its_token_prices(
    tmp_path, datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MODEL_MANIFEST)
    published = cli(datadir, "publish", str(manifest), "--json")
    assert published.returncode == 0, published.stderr
    ref = f"{json.loads(published.stdout)['publisher']}/tiny-chat"
    released = cli(datadir, "release", "tiny-chat", "1.0.0")
    assert released.returncode == 0, released.stderr
    shown = cli(datadir, "show", ref)
    assert shown.returncode == 0, shown.stderr
    for words in ("(model)", "model llama, 1,200,000 parameters, F16, context 4,096 tokens",
                  "price per 1,000 tokens: input 100 lamports, output 300 lamports",
                  "royalty 5%", "1.0.0        (no build)"):  # fmt: skip
        assert words in shown.stdout, (words, shown.stdout)
    assert "price 0 lamports" not in shown.stdout
    found = cli(datadir, "search", "tiny")
    assert "100/300 lamports+" in found.stdout and "per 1,000 input/output tokens" in found.stdout
    resolved = cli(datadir, "resolve", ref)
    assert "(no build)" in resolved.stdout, resolved.stderr
    # An agent's release still names its build; and the options go together.
    manifest.write_text(MANIFEST)
    assert cli(datadir, "publish", str(manifest)).returncode == 0
    bare = cli(datadir, "release", "wordcount", "1.0.0")
    assert bare.returncode == 1 and "an agent's release names its build" in bare.stderr
    half = cli(datadir, "release", "wordcount", "1.0.0", "--cid", "b3-" + "a" * 20)
    assert half.returncode == 2 and "together" in half.stderr


@pytest.mark.slow
def test_a_node_that_joins_later_catches_up_and_then_hears_gossip(tmp_path, start_daemon) -> None:
    one, two = DataDir(tmp_path / "one"), DataDir(tmp_path / "two")
    start_daemon(one)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST)
    assert cli(one, "publish", str(manifest)).returncode == 0  # before the second node exists
    status = json.loads(cli(one, "node", "status", "--json").stdout)
    start_daemon(two, "--bootstrap", status["p2p"]["listen_addrs"][0])
    wait_for(lambda: search_names(two, "word") == ["wordcount"], 30, "anti-entropy on connect")

    def meshed() -> bool:
        peers = json.loads(cli(one, "peers", "--json").stdout)["peers"]
        return any("/meshsub/" in p for peer in peers for p in peer["protocols"])

    wait_for(meshed, 20, "the gossip mesh")
    second = tmp_path / "SECOND.toml"
    second.write_text(
        MANIFEST.replace("wordcount", "charcount").replace("Word count", "Char count")
    )
    assert cli(one, "publish", str(second)).returncode == 0
    wait_for(
        lambda: "charcount" in search_names(two, "count"), 30, "the new listing by gossip or sync"
    )


def test_any_peer_answers_searches_and_shows_verified_listings(tmp_path, start_daemon) -> None:
    one, two = DataDir(tmp_path / "one"), DataDir(tmp_path / "two")
    for datadir in (one, two):
        start_daemon(datadir)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST)
    publisher = json.loads(cli(one, "publish", str(manifest), "--json").stdout)["publisher"]
    cid = "b3-" + "e" * 20
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        assert (
            cli(one, "release", "wordcount", version, "--cid", cid, "--size", "5").returncode == 0
        )
    address = json.loads(cli(one, "node", "status", "--json").stdout)["p2p"]["listen_addrs"][0]

    remote = cli(two, "search", "word", "--peer", address, "--json")
    assert remote.returncode == 0, remote.stderr
    page = json.loads(remote.stdout)
    assert [r["name"] for r in page["results"]] == ["wordcount"]
    assert page["results"][0]["version"] == "2.0.0"
    shown = json.loads(
        cli(two, "show", f"{publisher}/wordcount", "--peer", address, "--json").stdout
    )
    assert shown["verified"] and [r["version"] for r in shown["releases"]] == [
        "2.0.0",
        "1.1.0",
        "1.0.0",
    ]
    missing = cli(two, "show", f"{publisher}/nothing", "--peer", address)
    assert missing.returncode == 1 and "no such listing on that peer" in missing.stderr
    nobody = "12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG"  # a peer id; no one listens
    unreachable = cli(two, "search", "--peer", f"/ip4/127.0.0.1/tcp/1/p2p/{nobody}")
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr
    malformed = cli(two, "search", "--peer", "/ip4/127.0.0.1/tcp/1")
    # A malformed value the user typed is a usage error (cli/_common.py MALFORMED).
    assert malformed.returncode == 2 and "neither a peer id nor a multiaddr" in malformed.stderr
    refused = cli(two, "search", "--peer", address, "--cursor", "bm90IGEgY3Vyc29y")
    assert refused.returncode == 1 and "the peer refused" in refused.stderr
    assert cli(two, "search", "--peer", "").returncode == 2

    resolved = json.loads(cli(one, "resolve", f"{publisher}/wordcount", "^1.0.0", "--json").stdout)
    assert resolved["candidates"] == ["1.1.0", "1.0.0"]
    assert resolved["plan"][f"{publisher}/wordcount"]["version"] == "1.1.0"
    conflict = cli(one, "resolve", f"{publisher}/wordcount", "^3.0.0")
    assert conflict.returncode == 1 and "no release of" in conflict.stderr
    unknown = cli(one, "resolve", f"{publisher}/nothing")
    assert unknown.returncode == 1 and "not a listing this node knows" in unknown.stderr


def test_a_released_version_is_never_rebound_and_a_build_must_be_webassembly(
    tmp_path, datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir, env={"MERCATO_BUILDS_MIN_COPIES": "0"})
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST)
    published = cli(datadir, "publish", str(manifest), "--json")
    ref = f"{json.loads(published.stdout)['publisher']}/wordcount"
    examples = Path(__file__).parents[2] / "runtime" / "examples"
    wordcount = examples / "wordcount" / "wordcount.wasm"
    first = cli(datadir, "release", "wordcount", "1.0.0", "--build", str(wordcount))
    assert first.returncode == 0, first.stderr
    shown = json.loads(cli(datadir, "show", ref, "--json").stdout)
    (bound,) = [r["cid"] for r in shown["releases"]]
    again = cli(datadir, "release", "wordcount", "1.0.0", "--build", str(wordcount))
    assert again.returncode == 0, again.stderr  # the same binding: nothing changes
    echo = examples / "echo" / "echo.wasm"
    rebind = cli(datadir, "release", "wordcount", "1.0.0", "--build", str(echo))
    assert rebind.returncode == 1
    assert "already released" in rebind.stderr and bound in rebind.stderr
    readme = Path(__file__).parents[2] / "README.md"
    not_wasm = cli(datadir, "release", "wordcount", "1.1.0", "--build", str(readme))
    assert not_wasm.returncode == 1 and "not a WebAssembly module" in not_wasm.stderr
    shown = json.loads(cli(datadir, "show", ref, "--json").stdout)
    assert [(r["version"], r["cid"]) for r in shown["releases"]] == [("1.0.0", bound)]
