"""`mercato builds`: a build stored on one node, fetched by another, kept across restarts."""

import json
import os

from mercato.node import DataDir

from ..conftest import run_cli


def cli(datadir: DataDir, *args: str):
    return run_cli(*args, "--data-dir", str(datadir.root))


def test_add_fetch_pin_and_restart(tmp_path, start_daemon) -> None:
    one, two = DataDir(tmp_path / "one"), DataDir(tmp_path / "two")
    start_daemon(one)
    daemon_two = start_daemon(two)
    source = tmp_path / "agent.wasm"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    added = cli(one, "builds", "add", str(source))
    assert added.returncode == 0, added.stderr
    cid = added.stdout.strip()
    address = json.loads(cli(one, "node", "status", "--json").stdout)["p2p"]["listen_addrs"][0]
    fetched = cli(two, "builds", "fetch", cid, "--from", address, "--pin")
    assert fetched.returncode == 0, fetched.stderr
    assert f"fetched {cid}: 3.0 MiB from 1 peer, pinned" in fetched.stdout
    assert fetched.stderr == ""  # no progress bar on a pipe
    listed = json.loads(cli(two, "builds", "ls", "--json").stdout)["builds"]
    assert [(b["cid"], b["complete"], b["pinned"]) for b in listed] == [(cid, True, True)]
    assert json.loads(cli(two, "builds", "verify", cid, "--json").stdout)["damaged_chunks"] == []

    assert cli(two, "node", "stop").returncode == 0
    daemon_two.wait(timeout=30)
    start_daemon(two)
    assert cli(two, "builds", "gc").stdout.strip() == "removed 0 builds"  # pinned
    assert json.loads(cli(two, "builds", "unpin", cid, "--json").stdout)["pinned"] is False
    assert cli(two, "builds", "gc").stdout.splitlines() == ["removed 1 build", f"  {cid}"]
    assert json.loads(cli(two, "builds", "ls", "--json").stdout)["builds"] == []


def test_bad_ids_and_unknown_builds_are_clear_errors(datadir: DataDir, start_daemon) -> None:
    start_daemon(datadir)
    bad = cli(datadir, "builds", "pin", "not-a-cid")
    assert bad.returncode == 2 and "is not a build id" in bad.stderr
    unknown = cli(datadir, "builds", "pin", "bld-" + "0" * 64)
    assert unknown.returncode == 1 and "fetch it first" in unknown.stderr
    nowhere = cli(datadir, "builds", "fetch", "bld-" + "0" * 64)
    assert nowhere.returncode == 1 and "none of 0 peers" in nowhere.stderr
