"""What the commands print, on a real daemon (embedded ledger): `--json` that parses
and nothing else on stdout, tables with a header row, human sizes, amounts and
times, and the short ids of the text output accepted back, git-style."""

import json
import time
from pathlib import Path

from click.testing import CliRunner, Result

from mercato.cli import main
from mercato.node import DataDir

EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"
WORDCOUNT = EXAMPLES / "wordcount" / "wordcount.wasm"
ECHO = EXAMPLES / "echo" / "echo.wasm"
MANIFEST = EXAMPLES / "wordcount" / "MANIFEST.toml"
NOBODY = "12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG"  # a peer id of no one here


def cli(datadir: DataDir, *args: str) -> Result:
    """The command run in this process (a fresh interpreter per command would take
    seconds each on a loaded machine), on the real daemon of ``datadir``."""
    return CliRunner().invoke(main, [*args, "--data-dir", str(datadir.root)])


def ok(datadir: DataDir, *args: str) -> str:
    done = cli(datadir, *args)
    assert done.exit_code == 0, (args, done.stderr, done.exception)
    return done.stdout


def as_json(datadir: DataDir, *args: str):
    return json.loads(ok(datadir, *args, "--json"))  # the whole of stdout is the object


def usage_error(datadir: DataDir, *args: str) -> str:
    done = cli(datadir, *args)
    assert done.exit_code == 2, (args, done.stdout, done.stderr)
    return done.stderr


def local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def test_channels_wallet_keys_and_init(tmp_path, datadir: DataDir, start_daemon) -> None:
    fresh = DataDir(tmp_path / "fresh")
    created = as_json(fresh, "init")
    assert created["created"] is True and created["peer_id"].startswith("12D3KooW")
    assert as_json(fresh, "init")["created"] is False

    start_daemon(datadir)
    wallet = as_json(datadir, "wallet", "address")
    assert (
        wallet["ledger"] == "embedded"
        and ok(datadir, "wallet", "address").strip() == (wallet["address"])
    )
    assert "lamports (" in ok(datadir, "wallet") and " SOL)" in ok(datadir, "wallet")
    payee = as_json(datadir, "keys", "new", "bob")["address"]
    keys = ok(datadir, "keys", "list").splitlines()
    assert keys[0].split() == ["NAME", "KIND", "ADDRESS", "/", "PEER", "ID"]
    assert any(line.split() == ["bob", "account", payee] for line in keys)

    opened = as_json(datadir, "channel", "open", NOBODY, "--deposit", "0.1", "--payee", payee)
    stake, expires = opened["stake"], opened["expires"]
    assert opened["deposit"] == 100_000_000 and opened["role"] == "payer"
    assert [c["stake"] for c in as_json(datadir, "channel", "ls")["channels"]] == [stake]

    header, row = ok(datadir, "channel", "ls").splitlines()
    assert header.split()[:6] == ["CHANNEL", "ROLE", "PEER", "STATUS", "PAID", "LEFT"]
    assert header.endswith("LOCKUP ENDS")
    assert f"{local(expires)} (in 23 h)" in row or f"{local(expires)} (in 24 h)" in row
    assert str(expires) not in row  # no raw epoch seconds
    assert "100,000,000 lamports (0.1 SOL)" in row
    short = row.split()[0]
    assert stake.startswith(short) and len(short) < len(stake) and "…" not in row

    shown = ok(datadir, "channel", "show", short)
    assert stake in shown and payee in shown and NOBODY in shown  # whole ids, to copy
    assert "deposit:     100,000,000 lamports (0.1 SOL)" in shown
    assert as_json(datadir, "channel", "show", short[:6])["stake"] == stake
    assert "no channel starts with 'zzzz'" in usage_error(datadir, "channel", "show", "zzzz")
    # A prefix reaches the daemon as the whole id: its answer is about this channel.
    refused = cli(datadir, "channel", "close", short, "--json")
    assert refused.exit_code == 1 and "only the payee closes" in refused.stderr
    assert refused.stdout == ""
    early = cli(datadir, "channel", "refund", short)
    assert early.exit_code == 1 and "lockup has not ended" in early.stderr

    assert "no connected peer starts with" in usage_error(datadir, "ping", "12D3KooWzzzz")
    assert as_json(datadir, "ui")["url"].startswith("http://127.0.0.1:")


