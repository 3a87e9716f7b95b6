"""`mercato release` through real daemons: refused at once, answered on a lone node,
and waiting, with progress on a terminal, while a build's copies land on a peer."""

import json
import os
import pty
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mercato.node import ControlClient, ControlError, DataDir

from ..conftest import TEST_ENV, budget, run_cli, wait_for

EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"
WORDCOUNT = EXAMPLES / "wordcount" / "wordcount.wasm"
ECHO = EXAMPLES / "echo" / "echo.wasm"
MANIFEST = textwrap.dedent(
    """
    name = "wordcount"
    kind = "agent"
    title = "Word count"
    summary = "Counts words, lines and bytes of a text."
    price = 1000
    royalty_bps = 500
    """
)
AT_ONCE_S = budget(8.0)  # a refusal: the CLI's start and one request, no wait for peers


def cli(datadir: DataDir, *args: str, timeout: float = 60):
    return run_cli(*args, "--data-dir", str(datadir.root), timeout=timeout)


def publish(tmp_path: Path, datadir: DataDir) -> str:
    """Publish the wordcount listing; return its PUBLISHER/NAME."""
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST)
    published = cli(datadir, "publish", str(manifest), "--json")
    assert published.returncode == 0, published.stderr
    return f"{json.loads(published.stdout)['publisher']}/wordcount"


def releases(datadir: DataDir, ref: str) -> list[tuple[str, str]]:
    """The releases of ``ref`` as the node shows them (asked directly: quicker than
    a CLI process, and not what these tests are about)."""
    publisher, name = ref.split("/")
    shown = ControlClient(datadir).show(publisher, name)
    return [(r["version"], r["cid"]) for r in shown["releases"]]


def stored(datadir: DataDir) -> list[str]:
    return [b["cid"] for b in ControlClient(datadir).builds()["builds"]]


def timed(datadir: DataDir, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = cli(datadir, *args)
    return result, time.monotonic() - started


def test_what_a_release_would_refuse_is_refused_at_once_and_changes_nothing(
    tmp_path, datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir)  # [builds] min_copies = 1, and no peer: a wait would be long
    ref = publish(tmp_path, datadir)

    bad, took = timed(datadir, "release", "wordcount", "1.0", "--build", str(WORDCOUNT))
    assert bad.returncode == 2 and took < AT_ONCE_S, (took, bad.stderr)
    assert "version '1.0' is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.0.0" in (
        bad.stderr
    )
    unknown, took = timed(datadir, "release", "ghost", "1.0.0", "--build", str(WORDCOUNT))
    assert unknown.returncode == 1 and took < AT_ONCE_S, (took, unknown.stderr)
    assert "publish the listing 'ghost' before releasing it" in unknown.stderr
    assert unknown.stderr.count("error:") == 1 and "Traceback" not in unknown.stderr
    readme = Path(__file__).parents[2] / "README.md"
    not_wasm, took = timed(datadir, "release", "wordcount", "1.0.0", "--build", str(readme))
    assert not_wasm.returncode == 1 and took < AT_ONCE_S, (took, not_wasm.stderr)
    assert "not a WebAssembly module" in not_wasm.stderr
    assert releases(datadir, ref) == [] and stored(datadir) == []

    # The node refuses the same on its own, for clients other than the CLI.
    client = ControlClient(datadir)
    with pytest.raises(ControlError, match=r"'1\.0' is not a semantic version"):
        client.release({"name": "wordcount", "version": "1.0"}, build=str(WORDCOUNT))
    assert releases(datadir, ref) == [] and stored(datadir) == []

    # A version bound already is refused before the other build is stored.
    assert cli(datadir, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT)).returncode == 0
    before = stored(datadir)
    rebind, took = timed(datadir, "release", "wordcount", "1.0.0", "--build", str(ECHO))
    assert rebind.returncode == 1 and took < AT_ONCE_S, (took, rebind.stderr)
    assert "already released" in rebind.stderr
    assert stored(datadir) == before


def test_a_lone_node_releases_with_its_own_copy_and_says_so(
    tmp_path, datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir)  # [builds] min_copies = 1, but no peer to hold a copy
    ref = publish(tmp_path, datadir)

    released, took = timed(datadir, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT))
    assert released.returncode == 0 and took < AT_ONCE_S, (took, released.stderr)
    assert released.stderr == ""  # no progress drawn on a pipe
    line = released.stdout.strip()
    assert line.startswith(f"released {ref}@1.0.0 (bld-")
    assert line.endswith(
        "with 1 copy (this node): no other peer is connected yet; copies will be made "
        "as peers join (this node must stay on until then)"
    )
    (cid,) = [cid for version, cid in releases(datadir, ref) if version == "1.0.0"]

    as_json = cli(datadir, "release", "wordcount", "1.1.0", "--build", str(WORDCOUNT), "--json")
    assert as_json.returncode == 0, as_json.stderr
    outcome = json.loads(as_json.stdout)
    publisher = ref.split("/")[0]
    assert {k: outcome[k] for k in ("publisher", "name", "version", "cid", "size", "copies")} == {
        "publisher": publisher,
        "name": "wordcount",
        "version": "1.1.0",
        "cid": cid,
        "size": WORDCOUNT.stat().st_size,
        "copies": 1,
    }
    assert outcome["held_by"] == [] and "no other peer is connected yet" in outcome["note"]

    events = cli(datadir, "events", "--json", "--kind", "registry.released")
    assert events.returncode == 0, events.stderr
    data = [json.loads(line)["data"] for line in events.stdout.splitlines()]
    assert [(d["name"], d["version"], d["cid"]) for d in data] == [
        ("wordcount", "1.0.0", cid),
        ("wordcount", "1.1.0", cid),
    ]


