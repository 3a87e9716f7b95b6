"""The user's journey through real daemons: publish, release a build, find a provider, run."""

import datetime
import json
import textwrap
from pathlib import Path

import pytest

from mercato.node import DataDir

from ..conftest import run_cli, wait_for

WORDCOUNT = Path(__file__).parents[2] / "runtime" / "examples" / "wordcount" / "wordcount.wasm"


def cli(datadir: DataDir, *args: str, stdin: str | None = None):
    return run_cli(*args, "--data-dir", str(datadir.root), input_text=stdin)


@pytest.mark.slow
def test_publish_release_and_run_on_a_provider(tmp_path, start_daemon) -> None:
    creator, provider = DataDir(tmp_path / "creator"), DataDir(tmp_path / "provider")
    start_daemon(creator)
    publisher = json.loads(cli(creator, "keys", "show", "default", "--json").stdout)["address"]
    agent = f"{publisher}/wordcount"
    address = json.loads(cli(creator, "node", "status", "--json").stdout)["p2p"]["listen_addrs"][0]
    start_daemon(provider, "--bootstrap", address, "--serve", agent)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            """
            name = "wordcount"
            kind = "agent"
            title = "Word count"
            summary = "Counts words."
            price = 0
            royalty_bps = 0
            """
        )
    )
    assert cli(creator, "publish", str(manifest)).returncode == 0

    # Dial it from this side too: the release offers its build to connected peers.
    there = json.loads(cli(provider, "node", "status", "--json").stdout)["p2p"]["listen_addrs"][0]
    assert cli(creator, "ping", there).returncode == 0

    def provider_connected() -> bool:
        peers = json.loads(cli(creator, "peers", "--json").stdout)["peers"]
        return any("/mercato/build/1.0.0" in p["protocols"] for p in peers)

    try:
        wait_for(provider_connected, 30, "the provider to be identified")
    except AssertionError as exc:  # say what each side saw, for a failure on CI
        sides = {d: cli(d, "peers", "--json").stdout for d in (creator, provider)}
        logs = {f.name: f.read_text()[-4000:] for f in sorted(tmp_path.glob("daemon-*.log"))}
        raise AssertionError(f"{exc}\npeers: {sides}\nlogs: {logs}") from None
    released = run_cli(
        "release",
        "wordcount",
        "1.0.0",
        "--build",
        str(WORDCOUNT),
        "--data-dir",
        str(creator.root),
        timeout=90,
    )
    assert released.returncode == 0, released.stderr  # bound once the provider holds a copy

    def announced() -> bool:
        found = json.loads(cli(creator, "providers", agent, "--json").stdout)["providers"]
        return bool(found)

    wait_for(announced, 30, "the provider's agent card")
    ran = cli(creator, "run", agent, "--input", "-", "--receipt", stdin="one two three")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"bytes": 13, "lines": 0, "words": 3, "longest_word": 5}
    receipt = json.loads(ran.stderr)
    assert receipt["outcome"] == "ok" and receipt["agent"] == agent
    # A new provider's first tasks get a second opinion: here the creator's own sandbox.
    assert receipt["verified"] == "local"

    # Both sides keep the task; the user's side has the receipt, checked again.
    listed = json.loads(cli(creator, "tasks", "ls", "--json").stdout)["tasks"]
    assert [(t["id"], t["role"], t["status"]) for t in listed] == [(receipt["task"], "user", "ok")]
    shown = json.loads(cli(creator, "tasks", "show", receipt["task"], "--json").stdout)
    assert shown["sides"][0]["receipt"]["output_hash"] == receipt["output_hash"]
    served = json.loads(cli(provider, "tasks", "ls", "--role", "provider", "--json").stdout)
    assert [t["id"] for t in served["tasks"]] == [receipt["task"]]
    unknown = cli(creator, "tasks", "show", "0" * 32)
    assert unknown.returncode == 1 and "no task" in unknown.stderr

    # The user's node now knows the provider from experience.
    listed = cli(creator, "providers", agent).stdout.splitlines()
    assert listed[0].split() == [
        "PROVIDER", "PRICE", "LOAD", "REPUTATION", "OK", "FAILED", "WRONG", "LATENCY",
    ]  # fmt: skip
    assert listed[1].split()[3:7] == ["0.67", "1", "0", "0"], listed
    # A cap at the price runs; a cap that is no amount is a usage error.
    capped = cli(creator, "run", agent, "--input", "-", "--max-price", "0", stdin="a")
    assert capped.returncode == 0 and json.loads(capped.stdout)["words"] == 1
    bad = cli(creator, "run", agent, "--max-price", "-1", stdin="a")
    assert bad.returncode == 2 and "--max-price" in bad.stderr

    # Pinned by address, as JSON; and into a file.
    pinned = cli(creator, "run", agent, "--provider", there, "--json", "--input", "-", stdin="x y")
    assert pinned.returncode == 0, pinned.stderr
    answer = json.loads(pinned.stdout)
    assert answer["provider"] == there.rsplit("/", 1)[1]
    assert json.loads(answer["output"])["words"] == 2 and answer["receipt"]["outcome"] == "ok"
    out = tmp_path / "out.json"
    written = cli(creator, "run", agent, "--output", str(out), "--input", "-", stdin="a b c")
    assert written.returncode == 0 and written.stdout == ""
    assert json.loads(out.read_text())["words"] == 3
    table = cli(creator, "tasks", "ls").stdout.splitlines()
    assert table[0].startswith("ID") and len(table) == 5  # a header, four runs
    assert table[-1].split()[0] == receipt["task"][:12]


def test_cli_spending_shows_the_limits_and_today(tmp_path: Path, start_daemon) -> None:
    datadir = DataDir(tmp_path / "data")
    start_daemon(datadir, env={"MERCATO_SPENDING_MAX_PER_DAY": "5000"})
    args = ("spending", "--data-dir", str(datadir.root))
    before = datetime.datetime.now(datetime.UTC).date().isoformat()
    shown = json.loads(run_cli(*args, "--json").stdout)
    after = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert shown["day"] in (before, after)  # midnight may pass in between
    assert shown == {
        "day": shown["day"],
        "spent_today": 0,
        "reserved": 0,
        "left_today": 5000,
        "max_per_task": None,
        "max_per_day": 5000,
        "approve_above": None,
    }
    text = run_cli(*args).stdout
    assert "left today     5,000 lamports" in text and "approve above  no limit" in text
    assert "Example" in run_cli("spending", "--help").stdout