def test_builds_by_short_id(tmp_path, datadir: DataDir, start_daemon) -> None:
    start_daemon(datadir)
    added = as_json(datadir, "builds", "add", str(WORDCOUNT), "--no-pin")
    assert added["cid"].startswith("bld-") and added["size"] == WORDCOUNT.stat().st_size
    assert added["pinned"] is False
    other = ok(datadir, "builds", "add", str(ECHO)).strip()
    assert other.startswith("bld-") and len(other) == 68

    header, *rows, total = ok(datadir, "builds", "ls").splitlines()
    assert header.split() == ["BUILD", "SIZE", "STATE", "PINNED"]
    (row,) = [r for r in rows if added["cid"].startswith(r.split()[0])]
    short = row.split()[0]
    assert len(short) < 68 and "KiB" in row and "no" in row.split()
    assert total.startswith("using ") and "GiB" in total

    assert ok(datadir, "builds", "pin", short).strip() == f"pinned {added['cid']}"
    pinned = {b["cid"]: b["pinned"] for b in as_json(datadir, "builds", "ls")["builds"]}
    assert pinned == {added["cid"]: True, other: True}
    verified = ok(datadir, "builds", "verify", short[4:])  # bld- may be left out
    assert verified.strip() == f"{added['cid']}: every chunk is intact"
    assert as_json(datadir, "builds", "verify", short)["damaged_chunks"] == []
    assert as_json(datadir, "builds", "unpin", short) == {"cid": added["cid"], "pinned": False}

    here = ok(datadir, "builds", "fetch", short)
    assert here.strip() == f"{added['cid']} is stored here already (18.9 KiB)"
    fetched = as_json(datadir, "builds", "fetch", short)
    assert fetched["build"]["cid"] == added["cid"] and fetched["build"]["complete"]
    unknown = usage_error(datadir, "builds", "fetch", "bld-0000")
    assert "no build id starts with 'bld-0000'" in unknown and "whole id" in unknown
    assert "is not a build id" in usage_error(datadir, "builds", "pin", "not-a-cid")

    assert as_json(datadir, "builds", "gc") == {"removed": [added["cid"]]}
    assert ok(datadir, "builds", "gc").strip() == "removed 0 builds"
    assert "pinned" in ok(datadir, "builds", "gc", "--help")  # says what it keeps


def test_listings_by_name_and_prefix(tmp_path, datadir: DataDir, start_daemon) -> None:
    start_daemon(datadir)
    publisher = as_json(datadir, "publish", str(MANIFEST))["publisher"]
    ref = f"{publisher}/wordcount"

    header, row = ok(datadir, "search", "word").splitlines()
    assert header.split() == ["LISTING", "VERSION", "PRICE", "SUMMARY"]
    short = row.split()[0]
    assert short == f"{publisher[:8]}/wordcount" and "1,000 lamports" in row
    assert as_json(datadir, "search", "word")["results"][0]["publisher"] == publisher

    for name in ("wordcount", short, ref):
        shown = ok(datadir, "show", name)
        assert shown.startswith(f"{ref}  (agent)") and "price 1,000 lamports" in shown
    assert as_json(datadir, "show", "wordcount")["publisher"] == publisher
    unreleased = cli(datadir, "resolve", short, "--json")  # asked of the whole ref
    assert unreleased.exit_code == 1 and f"no release of {ref} matches" in unreleased.stderr
    assert "no listing is named 'nothing'" in usage_error(datadir, "show", "nothing")
    assert "no publisher of a listing" in usage_error(datadir, "show", "zzzz/wordcount")

    # A second publisher of the same name: the bare name is ambiguous, a prefix is not.
    ok(datadir, "keys", "new", "bob")
    other = as_json(datadir, "publish", str(MANIFEST), "--account", "bob")["publisher"]
    ambiguous = usage_error(datadir, "show", "wordcount")
    assert "2 listings are named 'wordcount'" in ambiguous
    assert f"{publisher[:8]}/wordcount" in ambiguous and f"{other[:8]}/wordcount" in ambiguous
    assert as_json(datadir, "show", f"{other[:8]}/wordcount")["publisher"] == other

    deprecated = as_json(datadir, "deprecate", "wordcount")
    assert deprecated["publisher"] == publisher and deprecated["deprecated"]
    assert as_json(datadir, "show", "wordcount")["publisher"] == other  # left search