def two_nodes(
    tmp_path: Path,
    start_daemon,
    peer_env: dict[str, str] | None = None,
    creator_env: dict[str, str] | None = None,
):
    """A creator's node and a peer joined to it; both with [builds] min_copies = 1."""
    creator, peer = DataDir(tmp_path / "creator"), DataDir(tmp_path / "peer")
    start_daemon(creator, env=creator_env)
    status = ControlClient(creator).status()
    start_daemon(peer, "--bootstrap", status["p2p"]["listen_addrs"][0], env=peer_env)
    peer_id = ControlClient(peer).status()["peer_id"]
    wait_for(
        lambda: ControlClient(creator).status()["p2p"]["peers"]["connected"],
        budget(20),
        "the peer to join the creator",
        interval=0.1,
    )
    return creator, peer, peer_id


@pytest.mark.slow
def test_a_release_is_bound_once_the_peer_holds_its_copy(tmp_path, start_daemon) -> None:
    creator, peer, peer_id = two_nodes(tmp_path, start_daemon)
    ref = publish(tmp_path, creator)
    released = cli(creator, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT), "--json")
    assert released.returncode == 0, released.stderr
    assert released.stderr == ""
    outcome = json.loads(released.stdout)
    assert outcome["copies"] == 2 and outcome["held_by"] == [peer_id] and not outcome["note"]
    assert outcome["cid"] in stored(peer)  # the peer holds the copy the release waited for
    assert releases(creator, ref) == [("1.0.0", outcome["cid"])]


def big_build(path: Path, size: int) -> Path:
    """The wordcount module grown to ``size`` bytes by a custom section: it compiles."""
    module = WORDCOUNT.read_bytes()

    def leb128(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    name = b"padding"
    payload = os.urandom(size - len(module) - 16)
    body = leb128(len(name)) + name + payload
    path.write_bytes(module + b"\x00" + leb128(len(body)) + body)
    return path


@pytest.mark.slow
def test_a_peer_that_takes_no_copy_is_shown_while_waiting_and_named_after(
    tmp_path, start_daemon
) -> None:
    # The peer may store 1 MB of builds: it takes the offer of a 3 MB build but never
    # holds it, so the release waits its whole time ([builds] copies_wait_s, cut
    # to 12 s from 40 here), then says what happened.
    creator, _peer, peer_id = two_nodes(
        tmp_path,
        start_daemon,
        {"MERCATO_BUILDS_QUOTA_MB": "1"},
        {"MERCATO_BUILDS_COPIES_WAIT_S": "12"},
    )
    ref = publish(tmp_path, creator)
    build = big_build(tmp_path / "big.wasm", 3 * 1024 * 1024)

    # stderr on a terminal, as a person runs it: the progress is drawn there.
    master, slave = pty.openpty()
    drawn = bytearray()
    reader = threading.Thread(target=_drain, args=(master, drawn), daemon=True)
    reader.start()
    command = [sys.executable, "-m", "mercato.cli", "release", "wordcount", "1.0.0"]
    proc = subprocess.Popen(
        [*command, "--build", str(build), "--data-dir", str(creator.root)],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
        env={**os.environ, **TEST_ENV},
    )
    os.close(slave)
    try:
        client = ControlClient(creator)
        state = wait_for(
            lambda: (s := client.releasing("wordcount", "1.0.0"))["stage"] == "copying" and s,
            budget(30),
            "the release to wait for copies",
        )
        assert (state["wanted"], state["peers"], state["copies"]) == (1, 1, 0)
        assert state["size"] == build.stat().st_size
        stdout, _ = proc.communicate(timeout=budget(90))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    shown = drawn.decode(errors="replace")
    assert proc.returncode == 1 and stdout == ""
    assert "copying bld-" in shown and "to 1 peer(s)" in shown, shown
    assert "only 0 of the 1 copies needed" in shown and peer_id in shown, shown
    assert "took the offer, holds none yet" in shown and "nothing was released" in shown, shown
    assert releases(creator, ref) == []
    assert client.releasing("wordcount", "1.0.0")["stage"] == "none"


def _drain(fd: int, into: bytearray) -> None:
    """Read a pty until its other end closes (so the writer never blocks on it)."""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: every writer has closed it
            break
        if not data:
            break
        into.extend(data)
    os.close(fd)
