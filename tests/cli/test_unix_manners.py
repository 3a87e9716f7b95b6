"""`run` and `exec` behave like Unix filters: stdin is the input, a module's stderr is
shown, an error is said once with one prefix, and exit codes are 0 ok, 1 failure,
2 usage error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from wasmtime import wat2wasm

from mercato.node import DataDir
from mercato.p2p import RemoteError

from ..conftest import run_cli, wait_for
from .test_run import WORDCOUNT

PRICE = 1000
CRASHING = textwrap.dedent(
    """
    (module
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "cannot parse the input\\n")
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 23))
        (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
        unreachable))
    """
)


def detached(*args: str, stdin: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``mercato ARGS`` in a new session: no controlling terminal, as under cron or CI,
    so a question that needs one is never asked (the test would wait on it)."""
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        env=os.environ.copy(),
    )


def crashing_module(tmp_path: Path) -> Path:
    """A module that says why on stderr, then traps."""
    path = tmp_path / "crash.wasm"
    path.write_bytes(wat2wasm(CRASHING))
    return path


# -- exec: no daemon needed ----------------------------------------------------------


def test_exec_reads_piped_stdin_without_input(tmp_path: Path) -> None:
    piped = run_cli("exec", str(WORDCOUNT), input_text="three words here")
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["words"] == 3
    dashed = run_cli("exec", str(WORDCOUNT), "--input", "-", input_text="two words")
    assert json.loads(dashed.stdout)["words"] == 2
    text = tmp_path / "notes.txt"
    text.write_text("a file of five words")
    # --input FILE wins over whatever stdin holds.
    filed = run_cli("exec", str(WORDCOUNT), "--input", str(text), input_text="ignored")
    assert json.loads(filed.stdout)["words"] == 5


def test_exec_shows_the_module_stderr_before_its_outcome(tmp_path: Path) -> None:
    crashed = run_cli("exec", str(crashing_module(tmp_path)), input_text="")
    assert crashed.returncode == 1
    lines = crashed.stderr.splitlines()
    assert lines[0] == "cannot parse the input", crashed.stderr
    assert lines[1].startswith("trap: fuel ") and len(lines) == 2
    assert crashed.stderr.count("trap") == 1 and "Traceback" not in crashed.stderr
    as_json = run_cli("exec", str(crashing_module(tmp_path)), "--json", input_text="")
    answer = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and answer["stderr"] == "cannot parse the input\n"
    assert as_json.stderr == ""  # all of it is in the JSON


def test_run_usage_errors_exit_2_before_any_node_is_asked(tmp_path: Path) -> None:
    # No daemon runs on this data dir: each is refused from its arguments alone.
    where = ("--data-dir", str(tmp_path / "none"))
    for args in (
        ("run", "a/b/c", *where),
        ("run", "@^1.0", *where),
        ("run", "wordcount@1.0.x.y", *where),
        ("run", "8Co4tt4s/wordcount", "--idempotency-key", "no spaces", *where),
        ("run", "wordcount", "--max-price", "lots", *where),
        ("exec", str(tmp_path / "missing.wasm")),
    ):
        done = run_cli(*args, input_text="x")
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_relayed_remote_error_keeps_its_code_once() -> None:
    assert str(RemoteError("crashed", "the sandbox worker died")) == (
        "crashed: the sandbox worker died"
    )
    relayed = RemoteError("bad_payment", "bad_payment: that channel is not on this ledger")
    assert str(relayed) == "bad_payment: that channel is not on this ledger"
    assert relayed.message == "that channel is not on this ledger"


# -- run: a paid agent between two daemons on one localnet ---------------------------


def cli(datadir: DataDir, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return detached(*args, "--data-dir", str(datadir.root), stdin=stdin)


def json_of(datadir: DataDir, *args: str):
    done = cli(datadir, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_paid_run_reads_stdin_asks_about_empty_input_and_says_errors_once(
    tmp_path: Path, start_daemon, start_localnet
) -> None:
    localnet = start_localnet()
    env = {"MERCATO_SETTLEMENT_LEDGER": "localnet", "MERCATO_SETTLEMENT_RPC_URL": localnet.url}
    user, provider = DataDir(tmp_path / "user"), DataDir(tmp_path / "provider")
    start_daemon(user, env=env)
    publisher = json_of(user, "keys", "show", "default")["address"]
    agent = f"{publisher}/wordcount"
    there = json_of(user, "node", "status")["p2p"]["listen_addrs"][0]
    start_daemon(provider, "--bootstrap", there, "--serve", agent, env=env)
    provider_id = json_of(provider, "node", "status")["peer_id"]
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""
            name = "wordcount"
            kind = "agent"
            title = "Word count"
            summary = "Counts words."
            price = {PRICE}
            royalty_bps = 0
            """
        )
    )
    assert cli(user, "publish", str(manifest)).returncode == 0

    def provider_identified() -> bool:
        peers = json_of(user, "peers")["peers"]
        return any("/mercato/build/1.0.0" in p["protocols"] for p in peers)

    wait_for(provider_identified, 30, "the provider to be identified")
    released = cli(user, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT))
    assert released.returncode == 0, released.stderr
    wait_for(lambda: json_of(user, "providers", agent)["providers"], 30, "the provider's card")

    # Piped stdin is the input, and a bare name finds the one listing so named.
    piped = cli(user, "run", "wordcount", stdin="three words here")
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["words"] == 3
    spent = json_of(user, "spending")["spent_today"]
    assert spent >= PRICE

    # An empty input to a paid agent: no terminal, no --yes, nothing run or paid.
    empty = cli(user, "run", agent, stdin="")
    assert empty.returncode == 1, empty.stderr
    assert empty.stderr.startswith("error: the input is empty") and "--yes" in empty.stderr
    assert f"{PRICE:,} lamports" in empty.stderr and empty.stdout == ""
    assert json_of(user, "spending")["spent_today"] == spent
    confirmed = cli(user, "run", agent, "--yes", stdin="")
    assert confirmed.returncode == 0, confirmed.stderr
    assert json.loads(confirmed.stdout)["words"] == 0

    # Tasks: a table with headers; `tasks show` by a prefix, as text and as JSON.
    listed = cli(user, "tasks", "ls", "--role", "user").stdout.splitlines()
    assert listed[0].split() == [
        "ID", "CREATED", "ROLE", "AGENT", "PROVIDER", "STATUS", "VERIFIED", "TOKENS",
    ]  # fmt: skip
    assert len(listed) == 3 and "…" not in "".join(listed)
    task = json_of(user, "tasks", "ls", "--role", "user")["tasks"][-1]["id"]
    assert listed[-1].split()[0] == task[:12]
    shown = cli(user, "tasks", "show", task[:8])
    assert shown.returncode == 0, shown.stderr
    assert f"task      {task}" in shown.stdout and "side      user" in shown.stdout
    assert f"provider  {provider_id}" in shown.stdout
    assert f"price     {PRICE:,} lamports" in shown.stdout
    assert "outcome" in shown.stdout and "receipt" in shown.stdout
    as_json = json_of(user, "tasks", "show", task[:8])
    assert as_json["task"] == task and as_json["sides"][0]["receipt"]["outcome"] == "ok"
    unknown = cli(user, "tasks", "show", "ffffffffffff")
    assert unknown.returncode == 2 and "no task id starts with" in unknown.stderr
    malformed = cli(user, "tasks", "show", "z" * 32)  # whole length: the node judges it
    assert malformed.returncode == 2 and malformed.stderr.startswith("error: a task id is")

    # A provider's refusal (it serves wordcount only), said once: one "error:", its
    # code once, no "x: x:".
    refused = cli(user, "run", f"{publisher}/ghost", "--provider", provider_id[:20], stdin="a b")
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip()
    assert line.count("error:") == 1 and line.startswith("error: "), line
    # It does not serve that agent: its code, said once (it used to be said twice).
    assert line.count("not_served") == 1 and "this node does not serve" in line, line
    assert not re.search(r"\b([a-z_]+): \1:", line), line
